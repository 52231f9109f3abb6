//! The membership-rule language: the device-rule subset of Microsoft Entra ID's dynamic
//! membership syntax, as `shared/reference/rules.md` specifies it.
//!
//! [`check`] parses and checks a rule. A valid rule comes back compiled, ready to be evaluated
//! against any number of devices, from any number of threads:
//!
//! ```
//! use unbox_rules::{check, JsonDevice};
//!
//! let checked = check(r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))"#);
//! assert!(checked.diagnostics.is_empty());
//! let rule = checked.rule.expect("valid");
//!
//! let device = JsonDevice::from_json(r#"{"devicePhysicalIds": ["[OrderID]:sales"]}"#).unwrap();
//! assert!(rule.evaluate(&device));
//! assert!(rule.explain(&device).membership_rule_evaluation_result);
//! ```
//!
//! Errors carry Microsoft's message as their leading text, then what exactly is wrong, and
//! the byte span of the offending text:
//!
//! ```
//! let checked = unbox_rules::check(r#"device.deviceModel -eq Latitude"#);
//! assert!(checked.rule.is_none());
//! let error = &checked.diagnostics[0];
//! assert!(error.message.starts_with("Query compilation error"));
//! assert_eq!((error.start, error.end), (23, 31));
//! ```
//!
//! Nothing here does I/O or blocks; nothing panics on any input.

pub mod ast;
mod compile;
mod device;
mod diagnostic;
mod explain;
mod fold;
mod lexer;
mod parser;
mod property;
mod rule;

pub use device::{DeviceProperties, JsonDevice};
pub use diagnostic::{Diagnostic, ErrorKind, Severity};
pub use explain::{Explanation, ExpressionDetails, PropertyToEvaluate, PropertyValue};
pub use parser::{MAX_NESTING, Parsed};
pub use property::{PROPERTY_COUNT, Property, PropertyType};
pub use rule::CompiledRule;

/// The maximum length of a rule, in Unicode scalar values.
pub const MAX_RULE_LENGTH: usize = 3072;

/// The outcome of [`check`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// Errors first, then warnings, each in the order of their position in the rule.
    pub diagnostics: Vec<Diagnostic>,
    /// The compiled rule: `Some` exactly when there is no error.
    pub rule: Option<CompiledRule>,
}

impl Checked {
    /// Whether the rule is valid (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.rule.is_some()
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Parses a rule into its syntax tree, without checking properties, types or regexes.
/// Parsing stops at the first syntax error. Never panics.
pub fn parse(rule: &str) -> Parsed {
    parser::parse(rule)
}

/// Parses, checks and compiles a rule. Reports every error the checker finds (but only the
/// first syntax error) and every warning. Never panics, on any input.
pub fn check(rule: &str) -> Checked {
    let Parsed {
        expr,
        mut diagnostics,
    } = parser::parse(rule);
    let compiled_rule = expr.and_then(|expr| {
        let compiled = compile::compile(&expr);
        diagnostics.extend(compiled.diagnostics);
        let has_errors = diagnostics.iter().any(Diagnostic::is_error);
        match compiled.root {
            Some(root) if !has_errors => Some(CompiledRule::new(rule, expr, root, compiled.reads)),
            _ => None,
        }
    });
    diagnostics.sort_by_key(|d| (!d.is_error(), d.start, d.end));
    Checked {
        diagnostics,
        rule: compiled_rule,
    }
}

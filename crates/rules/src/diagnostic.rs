//! Errors and warnings about a rule, with the byte span they concern.

use std::fmt;

use serde::Serialize;

use crate::ast::Span;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The rule is refused.
    Error,
    /// The rule is accepted, but should be written differently.
    Warning,
}

/// One error or warning. Serializes as `{"severity", "message", "start", "end"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// For errors, Microsoft's message (see [`ErrorKind::leading_text`]) followed by what
    /// exactly is wrong.
    pub message: String,
    /// Byte offset of the start of the offending text.
    pub start: usize,
    /// Byte offset one past its end.
    pub end: usize,
}

impl Diagnostic {
    pub(crate) fn error(kind: ErrorKind, detail: impl fmt::Display, span: Span) -> Self {
        let leading = kind.leading_text();
        // "Rule exceeds maximum allowed length." is a sentence of its own; the others read
        // as a heading followed by a colon.
        let separator = if leading.ends_with('.') { " " } else { ": " };
        Diagnostic {
            severity: Severity::Error,
            message: format!("{leading}{separator}{detail}"),
            start: span.start,
            end: span.end,
        }
    }

    pub(crate) fn warning(message: impl Into<String>, span: Span) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            start: span.start,
            end: span.end,
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The byte span the diagnostic concerns.
    pub fn span(&self) -> Span {
        Span::new(self.start, self.end)
    }

    /// The kind of error, recognised by the message's leading text; `None` for warnings.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        if !self.is_error() {
            return None;
        }
        ErrorKind::ALL
            .into_iter()
            .find(|kind| self.message.starts_with(kind.leading_text()))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{severity} at {}..{}: {}",
            self.start, self.end, self.message
        )
    }
}

/// The kinds of error, each with Microsoft's message as its leading text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An unknown device property.
    AttributeNotSupported,
    /// A syntax error, an invalid regular expression, typographic quotes, …
    QueryCompilation,
    /// A property of another object type (`user.department`).
    InvalidObjectType,
    /// A property without the `device.` prefix.
    NoObjectType,
    /// An operator the property's type does not allow.
    OperatorNotSupported,
    /// A value of the wrong kind for the property or operator.
    ValueNotApplicable,
    /// A missing or wrong operand (`-in "x"`, `-startsWith null`).
    InvalidOperands,
    /// A property other than `_` inside `-any`/`-all`, or `_` outside them.
    WrongProperty,
    /// A character that cannot appear outside a string (a backslash, say).
    InvalidCharacters,
    /// More than [`MAX_RULE_LENGTH`](crate::MAX_RULE_LENGTH) characters.
    TooLong,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::AttributeNotSupported,
        ErrorKind::QueryCompilation,
        ErrorKind::InvalidObjectType,
        ErrorKind::NoObjectType,
        ErrorKind::OperatorNotSupported,
        ErrorKind::ValueNotApplicable,
        ErrorKind::InvalidOperands,
        ErrorKind::WrongProperty,
        ErrorKind::InvalidCharacters,
        ErrorKind::TooLong,
    ];

    /// Microsoft's message for this kind of error, which leads every message of this kind.
    pub fn leading_text(self) -> &'static str {
        match self {
            ErrorKind::AttributeNotSupported => "Attribute not supported",
            ErrorKind::QueryCompilation => "Query compilation error",
            ErrorKind::InvalidObjectType => "Invalid object type",
            ErrorKind::NoObjectType => "No object type",
            ErrorKind::OperatorNotSupported => "Operator is not supported on attribute",
            ErrorKind::ValueNotApplicable => "Value can't be applied to property",
            ErrorKind::InvalidOperands => "Invalid operands found for operator",
            ErrorKind::WrongProperty => "Wrong property applied",
            ErrorKind::InvalidCharacters => "Invalid characters found in the rule",
            ErrorKind::TooLong => "Rule exceeds maximum allowed length.",
        }
    }
}

//! The checker: validates a syntax tree against the device property table and, when it is
//! valid, compiles it into the tree of [`Node`]s that evaluation walks (regexes built, string
//! constants case-folded, properties resolved).

use regex::Regex;

use crate::ast::{
    ArrayElement, Comparison, Expr, ExprKind, Operator, Quantified, Quantifier, Span, Subject,
    Value,
};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::fold::Folded;
use crate::property::{Property, PropertyType};

/// Compiled regexes are capped, so a rule cannot make the server hold huge automata.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a string test checks, before negation.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `-eq null`: true exactly when the value is absent.
    IsNull,
    Equals(Folded),
    StartsWith(Folded),
    EndsWith(Folded),
    Contains(Folded),
    Matches(Regex),
    OneOf(Box<[Folded]>),
}

impl Matcher {
    /// The positive test on a present value.
    #[inline]
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::IsNull => false,
            Matcher::Equals(constant) => constant.equals(value),
            Matcher::StartsWith(constant) => constant.is_prefix_of(value),
            Matcher::EndsWith(constant) => constant.is_suffix_of(value),
            Matcher::Contains(constant) => constant.is_substring_of(value),
            Matcher::Matches(regex) => regex.is_match(value),
            Matcher::OneOf(constants) => constants.iter().any(|constant| constant.equals(value)),
        }
    }
}

/// A test on one string value, possibly null; negative operators are the negation of their
/// positive one, so every positive operator is false on null and every negative one true.
#[derive(Debug, Clone)]
pub(crate) struct TextTest {
    pub(crate) matcher: Matcher,
    pub(crate) negated: bool,
}

impl TextTest {
    #[inline]
    pub(crate) fn test(&self, value: Option<&str>) -> bool {
        let positive = match value {
            Some(value) => self.matcher.matches(value),
            None => matches!(self.matcher, Matcher::IsNull),
        };
        positive != self.negated
    }
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Or(Box<[Node]>, Span),
    And(Box<[Node]>, Span),
    Not(Box<Node>, Span),
    /// A string property.
    Text {
        property: Property,
        test: TextTest,
        span: Span,
    },
    /// `accountEnabled -eq true|false|null` (negated for `-ne`).
    Boolean {
        property: Property,
        expected: Option<bool>,
        negated: bool,
        span: Span,
    },
    /// A comparison straight on a collection: the positive test holds for some element
    /// (`-contains` meaning equality), then negated for a negative operator.
    SomeElement {
        property: Property,
        test: TextTest,
        span: Span,
    },
    /// `collection -any|-all (predicate)`; the predicate's `Element` nodes read the element.
    Quantified {
        property: Property,
        quantifier: Quantifier,
        predicate: Box<Node>,
        span: Span,
    },
    /// A test on `_`, the current element of the enclosing quantifier.
    Element {
        test: TextTest,
        span: Span,
    },
}

/// Where an expression stands: at the top, or inside a quantifier over `collection`.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Top,
    Quantifier { collection: &'static str },
}

pub(crate) struct Compiled {
    pub(crate) root: Option<Node>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Bit `index` set for every property the rule reads.
    pub(crate) reads: u64,
}

pub(crate) fn compile(expr: &Expr) -> Compiled {
    let mut compiler = Compiler {
        diagnostics: Vec::new(),
        reads: 0,
    };
    let root = compiler.node(expr, Scope::Top);
    Compiled {
        root,
        diagnostics: compiler.diagnostics,
        reads: compiler.reads,
    }
}

struct Compiler {
    diagnostics: Vec<Diagnostic>,
    reads: u64,
}

/// The left side of a comparison, resolved.
#[derive(Debug, Clone, Copy)]
enum Target {
    Property(Property),
    Element,
}

impl Compiler {
    fn error(&mut self, kind: ErrorKind, detail: impl std::fmt::Display, span: Span) {
        self.diagnostics.push(Diagnostic::error(kind, detail, span));
    }

    /// Checks and compiles `expr`; every error found is recorded, and `None` returned if any.
    fn node(&mut self, expr: &Expr, scope: Scope) -> Option<Node> {
        match &expr.kind {
            ExprKind::Or(operands) => self
                .operands(operands, scope)
                .map(|nodes| Node::Or(nodes, expr.span)),
            ExprKind::And(operands) => self
                .operands(operands, scope)
                .map(|nodes| Node::And(nodes, expr.span)),
            ExprKind::Not(operand) => self
                .node(operand, scope)
                .map(|node| Node::Not(Box::new(node), expr.span)),
            ExprKind::Comparison(comparison) => self.comparison(comparison, expr.span, scope),
            ExprKind::Quantified(quantified) => self.quantified(quantified, expr.span, scope),
        }
    }

    fn operands(&mut self, operands: &[Expr], scope: Scope) -> Option<Box<[Node]>> {
        // Check every operand, so that all errors are reported, not only the first.
        let nodes: Vec<Option<Node>> = operands
            .iter()
            .map(|operand| self.node(operand, scope))
            .collect();
        nodes.into_iter().collect()
    }

    fn target(&mut self, subject: &Subject, span: Span, scope: Scope) -> Option<Target> {
        match (subject, scope) {
            (Subject::Element, Scope::Quantifier { .. }) => Some(Target::Element),
            (Subject::Element, Scope::Top) => {
                self.error(
                    ErrorKind::WrongProperty,
                    "`_` stands for an element of a collection and is allowed only inside -any (…) or -all (…)",
                    span,
                );
                None
            }
            (Subject::Property { .. }, Scope::Quantifier { collection }) => {
                self.error(
                    ErrorKind::WrongProperty,
                    format!(
                        "inside -any/-all over {collection} only `_` (its element) can be compared, not `{subject}`"
                    ),
                    span,
                );
                None
            }
            (Subject::Property { object, name }, Scope::Top) => {
                let property = self.property(object.as_deref(), name, span)?;
                if let Some(index) = property.index() {
                    self.reads |= 1 << index;
                }
                Some(Target::Property(property))
            }
        }
    }

    fn property(&mut self, object: Option<&str>, name: &str, span: Span) -> Option<Property> {
        match object {
            None => {
                let hint = match Property::lookup(name) {
                    Some(property) => format!("; write device.{}", property.name()),
                    None => String::new(),
                };
                self.error(
                    ErrorKind::NoObjectType,
                    format!("`{name}` has no object type prefix{hint}"),
                    span,
                );
                None
            }
            Some(object) if !object.eq_ignore_ascii_case("device") => {
                self.error(
                    ErrorKind::InvalidObjectType,
                    format!(
                        "`{object}.{name}`: a device rule reads only device properties (device.…)"
                    ),
                    span,
                );
                None
            }
            Some(object) => {
                let property = Property::lookup(name);
                if property.is_none() {
                    self.error(
                        ErrorKind::AttributeNotSupported,
                        format!("`{object}.{name}` is not a device property"),
                        span,
                    );
                }
                property
            }
        }
    }

    fn quantified(&mut self, quantified: &Quantified, span: Span, scope: Scope) -> Option<Node> {
        let target = self.target(&quantified.subject, quantified.subject_span, scope);
        let collection = match target {
            Some(Target::Property(property))
                if property.property_type() == PropertyType::Collection =>
            {
                Some(property)
            }
            Some(target) => {
                let what = match target {
                    Target::Property(property) => format!(
                        "{}, a {}",
                        property.name(),
                        type_name(property.property_type())
                    ),
                    Target::Element => "`_`, a string element".to_owned(),
                };
                self.error(
                    ErrorKind::OperatorNotSupported,
                    format!(
                        "`{}` applies to collections (devicePhysicalIds, systemLabels), not to {what}",
                        quantified.quantifier
                    ),
                    quantified.quantifier_span,
                );
                None
            }
            None => None,
        };
        // Check the predicate even when the collection is wrong, to report all errors.
        let inner_scope = Scope::Quantifier {
            collection: collection.map_or("the collection", |property| property.name()),
        };
        let predicate = self.node(&quantified.predicate, inner_scope);
        Some(Node::Quantified {
            property: collection?,
            quantifier: quantified.quantifier,
            predicate: Box::new(predicate?),
            span,
        })
    }

    fn comparison(&mut self, comparison: &Comparison, span: Span, scope: Scope) -> Option<Node> {
        let target = self.target(&comparison.subject, comparison.subject_span, scope)?;
        let operator = comparison.operator;
        let property_type = match target {
            Target::Property(property) => property.property_type(),
            Target::Element => PropertyType::String,
        };
        if property_type == PropertyType::Boolean {
            let Target::Property(property) = target else {
                return None;
            };
            return self.boolean(comparison, property, span);
        }
        let matcher = self.matcher(comparison, target)?;
        let negated = operator.is_negative();
        let test = TextTest { matcher, negated };
        Some(match target {
            Target::Element => Node::Element { test, span },
            Target::Property(property) if property_type == PropertyType::Collection => {
                self.diagnostics
                    .push(collection_warning(comparison, property, span));
                Node::SomeElement {
                    property,
                    test,
                    span,
                }
            }
            Target::Property(property) => Node::Text {
                property,
                test,
                span,
            },
        })
    }

    fn boolean(&mut self, comparison: &Comparison, property: Property, span: Span) -> Option<Node> {
        let operator = comparison.operator;
        if !matches!(operator, Operator::Eq | Operator::Ne) {
            self.error(
                ErrorKind::OperatorNotSupported,
                format!(
                    "`{operator}` on {}, a boolean; use -eq or -ne",
                    property.name()
                ),
                comparison.operator_span,
            );
            return None;
        }
        let expected = match &comparison.value {
            Value::Bool(value) => Some(*value),
            Value::Null => None,
            Value::String(text) if text.eq_ignore_ascii_case("true") => Some(true),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Some(false),
            value => {
                self.error(
                    ErrorKind::ValueNotApplicable,
                    format!(
                        "{} is a boolean: compare it with true or false, not {}",
                        property.name(),
                        describe_value(value)
                    ),
                    comparison.value_span,
                );
                return None;
            }
        };
        Some(Node::Boolean {
            property,
            expected,
            negated: operator == Operator::Ne,
            span,
        })
    }

    /// The positive test of a comparison on a string, an element, or a collection's elements.
    fn matcher(&mut self, comparison: &Comparison, target: Target) -> Option<Matcher> {
        let operator = comparison.operator;
        let value_span = comparison.value_span;
        let target_name = match target {
            Target::Property(property) => property.name(),
            Target::Element => "`_`",
        };
        let on_collection = matches!(
            target,
            Target::Property(property) if property.property_type() == PropertyType::Collection
        );
        let text = match (&comparison.value, operator.positive()) {
            (Value::Array(elements), Operator::In) => {
                return Some(Matcher::OneOf(
                    elements
                        .iter()
                        .map(|element| Folded::new(element.text()))
                        .collect(),
                ));
            }
            (value, Operator::In) => {
                self.error(
                    ErrorKind::InvalidOperands,
                    format!(
                        "`{operator}` needs an array such as [\"a\", \"b\"], not {}",
                        describe_value(value)
                    ),
                    value_span,
                );
                return None;
            }
            (Value::Array(_), _) => {
                self.error(
                    ErrorKind::ValueNotApplicable,
                    format!("an array can be used only with -in and -notIn, not with `{operator}`"),
                    value_span,
                );
                return None;
            }
            (Value::Null, Operator::Eq) => return Some(Matcher::IsNull),
            (Value::Null, _) => {
                self.error(
                    ErrorKind::InvalidOperands,
                    format!("null can be compared only with -eq and -ne, not with `{operator}`"),
                    value_span,
                );
                return None;
            }
            (value @ (Value::Bool(_) | Value::Number(_)), _) => {
                self.error(
                    ErrorKind::ValueNotApplicable,
                    format!(
                        "{target_name} holds strings, not {}; quote it: \"{value}\"",
                        describe_value(value)
                    ),
                    value_span,
                );
                return None;
            }
            (Value::String(text), _) => text,
        };
        Some(match operator.positive() {
            // On a collection without a quantifier, -contains means "has an element equal to".
            Operator::Eq => Matcher::Equals(Folded::new(text)),
            Operator::Contains if on_collection => Matcher::Equals(Folded::new(text)),
            Operator::Contains => Matcher::Contains(Folded::new(text)),
            Operator::StartsWith => Matcher::StartsWith(Folded::new(text)),
            Operator::EndsWith => Matcher::EndsWith(Folded::new(text)),
            _ => Matcher::Matches(self.regex(text, value_span)?),
        })
    }

    fn regex(&mut self, pattern: &str, span: Span) -> Option<Regex> {
        match regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Some(regex),
            Err(error) => {
                self.error(
                    ErrorKind::QueryCompilation,
                    regex_error(pattern, &error),
                    span,
                );
                None
            }
        }
    }
}

/// One line saying what is wrong with a pattern (the regex crate's message spans several).
fn regex_error(pattern: &str, error: &regex::Error) -> String {
    let reason = match error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or(text)
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => {
            format!("it compiles to more than {limit} bytes")
        }
        other => other.to_string(),
    };
    let lower = reason.to_ascii_lowercase();
    let linear_only = if lower.contains("look-around") || lower.contains("backreference") {
        " (only linear-time regular expression syntax is supported)"
    } else {
        ""
    };
    format!("invalid regular expression \"{pattern}\": {reason}{linear_only}")
}

/// A comparison straight on a collection is accepted, with a warning that says what it means
/// and how to write it with a quantifier.
fn collection_warning(comparison: &Comparison, property: Property, span: Span) -> Diagnostic {
    let operator = comparison.operator;
    // -contains on a collection means "has an element equal to".
    let (element_test, element_negation) = match operator.positive() {
        Operator::Contains => (Operator::Eq, Operator::Ne),
        positive => (positive, negation(positive)),
    };
    let test = if element_test == Operator::Eq {
        "equals the value".to_owned()
    } else {
        format!("satisfies `{element_test}`")
    };
    let name = property.name();
    let value = &comparison.value;
    let (meaning, rewrite) = if operator.is_negative() {
        (
            format!("no element {test}"),
            format!("device.{name} -all (_ {element_negation} {value})"),
        )
    } else {
        (
            format!("some element {test}"),
            format!("device.{name} -any (_ {element_test} {value})"),
        )
    };
    Diagnostic::warning(
        format!(
            "`{operator}` compares the collection {name} directly: true when {meaning}; write `{rewrite}`"
        ),
        span,
    )
}

/// The negative operator of a positive one.
fn negation(positive: Operator) -> Operator {
    match positive {
        Operator::Eq => Operator::Ne,
        Operator::StartsWith => Operator::NotStartsWith,
        Operator::EndsWith => Operator::NotEndsWith,
        Operator::Contains => Operator::NotContains,
        Operator::Match => Operator::NotMatch,
        Operator::In => Operator::NotIn,
        negative => negative,
    }
}

fn type_name(property_type: PropertyType) -> &'static str {
    match property_type {
        PropertyType::String => "string",
        PropertyType::Boolean => "boolean",
        PropertyType::Collection => "collection",
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string \"{text}\""),
        Value::Number(number) => format!("the number {number}"),
        Value::Bool(value) => format!("the boolean {value}"),
        Value::Null => "null".to_owned(),
        Value::Array(elements) => {
            let strings = elements
                .iter()
                .all(|element| matches!(element, ArrayElement::String(_)));
            if strings {
                "an array of strings".to_owned()
            } else {
                "an array".to_owned()
            }
        }
    }
}

//! The syntax tree of a rule, with byte spans into its source text.
//!
//! [`Expr`]'s `Display` prints the canonical form of a rule (`-eq` style operators, double-quoted
//! strings, the fewest parentheses that keep its meaning); parsing that text gives back the same
//! tree, spans aside.

use std::fmt;

/// A byte range `start..end` in the UTF-8 text of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub const fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// An expression: a node of the syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What the expression is.
    pub kind: ExprKind,
    /// The source text it was parsed from, without enclosing parentheses.
    pub span: Span,
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `a -or b -or …`: at least two operands.
    Or(Vec<Expr>),
    /// `a -and b -and …`: at least two operands.
    And(Vec<Expr>),
    /// `-not a`.
    Not(Box<Expr>),
    /// `subject -operator value`.
    Comparison(Comparison),
    /// `subject -any (predicate)` or `subject -all (predicate)`.
    Quantified(Quantified),
}

/// A comparison of a property (or of `_`) with a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The left side.
    pub subject: Subject,
    /// Where the left side is written.
    pub subject_span: Span,
    /// The operator.
    pub operator: Operator,
    /// Where the operator is written.
    pub operator_span: Span,
    /// The right side.
    pub value: Value,
    /// Where the right side is written.
    pub value_span: Span,
}

/// A quantifier over the elements of a collection property.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantified {
    /// The collection (a property; anything else is refused by the checker).
    pub subject: Subject,
    /// Where the collection is written.
    pub subject_span: Span,
    /// `-any` or `-all`.
    pub quantifier: Quantifier,
    /// Where the quantifier is written.
    pub quantifier_span: Span,
    /// The predicate on `_`, the element.
    pub predicate: Box<Expr>,
}

/// The left side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `_`: the current element inside `-any`/`-all`.
    Element,
    /// `object.name` as written (`device.deviceModel`), or a bare `name` (no object type).
    Property {
        /// The part before the first dot, if there is a dot.
        object: Option<String>,
        /// The part after the first dot (the whole word without a dot).
        name: String,
    },
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `-eq`
    Eq,
    /// `-ne`
    Ne,
    /// `-startsWith`
    StartsWith,
    /// `-notStartsWith`
    NotStartsWith,
    /// `-endsWith`
    EndsWith,
    /// `-notEndsWith`
    NotEndsWith,
    /// `-contains`
    Contains,
    /// `-notContains`
    NotContains,
    /// `-match`
    Match,
    /// `-notMatch`
    NotMatch,
    /// `-in`
    In,
    /// `-notIn`
    NotIn,
}

impl Operator {
    /// Every comparison operator.
    pub const ALL: [Operator; 12] = [
        Operator::Eq,
        Operator::Ne,
        Operator::StartsWith,
        Operator::NotStartsWith,
        Operator::EndsWith,
        Operator::NotEndsWith,
        Operator::Contains,
        Operator::NotContains,
        Operator::Match,
        Operator::NotMatch,
        Operator::In,
        Operator::NotIn,
    ];

    /// The canonical keyword without its hyphen: `eq`, `startsWith`, …
    pub fn keyword(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::StartsWith => "startsWith",
            Operator::NotStartsWith => "notStartsWith",
            Operator::EndsWith => "endsWith",
            Operator::NotEndsWith => "notEndsWith",
            Operator::Contains => "contains",
            Operator::NotContains => "notContains",
            Operator::Match => "match",
            Operator::NotMatch => "notMatch",
            Operator::In => "in",
            Operator::NotIn => "notIn",
        }
    }

    /// True for the negative operators (`-ne`, `-notStartsWith`, …), which are true on null.
    pub fn is_negative(self) -> bool {
        matches!(
            self,
            Operator::Ne
                | Operator::NotStartsWith
                | Operator::NotEndsWith
                | Operator::NotContains
                | Operator::NotMatch
                | Operator::NotIn
        )
    }

    /// The positive operator this one negates (itself when it is positive).
    pub fn positive(self) -> Operator {
        match self {
            Operator::Ne => Operator::Eq,
            Operator::NotStartsWith => Operator::StartsWith,
            Operator::NotEndsWith => Operator::EndsWith,
            Operator::NotContains => Operator::Contains,
            Operator::NotMatch => Operator::Match,
            Operator::NotIn => Operator::In,
            positive => positive,
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{}", self.keyword())
    }
}

/// `-any` or `-all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantifier {
    /// True when at least one element satisfies the predicate.
    Any,
    /// True when every element satisfies the predicate (so on an empty collection).
    All,
}

impl Quantifier {
    /// The keyword without its hyphen.
    pub fn keyword(self) -> &'static str {
        match self {
            Quantifier::Any => "any",
            Quantifier::All => "all",
        }
    }
}

impl fmt::Display for Quantifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{}", self.keyword())
    }
}

/// The right side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, escapes resolved.
    String(String),
    /// A number as written (`42`, `-1`, `1.5`); only meaningful inside arrays.
    Number(String),
    /// `true` or `false`.
    Bool(bool),
    /// `null` or `$null`.
    Null,
    /// `[e1, e2, …]`.
    Array(Vec<ArrayElement>),
}

/// An element of an array value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayElement {
    /// A quoted string, escapes resolved.
    String(String),
    /// A number, compared as the decimal text it is written as.
    Number(String),
}

impl ArrayElement {
    /// The text the element is compared as.
    pub fn text(&self) -> &str {
        match self {
            ArrayElement::String(text) | ArrayElement::Number(text) => text,
        }
    }
}

impl Expr {
    /// A copy of this tree with every span set to `0..0`, to compare trees by structure.
    pub fn without_spans(&self) -> Expr {
        let kind = match &self.kind {
            ExprKind::Or(operands) => {
                ExprKind::Or(operands.iter().map(Expr::without_spans).collect())
            }
            ExprKind::And(operands) => {
                ExprKind::And(operands.iter().map(Expr::without_spans).collect())
            }
            ExprKind::Not(operand) => ExprKind::Not(Box::new(operand.without_spans())),
            ExprKind::Comparison(comparison) => ExprKind::Comparison(Comparison {
                subject_span: Span::default(),
                operator_span: Span::default(),
                value_span: Span::default(),
                ..comparison.clone()
            }),
            ExprKind::Quantified(quantified) => ExprKind::Quantified(Quantified {
                subject: quantified.subject.clone(),
                subject_span: Span::default(),
                quantifier: quantified.quantifier,
                quantifier_span: Span::default(),
                predicate: Box::new(quantified.predicate.without_spans()),
            }),
        };
        Expr {
            kind,
            span: Span::default(),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Or(operands) => {
                write_operands(f, operands, " -or ", |e| matches!(e, ExprKind::Or(_)))
            }
            ExprKind::And(operands) => write_operands(f, operands, " -and ", |e| {
                matches!(e, ExprKind::Or(_) | ExprKind::And(_))
            }),
            ExprKind::Not(operand) => {
                f.write_str("-not ")?;
                write_maybe_parenthesized(f, operand, |e| {
                    matches!(e, ExprKind::Or(_) | ExprKind::And(_))
                })
            }
            ExprKind::Comparison(comparison) => write!(
                f,
                "{} {} {}",
                comparison.subject, comparison.operator, comparison.value
            ),
            ExprKind::Quantified(quantified) => write!(
                f,
                "{} {} ({})",
                quantified.subject, quantified.quantifier, quantified.predicate
            ),
        }
    }
}

fn write_operands(
    f: &mut fmt::Formatter<'_>,
    operands: &[Expr],
    separator: &str,
    needs_parentheses: impl Fn(&ExprKind) -> bool,
) -> fmt::Result {
    for (index, operand) in operands.iter().enumerate() {
        if index > 0 {
            f.write_str(separator)?;
        }
        write_maybe_parenthesized(f, operand, &needs_parentheses)?;
    }
    Ok(())
}

fn write_maybe_parenthesized(
    f: &mut fmt::Formatter<'_>,
    expr: &Expr,
    needs_parentheses: impl Fn(&ExprKind) -> bool,
) -> fmt::Result {
    if needs_parentheses(&expr.kind) {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Element => f.write_str("_"),
            Subject::Property {
                object: Some(object),
                name,
            } => write!(f, "{object}.{name}"),
            Subject::Property { object: None, name } => f.write_str(name),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(text) => write_quoted(f, text),
            Value::Number(text) => f.write_str(text),
            Value::Bool(true) => f.write_str("true"),
            Value::Bool(false) => f.write_str("false"),
            Value::Null => f.write_str("null"),
            Value::Array(elements) => {
                f.write_str("[")?;
                for (index, element) in elements.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    match element {
                        ArrayElement::String(text) => write_quoted(f, text)?,
                        ArrayElement::Number(text) => f.write_str(text)?,
                    }
                }
                f.write_str("]")
            }
        }
    }
}

/// Writes `text` as a double-quoted string literal that lexes back to `text`.
fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    use fmt::Write;
    f.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("`\"")?,
            '`' => f.write_str("``")?,
            // Two apostrophes stand for one, so a lone one must be doubled to survive.
            '\'' => f.write_str("''")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

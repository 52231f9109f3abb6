//! Recursive-descent parser. Precedence, tightest first: comparison, `-not`, `-and`, `-or`.
//!
//! ```text
//! rule       := or END
//! or         := and ("-or" and)*
//! and        := not ("-and" not)*
//! not        := "-not" not | primary
//! primary    := "(" or ")" | comparison
//! comparison := word operator value | word quantifier ( "(" or ")" | comparison )
//! value      := string | number | true | false | null | $null | "[" (element ("," element)*)? "]"
//! ```

use crate::MAX_RULE_LENGTH;
use crate::ast::{
    ArrayElement, Comparison, Expr, ExprKind, Operator, Quantified, Quantifier, Span, Subject,
    Value,
};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::lexer::{Keyword, Lexer, Tok, Token};

/// How deeply parentheses, `-not` and quantifiers may nest. Real rules stay far below; the limit
/// bounds the recursion of every pass over the tree, so no rule can exhaust a thread's stack.
pub const MAX_NESTING: usize = 128;

/// The result of [`parse`](crate::parse): the tree when the rule is syntactically correct, and
/// the diagnostics (at most one error: parsing stops at the first).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The syntax tree; `None` when there is an error.
    pub expr: Option<Expr>,
    /// Warnings, and the syntax error if there is one.
    pub diagnostics: Vec<Diagnostic>,
}

pub(crate) fn parse(source: &str) -> Parsed {
    if let Some(error) = length_error(source) {
        return Parsed {
            expr: None,
            diagnostics: vec![error],
        };
    }
    let mut parser = Parser {
        lexer: Lexer::new(source),
        peeked: None,
        depth: 0,
        warnings: Vec::new(),
        source,
    };
    let result = parser.rule();
    let mut diagnostics = parser.lexer.warnings;
    diagnostics.append(&mut parser.warnings);
    let expr = match result {
        Ok(expr) => Some(expr),
        Err(error) => {
            diagnostics.insert(0, error);
            None
        }
    };
    Parsed { expr, diagnostics }
}

fn length_error(source: &str) -> Option<Diagnostic> {
    // Cheap first: a string of at most MAX bytes has at most MAX characters.
    if source.len() <= MAX_RULE_LENGTH {
        return None;
    }
    let (first_excess, _) = source.char_indices().nth(MAX_RULE_LENGTH)?;
    let length = source.chars().count();
    Some(Diagnostic::error(
        ErrorKind::TooLong,
        format!("The rule has {length} characters; at most {MAX_RULE_LENGTH} are allowed."),
        Span::new(first_excess, source.len()),
    ))
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    depth: usize,
    warnings: Vec<Diagnostic>,
    source: &'a str,
}

type ParseResult<T> = Result<T, Diagnostic>;

fn syntax_error(detail: impl std::fmt::Display, span: Span) -> Diagnostic {
    Diagnostic::error(ErrorKind::QueryCompilation, detail, span)
}

impl Parser<'_> {
    fn peek(&mut self) -> ParseResult<&Token> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        match &self.peeked {
            Some(token) => Ok(token),
            None => Err(syntax_error(
                "internal error: no token",
                Span::new(0, self.source.len()),
            )),
        }
    }

    fn bump(&mut self) -> ParseResult<Token> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    fn peek_is(&mut self, tok: &Tok) -> ParseResult<bool> {
        Ok(&self.peek()?.tok == tok)
    }

    fn enter(&mut self, span: Span) -> ParseResult<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(syntax_error(
                format!(
                    "the rule nests parentheses, -not or quantifiers more than {MAX_NESTING} deep"
                ),
                span,
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn rule(&mut self) -> ParseResult<Expr> {
        if self.peek_is(&Tok::End)? {
            return Err(syntax_error(
                "the rule is empty",
                Span::new(0, self.source.len()),
            ));
        }
        let (expr, _) = self.or()?;
        let next = self.bump()?;
        match next.tok {
            Tok::End => Ok(expr),
            Tok::RParen => Err(syntax_error(
                "unbalanced parentheses: this `)` closes nothing",
                next.span,
            )),
            _ => Err(self.missing_connective(&next)),
        }
    }

    /// Two expressions side by side: `(a -eq "x") (b -eq "y")`.
    fn missing_connective(&self, next: &Token) -> Diagnostic {
        syntax_error(
            format!(
                "expected -and or -or before {}; two expressions need an operator between them",
                next.describe()
            ),
            next.span,
        )
    }

    /// After `-and`, `-or` or `-not`: the rule must go on.
    fn forbid_trailing(&mut self, operator: &Token) -> ParseResult<()> {
        if self.peek_is(&Tok::End)? {
            let Tok::Keyword(keyword) = operator.tok else {
                return Ok(());
            };
            return Err(syntax_error(
                format!(
                    "the rule ends with `{}`, which needs an expression after it",
                    keyword.canonical()
                ),
                operator.span,
            ));
        }
        Ok(())
    }

    /// Each of `or`, `and`, `not` and `primary` returns the expression and its outer span,
    /// which includes the parentheses around it: an operator's span covers its operands'
    /// parentheses, so that its text is balanced.
    fn or(&mut self) -> ParseResult<(Expr, Span)> {
        let first = self.and()?;
        let mut operands = vec![first];
        while self.peek_is(&Tok::Keyword(Keyword::Or))? {
            let operator = self.bump()?;
            self.forbid_trailing(&operator)?;
            operands.push(self.and()?);
        }
        Ok(combine(operands, ExprKind::Or))
    }

    fn and(&mut self) -> ParseResult<(Expr, Span)> {
        let first = self.not()?;
        let mut operands = vec![first];
        while self.peek_is(&Tok::Keyword(Keyword::And))? {
            let operator = self.bump()?;
            self.forbid_trailing(&operator)?;
            operands.push(self.not()?);
        }
        Ok(combine(operands, ExprKind::And))
    }

    fn not(&mut self) -> ParseResult<(Expr, Span)> {
        if !self.peek_is(&Tok::Keyword(Keyword::Not))? {
            return self.primary();
        }
        let operator = self.bump()?;
        self.forbid_trailing(&operator)?;
        self.enter(operator.span)?;
        let (operand, operand_outer) = self.not()?;
        self.leave();
        let span = operator.span.to(operand_outer);
        Ok((
            Expr {
                span,
                kind: ExprKind::Not(Box::new(operand)),
            },
            span,
        ))
    }

    fn primary(&mut self) -> ParseResult<(Expr, Span)> {
        let token = self.bump()?;
        match token.tok {
            Tok::LParen => self.parenthesized(token.span),
            Tok::Word(word) => {
                let comparison = self.comparison(word, token.span)?;
                let span = comparison.span;
                Ok((comparison, span))
            }
            Tok::End => Err(syntax_error(
                "the rule ends where an expression was expected",
                token.span,
            )),
            Tok::RParen => Err(syntax_error(
                "unexpected `)`: an expression was expected",
                token.span,
            )),
            Tok::Keyword(keyword @ (Keyword::Compare(_) | Keyword::Quantify(_))) => {
                Err(syntax_error(
                    format!(
                        "`{}` needs a property before it, such as device.deviceModel",
                        keyword.canonical()
                    ),
                    token.span,
                ))
            }
            Tok::Keyword(keyword) => Err(syntax_error(
                format!("`{}` needs an expression before it", keyword.canonical()),
                token.span,
            )),
            _ => Err(syntax_error(
                format!(
                    "a comparison starts with a property such as device.deviceModel, not {}",
                    token.describe()
                ),
                token.span,
            )),
        }
    }

    /// After `(`: an expression and its `)`.
    fn parenthesized(&mut self, open: Span) -> ParseResult<(Expr, Span)> {
        self.enter(open)?;
        if self.peek_is(&Tok::RParen)? {
            let close = self.bump()?;
            return Err(syntax_error("empty parentheses", open.to(close.span)));
        }
        let (inner, _) = self.or()?;
        let close = self.bump()?;
        match close.tok {
            Tok::RParen => {
                self.leave();
                Ok((inner, open.to(close.span)))
            }
            Tok::End => Err(syntax_error(
                "unbalanced parentheses: this `(` is never closed",
                open,
            )),
            _ => Err(self.missing_connective(&close)),
        }
    }

    fn comparison(&mut self, word: String, subject_span: Span) -> ParseResult<Expr> {
        let subject = if word == "_" {
            Subject::Element
        } else {
            match word.split_once('.') {
                Some((object, name)) => Subject::Property {
                    object: Some(object.to_owned()),
                    name: name.to_owned(),
                },
                None => Subject::Property {
                    object: None,
                    name: word,
                },
            }
        };
        let operator = self.bump()?;
        match operator.tok {
            Tok::Keyword(Keyword::Compare(op)) => {
                let (value, value_span) = self.value(op, operator.span)?;
                Ok(Expr {
                    span: subject_span.to(value_span),
                    kind: ExprKind::Comparison(Comparison {
                        subject,
                        subject_span,
                        operator: op,
                        operator_span: operator.span,
                        value,
                        value_span,
                    }),
                })
            }
            Tok::Keyword(Keyword::Quantify(quantifier)) => {
                self.quantified(subject, subject_span, quantifier, operator.span)
            }
            Tok::End => Err(syntax_error(
                format!("`{subject}` needs an operator and a value after it, such as -eq \"…\""),
                subject_span,
            )),
            _ => Err(syntax_error(
                format!(
                    "expected an operator such as -eq after `{subject}`, found {}",
                    operator.describe()
                ),
                operator.span,
            )),
        }
    }

    fn quantified(
        &mut self,
        subject: Subject,
        subject_span: Span,
        quantifier: Quantifier,
        quantifier_span: Span,
    ) -> ParseResult<Expr> {
        let next = self.bump()?;
        self.enter(next.span)?;
        let (predicate, end) = match next.tok {
            Tok::LParen => {
                if self.peek_is(&Tok::RParen)? {
                    let close = self.bump()?;
                    return Err(syntax_error(
                        format!("`{quantifier}` has an empty predicate"),
                        next.span.to(close.span),
                    ));
                }
                let (predicate, _) = self.or()?;
                let close = self.bump()?;
                match close.tok {
                    Tok::RParen => {}
                    Tok::End => {
                        return Err(syntax_error(
                            "unbalanced parentheses: this `(` is never closed",
                            next.span,
                        ));
                    }
                    _ => return Err(self.missing_connective(&close)),
                }
                (predicate, close.span)
            }
            Tok::Word(word) => {
                let predicate = self.comparison(word, next.span)?;
                self.warnings.push(Diagnostic::warning(
                    format!(
                        "the predicate of `{quantifier}` is not in parentheses; write `{subject} {quantifier} ({predicate})`"
                    ),
                    next.span.to(predicate.span),
                ));
                let end = predicate.span;
                (predicate, end)
            }
            Tok::End => {
                return Err(syntax_error(
                    format!(
                        "the rule ends after `{quantifier}`, which needs a predicate such as (_ -eq \"…\")"
                    ),
                    quantifier_span,
                ));
            }
            _ => {
                return Err(Diagnostic::error(
                    ErrorKind::InvalidOperands,
                    format!(
                        "`{quantifier}` needs a predicate on `_` in parentheses, such as (_ -startsWith \"…\"), not {}",
                        next.describe()
                    ),
                    next.span,
                ));
            }
        };
        self.leave();
        Ok(Expr {
            span: subject_span.to(end),
            kind: ExprKind::Quantified(Quantified {
                subject,
                subject_span,
                quantifier,
                quantifier_span,
                predicate: Box::new(predicate),
            }),
        })
    }

    fn value(&mut self, operator: Operator, operator_span: Span) -> ParseResult<(Value, Span)> {
        let token = self.bump()?;
        let value = match token.tok {
            Tok::Str(text) => Value::String(text),
            Tok::Number(number) => Value::Number(number),
            Tok::LBracket => return self.array(token.span),
            Tok::Word(word) => {
                if word.eq_ignore_ascii_case("true") {
                    Value::Bool(true)
                } else if word.eq_ignore_ascii_case("false") {
                    Value::Bool(false)
                } else if word.eq_ignore_ascii_case("null") || word.eq_ignore_ascii_case("$null") {
                    Value::Null
                } else {
                    return Err(syntax_error(
                        format!(
                            "`{word}` is not a value; put strings in double quotes: \"{word}\""
                        ),
                        token.span,
                    ));
                }
            }
            Tok::End => {
                return Err(syntax_error(
                    format!("the rule ends with `{operator}`, which needs a value after it"),
                    operator_span,
                ));
            }
            _ => {
                return Err(Diagnostic::error(
                    ErrorKind::InvalidOperands,
                    format!("`{operator}` needs a value, not {}", token.describe()),
                    token.span,
                ));
            }
        };
        Ok((value, token.span))
    }

    /// After `[`: elements and the closing `]`.
    fn array(&mut self, open: Span) -> ParseResult<(Value, Span)> {
        let mut elements = Vec::new();
        if self.peek_is(&Tok::RBracket)? {
            let close = self.bump()?;
            return Ok((Value::Array(elements), open.to(close.span)));
        }
        loop {
            let token = self.bump()?;
            match token.tok {
                Tok::Str(text) => elements.push(ArrayElement::String(text)),
                Tok::Number(number) => elements.push(ArrayElement::Number(number)),
                Tok::End => return Err(unclosed_array(open)),
                _ => {
                    return Err(syntax_error(
                        format!(
                            "array elements are quoted strings or numbers, not {}",
                            token.describe()
                        ),
                        token.span,
                    ));
                }
            }
            let separator = self.bump()?;
            match separator.tok {
                Tok::Comma => {}
                Tok::RBracket => return Ok((Value::Array(elements), open.to(separator.span))),
                Tok::End => return Err(unclosed_array(open)),
                _ => {
                    return Err(syntax_error(
                        format!(
                            "expected `,` or `]` in the array, found {}",
                            separator.describe()
                        ),
                        separator.span,
                    ));
                }
            }
        }
    }
}

fn unclosed_array(open: Span) -> Diagnostic {
    syntax_error("this `[` is never closed", open)
}

/// One operand stands for itself; several make an `-and`/`-or` node.
/// The node spans from its first operand's outer span to its last one's.
fn combine(mut operands: Vec<(Expr, Span)>, make: fn(Vec<Expr>) -> ExprKind) -> (Expr, Span) {
    if operands.len() == 1
        && let Some(only) = operands.pop()
    {
        return only;
    }
    let span = match (operands.first(), operands.last()) {
        (Some((_, first)), Some((_, last))) => first.to(*last),
        _ => Span::default(),
    };
    let expr = Expr {
        kind: make(operands.into_iter().map(|(expr, _)| expr).collect()),
        span,
    };
    (expr, span)
}

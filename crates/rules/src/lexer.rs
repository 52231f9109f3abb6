//! Splits a rule into tokens, on demand, so that the first error in reading order is the one
//! reported whichever stage finds it.

use crate::ast::{Operator, Quantifier, Span};
use crate::diagnostic::{Diagnostic, ErrorKind};

/// A keyword, written with a hyphen, an en dash or neither, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Not,
    Compare(Operator),
    Quantify(Quantifier),
}

impl Keyword {
    fn lookup(word: &str) -> Option<Keyword> {
        let keyword = match word.to_ascii_lowercase().as_str() {
            "and" => Keyword::And,
            "or" => Keyword::Or,
            "not" => Keyword::Not,
            "any" => Keyword::Quantify(Quantifier::Any),
            "all" => Keyword::Quantify(Quantifier::All),
            lower => Keyword::Compare(
                Operator::ALL
                    .into_iter()
                    .find(|operator| operator.keyword().eq_ignore_ascii_case(lower))?,
            ),
        };
        Some(keyword)
    }

    pub(crate) fn canonical(self) -> String {
        match self {
            Keyword::And => "-and".to_owned(),
            Keyword::Or => "-or".to_owned(),
            Keyword::Not => "-not".to_owned(),
            Keyword::Compare(operator) => operator.to_string(),
            Keyword::Quantify(quantifier) => quantifier.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// A quoted string with its escapes resolved.
    Str(String),
    /// `12`, `-3`, `1.5`, as written.
    Number(String),
    Keyword(Keyword),
    /// Any other bare word: `device.deviceModel`, `_`, `true`, `$null`, `Latitude`.
    Word(String),
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

impl Token {
    /// How the token reads in a message.
    pub(crate) fn describe(&self) -> String {
        match &self.tok {
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::LBracket => "`[`".to_owned(),
            Tok::RBracket => "`]`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Number(number) => format!("the number `{number}`"),
            Tok::Keyword(keyword) => format!("the operator `{}`", keyword.canonical()),
            Tok::Word(word) => format!("`{word}`"),
            Tok::End => "the end of the rule".to_owned(),
        }
    }
}

const EN_DASH: char = '\u{2013}';

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0B}' | '\u{0C}')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '$')
}

fn is_typographic_quote(c: char) -> bool {
    matches!(
        c,
        '\u{201C}' | '\u{201D}' | '\u{2018}' | '\u{2019}' | '\u{201E}' | '\u{201A}'
    )
}

/// `digits` or `digits.digits`, optionally after a minus sign.
fn is_number(word: &str) -> bool {
    let unsigned = word.strip_prefix('-').unwrap_or(word);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && fraction.is_none_or(all_digits)
}

pub(crate) struct Lexer<'a> {
    source: &'a str,
    position: usize,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        Lexer {
            source,
            position: 0,
            warnings: Vec::new(),
        }
    }

    fn rest(&self) -> &'a str {
        self.source.get(self.position..).unwrap_or("")
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Advances over the run of word characters at the current position and returns it.
    fn take_word(&mut self) -> &'a str {
        let rest = self.rest();
        let length = rest
            .char_indices()
            .find(|&(_, c)| !is_word_char(c))
            .map_or(rest.len(), |(index, _)| index);
        self.position += length;
        rest.get(..length).unwrap_or("")
    }

    pub(crate) fn next_token(&mut self) -> Result<Token, Diagnostic> {
        while let Some(c) = self.peek_char() {
            if !is_whitespace(c) {
                break;
            }
            self.position += c.len_utf8();
        }
        let start = self.position;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                tok: Tok::End,
                span: Span::new(start, start),
            });
        };
        let single = |tok| {
            Ok(Token {
                tok,
                span: Span::new(start, start + 1),
            })
        };
        match c {
            '(' => {
                self.position += 1;
                single(Tok::LParen)
            }
            ')' => {
                self.position += 1;
                single(Tok::RParen)
            }
            '[' => {
                self.position += 1;
                single(Tok::LBracket)
            }
            ']' => {
                self.position += 1;
                single(Tok::RBracket)
            }
            ',' => {
                self.position += 1;
                single(Tok::Comma)
            }
            '"' => self.double_quoted(start),
            '\'' => self.single_quoted(start),
            '-' | EN_DASH => self.dashed(start, c),
            c if is_word_char(c) => {
                let word = self.take_word();
                let span = Span::new(start, self.position);
                let tok = if is_number(word) {
                    Tok::Number(word.to_owned())
                } else if let Some(keyword) = Keyword::lookup(word) {
                    Tok::Keyword(keyword)
                } else {
                    Tok::Word(word.to_owned())
                };
                Ok(Token { tok, span })
            }
            c if is_typographic_quote(c) => Err(Diagnostic::error(
                ErrorKind::QueryCompilation,
                format!(
                    "typographic quotation mark `{c}`; write strings in straight quotes (\"…\")"
                ),
                Span::new(start, start + c.len_utf8()),
            )),
            '\\' => Err(Diagnostic::error(
                ErrorKind::InvalidCharacters,
                "a backslash outside a string",
                Span::new(start, start + 1),
            )),
            c => Err(Diagnostic::error(
                ErrorKind::InvalidCharacters,
                if c.is_control() || c.is_whitespace() {
                    format!("U+{:04X} outside a string", u32::from(c))
                } else {
                    format!("`{c}` (U+{:04X}) outside a string", u32::from(c))
                },
                Span::new(start, start + c.len_utf8()),
            )),
        }
    }

    /// An operator keyword after a hyphen or an en dash, or a negative number.
    fn dashed(&mut self, start: usize, dash: char) -> Result<Token, Diagnostic> {
        self.position += dash.len_utf8();
        let word = self.take_word();
        let span = Span::new(start, self.position);
        if word.is_empty() {
            return Err(Diagnostic::error(
                ErrorKind::QueryCompilation,
                format!("`{dash}` is not followed by an operator"),
                span,
            ));
        }
        if dash == '-' && is_number(word) {
            return Ok(Token {
                tok: Tok::Number(format!("-{word}")),
                span,
            });
        }
        let Some(keyword) = Keyword::lookup(word) else {
            return Err(Diagnostic::error(
                ErrorKind::QueryCompilation,
                format!("unknown operator `{dash}{word}`"),
                span,
            ));
        };
        if dash == EN_DASH {
            self.warnings.push(Diagnostic::warning(
                format!(
                    "an en dash (–) stands for the hyphen in `{dash}{word}`; write `{}`",
                    keyword.canonical()
                ),
                span,
            ));
        }
        Ok(Token {
            tok: Tok::Keyword(keyword),
            span,
        })
    }

    /// `"…"`: a backtick escapes `"` or a backtick, two apostrophes stand for one, anything
    /// else (a backslash included) is itself.
    fn double_quoted(&mut self, start: usize) -> Result<Token, Diagnostic> {
        let mut text = String::new();
        let mut chars = self.rest().char_indices().skip(1).peekable();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    self.position += offset + 1;
                    return Ok(Token {
                        tok: Tok::Str(text),
                        span: Span::new(start, self.position),
                    });
                }
                '`' => match chars.peek() {
                    Some(&(_, escaped @ ('"' | '`'))) => {
                        text.push(escaped);
                        chars.next();
                    }
                    // A backtick before anything else is an ordinary character.
                    _ => text.push('`'),
                },
                '\'' => {
                    if matches!(chars.peek(), Some(&(_, '\''))) {
                        chars.next();
                    }
                    text.push('\'');
                }
                c => text.push(c),
            }
        }
        Err(self.unterminated(start, '"'))
    }

    /// `'…'`: two apostrophes stand for one; everything else is itself.
    fn single_quoted(&mut self, start: usize) -> Result<Token, Diagnostic> {
        let mut text = String::new();
        let mut chars = self.rest().char_indices().skip(1).peekable();
        while let Some((offset, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some(&(_, '\''))) {
                    chars.next();
                    text.push('\'');
                    continue;
                }
                self.position += offset + 1;
                return Ok(Token {
                    tok: Tok::Str(text),
                    span: Span::new(start, self.position),
                });
            }
            text.push(c);
        }
        Err(self.unterminated(start, '\''))
    }

    fn unterminated(&self, start: usize, quote: char) -> Diagnostic {
        Diagnostic::error(
            ErrorKind::QueryCompilation,
            format!("unterminated string: no closing {quote}"),
            Span::new(start, self.source.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn tokens(source: &str) -> Vec<Tok> {
        let mut lexer = Lexer::new(source);
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token().unwrap();
            if token.tok == Tok::End {
                return tokens;
            }
            tokens.push(token.tok);
        }
    }

    fn string(source: &str) -> String {
        match tokens(source).as_slice() {
            [Tok::Str(text)] => text.clone(),
            other => panic!("expected one string, got {other:?}"),
        }
    }

    #[test]
    fn escapes_in_double_quoted_strings() {
        assert_eq!(string(r#""O''Brien""#), "O'Brien");
        assert_eq!(string(r#""a`"b""#), "a\"b");
        assert_eq!(string(r#""a``b""#), "a`b");
        assert_eq!(string(r#""a`b""#), "a`b");
        assert_eq!(string(r#""\d+\.""#), r"\d+\.");
        assert_eq!(string(r#""it's""#), "it's");
        assert_eq!(string(r#""""#), "");
        assert_eq!(string(r#""null""#), "null");
    }

    #[test]
    fn escapes_in_single_quoted_strings() {
        assert_eq!(string("'O''Brien'"), "O'Brien");
        assert_eq!(string("'say \"hi\"'"), "say \"hi\"");
        assert_eq!(string("'a`b'"), "a`b");
    }

    #[test]
    fn keywords_with_and_without_hyphen_in_any_case() {
        assert_eq!(
            tokens("-eq EQ -Eq eq -STARTSWITH notIn -any ALL and -OR not"),
            vec![
                Tok::Keyword(Keyword::Compare(Operator::Eq)),
                Tok::Keyword(Keyword::Compare(Operator::Eq)),
                Tok::Keyword(Keyword::Compare(Operator::Eq)),
                Tok::Keyword(Keyword::Compare(Operator::Eq)),
                Tok::Keyword(Keyword::Compare(Operator::StartsWith)),
                Tok::Keyword(Keyword::Compare(Operator::NotIn)),
                Tok::Keyword(Keyword::Quantify(Quantifier::Any)),
                Tok::Keyword(Keyword::Quantify(Quantifier::All)),
                Tok::Keyword(Keyword::And),
                Tok::Keyword(Keyword::Or),
                Tok::Keyword(Keyword::Not),
            ]
        );
    }

    #[test]
    fn en_dash_is_a_hyphen_with_a_warning() {
        let mut lexer = Lexer::new("–eq");
        let token = lexer.next_token().unwrap();
        assert_eq!(token.tok, Tok::Keyword(Keyword::Compare(Operator::Eq)));
        assert_eq!(token.span, Span::new(0, 5));
        assert_eq!(lexer.warnings.len(), 1);
        assert_eq!(lexer.warnings[0].span(), Span::new(0, 5));
    }

    #[test]
    fn numbers_and_words() {
        assert_eq!(
            tokens("12 -3 1.5 20XW device.deviceModel _ $null"),
            vec![
                Tok::Number("12".into()),
                Tok::Number("-3".into()),
                Tok::Number("1.5".into()),
                Tok::Word("20XW".into()),
                Tok::Word("device.deviceModel".into()),
                Tok::Word("_".into()),
                Tok::Word("$null".into()),
            ]
        );
    }

    #[test]
    fn spans_are_byte_offsets() {
        let mut lexer = Lexer::new("  \"é\" (");
        assert_eq!(lexer.next_token().unwrap().span, Span::new(2, 6));
        assert_eq!(lexer.next_token().unwrap().span, Span::new(7, 8));
        assert_eq!(lexer.next_token().unwrap().span, Span::new(8, 8));
    }

    #[test]
    fn errors() {
        let error = |source: &str| {
            let mut lexer = Lexer::new(source);
            loop {
                match lexer.next_token() {
                    Ok(token) if token.tok == Tok::End => panic!("no error in {source:?}"),
                    Ok(_) => {}
                    Err(error) => return error,
                }
            }
        };
        let backslash = error(r"a \d");
        assert!(
            backslash
                .message
                .starts_with("Invalid characters found in the rule")
        );
        assert_eq!(backslash.span(), Span::new(2, 3));
        let typographic = error("“Sales”");
        assert!(typographic.message.starts_with("Query compilation error"));
        assert!(typographic.message.contains("typographic"));
        let unterminated = error("x \"abc");
        assert!(unterminated.message.starts_with("Query compilation error"));
        assert_eq!(unterminated.span(), Span::new(2, 6));
        assert!(error("-like").message.contains("unknown operator `-like`"));
        assert!(
            error("a - b")
                .message
                .starts_with("Query compilation error")
        );
        assert!(error("@").message.starts_with("Invalid characters"));
    }
}

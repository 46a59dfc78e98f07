//! Turns expression text into tokens, one at a time (so the first mistake in the text is the
//! one reported, whether it is a bad token or a bad arrangement of good ones).

use super::ExprError;

/// A token and the byte offsets it spans.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenKind {
    /// An integer as written, without sign; at most 2^63 (the magnitude of `i64::MIN`).
    Int(u64),
    /// A decimal number as written, without sign; finite.
    Float(f64),
    /// Text with its escapes resolved.
    Text(String),
    Name(String),
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
    Comma,
    Or,
    And,
    Not,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Plus,
    Minus,
    Times,
    Divide,
    Remainder,
    End,
}

/// The magnitude of `i64::MIN`, the largest integer literal (only valid after a minus).
pub(super) const INT_MAGNITUDE_LIMIT: u64 = 1 << 63;

pub(super) struct Lexer<'a> {
    source: &'a str,
    position: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(source: &'a str) -> Self {
        Lexer {
            source,
            position: 0,
        }
    }

    fn peek_byte(&self, ahead: usize) -> Option<u8> {
        self.source.as_bytes().get(self.position + ahead).copied()
    }

    /// The next token, `End` at the end of the text.
    pub fn next_token(&mut self) -> Result<Token, ExprError> {
        while self.peek_byte(0).is_some_and(|b| b.is_ascii_whitespace()) {
            self.position += 1;
        }
        let start = self.position;
        let Some(byte) = self.peek_byte(0) else {
            return Ok(Token {
                kind: TokenKind::End,
                start,
                end: start,
            });
        };
        let two = |second: u8, pair: TokenKind, single: TokenKind| {
            if self.peek_byte(1) == Some(second) {
                (pair, 2)
            } else {
                (single, 1)
            }
        };
        let (kind, length) = match byte {
            b'(' => (TokenKind::OpenParen, 1),
            b')' => (TokenKind::CloseParen, 1),
            b'[' => (TokenKind::OpenBracket, 1),
            b']' => (TokenKind::CloseBracket, 1),
            b',' => (TokenKind::Comma, 1),
            b'+' => (TokenKind::Plus, 1),
            b'-' => (TokenKind::Minus, 1),
            b'*' => (TokenKind::Times, 1),
            b'/' => (TokenKind::Divide, 1),
            b'%' => (TokenKind::Remainder, 1),
            b'<' => two(b'=', TokenKind::LessOrEqual, TokenKind::Less),
            b'>' => two(b'=', TokenKind::GreaterOrEqual, TokenKind::Greater),
            b'!' => two(b'=', TokenKind::NotEqual, TokenKind::Not),
            b'=' if self.peek_byte(1) == Some(b'=') => (TokenKind::Equal, 2),
            b'=' => {
                return Err(ExprError::new(
                    start,
                    "`=` is not an operator; use `==` to compare",
                ));
            }
            b'&' if self.peek_byte(1) == Some(b'&') => (TokenKind::And, 2),
            b'&' => {
                return Err(ExprError::new(
                    start,
                    "`&` is not an operator; use `&&` for \"and\"",
                ));
            }
            b'|' if self.peek_byte(1) == Some(b'|') => (TokenKind::Or, 2),
            b'|' => {
                return Err(ExprError::new(
                    start,
                    "`|` is not an operator; use `||` for \"or\"",
                ));
            }
            b'"' => return self.text(),
            b'0'..=b'9' => return self.number(),
            b'.' if self.peek_byte(1).is_some_and(|b| b.is_ascii_digit()) => {
                return Err(ExprError::new(
                    start,
                    "a decimal number needs a digit before the point: write `0.5`, not `.5`",
                ));
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let length = self.source.as_bytes()[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                let name = &self.source[start..start + length];
                (TokenKind::Name(name.to_owned()), length)
            }
            b'\'' => {
                return Err(ExprError::new(
                    start,
                    "text goes in double quotes: write \"open\", not 'open'",
                ));
            }
            _ => {
                let character = self.source[start..].chars().next().unwrap_or('?');
                return Err(ExprError::new(
                    start,
                    format!("unexpected character `{character}`"),
                ));
            }
        };
        self.position += length;
        Ok(Token {
            kind,
            start,
            end: self.position,
        })
    }

    fn digits(&mut self) -> usize {
        let count = self.source.as_bytes()[self.position..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.position += count;
        count
    }

    fn number(&mut self) -> Result<Token, ExprError> {
        let start = self.position;
        self.digits();
        let mut decimal = false;
        if self.peek_byte(0) == Some(b'.') {
            decimal = true;
            self.position += 1;
            if self.digits() == 0 {
                let written = &self.source[start..self.position];
                return Err(ExprError::new(
                    start,
                    format!(
                        "a decimal number needs a digit after the point: write `{written}0`, \
                         not `{written}`"
                    ),
                ));
            }
        }
        if matches!(self.peek_byte(0), Some(b'e' | b'E')) {
            decimal = true;
            let marker = self.position;
            self.position += 1;
            if matches!(self.peek_byte(0), Some(b'+' | b'-')) {
                self.position += 1;
            }
            if self.digits() == 0 {
                return Err(ExprError::new(
                    marker,
                    "an exponent needs digits after the `e`, like `1e3` or `2.5e-3`",
                ));
            }
        }
        if self
            .peek_byte(0)
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'.')
        {
            return Err(ExprError::new(
                start,
                format!(
                    "`{}` is not a number",
                    self.source[start..]
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                        .next()
                        .unwrap_or_default()
                ),
            ));
        }
        let written = &self.source[start..self.position];
        let kind = if decimal {
            match written.parse::<f64>() {
                Ok(number) if number.is_finite() => TokenKind::Float(number),
                _ => {
                    return Err(ExprError::new(
                        start,
                        format!("the number `{written}` is too large"),
                    ));
                }
            }
        } else {
            match written.parse::<u64>() {
                Ok(number) if number <= INT_MAGNITUDE_LIMIT => TokenKind::Int(number),
                _ => {
                    return Err(ExprError::new(
                        start,
                        format!(
                            "the integer `{written}` is too large; integers go from \
                             -9223372036854775808 to 9223372036854775807"
                        ),
                    ));
                }
            }
        };
        Ok(Token {
            kind,
            start,
            end: self.position,
        })
    }

    fn text(&mut self) -> Result<Token, ExprError> {
        let start = self.position;
        self.position += 1;
        let mut text = String::new();
        loop {
            let rest = &self.source[self.position..];
            let Some(stop) = rest.find(['"', '\\']) else {
                return Err(ExprError::new(
                    start,
                    "unterminated text: the closing `\"` is missing",
                ));
            };
            text.push_str(&rest[..stop]);
            self.position += stop;
            if self.peek_byte(0) == Some(b'"') {
                self.position += 1;
                return Ok(Token {
                    kind: TokenKind::Text(text),
                    start,
                    end: self.position,
                });
            }
            let escape = self.position;
            let resolved = match self.peek_byte(1) {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'n') => '\n',
                Some(b't') => '\t',
                None => {
                    return Err(ExprError::new(
                        start,
                        "unterminated text: the closing `\"` is missing",
                    ));
                }
                Some(_) => {
                    let character = self.source[escape + 1..].chars().next().unwrap_or('?');
                    return Err(ExprError::new(
                        escape,
                        format!(
                            "unknown escape `\\{character}` in text; the escapes are `\\\"`, \
                             `\\\\`, `\\n` and `\\t`"
                        ),
                    ));
                }
            };
            text.push(resolved);
            self.position += 2;
        }
    }
}

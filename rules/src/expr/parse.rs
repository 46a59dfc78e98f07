//! The syntax tree and the recursive-descent parser that builds it.
//!
//! Grammar, from the loosest binding to the tightest:
//!
//! ```text
//! expression := and ("||" and)*
//! and        := not ("&&" not)*
//! not        := "!" not | comparison
//! comparison := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum | "in" list)?
//! sum        := product (("+" | "-") product)*
//! product    := unary (("*" | "/" | "%") unary)*
//! unary      := "-" unary | primary
//! primary    := literal | "value" | call | "(" expression ")"
//! call       := name "(" (expression ("," expression)*)? ")"
//! list       := "[" (item ("," item)* ","?)? "]"
//! item       := "-"? number | text | "true" | "false"
//! ```
//!
//! The parser's recursion is bounded: every `(`, `!`, unary `-`, call and list counts one level
//! of nesting, and the tree is at most [`MAX_DEPTH`] operators and calls deep; past either
//! limit it reports an error instead of exhausting the stack. Checking and evaluation recurse
//! over the tree, so the same bound holds for them.

use super::lex::{INT_MAGNITUDE_LIMIT, Lexer, Token, TokenKind};
use super::{ExprError, MAX_DEPTH};

/// A node of the syntax tree, with the byte range of the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Expr {
    pub kind: ExprKind,
    pub start: usize,
    pub end: usize,
    /// How many operators and calls nest here: 0 for a leaf, one more than the deepest child
    /// otherwise.
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum ExprKind {
    Bool(bool),
    /// Unsigned as written; 2^63 only directly under a `Negate`.
    Int(u64),
    /// Non-negative and finite, as written.
    Float(f64),
    Text(String),
    Value,
    Call {
        function: Function,
        arguments: Vec<Expr>,
    },
    Not(Box<Expr>),
    Negate(Box<Expr>),
    /// `a || b || c` or `a && b && c`, as a flat list of two or more operands.
    Logic {
        operator: Logic,
        operands: Vec<Expr>,
    },
    /// Arithmetic or a comparison.
    Binary {
        operator: Binary,
        operator_start: usize,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `left in [items]`; each item is a literal, possibly negated.
    In {
        left: Box<Expr>,
        items: Vec<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Logic {
    Or,
    And,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binary {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
}

impl Binary {
    pub fn symbol(self) -> &'static str {
        match self {
            Binary::Equal => "==",
            Binary::NotEqual => "!=",
            Binary::Less => "<",
            Binary::LessOrEqual => "<=",
            Binary::Greater => ">",
            Binary::GreaterOrEqual => ">=",
            Binary::Add => "+",
            Binary::Subtract => "-",
            Binary::Multiply => "*",
            Binary::Divide => "/",
            Binary::Remainder => "%",
        }
    }

    fn comparison(kind: &TokenKind) -> Option<Binary> {
        Some(match kind {
            TokenKind::Equal => Binary::Equal,
            TokenKind::NotEqual => Binary::NotEqual,
            TokenKind::Less => Binary::Less,
            TokenKind::LessOrEqual => Binary::LessOrEqual,
            TokenKind::Greater => Binary::Greater,
            TokenKind::GreaterOrEqual => Binary::GreaterOrEqual,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    State,
    Armed,
    Mode,
    Scheduled,
    Abs,
    Min,
    Max,
}

impl Function {
    pub const ALL: [Function; 7] = [
        Function::State,
        Function::Armed,
        Function::Mode,
        Function::Scheduled,
        Function::Abs,
        Function::Min,
        Function::Max,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::State => "state",
            Function::Armed => "armed",
            Function::Mode => "mode",
            Function::Scheduled => "scheduled",
            Function::Abs => "abs",
            Function::Min => "min",
            Function::Max => "max",
        }
    }

    fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// An example call, for error messages.
    pub fn example(self) -> &'static str {
        match self {
            Function::State => "state(\"lobby.door\")",
            Function::Armed => "armed(\"lobby\")",
            Function::Mode => "mode(\"lobby\")",
            Function::Scheduled => "scheduled(\"office-hours\")",
            Function::Abs => "abs(value)",
            Function::Min => "min(value, 10)",
            Function::Max => "max(value, 10)",
        }
    }
}

impl Expr {
    fn leaf(kind: ExprKind, token: &Token) -> Expr {
        Expr {
            kind,
            start: token.start,
            end: token.end,
            depth: 0,
        }
    }
}

/// The depth of a node over `children`, refused past [`MAX_DEPTH`] (reported at `operator`).
fn depth(operator: usize, children: &[&Expr]) -> Result<usize, ExprError> {
    let depth = 1 + children.iter().map(|c| c.depth).max().unwrap_or(0);
    if depth > MAX_DEPTH {
        return Err(too_deep(operator));
    }
    Ok(depth)
}

fn too_deep(offset: usize) -> ExprError {
    ExprError::new(
        offset,
        format!(
            "the expression is nested too deeply (more than {MAX_DEPTH} levels of parentheses, \
             operators and calls); simplify it or split the rule"
        ),
    )
}

/// Parses a whole expression.
pub(super) fn parse(source: &str) -> Result<Expr, ExprError> {
    let mut lexer = Lexer::new(source);
    let current = lexer.next_token()?;
    let mut parser = Parser {
        source,
        lexer,
        current,
        nesting: 0,
    };
    let expr = parser.expression()?;
    match &parser.current.kind {
        TokenKind::End => Ok(expr),
        TokenKind::Name(name) if matches!(name.as_str(), "and" | "or") => {
            let symbol = if name == "and" { "&&" } else { "||" };
            Err(ExprError::new(
                parser.current.start,
                format!("use `{symbol}` instead of `{name}`"),
            ))
        }
        TokenKind::CloseParen => Err(ExprError::new(
            parser.current.start,
            "unexpected `)`: there is no `(` for it to close",
        )),
        _ => Err(ExprError::new(
            parser.current.start,
            format!(
                "expected an operator or the end of the expression, found {}",
                parser.describe_current()
            ),
        )),
    }
}

struct Parser<'a> {
    source: &'a str,
    lexer: Lexer<'a>,
    current: Token,
    /// How many `(`, `!`, unary `-`, calls and lists enclose the current token.
    nesting: usize,
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<Token, ExprError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.current, next))
    }

    /// Whether the current token is the name `name` (`in` is a name, not a token of its own).
    fn at_name(&self, name: &str) -> bool {
        matches!(&self.current.kind, TokenKind::Name(current) if current == name)
    }

    fn enter(&mut self, offset: usize) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(offset));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn describe_current(&self) -> String {
        match &self.current.kind {
            TokenKind::End => "the end of the expression".to_owned(),
            TokenKind::Text(_) => format!(
                "the text {}",
                &self.source[self.current.start..self.current.end]
            ),
            TokenKind::Int(_) | TokenKind::Float(_) => format!(
                "the number `{}`",
                &self.source[self.current.start..self.current.end]
            ),
            _ => format!("`{}`", &self.source[self.current.start..self.current.end]),
        }
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<Token, ExprError> {
        if self.current.kind == kind {
            self.advance()
        } else {
            Err(ExprError::new(
                self.current.start,
                format!("expected {what}, found {}", self.describe_current()),
            ))
        }
    }

    fn expression(&mut self) -> Result<Expr, ExprError> {
        self.logic(Logic::Or)
    }

    /// `||` over `&&` operands, or `&&` over `!` operands.
    fn logic(&mut self, operator: Logic) -> Result<Expr, ExprError> {
        let token = match operator {
            Logic::Or => TokenKind::Or,
            Logic::And => TokenKind::And,
        };
        let first = self.logic_operand(operator)?;
        if self.current.kind != token {
            return Ok(first);
        }
        let mut operands = vec![first];
        let mut operator_start = self.current.start;
        while self.current.kind == token {
            operator_start = self.current.start;
            self.advance()?;
            operands.push(self.logic_operand(operator)?);
        }
        let children: Vec<&Expr> = operands.iter().collect();
        let depth = depth(operator_start, &children)?;
        let start = operands.first().map_or(0, |e| e.start);
        let end = operands.last().map_or(0, |e| e.end);
        Ok(Expr {
            kind: ExprKind::Logic { operator, operands },
            start,
            end,
            depth,
        })
    }

    /// An operand of `||` (an `&&` chain) or of `&&` (a `!` or a comparison).
    fn logic_operand(&mut self, operator: Logic) -> Result<Expr, ExprError> {
        match operator {
            Logic::Or => self.logic(Logic::And),
            Logic::And => self.not(),
        }
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.current.kind != TokenKind::Not {
            return self.comparison();
        }
        let bang = self.advance()?;
        self.enter(bang.start)?;
        let operand = self.not()?;
        self.leave();
        Ok(Expr {
            depth: depth(bang.start, &[&operand])?,
            start: bang.start,
            end: operand.end,
            kind: ExprKind::Not(Box::new(operand)),
        })
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let left = self.sum()?;
        let operator_start = self.current.start;
        let expr = if let Some(operator) = Binary::comparison(&self.current.kind) {
            self.advance()?;
            let right = self.sum()?;
            self.binary(operator, operator_start, left, right)?
        } else if self.at_name("in") {
            self.advance()?;
            let (items, end) = self.list()?;
            let children: Vec<&Expr> = std::iter::once(&left).chain(&items).collect();
            Expr {
                depth: depth(operator_start, &children)?,
                start: left.start,
                end,
                kind: ExprKind::In {
                    left: Box::new(left),
                    items,
                },
            }
        } else {
            return Ok(left);
        };
        let chained = Binary::comparison(&self.current.kind).is_some() || self.at_name("in");
        if chained {
            return Err(ExprError::new(
                self.current.start,
                format!(
                    "comparisons do not chain: `{}` is already a comparison; to test a range, \
                     write `0 < value && value < 10`",
                    &self.source[expr.start..expr.end]
                ),
            ));
        }
        Ok(expr)
    }

    fn binary(
        &mut self,
        operator: Binary,
        operator_start: usize,
        left: Expr,
        right: Expr,
    ) -> Result<Expr, ExprError> {
        Ok(Expr {
            depth: depth(operator_start, &[&left, &right])?,
            start: left.start,
            end: right.end,
            kind: ExprKind::Binary {
                operator,
                operator_start,
                left: Box::new(left),
                right: Box::new(right),
            },
        })
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        loop {
            let operator = match self.current.kind {
                TokenKind::Plus => Binary::Add,
                TokenKind::Minus => Binary::Subtract,
                _ => return Ok(left),
            };
            let operator_start = self.advance()?.start;
            let right = self.product()?;
            left = self.binary(operator, operator_start, left, right)?;
        }
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let operator = match self.current.kind {
                TokenKind::Times => Binary::Multiply,
                TokenKind::Divide => Binary::Divide,
                TokenKind::Remainder => Binary::Remainder,
                _ => return Ok(left),
            };
            let operator_start = self.advance()?.start;
            let right = self.unary()?;
            left = self.binary(operator, operator_start, left, right)?;
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.current.kind != TokenKind::Minus {
            return self.primary();
        }
        let minus = self.advance()?;
        self.enter(minus.start)?;
        let operand = if let TokenKind::Int(magnitude) = self.current.kind {
            // `-9223372036854775808` is an integer even though its magnitude is not.
            let token = self.advance()?;
            Expr::leaf(ExprKind::Int(magnitude), &token)
        } else {
            self.unary()?
        };
        self.leave();
        Ok(Expr {
            depth: depth(minus.start, &[&operand])?,
            start: minus.start,
            end: operand.end,
            kind: ExprKind::Negate(Box::new(operand)),
        })
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let token = self.current.clone();
        match &token.kind {
            TokenKind::Int(magnitude) => {
                self.int_fits(*magnitude, &token)?;
                self.advance()?;
                Ok(Expr::leaf(ExprKind::Int(*magnitude), &token))
            }
            TokenKind::Float(number) => {
                self.advance()?;
                Ok(Expr::leaf(ExprKind::Float(*number), &token))
            }
            TokenKind::Text(text) => {
                self.advance()?;
                Ok(Expr::leaf(ExprKind::Text(text.clone()), &token))
            }
            TokenKind::OpenParen => {
                self.advance()?;
                self.enter(token.start)?;
                let inner = self.expression()?;
                self.leave();
                if self.current.kind != TokenKind::CloseParen {
                    return Err(ExprError::new(
                        self.current.start,
                        format!(
                            "expected `)` to close the `(` at byte {}, found {}",
                            token.start,
                            self.describe_current()
                        ),
                    ));
                }
                let close = self.advance()?;
                // The parentheses belong to the expression, for messages that quote it.
                Ok(Expr {
                    start: token.start,
                    end: close.end,
                    ..inner
                })
            }
            TokenKind::Name(name) => self.name(name, &token),
            TokenKind::Not => Err(ExprError::new(
                token.start,
                "`!` negates a whole condition and cannot appear here; put it in parentheses, \
                 like `value == (!armed(\"lobby\"))`",
            )),
            TokenKind::OpenBracket => Err(ExprError::new(
                token.start,
                "a list can only follow `in`, like `value in [1, 2]`",
            )),
            _ => Err(ExprError::new(
                token.start,
                format!(
                    "expected a value (a number, text in double quotes, `true`, `false`, \
                     `value`, a function call or `(`), found {}",
                    self.describe_current()
                ),
            )),
        }
    }

    fn int_fits(&self, magnitude: u64, token: &Token) -> Result<(), ExprError> {
        if magnitude >= INT_MAGNITUDE_LIMIT {
            return Err(ExprError::new(
                token.start,
                format!(
                    "the integer `{}` is too large; integers go from -9223372036854775808 to \
                     9223372036854775807",
                    &self.source[token.start..token.end]
                ),
            ));
        }
        Ok(())
    }

    fn name(&mut self, name: &str, token: &Token) -> Result<Expr, ExprError> {
        match name {
            "true" | "false" => {
                self.advance()?;
                return Ok(Expr::leaf(ExprKind::Bool(name == "true"), token));
            }
            "value" => {
                self.advance()?;
                return Ok(Expr::leaf(ExprKind::Value, token));
            }
            _ => {}
        }
        self.advance()?;
        let called = self.current.kind == TokenKind::OpenParen;
        let Some(function) = Function::from_name(name) else {
            return Err(ExprError::new(token.start, unknown_name(name, called)));
        };
        if !called {
            return Err(ExprError::new(
                token.start,
                format!(
                    "`{name}` is a function: write `{}` (text goes in double quotes: \
                     `\"{name}\"`)",
                    function.example()
                ),
            ));
        }
        self.advance()?;
        self.enter(token.start)?;
        let mut arguments = Vec::new();
        if self.current.kind != TokenKind::CloseParen {
            loop {
                arguments.push(self.expression()?);
                if self.current.kind != TokenKind::Comma {
                    break;
                }
                self.advance()?;
            }
        }
        self.leave();
        let close = self.expect(TokenKind::CloseParen, "`,` or `)` after an argument")?;
        let children: Vec<&Expr> = arguments.iter().collect();
        Ok(Expr {
            depth: depth(token.start, &children)?,
            start: token.start,
            end: close.end,
            kind: ExprKind::Call {
                function,
                arguments,
            },
        })
    }

    /// `[item, ...]`; returns the items and the offset just past `]`.
    fn list(&mut self) -> Result<(Vec<Expr>, usize), ExprError> {
        let open = self.expect(TokenKind::OpenBracket, "a list after `in`, like `[1, 2]`")?;
        self.enter(open.start)?;
        let mut items = Vec::new();
        while self.current.kind != TokenKind::CloseBracket {
            items.push(self.item()?);
            if self.current.kind != TokenKind::Comma {
                break;
            }
            self.advance()?;
        }
        self.leave();
        let close = self.expect(TokenKind::CloseBracket, "`,` or `]` in the list")?;
        if items.is_empty() {
            return Err(ExprError::new(
                open.start,
                "the list is empty, so nothing is ever in it",
            ));
        }
        Ok((items, close.end))
    }

    fn item(&mut self) -> Result<Expr, ExprError> {
        let token = self.current.clone();
        let literal = match &token.kind {
            TokenKind::Int(_) | TokenKind::Float(_) | TokenKind::Text(_) => true,
            TokenKind::Name(name) => name == "true" || name == "false",
            TokenKind::Minus => {
                self.advance()?;
                let number = self.current.clone();
                let kind = match number.kind {
                    TokenKind::Int(magnitude) => ExprKind::Int(magnitude),
                    TokenKind::Float(number) => ExprKind::Float(number),
                    _ => {
                        return Err(ExprError::new(
                            number.start,
                            format!(
                                "expected a number after `-`, found {}",
                                self.describe_current()
                            ),
                        ));
                    }
                };
                self.advance()?;
                let operand = Expr::leaf(kind, &number);
                return Ok(Expr {
                    kind: ExprKind::Negate(Box::new(operand)),
                    start: token.start,
                    end: number.end,
                    depth: 1,
                });
            }
            _ => false,
        };
        if !literal {
            return Err(ExprError::new(
                token.start,
                format!(
                    "a list holds only literals, like `\"open\"`, `3`, `-2.5` or `true`; found {}",
                    self.describe_current()
                ),
            ));
        }
        self.primary()
    }
}

/// The message for a name that is neither a keyword nor a function.
fn unknown_name(name: &str, called: bool) -> String {
    match name {
        "and" => return "use `&&` instead of `and`".to_owned(),
        "or" => return "use `||` instead of `or`".to_owned(),
        "not" => return "use `!` instead of `not`".to_owned(),
        "in" => return "`in` needs something on its left, like `value in [1, 2]`".to_owned(),
        "True" | "TRUE" => return format!("`{name}` is written `true`"),
        "False" | "FALSE" => return format!("`{name}` is written `false`"),
        _ => {}
    }
    let function = Function::ALL.into_iter().find(|f| close_to(name, f.name()));
    match (called, function) {
        (true, Some(function)) => {
            format!(
                "unknown function `{name}`; did you mean `{}`?",
                function.name()
            )
        }
        (true, None) => {
            let names: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown function `{name}`; the functions are {}",
                names.join(", ")
            )
        }
        (false, Some(function)) => format!(
            "unknown name `{name}`; did you mean `{}`?",
            function.example()
        ),
        (false, None) if close_to(name, "value") => {
            format!("unknown name `{name}`; did you mean `value`?")
        }
        (false, None) => format!(
            "unknown name `{name}`; text goes in double quotes (`\"{name}\"`), and a name is \
             `value`, `true`, `false` or a function call like `state(\"lobby.door\")`"
        ),
    }
}

/// Whether `a` is `b` with at most one letter changed, added, removed or swapped.
fn close_to(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a == b || a.len().abs_diff(b.len()) > 1 {
        return a == b;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Equal => {
            a_rest[1..] == b_rest[1..]
                || (a_rest.len() >= 2
                    && a_rest[0] == b_rest[1]
                    && a_rest[1] == b_rest[0]
                    && a_rest[2..] == b_rest[2..])
        }
        std::cmp::Ordering::Less => a_rest == &b_rest[1..],
        std::cmp::Ordering::Greater => &a_rest[1..] == b_rest,
    }
}

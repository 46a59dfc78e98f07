//! The predicate language of the rules engine: small conditions written in a site's config.
//!
//! ```toml
//! [[rules]]
//! id = "server-room-hot"
//! when.event = { point = "server-room.temp", value = 'value > 30' }
//! if = { expr = 'armed("server-room") || !scheduled("business-hours")' }
//! ```
//!
//! A predicate is compiled once, when the config is loaded ([`Predicate::compile`]): it is
//! parsed and type-checked against a [`Scope`] that says which points, zones and schedules
//! exist. Every mistake is reported as an [`ExprError`] with the byte offset in the
//! expression text it is about, so the config loader can point at file:line:column. The
//! compiled predicate is then evaluated ([`Predicate::eval`]) against a [`Context`] the engine
//! answers, as often as events arrive: evaluation does not allocate, does no I/O and reads no
//! clock.
//!
//! # Syntax
//!
//! | what | how it is written |
//! | --- | --- |
//! | conditions | `true`, `false` |
//! | integers | `42`, `0`, `-3` |
//! | decimal numbers | `21.5`, `0.25`, `1e3`, `1.5e-3` (digits on both sides of the point) |
//! | text | `"open"`, in double quotes; `\"`, `\\`, `\n` and `\t` inside |
//! | the event's value | `value` |
//! | a point's current value | `state("lobby.door")` |
//! | a zone | `armed("lobby")` (true or false), `mode("lobby")` (`"disarmed"`, `"armed_away"`, ...) |
//! | a schedule | `scheduled("office-hours")`: true while the schedule is active |
//! | numbers | `abs(x)`, `min(a, b)`, `max(a, b)` |
//! | a list | `value in ["open", "forced"]`, `value in [1, 2, 3]` (only after `in`; literals only) |
//!
//! Operators, from the loosest to the tightest:
//!
//! | operators | meaning |
//! | --- | --- |
//! | `a \|\| b` | either |
//! | `a && b` | both |
//! | `!a` | not |
//! | `==` `!=` `<` `<=` `>` `>=` `in` | comparisons; they do not chain: write `0 < value && value < 10` |
//! | `+` `-` | add, subtract |
//! | `*` `/` `%` | multiply, divide, remainder |
//! | `-a` | minus |
//! | `( )` | grouping |
//!
//! So `!value > 3 || armed("lobby")` reads `(!(value > 3)) || armed("lobby")`, and
//! `1 + 2 * 3` is `7`. Spaces are allowed anywhere between words and operators. Names of
//! points, zones and schedules are written as text in double quotes and must exist in the
//! config. An expression is at most [`MAX_LENGTH`] bytes long and nests parentheses, operators
//! and calls at most [`MAX_DEPTH`] levels deep.
//!
//! # Types
//!
//! Every part of an expression has a type: a condition (true or false), a number or text.
//! Integers and decimal numbers mix freely. `==` and `!=` compare two conditions, two numbers
//! or two texts; `<`, `<=`, `>` and `>=` compare two numbers or two texts (text is compared
//! byte by byte, so `"B" < "a"`); `in` compares its left side with each element of the list;
//! `&&`, `||` and `!` take conditions; arithmetic takes numbers (text cannot be added). The
//! whole expression must be a condition. A condition is not a number: compare a true/false
//! point with `true`, not with `1`. Text is compared exactly: `"Open"` is not `"open"`. A
//! mistake is reported when the config is loaded, never at run time; so is a constant part
//! that cannot be computed (`1 / 0`).
//!
//! Arithmetic on two integers gives an integer: `7 / 2` is `3` (rounded toward zero) and
//! `7 % 2` is `1`; as soon as one side is a decimal number the result is one: `7.0 / 2` is
//! `3.5`. An integer and a decimal number are compared exactly
//! (`9007199254740993 > 9007199254740992.0` holds, although both are the same `f64`). A point
//! declared as a number may report integers or decimals: both are numbers.
//!
//! # Missing values
//!
//! At run time a value may be missing (a point never seen or whose last reading was bad, a
//! rule evaluated without an event value) or not of the declared type (text from a point
//! declared as a number, `1` from a point declared true/false, a decimal that is infinite or
//! not a number), and arithmetic may fail (division by zero, an integer overflow, a decimal
//! result too large). The part of the expression that depends on it
//! is then *unknown*, and unknown propagates:
//!
//! - a comparison or arithmetic with an unknown side is unknown;
//! - `unknown && false` is false and `unknown || true` is true (the known side decides);
//!   otherwise `&&` and `||` with an unknown side are unknown; `!unknown` is unknown;
//! - a predicate that ends unknown is **false**: it does not fire.
//!
//! So a missing value never fires a rule, not even `!(value == 1)`: to raise an alarm on a
//! point that stops reporting, use a `silent` trigger.

mod check;
mod eval;
mod lex;
mod parse;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

use gatehouse_protocol::Value;

/// The longest expression accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;

/// How deep parentheses, operators and function calls may nest.
pub const MAX_DEPTH: usize = 64;

/// The type of a value an expression can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// True or false.
    Bool,
    /// A whole number (`i64`).
    Int,
    /// A decimal number (`f64`).
    Float,
    /// Text.
    Text,
}

impl Type {
    /// What values of this type are, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Type::Bool => "true or false",
            Type::Int => "whole numbers",
            Type::Float => "numbers",
            Type::Text => "text",
        }
    }

    /// A config value (a command's, an egress lock's) as a value of this type.
    pub fn value_of(self, value: &toml::Value) -> Result<Value, String> {
        match (value, self) {
            (toml::Value::Boolean(b), Type::Bool) => Ok(Value::Bool(*b)),
            (toml::Value::Integer(i), Type::Int) => Ok(Value::Int(*i)),
            (toml::Value::Integer(i), Type::Float) => Ok(Value::Float(*i as f64)),
            (toml::Value::Float(x), Type::Float) if x.is_finite() => Ok(Value::Float(*x)),
            (toml::Value::String(s), Type::Text) => Ok(Value::Text(s.clone())),
            (other, _) => Err(format!(
                "`{other}` does not fit: the point holds {}",
                self.describe()
            )),
        }
    }
}

/// The index the engine gave a point, a zone or a schedule; the compiled predicate keeps it and
/// hands it back to the [`Context`] at evaluation time, so evaluation never looks names up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u32);

/// What an expression may reference, answered once at compile time.
pub trait Scope {
    /// The type of `value` where the expression is evaluated, or why `value` is unavailable
    /// there (completing "`value` is not available here: ...").
    fn value_type(&self) -> Result<Type, String>;
    /// The slot and declared type of the point `id`, if it exists.
    fn point(&self, id: &str) -> Option<(Slot, Type)>;
    /// The slot of the zone `id`, if it exists.
    fn zone(&self, id: &str) -> Option<Slot>;
    /// The slot of the schedule `id`, if it exists.
    fn schedule(&self, id: &str) -> Option<Slot>;
}

/// What the engine knows when it evaluates a predicate.
pub trait Context {
    /// The value of the event being evaluated, if there is one.
    fn value(&self) -> Option<&Value>;
    /// The current value of a point; `None` when it was never seen or its quality is bad.
    fn point(&self, point: Slot) -> Option<&Value>;
    /// Whether a zone is armed.
    fn armed(&self, zone: Slot) -> bool;
    /// A zone's mode (`"disarmed"`, `"armed_away"`, ...).
    fn mode(&self, zone: Slot) -> &str;
    /// Whether a schedule is active now.
    fn scheduled(&self, schedule: Slot) -> bool;
}

/// A mistake in an expression: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// The byte offset in the expression text the mistake is about.
    pub offset: usize,
    /// What is wrong, for a person: "unknown point `door.lobyy`".
    pub message: String,
}

impl ExprError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        ExprError {
            offset,
            message: message.into(),
        }
    }
}

/// A compiled, type-checked predicate.
#[derive(Debug, Clone)]
pub struct Predicate {
    source: Box<str>,
    root: eval::Condition,
    points: Box<[Slot]>,
}

impl Predicate {
    /// Parses and type-checks `source` against `scope`.
    pub fn compile(source: &str, scope: &dyn Scope) -> Result<Predicate, ExprError> {
        if source.len() > MAX_LENGTH {
            return Err(ExprError::new(
                0,
                format!(
                    "the expression is {} bytes long, longer than the limit of {MAX_LENGTH}; \
                     split it into several rules",
                    source.len()
                ),
            ));
        }
        let expr = parse::parse(source)?;
        let compiled = check::check(source, &expr, scope)?;
        Ok(Predicate {
            source: source.into(),
            root: compiled.root,
            points: compiled.points.into_boxed_slice(),
        })
    }

    /// Whether the predicate holds in `context`; false when it is unknown (see the module doc).
    pub fn eval(&self, context: &dyn Context) -> bool {
        self.root.eval(context) == Some(true)
    }

    /// The points the predicate reads with `state(...)`, sorted, each once.
    pub fn references(&self) -> &[Slot] {
        &self.points
    }
}

/// The source text, as written.
impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

//! The compiled form of a predicate and its evaluation.
//!
//! The checker turns the syntax tree into three node families, one per type: [`Condition`]
//! evaluates to `Option<bool>`, [`Numeric`] to `Option<Number>`, [`Textual`] to
//! `Option<&str>`, where `None` is *unknown* (a missing value, a value of the wrong type, a
//! failed operation). The type of every node is known before evaluation, so evaluation
//! dispatches on the node only, never on a value's type tag except where the value is read.
//! Nothing here allocates: text is borrowed from the node or the context.
//!
//! Invariants the checker establishes: constant subtrees are folded (so `Const` nodes never
//! have siblings that are all constant); a [`Number::Float`] is always finite, so comparisons
//! of numbers are total; the tree is at most [`super::MAX_DEPTH`] levels high.

use std::cmp::Ordering;

use gatehouse_protocol::Value;

use super::{Context, Slot};

/// A number: integers stay exact, anything involving a decimal is a decimal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Number {
    Int(i64),
    /// Always finite.
    Float(f64),
}

impl Number {
    /// A value read as a number; unknown if it is not one or not finite.
    fn from_value(value: Option<&Value>) -> Option<Number> {
        match value? {
            Value::Int(i) => Some(Number::Int(*i)),
            Value::Float(f) => Number::float(*f),
            Value::Bool(_) | Value::Text(_) => None,
        }
    }

    /// A decimal result, unknown if it overflowed or is not a number.
    fn float(f: f64) -> Option<Number> {
        f.is_finite().then_some(Number::Float(f))
    }

    fn to_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// Exact comparison, integers with decimals included.
    pub fn compare(self, other: Number) -> Ordering {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a.cmp(&b),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Number::Int(a), Number::Float(b)) => compare_int_float(a, b),
            (Number::Float(a), Number::Int(b)) => compare_int_float(b, a).reverse(),
        }
    }
}

/// Compares an integer with a finite decimal exactly (converting the integer to `f64` would
/// round it above 2^53).
fn compare_int_float(int: i64, float: f64) -> Ordering {
    const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
    if float >= TWO_TO_63 {
        return Ordering::Less;
    }
    if float < -TWO_TO_63 {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    // In [-2^63, 2^63), so the conversion is exact.
    match int.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0.partial_cmp(&(float - whole)).unwrap_or(Ordering::Equal),
        unequal => unequal,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compare {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Compare {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Compare::Equal => ordering.is_eq(),
            Compare::NotEqual => ordering.is_ne(),
            Compare::Less => ordering.is_lt(),
            Compare::LessOrEqual => ordering.is_le(),
            Compare::Greater => ordering.is_gt(),
            Compare::GreaterOrEqual => ordering.is_ge(),
        }
    }

    /// The comparison with its sides swapped: `a < b` is `b > a`.
    pub fn swapped(self) -> Compare {
        match self {
            Compare::Less => Compare::Greater,
            Compare::LessOrEqual => Compare::GreaterOrEqual,
            Compare::Greater => Compare::Less,
            Compare::GreaterOrEqual => Compare::LessOrEqual,
            Compare::Equal | Compare::NotEqual => self,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arithmetic {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
}

impl Arithmetic {
    /// Checked on integers, finite on decimals; `None` on overflow or division by zero.
    pub fn apply(self, a: Number, b: Number) -> Option<Number> {
        if let (Number::Int(a), Number::Int(b)) = (a, b) {
            let result = match self {
                Arithmetic::Add => a.checked_add(b),
                Arithmetic::Subtract => a.checked_sub(b),
                Arithmetic::Multiply => a.checked_mul(b),
                Arithmetic::Divide => a.checked_div(b),
                Arithmetic::Remainder => a.checked_rem(b),
            };
            return result.map(Number::Int);
        }
        let (a, b) = (a.to_f64(), b.to_f64());
        Number::float(match self {
            Arithmetic::Add => a + b,
            Arithmetic::Subtract => a - b,
            Arithmetic::Multiply => a * b,
            // Division by zero gives an infinity or NaN, which `float` refuses.
            Arithmetic::Divide => a / b,
            Arithmetic::Remainder => a % b,
        })
    }
}

/// A node whose value is true, false or unknown.
#[derive(Debug, Clone)]
pub(super) enum Condition {
    Const(bool),
    Value,
    Point(Slot),
    Armed(Slot),
    Scheduled(Slot),
    Not(Box<Condition>),
    /// Two or more operands.
    And(Box<[Condition]>),
    /// Two or more operands.
    Or(Box<[Condition]>),
    /// `==` (`true`) or `!=` (`false`) between two conditions.
    Same(bool, Box<[Condition; 2]>),
    CompareNumbers(Compare, Box<[Numeric; 2]>),
    /// The common `value > 30`: the constant is kept inline.
    CompareNumberWith(Compare, Box<Numeric>, Number),
    CompareTexts(Compare, Box<[Textual; 2]>),
    /// The common `value == "open"`: the constant is kept inline.
    CompareTextWith(Compare, Box<Textual>, Box<str>),
    /// `condition in [...]`: whether `false` and whether `true` are in the list.
    BoolIn(Box<Condition>, [bool; 2]),
    NumberIn(Box<Numeric>, Box<[Number]>),
    TextIn(Box<Textual>, Box<[Box<str>]>),
}

/// A node whose value is a number or unknown.
#[derive(Debug, Clone)]
pub(super) enum Numeric {
    Const(Number),
    Value,
    Point(Slot),
    Negate(Box<Numeric>),
    Abs(Box<Numeric>),
    Min(Box<[Numeric; 2]>),
    Max(Box<[Numeric; 2]>),
    Arithmetic(Arithmetic, Box<[Numeric; 2]>),
}

/// A node whose value is text or unknown.
#[derive(Debug, Clone)]
pub(super) enum Textual {
    Const(Box<str>),
    Value,
    Point(Slot),
    Mode(Slot),
}

/// Kleene's "and" over `operands`: false if any is false, else unknown if any is unknown.
fn all(operands: &[Condition], context: &dyn Context) -> Option<bool> {
    let mut result = Some(true);
    for operand in operands {
        match operand.eval(context) {
            Some(false) => return Some(false),
            None => result = None,
            Some(true) => {}
        }
    }
    result
}

/// Kleene's "or" over `operands`: true if any is true, else unknown if any is unknown.
fn any(operands: &[Condition], context: &dyn Context) -> Option<bool> {
    let mut result = Some(false);
    for operand in operands {
        match operand.eval(context) {
            Some(true) => return Some(true),
            None => result = None,
            Some(false) => {}
        }
    }
    result
}

fn text_value(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::Text(text) => Some(text),
        _ => None,
    }
}

fn bool_value(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

impl Condition {
    pub fn eval(&self, context: &dyn Context) -> Option<bool> {
        match self {
            Condition::Const(b) => Some(*b),
            Condition::Value => bool_value(context.value()),
            Condition::Point(slot) => bool_value(context.point(*slot)),
            Condition::Armed(zone) => Some(context.armed(*zone)),
            Condition::Scheduled(schedule) => Some(context.scheduled(*schedule)),
            Condition::Not(operand) => operand.eval(context).map(|b| !b),
            Condition::And(operands) => all(operands, context),
            Condition::Or(operands) => any(operands, context),
            Condition::Same(equal, sides) => {
                let [left, right] = &**sides;
                Some((left.eval(context)? == right.eval(context)?) == *equal)
            }
            Condition::CompareNumbers(compare, sides) => {
                let [left, right] = &**sides;
                let ordering = left.eval(context)?.compare(right.eval(context)?);
                Some(compare.holds(ordering))
            }
            Condition::CompareNumberWith(compare, left, right) => {
                Some(compare.holds(left.eval(context)?.compare(*right)))
            }
            Condition::CompareTexts(compare, sides) => {
                let [left, right] = &**sides;
                let ordering = left.eval(context)?.cmp(right.eval(context)?);
                Some(compare.holds(ordering))
            }
            Condition::CompareTextWith(compare, left, right) => {
                Some(compare.holds(left.eval(context)?.cmp(right)))
            }
            Condition::BoolIn(left, [has_false, has_true]) => Some(if left.eval(context)? {
                *has_true
            } else {
                *has_false
            }),
            Condition::NumberIn(left, items) => {
                let left = left.eval(context)?;
                Some(items.iter().any(|item| left.compare(*item).is_eq()))
            }
            Condition::TextIn(left, items) => {
                let left = left.eval(context)?;
                Some(items.iter().any(|item| **item == *left))
            }
        }
    }
}

impl Numeric {
    pub fn eval(&self, context: &dyn Context) -> Option<Number> {
        match self {
            Numeric::Const(number) => Some(*number),
            Numeric::Value => Number::from_value(context.value()),
            Numeric::Point(slot) => Number::from_value(context.point(*slot)),
            Numeric::Negate(operand) => match operand.eval(context)? {
                Number::Int(i) => i.checked_neg().map(Number::Int),
                Number::Float(f) => Some(Number::Float(-f)),
            },
            Numeric::Abs(operand) => match operand.eval(context)? {
                Number::Int(i) => i.checked_abs().map(Number::Int),
                Number::Float(f) => Some(Number::Float(f.abs())),
            },
            Numeric::Min(sides) => {
                let [left, right] = &**sides;
                let (left, right) = (left.eval(context)?, right.eval(context)?);
                Some(if right.compare(left).is_lt() {
                    right
                } else {
                    left
                })
            }
            Numeric::Max(sides) => {
                let [left, right] = &**sides;
                let (left, right) = (left.eval(context)?, right.eval(context)?);
                Some(if right.compare(left).is_gt() {
                    right
                } else {
                    left
                })
            }
            Numeric::Arithmetic(operation, sides) => {
                let [left, right] = &**sides;
                operation.apply(left.eval(context)?, right.eval(context)?)
            }
        }
    }
}

impl Textual {
    pub fn eval<'a>(&'a self, context: &'a dyn Context) -> Option<&'a str> {
        match self {
            Textual::Const(text) => Some(text),
            Textual::Value => text_value(context.value()),
            Textual::Point(slot) => text_value(context.point(*slot)),
            Textual::Mode(zone) => Some(context.mode(*zone)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_decimals_compare_exactly() {
        let big = 9_007_199_254_740_993_i64; // 2^53 + 1: not representable as f64
        let cases = [
            (
                Number::Int(big),
                Number::Float(9_007_199_254_740_992.0),
                Ordering::Greater,
            ),
            (Number::Int(3), Number::Float(3.0), Ordering::Equal),
            (Number::Int(3), Number::Float(-0.0), Ordering::Greater),
            (Number::Int(0), Number::Float(-0.0), Ordering::Equal),
            (Number::Int(3), Number::Float(3.5), Ordering::Less),
            (Number::Int(-3), Number::Float(-3.5), Ordering::Greater),
            (Number::Int(-3), Number::Float(-2.5), Ordering::Less),
            (Number::Int(i64::MAX), Number::Float(9.3e18), Ordering::Less),
            (
                Number::Int(i64::MAX),
                Number::Float(9_223_372_036_854_775_808.0),
                Ordering::Less,
            ),
            (
                Number::Int(i64::MIN),
                Number::Float(-9_223_372_036_854_775_808.0),
                Ordering::Equal,
            ),
            (
                Number::Int(i64::MIN),
                Number::Float(-1e19),
                Ordering::Greater,
            ),
            (
                Number::Float(1e300),
                Number::Int(i64::MAX),
                Ordering::Greater,
            ),
            (Number::Float(-0.0), Number::Float(0.0), Ordering::Equal),
        ];
        for (a, b, expected) in cases {
            assert_eq!(a.compare(b), expected, "{a:?} vs {b:?}");
            assert_eq!(b.compare(a), expected.reverse(), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn arithmetic_is_checked_on_integers_and_finite_on_decimals() {
        use Arithmetic::*;
        let int = Number::Int;
        let float = Number::Float;
        assert_eq!(Add.apply(int(2), int(3)), Some(int(5)));
        assert_eq!(Add.apply(int(i64::MAX), int(1)), None);
        assert_eq!(Subtract.apply(int(i64::MIN), int(1)), None);
        assert_eq!(Multiply.apply(int(i64::MAX), int(2)), None);
        assert_eq!(Divide.apply(int(7), int(2)), Some(int(3)));
        assert_eq!(Divide.apply(int(-7), int(2)), Some(int(-3)));
        assert_eq!(Divide.apply(int(7), int(0)), None);
        assert_eq!(Divide.apply(int(i64::MIN), int(-1)), None);
        assert_eq!(Remainder.apply(int(7), int(0)), None);
        assert_eq!(Remainder.apply(int(-7), int(2)), Some(int(-1)));
        assert_eq!(Divide.apply(float(7.0), int(2)), Some(float(3.5)));
        assert_eq!(Add.apply(int(1), float(0.5)), Some(float(1.5)));
        assert_eq!(Divide.apply(float(1.0), float(0.0)), None);
        assert_eq!(Remainder.apply(float(1.0), int(0)), None);
        assert_eq!(Multiply.apply(float(1e300), float(1e300)), None);
        assert_eq!(Remainder.apply(float(7.5), int(2)), Some(float(1.5)));
    }
}

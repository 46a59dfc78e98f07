//! Unit tests of the predicate language, and the scope, context and printer the property
//! tests share.

use gatehouse_protocol::Value;

use super::eval::Condition;
use super::parse::{Binary, Expr, ExprKind, Logic};
use super::{Context, ExprError, MAX_DEPTH, MAX_LENGTH, Predicate, Scope, Slot, Type};

/// The points of the test site, in slot order.
pub(super) const POINTS: [(&str, Type); 4] = [
    ("door", Type::Bool),
    ("temp", Type::Float),
    ("count", Type::Int),
    ("status", Type::Text),
];
pub(super) const ZONES: [&str; 2] = ["lobby", "office"];
pub(super) const SCHEDULES: [&str; 1] = ["night"];

pub(super) struct TestScope {
    pub value: Result<Type, String>,
}

fn slot_of(ids: impl IntoIterator<Item = &'static str>, id: &str) -> Option<Slot> {
    let index = ids.into_iter().position(|known| known == id)?;
    Some(Slot(u32::try_from(index).unwrap_or(u32::MAX)))
}

impl Scope for TestScope {
    fn value_type(&self) -> Result<Type, String> {
        self.value.clone()
    }
    fn point(&self, id: &str) -> Option<(Slot, Type)> {
        let slot = slot_of(POINTS.map(|(id, _)| id), id)?;
        Some((slot, POINTS[slot.0 as usize].1))
    }
    fn zone(&self, id: &str) -> Option<Slot> {
        slot_of(ZONES, id)
    }
    fn schedule(&self, id: &str) -> Option<Slot> {
        slot_of(SCHEDULES, id)
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct TestContext {
    pub value: Option<Value>,
    pub points: [Option<Value>; 4],
    pub armed: [bool; 2],
    pub modes: [&'static str; 2],
    pub scheduled: [bool; 1],
}

impl Context for TestContext {
    fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }
    fn point(&self, point: Slot) -> Option<&Value> {
        self.points.get(point.0 as usize)?.as_ref()
    }
    fn armed(&self, zone: Slot) -> bool {
        self.armed[zone.0 as usize]
    }
    fn mode(&self, zone: Slot) -> &str {
        self.modes[zone.0 as usize]
    }
    fn scheduled(&self, schedule: Slot) -> bool {
        self.scheduled[schedule.0 as usize]
    }
}

/// Prints a syntax tree back as text: with as few parentheses as the grammar needs
/// (`minimal`), or with every compound part in parentheses, which shows its shape.
pub(super) fn print(expr: &Expr, minimal: bool) -> String {
    let mut out = String::new();
    write_expr(&mut out, expr, 0, minimal);
    out
}

/// How tightly an expression binds: an operand printed where `level` is required gets
/// parentheses if it binds more loosely.
fn level(expr: &Expr) -> u8 {
    match &expr.kind {
        ExprKind::Logic {
            operator: Logic::Or,
            ..
        } => 1,
        ExprKind::Logic {
            operator: Logic::And,
            ..
        } => 2,
        ExprKind::Not(_) => 3,
        ExprKind::In { .. } => 4,
        ExprKind::Binary { operator, .. } => match operator {
            Binary::Add | Binary::Subtract => 5,
            Binary::Multiply | Binary::Divide | Binary::Remainder => 6,
            _ => 4,
        },
        ExprKind::Negate(_) => 7,
        _ => 8,
    }
}

fn write_expr(out: &mut String, expr: &Expr, required: u8, minimal: bool) {
    let own = level(expr);
    let parenthesize = if minimal {
        own < required
    } else {
        own < 8 && required > 0
    };
    if parenthesize {
        out.push('(');
    }
    match &expr.kind {
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Int(i) => out.push_str(&i.to_string()),
        ExprKind::Float(f) => out.push_str(&format!("{f:?}")),
        ExprKind::Text(text) => {
            out.push('"');
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    _ => out.push(c),
                }
            }
            out.push('"');
        }
        ExprKind::Value => out.push_str("value"),
        ExprKind::Call {
            function,
            arguments,
        } => {
            out.push_str(function.name());
            out.push('(');
            for (i, argument) in arguments.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, argument, 0, minimal);
            }
            out.push(')');
        }
        ExprKind::Not(operand) => {
            out.push('!');
            write_expr(out, operand, 3, minimal);
        }
        ExprKind::Negate(operand) => {
            out.push('-');
            write_expr(out, operand, 7, minimal);
        }
        ExprKind::Logic { operator, operands } => {
            let (symbol, operand_level) = match operator {
                Logic::Or => (" || ", 2),
                Logic::And => (" && ", 3),
            };
            for (i, operand) in operands.iter().enumerate() {
                if i > 0 {
                    out.push_str(symbol);
                }
                write_expr(out, operand, operand_level, minimal);
            }
        }
        ExprKind::Binary {
            operator,
            left,
            right,
            ..
        } => {
            let (left_level, right_level) = match own {
                4 => (5, 5),
                _ => (own, own + 1),
            };
            write_expr(out, left, left_level, minimal);
            out.push_str(&format!(" {} ", operator.symbol()));
            write_expr(out, right, right_level, minimal);
        }
        ExprKind::In { left, items } => {
            write_expr(out, left, 5, minimal);
            out.push_str(" in [");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                // List items are literals, never parenthesized.
                write_expr(out, item, 0, true);
            }
            out.push(']');
        }
    }
    if parenthesize {
        out.push(')');
    }
}

fn scope(value: Type) -> TestScope {
    TestScope { value: Ok(value) }
}

fn compile_in(source: &str, scope: &TestScope) -> Predicate {
    Predicate::compile(source, scope).unwrap_or_else(|e| panic!("{source}: {e} at {}", e.offset))
}

fn compile(source: &str) -> Predicate {
    compile_in(source, &scope(Type::Int))
}

fn error_in(source: &str, scope: &TestScope) -> ExprError {
    match Predicate::compile(source, scope) {
        Ok(predicate) => panic!("{source} compiled: {predicate:?}"),
        Err(error) => error,
    }
}

fn error(source: &str) -> ExprError {
    error_in(source, &scope(Type::Int))
}

/// The three-valued result of `source` with `value` as the event value.
fn tri(source: &str, value: Option<Value>) -> Option<bool> {
    let predicate = compile(source);
    let context = TestContext {
        value,
        ..TestContext::default()
    };
    let result = predicate.root.eval(&context);
    assert_eq!(predicate.eval(&context), result == Some(true), "{source}");
    result
}

fn holds(source: &str) -> bool {
    tri(source, None).unwrap_or_else(|| panic!("{source} is unknown"))
}

/// The shape of `source` as parsed: every compound part in parentheses.
fn shape(source: &str) -> String {
    let expr = super::parse::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
    print(&expr, false)
}

#[test]
fn operators_bind_from_or_to_unary_minus() {
    let cases = [
        ("true || false && true", "true || (false && true)"),
        ("true && false || true", "(true && false) || true"),
        ("!true && false", "(!true) && false"),
        ("!value > 3", "!(value > 3)"),
        ("!!true", "!(!true)"),
        ("value + 1 > 2 * 3", "(value + 1) > (2 * 3)"),
        ("1 + 2 * 3", "1 + (2 * 3)"),
        ("-value * 2", "(-value) * 2"),
        ("- -value", "-(-value)"),
        ("1 - 2 - 3", "(1 - 2) - 3"),
        ("8 / 4 / 2", "(8 / 4) / 2"),
        ("8 % 3 * 2", "(8 % 3) * 2"),
        ("true || false || true", "true || false || true"),
        ("(true || false) || true", "(true || false) || true"),
        ("true || (false || true)", "true || (false || true)"),
        ("value + 1 in [2, -3]", "(value + 1) in [2, -3]"),
        ("abs(value - 1) <= -2", "abs(value - 1) <= (-2)"),
    ];
    for (source, expected) in cases {
        assert_eq!(shape(source), expected, "{source}");
    }
}

#[test]
fn precedence_shows_in_results() {
    for source in [
        "1 + 2 * 3 == 7",
        "(1 + 2) * 3 == 9",
        "10 - 4 - 3 == 3",
        "100 / 10 / 5 == 2",
        "-2 * 3 == -6",
        "- 2 - 3 == -5",
        "7 % 4 * 2 == 6",
        "true || false && false",
        "!(false && true)",
        "!1 > 2",
        "2 * -3 == -6",
    ] {
        assert!(holds(source), "{source}");
    }
    for source in ["!false && false", "(true || false) && false"] {
        assert!(!holds(source), "{source}");
    }
}

#[test]
fn comparisons_do_not_chain() {
    for (source, offset) in [
        ("1 < 2 < 3", 6),
        ("value == 1 == true", 11),
        ("value in [1] == true", 13),
        ("value > 1 in [true]", 10),
    ] {
        let error = error(source);
        assert_eq!(error.offset, offset, "{source}: {error}");
        assert!(
            error.message.starts_with("comparisons do not chain"),
            "{source}: {error}"
        );
    }
    assert_eq!(
        error("1 < 2 < 3").message,
        "comparisons do not chain: `1 < 2` is already a comparison; to test a range, write \
         `0 < value && value < 10`"
    );
    assert!(holds("(1 < 2) == true"));
}

#[test]
fn type_errors_name_both_sides_and_point_at_the_mistake() {
    let cases = [
        (
            Type::Bool,
            "value == 3",
            6,
            "cannot compare a condition with a number: `value` is a condition (true or false) \
             and `3` is a number",
        ),
        (
            Type::Int,
            "value != \"open\"",
            6,
            "cannot compare a number with text: `value` is a number and `\"open\"` is text",
        ),
        (
            Type::Text,
            "value < 3",
            6,
            "cannot compare text with a number: `value` is text and `3` is a number",
        ),
        (
            Type::Bool,
            "1 < value",
            4,
            "`<` compares numbers or texts, not conditions: `value` is a condition (true or false)",
        ),
        (
            Type::Int,
            "value > 1 && value",
            13,
            "`&&` needs a condition (true or false): `value` is a number",
        ),
        (
            Type::Int,
            "true || value + 1",
            8,
            "`||` needs a condition (true or false): `value + 1` is a number",
        ),
        (
            Type::Int,
            "!value",
            1,
            "`!` needs a condition (true or false): `value` is a number",
        ),
        (
            Type::Text,
            "-value == 1",
            1,
            "`-` needs a number: `value` is text",
        ),
        (
            Type::Text,
            "value + \"s\" == \"as\"",
            0,
            "`+` needs a number: `value` is text",
        ),
        (
            Type::Int,
            "2 * (value > 1) == 2",
            4,
            "`*` needs a number: `(value > 1)` is a condition (true or false)",
        ),
        (
            Type::Int,
            "abs(\"x\") > 1",
            4,
            "`abs` needs a number: `\"x\"` is text",
        ),
        (
            Type::Int,
            "max(1, true) > 1",
            7,
            "`max` needs a number: `true` is a condition (true or false)",
        ),
        (
            Type::Int,
            "value in [1, \"two\"]",
            13,
            "`in` looks for a number in the list, but `\"two\"` is text",
        ),
        (
            Type::Text,
            "value in [\"a\", 2.5]",
            15,
            "`in` looks for text in the list, but `2.5` is a number",
        ),
        (
            Type::Int,
            "value + 1",
            0,
            "the expression is a number, a condition must be true or false (compare it, like \
             `value + 1 > 0`)",
        ),
        (
            Type::Text,
            "mode(\"lobby\")",
            0,
            "the expression is text, a condition must be true or false (compare it, like \
             `mode(\"lobby\") == \"open\"`)",
        ),
    ];
    for (value, source, offset, message) in cases {
        let error = error_in(source, &scope(value));
        assert_eq!(
            (error.offset, error.message.as_str()),
            (offset, message),
            "{source}"
        );
    }
}

#[test]
fn unknown_names_point_at_the_argument() {
    let cases = [
        ("state(\"door.lobyy\")", 6, "unknown point `door.lobyy`"),
        ("armed( \"hall\")", 7, "unknown zone `hall`"),
        ("mode(\"hall\") == \"x\"", 5, "unknown zone `hall`"),
        (
            "value > 1 && scheduled(\"day\")",
            23,
            "unknown schedule `day`",
        ),
    ];
    for (source, offset, message) in cases {
        let error = error(source);
        assert_eq!(
            (error.offset, error.message.as_str()),
            (offset, message),
            "{source}"
        );
    }
}

#[test]
fn names_must_be_text_literals_and_functions_take_their_arguments() {
    let cases = [
        (
            "state(value) == 1",
            6,
            "`state` takes a point id in double quotes, like `state(\"lobby.door\")`, not `value`",
        ),
        (
            "armed(\"lo\" + \"bby\")",
            6,
            "`armed` takes a zone id in double quotes, like `armed(\"lobby\")`, not \
             `\"lo\" + \"bby\"`",
        ),
        (
            "scheduled(night)",
            10,
            "unknown name `night`; text goes in double quotes (`\"night\"`), and a name is \
             `value`, `true`, `false` or a function call like `state(\"lobby.door\")`",
        ),
        (
            "min(value) > 1",
            0,
            "`min` takes 2 arguments, not 1: write `min(value, 10)`",
        ),
        (
            "abs(value, 2) > 1",
            11,
            "`abs` takes 1 argument, not 2: write `abs(value)`",
        ),
        (
            "armed()",
            0,
            "`armed` takes 1 argument, not 0: write `armed(\"lobby\")`",
        ),
        (
            "mode(\"lobby\") == armed",
            17,
            "`armed` is a function: write `armed(\"lobby\")` (text goes in double quotes: \
             `\"armed\"`)",
        ),
        (
            "stat(\"door\")",
            0,
            "unknown function `stat`; did you mean `state`?",
        ),
        (
            "door(\"x\")",
            0,
            "unknown function `door`; the functions are state, armed, mode, scheduled, abs, \
             min, max",
        ),
        (
            "armd",
            0,
            "unknown name `armd`; did you mean `armed(\"lobby\")`?",
        ),
        (
            "valeu > 1",
            0,
            "unknown name `valeu`; did you mean `value`?",
        ),
        ("value > 1 and true", 10, "use `&&` instead of `and`"),
        ("value > 1 or true", 10, "use `||` instead of `or`"),
        ("not true", 0, "use `!` instead of `not`"),
        ("True", 0, "`True` is written `true`"),
    ];
    for (source, offset, message) in cases {
        let error = error(source);
        assert_eq!(
            (error.offset, error.message.as_str()),
            (offset, message),
            "{source}"
        );
    }
}

#[test]
fn value_may_be_unavailable() {
    let scope = TestScope {
        value: Err("a `silent` trigger has no event".to_owned()),
    };
    let error = error_in("armed(\"lobby\") && value > 3", &scope);
    assert_eq!(error.offset, 18);
    assert_eq!(
        error.message,
        "`value` is not available here: a `silent` trigger has no event"
    );
    // Without `value` the expression compiles.
    let predicate = compile_in("armed(\"lobby\")", &scope);
    let context = TestContext {
        armed: [true, false],
        ..TestContext::default()
    };
    assert!(predicate.eval(&context));
}

#[test]
fn syntax_errors_say_what_was_expected() {
    let cases = [
        (
            "",
            0,
            "expected a value (a number, text in double quotes, `true`, `false`, `value`, a \
             function call or `(`), found the end of the expression",
        ),
        (
            "value >",
            7,
            "expected a value (a number, text in double quotes, `true`, `false`, `value`, a \
             function call or `(`), found the end of the expression",
        ),
        (
            "value > 3)",
            9,
            "unexpected `)`: there is no `(` for it to close",
        ),
        (
            "(value > 3",
            10,
            "expected `)` to close the `(` at byte 0, found the end of the expression",
        ),
        (
            "value > 3 4",
            10,
            "expected an operator or the end of the expression, found the number `4`",
        ),
        (
            "value > 3 \"x\"",
            10,
            "expected an operator or the end of the expression, found the text \"x\"",
        ),
        (
            "state(\"door\" \"x\")",
            13,
            "expected `,` or `)` after an argument, found the text \"x\"",
        ),
        (
            "value = 3",
            6,
            "`=` is not an operator; use `==` to compare",
        ),
        (
            "true & false",
            5,
            "`&` is not an operator; use `&&` for \"and\"",
        ),
        (
            "true | false",
            5,
            "`|` is not an operator; use `||` for \"or\"",
        ),
        (
            "value == 'open'",
            9,
            "text goes in double quotes: write \"open\", not 'open'",
        ),
        (
            "value == \"open",
            9,
            "unterminated text: the closing `\"` is missing",
        ),
        (
            "value == \"open\\",
            9,
            "unterminated text: the closing `\"` is missing",
        ),
        (
            "value == \"a\\qb\"",
            11,
            "unknown escape `\\q` in text; the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`",
        ),
        (
            "value > .5",
            8,
            "a decimal number needs a digit before the point: write `0.5`, not `.5`",
        ),
        (
            "value > 5.",
            8,
            "a decimal number needs a digit after the point: write `5.0`, not `5.`",
        ),
        (
            "value > 1e",
            9,
            "an exponent needs digits after the `e`, like `1e3` or `2.5e-3`",
        ),
        ("value > 3abc", 8, "`3abc` is not a number"),
        ("value > 1.2.3", 8, "`1.2.3` is not a number"),
        ("value > 1e999", 8, "the number `1e999` is too large"),
        (
            "value > 9223372036854775808",
            8,
            "the integer `9223372036854775808` is too large; integers go from \
             -9223372036854775808 to 9223372036854775807",
        ),
        (
            "value > 99999999999999999999",
            8,
            "the integer `99999999999999999999` is too large; integers go from \
             -9223372036854775808 to 9223372036854775807",
        ),
        ("value == # 1", 9, "unexpected character `#`"),
        ("value == é", 9, "unexpected character `é`"),
        (
            "value == !true",
            9,
            "`!` negates a whole condition and cannot appear here; put it in parentheses, like \
             `value == (!armed(\"lobby\"))`",
        ),
        (
            "[1] == value",
            0,
            "a list can only follow `in`, like `value in [1, 2]`",
        ),
        (
            "value in 1",
            9,
            "expected a list after `in`, like `[1, 2]`, found the number `1`",
        ),
        (
            "value in []",
            9,
            "the list is empty, so nothing is ever in it",
        ),
        (
            "value in [1 2]",
            12,
            "expected `,` or `]` in the list, found the number `2`",
        ),
        (
            "value in [1, value]",
            13,
            "a list holds only literals, like `\"open\"`, `3`, `-2.5` or `true`; found `value`",
        ),
        (
            "value in [-x]",
            11,
            "expected a number after `-`, found `x`",
        ),
        (
            "in [1]",
            0,
            "`in` needs something on its left, like `value in [1, 2]`",
        ),
        (
            "value > )",
            8,
            "expected a value (a number, text in double quotes, `true`, `false`, `value`, a \
             function call or `(`), found `)`",
        ),
    ];
    for (source, offset, message) in cases {
        let error = error(source);
        assert_eq!(
            (error.offset, error.message.as_str()),
            (offset, message),
            "{source}"
        );
    }
}

#[test]
fn the_first_mistake_is_reported() {
    // The bad `)` comes before the unterminated text.
    assert_eq!(error("value > ) \"open").offset, 8);
    // The unknown point comes before the type error.
    assert_eq!(error("state(\"nope\") + true").offset, 6);
}

#[test]
fn kleene_logic() {
    // `value` is missing, so `value == 1` is unknown.
    let operands = [
        ("true", Some(true)),
        ("false", Some(false)),
        ("value == 1", None),
    ];
    let and = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    let or = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    };
    for (a, a_value) in operands {
        assert_eq!(tri(&format!("!({a})"), None), a_value.map(|b| !b), "!{a}");
        for (b, b_value) in operands {
            assert_eq!(
                tri(&format!("{a} && {b}"), None),
                and(a_value, b_value),
                "{a} && {b}"
            );
            assert_eq!(
                tri(&format!("{a} || {b}"), None),
                or(a_value, b_value),
                "{a} || {b}"
            );
        }
    }
    // The rows that matter, spelled out.
    assert_eq!(tri("value == 1 || true", None), Some(true));
    assert_eq!(tri("value == 1 && false", None), Some(false));
    assert_eq!(tri("value == 1 && true", None), None);
    assert_eq!(tri("false || value == 1 || false", None), None);
    // An unknown predicate does not fire, negated or not.
    assert!(!compile("value == 1").eval(&TestContext::default()));
    assert!(!compile("!(value == 1)").eval(&TestContext::default()));
    // Comparing unknowns is unknown, even with themselves.
    assert_eq!(tri("value == value", None), None);
    assert_eq!(tri("(value == 1) == (value == 1)", None), None);
}

#[test]
fn runtime_values_of_the_wrong_type_are_unknown() {
    let cases = [
        (Value::Text("30".into()), None),
        (Value::Bool(true), None),
        (Value::Float(f64::NAN), None),
        (Value::Float(f64::INFINITY), None),
        (Value::Float(30.5), Some(true)),
        (Value::Int(31), Some(true)),
        (Value::Int(30), Some(false)),
    ];
    for (value, expected) in cases {
        assert_eq!(
            tri("value > 30", Some(value.clone())),
            expected,
            "{value:?}"
        );
    }
    let text = compile_in("value == \"open\"", &scope(Type::Text));
    let context = |value| TestContext {
        value: Some(value),
        ..TestContext::default()
    };
    assert_eq!(text.root.eval(&context(Value::Int(1))), None);
    assert_eq!(
        text.root.eval(&context(Value::Text("open".into()))),
        Some(true)
    );
    let boolean = compile_in("value == true", &scope(Type::Bool));
    // A boolean point does not accept 0 and 1.
    assert_eq!(boolean.root.eval(&context(Value::Int(1))), None);
    assert_eq!(boolean.root.eval(&context(Value::Bool(true))), Some(true));
}

#[test]
fn integers_and_decimals_mix() {
    for source in [
        "1 == 1.0",
        "1 < 1.5",
        "7 / 2 == 3",
        "-7 / 2 == -3",
        "7 % 3 == 1",
        "7.0 / 2 == 3.5",
        "7 / 2.0 == 3.5",
        "1 + 0.5 == 1.5",
        "1e3 == 1000",
        "2.5e-3 * 1000 == 2.5",
        "0.1 + 0.2 > 0.3",
        "9007199254740993 > 9007199254740992.0",
        "-0.0 == 0",
        "abs(-3) == 3",
        "abs(-2.5) == 2.5",
        "min(3, 2.5) == 2.5",
        "max(3, 2.5) == 3",
        "min(-1, 1) == -1",
        "-9223372036854775808 < -9223372036854775807",
    ] {
        assert!(holds(source), "{source}");
    }
    // A float value against an integer threshold, and an integer against a decimal one.
    assert_eq!(tri("value >= 21", Some(Value::Float(20.999))), Some(false));
    assert_eq!(tri("value >= 20.5", Some(Value::Int(21))), Some(true));
    assert_eq!(
        tri("value == -9223372036854775808", Some(Value::Int(i64::MIN))),
        Some(true)
    );
}

#[test]
fn failed_arithmetic_is_unknown_at_run_time_and_an_error_in_constants() {
    let max = Some(Value::Int(i64::MAX));
    assert_eq!(tri("value + 1 > 0", max.clone()), None);
    assert_eq!(tri("value * 2 > 0", max.clone()), None);
    assert_eq!(tri("-value - 2 < 0", max.clone()), None);
    assert_eq!(tri("value + 1 > 0 || true", max.clone()), Some(true));
    assert_eq!(tri("value - 1 > 0", max), Some(true));
    let min = Some(Value::Int(i64::MIN));
    assert_eq!(tri("-value > 0", min.clone()), None);
    assert_eq!(tri("abs(value) > 0", min.clone()), None);
    assert_eq!(tri("value / -1 > 0", min.clone()), None);
    assert_eq!(tri("value % -1 == 0", min), None);
    let zero = Some(Value::Int(0));
    assert_eq!(tri("10 / value == 1", zero.clone()), None);
    assert_eq!(tri("10 % value == 1", zero.clone()), None);
    assert_eq!(tri("10.0 / value == 1", zero), None);
    assert_eq!(tri("value * 1e300 > 0", Some(Value::Float(1e300))), None);

    for (source, message) in [
        (
            "1 / 0 == 1",
            "`1 / 0` cannot be computed: it divides by zero or its result is out of range",
        ),
        (
            "value > 9223372036854775807 + 1",
            "`9223372036854775807 + 1` cannot be computed: it divides by zero or its result is \
             out of range",
        ),
        (
            "value > -(-9223372036854775808)",
            "`-(-9223372036854775808)` cannot be computed: it divides by zero or its result is \
             out of range",
        ),
        (
            "value > 1e300 * 1e300",
            "`1e300 * 1e300` cannot be computed: it divides by zero or its result is out of range",
        ),
    ] {
        let error = error(source);
        assert_eq!(error.message, message, "{source}");
        assert_eq!(
            error.offset,
            source.find(['1', '9', '-']).unwrap_or(0),
            "{source}"
        );
    }
}

#[test]
fn constants_are_folded() {
    assert!(matches!(
        compile("1 + 2 * 3 == 7").root,
        Condition::Const(true)
    ));
    assert!(matches!(
        compile("\"a\" in [\"b\", \"a\"]").root,
        Condition::Const(true)
    ));
    assert!(matches!(
        compile("!(true && false)").root,
        Condition::Const(true)
    ));
    // A comparison with a constant keeps the constant inline, whichever side it is on.
    assert!(matches!(
        compile("value > 2 * 15").root,
        Condition::CompareNumberWith(..)
    ));
    assert!(matches!(
        compile("30 < value").root,
        Condition::CompareNumberWith(..)
    ));
    assert_eq!(tri("30 < value", Some(Value::Int(31))), Some(true));
    assert_eq!(tri("30 < value", Some(Value::Int(30))), Some(false));
    assert_eq!(tri("30 >= value", Some(Value::Int(30))), Some(true));
}

#[test]
fn in_lists() {
    let int = |i| Some(Value::Int(i));
    assert_eq!(tri("value in [1, 2, 3]", int(2)), Some(true));
    assert_eq!(tri("value in [1, 2, 3]", int(4)), Some(false));
    assert_eq!(tri("value in [1, 2, 3,]", int(3)), Some(true));
    assert_eq!(tri("value in [-1, 2.5]", int(-1)), Some(true));
    assert_eq!(
        tri("value in [-1, 2.5]", Some(Value::Float(2.5))),
        Some(true)
    );
    assert_eq!(tri("value in [1.0]", int(1)), Some(true));
    assert_eq!(tri("value in [1, 2]", None), None);
    assert_eq!(tri("!(value in [1, 2])", int(5)), Some(true));
    assert_eq!(tri("value + 1 in [2]", int(1)), Some(true));

    let text = compile_in("value in [\"open\", \"forced\"]", &scope(Type::Text));
    let with = |value: &str| TestContext {
        value: Some(Value::Text(value.into())),
        ..TestContext::default()
    };
    assert!(text.eval(&with("forced")));
    assert!(!text.eval(&with("closed")));
    assert!(!text.eval(&with("Open")));

    let boolean = compile_in("value in [true]", &scope(Type::Bool));
    let with = |b| TestContext {
        value: Some(Value::Bool(b)),
        ..TestContext::default()
    };
    assert!(boolean.eval(&with(true)));
    assert!(!boolean.eval(&with(false)));
    let both = compile_in("value in [false, true]", &scope(Type::Bool));
    assert!(both.eval(&with(false)));
}

#[test]
fn text_escapes_and_byte_order() {
    let predicate = compile_in(r#"value == "a\"b\\c\nd\te""#, &scope(Type::Text));
    let context = TestContext {
        value: Some(Value::Text("a\"b\\c\nd\te".into())),
        ..TestContext::default()
    };
    assert!(predicate.eval(&context));
    for source in [
        r#""B" < "a""#,
        r#""z" < "é""#,
        r#""abc" < "abd""#,
        r#""ab" < "abc""#,
        r#""" < "a""#,
        r#""door open" == "door open""#,
        r#""é\t" != "é""#,
    ] {
        assert!(holds(source), "{source}");
    }
}

#[test]
fn points_zones_and_schedules_come_from_the_context() {
    let context = TestContext {
        value: Some(Value::Int(5)),
        points: [
            Some(Value::Bool(true)),
            Some(Value::Float(21.5)),
            Some(Value::Int(3)),
            Some(Value::Text("ok".into())),
        ],
        armed: [true, false],
        modes: ["armed_away", "disarmed"],
        scheduled: [true],
    };
    for source in [
        "state(\"door\")",
        "state(\"temp\") > 21",
        "state(\"count\") + value == 8",
        "state(\"status\") == \"ok\"",
        "armed(\"lobby\") && !armed(\"office\")",
        "mode(\"lobby\") == \"armed_away\"",
        "mode(\"office\") in [\"disarmed\", \"armed_stay\"]",
        "mode(\"lobby\") != mode(\"office\")",
        "scheduled(\"night\")",
        "min(state(\"temp\"), value) == 5",
        "max(state(\"temp\"), value) > 21.4",
    ] {
        let predicate = compile(source);
        assert!(predicate.eval(&context), "{source}");
    }
    // A point never seen is unknown, not false.
    let predicate = compile("!state(\"door\")");
    assert!(!predicate.eval(&TestContext::default()));
    assert_eq!(predicate.root.eval(&TestContext::default()), None);
}

#[test]
fn references_list_each_point_once() {
    let predicate = compile(
        "state(\"status\") == \"x\" || state(\"door\") || state(\"status\") != \"y\" \
         || armed(\"lobby\")",
    );
    assert_eq!(predicate.references(), [Slot(0), Slot(3)]);
    assert!(compile("value > 1").references().is_empty());
}

#[test]
fn display_is_the_source() {
    let source = "value  >  30 && armed(\"lobby\")";
    assert_eq!(compile(source).to_string(), source);
}

#[test]
fn whitespace_is_allowed_between_tokens() {
    assert!(holds(" \t\n 1\n+\t2 ==3 && abs ( -1 )==1 "));
    assert_eq!(tri("value in[1,2]", Some(Value::Int(2))), Some(true));
}

#[test]
fn nesting_is_limited() {
    let nested = |open: &str, close: &str, depth: usize| {
        format!("{}true{}", open.repeat(depth), close.repeat(depth))
    };
    // At the limit: fine.
    assert!(holds(&nested("(", ")", MAX_DEPTH)));
    assert!(holds(&nested("!", "", MAX_DEPTH)));
    assert!(holds(&format!("{}1 == -1", "-".repeat(MAX_DEPTH - 1))));
    // One past it: refused, pointing at the level too many.
    let message = format!(
        "the expression is nested too deeply (more than {MAX_DEPTH} levels of parentheses, \
         operators and calls); simplify it or split the rule"
    );
    for (source, offset) in [
        (nested("(", ")", MAX_DEPTH + 1), MAX_DEPTH),
        (nested("!", "", MAX_DEPTH + 1), MAX_DEPTH),
        (format!("{}1 == 1", "-".repeat(MAX_DEPTH + 1)), MAX_DEPTH),
        (
            nested("abs(", ")", MAX_DEPTH + 1).replace("true", "1") + " > 0",
            4 * MAX_DEPTH,
        ),
    ] {
        let error = error(&source);
        assert_eq!(
            (error.offset, &error.message),
            (offset, &message),
            "{source}"
        );
    }
    // Long chains build deep trees too: here the comparison is one level too many.
    let sum = format!("value{} > 0", " + 1".repeat(MAX_DEPTH));
    let too_deep = error(&sum);
    assert_eq!(too_deep.message, message);
    assert_eq!(too_deep.offset, "value".len() + 4 * MAX_DEPTH + 1);
    assert!(
        compile(&format!("value{} > 0", " + 1".repeat(MAX_DEPTH - 1))).eval(&TestContext {
            value: Some(Value::Int(0)),
            ..TestContext::default()
        })
    );
    // Far past the limit (much deeper than the stack would take): still an error.
    assert_eq!(error(&nested("(", ")", 2000)).message, message);
    assert_eq!(error(&nested("!", "", 4000)).message, message);
}

#[test]
fn length_is_limited() {
    let at_limit = format!("true{}", " ".repeat(MAX_LENGTH - 4));
    assert!(holds(&at_limit));
    let error = error(&format!("{at_limit} "));
    assert_eq!(error.offset, 0);
    assert_eq!(
        error.message,
        format!(
            "the expression is {} bytes long, longer than the limit of {MAX_LENGTH}; split it \
             into several rules",
            MAX_LENGTH + 1
        )
    );
}

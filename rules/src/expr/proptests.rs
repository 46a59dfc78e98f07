//! Property tests: any text compiles or fails without panicking; random well-typed trees
//! print, parse back to the same shape, compile, and evaluate like a direct interpreter of
//! the tree (the model) in random contexts.

use gatehouse_protocol::Value;
use proptest::prelude::*;

use super::eval::{Arithmetic, Number};
use super::parse::{Binary, Expr, ExprKind, Function, Logic, parse};
use super::tests::{POINTS, SCHEDULES, TestContext, TestScope, ZONES, print};
use super::{Context, Predicate, Slot, Type};

fn node(kind: ExprKind) -> Expr {
    Expr {
        kind,
        start: 0,
        end: 0,
        depth: 0,
    }
}

fn call(function: Function, arguments: Vec<Expr>) -> Expr {
    node(ExprKind::Call {
        function,
        arguments,
    })
}

fn text(id: &str) -> Expr {
    node(ExprKind::Text(id.to_owned()))
}

fn binary(operator: Binary, left: Expr, right: Expr) -> Expr {
    node(ExprKind::Binary {
        operator,
        operator_start: 0,
        left: Box::new(left),
        right: Box::new(right),
    })
}

fn negate(operand: Expr) -> Expr {
    node(ExprKind::Negate(Box::new(operand)))
}

fn arb_int() -> impl Strategy<Value = i64> {
    prop_oneof![-5_i64..=5, Just(i64::MAX), Just(i64::MIN), any::<i64>()]
}

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(0.5),
        Just(2.0),
        Just(1e300),
        (0.0..1e6_f64),
        any::<f64>().prop_filter("finite", |f| f.is_finite())
    ]
}

/// A numeric literal as written: a magnitude, negated or not.
fn arb_number_literal() -> impl Strategy<Value = Expr> {
    prop_oneof![
        arb_int().prop_map(|i| {
            let literal = node(ExprKind::Int(i.unsigned_abs()));
            if i < 0 { negate(literal) } else { literal }
        }),
        arb_float().prop_map(|f| {
            let literal = node(ExprKind::Float(f.abs()));
            if f.is_sign_negative() {
                negate(literal)
            } else {
                literal
            }
        }),
    ]
}

fn arb_text_literal() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just("open"),
        Just("armed_away"),
        Just("disarmed"),
        Just("a\"b\\c\nd\te"),
        Just(""),
        Just("é"),
    ]
    .prop_map(text)
}

fn arb_numeric(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        arb_number_literal(),
        Just(node(ExprKind::Value)),
        Just(call(Function::State, vec![text("temp")])),
        Just(call(Function::State, vec![text("count")])),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = arb_numeric(depth - 1);
    let arithmetic = prop_oneof![
        Just(Binary::Add),
        Just(Binary::Subtract),
        Just(Binary::Multiply),
        Just(Binary::Divide),
        Just(Binary::Remainder),
    ];
    prop_oneof![
        2 => leaf,
        1 => inner.clone().prop_map(negate),
        1 => inner.clone().prop_map(|x| call(Function::Abs, vec![x])),
        1 => (prop_oneof![Just(Function::Min), Just(Function::Max)], inner.clone(), inner.clone())
            .prop_map(|(function, a, b)| call(function, vec![a, b])),
        3 => (arithmetic, inner.clone(), inner).prop_map(|(op, a, b)| binary(op, a, b)),
    ]
    .boxed()
}

fn arb_textual() -> impl Strategy<Value = Expr> {
    prop_oneof![
        arb_text_literal(),
        Just(call(Function::State, vec![text("status")])),
        Just(call(Function::Mode, vec![text("lobby")])),
        Just(call(Function::Mode, vec![text("office")])),
    ]
}

fn arb_compare() -> impl Strategy<Value = Binary> {
    prop_oneof![
        Just(Binary::Equal),
        Just(Binary::NotEqual),
        Just(Binary::Less),
        Just(Binary::LessOrEqual),
        Just(Binary::Greater),
        Just(Binary::GreaterOrEqual),
    ]
}

fn boolean(b: bool) -> Expr {
    node(ExprKind::Bool(b))
}

fn arb_equality() -> impl Strategy<Value = Binary> {
    prop_oneof![Just(Binary::Equal), Just(Binary::NotEqual)]
}

fn arb_condition(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(boolean),
        Just(call(Function::State, vec![text("door")])),
        Just(call(Function::Armed, vec![text("lobby")])),
        Just(call(Function::Scheduled, vec![text("night")])),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = arb_condition(depth - 1);
    let numeric = arb_numeric(depth - 1);
    prop_oneof![
        2 => leaf,
        1 => inner.clone().prop_map(|x| node(ExprKind::Not(Box::new(x)))),
        2 => (
            prop_oneof![Just(Logic::And), Just(Logic::Or)],
            proptest::collection::vec(inner.clone(), 2..4)
        )
            .prop_map(|(operator, operands)| node(ExprKind::Logic { operator, operands })),
        1 => (arb_equality(), inner.clone(), inner.clone())
            .prop_map(|(op, a, b)| binary(op, a, b)),
        3 => (arb_compare(), numeric.clone(), numeric.clone())
            .prop_map(|(op, a, b)| binary(op, a, b)),
        1 => (arb_compare(), arb_textual(), arb_textual()).prop_map(|(op, a, b)| binary(op, a, b)),
        1 => (numeric, proptest::collection::vec(arb_number_literal(), 1..4))
            .prop_map(|(left, items)| node(ExprKind::In { left: Box::new(left), items })),
        1 => (arb_textual(), proptest::collection::vec(arb_text_literal(), 1..4))
            .prop_map(|(left, items)| node(ExprKind::In { left: Box::new(left), items })),
        1 => (inner, proptest::collection::vec(any::<bool>().prop_map(boolean), 1..3))
            .prop_map(|(left, items)| node(ExprKind::In { left: Box::new(left), items })),
    ]
    .boxed()
}

fn arb_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        any::<bool>().prop_map(|b| Some(Value::Bool(b))),
        arb_int().prop_map(|i| Some(Value::Int(i))),
        prop_oneof![arb_float(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0)]
            .prop_map(|f| Some(Value::Float(f))),
        prop_oneof![Just("open"), Just("disarmed"), Just("")]
            .prop_map(|t| Some(Value::Text(t.to_owned()))),
    ]
}

/// A value, usually of the declared type (so that most results are known).
fn arb_value_of(declared: Type) -> impl Strategy<Value = Option<Value>> {
    let typed = match declared {
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::Int => arb_int().prop_map(Value::Int).boxed(),
        Type::Float => prop_oneof![
            arb_float().prop_map(Value::Float),
            arb_int().prop_map(Value::Int)
        ]
        .boxed(),
        Type::Text => prop_oneof![Just("open"), Just("disarmed"), Just("é")]
            .prop_map(|t| Value::Text(t.to_owned()))
            .boxed(),
    };
    prop_oneof![4 => typed.prop_map(Some), 1 => arb_value()]
}

fn arb_context() -> impl Strategy<Value = TestContext> {
    let mode = || prop_oneof![Just("disarmed"), Just("armed_away"), Just("open")];
    (
        arb_value_of(Type::Int),
        POINTS.map(|(_, declared)| arb_value_of(declared)),
        any::<[bool; 2]>(),
        [mode(), mode()],
        any::<[bool; 1]>(),
    )
        .prop_map(|(value, points, armed, modes, scheduled)| TestContext {
            value,
            points,
            armed,
            modes,
            scheduled,
        })
}

/// What the model computes: a value of one of the three types.
#[derive(Debug, Clone, PartialEq)]
enum Model {
    Bool(bool),
    Number(Number),
    Text(String),
}

/// A value read as the declared type; unknown if it is not of it.
fn read(value: Option<&Value>, declared: Type) -> Option<Model> {
    match (value?, declared) {
        (Value::Bool(b), Type::Bool) => Some(Model::Bool(*b)),
        (Value::Int(i), Type::Int | Type::Float) => Some(Model::Number(Number::Int(*i))),
        (Value::Float(f), Type::Int | Type::Float) if f.is_finite() => {
            Some(Model::Number(Number::Float(*f)))
        }
        (Value::Text(t), Type::Text) => Some(Model::Text(t.clone())),
        _ => None,
    }
}

fn slot(ids: &[&str], id: &str) -> Slot {
    Slot(ids.iter().position(|known| *known == id).unwrap_or(0) as u32)
}

/// Evaluates the tree directly, the simplest way; `None` is unknown.
fn model(expr: &Expr, context: &TestContext) -> Option<Model> {
    let number = |e: &Expr| match model(e, context) {
        Some(Model::Number(n)) => Some(n),
        _ => None,
    };
    let boolean = |e: &Expr| match model(e, context) {
        Some(Model::Bool(b)) => Some(b),
        _ => None,
    };
    match &expr.kind {
        ExprKind::Bool(b) => Some(Model::Bool(*b)),
        ExprKind::Int(i) => Some(Model::Number(Number::Int(i64::try_from(*i).ok()?))),
        ExprKind::Float(f) => Some(Model::Number(Number::Float(*f))),
        ExprKind::Text(t) => Some(Model::Text(t.clone())),
        ExprKind::Value => read(context.value(), Type::Int),
        ExprKind::Call {
            function,
            arguments,
        } => {
            let id = match &arguments[0].kind {
                ExprKind::Text(id) => id.as_str(),
                _ => "",
            };
            match function {
                Function::State => {
                    let point = POINTS.iter().position(|(known, _)| *known == id)?;
                    read(context.points[point].as_ref(), POINTS[point].1)
                }
                Function::Armed => Some(Model::Bool(context.armed(slot(&ZONES, id)))),
                Function::Mode => Some(Model::Text(context.mode(slot(&ZONES, id)).to_owned())),
                Function::Scheduled => Some(Model::Bool(context.scheduled(slot(&SCHEDULES, id)))),
                Function::Abs => Some(Model::Number(match number(&arguments[0])? {
                    Number::Int(i) => Number::Int(i.checked_abs()?),
                    Number::Float(f) => Number::Float(f.abs()),
                })),
                Function::Min | Function::Max => {
                    let (a, b) = (number(&arguments[0])?, number(&arguments[1])?);
                    let b_wins = match function {
                        Function::Min => b.compare(a).is_lt(),
                        _ => b.compare(a).is_gt(),
                    };
                    Some(Model::Number(if b_wins { b } else { a }))
                }
            }
        }
        ExprKind::Not(operand) => Some(Model::Bool(!boolean(operand)?)),
        ExprKind::Negate(operand) => {
            if let ExprKind::Int(magnitude) = operand.kind {
                return Some(Model::Number(Number::Int(
                    0_i64.checked_sub_unsigned(magnitude)?,
                )));
            }
            Some(Model::Number(match number(operand)? {
                Number::Int(i) => Number::Int(i.checked_neg()?),
                Number::Float(f) => Number::Float(-f),
            }))
        }
        ExprKind::Logic { operator, operands } => {
            let values: Vec<Option<bool>> = operands.iter().map(boolean).collect();
            let decisive = *operator == Logic::Or;
            if values.contains(&Some(decisive)) {
                Some(Model::Bool(decisive))
            } else if values.contains(&None) {
                None
            } else {
                Some(Model::Bool(!decisive))
            }
        }
        ExprKind::Binary {
            operator,
            left,
            right,
            ..
        } => {
            let arithmetic = match operator {
                Binary::Add => Some(Arithmetic::Add),
                Binary::Subtract => Some(Arithmetic::Subtract),
                Binary::Multiply => Some(Arithmetic::Multiply),
                Binary::Divide => Some(Arithmetic::Divide),
                Binary::Remainder => Some(Arithmetic::Remainder),
                _ => None,
            };
            if let Some(arithmetic) = arithmetic {
                let (a, b) = (number(left)?, number(right)?);
                return Some(Model::Number(arithmetic.apply(a, b)?));
            }
            let ordering = match (model(left, context)?, model(right, context)?) {
                (Model::Bool(a), Model::Bool(b)) => a.cmp(&b),
                (Model::Number(a), Model::Number(b)) => a.compare(b),
                (Model::Text(a), Model::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
                _ => return None,
            };
            Some(Model::Bool(match operator {
                Binary::Equal => ordering.is_eq(),
                Binary::NotEqual => ordering.is_ne(),
                Binary::Less => ordering.is_lt(),
                Binary::LessOrEqual => ordering.is_le(),
                Binary::Greater => ordering.is_gt(),
                _ => ordering.is_ge(),
            }))
        }
        ExprKind::In { left, items } => {
            let left = model(left, context)?;
            let found = items
                .iter()
                .any(|item| match (&left, model(item, context)) {
                    (Model::Number(a), Some(Model::Number(b))) => a.compare(b).is_eq(),
                    (a, b) => Some(a) == b.as_ref(),
                });
            Some(Model::Bool(found))
        }
    }
}

fn scope() -> TestScope {
    TestScope {
        value: Ok(Type::Int),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_compiles_or_fails_without_panicking(source in any::<String>()) {
        if let Err(error) = Predicate::compile(&source, &scope()) {
            prop_assert!(error.offset <= source.len());
            prop_assert!(!error.message.is_empty());
        }
    }

    #[test]
    fn text_made_of_tokens_compiles_or_fails_without_panicking(
        source in concat!(
            r#"([ ()\[\],!=<>&|+*/%.\-"\\0-9e]"#,
            r#"|value|in|true|state\("door"\)|abs|min|"x"){0,30}"#
        )
    ) {
        match Predicate::compile(&source, &scope()) {
            Ok(predicate) => {
                predicate.eval(&TestContext::default());
            }
            Err(error) => {
                prop_assert!(error.offset <= source.len(), "{source}: {error:?}");
                prop_assert!(source.is_char_boundary(error.offset));
            }
        }
    }

    #[test]
    fn trees_print_parse_compile_and_evaluate_like_the_model(
        tree in arb_condition(4),
        contexts in proptest::collection::vec(arb_context(), 4),
    ) {
        let source = print(&tree, true);
        let parsed = parse(&source).map_err(|e| TestCaseError::fail(format!("{source}: {e}")))?;
        prop_assert_eq!(print(&parsed, false), print(&tree, false), "{}", source);
        let predicate = match Predicate::compile(&source, &scope()) {
            Ok(predicate) => predicate,
            Err(error) => {
                // Only a constant that cannot be computed (`1 / 0`) is refused.
                prop_assert!(
                    error.message.contains("cannot be computed"),
                    "{}: {:?}",
                    source,
                    error
                );
                return Ok(());
            }
        };
        for context in &contexts {
            let expected = match model(&tree, context) {
                Some(Model::Bool(b)) => Some(b),
                None => None,
                other => return Err(TestCaseError::fail(format!("{source}: {other:?}"))),
            };
            prop_assert_eq!(predicate.root.eval(context), expected, "{} in {:?}", source, context);
            prop_assert_eq!(predicate.eval(context), expected == Some(true));
        }
    }
}

//! Type-checks the syntax tree against a [`Scope`] and compiles it into evaluation nodes.
//!
//! Names are resolved to slots here, so evaluation never looks anything up; subtrees that
//! read nothing from the context are evaluated now and replaced by their result, so a
//! constant that cannot be computed (`1 / 0`) is a compile error rather than a predicate that
//! is silently never true.

use gatehouse_protocol::Value;

use super::eval::{Arithmetic, Compare, Condition, Number, Numeric, Textual};
use super::parse::{Binary, Expr, ExprKind, Function, Logic};
use super::{Context, ExprError, Scope, Slot, Type};

/// The result of checking a whole predicate.
pub(super) struct Compiled {
    pub root: Condition,
    /// The points read with `state(...)`, sorted, each once.
    pub points: Vec<Slot>,
}

pub(super) fn check(source: &str, expr: &Expr, scope: &dyn Scope) -> Result<Compiled, ExprError> {
    let mut checker = Checker {
        source,
        scope,
        points: Vec::new(),
    };
    let root = match checker.expr(expr)? {
        Typed::Condition(root) => root,
        other => {
            let example = match other {
                Typed::Textual(_) => "== \"open\"",
                _ => "> 0",
            };
            return Err(ExprError::new(
                expr.start,
                format!(
                    "the expression is {}, a condition must be true or false \
                     (compare it, like `{} {example}`)",
                    other.kind(),
                    checker.snippet(expr)
                ),
            ));
        }
    };
    let mut points = checker.points;
    points.sort_unstable();
    points.dedup();
    Ok(Compiled { root, points })
}

/// A compiled node of a known type.
enum Typed {
    Condition(Condition),
    Numeric(Numeric),
    Textual(Textual),
}

impl Typed {
    /// The type as a person would name it, with its article.
    fn kind(&self) -> &'static str {
        match self {
            Typed::Condition(_) => "a condition (true or false)",
            Typed::Numeric(_) => "a number",
            Typed::Textual(_) => "text",
        }
    }
}

/// A context with nothing in it, to fold constant subtrees (which never ask it anything).
struct Empty;

impl Context for Empty {
    fn value(&self) -> Option<&Value> {
        None
    }
    fn point(&self, _: Slot) -> Option<&Value> {
        None
    }
    fn armed(&self, _: Slot) -> bool {
        false
    }
    fn mode(&self, _: Slot) -> &str {
        ""
    }
    fn scheduled(&self, _: Slot) -> bool {
        false
    }
}

struct Checker<'a> {
    source: &'a str,
    scope: &'a dyn Scope,
    points: Vec<Slot>,
}

/// How long a quoted piece of the expression may be in a message before it is shortened.
const SNIPPET_LIMIT: usize = 40;

impl Checker<'_> {
    /// The text of `expr`, shortened if long.
    fn snippet(&self, expr: &Expr) -> String {
        let text = &self.source[expr.start..expr.end];
        if text.len() <= SNIPPET_LIMIT {
            return text.to_owned();
        }
        let mut cut = SNIPPET_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &text[..cut])
    }

    /// "`value` is a number", for messages.
    fn is_a(&self, expr: &Expr, typed: &Typed) -> String {
        format!("`{}` is {}", self.snippet(expr), typed.kind())
    }

    fn expr(&mut self, expr: &Expr) -> Result<Typed, ExprError> {
        let typed = match &expr.kind {
            ExprKind::Bool(b) => Typed::Condition(Condition::Const(*b)),
            ExprKind::Int(magnitude) => Typed::Numeric(Numeric::Const(Number::Int(
                // The parser lets only a negated literal reach 2^63.
                i64::try_from(*magnitude).unwrap_or(i64::MAX),
            ))),
            ExprKind::Float(f) => Typed::Numeric(Numeric::Const(Number::Float(*f))),
            ExprKind::Text(text) => Typed::Textual(Textual::Const(text.as_str().into())),
            ExprKind::Value => self.value(expr)?,
            ExprKind::Call {
                function,
                arguments,
            } => self.call(expr, *function, arguments)?,
            ExprKind::Not(operand) => {
                let operand = self.condition(operand, "`!`")?;
                Typed::Condition(Condition::Not(Box::new(operand)))
            }
            ExprKind::Negate(operand) => {
                if let ExprKind::Int(magnitude) = operand.kind {
                    // `-9223372036854775808`: the one literal whose magnitude is not an i64.
                    let negated = 0_i64.checked_sub_unsigned(magnitude).unwrap_or(i64::MIN);
                    return Ok(Typed::Numeric(Numeric::Const(Number::Int(negated))));
                }
                let operand = self.number(operand, "`-`")?;
                Typed::Numeric(Numeric::Negate(Box::new(operand)))
            }
            ExprKind::Logic { operator, operands } => {
                let what = match operator {
                    Logic::Or => "`||`",
                    Logic::And => "`&&`",
                };
                let operands = operands
                    .iter()
                    .map(|operand| self.condition(operand, what))
                    .collect::<Result<Box<[_]>, _>>()?;
                Typed::Condition(match operator {
                    Logic::Or => Condition::Or(operands),
                    Logic::And => Condition::And(operands),
                })
            }
            ExprKind::Binary {
                operator,
                operator_start,
                left,
                right,
            } => self.binary(*operator, *operator_start, left, right)?,
            ExprKind::In { left, items } => self.is_in(left, items)?,
        };
        self.fold(expr, typed)
    }

    /// Replaces a node whose children are all constant by its value.
    fn fold(&self, expr: &Expr, typed: Typed) -> Result<Typed, ExprError> {
        let children_const = match &typed {
            Typed::Condition(condition) => match condition {
                Condition::Const(_)
                | Condition::Value
                | Condition::Point(_)
                | Condition::Armed(_)
                | Condition::Scheduled(_) => false,
                Condition::Not(operand) | Condition::BoolIn(operand, _) => {
                    matches!(**operand, Condition::Const(_))
                }
                Condition::And(operands) | Condition::Or(operands) => operands
                    .iter()
                    .all(|operand| matches!(operand, Condition::Const(_))),
                Condition::Same(_, sides) => {
                    sides.iter().all(|side| matches!(side, Condition::Const(_)))
                }
                Condition::CompareNumbers(_, sides) => {
                    sides.iter().all(|side| matches!(side, Numeric::Const(_)))
                }
                Condition::CompareNumberWith(_, left, _) | Condition::NumberIn(left, _) => {
                    matches!(**left, Numeric::Const(_))
                }
                Condition::CompareTexts(_, sides) => {
                    sides.iter().all(|side| matches!(side, Textual::Const(_)))
                }
                Condition::CompareTextWith(_, left, _) | Condition::TextIn(left, _) => {
                    matches!(**left, Textual::Const(_))
                }
            },
            Typed::Numeric(numeric) => match numeric {
                Numeric::Const(_) | Numeric::Value | Numeric::Point(_) => false,
                Numeric::Negate(operand) | Numeric::Abs(operand) => {
                    matches!(**operand, Numeric::Const(_))
                }
                Numeric::Min(sides) | Numeric::Max(sides) | Numeric::Arithmetic(_, sides) => {
                    sides.iter().all(|side| matches!(side, Numeric::Const(_)))
                }
            },
            // No text operation takes arguments that could be constant.
            Typed::Textual(_) => false,
        };
        if !children_const {
            return Ok(typed);
        }
        let folded = match typed {
            Typed::Condition(condition) => condition
                .eval(&Empty)
                .map(|b| Typed::Condition(Condition::Const(b))),
            Typed::Numeric(numeric) => numeric
                .eval(&Empty)
                .map(|n| Typed::Numeric(Numeric::Const(n))),
            Typed::Textual(_) => Some(typed),
        };
        folded.ok_or_else(|| {
            ExprError::new(
                expr.start,
                format!(
                    "`{}` cannot be computed: it divides by zero or its result is out of range",
                    self.snippet(expr)
                ),
            )
        })
    }

    fn value(&self, expr: &Expr) -> Result<Typed, ExprError> {
        let declared = self.scope.value_type().map_err(|reason| {
            ExprError::new(
                expr.start,
                format!("`value` is not available here: {reason}"),
            )
        })?;
        Ok(match declared {
            Type::Bool => Typed::Condition(Condition::Value),
            Type::Int | Type::Float => Typed::Numeric(Numeric::Value),
            Type::Text => Typed::Textual(Textual::Value),
        })
    }

    /// Checks that `expr` is a condition, for `what` (an operator or function).
    fn condition(&mut self, expr: &Expr, what: &str) -> Result<Condition, ExprError> {
        match self.expr(expr)? {
            Typed::Condition(condition) => Ok(condition),
            other => Err(ExprError::new(
                expr.start,
                format!(
                    "{what} needs a condition (true or false): {}",
                    self.is_a(expr, &other)
                ),
            )),
        }
    }

    /// Checks that `expr` is a number, for `what` (an operator or function).
    fn number(&mut self, expr: &Expr, what: &str) -> Result<Numeric, ExprError> {
        match self.expr(expr)? {
            Typed::Numeric(numeric) => Ok(numeric),
            other => Err(ExprError::new(
                expr.start,
                format!("{what} needs a number: {}", self.is_a(expr, &other)),
            )),
        }
    }

    fn binary(
        &mut self,
        operator: Binary,
        operator_start: usize,
        left: &Expr,
        right: &Expr,
    ) -> Result<Typed, ExprError> {
        let compare = match operator {
            Binary::Equal => Compare::Equal,
            Binary::NotEqual => Compare::NotEqual,
            Binary::Less => Compare::Less,
            Binary::LessOrEqual => Compare::LessOrEqual,
            Binary::Greater => Compare::Greater,
            Binary::GreaterOrEqual => Compare::GreaterOrEqual,
            Binary::Add
            | Binary::Subtract
            | Binary::Multiply
            | Binary::Divide
            | Binary::Remainder => {
                let arithmetic = match operator {
                    Binary::Add => Arithmetic::Add,
                    Binary::Subtract => Arithmetic::Subtract,
                    Binary::Multiply => Arithmetic::Multiply,
                    Binary::Divide => Arithmetic::Divide,
                    _ => Arithmetic::Remainder,
                };
                let what = format!("`{}`", operator.symbol());
                let left = self.number(left, &what)?;
                let right = self.number(right, &what)?;
                return Ok(Typed::Numeric(Numeric::Arithmetic(
                    arithmetic,
                    Box::new([left, right]),
                )));
            }
        };
        let ordered = !matches!(compare, Compare::Equal | Compare::NotEqual);
        let left_typed = self.expr(left)?;
        let right_typed = self.expr(right)?;
        let condition = match (left_typed, right_typed) {
            (Typed::Condition(a), Typed::Condition(b)) if !ordered => {
                Condition::Same(compare == Compare::Equal, Box::new([a, b]))
            }
            (Typed::Numeric(a), Typed::Numeric(Numeric::Const(b))) => {
                Condition::CompareNumberWith(compare, Box::new(a), b)
            }
            (Typed::Numeric(Numeric::Const(a)), Typed::Numeric(b)) => {
                Condition::CompareNumberWith(compare.swapped(), Box::new(b), a)
            }
            (Typed::Numeric(a), Typed::Numeric(b)) => {
                Condition::CompareNumbers(compare, Box::new([a, b]))
            }
            (Typed::Textual(a), Typed::Textual(Textual::Const(b))) => {
                Condition::CompareTextWith(compare, Box::new(a), b)
            }
            (Typed::Textual(Textual::Const(a)), Typed::Textual(b)) => {
                Condition::CompareTextWith(compare.swapped(), Box::new(b), a)
            }
            (Typed::Textual(a), Typed::Textual(b)) => {
                Condition::CompareTexts(compare, Box::new([a, b]))
            }
            (left_typed, right_typed) => {
                let symbol = operator.symbol();
                if ordered {
                    for (side, typed) in [(left, &left_typed), (right, &right_typed)] {
                        if let Typed::Condition(_) = typed {
                            return Err(ExprError::new(
                                side.start,
                                format!(
                                    "`{symbol}` compares numbers or texts, not conditions: {}",
                                    self.is_a(side, typed)
                                ),
                            ));
                        }
                    }
                }
                return Err(ExprError::new(
                    operator_start,
                    format!(
                        "cannot compare {} with {}: {} and {}",
                        short_kind(&left_typed),
                        short_kind(&right_typed),
                        self.is_a(left, &left_typed),
                        self.is_a(right, &right_typed)
                    ),
                ));
            }
        };
        Ok(Typed::Condition(condition))
    }

    fn is_in(&mut self, left: &Expr, items: &[Expr]) -> Result<Typed, ExprError> {
        let left_typed = self.expr(left)?;
        let mut typed_items = Vec::with_capacity(items.len());
        for item in items {
            let typed = self.expr(item)?;
            if std::mem::discriminant(&typed) != std::mem::discriminant(&left_typed) {
                return Err(ExprError::new(
                    item.start,
                    format!(
                        "`in` looks for {} in the list, but {}",
                        short_kind(&left_typed),
                        self.is_a(item, &typed)
                    ),
                ));
            }
            typed_items.push(typed);
        }
        let condition = match left_typed {
            Typed::Condition(left) => {
                let mut present = [false, false];
                for item in &typed_items {
                    if let Typed::Condition(Condition::Const(b)) = item {
                        present[usize::from(*b)] = true;
                    }
                }
                Condition::BoolIn(Box::new(left), present)
            }
            Typed::Numeric(left) => Condition::NumberIn(
                Box::new(left),
                typed_items
                    .into_iter()
                    .filter_map(|item| match item {
                        Typed::Numeric(Numeric::Const(number)) => Some(number),
                        _ => None,
                    })
                    .collect(),
            ),
            Typed::Textual(left) => Condition::TextIn(
                Box::new(left),
                typed_items
                    .into_iter()
                    .filter_map(|item| match item {
                        Typed::Textual(Textual::Const(text)) => Some(text),
                        _ => None,
                    })
                    .collect(),
            ),
        };
        Ok(Typed::Condition(condition))
    }

    fn call(
        &mut self,
        expr: &Expr,
        function: Function,
        arguments: &[Expr],
    ) -> Result<Typed, ExprError> {
        let name = function.name();
        let expected = match function {
            Function::Min | Function::Max => 2,
            _ => 1,
        };
        if arguments.len() != expected {
            let offset = arguments
                .get(expected)
                .map_or(expr.start, |extra| extra.start);
            return Err(ExprError::new(
                offset,
                format!(
                    "`{name}` takes {expected} argument{}, not {}: write `{}`",
                    if expected == 1 { "" } else { "s" },
                    arguments.len(),
                    function.example()
                ),
            ));
        }
        let what = format!("`{name}`");
        Ok(match function {
            Function::State => {
                let (id, offset) = self.id(function, &arguments[0])?;
                let (slot, declared) = self
                    .scope
                    .point(id)
                    .ok_or_else(|| ExprError::new(offset, format!("unknown point `{id}`")))?;
                self.points.push(slot);
                match declared {
                    Type::Bool => Typed::Condition(Condition::Point(slot)),
                    Type::Int | Type::Float => Typed::Numeric(Numeric::Point(slot)),
                    Type::Text => Typed::Textual(Textual::Point(slot)),
                }
            }
            Function::Armed | Function::Mode => {
                let (id, offset) = self.id(function, &arguments[0])?;
                let slot = self
                    .scope
                    .zone(id)
                    .ok_or_else(|| ExprError::new(offset, format!("unknown zone `{id}`")))?;
                if function == Function::Armed {
                    Typed::Condition(Condition::Armed(slot))
                } else {
                    Typed::Textual(Textual::Mode(slot))
                }
            }
            Function::Scheduled => {
                let (id, offset) = self.id(function, &arguments[0])?;
                let slot = self
                    .scope
                    .schedule(id)
                    .ok_or_else(|| ExprError::new(offset, format!("unknown schedule `{id}`")))?;
                Typed::Condition(Condition::Scheduled(slot))
            }
            Function::Abs => {
                Typed::Numeric(Numeric::Abs(Box::new(self.number(&arguments[0], &what)?)))
            }
            Function::Min | Function::Max => {
                let sides = Box::new([
                    self.number(&arguments[0], &what)?,
                    self.number(&arguments[1], &what)?,
                ]);
                Typed::Numeric(if function == Function::Min {
                    Numeric::Min(sides)
                } else {
                    Numeric::Max(sides)
                })
            }
        })
    }

    /// The id a function names, which must be text in double quotes, and its offset.
    fn id<'e>(
        &self,
        function: Function,
        argument: &'e Expr,
    ) -> Result<(&'e str, usize), ExprError> {
        match &argument.kind {
            ExprKind::Text(id) => Ok((id, argument.start)),
            _ => {
                let named = match function {
                    Function::State => "a point id",
                    Function::Armed | Function::Mode => "a zone id",
                    _ => "a schedule id",
                };
                Err(ExprError::new(
                    argument.start,
                    format!(
                        "`{}` takes {named} in double quotes, like `{}`, not `{}`",
                        function.name(),
                        function.example(),
                        self.snippet(argument)
                    ),
                ))
            }
        }
    }
}

/// The type in a few words, for "cannot compare a number with text".
fn short_kind(typed: &Typed) -> &'static str {
    match typed {
        Typed::Condition(_) => "a condition",
        Typed::Numeric(_) => "a number",
        Typed::Textual(_) => "text",
    }
}

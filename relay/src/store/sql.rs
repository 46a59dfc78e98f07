//! Statements with optional conditions, written with `$n` placeholders that both PostgreSQL
//! and SQLite accept.
//!
//! The text is only ever made of `&'static str` fragments and generated placeholders; every
//! value is bound. That is what makes the `AssertSqlSafe` below true.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

/// A value to bind.
#[derive(Debug, Clone)]
enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

/// A statement under construction.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(start: &'static str) -> Self {
        Sql {
            text: start.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, fragment: &'static str) -> &mut Self {
        self.text.push_str(fragment);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn text(&mut self, value: &str) -> &mut Self {
        self.optional_text(Some(value))
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn int(&mut self, value: i64) -> &mut Self {
        self.optional_int(Some(value))
    }

    /// Appends a placeholder bound to `value`, NULL for `None`.
    pub(crate) fn optional_text(&mut self, value: Option<&str>) -> &mut Self {
        self.args.push(Arg::Text(value.map(str::to_owned)));
        self.placeholder()
    }

    /// Appends a placeholder bound to `value`, NULL for `None`.
    pub(crate) fn optional_int(&mut self, value: Option<i64>) -> &mut Self {
        self.args.push(Arg::Int(value));
        self.placeholder()
    }

    fn placeholder(&mut self) -> &mut Self {
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// The statement with its values bound.
    pub(crate) fn query(&self) -> Query<'_, Any, AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.text.clone()));
        for arg in &self.args {
            query = match arg {
                Arg::Text(value) => query.bind(value.as_deref()),
                Arg::Int(value) => query.bind(*value),
            };
        }
        query
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::Sql;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 FROM t WHERE a = ");
        sql.text("x")
            .push(" AND b = ")
            .int(2)
            .push(" AND c = ")
            .text("y");
        assert_eq!(
            sql.as_str(),
            "SELECT 1 FROM t WHERE a = $1 AND b = $2 AND c = $3"
        );
    }
}

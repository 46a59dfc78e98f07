//! Point values and their quality.

use serde::{Deserialize, Serialize};

/// The value of a point after scaling: a state, a count or a measurement.
///
/// In JSON a value is the bare JSON scalar (`true`, `42`, `21.5`, `"armed"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as a number, for thresholds and deadbands (`true` is 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            Value::Float(_) | Value::Text(_) => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// How far a value can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Quality {
    /// Read from the device just now.
    Good,
    /// The device answered but the value is unusable (a Modbus exception, a decode error).
    Bad { reason: String },
    /// The value is the last one known and may be out of date (device offline).
    Stale { reason: String },
}

impl Quality {
    pub fn bad(reason: impl Into<String>) -> Self {
        Quality::Bad {
            reason: reason.into(),
        }
    }

    pub fn stale(reason: impl Into<String>) -> Self {
        Quality::Stale {
            reason: reason.into(),
        }
    }

    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bare_json_scalars() {
        let values = vec![
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(21.5),
            Value::Text("armed".into()),
        ];
        let json = serde_json::to_string(&values).unwrap_or_default();
        assert_eq!(json, r#"[true,-3,21.5,"armed"]"#);
        let back: Vec<Value> = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, values);
    }

    #[test]
    fn floats_come_back_exactly() {
        for x in [0.1, 21.3, 1.4877577387945792e-38, f64::MAX, -0.0, 1e-300] {
            let json = serde_json::to_string(&Value::Float(x)).unwrap_or_default();
            let back: Value = serde_json::from_str(&json).unwrap_or(Value::Text(json.clone()));
            assert_eq!(back, Value::Float(x), "{json}");
        }
    }

    #[test]
    fn quality_carries_its_reason() {
        let json = serde_json::to_string(&Quality::bad("illegal data address")).unwrap_or_default();
        assert_eq!(json, r#"{"status":"bad","reason":"illegal data address"}"#);
    }
}

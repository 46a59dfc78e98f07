//! Between BACnet values and point values, free of I/O: present-value as a point's type,
//! status-flags as a quality, a command as what WriteProperty carries, and the standard's
//! answers as reasons.

use gatehouse_bacnet::{Apdu, ApplicationValue, StatusFlags, Value as BacnetValue};
use gatehouse_protocol::{Quality, Value};

use super::config::{Family, PointType, family};
use gatehouse_bacnet::ObjectType;

/// The command text that relinquishes the point's priority (writes Null at it).
pub const RELINQUISH: &str = "relinquish";

/// A present-value as the point's type.
pub fn read_value(point_type: PointType, values: &[BacnetValue]) -> Result<Value, String> {
    let [BacnetValue::Application(value)] = values else {
        return Err(format!(
            "present-value is not one primitive value: {values:?}"
        ));
    };
    let number = || {
        value
            .as_f64()
            .ok_or_else(|| format!("present-value {value:?} is not a number"))
    };
    Ok(match (point_type, value) {
        (PointType::Bool, ApplicationValue::Boolean(flag)) => Value::Bool(*flag),
        (PointType::Bool, _) => Value::Bool(number()? != 0.0),
        (PointType::Int, ApplicationValue::Unsigned(n)) => {
            Value::Int(i64::try_from(*n).map_err(|_| format!("present-value {n} is too large"))?)
        }
        (PointType::Int, ApplicationValue::Signed(n)) => Value::Int(*n),
        (PointType::Int, ApplicationValue::Enumerated(n)) => Value::Int(i64::from(*n)),
        (PointType::Int, _) => {
            let number = number()?;
            if number.fract() != 0.0 || !number.is_finite() {
                return Err(format!("present-value {number} is not a whole number"));
            }
            Value::Int(number as i64)
        }
        (PointType::Float, _) => Value::Float(number()?),
    })
}

/// The status-flags as a quality: a value in fault or out of service is not the process's
/// value (Bad with the flag as reason); in-alarm and overridden values are real (Good).
pub fn status_quality(flags: Option<StatusFlags>) -> Quality {
    match flags {
        Some(StatusFlags { fault: true, .. }) => Quality::bad("status-flags: fault"),
        Some(StatusFlags {
            out_of_service: true,
            ..
        }) => Quality::bad("status-flags: out-of-service"),
        _ => Quality::Good,
    }
}

/// The status-flags in a property value, if it is one.
pub fn status_flags(values: &[BacnetValue]) -> Option<StatusFlags> {
    match values {
        [BacnetValue::Application(ApplicationValue::BitString(bits))] => {
            StatusFlags::from_bit_string(bits)
        }
        _ => None,
    }
}

/// What a command writes to present-value: a value of the object's datatype, or Null (the
/// text `relinquish`) to relinquish the point's priority.
pub fn command_value(object_type: ObjectType, value: &Value) -> Result<ApplicationValue, String> {
    if let Value::Text(text) = value {
        return if text == RELINQUISH {
            Ok(ApplicationValue::Null)
        } else {
            Err(format!(
                "`{text}` is no value for a {object_type}; the only text is \"{RELINQUISH}\""
            ))
        };
    }
    match family(object_type) {
        Family::Binary => match value {
            Value::Bool(flag) => Ok(ApplicationValue::Enumerated(u32::from(*flag))),
            Value::Int(n @ (0 | 1)) => Ok(ApplicationValue::Enumerated(*n as u32)),
            _ => Err(format!("a {object_type} takes true or false, not {value}")),
        },
        Family::MultiState => match value {
            Value::Int(n) if *n >= 1 && *n <= i64::from(u32::MAX) => {
                Ok(ApplicationValue::Unsigned(*n as u64))
            }
            _ => Err(format!(
                "a {object_type} takes a state number from 1, not {value}"
            )),
        },
        Family::Analog => match value.as_f64() {
            Some(number) if number.is_finite() && !matches!(value, Value::Bool(_)) => {
                Ok(ApplicationValue::Real(number as f32))
            }
            _ => Err(format!("a {object_type} takes a number, not {value}")),
        },
    }
}

/// Why a confirmed request failed, from the device's answer that is not its ACK.
pub fn refusal(apdu: &Apdu) -> String {
    match apdu {
        Apdu::Error { error, .. } => format!("BACnet error {error}"),
        Apdu::Reject { reason, .. } => format!("BACnet reject: {reason}"),
        Apdu::Abort { reason, .. } => format!("BACnet abort: {reason}"),
        other => format!("unexpected answer {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_bacnet::BitString;

    fn app(value: ApplicationValue) -> Vec<BacnetValue> {
        vec![BacnetValue::Application(value)]
    }

    #[test]
    fn present_values_read_as_the_points_type() {
        let cases = [
            (
                PointType::Float,
                ApplicationValue::Real(21.5),
                Value::Float(21.5),
            ),
            (
                PointType::Bool,
                ApplicationValue::Enumerated(1),
                Value::Bool(true),
            ),
            (
                PointType::Bool,
                ApplicationValue::Enumerated(0),
                Value::Bool(false),
            ),
            (PointType::Int, ApplicationValue::Unsigned(3), Value::Int(3)),
            (PointType::Int, ApplicationValue::Real(2.0), Value::Int(2)),
        ];
        for (point_type, bacnet, expected) in cases {
            assert_eq!(
                read_value(point_type, &app(bacnet.clone())),
                Ok(expected),
                "{bacnet:?}"
            );
        }
        assert!(read_value(PointType::Int, &app(ApplicationValue::Real(2.5))).is_err());
        assert!(read_value(PointType::Float, &app(ApplicationValue::Null)).is_err());
        assert!(read_value(PointType::Float, &[]).is_err());
    }

    #[test]
    fn fault_and_out_of_service_make_the_value_bad() {
        let flags = |bits: [bool; 4]| {
            status_flags(&app(ApplicationValue::BitString(BitString {
                bits: bits.to_vec(),
            })))
        };
        assert_eq!(status_quality(flags([false; 4])), Quality::Good);
        assert_eq!(
            status_quality(flags([true, false, false, false])),
            Quality::Good
        );
        assert_eq!(
            status_quality(flags([false, true, false, false])),
            Quality::bad("status-flags: fault")
        );
        assert_eq!(
            status_quality(flags([false, false, false, true])),
            Quality::bad("status-flags: out-of-service")
        );
        assert_eq!(status_quality(None), Quality::Good);
    }

    #[test]
    fn commands_become_the_objects_datatype_or_null() {
        let bo = ObjectType::BINARY_OUTPUT;
        assert_eq!(
            command_value(bo, &Value::Bool(true)),
            Ok(ApplicationValue::Enumerated(1))
        );
        assert_eq!(
            command_value(bo, &Value::Text("relinquish".into())),
            Ok(ApplicationValue::Null)
        );
        assert!(command_value(bo, &Value::Text("open".into())).is_err());
        assert!(command_value(bo, &Value::Int(2)).is_err());
        assert_eq!(
            command_value(ObjectType::ANALOG_VALUE, &Value::Int(20)),
            Ok(ApplicationValue::Real(20.0))
        );
        assert!(command_value(ObjectType::ANALOG_VALUE, &Value::Bool(true)).is_err());
        assert_eq!(
            command_value(ObjectType::MULTI_STATE_VALUE, &Value::Int(2)),
            Ok(ApplicationValue::Unsigned(2))
        );
        assert!(command_value(ObjectType::MULTI_STATE_VALUE, &Value::Int(0)).is_err());
    }
}

//! zigbee2mqtt's MQTT messages, I/O-free: which topic is what, the device list and its
//! exposes, availability, state values, and the payloads of `/set`.
//!
//! Formats as zigbee2mqtt documents them (MQTT topics and messages; exposes):
//! - `{base}/bridge/devices` (retained): a JSON array of devices, each with `ieee_address`,
//!   `friendly_name`, `type`, and `definition` (null until interviewed) holding `model`,
//!   `vendor` and `exposes`. Republished on every join, rename and removal.
//! - `{base}/bridge/state` (retained): `{"state":"online"}`, or the legacy plain `online`.
//! - `{base}/{friendly_name}`: the device's state as a JSON object (`{"contact":false,...}`).
//! - `{base}/{friendly_name}/availability` (retained): as bridge/state.
//! - `{base}/{friendly_name}/set`: a JSON object of the properties to change.
//!
//! Friendly names may contain `/`.

use std::collections::HashMap;

use gatehouse_protocol::Value;
use serde::Deserialize;
use serde_json::Value as Json;

use super::config::PropertyType;

/// What a message on the bridge's topics is.
#[derive(Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    Devices,
    BridgeState,
    /// `{base}/{name}/availability`
    Availability(&'a str),
    /// `{base}/{name}`
    State(&'a str),
    /// Anything else (other bridge topics, `/set` and `/get` requests): not for us.
    Other,
}

/// What `topic` is under `base`.
pub fn classify<'a>(base: &str, topic: &'a str) -> Topic<'a> {
    let Some(rest) = topic
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return Topic::Other;
    };
    match rest {
        "bridge/devices" => Topic::Devices,
        "bridge/state" => Topic::BridgeState,
        _ if rest.starts_with("bridge/") || rest.is_empty() => Topic::Other,
        _ => {
            if let Some(name) = rest.strip_suffix("/availability") {
                Topic::Availability(name)
            } else if rest.ends_with("/set") || rest.ends_with("/get") || rest.contains("/set/") {
                Topic::Other
            } else {
                Topic::State(rest)
            }
        }
    }
}

/// What zigbee2mqtt says a property is (one entry of `exposes`, features flattened).
#[derive(Debug, Clone, PartialEq)]
pub struct Expose {
    /// `binary`, `numeric`, `enum`, `text`, `composite`, ...
    pub kind: String,
    pub unit: Option<String>,
    /// For binary exposes: the values for true and false (`true`/`false`, `"ON"`/`"OFF"`,
    /// `"LOCK"`/`"UNLOCK"`).
    pub value_on: Option<Json>,
    pub value_off: Option<Json>,
    /// Access bits: 1 published in the state, 2 settable, 4 gettable.
    pub access: u8,
}

/// Access bit: the property can be set through `/set`.
pub const ACCESS_SET: u8 = 2;

/// One device of `bridge/devices`.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub ieee_address: String,
    pub friendly_name: String,
    /// `vendor model`, when interviewed.
    pub model: Option<String>,
    pub exposes: HashMap<String, Expose>,
}

#[derive(Deserialize)]
struct RawDevice {
    ieee_address: String,
    friendly_name: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    definition: Option<RawDefinition>,
}

#[derive(Deserialize)]
struct RawDefinition {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default)]
    exposes: Vec<Json>,
}

/// Parses `bridge/devices`. The coordinator is left out.
pub fn parse_devices(payload: &[u8]) -> Result<Vec<Device>, serde_json::Error> {
    let raw: Vec<RawDevice> = serde_json::from_slice(payload)?;
    Ok(raw
        .into_iter()
        .filter(|device| device.kind.as_deref() != Some("Coordinator"))
        .map(|device| {
            let mut exposes = HashMap::new();
            let mut model = None;
            if let Some(definition) = device.definition {
                for expose in &definition.exposes {
                    flatten(expose, &mut exposes);
                }
                model = match (definition.vendor, definition.model) {
                    (Some(vendor), Some(model)) => Some(format!("{vendor} {model}")),
                    (vendor, model) => model.or(vendor),
                };
            }
            Device {
                ieee_address: device.ieee_address.to_lowercase(),
                friendly_name: device.friendly_name,
                model,
                exposes,
            }
        })
        .collect())
}

/// Adds `expose` and its features, by property. A composite with a property (`warning`,
/// `color`) is itself a property; a specific type without one (`lock`, `switch`) only groups
/// its features.
fn flatten(expose: &Json, into: &mut HashMap<String, Expose>) {
    let Some(property) = expose.get("property").and_then(Json::as_str) else {
        for feature in expose
            .get("features")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            flatten(feature, into);
        }
        return;
    };
    let text = |key: &str| expose.get(key).and_then(Json::as_str).map(str::to_owned);
    into.entry(property.to_owned()).or_insert_with(|| Expose {
        kind: text("type").unwrap_or_default(),
        unit: text("unit"),
        value_on: expose.get("value_on").cloned(),
        value_off: expose.get("value_off").cloned(),
        access: expose
            .get("access")
            .and_then(Json::as_u64)
            .and_then(|access| u8::try_from(access).ok())
            .unwrap_or(1),
    });
}

/// Reads an availability or bridge state payload: `Some(true)` online, `Some(false)`
/// offline, `None` when it is neither (an empty retained message clears it).
pub fn parse_online(payload: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let state = match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(object)) => object.get("state")?.as_str()?.to_owned(),
        Ok(Json::String(state)) => state,
        _ => text.to_owned(),
    };
    match state.as_str() {
        "online" => Some(true),
        "offline" => Some(false),
        _ => None,
    }
}

/// Parses a device's state message: its properties in order.
pub fn parse_state(payload: &[u8]) -> Result<serde_json::Map<String, Json>, String> {
    match serde_json::from_slice::<Json>(payload) {
        Ok(Json::Object(properties)) => Ok(properties),
        Ok(other) => Err(format!(
            "a state message must be a JSON object, not {}",
            json_kind(&other)
        )),
        Err(error) => Err(format!("not JSON: {error}")),
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "true/false",
        Json::Number(_) => "a number",
        Json::String(_) => "text",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The values zigbee2mqtt uses for true and false where the expose does not say.
const ON_OFF: [(&str, &str); 3] = [("ON", "OFF"), ("LOCK", "UNLOCK"), ("OPEN", "CLOSE")];

/// A property's JSON value as a point value of `value_type`; `expose` gives a binary's
/// on/off values.
pub fn read_value(
    value_type: PropertyType,
    json: &Json,
    expose: Option<&Expose>,
) -> Result<Value, String> {
    let wrong = || {
        format!(
            "`{json}` is not {}",
            value_type.rule_type().describe().trim_end_matches('s')
        )
    };
    match value_type {
        PropertyType::Bool => {
            // A JSON true/false is kept as it is: zigbee2mqtt's `contact: true` means closed,
            // although its expose calls `false` the "on" value. Only text values (`LOCK`)
            // are mapped through the expose.
            if let Some(expose) = expose
                && json.is_string()
            {
                if expose.value_on.as_ref() == Some(json) {
                    return Ok(Value::Bool(true));
                }
                if expose.value_off.as_ref() == Some(json) {
                    return Ok(Value::Bool(false));
                }
            }
            match json {
                Json::Bool(value) => Ok(Value::Bool(*value)),
                Json::String(text) => ON_OFF
                    .iter()
                    .find_map(|(on, off)| {
                        if text.eq_ignore_ascii_case(on) {
                            Some(true)
                        } else if text.eq_ignore_ascii_case(off) {
                            Some(false)
                        } else {
                            None
                        }
                    })
                    .map(Value::Bool)
                    .ok_or_else(wrong),
                _ => Err(wrong()),
            }
        }
        PropertyType::Int => match json.as_i64() {
            Some(value) => Ok(Value::Int(value)),
            None => json
                .as_f64()
                .filter(|value| value.fract() == 0.0 && value.abs() < 9.0e15)
                .map(|value| Value::Int(value as i64))
                .ok_or_else(wrong),
        },
        PropertyType::Float => json.as_f64().map(Value::Float).ok_or_else(wrong),
        PropertyType::Text => Ok(Value::Text(match json {
            Json::String(text) => text.clone(),
            other => other.to_string(),
        })),
    }
}

/// A property the config does not name, kept as it came: `None` for JSON null.
pub fn raw_value(json: &Json) -> Option<Value> {
    match json {
        Json::Null => None,
        Json::Bool(value) => Some(Value::Bool(*value)),
        Json::Number(number) => Some(match number.as_i64() {
            Some(value) => Value::Int(value),
            None => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        }),
        Json::String(text) => Some(Value::Text(text.clone())),
        other => Some(Value::Text(other.to_string())),
    }
}

/// What a siren is sent when a command sets its `warning` point to true or false.
fn warning(on: bool) -> Json {
    if on {
        serde_json::json!({"mode": "emergency", "level": "very_high", "strobe": true, "duration": 600})
    } else {
        serde_json::json!({"mode": "stop"})
    }
}

/// The JSON value `/set` gets for `property` set to `value`.
pub fn set_value(property: &str, value: &Value, expose: Option<&Expose>) -> Result<Json, String> {
    Ok(match value {
        Value::Bool(on) if property == "warning" => warning(*on),
        Value::Bool(on) => {
            let named = expose
                .and_then(|expose| {
                    if *on {
                        expose.value_on.clone()
                    } else {
                        expose.value_off.clone()
                    }
                })
                .filter(Json::is_string);
            match (named, expose) {
                (Some(named), _) => named,
                // The expose says the property is a JSON true/false.
                (None, Some(expose)) if expose.value_on.as_ref().is_some_and(Json::is_boolean) => {
                    Json::Bool(*on)
                }
                (None, _) => Json::String(if *on { "ON" } else { "OFF" }.to_owned()),
            }
        }
        Value::Int(number) => Json::from(*number),
        Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(Json::Number)
            .ok_or_else(|| format!("{number} cannot be sent as JSON"))?,
        Value::Text(text) => Json::String(text.clone()),
    })
}

/// Whether zigbee2mqtt reports a property back after a `/set` (a siren's warning is not part
/// of its state).
pub fn is_reported_back(property: &str) -> bool {
    property != "warning"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::zigbee::tests::DEVICES;

    #[test]
    fn topics_are_told_apart_with_slashes_in_names() {
        let base = "zigbee2mqtt";
        assert_eq!(classify(base, "zigbee2mqtt/bridge/devices"), Topic::Devices);
        assert_eq!(
            classify(base, "zigbee2mqtt/bridge/state"),
            Topic::BridgeState
        );
        assert_eq!(classify(base, "zigbee2mqtt/bridge/logging"), Topic::Other);
        assert_eq!(
            classify(base, "zigbee2mqtt/lobby/door"),
            Topic::State("lobby/door")
        );
        assert_eq!(
            classify(base, "zigbee2mqtt/lobby/door/availability"),
            Topic::Availability("lobby/door")
        );
        assert_eq!(classify(base, "zigbee2mqtt/lobby/door/set"), Topic::Other);
        assert_eq!(
            classify(base, "zigbee2mqtt/lobby/door/set/state"),
            Topic::Other
        );
        assert_eq!(classify(base, "zigbee2mqtt/lobby/door/get"), Topic::Other);
        assert_eq!(classify(base, "zigbee2mqttx/door"), Topic::Other);
        assert_eq!(classify(base, "other/door"), Topic::Other);
    }

    #[test]
    fn the_device_list_gives_names_models_and_flattened_exposes() -> anyhow::Result<()> {
        let devices = parse_devices(DEVICES.as_bytes())?;
        assert_eq!(devices.len(), 3, "the coordinator is left out");
        let door = &devices[0];
        assert_eq!(door.friendly_name, "lobby/door");
        assert_eq!(door.model.as_deref(), Some("Xiaomi MCCGQ11LM"));
        assert_eq!(door.exposes["battery"].unit.as_deref(), Some("%"));
        let lock = &devices[1];
        let state = &lock.exposes["state"];
        assert_eq!(state.value_on, Some(Json::from("LOCK")));
        assert_eq!(state.access & ACCESS_SET, ACCESS_SET);
        assert!(lock.exposes.contains_key("lock_state"));
        assert_eq!(lock.exposes["warning"].kind, "composite");
        assert!(
            !lock.exposes.contains_key("mode"),
            "a composite's features are its own"
        );
        assert!(devices[2].exposes.is_empty());
        assert!(parse_devices(b"{\"not\":\"a list\"}").is_err());
        Ok(())
    }

    #[test]
    fn availability_takes_both_forms() {
        assert_eq!(parse_online(br#"{"state":"online"}"#), Some(true));
        assert_eq!(parse_online(br#"{"state":"offline"}"#), Some(false));
        assert_eq!(parse_online(b"online"), Some(true));
        assert_eq!(parse_online(b"offline"), Some(false));
        assert_eq!(parse_online(b""), None);
        assert_eq!(parse_online(br#"{"state":"maybe"}"#), None);
        assert_eq!(parse_online(&[0xff, 0xfe]), None);
    }

    #[test]
    fn values_follow_the_expose_and_the_configured_type() -> anyhow::Result<()> {
        let devices = parse_devices(DEVICES.as_bytes())?;
        let contact = devices[0].exposes.get("contact");
        let lock = devices[1].exposes.get("state");
        let read = |t, json: Json, expose| read_value(t, &json, expose);
        // The contact's expose has value_on false (open), but a JSON true/false is kept as
        // zigbee2mqtt's state says it: contact true is closed.
        assert_eq!(
            read(PropertyType::Bool, Json::from(false), contact),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            read(PropertyType::Bool, Json::from(true), contact),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            read(PropertyType::Bool, Json::from("LOCK"), lock),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            read(PropertyType::Bool, Json::from("UNLOCK"), lock),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            read(PropertyType::Bool, Json::from("ON"), None),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            read(PropertyType::Int, Json::from(91), None),
            Ok(Value::Int(91))
        );
        assert_eq!(
            read(PropertyType::Int, Json::from(91.0), None),
            Ok(Value::Int(91))
        );
        assert_eq!(
            read(PropertyType::Float, Json::from(21.5), None),
            Ok(Value::Float(21.5))
        );
        assert_eq!(
            read(PropertyType::Text, Json::from("single"), None),
            Ok(Value::Text("single".into()))
        );
        let wrong = read(PropertyType::Bool, Json::from("maybe"), None);
        assert!(
            matches!(&wrong, Err(message) if message.contains("\"maybe\"")),
            "{wrong:?}"
        );
        assert!(read(PropertyType::Int, Json::from(1.5), None).is_err());
        assert!(read(PropertyType::Float, Json::from("hot"), None).is_err());
        assert_eq!(raw_value(&Json::Null), None);
        assert_eq!(
            raw_value(&serde_json::json!({"state":"idle"})),
            Some(Value::Text(r#"{"state":"idle"}"#.into()))
        );
        Ok(())
    }

    #[test]
    fn set_payloads_use_the_devices_own_values() -> anyhow::Result<()> {
        let devices = parse_devices(DEVICES.as_bytes())?;
        let lock = devices[1].exposes.get("state");
        assert_eq!(
            set_value("state", &Value::Bool(true), lock),
            Ok(Json::from("LOCK"))
        );
        assert_eq!(
            set_value("state", &Value::Bool(false), lock),
            Ok(Json::from("UNLOCK"))
        );
        assert_eq!(
            set_value("state", &Value::Bool(true), None),
            Ok(Json::from("ON"))
        );
        let contact = devices[0].exposes.get("contact");
        assert_eq!(
            set_value("contact", &Value::Bool(true), contact),
            Ok(Json::from(true))
        );
        assert_eq!(
            set_value("warning", &Value::Bool(false), None),
            Ok(serde_json::json!({"mode": "stop"}))
        );
        assert_eq!(
            set_value("brightness", &Value::Int(7), None),
            Ok(Json::from(7))
        );
        assert!(set_value("x", &Value::Float(f64::NAN), None).is_err());
        assert!(!is_reported_back("warning"));
        Ok(())
    }

    #[test]
    fn a_state_message_must_be_an_object() {
        assert!(parse_state(br#"{"contact":true,"battery":91}"#).is_ok());
        let not_object = parse_state(b"[1,2]");
        assert!(
            matches!(&not_object, Err(m) if m.contains("an array")),
            "{not_object:?}"
        );
        let broken = parse_state(br#"{"contact":tru"#);
        assert!(
            matches!(&broken, Err(m) if m.starts_with("not JSON")),
            "{broken:?}"
        );
    }
}

//! `[[modbus.devices]]`: Modbus TCP devices and their points.

use std::collections::HashSet;

use gatehouse_protocol::{DeviceId, PointId, Value, ZoneId};
use gatehouse_rules::PointSpec;
use gatehouse_rules::expr::Type;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Problems, check_egress_lock, check_zone, egress_lock};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    #[serde(default)]
    pub devices: Vec<ModbusDeviceConfig>,
}

/// One Modbus TCP server (a PLC, an I/O module, a gateway's unit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    pub id: Spanned<DeviceId>,
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port`, e.g. `192.0.2.10:502`.
    pub address: Spanned<String>,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long one request may take before the connection is considered broken.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with jitter.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// The zone of every point of this device that does not name its own.
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    pub points: Vec<ModbusPointConfig>,
}

fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_scale() -> f64 {
    1.0
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coil,
    DiscreteInput,
    HoldingRegister,
    InputRegister,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::HoldingRegister)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::HoldingRegister => "holding_register",
            Table::InputRegister => "input_register",
        }
    }
}

/// How the bits or words at a point's address are read as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl DataType {
    /// How many 16-bit registers the type spans.
    pub fn words(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// The order of the two registers of a 32-bit value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word at the lower address (the Modbus convention).
    #[default]
    Big,
    /// Low word at the lower address ("word swapped").
    Little,
}

/// One point of a Modbus device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusPointConfig {
    pub id: Spanned<PointId>,
    pub table: Table,
    /// Protocol address (0-based) of the coil, input or first register.
    pub address: u16,
    /// Defaults to `bool` for coils and discrete inputs, `u16` for registers.
    #[serde(default, rename = "type")]
    pub data_type: Option<Spanned<DataType>>,
    #[serde(default)]
    pub word_order: WordOrder,
    /// value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub unit: Option<String>,
    /// A numeric change smaller than this is not reported (0 reports every change).
    #[serde(default)]
    pub deadband: f64,
    /// Whether commands may write this point (coils and holding registers only).
    #[serde(default)]
    pub writable: bool,
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    /// The point drives an egress door's lock, and writing this value locks it. While a
    /// life-safety rule is active nothing may write it (see docs/rules.md, "Fire interlock").
    #[serde(default)]
    pub egress_lock_value: Option<Spanned<toml::Value>>,
}

impl ModbusPointConfig {
    pub fn data_type(&self) -> DataType {
        match &self.data_type {
            Some(data_type) => *data_type.get_ref(),
            None if self.table.is_bits() => DataType::Bool,
            None => DataType::U16,
        }
    }

    /// The type of the values the point yields, as rules see it.
    pub fn value_type(&self) -> Type {
        match self.data_type() {
            DataType::Bool => Type::Bool,
            DataType::F32 => Type::Float,
            _ if self.is_unscaled() => Type::Int,
            _ => Type::Float,
        }
    }

    /// The configured egress lock value as a point value, if it fits the point's type.
    fn egress_lock(&self) -> Option<Result<Value, String>> {
        egress_lock(self.value_type(), self.egress_lock_value.as_ref())
    }

    /// Whether raw values pass through unchanged (integers stay integers).
    pub fn is_unscaled(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }
}

impl ModbusDeviceConfig {
    pub fn point_zone(&self, point: &ModbusPointConfig) -> Option<ZoneId> {
        point
            .zone
            .as_ref()
            .or(self.zone.as_ref())
            .map(|zone| zone.get_ref().clone())
    }
}

impl ModbusConfig {
    /// Every point, as the rules see it.
    pub fn rule_points(&self) -> Vec<PointSpec> {
        self.devices
            .iter()
            .flat_map(|device| {
                device.points.iter().map(move |point| PointSpec {
                    id: point.id.get_ref().clone(),
                    device: device.id.get_ref().clone(),
                    zone: device.point_zone(point),
                    value_type: point.value_type(),
                    writable: point.writable,
                    egress_locked: point.egress_lock().and_then(Result::ok),
                })
            })
            .collect()
    }

    /// Checks devices and points; device and point ids are checked for uniqueness across the
    /// site in `devices` and `points`.
    pub(crate) fn validate(
        &self,
        zones: &HashSet<ZoneId>,
        command_timeout_ms: u64,
        devices: &mut HashSet<DeviceId>,
        points: &mut HashSet<PointId>,
        problems: &mut Problems<'_>,
    ) {
        for device in &self.devices {
            let id = device.id.get_ref();
            if !devices.insert(id.clone()) {
                problems.at(device.id.span(), format!("device `{id}` is defined twice"));
            }
            check_zone(device.zone.as_ref(), zones, problems);
            let has_port = device
                .address
                .get_ref()
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port {
                problems.at(
                    device.address.span(),
                    format!(
                        "device `{id}`: address `{}` must be host:port, e.g. 192.0.2.10:502",
                        device.address.get_ref()
                    ),
                );
            }
            if device.unit_id == 0 {
                problems.at(
                    device.id.span(),
                    format!("device `{id}`: unit_id 0 is the broadcast address; use 1-255 (255 for a device addressed by IP only)"),
                );
            }
            if device
                .address
                .get_ref()
                .rsplit_once(':')
                .is_some_and(|(_, port)| port == "0")
            {
                problems.at(
                    device.address.span(),
                    format!("device `{id}`: port 0 is not a port"),
                );
            }
            if !(10..=86_400_000).contains(&device.poll_interval_ms) {
                problems.at(
                    device.id.span(),
                    format!("device `{id}`: poll_interval_ms must be between 10 and 86400000"),
                );
            }
            if device.timeout_ms == 0 || device.timeout_ms >= command_timeout_ms {
                problems.at(
                    device.id.span(),
                    format!(
                        "device `{id}`: timeout_ms must be at least 1 and below api.command_timeout_ms ({command_timeout_ms}), or every command would time out"
                    ),
                );
            }
            if device.reconnect_initial_ms < 50
                || device.reconnect_max_ms > 3_600_000
                || device.reconnect_max_ms < device.reconnect_initial_ms
            {
                problems.at(
                    device.id.span(),
                    format!(
                        "device `{id}`: need 50 ≤ reconnect_initial_ms ≤ reconnect_max_ms ≤ 3600000"
                    ),
                );
            }
            if device.points.is_empty() {
                problems.at(device.id.span(), format!("device `{id}` has no points"));
            }
            for point in &device.points {
                if !points.insert(point.id.get_ref().clone()) {
                    problems.at(
                        point.id.span(),
                        format!(
                            "point `{}` is defined twice; point ids are unique across the site",
                            point.id.get_ref()
                        ),
                    );
                }
                check_zone(point.zone.as_ref(), zones, problems);
                check_point(point, problems);
            }
        }
    }
}

fn check_point(point: &ModbusPointConfig, problems: &mut Problems) {
    let id = point.id.get_ref();
    let data_type = point.data_type();
    if point.table.is_bits() && data_type != DataType::Bool {
        let span = point
            .data_type
            .as_ref()
            .map_or_else(|| point.id.span(), Spanned::span);
        problems.at(
            span,
            format!(
                "point `{id}`: a {} holds one bit, so its type must be bool",
                point.table.as_str()
            ),
        );
    }
    if u32::from(point.address) + u32::from(data_type.words()) > 65536 {
        problems.at(
            point.id.span(),
            format!(
                "point `{id}`: a {data_type:?} at address {} runs past register 65535",
                point.address
            ),
        );
    }
    if point.writable && !point.table.is_writable() {
        problems.at(
            point.id.span(),
            format!(
                "point `{id}`: a {} is read-only; only coils and holding registers are writable",
                point.table.as_str()
            ),
        );
    }
    if !point.scale.is_finite() || point.scale == 0.0 || !point.offset.is_finite() {
        problems.at(
            point.id.span(),
            format!("point `{id}`: scale must be a non-zero number and offset a number"),
        );
    }
    if !point.deadband.is_finite() || point.deadband < 0.0 {
        problems.at(
            point.id.span(),
            format!("point `{id}`: deadband must be 0 or more"),
        );
    }
    check_egress_lock(
        id,
        point.writable,
        point.egress_lock_value.as_ref(),
        point.egress_lock(),
        problems,
    );
}

#[cfg(test)]
mod tests {
    use crate::config::section_tests::messages;

    #[test]
    fn a_valid_device_passes() {
        let found = messages(
            r#"
[[modbus.devices]]
id = "plc-1"
address = "127.0.0.1:502"
zone = "lobby"
[[modbus.devices.points]]
id = "door"
table = "discrete_input"
address = 0
[[modbus.devices.points]]
id = "temp"
table = "holding_register"
address = 10
type = "f32"
word_order = "little"
scale = 0.1
deadband = 0.5
writable = true
"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn point_mistakes_are_all_reported_with_lines() {
        let found = messages(
            r#"
[[modbus.devices]]
id = "plc-1"
address = "no-port"
[[modbus.devices.points]]
id = "a"
table = "coil"
address = 0
type = "u16"
[[modbus.devices.points]]
id = "a"
table = "input_register"
address = 65535
type = "u32"
writable = true
zone = "attic"
"#,
        );
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(found[0].starts_with("13: ") && found[0].contains("host:port"));
        assert!(found[1].starts_with("18: ") && found[1].contains("type must be bool"));
        // In file order: the second point's problems at its id (line 20), then its zone.
        assert!(found[2].starts_with("20: ") && found[2].contains("`a` is defined twice"));
        assert!(found[3].contains("runs past register 65535"));
        assert!(found[4].contains("read-only"));
        assert!(found[5].starts_with("25: ") && found[5].contains("zone `attic`"));
    }

    #[test]
    fn an_out_of_range_address_is_a_parse_error_with_its_line() {
        let found = messages(
            r#"
[[modbus.devices]]
id = "plc-1"
address = "127.0.0.1:502"
[[modbus.devices.points]]
id = "a"
table = "coil"
address = 70000
"#,
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("17: "), "{found:?}");
    }
}

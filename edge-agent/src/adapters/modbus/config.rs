//! `[[modbus.buses]]` and `[[modbus.devices]]`: serial (RTU) buses, Modbus devices and their
//! points. A device is reached either over TCP (`address = "host:port"`) or as one unit of a
//! serial bus (`bus = "..."` and its `unit_id`); its points are described the same way.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use gatehouse_protocol::{DeviceId, PointId, Value, ZoneId};
use gatehouse_rules::PointSpec;
use gatehouse_rules::expr::Type;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    Problems, check_deadband, check_egress_lock, check_reconnect, check_zone, egress_lock,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    #[serde(default)]
    pub buses: Vec<ModbusBusConfig>,
    #[serde(default)]
    pub devices: Vec<ModbusDeviceConfig>,
}

/// One serial RS-485 line driven as a Modbus RTU client. The agent owns the port: every unit
/// on it is asked in turn, never two at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusBusConfig {
    pub id: Spanned<String>,
    /// The serial device, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    pub port: Spanned<String>,
    /// Bits per second (the Modbus default is 19200).
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    /// `none`, `even` (the Modbus default) or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// Modbus RTU sends 8-bit bytes: 8 is the only value accepted (7 is Modbus ASCII).
    #[serde(default = "default_data_bits")]
    pub data_bits: Spanned<u8>,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: Spanned<u8>,
    /// First delay before reopening a port that failed; doubles up to `reconnect_max_ms`,
    /// with jitter.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

/// The parity bit of each character on a serial line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

impl ModbusBusConfig {
    /// Bits on the wire per byte: start bit, data bits, parity bit, stop bits.
    pub fn bits_per_character(&self) -> u32 {
        let parity = u32::from(self.parity != Parity::None);
        1 + u32::from(*self.data_bits.get_ref()) + parity + u32::from(*self.stop_bits.get_ref())
    }

    /// The silence that must separate two frames on the line: 3.5 character times, and a
    /// fixed 1.75 ms above 19200 baud (Modbus over serial line, 2.5.1.1).
    pub fn silent_interval(&self) -> Duration {
        let baud = *self.baud.get_ref();
        if baud > 19_200 || baud == 0 {
            return Duration::from_micros(1750);
        }
        let micros = u64::from(self.bits_per_character()) * 3_500_000 / u64::from(baud);
        Duration::from_micros(micros)
    }
}

/// One Modbus device: a TCP server (a PLC, an I/O module, a gateway's unit) or one unit of a
/// serial bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    pub id: Spanned<DeviceId>,
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port`, e.g. `192.0.2.10:502`, for a Modbus TCP device.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    /// The `[[modbus.buses]]` id of the serial bus of a Modbus RTU device.
    #[serde(default)]
    pub bus: Option<Spanned<String>>,
    /// The unit on the bus (1-247), or behind a TCP gateway.
    #[serde(default = "default_unit_id")]
    pub unit_id: Spanned<u8>,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long one request may take: past it a TCP connection is considered broken, a bus
    /// unit silent.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First reconnect delay (on a bus: first delay before asking a silent unit again);
    /// doubles up to `reconnect_max_ms`, with jitter.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// The zone of every point of this device that does not name its own.
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    pub points: Vec<ModbusPointConfig>,
}

fn default_unit_id() -> Spanned<u8> {
    Spanned::new(0..0, 1)
}
fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 19_200)
}
fn default_data_bits() -> Spanned<u8> {
    Spanned::new(0..0, 8)
}
fn default_stop_bits() -> Spanned<u8> {
    Spanned::new(0..0, 1)
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

    /// The bus a device is a unit of, if it is on one.
    pub fn bus_of(&self, device: &ModbusDeviceConfig) -> Option<&ModbusBusConfig> {
        let bus = device.bus.as_ref()?;
        self.buses.iter().find(|b| b.id.get_ref() == bus.get_ref())
    }

    /// How the API describes a device's link: its protocol and address.
    pub fn link_of(&self, device: &ModbusDeviceConfig) -> (&'static str, String) {
        match (&device.address, self.bus_of(device)) {
            (Some(address), _) => ("modbus_tcp", address.get_ref().clone()),
            (None, Some(bus)) => (
                "modbus_rtu",
                format!("{} unit {}", bus.port.get_ref(), device.unit_id.get_ref()),
            ),
            (None, None) => ("modbus_tcp", String::new()),
        }
    }

    /// The devices on each bus, in file order.
    pub fn bus_devices(&self, bus: &ModbusBusConfig) -> Vec<ModbusDeviceConfig> {
        self.devices
            .iter()
            .filter(|d| {
                d.bus
                    .as_ref()
                    .is_some_and(|b| b.get_ref() == bus.id.get_ref())
            })
            .cloned()
            .collect()
    }

    /// Checks the buses; returns them by id.
    fn validate_buses(&self, problems: &mut Problems<'_>) -> HashMap<&str, &ModbusBusConfig> {
        let mut buses = HashMap::new();
        for bus in &self.buses {
            let id = bus.id.get_ref();
            if buses.insert(id.as_str(), bus).is_some() {
                problems.at(bus.id.span(), format!("bus `{id}` is defined twice"));
            }
            if bus.port.get_ref().trim().is_empty() {
                problems.at(
                    bus.port.span(),
                    format!("bus `{id}`: port must name a serial device, e.g. /dev/ttyUSB0"),
                );
            }
            let baud = *bus.baud.get_ref();
            if !(300..=4_000_000).contains(&baud) {
                problems.at(
                    span_or(&bus.baud, &bus.id),
                    format!("bus `{id}`: baud {baud} is not a serial speed; use 300-4000000, e.g. 9600 or 19200"),
                );
            }
            match *bus.data_bits.get_ref() {
                8 => {}
                7 => problems.at(
                    bus.data_bits.span(),
                    format!("bus `{id}`: Modbus RTU needs 8 data bits (7 data bits is Modbus ASCII, which the agent does not speak)"),
                ),
                other => problems.at(
                    bus.data_bits.span(),
                    format!("bus `{id}`: data_bits {other} is not possible; Modbus RTU uses 8"),
                ),
            }
            if !matches!(*bus.stop_bits.get_ref(), 1 | 2) {
                problems.at(
                    bus.stop_bits.span(),
                    format!("bus `{id}`: stop_bits must be 1 or 2"),
                );
            }
            if !check_reconnect(bus.reconnect_initial_ms, bus.reconnect_max_ms) {
                problems.at(
                    bus.id.span(),
                    format!(
                        "bus `{id}`: need 50 ≤ reconnect_initial_ms ≤ reconnect_max_ms ≤ 3600000"
                    ),
                );
            }
            let used = self
                .devices
                .iter()
                .any(|d| d.bus.as_ref().is_some_and(|b| b.get_ref() == id));
            if !used {
                problems.at(
                    bus.id.span(),
                    format!("bus `{id}` has no devices: add [[modbus.devices]] with bus = \"{id}\" and a unit_id"),
                );
            }
        }
        buses
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
        let buses = self.validate_buses(problems);
        let mut units = HashMap::new();
        for device in &self.devices {
            let id = device.id.get_ref();
            if !devices.insert(id.clone()) {
                problems.at(device.id.span(), format!("device `{id}` is defined twice"));
            }
            check_zone(device.zone.as_ref(), zones, problems);
            match (&device.address, &device.bus) {
                (Some(address), None) => check_tcp_address(device, address, problems),
                (None, Some(bus)) => match buses.get(bus.get_ref().as_str()) {
                    None => problems.at(
                        bus.span(),
                        format!(
                            "device `{id}`: bus `{}` is not defined in [[modbus.buses]]",
                            bus.get_ref()
                        ),
                    ),
                    Some(_) => {
                        let unit = *device.unit_id.get_ref();
                        let span = span_or(&device.unit_id, &device.id);
                        if !(1..=247).contains(&unit) {
                            problems.at(
                                span,
                                format!("device `{id}`: unit_id {unit} cannot be polled on a serial bus; use 1-247 (0 is broadcast, 248-255 are reserved)"),
                            );
                        } else if let Some(other) =
                            units.insert((bus.get_ref().as_str(), unit), id)
                        {
                            problems.at(
                                span,
                                format!("device `{id}`: unit_id {unit} is already device `{other}` on bus `{}`; each unit on a bus needs its own id", bus.get_ref()),
                            );
                        }
                    }
                },
                (Some(_), Some(bus)) => problems.at(
                    bus.span(),
                    format!("device `{id}`: give either address (Modbus TCP) or bus (Modbus RTU), not both"),
                ),
                (None, None) => problems.at(
                    device.id.span(),
                    format!("device `{id}` needs address = \"host:port\" (Modbus TCP) or bus = \"BUS-ID\" (Modbus RTU)"),
                ),
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
            if !check_reconnect(device.reconnect_initial_ms, device.reconnect_max_ms) {
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

/// `host:port` with a real port, and a unit id a TCP device can have.
fn check_tcp_address(
    device: &ModbusDeviceConfig,
    address: &Spanned<String>,
    problems: &mut Problems,
) {
    let id = device.id.get_ref();
    let has_port = address
        .get_ref()
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        problems.at(
            address.span(),
            format!(
                "device `{id}`: address `{}` must be host:port, e.g. 192.0.2.10:502",
                address.get_ref()
            ),
        );
    }
    if *device.unit_id.get_ref() == 0 {
        problems.at(
            span_or(&device.unit_id, &device.id),
            format!("device `{id}`: unit_id 0 is the broadcast address; use 1-255 (255 for a device addressed by IP only)"),
        );
    }
    if address
        .get_ref()
        .rsplit_once(':')
        .is_some_and(|(_, port)| port == "0")
    {
        problems.at(
            address.span(),
            format!("device `{id}`: port 0 is not a port"),
        );
    }
}

/// The span of a value, or of `fallback` when the value is a default (not in the file).
fn span_or<T, U>(value: &Spanned<T>, fallback: &Spanned<U>) -> std::ops::Range<usize> {
    if value.span().is_empty() {
        fallback.span()
    } else {
        value.span()
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
    check_deadband(id, point.deadband, point.id.span(), problems);
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
    use crate::config::section_tests::{BASE, messages};

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

    const BUS: &str = r#"
[[modbus.buses]]
id = "rs485-1"
port = "/dev/ttyUSB0"
baud = 9600
parity = "none"
stop_bits = 2
"#;

    fn rtu_device(id: &str, settings: &str) -> String {
        format!(
            "\n[[modbus.devices]]\nid = \"{id}\"\n{settings}\n[[modbus.devices.points]]\nid = \"{id}.p\"\ntable = \"coil\"\naddress = 0\n"
        )
    }

    #[test]
    fn units_of_a_bus_pass_and_describe_their_link() {
        let source = format!(
            "{BASE}{BUS}{}{}",
            rtu_device("meter", "bus = \"rs485-1\"\nunit_id = 2"),
            rtu_device("plc", "address = \"192.0.2.10:502\""),
        );
        let config = crate::config::Config::parse(&source).unwrap_or_else(|p| panic!("{p:?}"));
        let modbus = &config.modbus;
        let bus = &modbus.buses[0];
        assert_eq!(*bus.baud.get_ref(), 9600);
        assert_eq!(bus.parity, super::Parity::None);
        assert_eq!(*bus.stop_bits.get_ref(), 2);
        let on_bus: Vec<String> = modbus
            .bus_devices(bus)
            .iter()
            .map(|d| d.id.get_ref().to_string())
            .collect();
        assert_eq!(on_bus, ["meter"]);
        assert_eq!(
            modbus.link_of(&modbus.devices[0]),
            ("modbus_rtu", "/dev/ttyUSB0 unit 2".to_owned())
        );
        assert_eq!(
            modbus.link_of(&modbus.devices[1]),
            ("modbus_tcp", "192.0.2.10:502".to_owned())
        );
    }

    #[test]
    fn bus_and_unit_mistakes_are_all_reported_with_lines() {
        let buses = r#"
[[modbus.buses]]
id = "a"
port = ""
baud = 12
data_bits = 7
stop_bits = 3
[[modbus.buses]]
id = "a"
port = "/dev/ttyS1"
"#;
        let devices = [
            rtu_device("one", "bus = \"a\"\nunit_id = 5"),
            rtu_device("two", "bus = \"a\"\nunit_id = 5"),
            rtu_device("three", "bus = \"a\"\nunit_id = 248"),
            rtu_device("four", "bus = \"nowhere\""),
            rtu_device("five", "bus = \"a\"\naddress = \"127.0.0.1:502\""),
            rtu_device("six", ""),
        ]
        .concat();
        let found = messages(&format!("{buses}{devices}"));
        let expected = [
            (13, "port must name a serial device"),
            (14, "baud 12 is not a serial speed"),
            (15, "7 data bits is Modbus ASCII"),
            (16, "stop_bits must be 1 or 2"),
            (18, "bus `a` is defined twice"),
            (33, "unit_id 5 is already device `one` on bus `a`"),
            (42, "unit_id 248 cannot be polled"),
            (50, "bus `nowhere` is not defined"),
            (
                58,
                "either address (Modbus TCP) or bus (Modbus RTU), not both",
            ),
            (66, "needs address = \"host:port\" (Modbus TCP) or bus"),
        ];
        let found_all = &found;
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, (line, text)) in found.iter().zip(expected) {
            assert!(
                found.starts_with(&format!("{line}: ")) && found.contains(text),
                "expected line {line} `{text}`, found `{found}` in {found_all:#?}"
            );
        }
    }

    #[test]
    fn a_wrong_parity_is_a_parse_error_with_its_line() {
        let found = messages(&format!(
            "{}{}",
            BUS.replace("\"none\"", "\"mark\""),
            rtu_device("d", "bus = \"rs485-1\"")
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("15: "), "{found:?}");
        assert!(found[0].contains("`none`, `even`"), "{found:?}");
    }

    #[test]
    fn a_bus_without_devices_is_refused() {
        let found = messages(BUS);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("12: ") && found[0].contains("has no devices"));
    }
}

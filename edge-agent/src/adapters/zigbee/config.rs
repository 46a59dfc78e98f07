//! `[[zigbee.bridges]]` and `[[zigbee.devices]]`: zigbee2mqtt bridges, and the Zigbee devices
//! behind them with their points.

use std::collections::HashSet;
use std::path::PathBuf;

use gatehouse_protocol::{DeviceId, PointId, Value, ZoneId};
use gatehouse_rules::PointSpec;
use gatehouse_rules::expr::Type;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Problems, check_egress_lock, check_reconnect, check_zone, egress_lock};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZigbeeConfig {
    #[serde(default)]
    pub bridges: Vec<BridgeConfig>,
    #[serde(default)]
    pub devices: Vec<ZigbeeDeviceConfig>,
}

/// One zigbee2mqtt instance: the MQTT broker it publishes to and its base topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub id: Spanned<String>,
    /// `mqtt://host:port` or, with TLS 1.3, `mqtts://host:port`.
    pub broker: Spanned<String>,
    /// zigbee2mqtt's `mqtt.base_topic`.
    #[serde(default = "default_base_topic")]
    pub base_topic: Spanned<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the broker password (kept out of the config so the config can be
    /// shared; never logged).
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    /// The CA certificates (PEM) that sign an `mqtts://` broker's certificate; the system's
    /// roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and key (PEM), for brokers that ask for one.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// How long a command waits for zigbee2mqtt to report the new state before it is called
    /// unconfirmed.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

fn default_base_topic() -> Spanned<String> {
    Spanned::new(0..0, "zigbee2mqtt".to_owned())
}
fn default_confirm_timeout_ms() -> u64 {
    3000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// Where a broker listens and whether TLS is spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BridgeConfig {
    /// The broker's address, or what is wrong with it.
    pub fn broker_address(&self) -> Result<BrokerAddress, String> {
        let url = self.broker.get_ref();
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "broker `{url}` must start with mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) if port != 0 => (host, port),
                _ => return Err(format!("broker `{url}`: `{port}` is not a port")),
            },
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("broker `{url}` has no host"));
        }
        Ok(BrokerAddress {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            tls,
        })
    }
}

/// One Zigbee device, found in zigbee2mqtt's device list by its IEEE address (which survives
/// a rename) or by its friendly name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZigbeeDeviceConfig {
    pub id: Spanned<DeviceId>,
    #[serde(default)]
    pub name: Option<String>,
    /// The bridge's id; may be left out when there is one bridge.
    #[serde(default)]
    pub bridge: Option<Spanned<String>>,
    /// `0x` and 16 hex digits, as zigbee2mqtt shows it.
    #[serde(default)]
    pub ieee_address: Option<Spanned<String>>,
    #[serde(default)]
    pub friendly_name: Option<Spanned<String>>,
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    pub points: Vec<ZigbeePointConfig>,
}

impl ZigbeeDeviceConfig {
    pub fn point_zone(&self, point: &ZigbeePointConfig) -> Option<ZoneId> {
        point
            .zone
            .as_ref()
            .or(self.zone.as_ref())
            .map(|zone| zone.get_ref().clone())
    }

    /// How the config names the device, for messages.
    pub fn describe(&self) -> String {
        match (&self.ieee_address, &self.friendly_name) {
            (Some(ieee), _) => format!("IEEE address {}", ieee.get_ref()),
            (None, Some(name)) => format!("friendly name `{}`", name.get_ref()),
            (None, None) => "nothing".to_owned(),
        }
    }
}

/// The types a zigbee2mqtt property can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyType {
    Bool,
    Int,
    Float,
    Text,
}

impl PropertyType {
    pub fn rule_type(self) -> Type {
        match self {
            PropertyType::Bool => Type::Bool,
            PropertyType::Int => Type::Int,
            PropertyType::Float => Type::Float,
            PropertyType::Text => Type::Text,
        }
    }
}

/// What a property that matters for security is, when the config does not say: its type and
/// unit, as zigbee2mqtt's exposes document them.
pub fn known_property(property: &str) -> Option<(PropertyType, Option<&'static str>)> {
    use PropertyType::{Bool, Float, Int, Text};
    Some(match property {
        "contact" | "occupancy" | "presence" | "tamper" | "water_leak" | "smoke" | "gas"
        | "carbon_monoxide" | "vibration" | "battery_low" | "alarm" | "state" | "warning" => {
            (Bool, None)
        }
        "action" | "lock_state" => (Text, None),
        "battery" | "humidity" => (if property == "battery" { Int } else { Float }, Some("%")),
        "temperature" => (Float, Some("°C")),
        "illuminance" | "illuminance_lux" => (Int, Some("lx")),
        "pressure" => (Float, Some("hPa")),
        "co2" => (Int, Some("ppm")),
        "voltage" => (Int, Some("mV")),
        "linkquality" => (Int, Some("lqi")),
        _ => return None,
    })
}

/// One point: a property of the device's state messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZigbeePointConfig {
    pub id: Spanned<PointId>,
    /// The key in zigbee2mqtt's state message (`contact`, `occupancy`, `state`, ...).
    pub property: Spanned<String>,
    /// Needed for properties Gatehouse does not know (see docs/zigbee.md).
    #[serde(default, rename = "type")]
    pub value_type: Option<Spanned<PropertyType>>,
    #[serde(default)]
    pub unit: Option<String>,
    /// Whether commands may set it (through `{base}/{friendly_name}/set`).
    #[serde(default)]
    pub writable: bool,
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    /// The point drives an egress door's lock, and writing this value locks it (see
    /// docs/rules.md, "Fire interlock").
    #[serde(default)]
    pub egress_lock_value: Option<Spanned<toml::Value>>,
}

impl ZigbeePointConfig {
    /// The configured type, else the known one.
    pub fn property_type(&self) -> Option<PropertyType> {
        match &self.value_type {
            Some(value_type) => Some(*value_type.get_ref()),
            None => known_property(self.property.get_ref()).map(|(value_type, _)| value_type),
        }
    }

    pub fn unit(&self) -> Option<String> {
        self.unit.clone().or_else(|| {
            known_property(self.property.get_ref())
                .and_then(|(_, unit)| unit)
                .map(str::to_owned)
        })
    }

    fn rule_type(&self) -> Type {
        self.property_type()
            .map_or(Type::Text, PropertyType::rule_type)
    }

    fn egress_lock(&self) -> Option<Result<Value, String>> {
        egress_lock(self.rule_type(), self.egress_lock_value.as_ref())
    }
}

impl ZigbeeConfig {
    /// Every point, as the rules see it.
    pub fn rule_points(&self) -> Vec<PointSpec> {
        self.devices
            .iter()
            .flat_map(|device| {
                device.points.iter().map(move |point| PointSpec {
                    id: point.id.get_ref().clone(),
                    device: device.id.get_ref().clone(),
                    zone: device.point_zone(point),
                    value_type: point.rule_type(),
                    writable: point.writable,
                    egress_locked: point.egress_lock().and_then(Result::ok),
                })
            })
            .collect()
    }

    /// The id of the bridge `device` belongs to (the only one when it names none).
    pub fn bridge_of<'a>(&'a self, device: &'a ZigbeeDeviceConfig) -> Option<&'a str> {
        match &device.bridge {
            Some(bridge) => Some(bridge.get_ref()),
            None if self.bridges.len() == 1 => Some(self.bridges[0].id.get_ref()),
            None => None,
        }
    }

    /// Checks bridges, devices and points; device and point ids are checked for uniqueness
    /// across the site in `devices` and `points`.
    pub(crate) fn validate(
        &self,
        zones: &HashSet<ZoneId>,
        devices: &mut HashSet<DeviceId>,
        points: &mut HashSet<PointId>,
        problems: &mut Problems<'_>,
    ) {
        let mut bridges = HashSet::new();
        for bridge in &self.bridges {
            self.check_bridge(bridge, &mut bridges, problems);
        }
        let mut ieee_addresses = HashSet::new();
        for device in &self.devices {
            let id = device.id.get_ref();
            if !devices.insert(id.clone()) {
                problems.at(device.id.span(), format!("device `{id}` is defined twice"));
            }
            check_zone(device.zone.as_ref(), zones, problems);
            match (&device.bridge, self.bridge_of(device)) {
                (Some(bridge), _) if !bridges.contains(bridge.get_ref().as_str()) => problems.at(
                    bridge.span(),
                    format!(
                        "device `{id}`: bridge `{}` is not defined in [[zigbee.bridges]]",
                        bridge.get_ref()
                    ),
                ),
                (None, None) => problems.at(
                    device.id.span(),
                    format!(
                        "device `{id}`: say which bridge it is on (bridge = \"...\"); there are {} in [[zigbee.bridges]]",
                        self.bridges.len()
                    ),
                ),
                _ => {}
            }
            match (&device.ieee_address, &device.friendly_name) {
                (None, None) => problems.at(
                    device.id.span(),
                    format!("device `{id}`: give its ieee_address (preferred: it survives a rename) or its friendly_name"),
                ),
                (Some(ieee), _) if !is_ieee_address(ieee.get_ref()) => problems.at(
                    ieee.span(),
                    format!(
                        "device `{id}`: ieee_address `{}` must be 0x and 16 hex digits, as zigbee2mqtt shows it",
                        ieee.get_ref()
                    ),
                ),
                (Some(ieee), _) if !ieee_addresses.insert(ieee.get_ref().to_lowercase()) => {
                    problems.at(
                        ieee.span(),
                        format!(
                            "device `{id}`: ieee_address {} is given to another device too",
                            ieee.get_ref()
                        ),
                    )
                }
                _ => {}
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

    fn check_bridge<'a>(
        &self,
        bridge: &'a BridgeConfig,
        bridges: &mut HashSet<&'a str>,
        problems: &mut Problems<'_>,
    ) {
        let id = bridge.id.get_ref();
        if id.is_empty() || !bridges.insert(id.as_str()) {
            problems.at(
                bridge.id.span(),
                format!("bridge `{id}` is empty or defined twice"),
            );
        }
        if let Err(message) = bridge.broker_address() {
            problems.at(bridge.broker.span(), format!("bridge `{id}`: {message}"));
        }
        let base = bridge.base_topic.get_ref();
        if base.is_empty() || base.contains(['+', '#']) || base.ends_with('/') {
            problems.at(
                bridge.base_topic.span(),
                format!("bridge `{id}`: base_topic `{base}` must be a topic without wildcards or a trailing /, e.g. zigbee2mqtt"),
            );
        }
        if bridge.client_cert_file.is_some() != bridge.client_key_file.is_some() {
            problems.at(
                bridge.id.span(),
                format!("bridge `{id}`: client_cert_file and client_key_file go together"),
            );
        }
        if bridge.password_file.is_some() && bridge.username.is_none() {
            problems.at(
                bridge.id.span(),
                format!("bridge `{id}`: a password_file needs a username"),
            );
        }
        if !(100..=60_000).contains(&bridge.confirm_timeout_ms) {
            problems.at(
                bridge.id.span(),
                format!("bridge `{id}`: confirm_timeout_ms must be between 100 and 60000"),
            );
        }
        if !check_reconnect(bridge.reconnect_initial_ms, bridge.reconnect_max_ms) {
            problems.at(
                bridge.id.span(),
                format!(
                    "bridge `{id}`: need 50 ≤ reconnect_initial_ms ≤ reconnect_max_ms ≤ 3600000"
                ),
            );
        }
    }
}

fn is_ieee_address(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|hex| hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_point(point: &ZigbeePointConfig, problems: &mut Problems) {
    let id = point.id.get_ref();
    let property = point.property.get_ref();
    if property.is_empty() || property.contains(['/', '+', '#']) {
        problems.at(
            point.property.span(),
            format!(
                "point `{id}`: property `{property}` is not a key of a zigbee2mqtt state message"
            ),
        );
    }
    if point.property_type().is_none() {
        problems.at(
            point.property.span(),
            format!(
                "point `{id}`: Gatehouse does not know the type of `{property}`; add type = \"bool\", \"int\", \"float\" or \"text\""
            ),
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
    use crate::config::Config;
    use crate::config::section_tests::{BASE, assert_problems, messages};

    #[test]
    fn a_bridge_with_devices_by_address_and_by_name_passes() -> anyhow::Result<()> {
        let source = format!(
            "{BASE}{}",
            r#"
[[zigbee.bridges]]
id = "z2m"
broker = "mqtts://broker.local"
username = "gatehouse"
password_file = "/etc/gatehouse/z2m.password"
[[zigbee.devices]]
id = "door-lobby"
ieee_address = "0x00158D0001A2B3C4"
zone = "lobby"
[[zigbee.devices.points]]
id = "door.lobby.contact"
property = "contact"
[[zigbee.devices.points]]
id = "door.lobby.battery"
property = "battery"
[[zigbee.devices]]
id = "lock-lobby"
friendly_name = "lobby/lock"
[[zigbee.devices.points]]
id = "lock.lobby"
property = "state"
writable = true
egress_lock_value = true
[[zigbee.devices.points]]
id = "lock.lobby.code"
property = "last_used_pin"
type = "text"
"#
        );
        let config = Config::parse(&source).map_err(|p| anyhow::anyhow!("{p:?}"))?;
        let address = config.zigbee.bridges[0]
            .broker_address()
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            (address.host.as_str(), address.port, address.tls),
            ("broker.local", 8883, true)
        );
        assert_eq!(config.zigbee.bridges[0].base_topic.get_ref(), "zigbee2mqtt");
        let points = config.zigbee.rule_points();
        assert_eq!(points.len(), 4);
        assert_eq!(points[1].value_type, gatehouse_rules::expr::Type::Int);
        assert_eq!(
            points[2].egress_locked,
            Some(gatehouse_protocol::Value::Bool(true))
        );
        assert_eq!(
            config.zigbee.devices[0].points[1].unit().as_deref(),
            Some("%")
        );
        Ok(())
    }

    #[test]
    fn the_example_in_the_docs_is_a_valid_config() {
        let page = include_str!("../../../../docs/zigbee.md");
        let example = page
            .split("```toml")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_default();
        assert!(example.contains("[[zigbee.bridges]]"));
        let found = messages(example);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn zigbee_mistakes_are_all_reported_with_lines() {
        let found = messages(
            r#"
[[zigbee.bridges]]
id = "a"
broker = "tcp://127.0.0.1:1883"
base_topic = "z2m/#"
[[zigbee.bridges]]
id = "b"
broker = "mqtt://127.0.0.1:0"
password_file = "/p"
[[zigbee.devices]]
id = "door"
ieee_address = "0x123"
[[zigbee.devices.points]]
id = "door.contact"
property = "contact"
[[zigbee.devices]]
id = "sensor"
bridge = "c"
[[zigbee.devices.points]]
id = "door.contact"
property = "mystery"
"#,
        );
        let expected = [
            (13, "must start with mqtt://"),
            (14, "without wildcards"),
            (16, "password_file needs a username"),
            (17, "not a port"),
            (20, "say which bridge"),
            (21, "must be 0x and 16 hex digits"),
            (26, "ieee_address (preferred"),
            (27, "bridge `c` is not defined"),
            (29, "`door.contact` is defined twice"),
            (30, "does not know the type of `mystery`"),
        ];
        assert_problems(&found, &expected);
    }
}

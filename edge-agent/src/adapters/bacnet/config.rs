//! `[bacnet]` and `[[bacnet.devices]]`: the agent's BACnet/IP port, and the BACnet devices
//! with their points.

use std::collections::HashSet;
use std::net::SocketAddr;

use gatehouse_bacnet::{ObjectIdentifier, ObjectType};
use gatehouse_protocol::{DeviceId, PointId, Value, ZoneId};
use gatehouse_rules::PointSpec;
use gatehouse_rules::expr::Type;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    Problems, check_deadband, check_device_id, check_egress_lock, check_point_id, check_zone,
    egress_lock,
};

/// The agent's one BACnet/IP port, shared by every BACnet device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacnetConfig {
    /// The local UDP `address:port` the agent sends from and listens on.
    #[serde(default = "default_bind")]
    pub bind: Spanned<String>,
    /// Where Who-Is goes for devices without an `address` (no BBMD): the subnet's broadcast.
    #[serde(default = "default_broadcast")]
    pub broadcast: Spanned<String>,
    /// A BBMD `host:port` to register with as a foreign device (routed sites).
    #[serde(default)]
    pub bbmd: Option<Spanned<String>>,
    /// The time-to-live asked of the BBMD; the agent registers again at half of it.
    #[serde(default = "default_bbmd_ttl_s")]
    pub bbmd_ttl_s: u16,
    /// How long one confirmed request waits for its answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often a request is sent again after a timeout before the device is called silent.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First delay before an offline device is looked for again; doubles, with jitter.
    #[serde(default = "default_rediscover_initial_ms")]
    pub rediscover_initial_ms: u64,
    #[serde(default = "default_rediscover_max_ms")]
    pub rediscover_max_ms: u64,
    #[serde(default)]
    pub devices: Vec<BacnetDeviceConfig>,
}

impl Default for BacnetConfig {
    fn default() -> Self {
        BacnetConfig {
            bind: default_bind(),
            broadcast: default_broadcast(),
            bbmd: None,
            bbmd_ttl_s: default_bbmd_ttl_s(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            rediscover_initial_ms: default_rediscover_initial_ms(),
            rediscover_max_ms: default_rediscover_max_ms(),
            devices: Vec::new(),
        }
    }
}

fn default_bind() -> Spanned<String> {
    Spanned::new(0..0, "0.0.0.0:47808".to_owned())
}
fn default_broadcast() -> Spanned<String> {
    Spanned::new(0..0, "255.255.255.255:47808".to_owned())
}
fn default_bbmd_ttl_s() -> u16 {
    300
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_retries() -> u32 {
    2
}
fn default_rediscover_initial_ms() -> u64 {
    1000
}
fn default_rediscover_max_ms() -> u64 {
    60_000
}
fn default_poll_interval_ms() -> u64 {
    5000
}
fn default_cov_lifetime_s() -> u32 {
    300
}
fn default_priority() -> u8 {
    8
}

/// One BACnet device, known by its device instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacnetDeviceConfig {
    pub id: Spanned<DeviceId>,
    #[serde(default)]
    pub name: Option<String>,
    /// The device object's instance number (0 to 4194302).
    pub device_instance: Spanned<u32>,
    /// `host:port`; when absent the device is found by a broadcast Who-Is.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Subscribe to changes of value (SubscribeCOV) besides polling.
    #[serde(default)]
    pub cov: bool,
    /// Ask for ConfirmedCOVNotifications (acknowledged) rather than unconfirmed ones.
    #[serde(default)]
    pub cov_confirmed: bool,
    /// The lifetime asked for each subscription; renewed at half of it.
    #[serde(default = "default_cov_lifetime_s")]
    pub cov_lifetime_s: u32,
    /// The zone of every point of this device that does not name its own.
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    pub points: Vec<BacnetPointConfig>,
}

impl BacnetDeviceConfig {
    pub fn point_zone(&self, point: &BacnetPointConfig) -> Option<ZoneId> {
        point
            .zone
            .as_ref()
            .or(self.zone.as_ref())
            .map(|zone| zone.get_ref().clone())
    }

    /// The configured address, if it parses.
    pub fn socket_address(&self) -> Option<SocketAddr> {
        self.address.as_ref().and_then(|a| a.get_ref().parse().ok())
    }

    /// How the API shows where the device is.
    pub fn describe(&self) -> String {
        let instance = self.device_instance.get_ref();
        match &self.address {
            Some(address) => format!("device {instance} at {}", address.get_ref()),
            None => format!("device {instance} (found by Who-Is)"),
        }
    }
}

/// The types a BACnet present-value is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointType {
    Bool,
    Int,
    Float,
}

impl PointType {
    fn rule_type(self) -> Type {
        match self {
            PointType::Bool => Type::Bool,
            PointType::Int => Type::Int,
            PointType::Float => Type::Float,
        }
    }
}

/// The object types a point can be: analog, binary and multi-state inputs, outputs and values.
const OBJECT_TYPES: [ObjectType; 9] = [
    ObjectType::ANALOG_INPUT,
    ObjectType::ANALOG_OUTPUT,
    ObjectType::ANALOG_VALUE,
    ObjectType::BINARY_INPUT,
    ObjectType::BINARY_OUTPUT,
    ObjectType::BINARY_VALUE,
    ObjectType::MULTI_STATE_INPUT,
    ObjectType::MULTI_STATE_OUTPUT,
    ObjectType::MULTI_STATE_VALUE,
];

/// `analog-input:1` as an object identifier, or what is wrong with it.
pub fn parse_object(text: &str) -> Result<ObjectIdentifier, String> {
    let names: Vec<&str> = OBJECT_TYPES.iter().filter_map(|t| t.name()).collect();
    let Some((kind, instance)) = text.split_once(':') else {
        return Err(format!(
            "object `{text}` must be TYPE:INSTANCE, e.g. analog-input:1 (types: {})",
            names.join(", ")
        ));
    };
    let Some(object_type) = OBJECT_TYPES.iter().find(|t| t.name() == Some(kind)) else {
        return Err(format!(
            "object type `{kind}` is not one of {}",
            names.join(", ")
        ));
    };
    match instance.parse::<u32>() {
        Ok(instance) if instance < ObjectIdentifier::MAX_INSTANCE => {
            Ok(ObjectIdentifier::new(*object_type, instance))
        }
        _ => Err(format!(
            "object `{text}`: the instance must be a number from 0 to {}",
            ObjectIdentifier::MAX_INSTANCE - 1
        )),
    }
}

/// Analog, binary or multi-state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Analog,
    Binary,
    MultiState,
}

pub fn family(object_type: ObjectType) -> Family {
    match object_type {
        ObjectType::BINARY_INPUT | ObjectType::BINARY_OUTPUT | ObjectType::BINARY_VALUE => {
            Family::Binary
        }
        ObjectType::MULTI_STATE_INPUT
        | ObjectType::MULTI_STATE_OUTPUT
        | ObjectType::MULTI_STATE_VALUE => Family::MultiState,
        _ => Family::Analog,
    }
}

/// Whether present-value of the type can be commanded (outputs and values, not inputs).
fn is_commandable(object_type: ObjectType) -> bool {
    !matches!(
        object_type,
        ObjectType::ANALOG_INPUT | ObjectType::BINARY_INPUT | ObjectType::MULTI_STATE_INPUT
    )
}

/// One point: the present-value of one object of the device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacnetPointConfig {
    pub id: Spanned<PointId>,
    /// `TYPE:INSTANCE`, e.g. `analog-input:1`, `binary-output:3`, `multi-state-value:2`.
    pub object: Spanned<String>,
    /// Defaults by object type: analog → float, binary → bool, multi-state → int.
    #[serde(default, rename = "type")]
    pub value_type: Option<Spanned<PointType>>,
    #[serde(default)]
    pub unit: Option<String>,
    /// Whether commands may write present-value (outputs and values only).
    #[serde(default)]
    pub writable: bool,
    /// The priority-array slot commands write at (1 to 16).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// A numeric change smaller than this is not reported (0 reports every change).
    #[serde(default)]
    pub deadband: f64,
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    /// The point drives an egress door's lock, and writing this value locks it (see
    /// docs/rules.md, "Fire interlock").
    #[serde(default)]
    pub egress_lock_value: Option<Spanned<toml::Value>>,
}

impl BacnetPointConfig {
    /// The object, when `object` is valid (validation guarantees it in a loaded config).
    pub fn object_identifier(&self) -> Option<ObjectIdentifier> {
        parse_object(self.object.get_ref()).ok()
    }

    pub fn point_type(&self) -> PointType {
        if let Some(value_type) = &self.value_type {
            return *value_type.get_ref();
        }
        match self.object_identifier().map(|o| family(o.object_type)) {
            Some(Family::Binary) => PointType::Bool,
            Some(Family::MultiState) => PointType::Int,
            Some(Family::Analog) | None => PointType::Float,
        }
    }

    fn egress_lock(&self) -> Option<Result<Value, String>> {
        egress_lock(
            self.point_type().rule_type(),
            self.egress_lock_value.as_ref(),
        )
    }
}

impl BacnetConfig {
    /// Every point, as the rules see it.
    pub fn rule_points(&self) -> Vec<PointSpec> {
        self.devices
            .iter()
            .flat_map(|device| {
                device.points.iter().map(move |point| PointSpec {
                    id: point.id.get_ref().clone(),
                    device: device.id.get_ref().clone(),
                    zone: device.point_zone(point),
                    value_type: point.point_type().rule_type(),
                    writable: point.writable,
                    egress_locked: point.egress_lock().and_then(Result::ok),
                })
            })
            .collect()
    }

    /// Checks the port, devices and points; device and point ids are checked for uniqueness
    /// across the site in `devices` and `points`.
    pub(crate) fn validate(
        &self,
        zones: &HashSet<ZoneId>,
        devices: &mut HashSet<DeviceId>,
        points: &mut HashSet<PointId>,
        problems: &mut Problems<'_>,
    ) {
        self.check_port(problems);
        let mut instances = HashSet::new();
        for device in &self.devices {
            let id = device.id.get_ref();
            check_device_id(&device.id, device.points.len(), devices, problems);
            check_zone(device.zone.as_ref(), zones, problems);
            let instance = *device.device_instance.get_ref();
            if instance >= ObjectIdentifier::MAX_INSTANCE {
                problems.at(
                    device.device_instance.span(),
                    format!(
                        "device `{id}`: device_instance must be from 0 to {}",
                        ObjectIdentifier::MAX_INSTANCE - 1
                    ),
                );
            } else if !instances.insert(instance) {
                problems.at(
                    device.device_instance.span(),
                    format!(
                        "device `{id}`: device_instance {instance} is given to another device too"
                    ),
                );
            }
            if let Some(address) = &device.address {
                check_address(address, &format!("device `{id}`: address"), problems);
            }
            if !(100..=3_600_000).contains(&device.poll_interval_ms) {
                problems.at(
                    device.id.span(),
                    format!("device `{id}`: poll_interval_ms must be between 100 and 3600000"),
                );
            }
            if !(10..=86_400).contains(&device.cov_lifetime_s) {
                problems.at(
                    device.id.span(),
                    format!("device `{id}`: cov_lifetime_s must be between 10 and 86400"),
                );
            }
            for point in &device.points {
                check_point_id(&point.id, points, problems);
                check_zone(point.zone.as_ref(), zones, problems);
                check_point(point, problems);
            }
        }
    }

    fn check_port(&self, problems: &mut Problems<'_>) {
        check_address(&self.bind, "bacnet.bind", problems);
        check_address(&self.broadcast, "bacnet.broadcast", problems);
        if let Some(bbmd) = &self.bbmd {
            check_address(bbmd, "bacnet.bbmd", problems);
        }
        if !(30..=65_535).contains(&self.bbmd_ttl_s) {
            problems.global("bacnet.bbmd_ttl_s must be between 30 and 65535");
        }
        if !(50..=30_000).contains(&self.timeout_ms) {
            problems.global("bacnet.timeout_ms must be between 50 and 30000");
        }
        if self.retries > 10 {
            problems.global("bacnet.retries must be at most 10");
        }
        if self.rediscover_initial_ms < 50
            || self.rediscover_max_ms > 3_600_000
            || self.rediscover_max_ms < self.rediscover_initial_ms
        {
            problems
                .global("bacnet: need 50 ≤ rediscover_initial_ms ≤ rediscover_max_ms ≤ 3600000");
        }
    }
}

/// Checks an IPv4 `address:port` (B/IP is IPv4).
fn check_address(address: &Spanned<String>, what: &str, problems: &mut Problems<'_>) {
    match address.get_ref().parse::<SocketAddr>() {
        Ok(SocketAddr::V4(_)) => {}
        _ => problems.at(
            address.span(),
            format!(
                "{what} `{}` must be an IPv4 address and port, e.g. 192.0.2.10:47808",
                address.get_ref()
            ),
        ),
    }
}

fn check_point(point: &BacnetPointConfig, problems: &mut Problems) {
    let id = point.id.get_ref();
    match parse_object(point.object.get_ref()) {
        Err(message) => problems.at(point.object.span(), format!("point `{id}`: {message}")),
        Ok(object) if point.writable && !is_commandable(object.object_type) => problems.at(
            point.object.span(),
            format!(
                "point `{id}`: {} is an input; only outputs and values are writable",
                point.object.get_ref()
            ),
        ),
        Ok(object) => {
            if let Some(value_type) = &point.value_type {
                let fits = match family(object.object_type) {
                    Family::Binary => *value_type.get_ref() == PointType::Bool,
                    Family::MultiState => *value_type.get_ref() == PointType::Int,
                    Family::Analog => *value_type.get_ref() != PointType::Bool,
                };
                if !fits {
                    problems.at(
                        value_type.span(),
                        format!(
                            "point `{id}`: a {} cannot be read as {:?}",
                            object.object_type,
                            value_type.get_ref()
                        ),
                    );
                }
            }
        }
    }
    if !(1..=16).contains(&point.priority) {
        problems.at(
            point.id.span(),
            format!("point `{id}`: priority must be from 1 to 16"),
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
    use crate::config::Config;
    use crate::config::section_tests::{BASE, assert_problems, messages, toml_example};

    #[test]
    fn the_example_in_the_docs_is_a_valid_config() -> anyhow::Result<()> {
        let page = include_str!("../../../../docs/bacnet.md");
        let example = toml_example(page);
        assert!(example.contains("[[bacnet.devices]]"));
        let zone = "[[zones]]\nid = \"plant-room\"\nname = \"Plant room\"\n";
        let config = Config::parse(&format!("{BASE}{zone}{example}"))
            .map_err(|p| anyhow::anyhow!("{p:?}"))?;
        let points = config.bacnet.rule_points();
        assert!(points.len() >= 3, "{points:?}");
        Ok(())
    }

    #[test]
    fn types_default_by_object_type() -> anyhow::Result<()> {
        let config = Config::parse(&format!(
            "{BASE}{}",
            r#"
[[bacnet.devices]]
id = "ahu"
device_instance = 7
[[bacnet.devices.points]]
id = "t"
object = "analog-input:1"
[[bacnet.devices.points]]
id = "door"
object = "binary-input:1"
[[bacnet.devices.points]]
id = "mode"
object = "multi-state-value:1"
writable = true
[[bacnet.devices.points]]
id = "count"
object = "analog-value:2"
type = "int"
"#
        ))
        .map_err(|p| anyhow::anyhow!("{p:?}"))?;
        let types: Vec<_> = config
            .bacnet
            .rule_points()
            .into_iter()
            .map(|p| p.value_type)
            .collect();
        use gatehouse_rules::expr::Type;
        assert_eq!(types, [Type::Float, Type::Bool, Type::Int, Type::Int]);
        assert_eq!(config.bacnet.bind.get_ref(), "0.0.0.0:47808");
        assert_eq!(config.bacnet.devices[0].points[2].priority, 8);
        Ok(())
    }

    #[test]
    fn bacnet_mistakes_are_all_reported_with_lines() {
        let found = messages(
            r#"
[bacnet]
bind = "localhost"
bbmd = "[::1]:47808"
[[bacnet.devices]]
id = "ahu"
device_instance = 4194303
address = "10.0.0.1"
[[bacnet.devices.points]]
id = "t"
object = "analog-input"
[[bacnet.devices]]
id = "ahu"
device_instance = 5
zone = "attic"
[[bacnet.devices.points]]
id = "t"
object = "binary-input:1"
writable = true
[[bacnet.devices.points]]
id = "x"
object = "lift:1"
[[bacnet.devices.points]]
id = "y"
object = "binary-value:1"
type = "float"
priority = 17
"#,
        );
        let expected = [
            (12, "bacnet.bind `localhost`"),
            (13, "bacnet.bbmd `[::1]:47808`"),
            (16, "device_instance must be from 0"),
            (17, "address `10.0.0.1`"),
            (20, "must be TYPE:INSTANCE"),
            (22, "device `ahu` is defined twice"),
            (24, "zone `attic` is not defined"),
            (26, "point `t` is defined twice"),
            (27, "is an input"),
            (31, "object type `lift` is not one of"),
            (33, "priority must be from 1 to 16"),
            (35, "cannot be read as Float"),
        ];
        assert_problems(&found, &expected);
    }
}

//! Events: the unit the journal stores and the stream delivers.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::command::CommandOutcome;
use crate::ids::{DeviceId, PointId, ZoneId};
use crate::incident::{Incident, IncidentChange};
use crate::value::{Quality, Value};
use crate::zone::ZoneMode;

/// One committed journal record.
///
/// `seq` is assigned by the journal when the event is committed; it is strictly increasing,
/// never reused, and serves as the cursor for queries and for resuming the live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub seq: u64,
    /// When the journal committed the event.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub recorded_at: Timestamp,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A point's value or quality changed (past its deadband).
    Observation {
        device: DeviceId,
        point: PointId,
        zone: Option<ZoneId>,
        value: Option<Value>,
        quality: Quality,
        /// When the adapter saw the value.
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
        observed_at: Timestamp,
    },
    /// A device went online or offline.
    DeviceStatus {
        device: DeviceId,
        status: DeviceStatus,
        reason: Option<String>,
    },
    /// A command to a device point was carried out or failed.
    Command {
        device: DeviceId,
        point: PointId,
        value: Value,
        outcome: CommandOutcome,
        requested_by: String,
    },
    /// An incident was opened or changed state.
    Incident {
        change: IncidentChange,
        incident: Box<Incident>,
    },
    /// A zone was armed or disarmed (by a person, a rule or a schedule).
    ZoneMode {
        zone: ZoneId,
        mode: ZoneMode,
        /// When an armed mode takes effect: the end of the exit delay.
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
        effective_at: Timestamp,
        /// An operator's name, `rule:<id>` or `schedule:<id>`.
        by: String,
    },
    /// A point was taken out of the alarm system (bypassed) or put back, by a person.
    Bypass {
        point: PointId,
        bypassed: bool,
        by: String,
    },
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Observation { .. } => EventKind::Observation,
            EventBody::DeviceStatus { .. } => EventKind::DeviceStatus,
            EventBody::Command { .. } => EventKind::Command,
            EventBody::Incident { .. } => EventKind::Incident,
            EventBody::ZoneMode { .. } => EventKind::ZoneMode,
            EventBody::Bypass { .. } => EventKind::Bypass,
        }
    }

    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            EventBody::Observation { device, .. }
            | EventBody::DeviceStatus { device, .. }
            | EventBody::Command { device, .. } => Some(device),
            EventBody::Incident { .. } | EventBody::ZoneMode { .. } | EventBody::Bypass { .. } => {
                None
            }
        }
    }

    pub fn point(&self) -> Option<&PointId> {
        match self {
            EventBody::Observation { point, .. }
            | EventBody::Command { point, .. }
            | EventBody::Bypass { point, .. } => Some(point),
            EventBody::DeviceStatus { .. }
            | EventBody::Incident { .. }
            | EventBody::ZoneMode { .. } => None,
        }
    }
}

/// The kinds of event, for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Observation,
    DeviceStatus,
    Command,
    Incident,
    ZoneMode,
    Bypass,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Observation,
        EventKind::DeviceStatus,
        EventKind::Command,
        EventKind::Incident,
        EventKind::ZoneMode,
        EventKind::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Observation => "observation",
            EventKind::DeviceStatus => "device_status",
            EventKind::Command => "command",
            EventKind::Incident => "incident",
            EventKind::ZoneMode => "zone_mode",
            EventKind::Bypass => "bypass",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!("unknown event kind `{text}`: expected observation, device_status, command, incident, zone_mode or bypass")
            })
    }
}

/// Whether the appliance can talk to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Online,
    /// Reachable, but not wholly working: some of its points cannot be read, or the device
    /// reports trouble of its own. The event's reason says what.
    Degraded,
    Offline,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_serializes_flat_with_its_kind() {
        let event = Event {
            seq: 7,
            recorded_at: Timestamp::UNIX_EPOCH,
            body: EventBody::Observation {
                device: DeviceId::new("plc-1").unwrap_or_else(|e| panic!("{e}")),
                point: PointId::new("door.lobby").unwrap_or_else(|e| panic!("{e}")),
                zone: None,
                value: Some(Value::Bool(true)),
                quality: Quality::Good,
                observed_at: Timestamp::UNIX_EPOCH,
            },
        };
        let json = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(json["kind"], "observation");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["point"], "door.lobby");
        assert_eq!(json["quality"]["status"], "good");
        let back: Event = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, event);
    }

    #[test]
    fn kinds_round_trip_through_text() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert!("alarm".parse::<EventKind>().is_err());
    }
}

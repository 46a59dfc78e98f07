//! The wire contract between an appliance and its relay: Protocol Buffers generated from
//! `proto/gatehouse/v1/wire.proto` (the contract; read it first), the MQTT topics, and the
//! conversions between the wire types and this crate's types.
//!
//! Decoding never trusts the sender: ids are validated, enums must be known, required
//! messages must be present, and the envelope's version must be [`WIRE_VERSION`]. Every
//! refusal is a [`WireError`] that says what was wrong.

use jiff::Timestamp;
use prost::Message;

use crate::command::CommandOutcome;
use crate::event::{DeviceStatus, Event, EventBody};
use crate::ids::{ApplianceId, IdError};
use crate::incident::{
    ClipRef, ClipState, Evidence, Incident, IncidentChange, IncidentState, Severity, Transition,
};
use crate::value::{Quality, Value};
use crate::zone::ZoneMode;

/// The generated wire types.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/gatehouse.v1.rs"));
}

/// The version this crate speaks.
pub const WIRE_VERSION: u32 = 1;

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a valid protobuf Envelope: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("envelope version {0} is not supported (this relay speaks {WIRE_VERSION})")]
    UnknownVersion(u32),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field}: {source}")]
    BadId {
        field: &'static str,
        #[source]
        source: IdError,
    },
    #[error("{field}: {value} µs is not a valid timestamp")]
    BadTimestamp { field: &'static str, value: i64 },
    #[error("{field}: unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
}

/// Wraps a body in a current-version envelope and encodes it.
pub fn encode(body: pb::envelope::Body) -> Vec<u8> {
    pb::Envelope {
        version: WIRE_VERSION,
        body: Some(body),
    }
    .encode_to_vec()
}

/// Decodes an envelope, checking its version; returns its body.
pub fn decode(bytes: &[u8]) -> Result<pb::envelope::Body, WireError> {
    let envelope = pb::Envelope::decode(bytes)?;
    if envelope.version != WIRE_VERSION {
        return Err(WireError::UnknownVersion(envelope.version));
    }
    envelope.body.ok_or(WireError::Missing("envelope body"))
}

/// The MQTT topics of the contract.
pub mod topics {
    use super::ApplianceId;

    /// What a topic carries.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Channel {
        UpRecords,
        UpStatus,
        DownAck,
        DownCommands,
    }

    impl Channel {
        fn suffix(self) -> &'static str {
            match self {
                Channel::UpRecords => "up/records",
                Channel::UpStatus => "up/status",
                Channel::DownAck => "down/ack",
                Channel::DownCommands => "down/commands",
            }
        }
    }

    const PREFIX: &str = "gatehouse/v1/";

    /// The relay's shared subscription to everything appliances send, in the MQTT v5 share
    /// group `group`: the broker hands each message to one member of the group.
    ///
    /// Any client that knows the group's name can join it, and Mosquitto drops a message it
    /// hands to a member that may not read it. So the group name is the relay's secret (see
    /// `relay/deploy/README.md`), not a constant of the contract. `group` must not contain
    /// `/`, `+` or `#`; the relay's configuration checks that.
    pub fn relay_subscription(group: &str) -> String {
        format!("$share/{group}/{PREFIX}+/up/#")
    }

    pub fn topic(appliance: &ApplianceId, channel: Channel) -> String {
        format!("{PREFIX}{appliance}/{}", channel.suffix())
    }

    /// The appliance and channel of a topic of the contract.
    pub fn parse(topic: &str) -> Option<(ApplianceId, Channel)> {
        let rest = topic.strip_prefix(PREFIX)?;
        let (appliance, suffix) = rest.split_once('/')?;
        let channel = [
            Channel::UpRecords,
            Channel::UpStatus,
            Channel::DownAck,
            Channel::DownCommands,
        ]
        .into_iter()
        .find(|channel| channel.suffix() == suffix)?;
        Some((ApplianceId::new(appliance).ok()?, channel))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_relay_subscription_covers_every_up_topic_in_its_group() {
            assert_eq!(
                relay_subscription("relay-5f0c9d1e8a7b4c36"),
                "$share/relay-5f0c9d1e8a7b4c36/gatehouse/v1/+/up/#"
            );
        }
    }
}

fn micros(timestamp: Timestamp) -> i64 {
    timestamp.as_microsecond()
}

fn timestamp(field: &'static str, value: i64) -> Result<Timestamp, WireError> {
    Timestamp::from_microsecond(value).map_err(|_| WireError::BadTimestamp { field, value })
}

fn id<T: TryFrom<String, Error = IdError>>(
    field: &'static str,
    text: String,
) -> Result<T, WireError> {
    T::try_from(text).map_err(|source| WireError::BadId { field, source })
}

fn optional_id<T: TryFrom<String, Error = IdError>>(
    field: &'static str,
    text: Option<String>,
) -> Result<Option<T>, WireError> {
    text.map(|text| id(field, text)).transpose()
}

fn known<T>(
    field: &'static str,
    value: i32,
    convert: impl FnOnce(i32) -> Option<T>,
) -> Result<T, WireError> {
    convert(value).ok_or(WireError::UnknownEnum { field, value })
}

impl From<&Value> for pb::Value {
    fn from(value: &Value) -> Self {
        use pb::value::Kind;
        let kind = match value {
            Value::Bool(b) => Kind::Bool(*b),
            Value::Int(i) => Kind::Int(*i),
            Value::Float(f) => Kind::Float(*f),
            Value::Text(t) => Kind::Text(t.clone()),
        };
        pb::Value { kind: Some(kind) }
    }
}

impl TryFrom<pb::Value> for Value {
    type Error = WireError;
    fn try_from(value: pb::Value) -> Result<Self, WireError> {
        use pb::value::Kind;
        Ok(match value.kind.ok_or(WireError::Missing("value kind"))? {
            Kind::Bool(b) => Value::Bool(b),
            Kind::Int(i) => Value::Int(i),
            Kind::Float(f) => Value::Float(f),
            Kind::Text(t) => Value::Text(t),
        })
    }
}

fn value(field: &'static str, value: Option<pb::Value>) -> Result<Value, WireError> {
    value.ok_or(WireError::Missing(field))?.try_into()
}

fn optional_value(value: Option<pb::Value>) -> Result<Option<Value>, WireError> {
    value.map(Value::try_from).transpose()
}

impl From<&Quality> for pb::Quality {
    fn from(quality: &Quality) -> Self {
        use pb::quality::Status;
        let (status, reason) = match quality {
            Quality::Good => (Status::Good, String::new()),
            Quality::Bad { reason } => (Status::Bad, reason.clone()),
            Quality::Stale { reason } => (Status::Stale, reason.clone()),
        };
        pb::Quality {
            status: status.into(),
            reason,
        }
    }
}

impl TryFrom<pb::Quality> for Quality {
    type Error = WireError;
    fn try_from(quality: pb::Quality) -> Result<Self, WireError> {
        use pb::quality::Status;
        let status = known("quality.status", quality.status, |v| {
            Status::try_from(v).ok()
        })?;
        Ok(match status {
            Status::Good => Quality::Good,
            Status::Bad => Quality::Bad {
                reason: quality.reason,
            },
            Status::Stale => Quality::Stale {
                reason: quality.reason,
            },
        })
    }
}

impl From<&Transition> for pb::Transition {
    fn from(transition: &Transition) -> Self {
        pb::Transition {
            by: transition.by.clone(),
            at_us: micros(transition.at),
            comment: transition.comment.clone(),
        }
    }
}

impl TryFrom<pb::Transition> for Transition {
    type Error = WireError;
    fn try_from(transition: pb::Transition) -> Result<Self, WireError> {
        Ok(Transition {
            by: transition.by,
            at: timestamp("transition.at_us", transition.at_us)?,
            comment: transition.comment,
        })
    }
}

impl From<&Incident> for pb::Incident {
    fn from(incident: &Incident) -> Self {
        use pb::incident::{Severity as S, State};
        pb::Incident {
            id: incident.id,
            rule: incident.rule.to_string(),
            title: incident.title.clone(),
            severity: match incident.severity {
                Severity::Info => S::Info,
                Severity::Low => S::Low,
                Severity::Medium => S::Medium,
                Severity::High => S::High,
                Severity::Critical => S::Critical,
            }
            .into(),
            zone: incident.zone.as_ref().map(ToString::to_string),
            state: match incident.state {
                IncidentState::Open => State::Open,
                IncidentState::Acknowledged => State::Acknowledged,
                IncidentState::Resolved => State::Resolved,
            }
            .into(),
            opened_at_us: micros(incident.opened_at),
            evidence: incident
                .evidence
                .iter()
                .map(|evidence| pb::Evidence {
                    seq: evidence.seq,
                    point: evidence.point.as_ref().map(ToString::to_string),
                    value: evidence.value.as_ref().map(pb::Value::from),
                    at_us: micros(evidence.at),
                })
                .collect(),
            acknowledged: incident.acknowledged.as_ref().map(pb::Transition::from),
            resolved: incident.resolved.as_ref().map(pb::Transition::from),
            escalations: incident.escalations,
            clips: incident.clips.iter().map(pb::ClipRef::from).collect(),
        }
    }
}

impl From<&ClipRef> for pb::ClipRef {
    fn from(clip: &ClipRef) -> Self {
        use pb::clip_ref::State;
        pb::ClipRef {
            id: clip.id,
            camera: clip.camera.to_string(),
            from_us: micros(clip.from),
            to_us: micros(clip.to),
            state: match clip.state {
                ClipState::Recording => State::Recording,
                ClipState::Ready => State::Ready,
                ClipState::Failed => State::Failed,
            }
            .into(),
            reason: clip.reason.clone(),
        }
    }
}

impl TryFrom<pb::ClipRef> for ClipRef {
    type Error = WireError;
    fn try_from(clip: pb::ClipRef) -> Result<Self, WireError> {
        use pb::clip_ref::State;
        Ok(ClipRef {
            id: clip.id,
            camera: id("clip.camera", clip.camera)?,
            from: timestamp("clip.from_us", clip.from_us)?,
            to: timestamp("clip.to_us", clip.to_us)?,
            state: match known("clip.state", clip.state, |v| State::try_from(v).ok())? {
                State::Recording => ClipState::Recording,
                State::Ready => ClipState::Ready,
                State::Failed => ClipState::Failed,
            },
            reason: clip.reason,
        })
    }
}

impl TryFrom<pb::Incident> for Incident {
    type Error = WireError;
    fn try_from(incident: pb::Incident) -> Result<Self, WireError> {
        use pb::incident::{Severity as S, State};
        let severity = match known("incident.severity", incident.severity, |v| {
            S::try_from(v).ok()
        })? {
            S::Info => Severity::Info,
            S::Low => Severity::Low,
            S::Medium => Severity::Medium,
            S::High => Severity::High,
            S::Critical => Severity::Critical,
        };
        let state = match known("incident.state", incident.state, |v| {
            State::try_from(v).ok()
        })? {
            State::Open => IncidentState::Open,
            State::Acknowledged => IncidentState::Acknowledged,
            State::Resolved => IncidentState::Resolved,
        };
        let evidence = incident
            .evidence
            .into_iter()
            .map(|evidence| {
                Ok(Evidence {
                    seq: evidence.seq,
                    point: optional_id("evidence.point", evidence.point)?,
                    value: optional_value(evidence.value)?,
                    at: timestamp("evidence.at_us", evidence.at_us)?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Incident {
            id: incident.id,
            rule: id("incident.rule", incident.rule)?,
            title: incident.title,
            severity,
            zone: optional_id("incident.zone", incident.zone)?,
            state,
            opened_at: timestamp("incident.opened_at_us", incident.opened_at_us)?,
            evidence,
            escalations: incident.escalations,
            acknowledged: incident
                .acknowledged
                .map(Transition::try_from)
                .transpose()?,
            resolved: incident.resolved.map(Transition::try_from).transpose()?,
            clips: incident
                .clips
                .into_iter()
                .map(ClipRef::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&Event> for pb::Event {
    fn from(event: &Event) -> Self {
        use pb::event::Body;
        let body = match &event.body {
            EventBody::Observation {
                device,
                point,
                zone,
                value,
                quality,
                observed_at,
            } => Body::Observation(pb::Observation {
                device: device.to_string(),
                point: point.to_string(),
                zone: zone.as_ref().map(ToString::to_string),
                value: value.as_ref().map(pb::Value::from),
                quality: Some(quality.into()),
                observed_at_us: micros(*observed_at),
            }),
            EventBody::DeviceStatus {
                device,
                status,
                reason,
            } => Body::DeviceStatus(pb::DeviceStatusChange {
                device: device.to_string(),
                online: *status != DeviceStatus::Offline,
                reason: reason.clone(),
                degraded: *status == DeviceStatus::Degraded,
            }),
            EventBody::Command {
                device,
                point,
                value,
                outcome,
                requested_by,
            } => {
                use pb::command_record::Outcome;
                let (outcome, reason) = match outcome {
                    CommandOutcome::Sent => (Outcome::Sent, String::new()),
                    CommandOutcome::Done => (Outcome::Done, String::new()),
                    CommandOutcome::Failed { reason } => (Outcome::Failed, reason.clone()),
                    CommandOutcome::Unconfirmed { reason } => {
                        (Outcome::Unconfirmed, reason.clone())
                    }
                };
                Body::Command(pb::CommandRecord {
                    device: device.to_string(),
                    point: point.to_string(),
                    value: Some(value.into()),
                    outcome: outcome.into(),
                    reason,
                    requested_by: requested_by.clone(),
                })
            }
            EventBody::Incident { change, incident } => {
                use pb::incident_record::Change;
                Body::Incident(pb::IncidentRecord {
                    change: match change {
                        IncidentChange::Opened => Change::Opened,
                        IncidentChange::EvidenceAdded => Change::EvidenceAdded,
                        IncidentChange::Escalated => Change::Escalated,
                        IncidentChange::Acknowledged => Change::Acknowledged,
                        IncidentChange::Resolved => Change::Resolved,
                    }
                    .into(),
                    incident: Some(incident.as_ref().into()),
                })
            }
            EventBody::ZoneMode {
                zone,
                mode,
                effective_at,
                by,
            } => {
                use pb::zone_mode_change::Mode;
                Body::ZoneMode(pb::ZoneModeChange {
                    zone: zone.to_string(),
                    mode: match mode {
                        ZoneMode::Disarmed => Mode::Disarmed,
                        ZoneMode::ArmedAway => Mode::ArmedAway,
                        ZoneMode::ArmedStay => Mode::ArmedStay,
                        ZoneMode::ArmedNight => Mode::ArmedNight,
                    }
                    .into(),
                    effective_at_us: micros(*effective_at),
                    by: by.clone(),
                })
            }
            EventBody::Bypass {
                point,
                bypassed,
                by,
            } => Body::Bypass(pb::PointBypass {
                point: point.to_string(),
                bypassed: *bypassed,
                by: by.clone(),
            }),
        };
        pb::Event {
            journal_seq: event.seq,
            recorded_at_us: micros(event.recorded_at),
            body: Some(body),
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = WireError;
    fn try_from(event: pb::Event) -> Result<Self, WireError> {
        use pb::event::Body;
        let body = match event.body.ok_or(WireError::Missing("event body"))? {
            Body::Observation(o) => EventBody::Observation {
                device: id("observation.device", o.device)?,
                point: id("observation.point", o.point)?,
                zone: optional_id("observation.zone", o.zone)?,
                value: optional_value(o.value)?,
                quality: o
                    .quality
                    .ok_or(WireError::Missing("observation.quality"))?
                    .try_into()?,
                observed_at: timestamp("observation.observed_at_us", o.observed_at_us)?,
            },
            Body::DeviceStatus(d) => EventBody::DeviceStatus {
                device: id("device_status.device", d.device)?,
                status: match (d.online, d.degraded) {
                    (false, _) => DeviceStatus::Offline,
                    (true, false) => DeviceStatus::Online,
                    (true, true) => DeviceStatus::Degraded,
                },
                reason: d.reason,
            },
            Body::Command(c) => {
                use pb::command_record::Outcome;
                let outcome =
                    match known("command.outcome", c.outcome, |v| Outcome::try_from(v).ok())? {
                        Outcome::Sent => CommandOutcome::Sent,
                        Outcome::Done => CommandOutcome::Done,
                        Outcome::Failed => CommandOutcome::Failed { reason: c.reason },
                        Outcome::Unconfirmed => CommandOutcome::Unconfirmed { reason: c.reason },
                    };
                EventBody::Command {
                    device: id("command.device", c.device)?,
                    point: id("command.point", c.point)?,
                    value: value("command.value", c.value)?,
                    outcome,
                    requested_by: c.requested_by,
                }
            }
            Body::Incident(i) => {
                use pb::incident_record::Change;
                let change = match known("incident.change", i.change, |v| Change::try_from(v).ok())?
                {
                    Change::Opened => IncidentChange::Opened,
                    Change::EvidenceAdded => IncidentChange::EvidenceAdded,
                    Change::Escalated => IncidentChange::Escalated,
                    Change::Acknowledged => IncidentChange::Acknowledged,
                    Change::Resolved => IncidentChange::Resolved,
                };
                let incident = i.incident.ok_or(WireError::Missing("incident"))?;
                EventBody::Incident {
                    change,
                    incident: Box::new(incident.try_into()?),
                }
            }
            Body::ZoneMode(z) => {
                use pb::zone_mode_change::Mode;
                EventBody::ZoneMode {
                    zone: id("zone_mode.zone", z.zone)?,
                    mode: match known("zone_mode.mode", z.mode, |v| Mode::try_from(v).ok())? {
                        Mode::Disarmed => ZoneMode::Disarmed,
                        Mode::ArmedAway => ZoneMode::ArmedAway,
                        Mode::ArmedStay => ZoneMode::ArmedStay,
                        Mode::ArmedNight => ZoneMode::ArmedNight,
                    },
                    effective_at: timestamp("zone_mode.effective_at_us", z.effective_at_us)?,
                    by: z.by,
                }
            }
            Body::Bypass(b) => EventBody::Bypass {
                point: id("bypass.point", b.point)?,
                bypassed: b.bypassed,
                by: b.by,
            },
        };
        Ok(Event {
            seq: event.journal_seq,
            recorded_at: timestamp("event.recorded_at_us", event.recorded_at_us)?,
            body,
        })
    }
}

#[cfg(test)]
mod tests;

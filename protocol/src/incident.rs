//! Incidents and their lifecycle: open → acknowledged → resolved.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, PointId, RuleId, ZoneId};
use crate::value::Value;

/// How urgent an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Where an incident is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for IncidentState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "open" => Ok(IncidentState::Open),
            "acknowledged" => Ok(IncidentState::Acknowledged),
            "resolved" => Ok(IncidentState::Resolved),
            other => Err(format!(
                "unknown incident state `{other}`: expected open, acknowledged or resolved"
            )),
        }
    }
}

/// What changed in an incident, as recorded in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IncidentChange {
    Opened,
    /// Another trigger of the same rule and zone added its evidence.
    EvidenceAdded,
    /// An escalation step ran: the incident stayed unacknowledged too long.
    Escalated,
    Acknowledged,
    Resolved,
}

/// Who moved an incident along, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transition {
    pub by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    pub comment: Option<String>,
}

/// An event that supports an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evidence {
    /// The journal sequence of the event.
    pub seq: u64,
    pub point: Option<PointId>,
    pub value: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// A video clip of an incident: the media stays on the appliance, which serves it by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClipRef {
    pub id: u64,
    pub camera: DeviceId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: Timestamp,
    pub state: ClipState,
    /// Why a clip failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a clip is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClipState {
    /// Gathering video until its end.
    Recording,
    /// Written: it can be downloaded.
    Ready,
    /// No video could be written (the reason says why).
    Failed,
}

impl ClipState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

/// Something that needs a person's attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Incident {
    pub id: u64,
    pub rule: RuleId,
    pub title: String,
    pub severity: Severity,
    pub zone: Option<ZoneId>,
    pub state: IncidentState,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub opened_at: Timestamp,
    pub evidence: Vec<Evidence>,
    /// How many escalation steps have run.
    #[serde(default)]
    pub escalations: u32,
    pub acknowledged: Option<Transition>,
    pub resolved: Option<Transition>,
    /// Video clips around its triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clips: Vec<ClipRef>,
}

/// Why a lifecycle step is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("incident {0} is already acknowledged")]
    AlreadyAcknowledged(u64),
    #[error("incident {0} is already resolved")]
    AlreadyResolved(u64),
}

impl Incident {
    /// Records an escalation step; a step that names a severity sets it.
    pub fn escalate(&mut self, severity: Option<Severity>) {
        self.escalations = self.escalations.saturating_add(1);
        if let Some(severity) = severity {
            self.severity = severity;
        }
    }

    /// open → acknowledged.
    pub fn acknowledge(&mut self, transition: Transition) -> Result<(), LifecycleError> {
        match self.state {
            IncidentState::Open => {
                self.state = IncidentState::Acknowledged;
                self.acknowledged = Some(transition);
                Ok(())
            }
            IncidentState::Acknowledged => Err(LifecycleError::AlreadyAcknowledged(self.id)),
            IncidentState::Resolved => Err(LifecycleError::AlreadyResolved(self.id)),
        }
    }

    /// open or acknowledged → resolved. Resolving an open incident acknowledges it too, by
    /// the same person: nobody resolves what they have not seen.
    pub fn resolve(&mut self, transition: Transition) -> Result<(), LifecycleError> {
        match self.state {
            IncidentState::Open => {
                self.acknowledged = Some(Transition {
                    comment: None,
                    ..transition.clone()
                });
                self.state = IncidentState::Resolved;
                self.resolved = Some(transition);
                Ok(())
            }
            IncidentState::Acknowledged => {
                self.state = IncidentState::Resolved;
                self.resolved = Some(transition);
                Ok(())
            }
            IncidentState::Resolved => Err(LifecycleError::AlreadyResolved(self.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        Incident {
            id: 1,
            rule: RuleId::new("door-forced").unwrap_or_else(|e| panic!("{e}")),
            title: "Door forced".into(),
            severity: Severity::High,
            zone: None,
            state: IncidentState::Open,
            opened_at: Timestamp::UNIX_EPOCH,
            evidence: vec![],
            escalations: 0,
            acknowledged: None,
            resolved: None,
            clips: Vec::new(),
        }
    }

    fn by(who: &str) -> Transition {
        Transition {
            by: who.into(),
            at: Timestamp::UNIX_EPOCH,
            comment: Some("seen".into()),
        }
    }

    #[test]
    fn lifecycle_moves_forward_only() {
        let mut i = incident();
        assert_eq!(i.acknowledge(by("guard")), Ok(()));
        assert_eq!(i.state, IncidentState::Acknowledged);
        assert_eq!(
            i.acknowledge(by("guard")),
            Err(LifecycleError::AlreadyAcknowledged(1))
        );
        assert_eq!(i.resolve(by("guard")), Ok(()));
        assert_eq!(i.state, IncidentState::Resolved);
        assert_eq!(
            i.acknowledge(by("x")),
            Err(LifecycleError::AlreadyResolved(1))
        );
        assert_eq!(i.resolve(by("x")), Err(LifecycleError::AlreadyResolved(1)));
    }

    #[test]
    fn resolving_an_open_incident_records_the_acknowledgement() {
        let mut i = incident();
        assert_eq!(i.resolve(by("admin")), Ok(()));
        assert_eq!(
            i.acknowledged.as_ref().map(|t| t.by.as_str()),
            Some("admin")
        );
        assert_eq!(i.state, IncidentState::Resolved);
    }
}

//! What the store takes and returns.

use std::fmt;

use gatehouse_protocol::ids::validate_id;
use gatehouse_protocol::{ApplianceId, IdError, IncidentState, Severity, SiteId};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};

use super::{Micros, TenantScope};

/// A tenant: one customer of the relay, owner of sites, appliances and API tokens. Follows
/// the protocol's id rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates and wraps `text`.
    pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
        let text = text.into();
        validate_id(&text)?;
        Ok(TenantId(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, IdError> {
        TenantId::new(text)
    }
}

impl std::str::FromStr for TenantId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        TenantId::new(text)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub id: SiteId,
    pub tenant: TenantId,
    pub name: String,
    pub created_at: Micros,
}

/// An appliance as the relay knows it, with its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appliance {
    pub id: ApplianceId,
    pub tenant: TenantId,
    pub site: SiteId,
    pub name: String,
    pub created_at: Micros,
    /// When its claim code was redeemed; `None` while it waits to be installed.
    pub claimed_at: Option<Micros>,
    /// SHA-256 of the certificate the fleet CA issued it.
    pub cert_fingerprint: Option<String>,
    pub online: bool,
    pub last_seen_at: Option<Micros>,
    /// Set while offline: since when.
    pub offline_since: Option<Micros>,
    /// Records waiting in its outbox, as it last reported.
    pub outbox_backlog: u64,
    /// Every record up to this seq is stored at the relay.
    pub acked_seq: u64,
}

/// A claim code just made: the plaintext is shown once, to the HQ admin. Its `Debug` leaves
/// the code out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewClaim {
    /// `XXXX-XXXX-XXXX-XXXX-XXXX` (Crockford base32, 100 bits).
    pub code: String,
    pub appliance: ApplianceId,
    pub expires_at: Micros,
}

impl fmt::Debug for NewClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewClaim")
            .field("code", &"***")
            .field("appliance", &self.appliance)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a redeemed claim code stood for. (A tenant id, not a [`TenantScope`]: the code
/// proves who the appliance is, not a right to read the tenant's data.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub tenant: TenantId,
    pub site: SiteId,
    pub appliance: ApplianceId,
}

/// How long after its first use a claim code may be redeemed again, for the same public key
/// only: long enough for an appliance to retry after a lost answer (its own timeout is 30 s),
/// short enough that a code seen later is worth nothing.
pub const CLAIM_RETRY_WINDOW: Micros = 15 * 60 * 1_000_000;

/// A claim code redeemed inside a transaction that is not committed yet
/// ([`Store::begin_claim`](super::Store::begin_claim)): the caller signs the certificate, then
/// [`PendingClaim::commit`]s with its fingerprint. Dropped without a commit, it is rolled back
/// and the code is as it was.
///
/// It holds a database write transaction (on SQLite, the database's write lock): sign and
/// commit at once, without waiting on anything else.
pub struct PendingClaim {
    pub(super) transaction: Transaction<'static, Any>,
    pub(super) claim: Claim,
    pub(super) repeat: bool,
}

impl fmt::Debug for PendingClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingClaim")
            .field("claim", &self.claim)
            .field("repeat", &self.repeat)
            .finish_non_exhaustive()
    }
}

/// How a status message changed an appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// Offline (or never seen) before, online now.
    CameOnline,
    /// Online before, offline now.
    WentOffline,
    /// Same online flag; backlog and times updated.
    Unchanged,
    /// Older than the status already stored: ignored.
    Stale,
}

/// What an API token may do within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including sites, claim codes and tokens.
    Admin,
    /// Watch, acknowledge, resolve and comment.
    Operator,
    /// Watch only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role `{other}`: expected admin, operator or viewer"
            )),
        }
    }
}

/// Who an API token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub scope: TenantScope,
    pub role: Role,
    /// The token's name.
    pub name: String,
}

/// An API token just made: the plaintext is shown once. Its `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiToken {
    pub token: String,
    pub name: String,
    pub role: Role,
}

impl fmt::Debug for NewApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiToken")
            .field("token", &"***")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub created_at: Micros,
}

/// One record of an appliance's outbox, as the relay's MQTT side decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestRecord {
    /// The outbox sequence, from 1.
    pub seq: u64,
    pub recorded_at: Micros,
    /// `observation`, `device_status`, `command`, `incident` or `evicted`.
    pub kind: String,
    pub device: Option<String>,
    pub point: Option<String>,
    /// Set when the record is an incident change: the incident's state after it.
    pub incident: Option<IngestIncident>,
    /// Set when the record is an eviction marker: it stands for `seq..=evicted_through`.
    pub evicted_through: Option<u64>,
    /// The record as JSON.
    pub body: String,
}

/// An incident's state as an incident record carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestIncident {
    pub id: u64,
    pub state: IncidentState,
    pub severity: Severity,
    pub title: String,
    pub opened_at: Micros,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The appliance's tenant, for the fan-out.
    pub scope: TenantScope,
    /// Every record `1..=highest_contiguous_seq` is stored: the ack to send back.
    pub highest_contiguous_seq: u64,
    pub inserted: usize,
    pub duplicates: usize,
}

/// A stored record, for the events query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredRecord {
    pub appliance: ApplianceId,
    pub seq: u64,
    /// Equals `seq` except for an eviction marker.
    pub through_seq: u64,
    pub recorded_at: Micros,
    pub kind: String,
    pub device: Option<String>,
    pub point: Option<String>,
    pub incident: Option<u64>,
    pub body: String,
}

/// An incident's latest known state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub appliance: ApplianceId,
    pub id: u64,
    pub state: IncidentState,
    pub severity: Severity,
    pub title: String,
    pub opened_at: Micros,
    pub updated_at: Micros,
    /// The record this state came from.
    pub last_seq: u64,
    /// The appliance's incident as JSON, from that record.
    pub body: String,
}

/// What an operator did to an incident at the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStep {
    Comment,
    Acknowledge,
    Resolve,
}

impl IncidentStep {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStep::Comment => "comment",
            IncidentStep::Acknowledge => "acknowledge",
            IncidentStep::Resolve => "resolve",
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        [
            IncidentStep::Comment,
            IncidentStep::Acknowledge,
            IncidentStep::Resolve,
        ]
        .into_iter()
        .find(|step| step.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentComment {
    pub id: String,
    pub appliance: ApplianceId,
    pub incident: u64,
    pub created_at: Micros,
    pub author: String,
    pub step: IncidentStep,
    pub comment: Option<String>,
}

/// Which incidents to list; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    pub state: Option<IncidentState>,
    pub site: Option<SiteId>,
    pub appliance: Option<ApplianceId>,
}

/// Which records to list; `None` means any. Times are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub site: Option<SiteId>,
    pub appliance: Option<ApplianceId>,
    pub kind: Option<String>,
    pub device: Option<String>,
    pub point: Option<String>,
    pub incident: Option<u64>,
    pub from: Option<Micros>,
    pub until: Option<Micros>,
}

/// Where the next page of incidents starts (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentCursor {
    pub opened_at: Micros,
    pub appliance: ApplianceId,
    pub id: u64,
}

/// Where the next page of events starts (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCursor {
    pub recorded_at: Micros,
    pub appliance: ApplianceId,
    pub seq: u64,
}

/// A page request: at most `limit` items (capped at [`Page::MAX_LIMIT`]) after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<C> {
    pub limit: u32,
    pub after: Option<C>,
}

impl<C> Page<C> {
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Page { limit, after: None }
    }

    pub(super) fn effective_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT))
    }
}

/// A page of results; `next` is set when there may be more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

pub(super) fn severity_from_str(text: &str) -> Option<Severity> {
    [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ]
    .into_iter()
    .find(|severity| severity.as_str() == text)
}

/// What an alert is about. Stored as its `as_str` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The appliance has been offline (last will, or silent) for longer than the relay's
    /// configured grace period.
    ApplianceOffline,
}

/// A condition the relay itself raises for a tenant (as opposed to an appliance's incident).
/// Raised once per occurrence; cleared when the condition ends (the appliance is back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub id: String,
    pub tenant: TenantId,
    pub site: SiteId,
    pub appliance: ApplianceId,
    pub kind: AlertKind,
    pub raised_at: Micros,
    pub cleared_at: Option<Micros>,
    /// Human-readable, e.g. "appliance lobby-1 offline since 2026-11-26T01:00:00Z".
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_just_made_are_never_printed() -> anyhow::Result<()> {
        let claim = NewClaim {
            code: "ABCD-EFGH-JKMN-PQRS-TVWX".into(),
            appliance: ApplianceId::new("app-1")?,
            expires_at: 7,
        };
        let token = NewApiToken {
            token: "ght_0123456789abcdef".into(),
            name: "dana".into(),
            role: Role::Admin,
        };
        for (printed, secret, shown) in [
            (format!("{claim:?}"), "ABCD", "app-1"),
            (format!("{token:?}"), "ght_", "dana"),
        ] {
            assert!(!printed.contains(secret), "{printed}");
            assert!(printed.contains(shown), "{printed}");
        }
        Ok(())
    }
}

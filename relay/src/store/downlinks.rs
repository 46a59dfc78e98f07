//! HQ's incident steps on their way to appliances: the `downlinks` table (migration 0003).
//!
//! An acknowledgement or resolution taken at the relay is stored together with the command
//! that carries it to the appliance, in one transaction
//! ([`Store::step_incident_with_downlink`]): the relay never shows a step its appliance cannot
//! hear of, whatever happens to a queue, a replica or the broker afterwards.
//!
//! A command is **pending** until a record from its appliance shows the incident at or past
//! the step; ingestion then completes it in the batch's own transaction
//! ([`complete_downlinks`]). Until then the relay's MQTT side sends it again: to an appliance
//! that comes back online ([`Store::claim_appliance_downlinks`]) and, periodically, what an
//! online appliance has not carried out long after it was last sent
//! ([`Store::claim_due_downlinks`]). Claiming marks the
//! rows sent in the same statement, so of two replicas sweeping at once each row goes to one.
//! A repeat is harmless anyway: the appliance refuses a step its incident has already taken
//! and records nothing.
//!
//! Reads and writes of one appliance's commands take a [`TenantScope`];
//! [`Store::claim_due_downlinks`], [`Store::count_pending_downlinks`] and
//! [`Store::mark_downlink_sent`] are the relay's own cross-tenant paths (see the invariants in
//! [`super`]).

use gatehouse_protocol::{ApplianceId, IncidentState};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::queries::apply_step;
use super::{
    Incident, IncidentStep, Micros, Store, StoreError, TenantId, TenantScope, id_column, new_id,
    to_db, u64_column,
};

/// The columns [`downlink_from_row`] reads.
macro_rules! downlink_columns {
    () => {
        "command_id, tenant_id, appliance_id, incident_id, step, author, comment, created_at, \
         sent_at, sends, done_at"
    };
}

/// An incident step that travels to the appliance (a comment stays at the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownlinkStep {
    Acknowledge,
    Resolve,
}

impl DownlinkStep {
    /// The same step among the relay's incident steps.
    pub fn incident_step(self) -> IncidentStep {
        match self {
            DownlinkStep::Acknowledge => IncidentStep::Acknowledge,
            DownlinkStep::Resolve => IncidentStep::Resolve,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.incident_step().as_str()
    }

    fn parse(text: &str) -> Option<Self> {
        [DownlinkStep::Acknowledge, DownlinkStep::Resolve]
            .into_iter()
            .find(|step| step.as_str() == text)
    }

    /// The steps an incident in `state` has taken: the commands that state completes.
    fn done_by(state: IncidentState) -> &'static [DownlinkStep] {
        match state {
            IncidentState::Open => &[],
            IncidentState::Acknowledged => &[DownlinkStep::Acknowledge],
            IncidentState::Resolved => &[DownlinkStep::Acknowledge, DownlinkStep::Resolve],
        }
    }
}

/// A command for an appliance, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredDownlink {
    /// `cmd-` and 16 hex digits; the appliance's journal names it.
    pub command_id: String,
    pub tenant: TenantId,
    pub appliance: ApplianceId,
    pub incident: u64,
    pub step: DownlinkStep,
    /// The operator (an API token's name) as sent: the appliance adds `hq:` itself.
    pub by: String,
    pub comment: Option<String>,
    pub created_at: Micros,
    /// The last time a replica handed it to the broker; `None` before the first time.
    pub sent_at: Option<Micros>,
    /// How many times it was handed to the broker.
    pub sends: u64,
    /// When the appliance recorded the incident at or past the step (its record's time);
    /// `None` while pending.
    pub done_at: Option<Micros>,
}

impl Store {
    /// Acknowledges or resolves an incident at the relay (exactly as
    /// [`Store::acknowledge_incident`] and [`Store::resolve_incident`] do) and, in the same
    /// transaction, stores the command that carries the step to the appliance. `by` is the
    /// operator's name, recorded as the comment's author and sent as is.
    #[allow(clippy::too_many_arguments)]
    pub async fn step_incident_with_downlink(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
        step: DownlinkStep,
        by: &str,
        comment: Option<&str>,
        at: Micros,
    ) -> Result<(Incident, StoredDownlink), StoreError> {
        let mut transaction = self.begin_write().await?;
        let stepped = apply_step(
            &mut transaction,
            scope,
            appliance,
            incident,
            step.incident_step(),
            by,
            comment,
            at,
        )
        .await?;
        let row = sqlx::query(concat!(
            "INSERT INTO downlinks (command_id, tenant_id, appliance_id, incident_id, step, \
             author, comment, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            downlink_columns!()
        ))
        .bind(new_id("cmd"))
        .bind(scope.id())
        .bind(appliance.as_str())
        .bind(to_db("incident id", incident)?)
        .bind(step.as_str())
        .bind(by)
        .bind(comment)
        .bind(at)
        .fetch_one(&mut *transaction)
        .await?;
        let downlink = downlink_from_row(&row)?;
        transaction.commit().await?;
        Ok((stepped, downlink))
    }

    /// The commands sent for one incident, oldest first: whether the appliance has carried
    /// out what operators did at the relay.
    pub async fn incident_downlinks(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
    ) -> Result<Vec<StoredDownlink>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            downlink_columns!(),
            " FROM downlinks WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3 \
              ORDER BY created_at, command_id"
        ))
        .bind(scope.id())
        .bind(appliance.as_str())
        .bind(to_db("incident id", incident)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(downlink_from_row).collect()
    }

    /// Notes that a command was handed to the broker at `at` (a new command, sent at once
    /// after its step). The relay's own path: the appliance and the command id come from a
    /// command this relay stored.
    pub async fn mark_downlink_sent(
        &self,
        appliance: &ApplianceId,
        command_id: &str,
        at: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE downlinks SET sent_at = $3, sends = sends + 1 \
             WHERE appliance_id = $1 AND command_id = $2",
        )
        .bind(appliance.as_str())
        .bind(command_id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The pending commands of an appliance that has just come back online, made at
    /// `created_after` or later, oldest first, marked sent at `now`.
    pub async fn claim_appliance_downlinks(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        now: Micros,
        created_after: Micros,
    ) -> Result<Vec<StoredDownlink>, StoreError> {
        let rows = sqlx::query(concat!(
            "UPDATE downlinks SET sent_at = $3, sends = sends + 1 \
             WHERE tenant_id = $1 AND appliance_id = $2 AND done_at IS NULL \
               AND created_at >= $4 RETURNING ",
            downlink_columns!()
        ))
        .bind(scope.id())
        .bind(appliance.as_str())
        .bind(now)
        .bind(created_after)
        .fetch_all(&self.pool)
        .await?;
        oldest_first(&rows)
    }

    /// The relay's periodic resend, across tenants: up to `limit` pending commands of online
    /// appliances, made at `created_after` or later and not sent since `resend_before` (never
    /// sent counts as sent when made), oldest first, marked sent at `now`. An offline
    /// appliance is left to [`Store::claim_appliance_downlinks`] when it is back: the broker
    /// would queue a copy of every resend for it meanwhile. Of replicas calling this at once,
    /// each row goes to one: the claim is one `UPDATE` that re-checks the condition under the
    /// row's lock.
    pub async fn claim_due_downlinks(
        &self,
        now: Micros,
        resend_before: Micros,
        created_after: Micros,
        limit: u32,
    ) -> Result<Vec<StoredDownlink>, StoreError> {
        let rows = sqlx::query(concat!(
            "UPDATE downlinks SET sent_at = $1, sends = sends + 1 \
             WHERE done_at IS NULL AND COALESCE(sent_at, created_at) <= $2 \
               AND command_id IN (SELECT command_id FROM downlinks \
                 WHERE done_at IS NULL AND created_at >= $3 \
                   AND COALESCE(sent_at, created_at) <= $2 \
                   AND appliance_id IN (SELECT id FROM appliances WHERE online = 1) \
                 ORDER BY created_at, command_id LIMIT $4) \
             RETURNING ",
            downlink_columns!()
        ))
        .bind(now)
        .bind(resend_before)
        .bind(created_after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        oldest_first(&rows)
    }

    /// The relay's gauge, across tenants: how many commands made at `created_after` or later
    /// are still pending.
    pub async fn count_pending_downlinks(&self, created_after: Micros) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending FROM downlinks \
             WHERE done_at IS NULL AND created_at >= $1",
        )
        .bind(created_after)
        .fetch_one(&self.pool)
        .await?;
        u64_column(&row, "pending")
    }
}

/// Completes, in the caller's (ingestion's) transaction, the pending commands for an incident
/// that a record from its appliance shows in `state` at `at`. Returns how many it completed.
pub(super) async fn complete_downlinks(
    connection: &mut AnyConnection,
    scope: &TenantScope,
    appliance: &ApplianceId,
    incident_id: i64,
    state: IncidentState,
    at: Micros,
) -> Result<u64, StoreError> {
    let (Some(first), Some(last)) = (
        DownlinkStep::done_by(state).first(),
        DownlinkStep::done_by(state).last(),
    ) else {
        return Ok(0);
    };
    let done = sqlx::query(
        "UPDATE downlinks SET done_at = $4 \
         WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3 AND done_at IS NULL \
           AND step IN ($5, $6)",
    )
    .bind(scope.id())
    .bind(appliance.as_str())
    .bind(incident_id)
    .bind(at)
    .bind(first.as_str())
    .bind(last.as_str())
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected())
}

/// Rows from an `UPDATE ... RETURNING` (which returns them in no particular order), oldest
/// first.
fn oldest_first(rows: &[AnyRow]) -> Result<Vec<StoredDownlink>, StoreError> {
    let mut downlinks = rows
        .iter()
        .map(downlink_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    downlinks.sort_by(|a, b| (a.created_at, &a.command_id).cmp(&(b.created_at, &b.command_id)));
    Ok(downlinks)
}

fn downlink_from_row(row: &AnyRow) -> Result<StoredDownlink, StoreError> {
    let step: String = row.try_get("step")?;
    Ok(StoredDownlink {
        command_id: row.try_get("command_id")?,
        tenant: id_column(row, "tenant_id")?,
        appliance: id_column(row, "appliance_id")?,
        incident: u64_column(row, "incident_id")?,
        step: DownlinkStep::parse(&step).ok_or_else(|| StoreError::Corrupt {
            column: "step",
            reason: format!("unknown downlink step `{step}`"),
        })?,
        by: row.try_get("author")?,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
        sends: u64_column(row, "sends")?,
        done_at: row.try_get("done_at")?,
    })
}

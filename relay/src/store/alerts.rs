//! Alerts the relay raises itself: for now, an appliance that has been offline for longer
//! than the grace period (`[alerts] offline_after_s`).
//!
//! # When an appliance counts as offline
//!
//! Only claimed appliances count (one waiting to be installed is not expected anywhere). An
//! appliance is offline since its **last sign of life**, which is:
//!
//! - while its last status said *online*: `last_seen_at`, the last time it said so. Appliances
//!   repeat their status every 30 seconds, so one that stops doing so is **silent** (it lost
//!   power or its link, and its last will never reached the relay) and counts as offline
//!   although no message ever said so. This is why the grace period must be longer than the
//!   appliances' status period;
//! - while its last status said *offline* (a goodbye or its last will): `offline_since`;
//! - when it has never sent a status: `claimed_at` (it was alive then: it redeemed its code).
//!
//! That rule is written once, in SQL ([`quiet_since!`]), and used both to find candidates and
//! to check one under its row lock.
//!
//! # Invariants
//!
//! - **At most one open alert per appliance and kind** (a partial unique index), so raising is
//!   idempotent and two relay replicas raising at the same moment make one alert: the loser's
//!   `INSERT ... ON CONFLICT DO NOTHING` returns nothing, and only the winner publishes it.
//! - **An alert is never raised for an appliance that is back.** Each candidate is checked
//!   again after taking the appliance's row lock, the lock [`Store::set_appliance_status`]
//!   takes too; so a status that makes the appliance online either commits first (and the
//!   check sees it) or waits for the alert to commit (and the clear that follows it closes
//!   the alert).

use gatehouse_protocol::ApplianceId;
use jiff::Timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Alert, AlertKind, Micros, Store, StoreError, TenantScope, id_column, new_id};

/// The columns [`alert_from_row`] reads.
macro_rules! alert_columns {
    () => {
        "id, tenant_id, site_id, appliance_id, kind, raised_at, cleared_at, detail"
    };
}

/// The last sign of life of a claimed appliance (see the module note), as a column of
/// `appliances`; NULL for an unclaimed one.
macro_rules! quiet_since {
    () => {
        "CASE WHEN claimed_at IS NULL THEN NULL \
              WHEN online = 1 THEN COALESCE(last_seen_at, claimed_at) \
              ELSE COALESCE(offline_since, claimed_at) END"
    };
}

/// The most alerts [`Store::alerts`] returns, newest first.
const MAX_ALERTS_LISTED: i64 = 1000;

/// The stored text of a kind.
fn kind_text(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::ApplianceOffline => "appliance_offline",
    }
}

fn kind_from_text(text: &str) -> Option<AlertKind> {
    [AlertKind::ApplianceOffline]
        .into_iter()
        .find(|kind| kind_text(*kind) == text)
}

impl Store {
    /// Raises an alert for every claimed appliance (of every tenant) that has been offline
    /// since `now - offline_for` or earlier and has no open offline alert, and returns the
    /// alerts this call raised. Calling it again raises nothing new; with several relay
    /// replicas calling it, each alert is returned to exactly one of them.
    pub async fn raise_offline_alerts(
        &self,
        now: Micros,
        offline_for: Micros,
    ) -> Result<Vec<Alert>, StoreError> {
        if offline_for <= 0 {
            return Err(StoreError::Invalid {
                field: "offline_for",
                reason: format!("the grace period must be positive, got {offline_for} µs"),
            });
        }
        let cutoff = now.saturating_sub(offline_for);
        let candidates = sqlx::query(concat!(
            "SELECT id FROM appliances WHERE ",
            quiet_since!(),
            " <= $1 AND NOT EXISTS (SELECT 1 FROM alerts WHERE alerts.appliance_id = appliances.id \
               AND alerts.kind = $2 AND alerts.cleared_at IS NULL) ORDER BY id"
        ))
        .bind(cutoff)
        .bind(kind_text(AlertKind::ApplianceOffline))
        .fetch_all(&self.pool)
        .await?;
        let mut raised = Vec::new();
        for candidate in &candidates {
            let appliance: ApplianceId = id_column(candidate, "id")?;
            if let Some(alert) = self.raise_offline_alert(&appliance, now, cutoff).await? {
                raised.push(alert);
            }
        }
        Ok(raised)
    }

    /// Raises the offline alert of one appliance if, under its row lock, it is still quiet
    /// since `cutoff` and has no open one.
    async fn raise_offline_alert(
        &self,
        appliance: &ApplianceId,
        now: Micros,
        cutoff: Micros,
    ) -> Result<Option<Alert>, StoreError> {
        let mut transaction = self.begin_write().await?;
        // Touch the row: it stays locked until commit (see the invariants).
        let Some(row) = sqlx::query(concat!(
            "UPDATE appliances SET acked_seq = acked_seq WHERE id = $1 \
             RETURNING tenant_id, site_id, name, online, status_at, ",
            quiet_since!(),
            " AS quiet_since"
        ))
        .bind(appliance.as_str())
        .fetch_optional(&mut *transaction)
        .await?
        else {
            return Ok(None);
        };
        let quiet_since: Option<Micros> = row.try_get("quiet_since")?;
        let Some(since) = quiet_since.filter(|since| *since <= cutoff) else {
            return Ok(None);
        };
        let name: String = row.try_get("name")?;
        let detail = if row.try_get::<Option<Micros>, _>("status_at")?.is_none() {
            format!(
                "appliance `{name}` ({appliance}) has not connected since it was claimed at {}",
                rfc3339(since)
            )
        } else if row.try_get::<i64, _>("online")? == 1 {
            format!(
                "appliance `{name}` ({appliance}) has not been heard from since {}",
                rfc3339(since)
            )
        } else {
            format!(
                "appliance `{name}` ({appliance}) offline since {}",
                rfc3339(since)
            )
        };
        let inserted = sqlx::query(concat!(
            "INSERT INTO alerts (id, tenant_id, site_id, appliance_id, kind, raised_at, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING ",
            alert_columns!()
        ))
        .bind(new_id("alert"))
        .bind(row.try_get::<String, _>("tenant_id")?)
        .bind(row.try_get::<String, _>("site_id")?)
        .bind(appliance.as_str())
        .bind(kind_text(AlertKind::ApplianceOffline))
        .bind(now)
        .bind(detail)
        .fetch_optional(&mut *transaction)
        .await?;
        // Nothing inserted: another replica's alert is open already.
        let alert = inserted.as_ref().map(alert_from_row).transpose()?;
        transaction.commit().await?;
        Ok(alert)
    }

    /// Clears the open offline alert of `appliance` (it is back online) at `now`, and returns
    /// it; `None` when there is none open in the scope's tenant.
    pub async fn clear_offline_alert(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        now: Micros,
    ) -> Result<Option<Alert>, StoreError> {
        // Replicas' clocks differ a little: an alert is never cleared before it was raised.
        let row = sqlx::query(concat!(
            "UPDATE alerts SET cleared_at = CASE WHEN $4 < raised_at THEN raised_at ELSE $4 END \
             WHERE tenant_id = $1 AND appliance_id = $2 AND kind = $3 AND cleared_at IS NULL \
             RETURNING ",
            alert_columns!()
        ))
        .bind(scope.id())
        .bind(appliance.as_str())
        .bind(kind_text(AlertKind::ApplianceOffline))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(alert_from_row).transpose()
    }

    /// The scope's tenant's alerts, newest raised first: only the open ones, or open and
    /// cleared ones; at most the newest 1000 either way.
    pub async fn alerts(
        &self,
        scope: &TenantScope,
        open_only: bool,
    ) -> Result<Vec<Alert>, StoreError> {
        let statement = if open_only {
            concat!(
                "SELECT ",
                alert_columns!(),
                " FROM alerts WHERE tenant_id = $1 AND cleared_at IS NULL \
                  ORDER BY raised_at DESC, id DESC LIMIT $2"
            )
        } else {
            concat!(
                "SELECT ",
                alert_columns!(),
                " FROM alerts WHERE tenant_id = $1 ORDER BY raised_at DESC, id DESC LIMIT $2"
            )
        };
        let rows = sqlx::query(statement)
            .bind(scope.id())
            .bind(MAX_ALERTS_LISTED)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_from_row).collect()
    }
}

/// `at` as RFC 3339 in UTC, for humans; the raw number if it is out of range.
fn rfc3339(at: Micros) -> String {
    Timestamp::from_microsecond(at).map_or_else(|_| format!("{at} µs"), |time| time.to_string())
}

fn alert_from_row(row: &AnyRow) -> Result<Alert, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Alert {
        id: row.try_get("id")?,
        tenant: id_column(row, "tenant_id")?,
        site: id_column(row, "site_id")?,
        appliance: id_column(row, "appliance_id")?,
        kind: kind_from_text(&kind).ok_or_else(|| StoreError::Corrupt {
            column: "kind",
            reason: format!("unknown alert kind `{kind}`"),
        })?,
        raised_at: row.try_get("raised_at")?,
        cleared_at: row.try_get("cleared_at")?,
        detail: row.try_get("detail")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_stored_as_its_serde_name() {
        let kind = AlertKind::ApplianceOffline;
        let serde = serde_json::to_value(kind).unwrap_or_default();
        assert_eq!(serde.as_str(), Some(kind_text(kind)));
        assert_eq!(kind_from_text(kind_text(kind)), Some(kind));
        assert_eq!(kind_from_text("nope"), None);
    }

    #[test]
    fn times_are_written_for_humans() {
        assert_eq!(rfc3339(1_700_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(i64::MAX), format!("{} µs", i64::MAX));
    }
}

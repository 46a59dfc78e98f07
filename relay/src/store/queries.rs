//! What operators see and do: incidents (list, acknowledge, resolve, comment) and events.
//! Every statement here starts from `tenant_id = <the scope's tenant>`.

use gatehouse_protocol::{ApplianceId, IncidentState, LifecycleError};
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::model::severity_from_str;
use super::sql::Sql;
use super::tenants::not_found;
use super::{
    EventCursor, EventFilter, Incident, IncidentComment, IncidentCursor, IncidentFilter,
    IncidentStep, Micros, Page, Paged, Store, StoreError, StoredRecord, TenantScope, check_name,
    check_text, id_column, new_id, to_db, u64_column,
};

/// The columns [`incident_from_row`] reads.
macro_rules! incident_columns {
    () => {
        "appliance_id, incident_id, state, severity, title, opened_at, updated_at, last_seq, body"
    };
}

impl Store {
    /// Incidents of the scope's tenant, newest opened first.
    pub async fn incidents(
        &self,
        scope: &TenantScope,
        filter: &IncidentFilter,
        page: &Page<IncidentCursor>,
    ) -> Result<Paged<Incident, IncidentCursor>, StoreError> {
        let limit = page.effective_limit();
        let mut sql = Sql::new(concat!(
            "SELECT ",
            incident_columns!(),
            " FROM incidents WHERE tenant_id = "
        ));
        sql.text(scope.id());
        if let Some(state) = filter.state {
            sql.push(" AND state = ").text(state.as_str());
        }
        if let Some(appliance) = &filter.appliance {
            sql.push(" AND appliance_id = ").text(appliance.as_str());
        }
        if let Some(site) = &filter.site {
            sql.push(" AND appliance_id IN (SELECT id FROM appliances WHERE tenant_id = ")
                .text(scope.id())
                .push(" AND site_id = ")
                .text(site.as_str())
                .push(")");
        }
        if let Some(after) = &page.after {
            sql.push(" AND (opened_at, appliance_id, incident_id) < (")
                .int(after.opened_at)
                .push(", ")
                .text(after.appliance.as_str())
                .push(", ")
                .int(to_db("cursor id", after.id)?)
                .push(")");
        }
        sql.push(" ORDER BY opened_at DESC, appliance_id DESC, incident_id DESC LIMIT ")
            .int(limit + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut items = rows
            .iter()
            .map(incident_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = next_cursor(&mut items, limit, |last| IncidentCursor {
            opened_at: last.opened_at,
            appliance: last.appliance.clone(),
            id: last.id,
        });
        Ok(Paged { items, next })
    }

    pub async fn incident(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
    ) -> Result<Option<Incident>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            incident_columns!(),
            " FROM incidents WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3"
        ))
        .bind(scope.id())
        .bind(appliance.as_str())
        .bind(to_db("incident id", incident)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(incident_from_row).transpose()
    }

    /// open → acknowledged, by an operator at the relay, with an optional comment. (Carrying
    /// it to the appliance is the caller's business.)
    pub async fn acknowledge_incident(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
        by: &str,
        comment: Option<&str>,
        at: Micros,
    ) -> Result<Incident, StoreError> {
        self.step_incident(
            scope,
            appliance,
            incident,
            IncidentStep::Acknowledge,
            by,
            comment,
            at,
        )
        .await
    }

    /// open or acknowledged → resolved, by an operator at the relay.
    pub async fn resolve_incident(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
        by: &str,
        comment: Option<&str>,
        at: Micros,
    ) -> Result<Incident, StoreError> {
        self.step_incident(
            scope,
            appliance,
            incident,
            IncidentStep::Resolve,
            by,
            comment,
            at,
        )
        .await
    }

    /// Adds an operator's comment to an incident, whatever its state.
    pub async fn comment_incident(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
        by: &str,
        comment: &str,
        at: Micros,
    ) -> Result<Incident, StoreError> {
        self.step_incident(
            scope,
            appliance,
            incident,
            IncidentStep::Comment,
            by,
            Some(comment),
            at,
        )
        .await
    }

    /// The comments and steps taken on an incident at the relay, oldest first.
    pub async fn incident_comments(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
    ) -> Result<Vec<IncidentComment>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, appliance_id, incident_id, created_at, author, step, comment \
             FROM incident_comments \
             WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3 \
             ORDER BY created_at, id",
        )
        .bind(scope.id())
        .bind(appliance.as_str())
        .bind(to_db("incident id", incident)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let step: String = row.try_get("step")?;
                Ok(IncidentComment {
                    id: row.try_get("id")?,
                    appliance: id_column(row, "appliance_id")?,
                    incident: u64_column(row, "incident_id")?,
                    created_at: row.try_get("created_at")?,
                    author: row.try_get("author")?,
                    step: IncidentStep::parse(&step).ok_or_else(|| StoreError::Corrupt {
                        column: "step",
                        reason: format!("unknown step `{step}`"),
                    })?,
                    comment: row.try_get("comment")?,
                })
            })
            .collect()
    }

    /// Stored records of the scope's tenant, newest first.
    pub async fn events(
        &self,
        scope: &TenantScope,
        filter: &EventFilter,
        page: &Page<EventCursor>,
    ) -> Result<Paged<StoredRecord, EventCursor>, StoreError> {
        let limit = page.effective_limit();
        let mut sql = Sql::new(
            "SELECT appliance_id, seq, through_seq, recorded_at, kind, device, point, \
             incident_id, body FROM records WHERE tenant_id = ",
        );
        sql.text(scope.id());
        if let Some(site) = &filter.site {
            sql.push(" AND appliance_id IN (SELECT id FROM appliances WHERE tenant_id = ")
                .text(scope.id())
                .push(" AND site_id = ")
                .text(site.as_str())
                .push(")");
        }
        if let Some(appliance) = &filter.appliance {
            sql.push(" AND appliance_id = ").text(appliance.as_str());
        }
        if let Some(kind) = &filter.kind {
            sql.push(" AND kind = ").text(kind);
        }
        if let Some(device) = &filter.device {
            sql.push(" AND device = ").text(device);
        }
        if let Some(point) = &filter.point {
            sql.push(" AND point = ").text(point);
        }
        if let Some(incident) = filter.incident {
            sql.push(" AND incident_id = ")
                .int(to_db("incident id", incident)?);
        }
        if let Some(from) = filter.from {
            sql.push(" AND recorded_at >= ").int(from);
        }
        if let Some(until) = filter.until {
            sql.push(" AND recorded_at <= ").int(until);
        }
        if let Some(after) = &page.after {
            sql.push(" AND (recorded_at, appliance_id, seq) < (")
                .int(after.recorded_at)
                .push(", ")
                .text(after.appliance.as_str())
                .push(", ")
                .int(to_db("cursor seq", after.seq)?)
                .push(")");
        }
        sql.push(" ORDER BY recorded_at DESC, appliance_id DESC, seq DESC LIMIT ")
            .int(limit + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut items = rows
            .iter()
            .map(|row| {
                Ok(StoredRecord {
                    appliance: id_column(row, "appliance_id")?,
                    seq: u64_column(row, "seq")?,
                    through_seq: u64_column(row, "through_seq")?,
                    recorded_at: row.try_get("recorded_at")?,
                    kind: row.try_get("kind")?,
                    device: row.try_get("device")?,
                    point: row.try_get("point")?,
                    incident: row
                        .try_get::<Option<i64>, _>("incident_id")?
                        .map(|id| super::from_db("incident_id", id))
                        .transpose()?,
                    body: row.try_get("body")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = next_cursor(&mut items, limit, |last| EventCursor {
            recorded_at: last.recorded_at,
            appliance: last.appliance.clone(),
            seq: last.seq,
        });
        Ok(Paged { items, next })
    }

    /// One operator step on an incident, in a transaction of its own (see [`apply_step`]).
    #[allow(clippy::too_many_arguments)]
    async fn step_incident(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incident: u64,
        step: IncidentStep,
        by: &str,
        comment: Option<&str>,
        at: Micros,
    ) -> Result<Incident, StoreError> {
        let mut transaction = self.begin_write().await?;
        let incident = apply_step(
            &mut transaction,
            scope,
            appliance,
            incident,
            step,
            by,
            comment,
            at,
        )
        .await?;
        transaction.commit().await?;
        Ok(incident)
    }
}

/// One operator step on an incident, in the caller's transaction: the state change (if any),
/// the comment row, and the incident as it now stands. (`downlinks.rs` adds the command that
/// carries the step to the appliance to the same transaction.)
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply_step(
    connection: &mut AnyConnection,
    scope: &TenantScope,
    appliance: &ApplianceId,
    incident: u64,
    step: IncidentStep,
    by: &str,
    comment: Option<&str>,
    at: Micros,
) -> Result<Incident, StoreError> {
    check_name("author", by)?;
    if let Some(comment) = comment {
        check_text("comment", comment, 4000)?;
    }
    let incident_id = to_db("incident id", incident)?;
    let update = match step {
        IncidentStep::Comment => None,
        IncidentStep::Acknowledge => Some(
            "UPDATE incidents SET state = 'acknowledged', updated_at = $4 \
             WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3 \
             AND state = 'open'",
        ),
        IncidentStep::Resolve => Some(
            "UPDATE incidents SET state = 'resolved', updated_at = $4 \
             WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3 \
             AND state IN ('open', 'acknowledged')",
        ),
    };
    let changed = match update {
        Some(statement) => {
            sqlx::query(statement)
                .bind(scope.id())
                .bind(appliance.as_str())
                .bind(incident_id)
                .bind(at)
                .execute(&mut *connection)
                .await?
                .rows_affected()
                == 1
        }
        None => false,
    };
    if !changed {
        let state = incident_state(connection, scope, appliance, incident_id)
            .await?
            .ok_or_else(|| not_found("incident", &format!("{appliance}/{incident}")))?;
        let refusal = match (step, state) {
            (IncidentStep::Comment, _) => None,
            (_, IncidentState::Resolved) => Some(LifecycleError::AlreadyResolved(incident)),
            (_, _) => Some(LifecycleError::AlreadyAcknowledged(incident)),
        };
        if let Some(source) = refusal {
            return Err(StoreError::Lifecycle {
                appliance: appliance.as_str().to_owned(),
                source,
            });
        }
    }
    sqlx::query(
        "INSERT INTO incident_comments (id, tenant_id, appliance_id, incident_id, \
         created_at, author, step, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id("note"))
    .bind(scope.id())
    .bind(appliance.as_str())
    .bind(incident_id)
    .bind(at)
    .bind(by)
    .bind(step.as_str())
    .bind(comment)
    .execute(&mut *connection)
    .await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3"
    ))
    .bind(scope.id())
    .bind(appliance.as_str())
    .bind(incident_id)
    .fetch_one(&mut *connection)
    .await?;
    incident_from_row(&row)
}

async fn incident_state(
    connection: &mut AnyConnection,
    scope: &TenantScope,
    appliance: &ApplianceId,
    incident_id: i64,
) -> Result<Option<IncidentState>, StoreError> {
    let row = sqlx::query(
        "SELECT state FROM incidents \
         WHERE tenant_id = $1 AND appliance_id = $2 AND incident_id = $3",
    )
    .bind(scope.id())
    .bind(appliance.as_str())
    .bind(incident_id)
    .fetch_optional(&mut *connection)
    .await?;
    row.map(|row| state_column(&row)).transpose()
}

/// Keeps the first `limit` items; the cursor after the last of them when there were more.
fn next_cursor<T, C>(items: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> C) -> Option<C> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().map(cursor)
}

fn state_column(row: &AnyRow) -> Result<IncidentState, StoreError> {
    let text: String = row.try_get("state")?;
    text.parse().map_err(|reason| StoreError::Corrupt {
        column: "state",
        reason,
    })
}

fn incident_from_row(row: &AnyRow) -> Result<Incident, StoreError> {
    let severity: String = row.try_get("severity")?;
    Ok(Incident {
        appliance: id_column(row, "appliance_id")?,
        id: u64_column(row, "incident_id")?,
        state: state_column(row)?,
        severity: severity_from_str(&severity).ok_or_else(|| StoreError::Corrupt {
            column: "severity",
            reason: format!("unknown severity `{severity}`"),
        })?,
        title: row.try_get("title")?,
        opened_at: row.try_get("opened_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seq: u64_column(row, "last_seq")?,
        body: row.try_get("body")?,
    })
}

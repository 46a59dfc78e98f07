//! Ingestion: an appliance's batch of records, stored once each, in one transaction, and the
//! contiguous ack that follows from it. See the module note of [`super`] for the invariants.

use std::collections::HashSet;

use gatehouse_protocol::ApplianceId;
use sqlx::AnyConnection;
use sqlx::Row;

use super::downlinks::complete_downlinks;
use super::sql::Sql;
use super::{
    IngestIncident, IngestOutcome, IngestRecord, InsertLimits, Store, StoreError, TenantScope,
    id_column, to_db, u64_column,
};

/// The most records one batch may hold (appliances send at most 500): a batch is one
/// transaction that holds the appliance's row lock, so its size bounds how long it takes.
pub const MAX_BATCH_RECORDS: usize = 5000;

/// How many rows after the ack one query reads while advancing it.
const ADVANCE_CHUNK: i64 = 256;

/// What a record adds to a statement's values besides its texts: eight 4-byte lengths and
/// four 8-byte integers, with room to spare.
const RECORD_OVERHEAD_BYTES: usize = 96;

/// What a batch did, record by record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub outcome: IngestOutcome,
    /// The seqs this batch stored for the first time (the others were duplicates), in batch
    /// order: what happened once, to be logged once.
    pub stored: Vec<u64>,
    /// Pending HQ commands its incident records completed.
    pub downlinks_done: u64,
}

/// A record checked and converted to column values.
struct CheckedRecord<'a> {
    record: &'a IngestRecord,
    seq: i64,
    through_seq: i64,
    incident_id: Option<i64>,
}

impl IngestRecord {
    /// Whether [`Store::ingest`] can store this record: its seq, eviction range and incident
    /// id must fit the columns. A batch with a record that does not is refused whole.
    pub fn check(&self) -> Result<(), StoreError> {
        check_record(self).map(|_| ())
    }
}

impl Store {
    /// Stores a batch of an appliance's records. Records already stored are duplicates and
    /// change nothing; incident changes update the incident's state when they are newer than
    /// it. Returns the ack: every record up to `highest_contiguous_seq` is now durably stored.
    ///
    /// This is the relay's own path (the appliance is authenticated by the broker); the tenant
    /// comes from the appliance.
    pub async fn ingest(
        &self,
        appliance: &ApplianceId,
        records: &[IngestRecord],
    ) -> Result<IngestOutcome, StoreError> {
        Ok(self.ingest_report(appliance, records).await?.outcome)
    }

    /// [`Store::ingest`], saying also which records were new and which HQ commands the batch
    /// completed (an incident record at or past a pending command's step completes it, in the
    /// batch's transaction).
    pub async fn ingest_report(
        &self,
        appliance: &ApplianceId,
        records: &[IngestRecord],
    ) -> Result<IngestReport, StoreError> {
        if records.len() > MAX_BATCH_RECORDS {
            return Err(StoreError::Invalid {
                field: "records",
                reason: format!(
                    "a batch holds at most {MAX_BATCH_RECORDS} records, this one {}",
                    records.len()
                ),
            });
        }
        let rows = records
            .iter()
            .map(check_record)
            .collect::<Result<Vec<_>, _>>()?;
        let mut transaction = self.begin_write().await?;
        let connection: &mut AnyConnection = &mut transaction;

        // Touch the appliance first: its row stays locked until commit, so batches of one
        // appliance are applied one after the other even across relay replicas.
        let locked = sqlx::query(
            "UPDATE appliances SET acked_seq = acked_seq WHERE id = $1 \
             RETURNING tenant_id, acked_seq",
        )
        .bind(appliance.as_str())
        .fetch_optional(&mut *connection)
        .await?
        .ok_or_else(|| StoreError::UnknownAppliance(appliance.as_str().to_owned()))?;
        let scope = TenantScope::new(id_column(&locked, "tenant_id")?);
        let acked_before = u64_column(&locked, "acked_seq")?;

        let inserted = insert_records(connection, self.inserts, appliance, &rows).await?;
        let mut stored = Vec::new();
        let mut downlinks_done = 0;
        let mut covered = Vec::new();
        for row in pick(&rows, &inserted, true) {
            stored.push(row.record.seq);
            covered.push((row.seq, row.through_seq));
            if let (Some(incident), Some(incident_id)) = (&row.record.incident, row.incident_id) {
                upsert_incident(connection, &scope, appliance, row, incident, incident_id).await?;
                downlinks_done += complete_downlinks(
                    connection,
                    &scope,
                    appliance,
                    incident_id,
                    incident.state,
                    row.record.recorded_at,
                )
                .await?;
            }
        }
        for row in pick(&rows, &inserted, false) {
            if row.record.evicted_through.is_some()
                && widen_marker(connection, appliance, row).await?
            {
                covered.push((row.seq, row.through_seq));
            }
        }

        let acked = advance_ack(connection, appliance, acked_before, &mut covered).await?;
        if acked != acked_before {
            sqlx::query("UPDATE appliances SET acked_seq = $2 WHERE id = $1")
                .bind(appliance.as_str())
                .bind(to_db("acked_seq", acked)?)
                .execute(&mut *connection)
                .await?;
        }
        transaction.commit().await?;
        let inserted = stored.len();
        Ok(IngestReport {
            outcome: IngestOutcome {
                scope,
                highest_contiguous_seq: acked,
                inserted,
                duplicates: rows.len() - inserted,
            },
            stored,
            downlinks_done,
        })
    }
}

fn check_record(record: &IngestRecord) -> Result<CheckedRecord<'_>, StoreError> {
    if record.seq == 0 {
        return Err(StoreError::Invalid {
            field: "seq",
            reason: "sequences start at 1".to_owned(),
        });
    }
    let through = record.evicted_through.unwrap_or(record.seq);
    if through < record.seq {
        return Err(StoreError::Invalid {
            field: "evicted_through",
            reason: format!(
                "an eviction marker at seq {} cannot end before it, at {through}",
                record.seq
            ),
        });
    }
    Ok(CheckedRecord {
        record,
        seq: to_db("seq", record.seq)?,
        through_seq: to_db("evicted_through", through)?,
        incident_id: record
            .incident
            .as_ref()
            .map(|incident| to_db("incident id", incident.id))
            .transpose()?,
    })
}

/// Inserts the batch's records, as many to a statement as `limits` allow, skipping those whose
/// `(appliance, seq)` is stored (and a seq repeated within the batch after its first
/// occurrence). Says, record by record, whether it was inserted. Must run under the
/// appliance's row lock.
///
/// One statement per chunk rather than one per record: the per-statement round trip is what
/// bounds a backlog drain. And what PostgreSQL does per record is kept small:
///
/// - The values carry no tenant and no appliance: the statement takes both columns from the
///   appliance's own row, so a record's tenant cannot differ from its appliance's. This is the
///   only statement that inserts records, and it stands in for a foreign key
///   `(tenant_id, appliance_id) → appliances`, which PostgreSQL would check record by record
///   (see `migrations/0005_records_without_foreign_key.sql`).
/// - Only records at or below the highest seq stored for the appliance can be duplicates:
///   under the appliance's lock no one else stores its records, and the batch's own repeats
///   are left out. Those few go in `INSERT ... ON CONFLICT DO NOTHING RETURNING seq` (whose
///   check costs PostgreSQL one more index search per record); the others, all of a
///   backlog, in plain `INSERT`s, which return nothing: they insert every row or fail.
async fn insert_records(
    connection: &mut AnyConnection,
    limits: InsertLimits,
    appliance: &ApplianceId,
    rows: &[CheckedRecord<'_>],
) -> Result<Vec<bool>, StoreError> {
    let mut first_occurrence = HashSet::with_capacity(rows.len());
    let unique: Vec<bool> = rows
        .iter()
        .map(|row| first_occurrence.insert(row.seq))
        .collect();
    let highest_stored: Option<i64> =
        sqlx::query("SELECT MAX(seq) AS highest FROM records WHERE appliance_id = $1")
            .bind(appliance.as_str())
            .fetch_one(&mut *connection)
            .await?
            .try_get("highest")?;
    let (new, maybe_stored): (Vec<&CheckedRecord<'_>>, Vec<&CheckedRecord<'_>>) =
        pick(rows, &unique, true).partition(|row| Some(row.seq) > highest_stored);
    let mut inserted_seqs = HashSet::with_capacity(rows.len());
    for chunk in statement_chunks(&new, limits) {
        let done = insert_statement(appliance, chunk, "")
            .query()
            .execute(&mut *connection)
            .await?;
        // All or an error: the appliance's row is there (locked), and so is no record of the
        // chunk.
        if done.rows_affected() != chunk.len() as u64 {
            return Err(StoreError::Corrupt {
                column: "records",
                reason: format!(
                    "{} of {} new records were inserted",
                    done.rows_affected(),
                    chunk.len()
                ),
            });
        }
        inserted_seqs.extend(chunk.iter().map(|row| row.seq));
    }
    for chunk in statement_chunks(&maybe_stored, limits) {
        let sql = insert_statement(appliance, chunk, SKIP_STORED);
        for returned in sql.query().fetch_all(&mut *connection).await? {
            inserted_seqs.insert(returned.try_get::<i64, _>("seq")?);
        }
    }
    Ok(rows
        .iter()
        .zip(unique)
        .map(|(row, unique)| unique && inserted_seqs.contains(&row.seq))
        .collect())
}

/// What ends an `INSERT` of records that may be stored already: it skips them and says which
/// it inserted.
const SKIP_STORED: &str = " ON CONFLICT (appliance_id, seq) DO NOTHING RETURNING seq";

/// One `INSERT` of `rows` for `appliance`, ending with `tail`.
fn insert_statement(
    appliance: &ApplianceId,
    rows: &[&CheckedRecord<'_>],
    tail: &'static str,
) -> Sql {
    // A CTE names the columns of VALUES on both databases (SQLite has no `AS v (...)`). The
    // `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    let mut sql = Sql::new(
        "WITH batch (seq, through_seq, recorded_at, kind, device, point, incident_id, body) \
         AS (VALUES ",
    );
    for (index, row) in rows.iter().enumerate() {
        let record = row.record;
        sql.push(if index == 0 { "(" } else { ", (" })
            .int(row.seq)
            .push(", ")
            .int(row.through_seq)
            .push(", ")
            .int(record.recorded_at)
            .push(", ")
            .text(record.kind.as_str())
            .push(", ")
            .optional_text(record.device.as_deref())
            .push(", ")
            .optional_text(record.point.as_deref())
            .push(", ")
            .optional_int(row.incident_id)
            .push(", ")
            .text(record.body.as_str())
            .push(")");
    }
    sql.push(
        ") INSERT INTO records (tenant_id, appliance_id, seq, through_seq, recorded_at, kind, \
         device, point, incident_id, body) \
         SELECT appliances.tenant_id, appliances.id, batch.seq, batch.through_seq, \
         batch.recorded_at, batch.kind, batch.device, batch.point, batch.incident_id, \
         batch.body \
         FROM appliances, batch WHERE appliances.id = ",
    )
    .text(appliance.as_str());
    sql.push(tail);
    sql
}

/// Splits records into runs that each fit one `INSERT`; a record larger than the budget
/// goes alone.
fn statement_chunks<'r, 'a>(
    rows: &'r [&'r CheckedRecord<'a>],
    limits: InsertLimits,
) -> Vec<&'r [&'r CheckedRecord<'a>]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, row) in rows.iter().enumerate() {
        let record = row.record;
        let size = RECORD_OVERHEAD_BYTES
            + record.kind.len()
            + record.device.as_ref().map_or(0, String::len)
            + record.point.as_ref().map_or(0, String::len)
            + record.body.len();
        if index > start && (index - start == limits.rows || bytes + size > limits.bytes) {
            chunks.push(&rows[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// The rows whose flag is `wanted`, in order.
fn pick<'r, 'a>(
    rows: &'r [CheckedRecord<'a>],
    flags: &'r [bool],
    wanted: bool,
) -> impl Iterator<Item = &'r CheckedRecord<'a>> {
    rows.iter()
        .zip(flags)
        .filter_map(move |(row, &flag)| (flag == wanted).then_some(row))
}

/// An eviction marker whose seq is already stored (the appliance sent that record, then
/// evicted it unacknowledged): the stored row now covers the marker's range too, so the ack
/// can pass it. True when the range grew.
async fn widen_marker(
    connection: &mut AnyConnection,
    appliance: &ApplianceId,
    row: &CheckedRecord<'_>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE records SET through_seq = $3 \
         WHERE appliance_id = $1 AND seq = $2 AND through_seq < $3",
    )
    .bind(appliance.as_str())
    .bind(row.seq)
    .bind(row.through_seq)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Applies an incident change unless the stored state comes from a newer record; the
/// lifecycle never goes back (an acknowledgement made at the relay survives).
async fn upsert_incident(
    connection: &mut AnyConnection,
    scope: &TenantScope,
    appliance: &ApplianceId,
    row: &CheckedRecord<'_>,
    incident: &IngestIncident,
    incident_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incidents (tenant_id, appliance_id, incident_id, state, severity, title, \
         opened_at, updated_at, last_seq, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (appliance_id, incident_id) DO UPDATE SET \
           state = CASE \
             WHEN incidents.state = 'resolved' THEN incidents.state \
             WHEN incidents.state = 'acknowledged' AND excluded.state = 'open' \
               THEN incidents.state \
             ELSE excluded.state END, \
           severity = excluded.severity, title = excluded.title, \
           opened_at = excluded.opened_at, updated_at = excluded.updated_at, \
           last_seq = excluded.last_seq, body = excluded.body \
         WHERE incidents.last_seq < excluded.last_seq",
    )
    .bind(scope.id())
    .bind(appliance.as_str())
    .bind(incident_id)
    .bind(incident.state.as_str())
    .bind(incident.severity.as_str())
    .bind(incident.title.as_str())
    .bind(incident.opened_at)
    .bind(row.record.recorded_at)
    .bind(row.seq)
    .bind(row.record.body.as_str())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The new ack: from `acked`, first through the ranges this batch stored at or below it (an
/// eviction marker can reach past it), then through the stored rows after it, in order, up to
/// the first gap.
async fn advance_ack(
    connection: &mut AnyConnection,
    appliance: &ApplianceId,
    acked: u64,
    covered: &mut [(i64, i64)],
) -> Result<u64, StoreError> {
    let mut acked = to_db("acked_seq", acked)?;
    covered.sort_unstable();
    for &(seq, through) in covered.iter() {
        if seq <= acked.saturating_add(1) {
            acked = acked.max(through);
        }
    }
    loop {
        let rows = sqlx::query(
            "SELECT seq, through_seq FROM records WHERE appliance_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(appliance.as_str())
        .bind(acked)
        .bind(ADVANCE_CHUNK)
        .fetch_all(&mut *connection)
        .await?;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            if seq > acked.saturating_add(1) {
                return super::from_db("acked_seq", acked);
            }
            acked = acked.max(row.try_get("through_seq")?);
        }
        if rows.len() < ADVANCE_CHUNK as usize {
            return super::from_db("acked_seq", acked);
        }
    }
}

//! The clips table: every clip a rule asked for, from request to file (or failure).
//!
//! A clip row is inserted in the transaction of the rule's trigger, so a request is never
//! lost; it is linked to the incident its rule raised for the same trigger (in that
//! transaction, or later when an entry delay held the raise back; a trigger that came while
//! that delay ran goes with the raise it ends in), and the incident carries a
//! [`ClipRef`]. When the video service has written the clip (or given up), [`finish`] records
//! the outcome and, for a linked incident, updates its `ClipRef` with an `evidence_added`
//! incident event, so the console and the relay learn the clip is ready.
//!
//! Layout: `clips(id, camera, rule, incident, trigger_at µs, from_at µs, to_at µs, state,
//! reason, file, snapshot, bytes, duration_ms, created_at µs)`; `file` and `snapshot` are
//! names inside the video storage's `clips/` folder.

use gatehouse_protocol::{ClipRef, ClipState, DeviceId, EventBody, Incident, IncidentChange};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension as _, Row, Transaction, params};
use serde::Serialize;

use super::writer::{load_incident, store_incident};
use super::{JournalError, from_micros, to_micros};

/// A clip the video service must make, handed over after its row is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipRequest {
    pub id: u64,
    pub camera: DeviceId,
    /// The trigger.
    pub at: Timestamp,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// How a clip ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ClipOutcome {
    Ready {
        file: String,
        snapshot: Option<String>,
        bytes: u64,
        duration_ms: u64,
    },
    Failed {
        reason: String,
    },
}

/// A clip as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClipRecord {
    pub id: u64,
    #[schema(value_type = String)]
    pub camera: DeviceId,
    pub rule: Option<String>,
    pub incident: Option<u64>,
    #[schema(value_type = String, format = DateTime)]
    pub trigger_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    pub state: ClipState,
    pub reason: Option<String>,
    /// The MP4's name in the storage (not a path a client can use: the API signs URLs).
    #[serde(skip)]
    pub file: Option<String>,
    #[serde(skip)]
    pub snapshot: Option<String>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// Records a rule's request for a clip; returns the request to hand over after commit.
pub fn insert(
    tx: &Transaction,
    rule: &str,
    camera: &DeviceId,
    (at, from, to): (Timestamp, Timestamp, Timestamp),
    now: Timestamp,
) -> Result<ClipRequest, JournalError> {
    tx.prepare_cached(
        "INSERT INTO clips (camera, rule, trigger_at, from_at, to_at, state, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'recording', ?6)",
    )?
    .execute(params![
        camera.as_str(),
        rule,
        to_micros(at),
        to_micros(from),
        to_micros(to),
        to_micros(now)
    ])?;
    Ok(ClipRequest {
        id: tx.last_insert_rowid() as u64,
        camera: camera.clone(),
        at,
        from,
        to,
    })
}

/// How many clips an incident names: the first, then the latest. An incident left open
/// over a weekend by a door that keeps opening would otherwise grow without end in every
/// event about it; the clips it no longer names stay linked (`/api/v1/clips?incident=`).
pub const MAX_CLIPS: usize = 100;

/// Links the clips `rule` asked for at the trigger `at` (and not yet linked) to `incident`,
/// adding their references to it (at most [`MAX_CLIPS`]).
pub fn attach(
    tx: &Transaction,
    incident: &mut Incident,
    at: Timestamp,
) -> Result<(), JournalError> {
    let mut statement = tx.prepare_cached(
        "UPDATE clips SET incident = ?1 WHERE rule = ?2 AND trigger_at = ?3 AND incident IS NULL \
         RETURNING id, camera, rule, incident, trigger_at, from_at, to_at, state, reason, file, \
         snapshot, bytes, duration_ms, created_at",
    )?;
    let linked = statement
        .query_map(
            params![incident.id as i64, incident.rule.as_str(), to_micros(at)],
            record,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    for clip in linked {
        super::push_keeping_first(&mut incident.clips, reference(&clip), MAX_CLIPS);
    }
    Ok(())
}

/// Records how clip `id` ended; the incident event to journal when it belongs to one.
pub fn finish(
    tx: &Transaction,
    id: u64,
    outcome: &ClipOutcome,
) -> Result<Option<EventBody>, JournalError> {
    let changed = match outcome {
        ClipOutcome::Ready {
            file,
            snapshot,
            bytes,
            duration_ms,
        } => tx
            .prepare_cached(
                "UPDATE clips SET state = 'ready', file = ?2, snapshot = ?3, bytes = ?4, \
                 duration_ms = ?5 WHERE id = ?1 AND state = 'recording'",
            )?
            .execute(params![
                id as i64,
                file,
                snapshot,
                *bytes as i64,
                *duration_ms as i64
            ])?,
        ClipOutcome::Failed { reason } => tx
            .prepare_cached(
                "UPDATE clips SET state = 'failed', reason = ?2 WHERE id = ?1 AND state = 'recording'",
            )?
            .execute(params![id as i64, reason])?,
    };
    if changed == 0 {
        return Ok(None);
    }
    let Some(clip) = get(tx, id)? else {
        return Ok(None);
    };
    let Some(mut incident) = clip
        .incident
        .map(|i| load_incident(tx, i))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    // A clip the incident no longer names (past MAX_CLIPS) changes nothing in it.
    let Some(named) = incident.clips.iter_mut().find(|c| c.id == id) else {
        return Ok(None);
    };
    *named = reference(&clip);
    store_incident(tx, &incident)?;
    Ok(Some(EventBody::Incident {
        change: IncidentChange::EvidenceAdded,
        incident: Box::new(incident),
    }))
}

/// Forgets clips whose files retention deleted.
pub fn forget(tx: &Transaction, ids: &[u64]) -> Result<(), JournalError> {
    let mut statement = tx.prepare_cached("DELETE FROM clips WHERE id = ?1")?;
    for id in ids {
        statement.execute([*id as i64])?;
    }
    Ok(())
}

/// One clip.
pub fn get(connection: &Connection, id: u64) -> Result<Option<ClipRecord>, JournalError> {
    Ok(connection
        .prepare_cached(&format!("SELECT {COLUMNS} FROM clips WHERE id = ?1"))?
        .query_row([id as i64], record)
        .optional()?)
}

/// Clips newest first, of one camera or incident if asked, below id `before`.
pub fn list(
    connection: &Connection,
    camera: Option<&DeviceId>,
    incident: Option<u64>,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<ClipRecord>, JournalError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM clips WHERE (?1 IS NULL OR camera = ?1) \
         AND (?2 IS NULL OR incident = ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
    ))?;
    let rows = statement.query_map(
        params![
            camera.map(DeviceId::as_str),
            incident.map(|i| i as i64),
            before.map(|b| b as i64),
            limit
        ],
        record,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Clips still recording (after a restart, their pre-event video is gone).
pub fn recording(connection: &Connection) -> Result<Vec<ClipRecord>, JournalError> {
    oldest_first(connection, "state = 'recording'")
}

/// Finished clips (ready or failed) oldest first: what retention walks.
pub fn finished_oldest_first(connection: &Connection) -> Result<Vec<ClipRecord>, JournalError> {
    oldest_first(connection, "state != 'recording'")
}

/// The clips matching `condition` (a constant SQL expression), by id.
fn oldest_first(
    connection: &Connection,
    condition: &'static str,
) -> Result<Vec<ClipRecord>, JournalError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM clips WHERE {condition} ORDER BY id"
    ))?;
    let rows = statement.query_map([], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const COLUMNS: &str = "id, camera, rule, incident, trigger_at, from_at, to_at, state, reason, \
     file, snapshot, bytes, duration_ms, created_at";

fn record(row: &Row) -> rusqlite::Result<ClipRecord> {
    let camera: String = row.get(1)?;
    let state: String = row.get(7)?;
    Ok(ClipRecord {
        id: row.get::<_, i64>(0)? as u64,
        camera: DeviceId::new(&camera).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, error.into())
        })?,
        rule: row.get(2)?,
        incident: row.get::<_, Option<i64>>(3)?.map(|i| i as u64),
        trigger_at: from_micros(row.get(4)?),
        from: from_micros(row.get(5)?),
        to: from_micros(row.get(6)?),
        state: match state.as_str() {
            "ready" => ClipState::Ready,
            "failed" => ClipState::Failed,
            _ => ClipState::Recording,
        },
        reason: row.get(8)?,
        file: row.get(9)?,
        snapshot: row.get(10)?,
        bytes: row.get::<_, Option<i64>>(11)?.map(|b| b as u64),
        duration_ms: row.get::<_, Option<i64>>(12)?.map(|d| d as u64),
        created_at: from_micros(row.get(13)?),
    })
}

fn reference(clip: &ClipRecord) -> ClipRef {
    ClipRef {
        id: clip.id,
        camera: clip.camera.clone(),
        from: clip.from,
        to: clip.to,
        state: clip.state,
        reason: clip.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_protocol::{IncidentState, Severity};

    use super::*;

    #[test]
    fn an_incident_names_its_first_and_latest_clips_and_the_rest_stay_linked() -> anyhow::Result<()>
    {
        let folder = tempfile::tempdir()?;
        let mut connection = super::super::open_for_writing(&folder.path().join("j.db"), false)?;
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT INTO incidents (state, opened_at, body) VALUES ('open', 0, '{}')",
            [],
        )?;
        let mut incident = Incident {
            id: tx.last_insert_rowid() as u64,
            rule: "intrusion".parse()?,
            title: "Intrusion".into(),
            severity: Severity::High,
            zone: None,
            state: IncidentState::Open,
            opened_at: Timestamp::UNIX_EPOCH,
            evidence: Vec::new(),
            escalations: 0,
            acknowledged: None,
            resolved: None,
            clips: Vec::new(),
        };
        let camera: DeviceId = "cam.lobby".parse()?;
        let mut ids = Vec::new();
        for second in 0..(MAX_CLIPS as i64 + 5) {
            let at = Timestamp::from_second(second)?;
            ids.push(insert(&tx, "intrusion", &camera, (at, at, at), at)?.id);
            attach(&tx, &mut incident, at)?;
        }
        store_incident(&tx, &incident)?;
        let named: Vec<u64> = incident.clips.iter().map(|c| c.id).collect();
        assert_eq!(named.len(), MAX_CLIPS);
        assert_eq!(named[0], ids[0]);
        assert_eq!(named[1..], ids[6..]);

        // A clip it no longer names finishes without an incident event; one it names updates.
        let ready = ClipOutcome::Ready {
            file: "x.mp4".into(),
            snapshot: None,
            bytes: 1,
            duration_ms: 1,
        };
        assert_eq!(finish(&tx, ids[1], &ready)?, None);
        assert_eq!(
            get(&tx, ids[1])?.and_then(|c| c.incident),
            Some(incident.id)
        );
        let event = finish(&tx, ids[0], &ready)?;
        let Some(EventBody::Incident { incident, .. }) = event else {
            anyhow::bail!("no incident event: {event:?}");
        };
        assert_eq!(incident.clips[0].state, ClipState::Ready);
        assert_eq!(incident.clips.len(), MAX_CLIPS);
        Ok(())
    }
}

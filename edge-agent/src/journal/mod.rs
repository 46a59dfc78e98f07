//! The journal: every event, durably, in order.
//!
//! # Invariants
//! - **One writer.** A dedicated thread owns the only write connection. Adapters, the API and
//!   the rules talk to it through a bounded channel ([`JournalHandle`]); when the disk is slow
//!   the channel fills and senders wait (back-pressure), nothing is dropped.
//! - **Commit before anything else sees it.** An event gets its `seq` inside a transaction; only
//!   after `COMMIT` returns is it applied to the live state, evaluated by the rules' effects
//!   published, and broadcast to the stream. So whatever a client was ever shown survives a
//!   kill -9 of the agent.
//! - **Incidents change in the same transaction as the event that caused them.** A rule that
//!   fires on an event opens its incident (or adds evidence, or escalates it, or changes a
//!   zone's mode) in that event's transaction, with the rules' saved state, so a crash never
//!   leaves an alarm-worthy event without its incident, an incident without its evidence, or
//!   a timer forgotten (see [`rules`]).
//! - **Batching.** The writer takes everything waiting (up to `batch_max_events`) into one
//!   transaction: one fsync serves many events when busy, and an idle agent commits at once.
//! - **`seq` is never reused** (`AUTOINCREMENT`), even after retention deletes every row, so a
//!   cursor held by a client never points at a different event.
//!
//! # On-disk layout
//! `events(seq, recorded_at µs, kind, device, point, body JSON)` with indexes on time, device
//! and point; `incidents(id, state, opened_at µs, body JSON)` holding each incident's current
//! state; `rule_state` holding the rules engine's saved state (one row); `clips` holding every clip
//! the rules asked for ([`clips`]). The schema version is `PRAGMA user_version`; migrations run at open.

mod checkpoint;
pub mod clips;
pub mod query;
pub mod rules;
mod writer;

use std::path::Path;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags};

pub use query::{EventQuery, IncidentQuery, Order, Page, Reader};
pub use writer::{IncidentAction, IncidentError, JournalHandle, Writer, WriterSettings};

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode or decode a journal record: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "the journal at {path} has schema version {found}, newer than this agent ({supported})"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("the journal writer has stopped")]
    Closed,
    #[error("the journal holds something unreadable: {0}")]
    Corrupt(String),
}

/// Each migration brings the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: events and incidents.
    r#"
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    device TEXT,
    point TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_time ON events(recorded_at);
CREATE INDEX events_by_device ON events(device, seq) WHERE device IS NOT NULL;
CREATE INDEX events_by_point ON events(point, seq) WHERE point IS NOT NULL;
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX incidents_by_state ON incidents(state, id);
"#,
    // 2: the outbox to the relay (see uplink/mod.rs).
    r#"
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX outbox_by_priority ON outbox(priority, seq);
CREATE TABLE outbox_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    acked INTEGER NOT NULL,
    dropped INTEGER NOT NULL
);
INSERT INTO outbox_state (id, acked, dropped) VALUES (1, 0, 0);
"#,
    // 3: the appliance the outbox's sequence belongs to (NULL until an uplink binds it; see
    // uplink::outbox::bind).
    r#"
ALTER TABLE outbox_state ADD COLUMN appliance TEXT;
"#,
    // 4: the rules engine's state (timers, zone modes, entry delays), saved with the batch
    // that changed it (see journal/rules.rs).
    r#"
CREATE TABLE rule_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
"#,
    // 5: video clips the rules asked for (see journal/clips.rs).
    r#"
CREATE TABLE clips (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    camera TEXT NOT NULL,
    rule TEXT,
    incident INTEGER,
    trigger_at INTEGER NOT NULL,
    from_at INTEGER NOT NULL,
    to_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    file TEXT,
    snapshot TEXT,
    bytes INTEGER,
    duration_ms INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX clips_by_trigger ON clips(rule, trigger_at) WHERE incident IS NULL;
CREATE INDEX clips_by_incident ON clips(incident) WHERE incident IS NOT NULL;
CREATE INDEX clips_by_camera ON clips(camera, id);
"#,
];

/// Opens (creating if needed) the journal for writing and brings its schema up to date.
pub fn open_for_writing(path: &Path, synchronous_full: bool) -> Result<Connection, JournalError> {
    let connection = Connection::open(path)?;
    // Copy back and empty a WAL left by a kill or a full disk before writing anything (even
    // the pragmas below may write): on a disk that was full, the space the WAL held is what
    // lets the first commit through.
    if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(%error, "cannot checkpoint the journal's WAL at open; going on");
    }
    // auto_vacuum must be set before the first table exists to take effect. Only then: on an
    // existing journal it would be a write, and an agent restarted on a full disk must still
    // open its journal to serve what it holds.
    let pages: i64 = connection.pragma_query_value(None, "page_count", |row| row.get(0))?;
    if pages == 0 {
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(
        None,
        "synchronous",
        if synchronous_full { "FULL" } else { "NORMAL" },
    )?;
    connection.pragma_update(None, "busy_timeout", 5000)?;
    migrate(&connection, path)?;
    Ok(connection)
}

/// Opens a read-only connection for queries.
pub fn open_for_reading(path: &Path) -> Result<Connection, JournalError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.pragma_update(None, "busy_timeout", 5000)?;
    // Up to eight readers run at once; SQLite's default page cache (2 MB each) made them
    // the larger part of the agent's memory, and queries here walk indexes, not tables.
    connection.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
    Ok(connection)
}

/// A reader's page cache: negative means KiB in SQLite's `cache_size`.
const READER_CACHE_KIB: i64 = -256;

fn migrate(connection: &Connection, path: &Path) -> Result<(), JournalError> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(JournalError::TooNew {
            path: path.display().to_string(),
            found: version,
            supported,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let step = index as i64 + 1;
        connection.execute_batch(&format!(
            "BEGIN; {migration}; PRAGMA user_version = {step}; COMMIT;"
        ))?;
        tracing::info!(version = step, "journal schema migrated");
    }
    Ok(())
}

/// Microseconds since the Unix epoch, as stored.
pub(crate) fn to_micros(timestamp: Timestamp) -> i64 {
    timestamp.as_microsecond()
}

pub(crate) fn from_micros(micros: i64) -> Timestamp {
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Appends to a list an incident carries (evidence, clips) that keeps its first item and at
/// most `max` in all: past that, the oldest but the first makes room.
pub(crate) fn push_keeping_first<T>(list: &mut Vec<T>, item: T, max: usize) {
    if list.len() >= max {
        list.remove(1);
    }
    list.push(item);
}

#[cfg(test)]
mod tests;

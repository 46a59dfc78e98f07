//! Outbox storage: written by the journal writer inside its transactions, read by the
//! sender. See the module above for the invariants.

use gatehouse_protocol::wire::pb;
use gatehouse_protocol::{Event, EventBody};
use prost::Message;
use rusqlite::{Connection, Transaction, params};

use crate::journal::JournalError;

/// Eviction classes: lower goes first.
pub fn priority(body: &EventBody) -> i64 {
    match body {
        EventBody::Observation { .. } => 0,
        EventBody::DeviceStatus { .. } | EventBody::Command { .. } => 1,
        EventBody::Incident { .. } => 2,
    }
}

/// Appends `event` to the outbox; returns its outbox seq.
pub fn insert(transaction: &Transaction, event: &Event) -> Result<u64, JournalError> {
    let payload = pb::Event::from(event).encode_to_vec();
    transaction
        .prepare_cached("INSERT INTO outbox (priority, payload) VALUES (?1, ?2)")?
        .execute(params![priority(&event.body), payload])?;
    Ok(transaction.last_insert_rowid() as u64)
}

/// Evicts `count` rows, lowest priority and oldest first; returns how many went.
pub fn evict(transaction: &Transaction, count: u64) -> Result<u64, JournalError> {
    let evicted = transaction
        .prepare_cached(
            "DELETE FROM outbox WHERE seq IN \
             (SELECT seq FROM outbox ORDER BY priority, seq LIMIT ?1)",
        )?
        .execute([count as i64])? as u64;
    transaction
        .prepare_cached("UPDATE outbox_state SET dropped = dropped + ?1")?
        .execute([evicted as i64])?;
    Ok(evicted)
}

/// Forgets every row up to `up_to` (the relay has them); returns how many rows went.
pub fn acknowledge(transaction: &Transaction, up_to: u64) -> Result<u64, JournalError> {
    let removed = transaction
        .prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?
        .execute([up_to as i64])? as u64;
    transaction
        .prepare_cached("UPDATE outbox_state SET acked = max(acked, ?1)")?
        .execute([up_to as i64])?;
    Ok(removed)
}

/// What the outbox holds and has lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxState {
    /// The highest seq the relay acknowledged.
    pub acked: u64,
    /// Rows evicted since the appliance was installed.
    pub dropped: u64,
    /// Rows waiting.
    pub backlog: u64,
}

pub fn state(connection: &Connection) -> Result<OutboxState, JournalError> {
    let (acked, dropped): (i64, i64) = connection.query_row(
        "SELECT acked, dropped FROM outbox_state WHERE id = 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let backlog: i64 = connection.query_row("SELECT count(*) FROM outbox", [], |row| row.get(0))?;
    Ok(OutboxState {
        acked: acked.max(0) as u64,
        dropped: dropped.max(0) as u64,
        backlog: backlog.max(0) as u64,
    })
}

/// Up to `limit` rows with seq ≥ `next`, in seq order, as wire records: every run of
/// missing (evicted) seqs between `next` and a row becomes one `Evicted` marker, so the
/// records' seqs are contiguous from `next`.
pub fn read_records(
    connection: &Connection,
    next: u64,
    limit: usize,
) -> Result<Vec<pb::Record>, JournalError> {
    let mut statement = connection
        .prepare_cached("SELECT seq, payload FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
    let rows = statement.query_map(params![next as i64, limit as i64], |row| {
        Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut stored = Vec::with_capacity(limit);
    for row in rows {
        let (seq, payload) = row?;
        let event = pb::Event::decode(payload.as_slice())
            .map_err(|error| JournalError::Corrupt(format!("outbox row {seq}: {error}")))?;
        stored.push((seq, event));
    }
    Ok(with_gaps(next, stored))
}

/// Inserts `Evicted` markers for the seqs missing between `next` and each stored row.
pub fn with_gaps(next: u64, stored: Vec<(u64, pb::Event)>) -> Vec<pb::Record> {
    let mut records = Vec::with_capacity(stored.len());
    let mut expected = next;
    for (seq, event) in stored {
        if seq > expected {
            records.push(pb::Record {
                seq: expected,
                content: Some(pb::record::Content::Evicted(pb::Evicted {
                    through_seq: seq - 1,
                })),
            });
        }
        records.push(pb::Record {
            seq,
            content: Some(pb::record::Content::Event(event)),
        });
        expected = seq + 1;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn covered(records: &[pb::Record]) -> Vec<u64> {
        records
            .iter()
            .flat_map(|record| match &record.content {
                Some(pb::record::Content::Evicted(evicted)) => record.seq..=evicted.through_seq,
                _ => record.seq..=record.seq,
            })
            .collect()
    }

    proptest! {
        /// Whatever was evicted, the records cover every seq from `next` to the last row
        /// exactly once, in order, and carry every stored row.
        #[test]
        fn gaps_become_markers_and_the_sequence_stays_contiguous(
            next in 1u64..100,
            kept in proptest::collection::btree_set(0u64..300, 0..60),
        ) {
            let stored: Vec<(u64, pb::Event)> = kept
                .iter()
                .map(|offset| (next + offset, pb::Event { journal_seq: *offset, ..Default::default() }))
                .collect();
            let last = stored.last().map(|(seq, _)| *seq);
            let records = with_gaps(next, stored.clone());
            let seqs = covered(&records);
            match last {
                None => prop_assert!(records.is_empty()),
                Some(last) => prop_assert_eq!(seqs, (next..=last).collect::<Vec<_>>()),
            }
            let events: Vec<u64> = records
                .iter()
                .filter_map(|r| match &r.content {
                    Some(pb::record::Content::Event(_)) => Some(r.seq),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(events, stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>());
            // Markers never sit next to each other: one per run.
            let is_marker = |r: &pb::Record| matches!(r.content, Some(pb::record::Content::Evicted(_)));
            let adjacent_markers = records.windows(2).any(|w| is_marker(&w[0]) && is_marker(&w[1]));
            prop_assert!(!adjacent_markers);
        }
    }
}

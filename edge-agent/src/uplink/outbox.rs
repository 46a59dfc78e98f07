//! Outbox storage: written by the journal writer inside its transactions, read by the
//! sender. See the module above for the invariants.

use gatehouse_protocol::wire::pb;
use gatehouse_protocol::{ApplianceId, Event, EventBody};
use prost::Message;
use rusqlite::{Connection, Transaction, params};

use crate::journal::JournalError;

/// Eviction classes: lower goes first.
pub fn priority(body: &EventBody) -> i64 {
    match body {
        EventBody::Observation { .. } => 0,
        EventBody::DeviceStatus { .. }
        | EventBody::Command { .. }
        | EventBody::ZoneMode { .. }
        | EventBody::Bypass { .. } => 1,
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

/// What [`bind`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The outbox already belonged to this appliance.
    Same,
    /// The outbox belonged to no appliance yet (a new journal, or one from before the
    /// appliance was recorded): it is this one's now, and its sequence goes on.
    Adopted,
    /// The outbox's sequence belonged to `previous`, acknowledged through `acked`: what is
    /// left of it now starts again at 1, as this appliance's.
    Renumbered { previous: String, acked: u64 },
}

/// Makes the outbox's sequence `appliance`'s, the id the uplink sends as. Runs on the write
/// connection before the journal writer starts (it is the only write outside the writer).
///
/// The relay keeps one sequence per appliance id, and a new id (a re-claim, or an
/// `[uplink] appliance_id` edited by hand) starts there at 0. Resuming the old sequence at
/// `acked + 1` would leave the new id's `1..=acked` missing forever: the relay's contiguous
/// ack would stay at 0 and the uplink would resend the outbox for ever. So the rows still
/// waiting are renumbered from 1 (gaps that evictions left are kept, and become `Evicted`
/// markers as usual) and `acked` goes back to 0. Renumbering rather than an `Evicted` marker
/// for `1..=acked`: those records were not lost, they were delivered under the old id, and
/// HQ would otherwise be shown a loss that never happened.
///
/// Rows the old id sent that the relay stored but had not acknowledged yet are sent again
/// under the new id: HQ may see them under both.
pub fn bind(connection: &mut Connection, appliance: &ApplianceId) -> Result<Binding, JournalError> {
    let transaction = connection.transaction()?;
    let (previous, acked): (Option<String>, i64) = transaction.query_row(
        "SELECT appliance, acked FROM outbox_state WHERE id = 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let binding = match previous {
        Some(previous) if previous == appliance.as_str() => return Ok(Binding::Same),
        None => Binding::Adopted,
        Some(previous) => {
            renumber(&transaction, acked)?;
            Binding::Renumbered {
                previous,
                acked: acked.max(0) as u64,
            }
        }
    };
    transaction.execute(
        "UPDATE outbox_state SET appliance = ?1 WHERE id = 1",
        [appliance.as_str()],
    )?;
    transaction.commit()?;
    if let Binding::Renumbered { previous, acked } = &binding {
        tracing::warn!(
            %appliance,
            previous = %previous,
            acked,
            "the uplink sends as another appliance now: its outbox starts again at seq 1"
        );
    }
    Ok(binding)
}

/// Shifts the waiting rows down by `acked`, so the first seq after `acked` becomes 1, and
/// the next seq allocated follows on; `acked` becomes 0.
fn renumber(transaction: &Transaction, acked: i64) -> Result<(), JournalError> {
    // Rows up to `acked` left with the acknowledgement that covered them; anything else there
    // is acknowledged too.
    transaction.execute("DELETE FROM outbox WHERE seq <= ?1", [acked])?;
    // Through negative seqs, so that no row ever takes a seq that another still holds.
    transaction.execute("UPDATE outbox SET seq = -seq", [])?;
    transaction.execute("UPDATE outbox SET seq = -seq - ?1", [acked])?;
    transaction.execute(
        "UPDATE sqlite_sequence SET seq = max(seq - ?1, 0) WHERE name = 'outbox'",
        [acked],
    )?;
    transaction.execute("UPDATE outbox_state SET acked = 0 WHERE id = 1", [])?;
    Ok(())
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

    /// A journal on disk, migrated as the agent opens it.
    fn journal() -> anyhow::Result<(tempfile::TempDir, Connection)> {
        let folder = tempfile::tempdir()?;
        let connection =
            crate::journal::open_for_writing(&folder.path().join("journal.db"), false)?;
        Ok((folder, connection))
    }

    /// Appends a row per priority, each carrying its own seq as its journal seq.
    fn append(connection: &mut Connection, priorities: &[i64]) -> anyhow::Result<Vec<u64>> {
        let transaction = connection.transaction()?;
        let mut seqs = Vec::new();
        for priority in priorities {
            let next: i64 = transaction.query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0) + 1",
                [],
                |row| row.get(0),
            )?;
            let payload = pb::Event {
                journal_seq: next as u64,
                ..Default::default()
            };
            transaction.execute(
                "INSERT INTO outbox (priority, payload) VALUES (?1, ?2)",
                params![priority, payload.encode_to_vec()],
            )?;
            seqs.push(transaction.last_insert_rowid() as u64);
        }
        transaction.commit()?;
        Ok(seqs)
    }

    /// The records as (seq, what): `Ok(journal seq)` for an event, `Err(through)` for a marker.
    fn summary(records: &[pb::Record]) -> Vec<(u64, Result<u64, u64>)> {
        records
            .iter()
            .map(|record| match &record.content {
                Some(pb::record::Content::Evicted(evicted)) => {
                    (record.seq, Err(evicted.through_seq))
                }
                Some(pb::record::Content::Event(event)) => (record.seq, Ok(event.journal_seq)),
                None => (record.seq, Err(0)),
            })
            .collect()
    }

    #[test]
    fn a_new_appliance_id_gets_what_waits_renumbered_from_1() -> anyhow::Result<()> {
        let (_folder, mut connection) = journal()?;
        let first = ApplianceId::new("app-1")?;
        assert_eq!(bind(&mut connection, &first)?, Binding::Adopted);
        // Rows 1..=10; 8 and 10 are telemetry. The relay acknowledges 1..=6, then the outbox
        // overflows and evicts 8 and 10.
        let seqs = append(&mut connection, &[2, 2, 2, 2, 2, 2, 2, 0, 2, 0])?;
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        let transaction = connection.transaction()?;
        acknowledge(&transaction, 6)?;
        evict(&transaction, 2)?;
        transaction.commit()?;
        assert_eq!(bind(&mut connection, &first)?, Binding::Same);
        assert_eq!(state(&connection)?.acked, 6);

        // Re-claimed: the relay knows `app-2` from nothing (it acknowledges 0 until it has 1).
        let second = ApplianceId::new("app-2")?;
        assert_eq!(
            bind(&mut connection, &second)?,
            Binding::Renumbered {
                previous: "app-1".to_owned(),
                acked: 6
            }
        );
        let after = state(&connection)?;
        assert_eq!((after.acked, after.backlog, after.dropped), (0, 2, 2));
        // What the sender reads, starting after `acked` (0): journal rows 7 and 9 as 1 and 3,
        // the eviction of 8 as a marker at 2: contiguous from 1, so the relay's ack moves.
        let records = read_records(&connection, after.acked + 1, 100)?;
        assert_eq!(summary(&records), [(1, Ok(7)), (2, Err(2)), (3, Ok(9))]);
        // The next row follows the old last seq (10, evicted unsent, is 4 now): no seq is
        // handed out twice.
        assert_eq!(append(&mut connection, &[2])?, [5]);
        let records = read_records(&connection, 1, 100)?;
        assert_eq!(covered(&records), (1..=5).collect::<Vec<_>>());
        assert_eq!(bind(&mut connection, &second)?, Binding::Same);
        assert_eq!(read_records(&connection, 1, 100)?, records);
        Ok(())
    }

    #[test]
    fn a_journal_from_before_the_appliance_was_recorded_keeps_its_sequence() -> anyhow::Result<()> {
        let (_folder, mut connection) = journal()?;
        append(&mut connection, &[2, 2, 2])?;
        let transaction = connection.transaction()?;
        acknowledge(&transaction, 2)?;
        transaction.commit()?;
        assert_eq!(
            bind(&mut connection, &ApplianceId::new("app-1")?)?,
            Binding::Adopted
        );
        assert_eq!(state(&connection)?.acked, 2);
        assert_eq!(summary(&read_records(&connection, 3, 10)?), [(3, Ok(3))]);
        Ok(())
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

use std::time::Duration;

use gatehouse_protocol::{EventBody, EventKind, IncidentChange, IncidentState, Transition, Value};
use jiff::Timestamp;

use super::query::{self, EventQuery, IncidentQuery, Order};
use super::{IncidentAction, IncidentError, WriterSettings};
use crate::test_helpers::{TestJournal, all_events, observation, site_config};

#[tokio::test]
async fn events_get_increasing_seqs_and_survive_reopening() {
    let journal = TestJournal::with_defaults(&site_config());
    for i in 0..500 {
        journal
            .handle
            .append(observation("strike", Value::Bool(i % 2 == 0)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal.wait_for_seq(500).await;
    let events = all_events(&journal.reader);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    // A new connection (as after a restart) sees the same.
    let reopened = super::open_for_writing(&journal.folder.path().join("journal.db"), true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(query::last_seq(&reopened).unwrap_or(0), 500);
}

#[tokio::test]
async fn a_rule_opens_an_incident_in_the_same_commit_and_the_lifecycle_is_journaled() {
    let journal = TestJournal::with_defaults(&site_config());
    let mut bus = journal.live.subscribe();
    journal
        .handle
        .append(observation("door", Value::Bool(true)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = bus.recv().await.unwrap_or_else(|e| panic!("{e}"));
    let second = bus.recv().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.body.kind(), EventKind::Observation);
    let EventBody::Incident { change, incident } = &second.body else {
        panic!("expected an incident event, got {second:?}");
    };
    assert_eq!(*change, IncidentChange::Opened);
    assert_eq!(incident.evidence[0].seq, first.seq);
    assert_eq!(first.recorded_at, second.recorded_at, "one transaction");

    let transition = |comment: &str| Transition {
        by: "guard".into(),
        at: Timestamp::now(),
        comment: Some(comment.into()),
    };
    let acked = journal
        .handle
        .change_incident(
            incident.id,
            IncidentAction::Acknowledge,
            transition("on it"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(acked.state, IncidentState::Acknowledged);
    let again = journal
        .handle
        .change_incident(
            incident.id,
            IncidentAction::Acknowledge,
            transition("again"),
        )
        .await;
    assert!(matches!(again, Err(IncidentError::Lifecycle(_))));
    let missing = journal
        .handle
        .change_incident(999, IncidentAction::Resolve, transition("x"))
        .await;
    assert!(matches!(missing, Err(IncidentError::NotFound(999))));
    let resolved = journal
        .handle
        .change_incident(
            incident.id,
            IncidentAction::Resolve,
            transition("false alarm"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(
        resolved
            .resolved
            .as_ref()
            .and_then(|t| t.comment.as_deref()),
        Some("false alarm")
    );

    let stored = journal
        .reader
        .run(move |c| query::incident(c, resolved.id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.map(|i| i.state), Some(IncidentState::Resolved));
    let changes: Vec<IncidentChange> = all_events(&journal.reader)
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Incident { change, .. } => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            IncidentChange::Opened,
            IncidentChange::Acknowledged,
            IncidentChange::Resolved
        ]
    );
}

#[tokio::test]
async fn queries_filter_and_paginate_without_gaps_or_repeats() {
    let journal = TestJournal::with_defaults(&site_config());
    for i in 0..250 {
        let point = if i % 5 == 0 { "door" } else { "strike" };
        journal
            .handle
            .append(observation(point, Value::Bool(i % 2 == 0)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal.wait_for_seq(250).await;
    for order in [Order::Asc, Order::Desc] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let query = EventQuery {
                point: Some("strike".parse().unwrap_or_else(|e| panic!("{e}"))),
                cursor,
                order,
                limit: 37,
                ..EventQuery::default()
            };
            let page = journal
                .reader
                .run(move |c| query::events(c, &query))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            seen.extend(page.items.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 200, "{order:?}");
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 200, "no repeats");
        if order == Order::Desc {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "in order");
    }
    let incidents = journal
        .reader
        .run(|c| {
            query::incidents(
                c,
                &IncidentQuery {
                    state: Some(IncidentState::Open),
                    cursor: None,
                    limit: 10,
                },
            )
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!incidents.items.is_empty());
    let future = EventQuery {
        from: Some(Timestamp::now() + jiff::SignedDuration::from_hours(1)),
        limit: 10,
        ..EventQuery::default()
    };
    let none = journal
        .reader
        .run(move |c| query::events(c, &future))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.items.is_empty());
}

#[tokio::test]
async fn retention_by_size_trims_oldest_first_and_never_reuses_a_seq() {
    let journal = TestJournal::start(
        &site_config(),
        WriterSettings {
            batch_max_events: 512,
            max_age: None,
            max_bytes: Some(1024 * 1024),
            outbox_max_records: None,
        },
    );
    for i in 0..10_000 {
        journal
            .handle
            .append(observation("strike", Value::Bool(i % 2 == 0)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal.wait_for_seq(10_000).await;
    let deleted = journal
        .handle
        .maintain()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(deleted > 0);
    let events = all_events(&journal.reader);
    assert_eq!(events.len() as u64 + deleted, 10_000);
    assert_eq!(events.last().map(|e| e.seq), Some(10_000), "newest kept");
    assert_eq!(
        events.first().map(|e| e.seq),
        Some(deleted + 1),
        "oldest went first"
    );
    let used = journal
        .reader
        .run_blocking(|c| {
            let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
            let free: i64 = c.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
            let size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
            Ok((pages - free) * size)
        })
        .unwrap_or(i64::MAX);
    assert!(used <= 1024 * 1024, "{used} bytes used");
}

#[tokio::test]
async fn retention_by_size_keeps_the_newest_thousand_events_whatever_the_budget() {
    let journal = TestJournal::start(
        &site_config(),
        WriterSettings {
            batch_max_events: 512,
            max_age: None,
            max_bytes: Some(4096),
            outbox_max_records: None,
        },
    );
    for _ in 0..3000 {
        journal
            .handle
            .append(observation("strike", Value::Bool(true)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal.wait_for_seq(3000).await;
    assert_eq!(journal.handle.maintain().await.unwrap_or(0), 2000);
    let seqs: Vec<u64> = all_events(&journal.reader).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (2001..=3000).collect::<Vec<_>>());
}

#[tokio::test]
async fn retention_by_age_keeps_recent_events_and_seqs_continue() {
    let journal = TestJournal::start(
        &site_config(),
        WriterSettings {
            batch_max_events: 64,
            max_age: Some(Duration::from_millis(200)),
            max_bytes: None,
            outbox_max_records: None,
        },
    );
    for _ in 0..10 {
        journal
            .handle
            .append(observation("strike", Value::Bool(true)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal.wait_for_seq(10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    journal
        .handle
        .append(observation("strike", Value::Bool(false)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal.wait_for_seq(11).await;
    assert_eq!(journal.handle.maintain().await.unwrap_or(0), 10);
    let seqs: Vec<u64> = all_events(&journal.reader).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [11]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(journal.handle.maintain().await.unwrap_or(0), 1);
    assert!(all_events(&journal.reader).is_empty());
    // Everything is gone, yet the next seq continues after 11: cursors are never reused.
    journal
        .handle
        .append(observation("strike", Value::Bool(true)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal.wait_for_seq(12).await;
    assert_eq!(all_events(&journal.reader).last().map(|e| e.seq), Some(12));
}

#[tokio::test]
async fn the_outbox_evicts_telemetry_first_marks_the_gaps_and_forgets_what_was_acked() {
    use crate::uplink::outbox;
    use gatehouse_protocol::wire::pb::record::Content;

    let journal = TestJournal::start(
        &site_config(),
        WriterSettings {
            batch_max_events: 16,
            max_age: None,
            max_bytes: None,
            outbox_max_records: Some(100),
        },
    );
    // 60 observations of the strike (telemetry), then the door opens (an observation and an
    // incident), then 60 more observations: 122 rows for 100 places.
    for i in 0..60 {
        journal
            .handle
            .append(observation("strike", Value::Bool(i % 2 == 0)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal
        .handle
        .append(observation("door", Value::Bool(true)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..60 {
        journal
            .handle
            .append(observation("strike", Value::Bool(i % 2 == 0)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    journal.wait_for_seq(122).await;
    let state = journal
        .reader
        .run(outbox::state)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((state.backlog, state.dropped, state.acked), (100, 22, 0));
    let records = journal
        .reader
        .run(|c| outbox::read_records(c, 1, 1000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The oldest 22 observations went; the incident stayed.
    assert!(
        matches!(&records[0].content, Some(Content::Evicted(e)) if records[0].seq == 1 && e.through_seq == 22)
    );
    assert_eq!(records.len(), 101);
    assert!(records.iter().any(|r| matches!(&r.content,
        Some(Content::Event(e)) if matches!(e.body, Some(gatehouse_protocol::wire::pb::event::Body::Incident(_))))));

    // The relay acknowledges through 50: those rows go, the rest stays.
    let removed = journal
        .handle
        .outbox_ack(50)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed, 28);
    let state = journal
        .reader
        .run(outbox::state)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((state.backlog, state.acked), (72, 50));
    let next = journal
        .reader
        .run(|c| outbox::read_records(c, 51, 10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.first().map(|r| r.seq), Some(51));
    assert_eq!(next.len(), 10);
}

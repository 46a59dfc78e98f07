//! What the store takes of a batch: a `rejected` row moves the ack like any record; what it
//! cannot take (a seq, range or id beyond its columns, too many records) it refuses before
//! touching anything, and says so beforehand through `IngestRecord::check`.

use gatehouse_protocol::IncidentState;

use super::fixtures::{Fixture, T0, evicted, incident_record, observation, observations};
use crate::store::{EventFilter, IngestRecord, MAX_BATCH_RECORDS, Page, Store, StoreError};

on_both_backends!(
    a_rejected_row_covers_its_seq_and_is_reported_new_once,
    records_beyond_the_columns_are_refused_and_checkable_beforehand,
    a_batch_is_bounded,
);

/// What the relay stores for a record it cannot use.
fn rejected(seq: u64) -> IngestRecord {
    IngestRecord {
        seq,
        recorded_at: T0,
        kind: "rejected".to_owned(),
        device: None,
        point: None,
        incident: None,
        evicted_through: None,
        body: format!(r#"{{"kind":"rejected","seq":{seq},"reason":"no content"}}"#),
    }
}

async fn a_rejected_row_covers_its_seq_and_is_reported_new_once(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let batch = vec![observation(1), rejected(2), observation(3)];
    let first = store.ingest_report(&fixture.appliance, &batch).await?;
    assert_eq!(first.outcome.highest_contiguous_seq, 3);
    assert_eq!(first.stored, vec![1, 2, 3]);

    let again = store.ingest_report(&fixture.appliance, &batch).await?;
    assert_eq!(again.outcome.highest_contiguous_seq, 3);
    assert!(again.stored.is_empty());
    assert_eq!(again.outcome.duplicates, 3);

    let shown = store
        .events(
            &fixture.scope,
            &EventFilter {
                kind: Some("rejected".to_owned()),
                ..EventFilter::default()
            },
            &Page::first(10),
        )
        .await?;
    assert_eq!(shown.items.len(), 1);
    assert_eq!(shown.items[0].seq, 2);
    assert!(shown.items[0].body.contains("no content"));
    Ok(())
}

async fn records_beyond_the_columns_are_refused_and_checkable_beforehand(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let mut huge_incident = incident_record(2, 1, IncidentState::Open);
    if let Some(incident) = huge_incident.incident.as_mut() {
        incident.id = u64::MAX;
    }
    let unstorable = [
        (observation(0), "seq"),
        (observation(u64::MAX), "seq"),
        (evicted(2, u64::MAX), "evicted_through"),
        (evicted(5, 4), "evicted_through"),
        (huge_incident, "incident id"),
    ];
    for (record, field) in unstorable {
        let checked = record.check();
        assert!(
            matches!(&checked, Err(StoreError::Invalid { field: f, .. }) if *f == field),
            "seq {}: {checked:?}",
            record.seq
        );
        let batch = vec![observation(1), record];
        let refused = store.ingest(&fixture.appliance, &batch).await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid { field: f, .. }) if *f == field),
            "{refused:?}"
        );
    }
    assert!(observation(1).check().is_ok() && rejected(2).check().is_ok());
    let appliance = store.appliance(&fixture.scope, &fixture.appliance).await?;
    assert_eq!(
        appliance.map(|a| a.acked_seq),
        Some(0),
        "something was stored"
    );
    Ok(())
}

async fn a_batch_is_bounded(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let too_many = observations(1, MAX_BATCH_RECORDS as u64 + 1);
    let refused = store.ingest(&fixture.appliance, &too_many).await;
    assert!(
        matches!(
            &refused,
            Err(StoreError::Invalid {
                field: "records",
                ..
            })
        ),
        "{refused:?}"
    );
    let most = store
        .ingest(&fixture.appliance, &too_many[..MAX_BATCH_RECORDS])
        .await?;
    assert_eq!(most.highest_contiguous_seq, MAX_BATCH_RECORDS as u64);
    Ok(())
}

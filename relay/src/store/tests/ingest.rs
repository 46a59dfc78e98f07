//! Idempotent ingestion, the contiguous ack, and incident state.

use gatehouse_protocol::{ApplianceId, IncidentState, Severity};
use sqlx::Row;

use super::fixtures::{
    Fixture, SECOND, T0, claimed_appliance, evicted, incident_record, observation, observations,
};
use crate::store::{EventFilter, IngestRecord, Page, Store, StoreError, is_foreign_key_violation};

on_both_backends!(
    same_batch_twice_is_stored_once_and_acked_the_same,
    out_of_order_batches_ack_only_what_is_contiguous,
    overlapping_redelivery_counts_only_the_new_records,
    eviction_markers_count_as_received,
    incident_state_never_regresses,
    an_operator_acknowledgement_survives_older_and_newer_open_records,
    bad_batches_are_refused_whole,
    concurrent_batches_of_one_appliance_are_applied_one_after_the_other,
    a_batch_larger_than_one_statement_is_stored_whole,
    a_records_tenant_and_appliance_are_its_appliance_rows,
);

/// How many records of the fixture's appliance are stored, and their seqs in order.
async fn stored_seqs(store: &Store, fixture: &Fixture) -> anyhow::Result<Vec<u64>> {
    let filter = EventFilter {
        appliance: Some(fixture.appliance.clone()),
        ..EventFilter::default()
    };
    let page = store
        .events(&fixture.scope, &filter, &Page::first(1000))
        .await?;
    let mut seqs: Vec<u64> = page.items.iter().map(|record| record.seq).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

async fn same_batch_twice_is_stored_once_and_acked_the_same(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let batch = observations(1, 5);

    let first = store.ingest(&fixture.appliance, &batch).await?;
    assert_eq!(
        (
            first.highest_contiguous_seq,
            first.inserted,
            first.duplicates
        ),
        (5, 5, 0)
    );
    assert_eq!(first.scope, fixture.scope);

    let again = store.ingest(&fixture.appliance, &batch).await?;
    assert_eq!(
        (
            again.highest_contiguous_seq,
            again.inserted,
            again.duplicates
        ),
        (5, 0, 5)
    );
    assert_eq!(stored_seqs(store, &fixture).await?, vec![1, 2, 3, 4, 5]);

    // An empty batch answers with the current ack.
    let empty = store.ingest(&fixture.appliance, &[]).await?;
    assert_eq!(empty.highest_contiguous_seq, 5);
    let appliance = store.appliance(&fixture.scope, &fixture.appliance).await?;
    assert_eq!(appliance.map(|a| a.acked_seq), Some(5));
    Ok(())
}

async fn out_of_order_batches_ack_only_what_is_contiguous(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;

    let later = store
        .ingest(&fixture.appliance, &observations(6, 10))
        .await?;
    assert_eq!((later.highest_contiguous_seq, later.inserted), (0, 5));

    let earlier = store
        .ingest(&fixture.appliance, &observations(1, 5))
        .await?;
    assert_eq!((earlier.highest_contiguous_seq, earlier.inserted), (10, 5));

    // A gap holds the ack until it is filled, whatever comes after it.
    let mut batch = observations(11, 13);
    batch.extend(observations(15, 20));
    let gapped = store.ingest(&fixture.appliance, &batch).await?;
    assert_eq!(gapped.highest_contiguous_seq, 13);
    let filled = store.ingest(&fixture.appliance, &[observation(14)]).await?;
    assert_eq!(filled.highest_contiguous_seq, 20);
    assert_eq!(
        stored_seqs(store, &fixture).await?,
        (1..=20).collect::<Vec<_>>()
    );
    Ok(())
}

async fn overlapping_redelivery_counts_only_the_new_records(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    store
        .ingest(&fixture.appliance, &observations(1, 4))
        .await?;
    let overlap = store
        .ingest(&fixture.appliance, &observations(3, 8))
        .await?;
    assert_eq!(
        (
            overlap.highest_contiguous_seq,
            overlap.inserted,
            overlap.duplicates
        ),
        (8, 4, 2)
    );
    // The same seq twice in one batch is stored once.
    let doubled = store
        .ingest(&fixture.appliance, &[observation(9), observation(9)])
        .await?;
    assert_eq!(
        (
            doubled.highest_contiguous_seq,
            doubled.inserted,
            doubled.duplicates
        ),
        (9, 1, 1)
    );
    Ok(())
}

/// A full batch of large records spans many `INSERT` statements (by count and by bytes);
/// duplicates and incidents in every statement are still told apart record by record.
async fn a_batch_larger_than_one_statement_is_stored_whole(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    store
        .ingest(&fixture.appliance, &observations(200, 260))
        .await?;
    let mut batch: Vec<IngestRecord> = (1..=500)
        .map(|seq| {
            let mut record = observation(seq);
            // Some records far over a statement's byte budget, most small.
            let padding = if seq % 97 == 0 { 20_000 } else { 300 };
            record.body = format!(r#"{{"seq":{seq},"pad":"{}"}}"#, "x".repeat(padding));
            record
        })
        .collect();
    batch[449] = incident_record(450, 7, IncidentState::Open);
    batch.push(observation(3));
    let outcome = store.ingest(&fixture.appliance, &batch).await?;
    assert_eq!(
        (
            outcome.highest_contiguous_seq,
            outcome.inserted,
            outcome.duplicates
        ),
        (500, 500 - 61, 61 + 1)
    );
    let stored = store
        .events(
            &fixture.scope,
            &EventFilter {
                appliance: Some(fixture.appliance.clone()),
                ..EventFilter::default()
            },
            &Page::first(1000),
        )
        .await?;
    assert_eq!(stored.items.len(), 500);
    let big = stored
        .items
        .iter()
        .find(|record| record.seq == 194)
        .map(|record| record.body.len());
    assert_eq!(big, Some(20_000 + r#"{"seq":194,"pad":""}"#.len()));
    let incident = store
        .incident(&fixture.scope, &fixture.appliance, 7)
        .await?
        .map(|incident| incident.state);
    assert_eq!(incident, Some(IncidentState::Open));

    // Out of order: a later statement's seqs span those an earlier one of the same batch
    // just stored, which are not duplicates for all that.
    let mut unordered = observations(601, 700);
    unordered.push(observation(501));
    unordered.push(observation(800));
    unordered.extend(observations(502, 599));
    let outcome = store.ingest(&fixture.appliance, &unordered).await?;
    assert_eq!((outcome.inserted, outcome.duplicates), (200, 0));
    Ok(())
}

/// Records have no foreign key to their appliance (migration 0005): the statement that inserts
/// them takes both columns from the appliance's row, and the database refuses to delete an
/// appliance or to move it to another tenant (its claim code's foreign key).
async fn a_records_tenant_and_appliance_are_its_appliance_rows(
    store: &Store,
) -> anyhow::Result<()> {
    let a = Fixture::new(store, "alpha").await?;
    let b = Fixture::new(store, "bravo").await?;
    let spare = claimed_appliance(store, &a.scope, &a.site, "spare").await?;
    for appliance in [&a.appliance, &b.appliance, &spare] {
        let mut batch = observations(1, 3);
        batch.push(incident_record(4, 1, IncidentState::Open));
        batch.push(evicted(5, 9));
        store.ingest(appliance, &batch).await?;
    }
    let rows = sqlx::query(
        "SELECT records.appliance_id, records.tenant_id, appliances.tenant_id AS owner \
         FROM records LEFT JOIN appliances ON appliances.id = records.appliance_id",
    )
    .fetch_all(&store.pool)
    .await?;
    assert_eq!(rows.len(), 15);
    for row in &rows {
        let appliance: String = row.try_get("appliance_id")?;
        let tenant: String = row.try_get("tenant_id")?;
        let owner: Option<String> = row.try_get("owner")?;
        assert_eq!(Some(tenant), owner, "records of {appliance}");
    }

    // `spare` has records but no incident, alert or command: only its claim code holds it.
    let deleted = sqlx::query("DELETE FROM appliances WHERE id = $1")
        .bind(spare.as_str())
        .execute(&store.pool)
        .await;
    assert!(
        matches!(&deleted, Err(error) if is_foreign_key_violation(error)),
        "{deleted:?}"
    );
    let moved = sqlx::query("UPDATE appliances SET tenant_id = $2, site_id = $3 WHERE id = $1")
        .bind(spare.as_str())
        .bind(b.scope.id())
        .bind(b.site.as_str())
        .execute(&store.pool)
        .await;
    assert!(
        matches!(&moved, Err(error) if is_foreign_key_violation(error)),
        "{moved:?}"
    );
    let spare_records = store
        .events(
            &a.scope,
            &EventFilter {
                appliance: Some(spare.clone()),
                ..EventFilter::default()
            },
            &Page::first(100),
        )
        .await?;
    assert_eq!(spare_records.items.len(), 5);
    Ok(())
}

async fn eviction_markers_count_as_received(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    store
        .ingest(&fixture.appliance, &observations(1, 2))
        .await?;
    // 3..=7 were evicted by the appliance during an outage; 8 follows.
    let outcome = store
        .ingest(&fixture.appliance, &[evicted(3, 7), observation(8)])
        .await?;
    assert_eq!(outcome.highest_contiguous_seq, 8);

    // 10 was sent, then evicted unacknowledged with 11..=12: the marker lands on a seq that is
    // already stored, and still carries the ack past the range.
    store.ingest(&fixture.appliance, &[observation(10)]).await?;
    let marker = store.ingest(&fixture.appliance, &[evicted(10, 12)]).await?;
    assert_eq!((marker.inserted, marker.duplicates), (0, 1));
    assert_eq!(marker.highest_contiguous_seq, 8);
    let filled = store
        .ingest(&fixture.appliance, &[observation(9), observation(13)])
        .await?;
    assert_eq!(filled.highest_contiguous_seq, 13);

    // A marker arriving after the ack passed its start.
    store.ingest(&fixture.appliance, &[observation(14)]).await?;
    let late = store.ingest(&fixture.appliance, &[evicted(14, 16)]).await?;
    assert_eq!(late.highest_contiguous_seq, 16);
    Ok(())
}

async fn incident_state_never_regresses(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let appliance = &fixture.appliance;
    let state = async |store: &Store| -> anyhow::Result<(IncidentState, u64)> {
        let incident = store
            .incident(&fixture.scope, appliance, 7)
            .await?
            .ok_or_else(|| anyhow::anyhow!("incident 7 is missing"))?;
        Ok((incident.state, incident.last_seq))
    };

    // The acknowledgement arrives before the opening.
    store
        .ingest(
            appliance,
            &[incident_record(3, 7, IncidentState::Acknowledged)],
        )
        .await?;
    store
        .ingest(appliance, &[incident_record(1, 7, IncidentState::Open)])
        .await?;
    assert_eq!(state(store).await?, (IncidentState::Acknowledged, 3));

    store
        .ingest(appliance, &[incident_record(5, 7, IncidentState::Resolved)])
        .await?;
    // Redelivery of everything, newest first.
    let redelivered = [
        incident_record(5, 7, IncidentState::Resolved),
        incident_record(3, 7, IncidentState::Acknowledged),
        incident_record(1, 7, IncidentState::Open),
    ];
    let outcome = store.ingest(appliance, &redelivered).await?;
    assert_eq!(outcome.inserted, 0);
    // An older record never seen before (4) does not undo the resolution either.
    store
        .ingest(
            appliance,
            &[incident_record(4, 7, IncidentState::Acknowledged)],
        )
        .await?;
    assert_eq!(state(store).await?, (IncidentState::Resolved, 5));

    let events = store
        .events(
            &fixture.scope,
            &EventFilter {
                incident: Some(7),
                ..EventFilter::default()
            },
            &Page::first(10),
        )
        .await?;
    assert_eq!(events.items.len(), 4);
    Ok(())
}

async fn an_operator_acknowledgement_survives_older_and_newer_open_records(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let appliance = &fixture.appliance;
    store
        .ingest(appliance, &[incident_record(2, 1, IncidentState::Open)])
        .await?;
    store
        .acknowledge_incident(
            &fixture.scope,
            appliance,
            1,
            "hq-ops",
            None,
            T0 + 60 * SECOND,
        )
        .await?;
    // The appliance had not heard of it yet: a newer record still says "open", at a higher
    // severity.
    let mut newer = incident_record(3, 1, IncidentState::Open);
    if let Some(incident) = newer.incident.as_mut() {
        incident.severity = Severity::Critical;
    }
    store
        .ingest(
            appliance,
            &[incident_record(1, 1, IncidentState::Open), newer],
        )
        .await?;
    let incident = store
        .incident(&fixture.scope, appliance, 1)
        .await?
        .ok_or_else(|| anyhow::anyhow!("incident 1 is missing"))?;
    assert_eq!(incident.state, IncidentState::Acknowledged);
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.last_seq, 3);
    Ok(())
}

async fn bad_batches_are_refused_whole(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let unknown = ApplianceId::new("app-never-claimed")?;
    assert!(matches!(
        store.ingest(&unknown, &observations(1, 3)).await,
        Err(StoreError::UnknownAppliance(_))
    ));

    let mut batch = observations(1, 3);
    batch.push(observation(0));
    assert!(matches!(
        store.ingest(&fixture.appliance, &batch).await,
        Err(StoreError::Invalid { field: "seq", .. })
    ));
    let backwards = vec![observation(1), evicted(5, 4)];
    assert!(matches!(
        store.ingest(&fixture.appliance, &backwards).await,
        Err(StoreError::Invalid {
            field: "evicted_through",
            ..
        })
    ));
    let too_big = vec![observation(u64::MAX)];
    assert!(matches!(
        store.ingest(&fixture.appliance, &too_big).await,
        Err(StoreError::Invalid { field: "seq", .. })
    ));
    assert!(stored_seqs(store, &fixture).await?.is_empty());
    Ok(())
}

/// Two relay replicas may take batches of the same appliance at once (a redelivery racing
/// the next batch): the ack must still be computed from everything committed.
async fn concurrent_batches_of_one_appliance_are_applied_one_after_the_other(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    // Rounds of eight batches in one appliance's sequence, sent at once, latest first.
    for round in 0..10 {
        let base = round * 40;
        let batches: Vec<Vec<IngestRecord>> = (0..8)
            .rev()
            .map(|i| observations(base + i * 5 + 1, base + i * 5 + 5))
            .collect();
        let outcomes = futures_util::future::join_all(
            batches
                .iter()
                .map(|batch| store.ingest(&fixture.appliance, batch)),
        )
        .await;
        let mut inserted = 0;
        let mut highest = 0;
        for outcome in outcomes {
            let outcome = outcome?;
            inserted += outcome.inserted;
            highest = highest.max(outcome.highest_contiguous_seq);
        }
        assert_eq!((round, inserted, highest), (round, 40, base + 40));
    }
    let appliance = store.appliance(&fixture.scope, &fixture.appliance).await?;
    assert_eq!(appliance.map(|a| a.acked_seq), Some(400));
    assert_eq!(
        stored_seqs(store, &fixture).await?,
        (1..=400).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn an_in_memory_sqlite_store_keeps_its_data_across_queries() -> anyhow::Result<()> {
    let store = Store::open("sqlite::memory:").await?;
    let fixture = Fixture::new(&store, "acme").await?;
    store
        .ingest(&fixture.appliance, &observations(1, 3))
        .await?;
    assert_eq!(stored_seqs(&store, &fixture).await?, vec![1, 2, 3]);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn other_database_urls_are_refused_by_scheme() {
    let refused = Store::open("mysql://root:secret@db/relay").await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("scheme `mysql`"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[tokio::test]
async fn an_unreachable_database_is_transient_and_a_refusal_is_not() -> anyhow::Result<()> {
    let store = Store::open("sqlite::memory:").await?;
    let fixture = Fixture::new(&store, "acme").await?;
    let unknown = ApplianceId::new("app-unknown")?;
    let refused = store.ingest(&unknown, &observations(1, 1)).await;
    assert!(refused.is_err_and(|error| !error.is_transient()));
    store.close().await;
    let closed = store.ingest(&fixture.appliance, &observations(1, 1)).await;
    assert!(closed.is_err_and(|error| error.is_transient()));
    Ok(())
}

#[test]
fn statements_are_large_only_where_the_connection_cannot_be_tls() {
    use crate::store::{Backend, InsertLimits};
    let limits = |url: &str| {
        let backend = Backend::of_url(url).unwrap_or_else(|e| panic!("{e}"));
        InsertLimits::of_url(backend, url)
    };
    assert_eq!(limits("sqlite://relay.db?mode=rwc"), InsertLimits::PLAIN);
    assert_eq!(
        limits("postgres://relay@%2Fvar%2Frun%2Fpostgresql/relay"),
        InsertLimits::PLAIN
    );
    assert_eq!(
        limits("postgres://relay@localhost/relay?host=/var/run/postgresql"),
        InsertLimits::PLAIN
    );
    assert_eq!(
        limits("postgres://relay@127.0.0.1/relay?sslmode=disable"),
        InsertLimits::PLAIN
    );
    assert_eq!(
        limits("postgres://relay@127.0.0.1/relay"),
        InsertLimits::TLS
    );
    assert_eq!(
        limits("postgres://relay@db/relay?sslmode=verify-full"),
        InsertLimits::TLS
    );
}

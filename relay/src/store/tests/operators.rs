//! What operators see and do: incident steps, incident and event queries with pages.

use gatehouse_protocol::IncidentState;

use super::fixtures::{
    Fixture, SECOND, T0, claimed_appliance, incident_record, observation, observations,
};
use crate::store::{EventFilter, IncidentFilter, IncidentStep, Page, Store, StoreError};

on_both_backends!(
    incidents_are_acknowledged_resolved_and_commented,
    events_are_filtered_and_paged_newest_first,
    incidents_are_filtered_and_paged_newest_first,
);

async fn incidents_are_acknowledged_resolved_and_commented(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let (scope, appliance) = (&fixture.scope, &fixture.appliance);
    store
        .ingest(appliance, &[incident_record(1, 4, IncidentState::Open)])
        .await?;

    let acknowledged = store
        .acknowledge_incident(scope, appliance, 4, "dana", Some("on my way"), T0 + SECOND)
        .await?;
    assert_eq!(acknowledged.state, IncidentState::Acknowledged);
    assert_eq!(acknowledged.updated_at, T0 + SECOND);
    assert!(matches!(
        store
            .acknowledge_incident(scope, appliance, 4, "lee", None, T0 + 2 * SECOND)
            .await,
        Err(StoreError::Lifecycle { .. })
    ));

    let resolved = store
        .resolve_incident(scope, appliance, 4, "dana", None, T0 + 3 * SECOND)
        .await?;
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert!(matches!(
        store
            .resolve_incident(scope, appliance, 4, "dana", None, T0 + 4 * SECOND)
            .await,
        Err(StoreError::Lifecycle { .. })
    ));
    store
        .comment_incident(
            scope,
            appliance,
            4,
            "lee",
            "door closer replaced",
            T0 + 5 * SECOND,
        )
        .await?;
    assert!(matches!(
        store
            .comment_incident(scope, appliance, 4, "lee", " ", T0)
            .await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store
            .acknowledge_incident(scope, appliance, 99, "lee", None, T0)
            .await,
        Err(StoreError::NotFound { .. })
    ));

    let comments = store.incident_comments(scope, appliance, 4).await?;
    let steps: Vec<(IncidentStep, &str, Option<&str>)> = comments
        .iter()
        .map(|c| (c.step, c.author.as_str(), c.comment.as_deref()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (IncidentStep::Acknowledge, "dana", Some("on my way")),
            (IncidentStep::Resolve, "dana", None),
            (IncidentStep::Comment, "lee", Some("door closer replaced")),
        ]
    );
    Ok(())
}

async fn events_are_filtered_and_paged_newest_first(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let annex = store.create_site(&fixture.scope, "Annex", T0).await?;
    let second = claimed_appliance(store, &fixture.scope, &annex.id, "annex gate").await?;
    store
        .ingest(&fixture.appliance, &observations(1, 7))
        .await?;
    let mut other = observations(1, 5);
    for record in &mut other {
        record.kind = "device_status".to_owned();
        record.point = None;
    }
    store.ingest(&second, &other).await?;

    // All 12, three pages of 5, 5 and 2, newest first, each record once.
    let mut seen = Vec::new();
    let mut page = Page::first(5);
    loop {
        let result = store
            .events(&fixture.scope, &EventFilter::default(), &page)
            .await?;
        seen.extend(
            result
                .items
                .iter()
                .map(|r| (r.recorded_at, r.appliance.clone(), r.seq)),
        );
        match result.next {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 12);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), 12);

    let count = async |filter: EventFilter| -> anyhow::Result<usize> {
        Ok(store
            .events(&fixture.scope, &filter, &Page::first(100))
            .await?
            .items
            .len())
    };
    let by_site = EventFilter {
        site: Some(annex.id.clone()),
        ..EventFilter::default()
    };
    assert_eq!(count(by_site).await?, 5);
    let by_kind = EventFilter {
        kind: Some("device_status".to_owned()),
        ..EventFilter::default()
    };
    assert_eq!(count(by_kind).await?, 5);
    let by_point = EventFilter {
        point: Some("door.lobby.contact".to_owned()),
        appliance: Some(fixture.appliance.clone()),
        ..EventFilter::default()
    };
    assert_eq!(count(by_point).await?, 7);
    let by_time = EventFilter {
        from: Some(observation(2).recorded_at),
        until: Some(observation(4).recorded_at),
        ..EventFilter::default()
    };
    assert_eq!(count(by_time).await?, 6);
    Ok(())
}

async fn incidents_are_filtered_and_paged_newest_first(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let records: Vec<_> = (1..=5)
        .map(|id| {
            let mut record = incident_record(id, id, IncidentState::Open);
            if let Some(incident) = record.incident.as_mut() {
                incident.opened_at = T0 + id as i64 * SECOND;
            }
            record
        })
        .collect();
    store.ingest(&fixture.appliance, &records).await?;
    store
        .resolve_incident(&fixture.scope, &fixture.appliance, 2, "dana", None, T0)
        .await?;

    let first = store
        .incidents(&fixture.scope, &IncidentFilter::default(), &Page::first(3))
        .await?;
    let ids: Vec<u64> = first.items.iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![5, 4, 3]);
    let rest = store
        .incidents(
            &fixture.scope,
            &IncidentFilter::default(),
            &Page {
                limit: 3,
                after: first.next,
            },
        )
        .await?;
    let ids: Vec<u64> = rest.items.iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![2, 1]);
    assert_eq!(rest.next, None);

    let open = IncidentFilter {
        state: Some(IncidentState::Open),
        site: Some(fixture.site.clone()),
        appliance: Some(fixture.appliance.clone()),
    };
    let listed = store
        .incidents(&fixture.scope, &open, &Page::first(10))
        .await?;
    let ids: Vec<u64> = listed.items.iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![5, 4, 3, 1]);
    Ok(())
}

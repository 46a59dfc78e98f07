//! Tenant isolation: with tenant A's scope, nothing of tenant B can be read, listed or
//! changed, and B's data is unchanged by the attempts.

use gatehouse_protocol::IncidentState;

use super::fixtures::{Fixture, SECOND, T0, incident_record, observations};
use crate::store::{EventFilter, IncidentFilter, Page, Role, SecretHash, Store, StoreError};

on_both_backends!(a_scope_sees_and_touches_only_its_own_tenant);

fn is_not_found<T>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::NotFound { .. }))
}

async fn a_scope_sees_and_touches_only_its_own_tenant(store: &Store) -> anyhow::Result<()> {
    let a = Fixture::new(store, "alpha").await?;
    let b = Fixture::new(store, "bravo").await?;
    for fixture in [&a, &b] {
        let mut batch = observations(1, 3);
        batch.push(incident_record(4, 1, IncidentState::Open));
        store.ingest(&fixture.appliance, &batch).await?;
    }
    let b_token = store
        .create_api_token(&b.scope, "bravo-ops", Role::Admin, T0)
        .await?;
    let at = T0 + SECOND;

    // Reads of B's rows through A's scope: nothing.
    assert_eq!(store.site(&a.scope, &b.site).await?, None);
    assert_eq!(store.appliance(&a.scope, &b.appliance).await?, None);
    assert_eq!(store.incident(&a.scope, &b.appliance, 1).await?, None);
    assert!(
        store
            .incident_comments(&a.scope, &b.appliance, 1)
            .await?
            .is_empty()
    );
    assert!(store.appliances(&a.scope, Some(&b.site)).await?.is_empty());

    // Lists through A's scope: only A's rows, even when filtered by B's ids.
    let sites = store.sites(&a.scope).await?;
    assert!(
        sites
            .iter()
            .all(|s| s.id != b.site && s.tenant == *a.scope.tenant())
    );
    assert_eq!(sites.len(), 1);
    let appliances = store.appliances(&a.scope, None).await?;
    assert_eq!(appliances.len(), 1);
    assert_eq!(appliances[0].id, a.appliance);
    let incidents = store
        .incidents(&a.scope, &IncidentFilter::default(), &Page::first(100))
        .await?;
    assert_eq!(incidents.items.len(), 1);
    assert!(incidents.items.iter().all(|i| i.appliance == a.appliance));
    let events = store
        .events(&a.scope, &EventFilter::default(), &Page::first(100))
        .await?;
    assert_eq!(events.items.len(), 4);
    assert!(events.items.iter().all(|r| r.appliance == a.appliance));
    for filter in [
        EventFilter {
            appliance: Some(b.appliance.clone()),
            ..EventFilter::default()
        },
        EventFilter {
            site: Some(b.site.clone()),
            ..EventFilter::default()
        },
    ] {
        let found = store.events(&a.scope, &filter, &Page::first(100)).await?;
        assert!(found.items.is_empty(), "{filter:?}");
    }
    for filter in [
        IncidentFilter {
            appliance: Some(b.appliance.clone()),
            ..IncidentFilter::default()
        },
        IncidentFilter {
            site: Some(b.site.clone()),
            ..IncidentFilter::default()
        },
    ] {
        let found = store
            .incidents(&a.scope, &filter, &Page::first(100))
            .await?;
        assert!(found.items.is_empty(), "{filter:?}");
    }
    let tokens = store.api_tokens(&a.scope).await?;
    assert!(tokens.is_empty());

    // Writes on B's rows through A's scope: not found.
    assert!(is_not_found(
        store
            .acknowledge_incident(&a.scope, &b.appliance, 1, "mallory", None, at)
            .await
    ));
    assert!(is_not_found(
        store
            .resolve_incident(&a.scope, &b.appliance, 1, "mallory", None, at)
            .await
    ));
    assert!(is_not_found(
        store
            .comment_incident(&a.scope, &b.appliance, 1, "mallory", "hi", at)
            .await
    ));
    assert!(is_not_found(
        store.rename_site(&a.scope, &b.site, "mine").await
    ));
    assert!(is_not_found(store.delete_site(&a.scope, &b.site).await));
    assert!(is_not_found(
        store
            .create_claim(&a.scope, &b.site, "intruder", T0, T0 + 60 * SECOND)
            .await
    ));
    assert!(is_not_found(
        store.revoke_api_token(&a.scope, "bravo-ops").await
    ));

    // B is untouched.
    let b_incident = store
        .incident(&b.scope, &b.appliance, 1)
        .await?
        .ok_or_else(|| anyhow::anyhow!("B's incident is gone"))?;
    assert_eq!(b_incident.state, IncidentState::Open);
    assert!(
        store
            .incident_comments(&b.scope, &b.appliance, 1)
            .await?
            .is_empty()
    );
    assert_eq!(
        store.site(&b.scope, &b.site).await?.map(|s| s.name),
        Some("bravo HQ".to_owned())
    );
    assert_eq!(store.appliances(&b.scope, Some(&b.site)).await?.len(), 1);
    let b_principal = store
        .token_principal(&SecretHash::of_token(&b_token.token))
        .await?
        .ok_or_else(|| anyhow::anyhow!("B's token is gone"))?;
    assert_eq!(b_principal.scope, b.scope);
    let b_events = store
        .events(&b.scope, &EventFilter::default(), &Page::first(100))
        .await?;
    assert_eq!(b_events.items.len(), 4);
    Ok(())
}

//! Offline alerts: who counts as offline (silent, said goodbye, never connected), raising once,
//! clearing, replicas racing, and tenant isolation.

use gatehouse_protocol::ApplianceId;

use super::fixtures::{Fixture, SECOND, T0, claimed_appliance};
use crate::store::{Alert, AlertKind, Micros, StatusChange, Store};

on_both_backends!(
    silent_offline_and_never_connected_appliances_each_get_one_alert,
    an_alert_is_cleared_when_the_appliance_is_back_and_raised_again_next_time,
    replicas_raising_at_once_make_one_alert,
    a_status_that_arrives_first_prevents_the_alert,
    alerts_are_seen_and_cleared_only_within_their_tenant,
);

/// The grace period of these tests.
const GRACE: Micros = 60 * SECOND;
/// When the fixtures' claims were redeemed.
const CLAIMED: Micros = T0 + SECOND;

fn appliances_of(alerts: &[Alert]) -> Vec<ApplianceId> {
    let mut appliances: Vec<ApplianceId> = alerts.iter().map(|a| a.appliance.clone()).collect();
    appliances.sort();
    appliances
}

fn sorted(mut appliances: Vec<ApplianceId>) -> Vec<ApplianceId> {
    appliances.sort();
    appliances
}

async fn silent_offline_and_never_connected_appliances_each_get_one_alert(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "alpha").await?;
    let never_connected = fixture.appliance.clone();
    let site = &fixture.site;
    let scope = &fixture.scope;
    let silent = claimed_appliance(store, scope, site, "silent").await?;
    let goodbye = claimed_appliance(store, scope, site, "goodbye").await?;
    let healthy = claimed_appliance(store, scope, site, "healthy").await?;
    // Waiting to be installed: never expected online.
    let unclaimed = store
        .create_claim(scope, site, "in its box", T0, T0 + 3600 * SECOND)
        .await?
        .appliance;

    store
        .set_appliance_status(&healthy, true, 0, T0 + 30 * SECOND)
        .await?;
    let silent_at = T0 + 10 * SECOND;
    store
        .set_appliance_status(&silent, true, 0, silent_at)
        .await?;
    store
        .set_appliance_status(&goodbye, true, 0, T0 + 10 * SECOND)
        .await?;
    let goodbye_at = T0 + 20 * SECOND;
    let change = store
        .set_appliance_status(&goodbye, false, 3, goodbye_at)
        .await?;
    assert_eq!(change, StatusChange::WentOffline);

    // One microsecond before the first grace period ends: nothing.
    let early = store
        .raise_offline_alerts(CLAIMED + GRACE - 1, GRACE)
        .await?;
    assert!(early.is_empty(), "{early:?}");
    // The never-connected one is due first (claimed at T0 + 1 s).
    let first = store.raise_offline_alerts(CLAIMED + GRACE, GRACE).await?;
    assert_eq!(
        appliances_of(&first),
        std::slice::from_ref(&never_connected)
    );

    // Later: the silent one and the one that said goodbye are due; the healthy one keeps
    // reporting.
    let now = goodbye_at + GRACE;
    store
        .set_appliance_status(&healthy, true, 0, now - SECOND)
        .await?;
    let raised = store.raise_offline_alerts(now, GRACE).await?;
    assert_eq!(
        appliances_of(&raised),
        sorted(vec![silent.clone(), goodbye.clone()])
    );
    for alert in &raised {
        assert_eq!(alert.kind, AlertKind::ApplianceOffline);
        assert_eq!(&alert.tenant, scope.tenant());
        assert_eq!(&alert.site, site);
        assert_eq!(alert.raised_at, now);
        assert_eq!(alert.cleared_at, None);
    }
    let detail_of = |appliance: &ApplianceId| {
        raised
            .iter()
            .find(|alert| &alert.appliance == appliance)
            .map(|alert| alert.detail.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        detail_of(&silent),
        format!("appliance `silent` ({silent}) has not been heard from since 2023-11-14T22:13:30Z")
    );
    assert_eq!(
        detail_of(&goodbye),
        format!("appliance `goodbye` ({goodbye}) offline since 2023-11-14T22:13:40Z")
    );
    assert!(
        first[0]
            .detail
            .contains("has not connected since it was claimed at 2023-11-14T22:13:21Z"),
        "{}",
        first[0].detail
    );

    // Idempotent: nothing new, however often and however late.
    assert!(store.raise_offline_alerts(now, GRACE).await?.is_empty());
    assert!(
        store
            .raise_offline_alerts(now + 3600 * SECOND, GRACE)
            .await?
            .iter()
            .all(|alert| alert.appliance == healthy),
        "only the healthy one, silent by then, may be new"
    );
    let open = store.alerts(scope, true).await?;
    assert_eq!(open.len(), 4, "{open:?}");
    assert!(open.iter().all(|alert| alert.appliance != unclaimed));
    // Newest first.
    assert!(open.windows(2).all(|w| w[0].raised_at >= w[1].raised_at));
    Ok(())
}

async fn an_alert_is_cleared_when_the_appliance_is_back_and_raised_again_next_time(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "alpha").await?;
    let (scope, appliance) = (&fixture.scope, &fixture.appliance);
    store.set_appliance_status(appliance, true, 0, T0).await?;
    let raised = store.raise_offline_alerts(T0 + GRACE, GRACE).await?;
    assert_eq!(raised.len(), 1);

    let back = T0 + 2 * GRACE;
    store.set_appliance_status(appliance, true, 0, back).await?;
    let cleared = store
        .clear_offline_alert(scope, appliance, back)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing was cleared"))?;
    assert_eq!(cleared.id, raised[0].id);
    assert_eq!(cleared.cleared_at, Some(back));
    assert_eq!(
        store.clear_offline_alert(scope, appliance, back).await?,
        None
    );
    assert!(store.alerts(scope, true).await?.is_empty());
    assert_eq!(
        store.alerts(scope, false).await?,
        std::slice::from_ref(&cleared)
    );
    // Back in time for the grace period: no new alert.
    assert!(
        store
            .raise_offline_alerts(back + GRACE - 1, GRACE)
            .await?
            .is_empty()
    );

    // Silent again: a new occurrence, a new alert; the old one stays cleared.
    let again = store.raise_offline_alerts(back + GRACE, GRACE).await?;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, cleared.id);
    let all = store.alerts(scope, false).await?;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, again[0].id, "newest first");
    assert_eq!(store.alerts(scope, true).await?, again);

    // A clock a little behind the raiser's never clears before the raise.
    let cleared = store
        .clear_offline_alert(scope, appliance, back + GRACE - SECOND)
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing was cleared"))?;
    assert_eq!(cleared.cleared_at, Some(back + GRACE));
    Ok(())
}

async fn replicas_raising_at_once_make_one_alert(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "alpha").await?;
    let mut appliances = vec![fixture.appliance.clone()];
    for name in ["b", "c", "d"] {
        appliances.push(claimed_appliance(store, &fixture.scope, &fixture.site, name).await?);
    }
    let now = T0 + 10 * GRACE;
    let replica_a = store.clone();
    let replica_b = store.clone();
    let (a, b) = tokio::join!(
        replica_a.raise_offline_alerts(now, GRACE),
        replica_b.raise_offline_alerts(now, GRACE)
    );
    let mut raised = a?;
    raised.extend(b?);
    assert_eq!(appliances_of(&raised), sorted(appliances));
    assert_eq!(store.alerts(&fixture.scope, true).await?.len(), 4);
    Ok(())
}

async fn a_status_that_arrives_first_prevents_the_alert(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "alpha").await?;
    let appliance = &fixture.appliance;
    store.set_appliance_status(appliance, false, 0, T0).await?;
    // The appliance reconnects just as the watcher runs: its status is committed first.
    let now = T0 + GRACE;
    store.set_appliance_status(appliance, true, 0, now).await?;
    assert!(store.raise_offline_alerts(now, GRACE).await?.is_empty());
    assert!(store.alerts(&fixture.scope, false).await?.is_empty());
    Ok(())
}

async fn alerts_are_seen_and_cleared_only_within_their_tenant(store: &Store) -> anyhow::Result<()> {
    let a = Fixture::new(store, "alpha").await?;
    let b = Fixture::new(store, "bravo").await?;
    let raised = store.raise_offline_alerts(T0 + GRACE * 2, GRACE).await?;
    assert_eq!(raised.len(), 2);

    let seen_by_a = store.alerts(&a.scope, false).await?;
    assert_eq!(seen_by_a.len(), 1);
    assert_eq!(seen_by_a[0].appliance, a.appliance);
    assert_eq!(&seen_by_a[0].tenant, a.scope.tenant());

    // A's scope cannot clear B's alert.
    let now = T0 + GRACE * 3;
    assert_eq!(
        store
            .clear_offline_alert(&a.scope, &b.appliance, now)
            .await?,
        None
    );
    let open_for_b = store.alerts(&b.scope, true).await?;
    assert_eq!(open_for_b.len(), 1);
    assert_eq!(open_for_b[0].appliance, b.appliance);
    assert_eq!(open_for_b[0].cleared_at, None);
    Ok(())
}

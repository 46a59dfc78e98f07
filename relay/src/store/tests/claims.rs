//! Claim codes and appliance health.

use gatehouse_protocol::ApplianceId;

use super::fixtures::{Fixture, SECOND, T0};
use crate::store::{StatusChange, Store, StoreError};

on_both_backends!(
    a_claim_code_works_once,
    a_claim_code_expires,
    an_unknown_claim_code_is_refused,
    a_claim_code_may_be_typed_loosely,
    appliance_health_follows_status_messages,
);

async fn a_claim_code_works_once(store: &Store) -> anyhow::Result<()> {
    let (_, scope) = store.create_tenant("acme", T0).await?;
    let site = store.create_site(&scope, "Lobby", T0).await?;
    let claim = store
        .create_claim(&scope, &site.id, "front gate", T0, T0 + 600 * SECOND)
        .await?;

    let before = store.appliance(&scope, &claim.appliance).await?;
    assert_eq!(before.map(|a| a.claimed_at), Some(None));

    let redeemed = store.redeem_claim(&claim.code, T0 + 10 * SECOND).await?;
    assert_eq!(&redeemed.tenant, scope.tenant());
    assert_eq!(redeemed.site, site.id);
    assert_eq!(redeemed.appliance, claim.appliance);
    let after = store.appliance(&scope, &claim.appliance).await?;
    assert_eq!(after.map(|a| a.claimed_at), Some(Some(T0 + 10 * SECOND)));

    assert!(matches!(
        store.redeem_claim(&claim.code, T0 + 20 * SECOND).await,
        Err(StoreError::ClaimUsed)
    ));

    store
        .set_certificate_fingerprint(&claim.appliance, "ab12")
        .await?;
    let certified = store.appliance(&scope, &claim.appliance).await?;
    assert_eq!(
        certified.and_then(|a| a.cert_fingerprint).as_deref(),
        Some("ab12")
    );
    Ok(())
}

async fn a_claim_code_expires(store: &Store) -> anyhow::Result<()> {
    let (_, scope) = store.create_tenant("acme", T0).await?;
    let site = store.create_site(&scope, "Lobby", T0).await?;
    let expires_at = T0 + 600 * SECOND;
    let claim = store
        .create_claim(&scope, &site.id, "front gate", T0, expires_at)
        .await?;
    assert!(matches!(
        store.redeem_claim(&claim.code, expires_at).await,
        Err(StoreError::ClaimExpired)
    ));
    // Still expired, not "used", after the failed attempt.
    assert!(matches!(
        store.redeem_claim(&claim.code, expires_at + SECOND).await,
        Err(StoreError::ClaimExpired)
    ));
    assert!(matches!(
        store.create_claim(&scope, &site.id, "gate", T0, T0).await,
        Err(StoreError::Invalid {
            field: "expires_at",
            ..
        })
    ));
    Ok(())
}

async fn an_unknown_claim_code_is_refused(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    assert!(matches!(
        store.redeem_claim("AAAA-BBBB-CCCC-DDDD-EEEE", T0).await,
        Err(StoreError::ClaimUnknown)
    ));
    assert!(matches!(
        store.redeem_claim("", T0).await,
        Err(StoreError::ClaimUnknown)
    ));
    // Only the hash is stored: the appliance id is not a code.
    assert!(matches!(
        store.redeem_claim(fixture.appliance.as_str(), T0).await,
        Err(StoreError::ClaimUnknown)
    ));
    Ok(())
}

async fn a_claim_code_may_be_typed_loosely(store: &Store) -> anyhow::Result<()> {
    let (_, scope) = store.create_tenant("acme", T0).await?;
    let site = store.create_site(&scope, "Lobby", T0).await?;
    let claim = store
        .create_claim(&scope, &site.id, "front gate", T0, T0 + 600 * SECOND)
        .await?;
    let typed = format!(" {} ", claim.code.to_lowercase().replace('-', " "));
    let redeemed = store.redeem_claim(&typed, T0 + SECOND).await?;
    assert_eq!(redeemed.appliance, claim.appliance);
    Ok(())
}

async fn appliance_health_follows_status_messages(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let appliance = &fixture.appliance;
    let health = async || -> anyhow::Result<(bool, Option<i64>, u64)> {
        let found = store
            .appliance(&fixture.scope, appliance)
            .await?
            .ok_or_else(|| anyhow::anyhow!("appliance is missing"))?;
        Ok((found.online, found.offline_since, found.outbox_backlog))
    };
    assert_eq!(health().await?, (false, None, 0));

    let change = store.set_appliance_status(appliance, true, 12, T0).await?;
    assert_eq!(change, StatusChange::CameOnline);
    assert_eq!(health().await?, (true, None, 12));

    let down = T0 + 100 * SECOND;
    let change = store
        .set_appliance_status(appliance, false, 40, down)
        .await?;
    assert_eq!(change, StatusChange::WentOffline);
    assert_eq!(health().await?, (false, Some(down), 40));

    // A late "online" from before the outage is ignored.
    let change = store
        .set_appliance_status(appliance, true, 3, T0 + 50 * SECOND)
        .await?;
    assert_eq!(change, StatusChange::Stale);
    assert_eq!(health().await?, (false, Some(down), 40));

    let offline = store.appliances_offline_since(down).await?;
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].0, fixture.scope);
    assert_eq!(&offline[0].1.id, appliance);
    assert!(store.appliances_offline_since(down - 1).await?.is_empty());

    let change = store
        .set_appliance_status(appliance, true, 0, down + SECOND)
        .await?;
    assert_eq!(change, StatusChange::CameOnline);
    assert!(
        store
            .appliances_offline_since(down + 10 * SECOND)
            .await?
            .is_empty()
    );

    let unknown = ApplianceId::new("app-unknown")?;
    assert!(matches!(
        store.set_appliance_status(&unknown, true, 0, T0).await,
        Err(StoreError::UnknownAppliance(_))
    ));
    Ok(())
}

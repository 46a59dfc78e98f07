//! Claim codes and appliance health.

use gatehouse_protocol::ApplianceId;

use super::fixtures::{Fixture, SECOND, T0};
use crate::store::{CLAIM_RETRY_WINDOW, NewClaim, StatusChange, Store, StoreError, TenantScope};

on_both_backends!(
    a_claim_code_works_once,
    a_claim_commits_with_its_certificate_or_not_at_all,
    a_used_code_is_repeated_for_its_key_only_for_a_while,
    of_two_claims_with_one_code_the_second_sees_the_first,
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
    // Redeemed without a key: no certificate claim can repeat it.
    assert!(matches!(
        store
            .begin_claim(&claim.code, KEY_1, T0 + 30 * SECOND)
            .await,
        Err(StoreError::ClaimUsed)
    ));
    Ok(())
}

const KEY_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A tenant, a site and a code valid for ten minutes from T0.
async fn new_code(store: &Store) -> anyhow::Result<(TenantScope, NewClaim)> {
    let (_, scope) = store.create_tenant("acme", T0).await?;
    let site = store.create_site(&scope, "Lobby", T0).await?;
    let claim = store
        .create_claim(&scope, &site.id, "front gate", T0, T0 + 600 * SECOND)
        .await?;
    Ok((scope, claim))
}

/// `(claimed_at, cert_fingerprint)` of the claim's appliance.
async fn certified(
    store: &Store,
    scope: &TenantScope,
    claim: &NewClaim,
) -> anyhow::Result<(Option<i64>, Option<String>)> {
    let found = store
        .appliance(scope, &claim.appliance)
        .await?
        .ok_or_else(|| anyhow::anyhow!("appliance is missing"))?;
    Ok((found.claimed_at, found.cert_fingerprint))
}

async fn a_claim_commits_with_its_certificate_or_not_at_all(store: &Store) -> anyhow::Result<()> {
    let (scope, claim) = new_code(store).await?;

    // Signing failed, the answer timed out: the pending claim is dropped, nothing happened.
    let pending = store.begin_claim(&claim.code, KEY_1, T0 + SECOND).await?;
    assert_eq!(pending.claim().appliance, claim.appliance);
    assert!(!pending.is_repeat());
    drop(pending);
    assert_eq!(certified(store, &scope, &claim).await?, (None, None));

    // Another key may still take the code, since the first never committed.
    let pending = store
        .begin_claim(&claim.code, KEY_2, T0 + 2 * SECOND)
        .await?;
    let committed = pending.commit("ab12").await?;
    assert_eq!(committed.appliance, claim.appliance);
    assert_eq!(&committed.tenant, scope.tenant());
    assert_eq!(
        certified(store, &scope, &claim).await?,
        (Some(T0 + 2 * SECOND), Some("ab12".to_owned()))
    );
    assert!(matches!(
        store.begin_claim(&claim.code, KEY_1, T0 + 3 * SECOND).await,
        Err(StoreError::ClaimUsed)
    ));
    Ok(())
}

async fn a_used_code_is_repeated_for_its_key_only_for_a_while(store: &Store) -> anyhow::Result<()> {
    let (scope, claim) = new_code(store).await?;
    let used_at = T0 + 590 * SECOND;
    store
        .begin_claim(&claim.code, KEY_1, used_at)
        .await?
        .commit("first")
        .await?;

    // The answer was lost: the same key again, after the code's expiry, gets a new
    // certificate for the same appliance, which stays claimed since the first use.
    let again = store
        .begin_claim(&claim.code, KEY_1, used_at + 60 * SECOND)
        .await?;
    assert!(again.is_repeat());
    assert_eq!(again.claim().appliance, claim.appliance);
    again.commit("second").await?;
    assert_eq!(
        certified(store, &scope, &claim).await?,
        (Some(used_at), Some("second".to_owned()))
    );

    for (key, at, what) in [
        (KEY_2, used_at + SECOND, "another key"),
        (KEY_1, used_at + CLAIM_RETRY_WINDOW + 1, "after the window"),
    ] {
        let refused = store.begin_claim(&claim.code, key, at).await;
        assert!(
            matches!(refused, Err(StoreError::ClaimUsed)),
            "{what}: {refused:?}"
        );
    }
    assert!(matches!(
        store.redeem_claim(&claim.code, used_at + SECOND).await,
        Err(StoreError::ClaimUsed)
    ));
    Ok(())
}

async fn of_two_claims_with_one_code_the_second_sees_the_first(
    store: &Store,
) -> anyhow::Result<()> {
    let (scope, claim) = new_code(store).await?;
    let first = store.begin_claim(&claim.code, KEY_1, T0 + SECOND).await?;
    let second = {
        let (store, code) = (store.clone(), claim.code.clone());
        tokio::spawn(async move {
            let outcome = store.begin_claim(&code, KEY_2, T0 + 2 * SECOND).await;
            outcome.map(|pending| pending.claim().clone())
        })
    };
    // The second waits for the first's row (or, on SQLite, the write lock).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second claim did not wait");
    first.commit("first").await?;
    let outcome = second.await?;
    assert!(matches!(outcome, Err(StoreError::ClaimUsed)), "{outcome:?}");
    assert_eq!(
        certified(store, &scope, &claim).await?,
        (Some(T0 + SECOND), Some("first".to_owned()))
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

    let change = store
        .set_appliance_status(appliance, true, 0, down + SECOND)
        .await?;
    assert_eq!(change, StatusChange::CameOnline);
    assert_eq!(health().await?, (true, None, 0));

    let unknown = ApplianceId::new("app-unknown")?;
    assert!(matches!(
        store.set_appliance_status(&unknown, true, 0, T0).await,
        Err(StoreError::UnknownAppliance(_))
    ));
    Ok(())
}

//! Tenants, sites, appliances and records for the tests.

use gatehouse_protocol::{ApplianceId, IncidentState, Severity, SiteId};

use crate::store::{IngestIncident, IngestRecord, Micros, Store, TenantScope};

/// A moment in the tests' world (2023-11-14).
pub(crate) const T0: Micros = 1_700_000_000_000_000;
/// One second.
pub(crate) const SECOND: Micros = 1_000_000;

/// A tenant with one site and one claimed appliance.
pub(crate) struct Fixture {
    pub(crate) scope: TenantScope,
    pub(crate) site: SiteId,
    pub(crate) appliance: ApplianceId,
}

impl Fixture {
    pub(crate) async fn new(store: &Store, name: &str) -> anyhow::Result<Fixture> {
        let (_, scope) = store.create_tenant(name, T0).await?;
        let site = store.create_site(&scope, &format!("{name} HQ"), T0).await?;
        let appliance = claimed_appliance(store, &scope, &site.id, "gate").await?;
        Ok(Fixture {
            scope,
            site: site.id,
            appliance,
        })
    }
}

/// A new appliance at `site`, its claim redeemed.
pub(crate) async fn claimed_appliance(
    store: &Store,
    scope: &TenantScope,
    site: &SiteId,
    name: &str,
) -> anyhow::Result<ApplianceId> {
    let claim = store
        .create_claim(scope, site, name, T0, T0 + 3600 * SECOND)
        .await?;
    let redeemed = store.redeem_claim(&claim.code, T0 + SECOND).await?;
    anyhow::ensure!(redeemed.appliance == claim.appliance);
    Ok(claim.appliance)
}

/// An observation record.
pub(crate) fn observation(seq: u64) -> IngestRecord {
    IngestRecord {
        seq,
        recorded_at: T0 + seq as Micros * SECOND,
        kind: "observation".to_owned(),
        device: Some("plc-1".to_owned()),
        point: Some("door.lobby.contact".to_owned()),
        incident: None,
        evicted_through: None,
        body: format!(r#"{{"seq":{seq},"value":"open"}}"#),
    }
}

/// Observations `from..=through`.
pub(crate) fn observations(from: u64, through: u64) -> Vec<IngestRecord> {
    (from..=through).map(observation).collect()
}

/// An incident record: incident `id` is in `state` after record `seq`.
pub(crate) fn incident_record(seq: u64, id: u64, state: IncidentState) -> IngestRecord {
    IngestRecord {
        seq,
        recorded_at: T0 + seq as Micros * SECOND,
        kind: "incident".to_owned(),
        device: None,
        point: Some("door.lobby.contact".to_owned()),
        incident: Some(IngestIncident {
            id,
            state,
            severity: Severity::High,
            title: "Door held open".to_owned(),
            opened_at: T0,
        }),
        evicted_through: None,
        body: format!(r#"{{"incident":{id},"state":"{}"}}"#, state.as_str()),
    }
}

/// An eviction marker for `seq..=through`.
pub(crate) fn evicted(seq: u64, through: u64) -> IngestRecord {
    IngestRecord {
        seq,
        recorded_at: T0 + seq as Micros * SECOND,
        kind: "evicted".to_owned(),
        device: None,
        point: None,
        incident: None,
        evicted_through: Some(through),
        body: format!(r#"{{"evicted_through":{through}}}"#),
    }
}

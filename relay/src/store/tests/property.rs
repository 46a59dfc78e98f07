//! Property: whatever the order and however often batches are redelivered, every record ends
//! up stored exactly once, the ack after each batch is what a model of "highest contiguous
//! seq received" says, and at the end it is the highest seq.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::fixtures::{T0, claimed_appliance, observations};
use super::harness::TestDatabase;
use crate::store::{Backend, EventFilter, Page, Store, TenantScope};

/// `n` records, and batches (inclusive seq ranges) that cover `1..=n` plus some redelivered
/// ones, in a random order.
fn schedule() -> impl Strategy<Value = (u64, Vec<(u64, u64)>)> {
    (1u64..=40)
        .prop_flat_map(|n| {
            (
                Just(n),
                proptest::collection::vec(1..=n, 0..8),
                proptest::collection::vec((1..=n, 1..=n), 0..6),
            )
        })
        .prop_flat_map(|(n, cuts, redelivered)| {
            let cuts: BTreeSet<u64> = cuts.into_iter().filter(|&cut| cut < n).collect();
            let mut batches = Vec::new();
            let mut start = 1;
            for cut in cuts {
                batches.push((start, cut));
                start = cut + 1;
            }
            batches.push((start, n));
            batches.extend(redelivered.into_iter().map(|(x, y)| (x.min(y), x.max(y))));
            (Just(n), Just(batches).prop_shuffle())
        })
}

/// The highest `k` such that `1..=k` are all in `received`.
fn contiguous(received: &BTreeSet<u64>) -> u64 {
    let mut k = 0;
    while received.contains(&(k + 1)) {
        k += 1;
    }
    k
}

async fn check_schedule(
    store: &Store,
    scope: &TenantScope,
    site: &gatehouse_protocol::SiteId,
    n: u64,
    batches: &[(u64, u64)],
) -> Result<(), TestCaseError> {
    let fail = |error: &dyn std::fmt::Display| TestCaseError::fail(error.to_string());
    let appliance = claimed_appliance(store, scope, site, "gate")
        .await
        .map_err(|e| fail(&e))?;
    let mut received = BTreeSet::new();
    let (mut inserted, mut duplicates, mut sent) = (0, 0, 0);
    for &(from, through) in batches {
        let outcome = store
            .ingest(&appliance, &observations(from, through))
            .await
            .map_err(|e| fail(&e))?;
        received.extend(from..=through);
        sent += (through - from + 1) as usize;
        inserted += outcome.inserted;
        duplicates += outcome.duplicates;
        prop_assert_eq!(outcome.highest_contiguous_seq, contiguous(&received));
    }
    let stored = store
        .events(
            scope,
            &EventFilter {
                appliance: Some(appliance.clone()),
                ..EventFilter::default()
            },
            &Page::first(1000),
        )
        .await
        .map_err(|e| fail(&e))?;
    let mut seqs: Vec<u64> = stored.items.iter().map(|record| record.seq).collect();
    seqs.sort_unstable();
    prop_assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    prop_assert_eq!(inserted, n as usize);
    prop_assert_eq!(duplicates, sent - n as usize);
    let acked = store
        .appliance(scope, &appliance)
        .await
        .map_err(|e| fail(&e))?
        .map(|a| a.acked_seq);
    prop_assert_eq!(acked, Some(n));
    Ok(())
}

fn property(backend: Backend) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let database = runtime.block_on(TestDatabase::create(backend))?;
    let setup = runtime.block_on(async {
        let (_, scope) = database.store.create_tenant("prop", T0).await?;
        let site = database.store.create_site(&scope, "Site", T0).await?;
        anyhow::Ok((scope, site.id))
    });
    let outcome = setup.map(|(scope, site)| {
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        runner.run(&schedule(), |(n, batches)| {
            runtime.block_on(check_schedule(&database.store, &scope, &site, n, &batches))
        })
    });
    runtime.block_on(database.destroy())?;
    match outcome? {
        Ok(()) => Ok(()),
        Err(failure) => anyhow::bail!("{failure}"),
    }
}

#[test]
fn any_interleaving_of_redelivered_batches_stores_each_record_once_sqlite() -> anyhow::Result<()> {
    property(Backend::Sqlite)
}

#[test]
fn any_interleaving_of_redelivered_batches_stores_each_record_once_postgres() -> anyhow::Result<()>
{
    property(Backend::Postgres)
}

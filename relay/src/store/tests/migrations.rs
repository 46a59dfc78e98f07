//! Migrations that rebuild a table keep what it holds.

use sqlx::Row;
use sqlx::any::AnyPoolOptions;

use super::fixtures::{SECOND, T0, observations};
use super::harness::run_blank;
use crate::store::{Backend, EventFilter, MIGRATOR, Page, Store, TenantScope};

#[tokio::test]
async fn sqlite_0005_keeps_every_record() -> anyhow::Result<()> {
    run_blank(Backend::Sqlite, records_survive_0005).await
}

#[tokio::test]
async fn postgres_0005_keeps_every_record() -> anyhow::Result<()> {
    run_blank(Backend::Postgres, records_survive_0005).await
}

/// The rows a database at migration 0004 holds, as `(seq, through_seq, recorded_at, kind,
/// device, point, incident_id, body)`.
type RecordRow = (
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
);

fn records_before() -> Vec<RecordRow> {
    vec![
        (
            1,
            1,
            T0,
            "observation".into(),
            Some("plc-1".into()),
            Some("door.lobby.contact".into()),
            None,
            r#"{"seq":1}"#.into(),
        ),
        (
            2,
            2,
            T0 + SECOND,
            "incident".into(),
            None,
            None,
            Some(7),
            r#"{"seq":2}"#.into(),
        ),
        (
            3,
            5,
            0,
            "evicted".into(),
            None,
            None,
            None,
            r#"{"kind":"evicted","first_seq":3,"through_seq":5}"#.into(),
        ),
    ]
}

/// 0005 rebuilds `records` without its foreign key: rows written at 0004 are all there after
/// it, the primary key still tells a redelivery, and the tenant's events are listed.
async fn records_survive_0005(url: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    MIGRATOR.run_to(4, &pool).await?;
    for statement in [
        "INSERT INTO tenants (id, name, created_at) VALUES ('tnt-1', 'acme', 0)",
        "INSERT INTO sites (id, tenant_id, name, created_at) VALUES ('site-1', 'tnt-1', 'HQ', 0)",
        "INSERT INTO appliances (id, tenant_id, site_id, name, created_at, claimed_at) \
         VALUES ('app-1', 'tnt-1', 'site-1', 'gate', 0, 0)",
        "INSERT INTO claim_codes (code_hash, tenant_id, site_id, appliance_id, created_at, \
         expires_at, used_at) VALUES ('hash', 'tnt-1', 'site-1', 'app-1', 0, 1, 0)",
    ] {
        sqlx::query(statement).execute(&pool).await?;
    }
    for row in records_before() {
        sqlx::query(
            "INSERT INTO records (tenant_id, appliance_id, seq, through_seq, recorded_at, kind, \
             device, point, incident_id, body) \
             VALUES ('tnt-1', 'app-1', $1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.0)
        .bind(row.1)
        .bind(row.2)
        .bind(row.3)
        .bind(row.4)
        .bind(row.5)
        .bind(row.6)
        .bind(row.7)
        .execute(&pool)
        .await?;
    }
    pool.close().await;

    let store = Store::open(url).await?;
    let rows = sqlx::query(
        "SELECT tenant_id, appliance_id, seq, through_seq, recorded_at, kind, device, point, \
         incident_id, body FROM records ORDER BY seq",
    )
    .fetch_all(&store.pool)
    .await?;
    let mut after = Vec::new();
    for row in &rows {
        assert_eq!(row.try_get::<String, _>("tenant_id")?, "tnt-1");
        assert_eq!(row.try_get::<String, _>("appliance_id")?, "app-1");
        after.push((
            row.try_get("seq")?,
            row.try_get("through_seq")?,
            row.try_get("recorded_at")?,
            row.try_get("kind")?,
            row.try_get("device")?,
            row.try_get("point")?,
            row.try_get("incident_id")?,
            row.try_get("body")?,
        ));
    }
    assert_eq!(after, records_before());
    let leftover = sqlx::query("SELECT COUNT(*) AS n FROM records_set_aside")
        .fetch_one(&store.pool)
        .await;
    assert!(leftover.is_err(), "the copy is dropped");

    let appliance = "app-1".parse()?;
    let outcome = store.ingest(&appliance, &observations(1, 7)).await?;
    assert_eq!(
        (
            outcome.highest_contiguous_seq,
            outcome.inserted,
            outcome.duplicates
        ),
        (7, 4, 3)
    );
    let scope = TenantScope::new("tnt-1".parse()?);
    let events = store
        .events(&scope, &EventFilter::default(), &Page::first(100))
        .await?;
    assert_eq!(events.items.len(), 7);
    store.close().await;
    Ok(())
}

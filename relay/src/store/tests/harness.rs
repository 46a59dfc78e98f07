//! A fresh database per test, on either backend, dropped afterwards even when the test panics.

use std::panic::AssertUnwindSafe;

use anyhow::Context;
use futures_util::FutureExt;
use rand::RngCore;
use sqlx::Any;
use sqlx::migrate::MigrateDatabase;

use crate::store::{Backend, Store};

/// The PostgreSQL server the tests use.
const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

const POSTGRES_HINT: &str = "the PostgreSQL tests need a server on 127.0.0.1:5432 (user postgres, \
     trust auth); start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// A database made for one test.
pub(crate) struct TestDatabase {
    pub(crate) store: Store,
    /// The PostgreSQL database to drop afterwards.
    postgres_url: Option<String>,
    /// The SQLite file's directory, removed on drop.
    _directory: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub(crate) async fn create(backend: Backend) -> anyhow::Result<TestDatabase> {
        match backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("relay.db").display()
                );
                let store = Store::open(&url).await.context("opening SQLite")?;
                Ok(TestDatabase {
                    store,
                    postgres_url: None,
                    _directory: Some(directory),
                })
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let mut suffix = [0u8; 6];
                rand::rng().fill_bytes(&mut suffix);
                let url = format!("{POSTGRES_SERVER}/gh_test_{}", hex::encode(suffix));
                Any::create_database(&url)
                    .await
                    .with_context(|| format!("creating a test database: {POSTGRES_HINT}"))?;
                match Store::open(&url).await {
                    Ok(store) => Ok(TestDatabase {
                        store,
                        postgres_url: Some(url),
                        _directory: None,
                    }),
                    Err(error) => {
                        Any::force_drop_database(&url).await.ok();
                        Err(error).context("opening PostgreSQL")
                    }
                }
            }
        }
    }

    pub(crate) async fn destroy(self) -> anyhow::Result<()> {
        self.store.close().await;
        if let Some(url) = &self.postgres_url {
            Any::force_drop_database(url)
                .await
                .with_context(|| format!("dropping {url}"))?;
        }
        Ok(())
    }
}

/// Runs `test` on a fresh database of `backend`, then drops the database.
pub(crate) async fn run<F>(backend: Backend, test: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Store) -> anyhow::Result<()>,
{
    let database = TestDatabase::create(backend).await?;
    let outcome = AssertUnwindSafe(test(&database.store)).catch_unwind().await;
    database.destroy().await?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

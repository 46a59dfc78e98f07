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

/// A database made for one test, migrated, with its store.
pub(crate) struct TestDatabase {
    pub(crate) store: Store,
    blank: BlankDatabase,
}

impl TestDatabase {
    pub(crate) async fn create(backend: Backend) -> anyhow::Result<TestDatabase> {
        let blank = BlankDatabase::create(backend).await?;
        match Store::open(&blank.url).await {
            Ok(store) => Ok(TestDatabase { store, blank }),
            Err(error) => {
                blank.destroy().await.ok();
                Err(error).with_context(|| format!("opening {backend:?}"))
            }
        }
    }

    pub(crate) async fn destroy(self) -> anyhow::Result<()> {
        self.store.close().await;
        self.blank.destroy().await
    }
}

/// A new, empty database for one test: no migration has run on it.
pub(crate) struct BlankDatabase {
    pub(crate) url: String,
    /// Whether `url` is a PostgreSQL database to drop afterwards.
    postgres: bool,
    /// The SQLite file's directory, removed on drop.
    _directory: Option<tempfile::TempDir>,
}

impl BlankDatabase {
    pub(crate) async fn create(backend: Backend) -> anyhow::Result<BlankDatabase> {
        match backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("relay.db").display()
                );
                Ok(BlankDatabase {
                    url,
                    postgres: false,
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
                Ok(BlankDatabase {
                    url,
                    postgres: true,
                    _directory: None,
                })
            }
        }
    }

    /// Drops the database; every connection to it must be closed.
    pub(crate) async fn destroy(self) -> anyhow::Result<()> {
        if self.postgres {
            Any::force_drop_database(&self.url)
                .await
                .with_context(|| format!("dropping {}", self.url))?;
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

/// Runs `test` with the URL of a new, empty database of `backend` (no migration has run), then
/// drops the database. The test must close its connections.
pub(crate) async fn run_blank<F>(backend: Backend, test: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&str) -> anyhow::Result<()>,
{
    let database = BlankDatabase::create(backend).await?;
    let outcome = AssertUnwindSafe(test(&database.url)).catch_unwind().await;
    database.destroy().await?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

//! The store's tests. Every test body is written once, as `async fn name(store: &Store)`, and
//! [`on_both_backends!`] runs it against a fresh SQLite file and a fresh PostgreSQL database:
//! `store::tests::<file>::sqlite::<name>` and `store::tests::<file>::postgres::<name>`.
//!
//! PostgreSQL is expected on 127.0.0.1:5432 (user `postgres`, trust auth); each test creates
//! its own `gh_test_<random>` database and drops it afterwards. When the server is not
//! running the PostgreSQL tests fail and say how to start it.

/// Runs each named `async fn(&Store) -> anyhow::Result<()>` on both backends.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() -> anyhow::Result<()> {
                    $crate::store::tests::harness::run($crate::store::Backend::Sqlite, super::$test)
                        .await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() -> anyhow::Result<()> {
                    $crate::store::tests::harness::run($crate::store::Backend::Postgres, super::$test)
                        .await
                }
            )*
        }
    };
}

mod admin;
mod alerts;
mod claims;
mod downlinks;
mod fixtures;
mod harness;
mod ingest;
mod isolation;
mod migrations;
mod operators;
mod property;
mod rejected;

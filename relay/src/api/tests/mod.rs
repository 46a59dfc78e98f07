//! The API's tests, through the real router over a real store. Every test body is written
//! once, as `async fn name(store: &Store) -> anyhow::Result<()>`, and [`on_both_backends!`]
//! runs it on a fresh SQLite file and a fresh PostgreSQL database:
//! `api::tests::<file>::sqlite::<name>` and `api::tests::<file>::postgres::<name>`.
//!
//! REST is driven with `tower::ServiceExt::oneshot` (no socket); the stream with a real
//! listener on 127.0.0.1 and tokio-tungstenite. PostgreSQL is expected on 127.0.0.1:5432
//! (user `postgres`, trust auth), as for the store's tests.

/// Runs each named `async fn(&Store) -> anyhow::Result<()>` on both backends.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() -> anyhow::Result<()> {
                    $crate::api::tests::harness::run($crate::store::Backend::Sqlite, super::$test)
                        .await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() -> anyhow::Result<()> {
                    $crate::api::tests::harness::run($crate::store::Backend::Postgres, super::$test)
                        .await
                }
            )*
        }
    };
}

mod auth;
mod claim;
mod harness;
mod incidents;
mod input;
mod isolation;
mod metrics;
mod stream;

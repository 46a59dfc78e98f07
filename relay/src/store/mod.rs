//! The relay's data layer: PostgreSQL in production, SQLite as the zero-setup default.
//!
//! # One set of SQL
//!
//! [`Store`] holds one sqlx [`AnyPool`]; the URL picks the driver (`postgres://...`,
//! `sqlite://path?mode=rwc`, `sqlite::memory:`). Every statement and every migration in
//! `relay/migrations/` is written once, in the dialect both accept:
//!
//! - types are `TEXT` and `BIGINT` only. Ids are TEXT made by the relay (no `SERIAL` or
//!   `AUTOINCREMENT`), timestamps are microseconds since the Unix epoch ([`Micros`]), booleans
//!   are 0/1 (the Any driver cannot read SQLite `BOOLEAN` columns), JSON bodies are TEXT;
//! - placeholders are `$1, $2, ...` (SQLite reads `$NNN` as positional). Dynamic filters are
//!   assembled by `sql::Sql`, which writes `$n` placeholders (sqlx's `QueryBuilder` would
//!   write `?`, which PostgreSQL refuses);
//! - upserts are `INSERT ... ON CONFLICT (...) DO NOTHING | DO UPDATE ... WHERE ...`, and
//!   `RETURNING` is used for row locks (both have had them for years).
//!
//! What differs between the backends lives in [`Store::open`] and `Store::begin_write` and
//! nowhere else: SQLite gets WAL and `BEGIN IMMEDIATE` (so two writers queue on the busy
//! timeout instead of failing on a stale snapshot), and an in-memory SQLite database gets a
//! pool of exactly one connection (each connection would otherwise see its own database).
//!
//! # Invariants
//!
//! - **Tenant scoping is in the data layer.** Every read or write of tenant data takes a
//!   [`TenantScope`], and every such statement has `tenant_id = $scope` in its `WHERE` (or
//!   writes the scope's tenant). A scope is made only by [`Store::create_tenant`],
//!   [`Store::admin_scope`] (a platform-admin action), [`Store::token_principal`] (an
//!   authenticated API token) or for the relay itself from an appliance
//!   ([`Store::appliance_scope`], [`IngestOutcome::scope`]). A row of another tenant is
//!   `None` to a read, [`StoreError::NotFound`] to a write, and never in a list. The schema
//!   backs this with composite foreign keys `(tenant_id, appliance_id)`, so a claim,
//!   incident, alert or command cannot name an appliance of another tenant.
//! - **A record's tenant and appliance are its appliance row's.** Records have no foreign
//!   key (PostgreSQL would check one record by record, a third of its time in a backlog
//!   drain; migration 0005 dropped it). Instead the one statement that inserts records
//!   (`ingest.rs`, `insert_records`) binds neither column: it copies both from the appliance's
//!   row, which the batch has locked. That row is never deleted and never changes tenant: no
//!   statement does either, and the database refuses both, because every appliance is created
//!   with its claim code, claim codes are never deleted, and their foreign key
//!   `(tenant_id, appliance_id)` names the appliance. So no record is orphaned or filed under
//!   another tenant.
//! - **The relay's own paths cross tenants, and only they.** They take no scope because no
//!   operator is behind them, and each names what it trusts instead:
//!   - ingestion and statuses ([`Store::ingest`], [`Store::set_appliance_status`]) trust the
//!     appliance id, which the broker authenticated; the tenant comes from the appliance's
//!     row;
//!   - [`Store::raise_offline_alerts`] scans every tenant's appliances and writes each alert
//!     with the `tenant_id` read from the appliance's own row, under its lock;
//!   - claiming (`redeem_claim`, `begin_claim` and its `commit`, which notes the
//!     certificate's fingerprint) finds the appliance and its tenant from the claim code, the
//!     secret that proves who is asking;
//!   - [`Store::claim_due_downlinks`], [`Store::count_pending_downlinks`] and
//!     [`Store::mark_downlink_sent`] work on the command queue of every tenant (the rows
//!     carry their tenant); nothing they return reaches an operator.
//! - **Idempotent ingestion.** A record is stored once per `(appliance, seq)`: redelivery is an
//!   `ON CONFLICT DO NOTHING`, counted as a duplicate. Records above the appliance's highest
//!   stored seq, read under its row lock (below), cannot be stored yet and go in plain
//!   `INSERT`s, which PostgreSQL does with one index search per record fewer. A batch is one
//!   transaction; nothing is acknowledged before it commits.
//! - **The ack is contiguous.** `appliances.acked_seq` is the highest `n` such that every
//!   `seq` in `1..=n` is stored, where an eviction marker at `seq` with `through_seq = t`
//!   covers `seq..=t` (the appliance dropped those records during an outage; they count as
//!   received so its outbox can move on). It only grows, is updated in the batch's transaction
//!   and is advanced by reading the rows after it in order up to the first gap, so the cost of
//!   a batch is its own size plus whatever earlier out-of-order rows it makes contiguous.
//! - **Ingestion of one appliance is serialised.** The batch transaction first "touches" the
//!   appliance row (`UPDATE ... SET acked_seq = acked_seq ... RETURNING`), which takes the row
//!   lock in PostgreSQL and the write lock in SQLite, so two relay replicas cannot both compute
//!   an ack from a stale `acked_seq`.
//! - **Incidents never go back.** An incident change is applied only if its record's `seq` is
//!   newer than the one the stored state came from, and the lifecycle open → acknowledged →
//!   resolved never regresses (so an operator's acknowledgement at the relay survives an older
//!   appliance record arriving late).
//! - **An operator's step reaches the appliance.** An acknowledgement or resolution at the
//!   relay and its command (`downlinks`) commit in one transaction
//!   ([`Store::step_incident_with_downlink`]); the command stays pending until a record of
//!   the appliance shows the incident at or past the step, which completes it in that batch's
//!   transaction. Sending (and sending again) is the MQTT side's business.
//! - **A batch is bounded**: at most [`MAX_BATCH_RECORDS`] records, so one transaction holds
//!   the appliance's row lock for a bounded time.
//! - **No clock inside.** Every time (`now`, `at`, `expires_at`) is passed in, so callers
//!   and tests decide what "now" is.
//! - **Secrets are stored hashed.** Claim codes and API tokens are kept as SHA-256
//!   ([`SecretHash`]); the plaintext is returned once, at creation.
//!
//! Layout: [`model`] (what the store takes and returns), `tenants.rs` (tenants, sites, API
//! tokens), `appliances.rs` (claims, health), `ingest.rs` (records, incident state, the ack),
//! `queries.rs` (incidents and events for operators, their steps), `alerts.rs` (the relay's
//! own alerts: appliance offline), `downlinks.rs` (operators' steps on their way to
//! appliances), `sql.rs` (dynamic `WHERE` clauses).

mod alerts;
mod appliances;
mod downlinks;
mod ingest;
pub mod model;
mod queries;
pub(crate) mod sql;
mod tenants;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use gatehouse_protocol::IdError;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

pub use downlinks::{DownlinkStep, StoredDownlink};
pub use ingest::{IngestReport, MAX_BATCH_RECORDS};
pub use model::*;

/// Microseconds since the Unix epoch, UTC (the wire's `*_us`).
pub type Micros = i64;

/// The relay's migrations, the same files for PostgreSQL and SQLite.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL (scheme `{0}`): use postgres://user@host/db, sqlite://path?mode=rwc or sqlite::memory:"
    )]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Absent, or belongs to another tenant (the two are indistinguishable on purpose).
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} `{id}` still has {children}; remove them first")]
    NotEmpty {
        what: &'static str,
        id: String,
        children: &'static str,
    },
    #[error("an API token named `{0}` already exists in this tenant")]
    DuplicateName(String),
    #[error("appliance `{0}` is not known to the relay")]
    UnknownAppliance(String),
    #[error("this claim code is not known")]
    ClaimUnknown,
    #[error("this claim code was already used")]
    ClaimUsed,
    #[error("this claim code has expired")]
    ClaimExpired,
    #[error("appliance `{appliance}`: {source}")]
    Lifecycle {
        appliance: String,
        #[source]
        source: gatehouse_protocol::LifecycleError,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("stored {column} is not valid: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
}

impl StoreError {
    /// Whether the same call may succeed later (the database was unreachable, busy or timed
    /// out), as opposed to a refusal that will repeat (unknown appliance, invalid input, a
    /// constraint).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(error)) => {
                !(error.is_unique_violation()
                    || error.is_foreign_key_violation()
                    || error.is_check_violation())
            }
            StoreError::Database(_) => true,
            _ => false,
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend a database URL names, if the relay supports it.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            other => Err(StoreError::UnsupportedUrl(other.to_owned())),
        }
    }
}

/// The proof that a caller may touch one tenant's data; required by every tenant-level
/// query. Only the store makes one (see the module's invariants).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    fn new(tenant: TenantId) -> Self {
        TenantScope { tenant }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn id(&self) -> &str {
        self.tenant.as_str()
    }
}

/// The SHA-256 of a secret (claim code or API token), as stored. Made only from the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl SecretHash {
    /// Hashes an API token as presented (for example in `Authorization: Bearer`).
    pub fn of_token(token: &str) -> Self {
        SecretHash(hex::encode(Sha256::digest(token.as_bytes())))
    }

    /// Hashes a claim code as typed: case, spaces and dashes do not matter.
    pub fn of_claim_code(code: &str) -> Self {
        let normalized: String = code
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        SecretHash(hex::encode(Sha256::digest(normalized.as_bytes())))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}...)", self.0.get(..8).unwrap_or_default())
    }
}

/// The relay's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    inserts: InsertLimits,
}

/// How large one multi-row `INSERT` of ingestion may be (see `ingest.rs`): large where the
/// connection is not TLS (SQLite, a Unix socket, `sslmode=disable`); small enough for one TLS
/// record otherwise, because sqlx 0.9.0 does not set `TCP_NODELAY` (sqlx#4335) and a
/// statement sent as two TLS records is two writes, the second of which Nagle's algorithm
/// holds back until the server's delayed ACK, 40 ms later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InsertLimits {
    pub rows: usize,
    pub bytes: usize,
}

impl InsertLimits {
    /// Without TLS: 500 records of 10 values, far below either database's limit on values.
    pub(crate) const PLAIN: InsertLimits = InsertLimits {
        rows: 500,
        bytes: 4 * 1024 * 1024,
    };
    /// Over TLS (or when it may be TLS): one 16 KiB record, with room for the message's own
    /// framing.
    pub(crate) const TLS: InsertLimits = InsertLimits {
        rows: 100,
        bytes: 12 * 1024,
    };

    pub(crate) fn of_url(backend: Backend, url: &str) -> InsertLimits {
        match backend {
            Backend::Sqlite => InsertLimits::PLAIN,
            Backend::Postgres => match sqlx::postgres::PgConnectOptions::from_str(url) {
                Ok(options)
                    if options.get_socket().is_some()
                        || options.get_host().starts_with('/')
                        || matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::Disable) =>
                {
                    InsertLimits::PLAIN
                }
                _ => InsertLimits::TLS,
            },
        }
    }
}

impl Store {
    /// Connects to `url`, creating a SQLite file when the URL says `mode=rwc`, and runs the
    /// migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let backend = Backend::of_url(url)?;
        sqlx::any::install_default_drivers();
        let in_memory =
            backend == Backend::Sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let options = if in_memory {
            // Each connection to `sqlite::memory:` opens a database of its own: keep one,
            // forever.
            AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
        };
        let pool = options.connect(url).await?;
        if backend == Backend::Sqlite && !in_memory {
            // Persistent in the file; readers no longer wait for the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            inserts: InsertLimits::of_url(backend, url),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; waits for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction that will write: on SQLite it takes the write lock at once.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let transaction = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(transaction)
    }
}

/// A new random id: `prefix-` and 16 hex digits (valid under the protocol's id rule).
fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}-{}", hex::encode(bytes))
}

/// Checks a human-given name (tenant, site, appliance, token, author).
fn check_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    check_text(field, name, 200)
}

/// Checks a human-given text: not blank, at most `max` characters.
fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), StoreError> {
    let length = text.chars().count();
    if text.trim().is_empty() || length > max {
        return Err(StoreError::Invalid {
            field,
            reason: format!("must be 1 to {max} characters and not blank, got {length}"),
        });
    }
    Ok(())
}

/// A `u64` from the wire as a BIGINT.
fn to_db(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid {
        field,
        reason: format!("{value} does not fit in a signed 64-bit column"),
    })
}

/// A BIGINT that holds a `u64`.
fn from_db(column: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        column,
        reason: format!("{value} is negative"),
    })
}

/// Reads a column that holds an id.
fn id_column<T: FromStr<Err = IdError>>(
    row: &AnyRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|error: IdError| StoreError::Corrupt {
        column,
        reason: error.to_string(),
    })
}

/// Reads a column that holds a `u64`.
fn u64_column(row: &AnyRow, column: &'static str) -> Result<u64, StoreError> {
    from_db(column, row.try_get(column)?)
}

/// Whether `error` is a foreign-key violation (the named parent row does not exist).
fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// Whether `error` is a unique or primary-key violation.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

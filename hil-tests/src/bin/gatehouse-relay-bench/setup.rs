//! What every relay benchmark sets up: a fresh database, the relay binary as a child process
//! (so its CPU and memory are its own in `/proc`), a tenant with a site, appliances and an
//! operator token, and the wait until the relay really consumes what appliances send.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use gatehouse_hil_tests::broker::{MqttSession, TlsBroker};
use gatehouse_hil_tests::relay::RelayConfig;
pub use gatehouse_hil_tests::relay::RelayProcess;
use gatehouse_protocol::wire::topics::{Channel, topic};
use gatehouse_protocol::wire::{self, pb};
use gatehouse_protocol::{ApplianceId, SiteId};
use gatehouse_relay::store::{Micros, Role, Store, TenantScope};
use gatehouse_transport::TlsIdentity;
use jiff::Timestamp;
use rumqttc::v5::mqttbytes::QoS;
use serde::Serialize;
use sqlx::Any;
use sqlx::migrate::MigrateDatabase as _;

/// The PostgreSQL server of the machine (trust authentication), without a database name.
pub const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// How long the relay may take to subscribe once its API answers.
const RELAY_SUBSCRIBED: Duration = Duration::from_secs(30);

/// Where the relay stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Options every benchmark takes.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// The relay's database: a fresh PostgreSQL database `gh_bench_*`, dropped afterwards
    /// (a run that fails leaves it behind), or a SQLite file in the run's temporary folder.
    #[arg(long, value_enum, default_value_t = Backend::Postgres)]
    pub store: Backend,

    /// The PostgreSQL server (trust authentication) in which the fresh database is made.
    #[arg(long, default_value = POSTGRES_SERVER)]
    pub postgres: String,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// A database made for one run.
#[derive(Debug)]
pub struct Database {
    pub url: String,
    /// Set for PostgreSQL: the database to drop afterwards.
    drop_url: Option<String>,
}

impl Database {
    /// A fresh, empty database; a SQLite one is `folder/{name}.db`.
    pub async fn create(args: &CommonArgs, folder: &Path, name: &str) -> anyhow::Result<Self> {
        match args.store {
            Backend::Sqlite => Ok(Database {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    folder.join(format!("{name}.db")).display()
                ),
                drop_url: None,
            }),
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let url = format!(
                    "{}/gh_bench_{name}_{:016x}",
                    args.postgres.trim_end_matches('/'),
                    rand::random::<u64>()
                );
                Any::create_database(&url).await.with_context(|| {
                    format!(
                        "creating a database on {}: is PostgreSQL running there with trust \
                         authentication? (pg_ctlcluster --skip-systemctl-redirect \
                         $(ls /etc/postgresql) main start)",
                        args.postgres
                    )
                })?;
                Ok(Database {
                    drop_url: Some(url.clone()),
                    url,
                })
            }
        }
    }

    /// Drops a PostgreSQL database (a SQLite file goes with the temporary folder).
    pub async fn destroy(self) -> anyhow::Result<()> {
        if let Some(url) = &self.drop_url {
            Any::force_drop_database(url)
                .await
                .with_context(|| format!("dropping {url}"))?;
        }
        Ok(())
    }
}

/// A tenant with one site, as an HQ admin would set it up with `gatehouse-relay`.
pub struct Tenant {
    pub store: Store,
    pub scope: TenantScope,
    site: SiteId,
}

impl Tenant {
    /// Creates the tenant and its site in `store` (migrated by [`Store::open`]).
    pub async fn create(store: Store) -> anyhow::Result<Self> {
        let now = now_micros();
        let (_, scope) = store.create_tenant("Bench", now).await?;
        let site = store.create_site(&scope, "Bench site", now).await?.id;
        Ok(Tenant { store, scope, site })
    }

    /// Registers and claims an appliance; returns the id the relay gave it.
    pub async fn appliance(&self, name: &str) -> anyhow::Result<ApplianceId> {
        let now = now_micros();
        let claim = self
            .store
            .create_claim(&self.scope, &self.site, name, now, now + 3_600_000_000)
            .await?;
        self.store.redeem_claim(&claim.code, now).await?;
        Ok(claim.appliance)
    }

    /// A new operator API token (the plaintext).
    pub async fn operator_token(&self) -> anyhow::Result<String> {
        let token = self
            .store
            .create_api_token(&self.scope, "bench-operator", Role::Operator, now_micros())
            .await?;
        Ok(token.token)
    }

    /// Up to where the relay holds every record of `appliance` (committed).
    pub async fn acked_seq(&self, appliance: &ApplianceId) -> anyhow::Result<u64> {
        Ok(self.health(appliance).await?.acked_seq)
    }

    /// Whether the relay has `appliance` online.
    pub async fn is_online(&self, appliance: &ApplianceId) -> anyhow::Result<bool> {
        Ok(self.health(appliance).await?.online)
    }

    async fn health(
        &self,
        appliance: &ApplianceId,
    ) -> anyhow::Result<gatehouse_relay::store::Appliance> {
        self.store
            .appliance(&self.scope, appliance)
            .await?
            .with_context(|| format!("appliance {appliance} vanished from the relay's store"))
    }
}

/// The relay's clock, in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    Timestamp::now().as_microsecond()
}

/// Starts the relay binary (`hil-tests`' [`RelayProcess`]) on `database_url` against the relay
/// listener of `broker`, logging at `info`, with its files in `folder`; returns once its API
/// answers.
pub async fn start_relay(
    folder: &Path,
    broker: &TlsBroker,
    database_url: &str,
) -> anyhow::Result<RelayProcess> {
    let mut config = RelayConfig::write(folder, broker, database_url)?;
    config.log_filter = "info".to_owned();
    RelayProcess::start(&config).await
}

/// Writes `{name}.pem`, `{name}.key` and the fleet CA, which signed the broker's certificate
/// (`fleet-ca.pem`), into `folder`; returns the three paths (CA, certificate, key).
pub fn write_identity(
    folder: &Path,
    name: &str,
    identity: &TlsIdentity,
) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let files = (
        folder.join("fleet-ca.pem"),
        folder.join(format!("{name}.pem")),
        folder.join(format!("{name}.key")),
    );
    std::fs::write(&files.0, &identity.ca_pem)?;
    std::fs::write(&files.1, &identity.cert_pem)?;
    std::fs::write(&files.2, &identity.key_pem)?;
    Ok(files)
}

/// The broker's process id, found by its configuration file's path in `/proc`.
pub fn broker_pid(broker: &TlsBroker) -> anyhow::Result<u32> {
    let config = broker.folder().join("mosquitto.conf");
    crate::measure::find_process(&config.display().to_string())
        .with_context(|| format!("no process runs with {}", config.display()))
}

/// Writes the certificate of `appliance` (from the broker's fleet CA) into `folder` and
/// returns the agent's `[uplink]` section for it, with an outbox of at most `outbox_cap`
/// records.
pub fn uplink_section(
    folder: &Path,
    broker: &TlsBroker,
    appliance: &ApplianceId,
    outbox_cap: u64,
) -> anyhow::Result<String> {
    let (ca, cert, key) =
        write_identity(folder, "appliance", &broker.identity(appliance.as_str())?)?;
    Ok(format!(
        "\n[uplink]\nappliance_id = \"{appliance}\"\nbroker = \"127.0.0.1:{port}\"\n\
         ca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
         outbox_max_records = {outbox_cap}\n",
        port = broker.port(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    ))
}

/// Waits until the relay consumes what appliances publish: a probe appliance of `tenant`
/// publishes an online status every 250 ms until the store has it online. (Messages
/// published before the relay's shared subscription exists are lost, and a real uplink
/// would only resend them after its acknowledgement timeout, 20 s, which would distort a
/// measurement.)
pub async fn wait_until_relay_consumes(broker: &TlsBroker, tenant: &Tenant) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let probe = tenant.appliance("probe").await?;
    let session = MqttSession::connect(
        broker.client_options(probe.as_str(), probe.as_str())?,
        Duration::from_secs(10),
    )
    .await?;
    let status = wire::encode(pb::envelope::Body::Status(pb::ApplianceStatus {
        online: true,
        outbox_backlog: 0,
        outbox_dropped: 0,
        at_us: now_micros(),
        agent_version: "bench-probe".into(),
    }));
    let topic = topic(&probe, Channel::UpStatus);
    let deadline = started + RELAY_SUBSCRIBED;
    while !tenant.is_online(&probe).await? {
        if tokio::time::Instant::now() > deadline {
            bail!("the relay did not take in a status within {RELAY_SUBSCRIBED:?}");
        }
        session
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, status.clone())
            .await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    session.disconnect(Duration::from_secs(2)).await
}

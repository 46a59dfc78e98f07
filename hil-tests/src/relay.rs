//! Driving the real `gatehouse-relay` binary for end-to-end tests of the uplink
//! (appliance → broker → relay → store), next to [`crate::broker::TlsBroker`] and
//! [`crate::harness::AgentProcess`].
//!
//! - [`RelayConfig`] writes a relay's configuration for a test broker and a store: the relay
//!   identity and the fleet CA come from the broker (the CA that signs claimed appliances is
//!   the one the broker's appliance listener trusts); [`RelayConfig::replica`] makes another
//!   replica of the same relay (same store, same identity, so the same share group). Its admin
//!   helpers run the real `tenant create`, `site create`, `claim create` and `token create`
//!   and parse what they print.
//! - [`RelayProcess`] runs `gatehouse-relay run` as a child process (so a test can kill -9
//!   it), waits for its API, and restarts it on the same configuration.
//! - [`TestStore`] is the relay's store: a SQLite file, or a fresh PostgreSQL database
//!   dropped when the test ends ([`PostgresDatabase`]).
//! - [`claim_appliance`] claims an appliance as an installer does: a claim code from HQ, the
//!   site config, `gatehouse-edge claim`; [`ClaimedAppliance::start`] (or
//!   [`install_appliance`], both steps) starts the agent on the claimed config.
//!
//! The relay's REST API is driven with [`ApiClient`] and its stream with [`StreamClient`]
//! (`connect_url`, JSON messages), the same clients as the agent's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use gatehouse_edge::claim::{CA_FILE, CERT_FILE, KEY_FILE};
use gatehouse_transport::TlsIdentity;
use serde_json::Value as Json;
use sqlx::migrate::MigrateDatabase as _;

use crate::broker::TlsBroker;
use crate::harness::{
    self, AgentProcess, ApiClient, StreamClient, free_port, terminate, wait_until_healthy,
};

/// The relay's log level unless a test asks for another.
pub const DEFAULT_LOG_FILTER: &str = "info,gatehouse_relay=debug";

/// The PostgreSQL server of the tests (trust authentication).
const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

const POSTGRES_HINT: &str = "these tests need PostgreSQL on 127.0.0.1:5432 (user postgres, trust \
     auth); start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// Where the relay binary is: `$GATEHOUSE_RELAY_BIN`, else the workspace's target folder.
pub fn relay_binary() -> anyhow::Result<PathBuf> {
    harness::workspace_binary(
        "gatehouse-relay",
        "GATEHOUSE_RELAY_BIN",
        &[
            "relay/src",
            "relay/migrations",
            "protocol/src",
            "transport/src",
        ],
    )
}

/// A fresh PostgreSQL database, dropped (even while connections remain) when this is dropped.
#[derive(Debug)]
pub struct PostgresDatabase {
    url: String,
}

impl PostgresDatabase {
    /// Creates `gh_hil_<random>` on the test server.
    pub async fn create() -> anyhow::Result<PostgresDatabase> {
        sqlx::any::install_default_drivers();
        let url = format!("{POSTGRES_SERVER}/gh_hil_{:016x}", rand::random::<u64>());
        sqlx::Any::create_database(&url)
            .await
            .with_context(|| format!("creating a test database: {POSTGRES_HINT}"))?;
        Ok(PostgresDatabase { url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // Drop may run inside a test's runtime, which cannot be blocked on: a thread of its
        // own runs the drop on a runtime of its own.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(sqlx::Any::force_drop_database(&url))?;
            anyhow::Ok(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.url);
        }
    }
}

/// The relay's store in a test.
#[derive(Debug)]
pub enum TestStore {
    Sqlite(PathBuf),
    Postgres(PostgresDatabase),
}

impl TestStore {
    /// A SQLite file in `folder`, created by the relay.
    pub fn sqlite(folder: &Path) -> TestStore {
        TestStore::Sqlite(folder.join("relay.db"))
    }

    /// A fresh PostgreSQL database.
    pub async fn postgres() -> anyhow::Result<TestStore> {
        Ok(TestStore::Postgres(PostgresDatabase::create().await?))
    }

    /// The relay's `store.url`.
    pub fn url(&self) -> String {
        match self {
            TestStore::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            TestStore::Postgres(database) => database.url().to_owned(),
        }
    }
}

/// A relay replica's configuration file, and what a test needs to know of it.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `relay.toml`; the replica's log is beside it (`relay.log`).
    pub path: PathBuf,
    /// Where its API listens.
    pub api: SocketAddr,
    /// `RUST_LOG` of the replica when run ([`DEFAULT_LOG_FILTER`] unless changed).
    pub log_filter: String,
    store_url: String,
    /// The folder of the relay identity and fleet CA files, shared by replicas.
    identity: PathBuf,
    broker_relay_port: u16,
    broker_appliance_port: u16,
}

impl RelayConfig {
    /// Writes, in `folder`, the relay identity (from `broker`'s relay CA), the fleet CA with
    /// its key (so this relay answers claims) and a configuration for `broker` and `store_url`
    /// with the API on a free loopback port.
    pub fn write(folder: &Path, broker: &TlsBroker, store_url: &str) -> anyhow::Result<Self> {
        let identity = broker.relay_identity()?;
        let write = |name: &str, contents: &[u8]| {
            std::fs::write(folder.join(name), contents)
                .with_context(|| format!("writing {}", folder.join(name).display()))
        };
        write("fleet-ca.pem", broker.ca().cert_pem().as_bytes())?;
        write("fleet-ca.key", broker.ca().key_pem().as_bytes())?;
        write("relay.pem", &identity.cert_pem)?;
        write("relay.key", &identity.key_pem)?;
        let config = RelayConfig {
            path: folder.join("relay.toml"),
            api: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            store_url: store_url.to_owned(),
            identity: folder.to_owned(),
            broker_relay_port: broker.relay_port(),
            broker_appliance_port: broker.port(),
        };
        config.write_file("relay:hil")?;
        Ok(config)
    }

    /// Another replica of this relay, its configuration in `folder`: the same store, broker
    /// and identity (so the same derived share group), its own client id `relay:{name}` and
    /// API port.
    pub fn replica(&self, folder: &Path, name: &str) -> anyhow::Result<Self> {
        let config = RelayConfig {
            path: folder.join("relay.toml"),
            api: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            ..self.clone()
        };
        config.write_file(&format!("relay:{name}"))?;
        Ok(config)
    }

    fn write_file(&self, client_id: &str) -> anyhow::Result<()> {
        let file = |name: &str| self.identity.join(name).display().to_string();
        let text = format!(
            r#"
[store]
url = "{store}"

[api]
listen = "{api}"

[broker]
host = "127.0.0.1"
port = {relay_port}
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
client_id = "{client_id}"

[fleet]
ca_cert = "{ca}"
ca_key = "{ca_key}"
broker_host = "127.0.0.1"
broker_port = {appliance_port}
"#,
            store = self.store_url,
            api = self.api,
            relay_port = self.broker_relay_port,
            appliance_port = self.broker_appliance_port,
            ca = file("fleet-ca.pem"),
            ca_key = file("fleet-ca.key"),
            cert = file("relay.pem"),
            key = file("relay.key"),
        );
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Runs an admin command of the relay on this configuration; returns what it printed.
    fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(relay_binary()?)
            .args(args)
            .arg("--config")
            .arg(&self.path)
            .stdin(Stdio::null())
            .output()
            .context("cannot run gatehouse-relay")?;
        if !output.status.success() {
            bail!(
                "gatehouse-relay {} failed ({}): {}",
                args.first().copied().unwrap_or_default(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `tenant create`: the new tenant's id.
    pub fn create_tenant(&self, name: &str) -> anyhow::Result<String> {
        printed(
            &self.admin(&["tenant", "create", "--name", name])?,
            "tenant",
        )
    }

    /// `site create`: the new site's id.
    pub fn create_site(&self, tenant: &str, name: &str) -> anyhow::Result<String> {
        let output = self.admin(&["site", "create", "--tenant", tenant, "--name", name])?;
        printed(&output, "site")
    }

    /// `claim create`: the appliance registered at `site` and its one-time claim code.
    pub fn create_claim(&self, tenant: &str, site: &str, name: &str) -> anyhow::Result<NewClaim> {
        let output = self.admin(&[
            "claim", "create", "--tenant", tenant, "--site", site, "--name", name,
        ])?;
        Ok(NewClaim {
            appliance: printed(&output, "appliance")?,
            code: printed(&output, "claim code")?,
        })
    }

    /// `token create`: a new API token of `role` (`admin`, `operator`, `viewer`).
    pub fn create_token(&self, tenant: &str, role: &str, name: &str) -> anyhow::Result<String> {
        let output = self.admin(&[
            "token", "create", "--tenant", tenant, "--role", role, "--name", name,
        ])?;
        printed(&output, "token")
    }
}

/// The value of the `{key}: value` line of an admin command's output.
fn printed(output: &str, key: &str) -> anyhow::Result<String> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("no `{key}:` line in the admin command's output"))
}

/// An appliance registered at the relay, not yet installed. No `Debug`: the code is a secret.
pub struct NewClaim {
    pub appliance: String,
    pub code: String,
}

/// A relay replica running as a child process; killed on drop.
#[derive(Debug)]
pub struct RelayProcess {
    child: Option<Child>,
    config: RelayConfig,
}

impl RelayProcess {
    /// Starts `gatehouse-relay run` on `config` and waits until its API answers.
    pub async fn start(config: &RelayConfig) -> anyhow::Result<RelayProcess> {
        let mut relay = RelayProcess {
            child: None,
            config: config.clone(),
        };
        relay.launch().await?;
        Ok(relay)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        // Appended to, so the log of every run of this replica is kept.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new(relay_binary()?)
            .arg("run")
            .arg("--config")
            .arg(&self.config.path)
            .env("RUST_LOG", &self.config.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start gatehouse-relay")?;
        let url = format!("http://{}/api/v1/health", self.config.api);
        let healthy = wait_until_healthy(&mut child, &url, "the relay", &self.log_path()).await;
        self.child = Some(child);
        healthy
    }

    fn log_path(&self) -> PathBuf {
        self.config.path.with_extension("log")
    }

    /// The replica's log so far (every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// The running replica's process id (for /proc measurements).
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("the relay is not running")
    }

    /// SIGKILL: no shutdown, no DISCONNECT, nothing flushed.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the relay is not running")?;
        terminate(&mut child, "the relay").await
    }

    /// Starts the replica again on the same configuration (after [`Self::kill9`] or
    /// [`Self::stop`]; a running one is killed first).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.launch().await
    }

    /// A client of its REST API with `token`.
    pub fn api(&self, token: &str) -> ApiClient {
        ApiClient::new(self.config.api, token)
    }

    /// Its live stream, as the holder of `token`.
    pub async fn stream(&self, token: &str) -> anyhow::Result<StreamClient> {
        let url = format!("ws://{}/api/v1/stream", self.config.api);
        StreamClient::connect_url(&url, token).await
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// An appliance claimed with `gatehouse-edge claim`, its agent not started yet.
#[derive(Debug)]
pub struct ClaimedAppliance {
    /// Its id at the relay: the CN of its certificate.
    pub id: String,
    /// The site config, with the `[uplink]` section the claim appended.
    pub site_config: PathBuf,
    /// The port its agent's API will listen on.
    pub api_port: u16,
    /// The folder of the key, certificate and fleet CA the claim wrote.
    pub identity: PathBuf,
}

impl ClaimedAppliance {
    /// The identity the claim wrote, as the agent loads it.
    pub fn tls_identity(&self) -> anyhow::Result<TlsIdentity> {
        Ok(TlsIdentity::from_files(
            &self.identity.join(CA_FILE),
            &self.identity.join(CERT_FILE),
            &self.identity.join(KEY_FILE),
        )?)
    }

    /// Starts the agent on the claimed site config and waits for its API.
    pub async fn start(self) -> anyhow::Result<InstalledAppliance> {
        let agent = AgentProcess::start_with(&self.site_config, self.api_port).await?;
        Ok(InstalledAppliance { id: self.id, agent })
    }
}

/// An installed appliance: its id at the relay and its running agent.
pub struct InstalledAppliance {
    pub id: String,
    pub agent: AgentProcess,
}

/// Claims an appliance at `site` of `tenant` as an installer does: HQ makes a claim code
/// (`claim create`), the site config ([`harness::site_header`] and `devices_and_rules`) is
/// written to `folder/site.toml`, and `gatehouse-edge claim` gets the certificate from `relay`
/// (plain http to loopback) into `folder/identity` and appends the `[uplink]` section.
pub fn claim_appliance(
    relay: &RelayProcess,
    tenant: &str,
    site: &str,
    folder: &Path,
    devices_and_rules: &str,
) -> anyhow::Result<ClaimedAppliance> {
    let name = folder
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("appliance");
    let claim = relay.config().create_claim(tenant, site, name)?;
    let api_port = free_port()?;
    let site_config = folder.join("site.toml");
    let identity = folder.join("identity");
    let header = harness::site_header(api_port, &folder.join("journal.db"));
    std::fs::write(&site_config, format!("{header}{devices_and_rules}"))?;
    let output = Command::new(harness::agent_binary()?)
        .arg("claim")
        .args(["--relay", &format!("http://{}", relay.config().api)])
        .args(["--code", &claim.code])
        .arg("--dir")
        .arg(&identity)
        .arg("--config")
        .arg(&site_config)
        .stdin(Stdio::null())
        .output()
        .context("cannot run gatehouse-edge claim")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "gatehouse-edge claim failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if !stdout.contains(&format!("claimed appliance `{}`", claim.appliance)) {
        bail!(
            "gatehouse-edge claim did not claim {}: {stdout}",
            claim.appliance
        );
    }
    Ok(ClaimedAppliance {
        id: claim.appliance,
        site_config,
        api_port,
        identity,
    })
}

/// [`claim_appliance`], then starts its agent.
pub async fn install_appliance(
    relay: &RelayProcess,
    tenant: &str,
    site: &str,
    folder: &Path,
    devices_and_rules: &str,
) -> anyhow::Result<InstalledAppliance> {
    claim_appliance(relay, tenant, site, folder, devices_and_rules)?
        .start()
        .await
}

/// Every record the relay stores for `appliance` (`GET /events`, following `next`), in seq
/// order.
pub async fn relay_records(api: &ApiClient, appliance: &str) -> anyhow::Result<Vec<Json>> {
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/events?appliance={appliance}&limit=1000");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (status, page) = api.get(&path).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {page}");
        }
        let items = page["items"]
            .as_array()
            .with_context(|| format!("GET {path}: no items in {page}"))?;
        records.extend(items.iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    records.sort_by_key(|record| record["seq"].as_u64());
    Ok(records)
}

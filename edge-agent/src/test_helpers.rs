//! Fixtures shared by the unit tests: a real journal in a temporary folder.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use gatehouse_protocol::{
    CommandOutcome, CommandRequest, DeviceId, DeviceStatus, Event, EventBody, PointId, Quality,
    Value,
};
use jiff::Timestamp;

use gatehouse_rules::engine::Command;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::adapters::{self, Adapter, CommandEnvelope, CommandRouter};
use crate::config::Config;
use crate::journal::rules::RuleDriver;
use crate::journal::{self, JournalHandle, Reader, Writer, WriterSettings};
use crate::live::Live;
use crate::metrics::Metrics;

/// A site with one armed zone, a door contact and a rule on it, an egress lock and a fire
/// alarm that releases it, and three users.
pub const SITE: &str = r#"
[site]
id = "test-site"
name = "Test site"
[api]
listen = "127.0.0.1:0"
[[api.users]]
name = "admin"
role = "admin"
token_sha256 = "HASH_ADMIN"
[[api.users]]
name = "integrator"
role = "integrator"
token_sha256 = "HASH_INTEGRATOR"
[[api.users]]
name = "guard"
role = "guard"
token_sha256 = "HASH_GUARD"
[[zones]]
id = "lobby"
name = "Lobby"
mode = "armed_away"
[[modbus.devices]]
id = "plc"
address = "127.0.0.1:1"
zone = "lobby"
[[modbus.devices.points]]
id = "door"
table = "discrete_input"
address = 0
[[modbus.devices.points]]
id = "strike"
table = "coil"
address = 0
writable = true
egress_lock_value = true
[[modbus.devices.points]]
id = "fire"
table = "discrete_input"
address = 1
[[rules]]
id = "door-open"
when.event = { point = "door", value = "value == true" }
if = { modes = ["armed_away", "armed_stay", "armed_night"] }
then = [{ raise = { severity = "high", title = "Door opened" } }]
escalate = [{ after = "2s", severity = "critical" }]
[[rules]]
id = "fire"
life_safety = true
when.event = { point = "fire", value = "value" }
then = [{ raise = { severity = "critical", title = "Fire alarm" } }]
"#;

/// The token of each test user is its role name.
pub fn site_config() -> Config {
    site_config_from(SITE)
}

/// A variant of [`SITE`] (same users and tokens).
pub fn site_config_from(site: &str) -> Config {
    let source = site
        .replace("HASH_ADMIN", &crate::api::auth::hash_token("admin"))
        .replace(
            "HASH_INTEGRATOR",
            &crate::api::auth::hash_token("integrator"),
        )
        .replace("HASH_GUARD", &crate::api::auth::hash_token("guard"));
    Config::parse(&source).unwrap_or_else(|problems| panic!("{problems:?}"))
}

pub struct TestJournal {
    pub handle: JournalHandle,
    pub reader: Reader,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// Commands the rules sent after their batch committed.
    pub rule_commands: mpsc::UnboundedReceiver<Command>,
    /// Clips the rules asked for, after their batch committed.
    pub rule_clips: mpsc::UnboundedReceiver<journal::clips::ClipRequest>,
    /// The rules' next deadline, as the writer publishes it.
    pub deadline: watch::Receiver<Option<Timestamp>>,
    pub folder: tempfile::TempDir,
    thread: std::thread::JoinHandle<()>,
}

impl TestJournal {
    pub fn start(config: &Config, settings: WriterSettings) -> TestJournal {
        let folder = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        Self::start_in(folder, config, settings)
    }

    /// Starts a writer on the journal in `folder` (a restart when it holds one).
    pub fn start_in(
        folder: tempfile::TempDir,
        config: &Config,
        settings: WriterSettings,
    ) -> TestJournal {
        let path = folder.path().join("journal.db");
        let connection = journal::open_for_writing(&path, false).unwrap_or_else(|e| panic!("{e}"));
        let live = Arc::new(Live::default());
        let metrics = Arc::new(Metrics::default());
        let (links, outlets) = journal::rules::links();
        let engine = config.engine().unwrap_or_else(|p| panic!("{p:?}"));
        let rules = RuleDriver::new(engine, links, live.clone(), metrics.clone());
        let writer = Writer::new(connection, rules, live.clone(), metrics.clone(), settings);
        let (handle, thread) = writer.spawn().unwrap_or_else(|e| panic!("{e}"));
        TestJournal {
            handle,
            reader: Reader::new(path),
            live,
            metrics,
            rule_commands: outlets.commands,
            rule_clips: outlets.clips,
            deadline: outlets.deadline,
            folder,
            thread,
        }
    }

    /// Stops the writer (it commits what it holds) and hands back the folder, to restart.
    pub fn stop(self) -> tempfile::TempDir {
        drop(self.handle);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
        self.folder
    }

    pub fn with_defaults(config: &Config) -> TestJournal {
        Self::start(config, default_settings())
    }

    /// Waits until the live state has published `seq` (the writer is asynchronous).
    pub async fn wait_for_seq(&self, seq: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.live.last_seq() < seq {
            assert!(
                tokio::time::Instant::now() < deadline,
                "seq {seq} never committed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Writer settings for tests: small batches, no retention, no uplink.
pub fn default_settings() -> WriterSettings {
    WriterSettings {
        batch_max_events: 256,
        max_age: None,
        max_bytes: None,
        outbox_max_records: None,
    }
}

/// An observation body of `point` on device `plc`.
pub fn observation(point: &str, value: Value) -> EventBody {
    EventBody::Observation {
        device: DeviceId::new("plc").unwrap_or_else(|e| panic!("{e}")),
        point: PointId::new(point).unwrap_or_else(|e| panic!("{e}")),
        zone: None,
        value: Some(value),
        quality: Quality::Good,
        observed_at: Timestamp::now(),
    }
}

/// All events in the journal, oldest first.
pub fn all_events(reader: &Reader) -> Vec<Event> {
    reader
        .run_blocking(|c| journal::query::events_after(c, 0, 1_000_000))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long the broker may take to listen, and a test to see what it waits for.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A Mosquitto process on a free loopback port; killed when dropped.
pub struct PlainBroker {
    pub port: u16,
    config: PathBuf,
    folder: tempfile::TempDir,
    child: Child,
}

impl PlainBroker {
    /// Anonymous clients, plain TCP.
    pub fn start() -> anyhow::Result<PlainBroker> {
        Self::start_with(|_| Ok("allow_anonymous true\n".to_owned()))
    }

    /// A broker whose listener takes the settings `listener` returns; it may write the files
    /// they name (certificates, a password file) into the folder it is given.
    pub fn start_with(
        listener: impl FnOnce(&std::path::Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<PlainBroker> {
        let folder = tempfile::tempdir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let config = folder.path().join("mosquitto.conf");
        let settings = listener(folder.path())?;
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n{settings}persistence false\n\
                 log_dest stderr\nuser root\n"
            ),
        )?;
        let child = Self::spawn(&config, folder.path())?;
        let broker = PlainBroker {
            port,
            config,
            folder,
            child,
        };
        broker.wait_until_listening()?;
        Ok(broker)
    }

    fn spawn(config: &std::path::Path, folder: &std::path::Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(folder.join("mosquitto.log"))?;
        std::process::Command::new(MOSQUITTO)
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot run {MOSQUITTO}: install it with `apt-get install mosquitto`")
            })
    }

    pub fn wait_until_listening(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if started.elapsed() > PATIENCE {
                let log = std::fs::read_to_string(self.folder.path().join("mosquitto.log"))
                    .unwrap_or_default();
                bail!("mosquitto did not listen on {} in time: {log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the broker (no goodbye to anyone) and starts it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.child = Self::spawn(&self.config, self.folder.path())?;
        self.wait_until_listening()
    }
}

impl Drop for PlainBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's side of an adapter test: a journal, the adapters under supervision, the
/// command router.
pub struct Agent {
    pub journal: TestJournal,
    pub commands: CommandRouter,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Agent {
    /// Starts `adapters` under supervision, journaling into a fresh journal for `config`.
    pub fn start(config: &Config, adapters: Vec<Arc<dyn Adapter>>) -> Agent {
        let journal = TestJournal::with_defaults(config);
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let commands = adapters::start(
            adapters,
            &journal.handle,
            &journal.live,
            &journal.metrics,
            &shutdown,
            &mut tasks,
        );
        Agent {
            journal,
            commands,
            shutdown,
            tasks,
        }
    }

    /// Waits until `check` holds of the live state.
    pub async fn until(&self, what: &str, check: impl Fn(&Agent) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check(self) {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn value(&self, point: &str) -> Option<(Option<Value>, Quality)> {
        let point = PointId::new(point).ok()?;
        self.journal
            .live
            .point(&point)
            .map(|state| (state.value, state.quality))
    }

    pub fn status(&self, device: &str) -> Option<(DeviceStatus, Option<String>)> {
        let device = DeviceId::new(device).ok()?;
        self.journal
            .live
            .device(&device)
            .map(|state| (state.status, state.reason))
    }

    pub fn status_is(&self, device: &str, status: DeviceStatus, reason: &str) -> bool {
        self.status(device)
            .is_some_and(|(found, why)| found == status && why.unwrap_or_default().contains(reason))
    }

    pub fn good(&self, point: &str, value: Value) -> bool {
        self.value(point) == Some((Some(value), Quality::Good))
    }

    pub async fn command(
        &self,
        device: &str,
        point: &str,
        value: Value,
    ) -> anyhow::Result<CommandOutcome> {
        let (reply, answer) = oneshot::channel();
        let device = DeviceId::new(device)?;
        self.commands.send(
            &device.clone(),
            CommandEnvelope {
                device,
                request: CommandRequest {
                    point: PointId::new(point)?,
                    value,
                },
                requested_by: "test".into(),
                deadline: tokio::time::Instant::now() + Duration::from_secs(5),
                reply,
            },
        )?;
        Ok(tokio::time::timeout(Duration::from_secs(10), answer)
            .await??
            .0)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

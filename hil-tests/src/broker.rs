//! A real Mosquitto broker running the configuration Gatehouse ships, for tests.
//!
//! [`TlsBroker::start`] makes a fleet CA, a relay CA and a broker certificate
//! (`gatehouse_relay::pki`), writes a configuration **derived from
//! `relay/deploy/mosquitto.conf`** and runs `mosquitto -c` as a child process with both of its
//! listeners on free loopback ports. The derivation keeps every setting of the shipped file
//! and replaces only what is specific to a machine:
//!
//! | shipped directive | in the test |
//! | --- | --- |
//! | `listener 8883` (appliances) | `listener {free port} 127.0.0.1`, [`TlsBroker::port`] |
//! | `listener 8884` (relay replicas) | `listener {free port} 127.0.0.1`, [`TlsBroker::relay_port`] |
//! | `cafile`, `certfile`, `keyfile` | the file of the same name in the test's folder (`fleet-ca.pem`, `relay-ca.pem`, `broker.pem`, `broker.key`) |
//! | `acl_file` | the shipped `relay/deploy/<same name>` itself, by absolute path |
//! | `persistence_location` | `{folder}/persistence/` |
//! | `log_dest file ...` | `log_dest file {folder}/mosquitto.log` |
//! | (none) | `user root`, so a broker started by root does not switch to the `mosquitto` user, which cannot read the test's folder; ignored when not root |
//!
//! A shipped directive that names another file (a CRL, a password file, a plugin...), a
//! certificate file the harness does not make, or another listener makes
//! [`TlsBroker::start`] fail until this table learns it, so the tests never silently run a
//! configuration other than the one that ships.
//!
//! [`TlsBroker::stop`] sends SIGTERM, so the broker saves its sessions and queued messages
//! before [`TlsBroker::restart`] brings it back on the same ports; dropping the broker kills it
//! (SIGKILL).
//!
//! Clients: [`TlsBroker::client_options`] issues a fleet CA certificate for a CN and builds
//! MQTT v5 options for the appliance listener, [`TlsBroker::relay_options`] a relay CA
//! certificate (CN `relay`) for the relay listener, both with `gatehouse_transport`'s TLS
//! policy (rustls with `ring`, TLS 1.3 only, the fleet CA as the only root, since it signed
//! the broker's certificate): exactly what appliances and the relay use. [`MqttSession`]
//! drives one connection for a test and [`refusal`] asserts that the broker turns one away.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gatehouse_relay::pki::{FleetCa, RELAY_IDENTITY, Validity};
use gatehouse_transport::TlsIdentity;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAck, Publish, SubAck};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The broker configuration that ships with the relay, and its folder (the ACL files).
pub const SHIPPED_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../relay/deploy/mosquitto.conf"
);
pub const SHIPPED_DEPLOY_FOLDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/deploy");

/// The shipped port of the appliance listener.
pub const SHIPPED_APPLIANCE_PORT: u16 = 8883;
/// The shipped port of the relay listener.
pub const SHIPPED_RELAY_PORT: u16 = 8884;

/// How long the broker may take to accept TLS after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the certificates the harness issues (broker, clients) are valid.
const CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The CN of the harness's own readiness probe on the appliance listener.
const PROBE_IDENTITY: &str = "hil-readiness-probe";

/// One of the broker's two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Fleet CA certificates; client id forced to the CN; `acl-appliances`.
    Appliances,
    /// Relay CA certificates only; `acl-relay`.
    Relay,
}

/// A Mosquitto broker with the shipped configuration, on loopback; killed on drop.
#[derive(Debug)]
pub struct TlsBroker {
    folder: PathBuf,
    port: u16,
    relay_port: u16,
    ca: FleetCa,
    relay_ca: FleetCa,
    config: PathBuf,
    log: PathBuf,
    output: PathBuf,
    child: Option<Child>,
}

impl TlsBroker {
    /// Makes the CA and certificates in `folder`, starts the broker on a free loopback port
    /// and waits until it completes TLS handshakes. Fails, saying how to install it, when
    /// `mosquitto` is missing.
    pub fn start(folder: &Path) -> anyhow::Result<TlsBroker> {
        let mosquitto = mosquitto_binary()?;
        let ca = FleetCa::generate("Gatehouse HIL fleet CA")?;
        let relay_ca = FleetCa::generate("Gatehouse HIL relay CA")?;
        let server = ca.issue_server_cert(
            &["localhost", "127.0.0.1"],
            Validity::starting_now(CERT_VALIDITY),
        )?;
        let files = TestFiles::new(folder);
        write_file(&files.ca, ca.cert_pem())?;
        write_file(&files.relay_ca, relay_ca.cert_pem())?;
        write_file(&files.cert, &server.cert_pem)?;
        write_file(&files.key, &server.key_pem)?;
        fs::create_dir_all(&files.persistence)?;
        let shipped = fs::read_to_string(SHIPPED_CONFIG)
            .with_context(|| format!("reading {SHIPPED_CONFIG}"))?;
        let deploy = fs::canonicalize(SHIPPED_DEPLOY_FOLDER)
            .with_context(|| format!("finding {SHIPPED_DEPLOY_FOLDER}"))?;

        let mut broker = TlsBroker {
            folder: folder.to_owned(),
            port: 0,
            relay_port: 0,
            ca,
            relay_ca,
            config: folder.join("mosquitto.conf"),
            log: files.log.clone(),
            output: folder.join("mosquitto.out"),
            child: None,
        };
        // A free port can be taken between our probe and mosquitto's bind; try a few.
        let mut attempts = 0;
        loop {
            broker.port = crate::harness::free_port()?;
            broker.relay_port = crate::harness::free_port()?;
            if broker.relay_port == broker.port {
                continue;
            }
            let ports = Ports {
                appliances: broker.port,
                relay: broker.relay_port,
            };
            write_file(
                &broker.config,
                &derive_config(&shipped, ports, &files, &deploy)?,
            )?;
            match broker.launch(&mosquitto) {
                Ok(()) => return Ok(broker),
                Err(error) if attempts >= 2 => return Err(error),
                Err(_) => attempts += 1,
            }
        }
    }

    /// The appliance listener's TLS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The relay listener's TLS port on 127.0.0.1.
    pub fn relay_port(&self) -> u16 {
        self.relay_port
    }

    /// The fleet CA: the appliance listener trusts it for clients, and it signed the broker's
    /// server certificate. Issue more appliance certificates with it.
    pub fn ca(&self) -> &FleetCa {
        &self.ca
    }

    /// The folder holding the configuration, certificates, persistence and log.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The broker's log so far (its log file, then what it printed), for failure messages.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let output = fs::read_to_string(&self.output).unwrap_or_default();
        format!("{log}{output}")
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the broker gracefully (SIGTERM, so it saves its persistence file), killing it
    /// after 10 seconds. Connected clients see the connection close.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while terminated && Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops the broker if it runs and starts it again on the same port with the same
    /// configuration, CA and persistence.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        let mosquitto = mosquitto_binary()?;
        self.launch(&mosquitto)
    }

    /// Appliance-listener options for `client_id` authenticated by a fresh certificate for
    /// `cn` from the fleet CA, with the appliances' TLS policy.
    pub fn client_options(&self, client_id: &str, cn: &str) -> anyhow::Result<MqttOptions> {
        self.options_for(client_id, &self.identity(cn)?)
    }

    /// Relay-listener options for `client_id` authenticated by a fresh relay CA certificate
    /// with the relay's CN, as a relay replica connects.
    pub fn relay_options(&self, client_id: &str) -> anyhow::Result<MqttOptions> {
        self.options_at(Listener::Relay, client_id, &self.relay_identity()?)
    }

    /// A fresh identity for `cn` from the fleet CA, trusting the fleet CA.
    pub fn identity(&self, cn: &str) -> anyhow::Result<TlsIdentity> {
        self.identity_from(&self.ca, cn)
    }

    /// A fresh relay identity (CN `relay`) from the relay CA, trusting the fleet CA (which
    /// signed the broker's certificate): what `gatehouse-relay pki init` makes.
    pub fn relay_identity(&self) -> anyhow::Result<TlsIdentity> {
        self.identity_from(&self.relay_ca, RELAY_IDENTITY)
    }

    fn identity_from(&self, issuer: &FleetCa, cn: &str) -> anyhow::Result<TlsIdentity> {
        let issued = issuer.issue_client_cert(cn, Validity::starting_now(CERT_VALIDITY))?;
        Ok(TlsIdentity {
            ca_pem: self.ca.cert_pem().as_bytes().to_vec(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
        })
    }

    /// Appliance-listener options for `client_id` with `identity`, with the appliances' TLS
    /// policy.
    pub fn options_for(
        &self,
        client_id: &str,
        identity: &TlsIdentity,
    ) -> anyhow::Result<MqttOptions> {
        self.options_at(Listener::Appliances, client_id, identity)
    }

    /// Options for `client_id` with `identity` on `listener`, with the appliances' TLS policy.
    pub fn options_at(
        &self,
        listener: Listener,
        client_id: &str,
        identity: &TlsIdentity,
    ) -> anyhow::Result<MqttOptions> {
        let port = self.listener_port(listener);
        Ok(identity.mqtt_options(client_id, &Ipv4Addr::LOCALHOST.to_string(), port)?)
    }

    fn listener_port(&self, listener: Listener) -> u16 {
        match listener {
            Listener::Appliances => self.port,
            Listener::Relay => self.relay_port,
        }
    }

    /// Appliance-listener options for `client_id` with any rustls configuration (to try what
    /// the policy would never build: no client certificate, TLS 1.2...).
    pub fn options_with_tls(&self, client_id: &str, config: rustls::ClientConfig) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, Ipv4Addr::LOCALHOST.to_string(), self.port);
        options
            .set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))))
            .set_connection_timeout(10);
        options
    }

    fn launch(&mut self, mosquitto: &Path) -> anyhow::Result<()> {
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)?;
        let child = Command::new(mosquitto)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", mosquitto.display()))?;
        self.child = Some(child);
        let probes = [
            (self.port, self.identity(PROBE_IDENTITY)?),
            (self.relay_port, self.relay_identity()?),
        ];
        for (port, identity) in probes {
            self.wait_until_ready(port, Arc::new(identity.client_config()?))?;
        }
        Ok(())
    }

    /// Waits until the listener on `port` completes TLS handshakes with `probe`.
    fn wait_until_ready(
        &mut self,
        port: u16,
        probe: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "mosquitto exited with {status} on ports {} and {}; its log:\n{}",
                    self.port,
                    self.relay_port,
                    self.log()
                );
            }
            match tls_handshake(port, probe.clone()) {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    let _ = self.stop();
                    bail!(
                        "mosquitto did not complete a TLS handshake on port {port} within {:?} \
                         ({error}); its log:\n{}",
                        STARTUP_TIMEOUT,
                        self.log()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where the test's copies of machine-specific files go.
#[derive(Debug)]
struct TestFiles {
    ca: PathBuf,
    relay_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    persistence: PathBuf,
    log: PathBuf,
}

impl TestFiles {
    fn new(folder: &Path) -> TestFiles {
        TestFiles {
            ca: folder.join("fleet-ca.pem"),
            relay_ca: folder.join("relay-ca.pem"),
            cert: folder.join("broker.pem"),
            key: folder.join("broker.key"),
            persistence: folder.join("persistence"),
            log: folder.join("mosquitto.log"),
        }
    }

    /// The test's copy of a certificate or key file the shipped configuration names, if the
    /// harness makes one of that name.
    fn copy_of(&self, shipped: &str) -> Option<&Path> {
        let name = Path::new(shipped).file_name()?;
        [&self.ca, &self.relay_ca, &self.cert, &self.key]
            .into_iter()
            .find(|file| file.file_name() == Some(name))
            .map(PathBuf::as_path)
    }
}

/// The loopback ports the test's broker listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    appliances: u16,
    relay: u16,
}

/// The shipped configuration with the machine-specific values replaced (see the module
/// documentation). Fails on a directive naming a file this function does not relocate, and
/// unless the shipped listeners are exactly the appliance and the relay listener.
fn derive_config(
    shipped: &str,
    ports: Ports,
    files: &TestFiles,
    deploy: &Path,
) -> anyhow::Result<String> {
    let mut derived = String::new();
    let mut listeners = Vec::new();
    for (number, line) in shipped.lines().enumerate() {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        let directive = words.next().unwrap_or("");
        let argument = words.next().unwrap_or("");
        let at = || format!("{SHIPPED_CONFIG}:{}", number + 1);
        let replaced = match directive {
            "" => None,
            _ if trimmed.starts_with('#') => None,
            "listener" => {
                let port = match argument.parse::<u16>() {
                    Ok(SHIPPED_APPLIANCE_PORT) => ports.appliances,
                    Ok(SHIPPED_RELAY_PORT) => ports.relay,
                    _ => bail!(
                        "{}: the harness knows the listeners {SHIPPED_APPLIANCE_PORT} \
                         (appliances) and {SHIPPED_RELAY_PORT} (relay), not `{trimmed}`",
                        at()
                    ),
                };
                listeners.push(port);
                Some(format!("listener {port} 127.0.0.1"))
            }
            "cafile" | "certfile" | "keyfile" => {
                let copy = files.copy_of(argument).with_context(|| {
                    format!(
                        "{}: the harness makes no `{argument}`; teach \
                         hil-tests/src/broker.rs::TestFiles to make it",
                        at()
                    )
                })?;
                Some(format!("{directive} {}", copy.display()))
            }
            "acl_file" => {
                let name = Path::new(argument)
                    .file_name()
                    .with_context(|| format!("{}: `{trimmed}` names no file", at()))?;
                let acl = deploy.join(name);
                if !acl.is_file() {
                    bail!("{}: {} does not ship", at(), acl.display());
                }
                Some(format!("acl_file {}", acl.display()))
            }
            "persistence_location" => Some(format!(
                "persistence_location {}/",
                files.persistence.display()
            )),
            "log_dest" => Some(format!("log_dest file {}", files.log.display())),
            "user" => Some(String::new()),
            "capath" | "crlfile" | "dhparamfile" | "password_file" | "psk_file" | "pid_file"
            | "include_dir" | "plugin" | "auth_plugin" | "persistence_file" => bail!(
                "{}: `{directive}` names a file; teach \
                 hil-tests/src/broker.rs::derive_config to relocate it",
                at()
            ),
            _ => None,
        };
        derived.push_str(replaced.as_deref().unwrap_or(line));
        derived.push('\n');
    }
    listeners.sort_unstable();
    let mut expected = vec![ports.appliances, ports.relay];
    expected.sort_unstable();
    if listeners != expected {
        bail!(
            "{SHIPPED_CONFIG} must have the listeners {SHIPPED_APPLIANCE_PORT} and \
             {SHIPPED_RELAY_PORT} once each; the harness runs both"
        );
    }
    // Not a setting of the broker's behaviour: which Unix user runs it.
    derived.push_str("user root\n");
    Ok(derived)
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The `mosquitto` executable: `$MOSQUITTO`, else on `PATH`, else in `/usr/sbin` (Debian's
/// place, often not on a user's `PATH`).
fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    let missing = |where_: String| {
        anyhow::anyhow!(
            "the Mosquitto broker is not installed ({where_}): run `sudo apt-get install \
             mosquitto mosquitto-clients` (or scripts/install-deps.sh), or set MOSQUITTO to \
             its path"
        )
    };
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(missing(format!(
                "MOSQUITTO={} is not a file",
                path.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|folder| folder.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| missing("not on PATH nor in /usr/sbin".into()))
}

/// One blocking TLS handshake with 127.0.0.1:`port`.
fn tls_handshake(port: u16, config: Arc<rustls::ClientConfig>) -> io::Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    socket.set_write_timeout(Some(Duration::from_secs(1)))?;
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut connection = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    while connection.is_handshaking() {
        connection.complete_io(&mut socket)?;
    }
    connection.send_close_notify();
    let _ = connection.complete_io(&mut socket);
    Ok(())
}

/// One MQTT connection driven for a test: its event loop runs in a task and stops at the
/// first connection error (no reconnection). Dropping it closes the socket without a
/// DISCONNECT, as a crash would (the broker then publishes the will).
#[derive(Debug)]
pub struct MqttSession {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

impl MqttSession {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(options: MqttOptions, timeout: Duration) -> anyhow::Result<MqttSession> {
        let mut session = MqttSession::spawn(options);
        let connack = session
            .wait_for(timeout, |event| match event {
                Event::Incoming(Packet::ConnAck(connack)) => Some(connack.code),
                _ => None,
            })
            .await
            .context("connecting")?;
        match connack {
            Some(ConnectReturnCode::Success) => Ok(session),
            Some(code) => bail!("the broker refused the connection: {code:?}"),
            None => bail!("no CONNACK within {timeout:?}"),
        }
    }

    fn spawn(options: MqttOptions) -> MqttSession {
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (sender, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await;
                let failed = event.is_err();
                if sender.send(event).is_err() || failed {
                    break;
                }
            }
        });
        MqttSession {
            client,
            events,
            task,
        }
    }

    /// The first event `select` maps to `Some`, or `None` after `timeout`. Fails when the
    /// connection fails first.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut select: impl FnMut(&Event) -> Option<T>,
    ) -> anyhow::Result<Option<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_elapsed) => return Ok(None),
                Ok(None) => bail!("the connection's event loop has stopped"),
                Ok(Some(Err(error))) => {
                    return Err(anyhow::Error::new(error).context("the connection failed"));
                }
                Ok(Some(Ok(event))) => {
                    if let Some(selected) = select(&event) {
                        return Ok(Some(selected));
                    }
                }
            }
        }
    }

    /// Publishes at QoS 1 and returns the broker's PUBACK.
    pub async fn publish_acked(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        timeout: Duration,
    ) -> anyhow::Result<PubAck> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await?;
        let pkid = self
            .wait_for(timeout, |event| match event {
                // 0 is a QoS 0 publish sent before this one.
                Event::Outgoing(Outgoing::Publish(pkid)) if *pkid != 0 => Some(*pkid),
                _ => None,
            })
            .await?
            .context("the publish was not sent")?;
        self.wait_for(timeout, |event| match event {
            Event::Incoming(Packet::PubAck(puback)) if puback.pkid == pkid => Some(puback.clone()),
            _ => None,
        })
        .await?
        .with_context(|| format!("no PUBACK for {topic} within {timeout:?}"))
    }

    /// Subscribes at QoS 1 and returns the broker's SUBACK.
    pub async fn subscribe_acked(
        &mut self,
        filter: &str,
        timeout: Duration,
    ) -> anyhow::Result<SubAck> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        let pkid = self
            .wait_for(timeout, |event| match event {
                Event::Outgoing(Outgoing::Subscribe(pkid)) => Some(*pkid),
                _ => None,
            })
            .await?
            .context("the subscription was not sent")?;
        self.wait_for(timeout, |event| match event {
            Event::Incoming(Packet::SubAck(suback)) if suback.pkid == pkid => Some(suback.clone()),
            _ => None,
        })
        .await?
        .with_context(|| format!("no SUBACK for {filter} within {timeout:?}"))
    }

    /// The next message delivered to this client, or `None` after `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> anyhow::Result<Option<Publish>> {
        self.wait_for(timeout, |event| match event {
            Event::Incoming(Packet::Publish(publish)) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Every message delivered to this client during `window`.
    pub async fn messages_during(&mut self, window: Duration) -> anyhow::Result<Vec<Publish>> {
        let deadline = tokio::time::Instant::now() + window;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(messages);
            }
            match self.next_message(left).await? {
                Some(message) => messages.push(message),
                None => return Ok(messages),
            }
        }
    }

    /// Sends DISCONNECT (so the broker discards the will) and waits for the event loop to end.
    pub async fn disconnect(mut self, timeout: Duration) -> anyhow::Result<()> {
        self.client.disconnect().await?;
        let _ = self
            .wait_for(timeout, |event| {
                matches!(event, Event::Outgoing(Outgoing::Disconnect)).then_some(())
            })
            .await;
        Ok(())
    }
}

impl Drop for MqttSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects with `options` and returns why the connection failed; fails if the broker
/// accepts it (a successful CONNACK) or nothing is decided within `timeout`.
pub async fn refusal(options: MqttOptions, timeout: Duration) -> anyhow::Result<ConnectionError> {
    let mut session = MqttSession::spawn(options);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, session.events.recv()).await {
            Err(_elapsed) => {
                bail!("the connection was neither accepted nor refused in {timeout:?}")
            }
            Ok(None) => bail!("the connection's event loop stopped without an error"),
            Ok(Some(Err(error))) => return Ok(error),
            Ok(Some(Ok(Event::Incoming(Packet::ConnAck(connack))))) => {
                if connack.code == ConnectReturnCode::Success {
                    bail!("the broker accepted the connection: {connack:?}");
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The rustls error (a TLS alert received, a certificate refused...) behind a connection
/// error, looking through the I/O errors that carry it.
pub fn rustls_error(error: &ConnectionError) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // rumqttc's StateError::Deserialization does not name its cause as a source.
        if let Some(StateError::Deserialization(inner)) = error.downcast_ref::<StateError>() {
            current = Some(inner);
            continue;
        }
        // io::Error::source skips the error it wraps; look at it directly.
        if let Some(inner) = error
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            current = Some(inner);
            continue;
        }
        current = error.source();
    }
    None
}

/// A site's own broker, as zigbee2mqtt publishes to: Mosquitto started without a config file
/// (version 2's local-only mode: anonymous clients, loopback only) on a free port.
pub struct LocalBroker {
    pub port: u16,
    child: Child,
}

impl LocalBroker {
    pub fn start() -> anyhow::Result<LocalBroker> {
        let port = crate::harness::free_port()?;
        let child = Command::new(mosquitto_binary()?)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut broker = LocalBroker { port, child };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = broker.child.try_wait()? {
                bail!("mosquitto -p {port} exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("mosquitto -p {port} did not listen in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: Ports = Ports {
        appliances: 4321,
        relay: 4322,
    };

    fn deploy() -> anyhow::Result<PathBuf> {
        Ok(fs::canonicalize(SHIPPED_DEPLOY_FOLDER)?)
    }

    #[test]
    fn the_shipped_config_is_derived_with_only_machine_specific_values_replaced()
    -> anyhow::Result<()> {
        let shipped = fs::read_to_string(SHIPPED_CONFIG)?;
        let files = TestFiles::new(Path::new("/t"));
        let deploy = deploy()?;
        let derived = derive_config(&shipped, PORTS, &files, &deploy)?;
        let settings = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let (shipped, derived) = (settings(&shipped), settings(&derived));
        let changed: Vec<(String, String)> = shipped
            .iter()
            .zip(&derived)
            .filter(|(shipped, derived)| shipped != derived)
            .map(|(shipped, derived)| (shipped.clone(), derived.clone()))
            .collect();
        let acl = |name: &str| format!("acl_file {}", deploy.join(name).display());
        let expected: Vec<(String, String)> = [
            (
                "persistence_location /var/lib/mosquitto/",
                "persistence_location /t/persistence/".to_owned(),
            ),
            (
                "log_dest file /var/log/mosquitto/mosquitto.log",
                "log_dest file /t/mosquitto.log".to_owned(),
            ),
            ("listener 8883", "listener 4321 127.0.0.1".to_owned()),
            (
                "cafile /etc/mosquitto/gatehouse/fleet-ca.pem",
                "cafile /t/fleet-ca.pem".to_owned(),
            ),
            (
                "certfile /etc/mosquitto/gatehouse/broker.pem",
                "certfile /t/broker.pem".to_owned(),
            ),
            (
                "keyfile /etc/mosquitto/gatehouse/broker.key",
                "keyfile /t/broker.key".to_owned(),
            ),
            (
                "acl_file /etc/mosquitto/gatehouse/acl-appliances",
                acl("acl-appliances"),
            ),
            ("listener 8884", "listener 4322 127.0.0.1".to_owned()),
            (
                "cafile /etc/mosquitto/gatehouse/relay-ca.pem",
                "cafile /t/relay-ca.pem".to_owned(),
            ),
            (
                "certfile /etc/mosquitto/gatehouse/broker.pem",
                "certfile /t/broker.pem".to_owned(),
            ),
            (
                "keyfile /etc/mosquitto/gatehouse/broker.key",
                "keyfile /t/broker.key".to_owned(),
            ),
            (
                "acl_file /etc/mosquitto/gatehouse/acl-relay",
                acl("acl-relay"),
            ),
        ]
        .into_iter()
        .map(|(shipped, derived)| (shipped.to_owned(), derived))
        .collect();
        assert_eq!(changed, expected);
        assert_eq!(derived.len(), shipped.len() + 1);
        assert_eq!(derived.last().map(String::as_str), Some("user root"));
        for kept in [
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "tls_version tlsv1.3",
            "allow_anonymous false",
            "per_listener_settings true",
        ] {
            assert!(derived.contains(&kept.to_owned()), "{kept}");
        }
        Ok(())
    }

    #[test]
    fn a_listener_or_certificate_the_harness_does_not_know_stops_the_derivation()
    -> anyhow::Result<()> {
        let files = TestFiles::new(Path::new("/t"));
        let deploy = deploy()?;
        for (config, expected) in [
            ("listener 1883\n", ":1: the harness knows the listeners"),
            (
                "listener 8883\n",
                "must have the listeners 8883 and 8884 once each",
            ),
            (
                "listener 8883\ncafile /etc/other-ca.pem\n",
                ":2: the harness makes no `/etc/other-ca.pem`",
            ),
            ("listener 8883\nacl_file /etc/acl-nobody\n", ":2: "),
        ] {
            let error = derive_config(config, PORTS, &files, &deploy)
                .err()
                .with_context(|| format!("{config:?} was accepted"))?;
            assert!(error.to_string().contains(expected), "{config:?}: {error}");
        }
        Ok(())
    }

    #[test]
    fn an_unknown_file_directive_stops_the_derivation() -> anyhow::Result<()> {
        let files = TestFiles::new(Path::new("/t"));
        let error = derive_config(
            "listener 8883\ncrlfile /etc/crl.pem\n",
            PORTS,
            &files,
            &deploy()?,
        )
        .err()
        .context("a crlfile was accepted")?;
        assert!(
            error.to_string().contains(":2: `crlfile` names a file"),
            "{error}"
        );
        Ok(())
    }
}

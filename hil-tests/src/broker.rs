//! A real Mosquitto broker running the configuration Gatehouse ships, for tests.
//!
//! [`TlsBroker::start`] makes a fleet CA and a broker certificate (`gatehouse_relay::pki`),
//! writes a configuration **derived from `relay/deploy/mosquitto.conf`** and runs
//! `mosquitto -c` as a child process on a free loopback port. The derivation keeps every
//! setting of the shipped file and replaces only what is specific to a machine:
//!
//! | shipped directive | in the test |
//! | --- | --- |
//! | `listener 8883` | `listener {free port} 127.0.0.1` |
//! | `cafile`, `certfile`, `keyfile` | files in the test's folder |
//! | `acl_file` | the shipped `relay/deploy/acl` itself, by absolute path |
//! | `persistence_location` | `{folder}/persistence/` |
//! | `log_dest file ...` | `log_dest file {folder}/mosquitto.log` |
//! | (none) | `user root`, so a broker started by root does not switch to the `mosquitto` user, which cannot read the test's folder; ignored when not root |
//!
//! A shipped directive that names another file (a CRL, a password file, a plugin...) makes
//! [`TlsBroker::start`] fail until this table learns it, so the tests never silently run a
//! configuration other than the one that ships.
//!
//! [`TlsBroker::stop`] sends SIGTERM, so the broker saves its sessions and queued messages
//! before [`TlsBroker::restart`] brings it back on the same port; dropping the broker kills it
//! (SIGKILL).
//!
//! Clients: [`TlsBroker::client_options`] issues a client certificate for a CN and builds MQTT
//! v5 options with `gatehouse_transport`'s TLS policy (rustls with `ring`, TLS 1.3 only, the
//! fleet CA as the only root): exactly what appliances and the relay use. [`MqttSession`]
//! drives one connection for a test and [`refusal`] asserts that the broker turns one away.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gatehouse_relay::pki::{FleetCa, Validity};
use gatehouse_transport::TlsIdentity;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAck, Publish, SubAck};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The configuration and ACL that ship with the relay.
pub const SHIPPED_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../relay/deploy/mosquitto.conf"
);
pub const SHIPPED_ACL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/deploy/acl");

/// How long the broker may take to accept TLS after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the certificates the harness issues (broker, clients) are valid.
const CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The CN of the harness's own readiness probe.
const PROBE_IDENTITY: &str = "hil-readiness-probe";

/// A Mosquitto broker with the shipped configuration, on loopback; killed on drop.
#[derive(Debug)]
pub struct TlsBroker {
    folder: PathBuf,
    port: u16,
    ca: FleetCa,
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
        let server = ca.issue_server_cert(
            &["localhost", "127.0.0.1"],
            Validity::starting_now(CERT_VALIDITY),
        )?;
        let files = TestFiles::new(folder);
        write_file(&files.ca, ca.cert_pem())?;
        write_file(&files.cert, &server.cert_pem)?;
        write_file(&files.key, &server.key_pem)?;
        fs::create_dir_all(&files.persistence)?;
        let shipped = fs::read_to_string(SHIPPED_CONFIG)
            .with_context(|| format!("reading {SHIPPED_CONFIG}"))?;
        let acl =
            fs::canonicalize(SHIPPED_ACL).with_context(|| format!("finding {SHIPPED_ACL}"))?;

        let mut broker = TlsBroker {
            folder: folder.to_owned(),
            port: 0,
            ca,
            config: folder.join("mosquitto.conf"),
            log: files.log.clone(),
            output: folder.join("mosquitto.out"),
            child: None,
        };
        // A free port can be taken between our probe and mosquitto's bind; try a few.
        let mut attempts = 0;
        loop {
            broker.port = crate::harness::free_port()?;
            write_file(
                &broker.config,
                &derive_config(&shipped, broker.port, &files, &acl)?,
            )?;
            match broker.launch(&mosquitto) {
                Ok(()) => return Ok(broker),
                Err(error) if attempts >= 2 => return Err(error),
                Err(_) => attempts += 1,
            }
        }
    }

    /// The broker's TLS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The fleet CA the broker trusts; issue more client certificates with it.
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

    /// Client options for `client_id` authenticated by a fresh certificate for `cn` from the
    /// fleet CA, with the appliances' TLS policy.
    pub fn client_options(&self, client_id: &str, cn: &str) -> anyhow::Result<MqttOptions> {
        self.options_for(client_id, &self.identity(cn)?)
    }

    /// A fresh identity for `cn` from the fleet CA, trusting the fleet CA.
    pub fn identity(&self, cn: &str) -> anyhow::Result<TlsIdentity> {
        let issued = self
            .ca
            .issue_client_cert(cn, Validity::starting_now(CERT_VALIDITY))?;
        Ok(TlsIdentity {
            ca_pem: self.ca.cert_pem().as_bytes().to_vec(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
        })
    }

    /// Client options for `client_id` with `identity`, with the appliances' TLS policy.
    pub fn options_for(
        &self,
        client_id: &str,
        identity: &TlsIdentity,
    ) -> anyhow::Result<MqttOptions> {
        Ok(identity.mqtt_options(client_id, &Ipv4Addr::LOCALHOST.to_string(), self.port)?)
    }

    /// Client options for `client_id` with any rustls configuration (to try what the policy
    /// would never build: no client certificate, TLS 1.2...).
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
        let probe = self.identity(PROBE_IDENTITY)?.client_config()?;
        let probe = Arc::new(probe);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "mosquitto exited with {status} on port {}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            match tls_handshake(self.port, probe.clone()) {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    let _ = self.stop();
                    bail!(
                        "mosquitto did not complete a TLS handshake on port {} within {:?} \
                         ({error}); its log:\n{}",
                        self.port,
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
    cert: PathBuf,
    key: PathBuf,
    persistence: PathBuf,
    log: PathBuf,
}

impl TestFiles {
    fn new(folder: &Path) -> TestFiles {
        TestFiles {
            ca: folder.join("fleet-ca.pem"),
            cert: folder.join("broker.pem"),
            key: folder.join("broker.key"),
            persistence: folder.join("persistence"),
            log: folder.join("mosquitto.log"),
        }
    }
}

/// The shipped configuration with the machine-specific values replaced (see the module
/// documentation). Fails on a directive naming a file this function does not relocate, and
/// unless there is exactly one listener.
fn derive_config(
    shipped: &str,
    port: u16,
    files: &TestFiles,
    acl: &Path,
) -> anyhow::Result<String> {
    let mut derived = String::new();
    let mut listeners = 0;
    for (number, line) in shipped.lines().enumerate() {
        let trimmed = line.trim();
        let directive = trimmed.split_whitespace().next().unwrap_or("");
        let replaced = match directive {
            "" => None,
            _ if trimmed.starts_with('#') => None,
            "listener" => {
                listeners += 1;
                Some(format!("listener {port} 127.0.0.1"))
            }
            "cafile" => Some(format!("cafile {}", files.ca.display())),
            "certfile" => Some(format!("certfile {}", files.cert.display())),
            "keyfile" => Some(format!("keyfile {}", files.key.display())),
            "acl_file" => Some(format!("acl_file {}", acl.display())),
            "persistence_location" => Some(format!(
                "persistence_location {}/",
                files.persistence.display()
            )),
            "log_dest" => Some(format!("log_dest file {}", files.log.display())),
            "user" => Some(String::new()),
            "capath" | "crlfile" | "dhparamfile" | "password_file" | "psk_file" | "pid_file"
            | "include_dir" | "plugin" | "auth_plugin" | "persistence_file" => bail!(
                "{SHIPPED_CONFIG}:{}: `{directive}` names a file; teach \
                 hil-tests/src/broker.rs::derive_config to relocate it",
                number + 1
            ),
            _ => None,
        };
        derived.push_str(replaced.as_deref().unwrap_or(line));
        derived.push('\n');
    }
    if listeners != 1 {
        bail!("{SHIPPED_CONFIG} has {listeners} listeners; the harness expects exactly one");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_derived_with_only_machine_specific_values_replaced()
    -> anyhow::Result<()> {
        let shipped = fs::read_to_string(SHIPPED_CONFIG)?;
        let files = TestFiles::new(Path::new("/t"));
        let derived = derive_config(&shipped, 4321, &files, Path::new("/deploy/acl"))?;
        let settings = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let (shipped, derived) = (settings(&shipped), settings(&derived));
        let changed: Vec<(&String, &String)> = shipped
            .iter()
            .zip(&derived)
            .filter(|(shipped, derived)| shipped != derived)
            .collect();
        let directives: Vec<&str> = changed
            .iter()
            .filter_map(|(shipped, _)| shipped.split_whitespace().next())
            .collect();
        assert_eq!(
            directives,
            [
                "persistence_location",
                "log_dest",
                "listener",
                "cafile",
                "certfile",
                "keyfile",
                "acl_file"
            ]
        );
        assert_eq!(derived.len(), shipped.len() + 1);
        assert_eq!(derived.last().map(String::as_str), Some("user root"));
        assert!(derived.contains(&"listener 4321 127.0.0.1".to_owned()));
        for kept in [
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.3",
            "allow_anonymous false",
            "per_listener_settings true",
        ] {
            assert!(derived.contains(&kept.to_owned()), "{kept}");
        }
        Ok(())
    }

    #[test]
    fn an_unknown_file_directive_stops_the_derivation() -> anyhow::Result<()> {
        let files = TestFiles::new(Path::new("/t"));
        let error = derive_config(
            "listener 8883\ncrlfile /etc/crl.pem\n",
            1,
            &files,
            Path::new("/acl"),
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

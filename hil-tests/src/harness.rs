//! Driving the real `gatehouse-edge` binary: a site config for simulated devices, the agent as
//! a child process (so a test can kill -9 it), and clients for its REST API and stream.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use gatehouse_edge::api::auth::hash_token;
use gatehouse_protocol::Event;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The tokens of the test users; their hashes go into the config.
pub const ADMIN_TOKEN: &str = "test-token-admin";
pub const GUARD_TOKEN: &str = "test-token-guard";
pub const INTEGRATOR_TOKEN: &str = "test-token-integrator";

/// Our simulator on a free loopback port, serving unit 1.
pub async fn simulator() -> anyhow::Result<crate::modbus_sim::ModbusSim> {
    let sim = crate::modbus_sim::ModbusSim::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    sim.add_unit(1);
    Ok(sim)
}

/// A free TCP port on loopback (released before use; fine for tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `[site]`, `[journal]`, `[api]` and `[[zones]]` part of a test config; append devices
/// and rules to it.
pub fn site_header(api_port: u16, journal: &Path) -> String {
    format!(
        r#"
[site]
id = "hil-site"
name = "HIL test site"

[journal]
path = "{journal}"
synchronous = "full"

[api]
listen = "127.0.0.1:{api_port}"

[[api.users]]
name = "admin"
role = "admin"
token_sha256 = "{admin}"

[[api.users]]
name = "guard"
role = "guard"
token_sha256 = "{guard}"

[[api.users]]
name = "integrator"
role = "integrator"
token_sha256 = "{integrator}"

[[zones]]
id = "lobby"
name = "Lobby"
mode = "armed_away"
"#,
        journal = journal.display(),
        admin = hash_token(ADMIN_TOKEN),
        guard = hash_token(GUARD_TOKEN),
        integrator = hash_token(INTEGRATOR_TOKEN),
    )
}

/// A Modbus TCP device with a door contact (discrete input 0), a strike (coil 0), a
/// temperature (f32 in holding registers 0-1) and a counter (input register 10), in zone
/// `lobby`.
pub fn door_device(id: &str, address: SocketAddr, poll_interval_ms: u64) -> String {
    door_device_on(id, &format!("address = \"{address}\""), poll_interval_ms)
}

/// [`door_device`] as unit `unit_id` of the serial bus `bus`.
pub fn door_unit(id: &str, bus: &str, unit_id: u8, poll_interval_ms: u64) -> String {
    door_device_on(
        id,
        &format!("bus = \"{bus}\"\nunit_id = {unit_id}"),
        poll_interval_ms,
    )
}

/// [`door_device`] reached through `link`: its `address` or its `bus` and `unit_id` lines.
fn door_device_on(id: &str, link: &str, poll_interval_ms: u64) -> String {
    format!(
        r#"
[[modbus.devices]]
id = "{id}"
{link}
poll_interval_ms = {poll_interval_ms}
timeout_ms = 500
reconnect_initial_ms = 100
reconnect_max_ms = 1000
zone = "lobby"

[[modbus.devices.points]]
id = "{id}.door"
table = "discrete_input"
address = 0

[[modbus.devices.points]]
id = "{id}.strike"
table = "coil"
address = 0
writable = true

[[modbus.devices.points]]
id = "{id}.temperature"
table = "holding_register"
address = 0
type = "f32"
unit = "°C"

[[modbus.devices.points]]
id = "{id}.count"
table = "input_register"
address = 10
"#
    )
}

/// A rule raising a high incident when `{device}.door` opens in the armed lobby.
pub fn door_rule(device: &str) -> String {
    format!(
        r#"
[[rules]]
id = "{device}-door-open"
when.event = {{ point = "{device}.door", value = "value == true" }}
if = {{ modes = ["armed_away", "armed_stay", "armed_night"] }}
then = [{{ raise = {{ severity = "high", title = "Door of {device} opened while armed" }} }}]
"#
    )
}

/// A device `id` with `count` u16 holding registers at addresses 0.., polled every 10 ms:
/// with [`churn_registers`] it produces about `count` events per poll.
pub fn busy_device(id: &str, address: SocketAddr, count: u16) -> String {
    let mut text = format!(
        r#"
[[modbus.devices]]
id = "{id}"
address = "{address}"
poll_interval_ms = 10
timeout_ms = 500
"#
    );
    for register in 0..count {
        text.push_str(&format!(
            "\n[[modbus.devices.points]]\nid = \"{id}.r{register}\"\ntable = \"holding_register\"\naddress = {register}\n"
        ));
    }
    text
}

/// Changes holding registers 0..count of unit 1 every millisecond until `running` is false.
pub async fn churn_registers(
    sim: std::sync::Arc<crate::modbus_sim::ModbusSim>,
    count: u16,
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut value: u16 = 0;
    while running.load(std::sync::atomic::Ordering::Relaxed) {
        value = value.wrapping_add(1);
        for register in 0..count {
            sim.set_holding(1, register, value);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Where the agent binary is: `$GATEHOUSE_EDGE_BIN`, else the workspace's target folder.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    workspace_binary(
        "gatehouse-edge",
        "GATEHOUSE_EDGE_BIN",
        &["edge-agent/src", "protocol/src"],
    )
}

/// Where the workspace binary `name` (built by the package of the same name) is: `$env_var`,
/// else the workspace's target folder, where it must be newer than the files below
/// `sources` (folders relative to the workspace), so a test never runs a stale binary.
pub fn workspace_binary(name: &str, env_var: &str, sources: &[&str]) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(env_var) {
        return Ok(PathBuf::from(path));
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let path = target.join("debug").join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "{} is missing: build it first with `cargo build --workspace --bins` \
                 (scripts/test.sh does), or set {env_var}",
                path.display()
            )
        })?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Cargo's dep-info beside the binary lists exactly the files it was built from (a file
    // compiled only into tests does not make the binary stale); the folders are the fallback.
    let newest = match std::fs::read_to_string(path.with_extension("d")) {
        Ok(dep_info) => newest_of(dep_info_sources(&dep_info)),
        Err(_) => newest_source(
            &sources
                .iter()
                .map(|folder| workspace.join(folder))
                .collect::<Vec<_>>(),
        ),
    };
    if newest.is_some_and(|source| source > built) {
        bail!(
            "{} is older than its sources: rebuild it with `cargo build --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// The source files a Cargo dep-info file (`target: src src ...`, spaces escaped as `\ `)
/// names for its first target.
fn dep_info_sources(dep_info: &str) -> Vec<PathBuf> {
    let Some((_, sources)) = dep_info
        .lines()
        .next()
        .and_then(|line| line.split_once(": "))
    else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = sources.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' if !current.is_empty() => paths.push(PathBuf::from(std::mem::take(&mut current))),
            ' ' => {}
            other => current.push(other),
        }
    }
    if !current.is_empty() {
        paths.push(PathBuf::from(current));
    }
    paths
}

/// The newest modification time of `files` (missing ones count as new: the binary is stale).
fn newest_of(files: Vec<PathBuf>) -> Option<std::time::SystemTime> {
    files
        .iter()
        .map(|file| {
            std::fs::metadata(file)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| std::time::SystemTime::now())
        })
        .max()
}

/// The newest modification time of the files below `folders`.
fn newest_source(folders: &[PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut pending: Vec<PathBuf> = folders.to_vec();
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// reqwest is built with rustls in this workspace (features unify: the agent's claim uses
/// it) and then panics without a process-wide crypto provider; the harness's HTTP is plain
/// either way. Called wherever the harness makes requests; calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `url` until it answers 2xx, for at most 20 s; fails early when `child` (`what`, for
/// messages) exits first. Failures show the child's log, `log_file`.
pub async fn wait_until_healthy(
    child: &mut Child,
    url: &str,
    what: &str,
    log_file: &Path,
) -> anyhow::Result<()> {
    install_crypto_provider();
    let log = || std::fs::read_to_string(log_file).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status}; log:\n{}", log());
        }
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}'s API did not come up; log:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then waits up to 20 s for `child` (`what`, for messages) to exit.
pub async fn terminate(child: &mut Child, what: &str) -> anyhow::Result<std::process::ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {what} failed");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not stop within 20 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The agent running as a child process.
pub struct AgentProcess {
    child: Child,
    pub api: SocketAddr,
    pub config: PathBuf,
}

impl AgentProcess {
    /// Writes `config` to `folder/site.toml`, starts the agent and waits for its API.
    pub async fn start(folder: &Path, config: &str, api_port: u16) -> anyhow::Result<Self> {
        let path = folder.join("site.toml");
        std::fs::write(&path, config)?;
        Self::start_with(&path, api_port).await
    }

    /// Starts the agent on a free port with [`site_header`] followed by `devices_and_rules`,
    /// its journal in `folder`.
    pub async fn start_site(folder: &Path, devices_and_rules: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let header = site_header(port, &folder.join("journal.db"));
        Self::start(folder, &format!("{header}{devices_and_rules}"), port).await
    }

    /// Starts the agent on an existing config file (a restart).
    pub async fn start_with(config: &Path, api_port: u16) -> anyhow::Result<Self> {
        let log = std::fs::File::create(config.with_extension("log"))?;
        let child = Command::new(agent_binary()?)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,gatehouse_edge=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start gatehouse-edge")?;
        let mut agent = AgentProcess {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            config: config.to_owned(),
        };
        agent.wait_healthy().await?;
        Ok(agent)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let url = format!("http://{}/api/v1/health", self.api);
        let log = self.config.with_extension("log");
        wait_until_healthy(&mut self.child, &url, "the agent", &log).await
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// The agent's process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        terminate(&mut self.child, "the agent").await
    }

    pub fn api(&self, token: &str) -> ApiClient {
        ApiClient::new(self.api, token)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A REST client with a bearer token.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(api: SocketAddr, token: &str) -> Self {
        install_crypto_provider();
        ApiClient {
            base: format!("http://{api}"),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// GET; returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Json)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Json::Null)))
    }

    /// POST a JSON body; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Json) -> anyhow::Result<(u16, Json)> {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// PUT a JSON body; returns the status and the JSON body.
    pub async fn put(&self, path: &str, body: &Json) -> anyhow::Result<(u16, Json)> {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Json,
    ) -> anyhow::Result<(u16, Json)> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Json::Null)))
    }

    /// Every event matching `query` (e.g. `point=x&kind=observation`), following cursors.
    pub async fn all_events(&self, query: &str) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/events?limit=1000&{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, page) = self.get(&path).await?;
            if status != 200 {
                bail!("GET {path} answered {status}: {page}");
            }
            let items: Vec<Event> = serde_json::from_value(page["items"].clone())?;
            events.extend(items);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(events),
            }
        }
    }

    /// Polls GET `path` until `check` accepts the body.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&Json) -> bool,
    ) -> anyhow::Result<Json> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self.get(path).await?;
            if status == 200 && check(&body) {
                return Ok(body);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("GET {path} never satisfied the check; last answer {status}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A client of a `/api/v1/stream` WebSocket: the agent's (events) or the relay's (JSON
/// updates).
pub struct StreamClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl StreamClient {
    /// Connects to the agent's stream with a token, resuming after `after` when given.
    pub async fn connect(api: SocketAddr, token: &str, after: Option<u64>) -> anyhow::Result<Self> {
        let url = match after {
            Some(seq) => format!("ws://{api}/api/v1/stream?after={seq}"),
            None => format!("ws://{api}/api/v1/stream"),
        };
        Self::connect_url(&url, token).await
    }

    /// Connects to the WebSocket at `url` with a bearer token.
    pub async fn connect_url(url: &str, token: &str) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(StreamClient { socket })
    }

    /// The next event, or None if none arrives within `timeout` or the stream ended.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Option<Event>> {
        self.next_parsed(timeout).await
    }

    /// The next text message as JSON, or None if none arrives within `timeout` or the stream
    /// ended.
    pub async fn next_json(&mut self, timeout: Duration) -> anyhow::Result<Option<Json>> {
        self.next_parsed(timeout).await
    }

    async fn next_parsed<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = match tokio::time::timeout(remaining, self.socket.next()).await {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(message)) => message?,
            };
            match message {
                Message::Text(text) => return Ok(Some(serde_json::from_str(&text)?)),
                Message::Ping(payload) => self.socket.send(Message::Pong(payload)).await?,
                Message::Close(_) => return Ok(None),
                _ => {}
            }
        }
    }

    /// Reads events until one satisfies `check`; returns it and everything read before it.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        check: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<(Event, Vec<Event>)> {
        self.wait_for_parsed(timeout, check).await
    }

    /// Reads JSON messages until one satisfies `check`; returns it and everything read
    /// before it.
    pub async fn wait_for_json(
        &mut self,
        timeout: Duration,
        check: impl Fn(&Json) -> bool,
    ) -> anyhow::Result<(Json, Vec<Json>)> {
        self.wait_for_parsed(timeout, check).await
    }

    async fn wait_for_parsed<T: DeserializeOwned + std::fmt::Debug>(
        &mut self,
        timeout: Duration,
        check: impl Fn(&T) -> bool,
    ) -> anyhow::Result<(T, Vec<T>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_parsed(remaining).await? {
                Some(item) if check(&item) => return Ok((item, seen)),
                Some(item) => seen.push(item),
                None => bail!(
                    "no matching message within {timeout:?}; saw {} others: {:?}",
                    seen.len(),
                    seen.iter().rev().take(5).collect::<Vec<_>>()
                ),
            }
        }
    }
}

/// Whether `event` is an observation of `point` (with `value`, when given).
pub fn is_observation(
    event: &Event,
    point: &str,
    value: Option<&gatehouse_protocol::Value>,
) -> bool {
    matches!(&event.body, gatehouse_protocol::EventBody::Observation { point: p, value: v, .. }
        if p.as_str() == point && value.is_none_or(|value| v.as_ref() == Some(value)))
}

/// The change and incident id, if `event` is an incident change.
pub fn incident_change(event: &Event) -> Option<(gatehouse_protocol::IncidentChange, u64)> {
    match &event.body {
        gatehouse_protocol::EventBody::Incident { change, incident } => {
            Some((*change, incident.id))
        }
        _ => None,
    }
}

/// The status, if `event` reports `device`'s status.
pub fn device_status(event: &Event, device: &str) -> Option<gatehouse_protocol::DeviceStatus> {
    match &event.body {
        gatehouse_protocol::EventBody::DeviceStatus {
            device: d, status, ..
        } if d.as_str() == device => Some(*status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_names_every_source_with_escaped_spaces() {
        let dep_info = "/t/debug/agent: /w/src/main.rs /w/my\\ dir/lib.rs\n\n/w/src/main.rs:\n";
        assert_eq!(
            dep_info_sources(dep_info),
            vec![
                PathBuf::from("/w/src/main.rs"),
                PathBuf::from("/w/my dir/lib.rs")
            ]
        );
        assert!(dep_info_sources("garbage").is_empty());
    }

    #[test]
    fn a_missing_source_makes_the_binary_stale() {
        let newest = newest_of(vec![PathBuf::from("/nonexistent/source.rs")]);
        assert!(newest.is_some_and(|t| t + Duration::from_secs(5) > std::time::SystemTime::now()));
    }
}

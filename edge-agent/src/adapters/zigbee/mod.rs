//! Zigbee through zigbee2mqtt: one adapter per bridge (an MQTT connection to the site's
//! broker, a base topic), driving every configured device behind it.
//!
//! ```text
//!   broker ──► {base}/bridge/devices ──► which ieee address has which friendly name, exposes
//!          ──► {base}/bridge/state   ──► the bridge itself online or offline
//!          ──► {base}/{name}/availability ──► the device online or offline
//!          ──► {base}/{name}         ──► state: configured points, the rest as raw points
//!   commands ──► {base}/{name}/set   ◄── done when zigbee2mqtt reports the new state back
//! ```
//!
//! - A device is found by its IEEE address in `bridge/devices` (or by its friendly name), so a
//!   rename in zigbee2mqtt is followed; a device that leaves the list is offline.
//! - Health: offline when the broker is unreachable, zigbee2mqtt is offline, the device is
//!   not (or no longer) in its list or its availability says offline; degraded when a
//!   configured property is not among what the device's model exposes (or cannot be set);
//!   online otherwise, once anything was heard of it. Offline points turn stale.
//! - State messages report every property each time: a point is journaled when its value or
//!   quality changes. Properties the config does not name are journaled as raw points
//!   `{device}.{property}`, not dropped. A malformed message is logged and counted, and the
//!   device keeps its last values.

pub mod config;
pub mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_protocol::{
    CommandOutcome, DeviceId, DeviceStatus, EventBody, PointId, Quality, Value,
};
use jiff::Timestamp;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::Value as Json;
use tokio::time::Instant;

use self::config::{BridgeConfig, BrokerAddress, ZigbeeDeviceConfig};
use self::messages::{ACCESS_SET, Expose, Topic};
use super::{Adapter, AdapterContext, Backoff, CommandEnvelope, expired};
use crate::metrics::BridgeLabels;

/// The largest message taken from the broker: `bridge/devices` of a large network.
const MAX_INCOMING_BYTES: usize = 8 * 1024 * 1024;

/// State messages kept for names not known yet (they may come before `bridge/devices`).
const MAX_PENDING_NAMES: usize = 1024;

/// One zigbee2mqtt bridge and the configured devices behind it.
pub struct ZigbeeBridge {
    id: String,
    config: BridgeConfig,
    address: BrokerAddress,
    client_id: String,
    /// Never logged.
    password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    devices: Vec<ZigbeeDeviceConfig>,
    ids: Vec<DeviceId>,
}

impl ZigbeeBridge {
    /// The adapter of `config` for `devices` (those on this bridge). Reads the password and
    /// TLS files now, so a missing file stops the agent at start with its name.
    pub fn new(
        config: BridgeConfig,
        devices: Vec<ZigbeeDeviceConfig>,
        client_id: String,
    ) -> anyhow::Result<Self> {
        let id = config.id.get_ref().clone();
        let address = config
            .broker_address()
            .map_err(|message| anyhow::anyhow!("zigbee bridge `{id}`: {message}"))?;
        let password = match &config.password_file {
            Some(path) => Some(crate::config::read_password_file(path.get_ref()).map_err(
                |error| {
                    anyhow::anyhow!(
                        "zigbee bridge `{id}`: cannot read password_file {}: {error}",
                        path.get_ref().display()
                    )
                },
            )?),
            None => None,
        };
        let tls = if address.tls {
            Some(Arc::new(tls_config(&config).map_err(|message| {
                anyhow::anyhow!("zigbee bridge `{id}`: {message}")
            })?))
        } else {
            None
        };
        Ok(ZigbeeBridge {
            ids: devices
                .iter()
                .map(|device| device.id.get_ref().clone())
                .collect(),
            id,
            config,
            address,
            client_id,
            password,
            tls,
            devices,
        })
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(
            self.client_id.clone(),
            self.address.host.clone(),
            self.address.port,
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_BYTES, 256 * 1024);
        if let (Some(username), password) = (&self.config.username, &self.password) {
            options.set_credentials(username.clone(), password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        options
    }

    fn base(&self) -> &str {
        self.config.base_topic.get_ref()
    }

    async fn run_bridge(&self, context: &AdapterContext) {
        let mut state = State::new(self, context);
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.reconnect_initial_ms),
            Duration::from_millis(self.config.reconnect_max_ms),
        );
        let (client, mut events) = AsyncClient::new(self.options(), 64);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        events.set_network_options(network);
        loop {
            let reason = match self
                .session(&client, &mut events, context, &mut state, &mut backoff)
                .await
            {
                Some(reason) => reason,
                None => {
                    let _ = client.try_disconnect();
                    return;
                }
            };
            state.disconnected(&reason).await;
            let delay = backoff.next_delay();
            tracing::warn!(bridge = %self.id, broker = %self.config.broker.get_ref(), %reason,
                retry_in_ms = delay.as_millis() as u64, "zigbee2mqtt broker unreachable");
            context
                .metrics
                .zigbee_reconnects
                .get_or_create(&BridgeLabels {
                    bridge: self.id.clone(),
                })
                .inc();
            if !context.wait_offline(delay, &reason).await {
                return;
            }
        }
    }

    /// Serves one connection until it breaks (its reason) or the agent stops (None).
    async fn session(
        &self,
        client: &AsyncClient,
        events: &mut EventLoop,
        context: &AdapterContext,
        state: &mut State<'_>,
        backoff: &mut Backoff,
    ) -> Option<String> {
        let mut commands = context.commands.lock().await;
        loop {
            let next_deadline = state.next_deadline();
            tokio::select! {
                () = context.shutdown.cancelled() => return None,
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(bridge = %self.id, broker = %self.config.broker.get_ref(),
                            "connected to zigbee2mqtt's broker");
                        backoff.reset();
                        // A clean session: subscribe each time; retained messages (the device
                        // list, availability) come again.
                        if let Err(error) = client.try_subscribe(format!("{}/#", self.base()), QoS::AtLeastOnce) {
                            return Some(format!("cannot subscribe: {error}"));
                        }
                        state.connected().await;
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        state.on_message(&publish.topic, &publish.payload).await;
                    }
                    Ok(_) => {}
                    Err(error) => return Some(format!("{}: {error}", self.config.broker.get_ref())),
                },
                Some(command) = commands.recv() => state.command(client, command).await,
                () = sleep_until(next_deadline) => state.expire_commands().await,
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// TLS 1.3 to the broker: its CA (or the system's roots), and a client certificate if given.
fn tls_config(config: &BridgeConfig) -> Result<rustls::ClientConfig, String> {
    let roots = match &config.ca_file {
        Some(path) => {
            let certificates = gatehouse_transport::read_certificates(path)
                .map_err(|error| format!("ca_file: {error}"))?;
            gatehouse_transport::root_store(certificates)
                .map_err(|error| format!("ca_file {}: {error}", path.display()))?
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no ca_file, and the system has no CA certificates".into());
            }
            roots
        }
    };
    let certificate = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => Some((
            gatehouse_transport::read_certificates(cert).map_err(|e| e.to_string())?,
            gatehouse_transport::read_private_key(key).map_err(|e| e.to_string())?,
        )),
        _ => None,
    };
    gatehouse_transport::tls13_client_config(roots, certificate).map_err(|e| e.to_string())
}

impl Adapter for ZigbeeBridge {
    fn name(&self) -> &str {
        &self.id
    }

    fn devices(&self) -> &[DeviceId] {
        &self.ids
    }

    fn run<'a>(&'a self, context: &'a AdapterContext) -> BoxFuture<'a, ()> {
        Box::pin(self.run_bridge(context))
    }
}

/// What is known of one configured device.
#[derive(Default)]
struct DeviceState {
    /// Its friendly name now: from the device list, else from the config.
    friendly_name: Option<String>,
    model: Option<String>,
    exposes: HashMap<String, Expose>,
    /// Whether the device list names it; `None` until the list came.
    listed: Option<bool>,
    /// Its availability; `None` when zigbee2mqtt does not publish one.
    available: Option<bool>,
    /// A state message came since the connection was made.
    heard: bool,
    reported: Option<(DeviceStatus, Option<String>)>,
    /// What was last journaled of each configured point (index as in the config).
    points: Vec<Option<(Option<Value>, Quality)>>,
    /// Each raw point by property: its id (`None` for a key no point id can carry) and what
    /// was last journaled of it.
    raw: HashMap<String, (Option<PointId>, Option<Value>)>,
}

/// A `/set` waiting for zigbee2mqtt to report the new state.
struct Waiting {
    device: usize,
    property: String,
    expected: Json,
    deadline: Instant,
    command: CommandEnvelope,
}

/// The bridge's view of zigbee2mqtt, across reconnections.
struct State<'a> {
    bridge: &'a ZigbeeBridge,
    context: &'a AdapterContext,
    connected: bool,
    /// The broker's problem while disconnected.
    broker_problem: Option<String>,
    bridge_online: Option<bool>,
    devices: Vec<DeviceState>,
    /// Current friendly name → device index.
    names: HashMap<String, usize>,
    /// Messages of names not known yet, replayed when the device list names them.
    pending: HashMap<String, Vec<(bool, Vec<u8>)>>,
    waiting: Vec<Waiting>,
}

impl<'a> State<'a> {
    fn new(bridge: &'a ZigbeeBridge, context: &'a AdapterContext) -> Self {
        let devices = bridge
            .devices
            .iter()
            .map(|device| DeviceState {
                friendly_name: device.friendly_name.as_ref().map(|n| n.get_ref().clone()),
                points: context.last_recorded(device.points.iter().map(|p| p.id.get_ref())),
                reported: context
                    .live
                    .device(device.id.get_ref())
                    .map(|state| (state.status, state.reason)),
                ..DeviceState::default()
            })
            .collect();
        let mut state = State {
            bridge,
            context,
            connected: false,
            broker_problem: None,
            bridge_online: None,
            devices,
            names: HashMap::new(),
            pending: HashMap::new(),
            waiting: Vec::new(),
        };
        state.rebuild_names();
        state
    }

    fn rebuild_names(&mut self) {
        self.names = self
            .devices
            .iter()
            .enumerate()
            .filter_map(|(index, device)| Some((device.friendly_name.clone()?, index)))
            .collect();
    }

    async fn connected(&mut self) {
        self.connected = true;
        self.broker_problem = None;
        for device in &mut self.devices {
            device.heard = false;
        }
        self.update_all().await;
    }

    async fn disconnected(&mut self, reason: &str) {
        self.connected = false;
        self.broker_problem = Some(format!("cannot reach zigbee2mqtt's broker: {reason}"));
        for waiting in std::mem::take(&mut self.waiting) {
            let outcome = CommandOutcome::Unconfirmed {
                reason: format!(
                    "the connection to the broker broke before zigbee2mqtt reported the new state: {reason}"
                ),
            };
            self.context.finish_command(waiting.command, outcome).await;
        }
        self.update_all().await;
    }

    async fn on_message(&mut self, topic: &str, payload: &[u8]) {
        match messages::classify(self.bridge.base(), topic) {
            Topic::Devices => match messages::parse_devices(payload) {
                Ok(list) => self.on_device_list(list).await,
                Err(error) => self.rejected(topic, &format!("not a device list: {error}")),
            },
            Topic::BridgeState => {
                let online = messages::parse_online(payload);
                if online != self.bridge_online {
                    tracing::info!(bridge = %self.bridge.id, ?online, "zigbee2mqtt bridge state");
                }
                self.bridge_online = online;
                self.update_all().await;
            }
            Topic::Availability(name) => match self.names.get(name) {
                Some(&index) => {
                    self.devices[index].available = messages::parse_online(payload);
                    self.update(index).await;
                }
                None => self.keep_pending(name, true, payload),
            },
            Topic::State(name) => match self.names.get(name) {
                Some(&index) => self.on_state(index, topic, payload).await,
                None => self.keep_pending(name, false, payload),
            },
            Topic::Other => {}
        }
    }

    fn keep_pending(&mut self, name: &str, availability: bool, payload: &[u8]) {
        if self.pending.len() >= MAX_PENDING_NAMES && !self.pending.contains_key(name) {
            return;
        }
        let kept = self.pending.entry(name.to_owned()).or_default();
        // Only the latest of each kind matters.
        kept.retain(|(kind, _)| *kind != availability);
        kept.push((availability, payload.to_vec()));
    }

    fn rejected(&self, topic: &str, reason: &str) {
        tracing::warn!(bridge = %self.bridge.id, topic, reason, "zigbee2mqtt message rejected");
        self.context
            .metrics
            .zigbee_messages_rejected
            .get_or_create(&BridgeLabels {
                bridge: self.bridge.id.clone(),
            })
            .inc();
    }

    async fn on_device_list(&mut self, list: Vec<messages::Device>) {
        for (index, config) in self.bridge.devices.iter().enumerate() {
            let found =
                list.iter().find(
                    |listed| match (&config.ieee_address, &config.friendly_name) {
                        (Some(ieee), _) => listed.ieee_address.eq_ignore_ascii_case(ieee.get_ref()),
                        (None, Some(name)) => &listed.friendly_name == name.get_ref(),
                        (None, None) => false,
                    },
                );
            let device = &mut self.devices[index];
            match found {
                Some(listed) => {
                    if device.friendly_name.as_ref() != Some(&listed.friendly_name) {
                        tracing::info!(bridge = %self.bridge.id, device = %config.id.get_ref(),
                            friendly_name = %listed.friendly_name, "zigbee device named");
                    }
                    device.friendly_name = Some(listed.friendly_name.clone());
                    device.model = listed.model.clone();
                    device.exposes = listed.exposes.clone();
                    device.listed = Some(true);
                }
                None => {
                    device.listed = Some(false);
                    device.friendly_name =
                        config.friendly_name.as_ref().map(|n| n.get_ref().clone());
                    device.exposes.clear();
                }
            }
        }
        self.rebuild_names();
        let known: Vec<(String, usize)> = self
            .names
            .iter()
            .filter(|(name, _)| self.pending.contains_key(*name))
            .map(|(name, index)| (name.clone(), *index))
            .collect();
        for (name, index) in known {
            for (availability, payload) in self.pending.remove(&name).unwrap_or_default() {
                if availability {
                    self.devices[index].available = messages::parse_online(&payload);
                } else {
                    let topic = format!("{}/{name}", self.bridge.base());
                    self.on_state(index, &topic, &payload).await;
                }
            }
        }
        self.update_all().await;
    }

    async fn on_state(&mut self, index: usize, topic: &str, payload: &[u8]) {
        let properties = match messages::parse_state(payload) {
            Ok(properties) => properties,
            Err(reason) => return self.rejected(topic, &reason),
        };
        if !self.devices[index].heard {
            self.devices[index].heard = true;
            self.update(index).await;
        }
        let bridge = self.bridge;
        let config = &bridge.devices[index];
        let observed_at = Timestamp::now();
        for (point_index, point) in config.points.iter().enumerate() {
            let Some(json) = properties.get(point.property.get_ref()) else {
                continue;
            };
            let expose = self.devices[index].exposes.get(point.property.get_ref());
            let (value, quality) = match point.property_type() {
                Some(value_type) => match messages::read_value(value_type, json, expose) {
                    Ok(value) => (Some(value), Quality::Good),
                    Err(reason) => (
                        None,
                        Quality::bad(format!("{}: {reason}", point.property.get_ref())),
                    ),
                },
                None => (messages::raw_value(json), Quality::Good),
            };
            let last = &mut self.devices[index].points[point_index];
            if last.as_ref() != Some(&(value.clone(), quality.clone())) {
                *last = Some((value.clone(), quality.clone()));
                self.observe(
                    index,
                    point.id.get_ref().clone(),
                    config.point_zone(point),
                    value,
                    quality,
                    observed_at,
                )
                .await;
            }
        }
        for (property, json) in &properties {
            if config
                .points
                .iter()
                .any(|point| point.property.get_ref() == property)
            {
                continue;
            }
            let value = messages::raw_value(json);
            let raw = self.devices[index]
                .raw
                .entry(property.clone())
                .or_insert_with(|| {
                    let id = format!("{}.{}", config.id.get_ref(), property.to_lowercase());
                    (PointId::new(id).ok(), None)
                });
            // A key no point id can carry is left out.
            let Some(point) = raw.0.clone().filter(|_| raw.1 != value) else {
                continue;
            };
            raw.1 = value.clone();
            self.observe(
                index,
                point,
                config.zone.as_ref().map(|z| z.get_ref().clone()),
                value,
                Quality::Good,
                observed_at,
            )
            .await;
        }
        self.confirm(index, &properties).await;
    }

    async fn observe(
        &self,
        index: usize,
        point: PointId,
        zone: Option<gatehouse_protocol::ZoneId>,
        value: Option<Value>,
        quality: Quality,
        observed_at: Timestamp,
    ) {
        self.context
            .emit(EventBody::Observation {
                device: self.bridge.ids[index].clone(),
                point,
                zone,
                value,
                quality,
                observed_at,
            })
            .await;
    }

    /// What the device's status is now, if anything is known.
    fn status(&self, index: usize) -> Option<(DeviceStatus, Option<String>)> {
        let device = &self.devices[index];
        let config = &self.bridge.devices[index];
        let offline = |reason: String| Some((DeviceStatus::Offline, Some(reason)));
        if let Some(problem) = &self.broker_problem {
            return offline(problem.clone());
        }
        if !self.connected {
            return device.reported.clone();
        }
        if self.bridge_online == Some(false) {
            return offline("zigbee2mqtt is offline (bridge/state)".into());
        }
        if device.listed == Some(false) {
            return offline(format!(
                "not in zigbee2mqtt's device list (by {}): not paired, or removed",
                config.describe()
            ));
        }
        if device.available == Some(false) {
            return offline("zigbee2mqtt reports the device unavailable".into());
        }
        if device.listed.is_none() && device.available.is_none() && !device.heard {
            return device.reported.clone();
        }
        let mut problems = Vec::new();
        if device.listed == Some(true) && !device.exposes.is_empty() {
            let model = device.model.as_deref().unwrap_or("its model");
            for point in &config.points {
                let property = point.property.get_ref();
                match device.exposes.get(property) {
                    None => problems.push(format!("{model} does not expose `{property}`")),
                    Some(expose) if point.writable && expose.access & ACCESS_SET == 0 => {
                        problems.push(format!("{model} cannot set `{property}`"));
                    }
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            Some((DeviceStatus::Online, None))
        } else {
            Some((DeviceStatus::Degraded, Some(problems.join("; "))))
        }
    }

    async fn update_all(&mut self) {
        for index in 0..self.devices.len() {
            self.update(index).await;
        }
    }

    /// Journals the device's status if it changed; offline turns its points stale.
    async fn update(&mut self, index: usize) {
        let Some(status) = self.status(index) else {
            return;
        };
        if self.devices[index].reported.as_ref() == Some(&status) {
            return;
        }
        let device = self.bridge.ids[index].clone();
        tracing::info!(bridge = %self.bridge.id, %device, status = ?status.0, reason = ?status.1,
            "zigbee device status");
        self.devices[index].reported = Some(status.clone());
        let (status, reason) = status;
        self.context
            .emit(EventBody::DeviceStatus {
                device,
                status,
                reason: reason.clone(),
            })
            .await;
        if status != DeviceStatus::Offline {
            return;
        }
        let bridge = self.bridge;
        let config = &bridge.devices[index];
        let stale = Quality::stale(format!("device offline: {}", reason.unwrap_or_default()));
        let observed_at = Timestamp::now();
        for (point_index, point) in config.points.iter().enumerate() {
            let Some((value, quality)) = self.devices[index].points[point_index].clone() else {
                continue;
            };
            if matches!(quality, Quality::Stale { .. }) {
                continue;
            }
            self.devices[index].points[point_index] = Some((value.clone(), stale.clone()));
            self.observe(
                index,
                point.id.get_ref().clone(),
                config.point_zone(point),
                value,
                stale.clone(),
                observed_at,
            )
            .await;
        }
    }

    /// Publishes a command's `/set`; it is done when zigbee2mqtt reports the state back.
    async fn command(&mut self, client: &AsyncClient, command: CommandEnvelope) {
        if command.expired() {
            return self.context.finish_command(command, expired()).await;
        }
        let failed = |reason: String| CommandOutcome::Failed { reason };
        let Some(index) = self.bridge.ids.iter().position(|id| id == &command.device) else {
            let reason = format!(
                "device `{}` is not on bridge `{}`",
                command.device, self.bridge.id
            );
            return self.context.finish_command(command, failed(reason)).await;
        };
        let bridge = self.bridge;
        let config = &bridge.devices[index];
        let Some(point) = config
            .points
            .iter()
            .find(|p| p.id.get_ref() == &command.request.point)
        else {
            let reason = format!(
                "device `{}` has no point `{}`",
                command.device, command.request.point
            );
            return self.context.finish_command(command, failed(reason)).await;
        };
        if !point.writable {
            let reason = format!("point `{}` is not writable", command.request.point);
            return self.context.finish_command(command, failed(reason)).await;
        }
        if let Some((DeviceStatus::Offline, reason)) = &self.devices[index].reported {
            let reason = format!("device offline: {}", reason.as_deref().unwrap_or("unknown"));
            return self.context.finish_command(command, failed(reason)).await;
        }
        let Some(name) = self.devices[index].friendly_name.clone() else {
            let reason = "zigbee2mqtt's device list has not named the device yet".to_owned();
            return self.context.finish_command(command, failed(reason)).await;
        };
        let property = point.property.get_ref().clone();
        let expose = self.devices[index].exposes.get(&property);
        let json = match messages::set_value(&property, &command.request.value, expose) {
            Ok(json) => json,
            Err(reason) => return self.context.finish_command(command, failed(reason)).await,
        };
        let payload = serde_json::json!({ property.as_str(): json }).to_string();
        let topic = format!("{}/{name}/set", self.bridge.base());
        if let Err(error) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
            let reason = format!("the MQTT client did not take the command: {error}");
            return self.context.finish_command(command, failed(reason)).await;
        }
        if !messages::is_reported_back(&property) {
            let reason = format!("sent; zigbee2mqtt does not report `{property}` back");
            return self
                .context
                .finish_command(command, CommandOutcome::Unconfirmed { reason })
                .await;
        }
        let deadline = (Instant::now()
            + Duration::from_millis(self.bridge.config.confirm_timeout_ms))
        .min(command.deadline);
        self.waiting.push(Waiting {
            device: index,
            property,
            expected: json,
            deadline,
            command,
        });
    }

    /// Finishes the commands whose new state a state message reports.
    async fn confirm(&mut self, index: usize, properties: &serde_json::Map<String, Json>) {
        if self.waiting.is_empty() {
            return;
        }
        let (done, waiting): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|waiting| {
                waiting.device == index
                    && properties.get(&waiting.property) == Some(&waiting.expected)
            });
        self.waiting = waiting;
        for waiting in done {
            self.context
                .finish_command(waiting.command, CommandOutcome::Done)
                .await;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|waiting| waiting.deadline).min()
    }

    async fn expire_commands(&mut self) {
        let now = Instant::now();
        let (late, waiting): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|waiting| waiting.deadline <= now);
        self.waiting = waiting;
        for waiting in late {
            let reason = format!(
                "sent, but zigbee2mqtt did not report `{}` = {} within {} ms",
                waiting.property, waiting.expected, self.bridge.config.confirm_timeout_ms
            );
            self.context
                .finish_command(waiting.command, CommandOutcome::Unconfirmed { reason })
                .await;
        }
    }
}

#[cfg(test)]
mod tests;

//! BACnet/IP: one adapter owning the agent's BACnet/IP port (one UDP socket), driving every
//! configured BACnet device, each in its own state machine so that a silent device never
//! delays the others (see [`link`] for how the socket is shared).
//!
//! ```text
//!            Who-Is (ranged to the instance) ──► I-Am: the device's address
//!  ┌─────────────┐ ──────────────────────────► ┌──────────────────────────────────────┐
//!  │ discovering │                              │ object-list read: configured objects │
//!  └─────────────┘ ◄── backoff+jitter ───┐      │ missing → degraded; SubscribeCOV     │
//!        ▲ no I-Am: offline, stale       │      └──────────────────────────────────────┘
//!        │                               │                     │
//!        │                     ┌─────────┴──────────────────────▼──────────────────────┐
//!        └──────────────────── │ serving: poll (ReadPropertyMultiple, else ReadProperty)│
//!          a request unanswered│ COV notifications, renewals at half the lifetime,      │
//!          after its retries   │ commands (WriteProperty at the point's priority)       │
//!                              └────────────────────────────────────────────────────────┘
//! ```
//!
//! - Reads: ReadPropertyMultiple of up to 16 objects a request.
//! - Health: offline when the device does not answer Who-Is or a request after its retries
//!   (its points turn stale); degraded when configured objects are missing from its
//!   object-list or a point reads as an error; online otherwise.
//! - A device that refuses ReadPropertyMultiple (Error, Reject, or Abort because the answer
//!   would need segments) is read with ReadProperty from then on, until rediscovered.
//! - Change of value: a point is journaled when its quality changes or its value moves by its
//!   deadband, from a poll or a COV notification alike. Polling continues under COV, as a
//!   check that the device is there and a catch-up for a lost notification.
//! - Commands: WriteProperty of present-value at the point's priority; the text
//!   `"relinquish"` writes Null there (relinquishes it). Done on SimpleACK; Failed with the
//!   error class and code, reject or abort reason; Unconfirmed when no answer came.
//! - With a BBMD configured, the agent registers as a foreign device and again at half the
//!   time-to-live; Who-Is goes through the BBMD (Distribute-Broadcast-To-Network).
//! - Devices behind BACnet routers (addressed by network number) are not supported.

pub mod config;
pub mod link;
pub mod mapping;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use gatehouse_bacnet::services::{
    CovNotification, CovSubscription, DeviceRange, PropertyReference, ReadAccessSpecification,
    ReadProperty, ReadPropertyMultiple, ReadResult, SubscribeCov, WhoIs, WriteProperty,
};
use gatehouse_bacnet::{
    AbortReason, Apdu, ApplicationValue, Bvlc, BvlcResultCode, ComplexAck, ConfirmedRequest,
    ObjectIdentifier, ObjectType, PropertyIdentifier, StatusFlags, UnconfirmedRequest,
    Value as BacnetValue,
};
use gatehouse_protocol::{CommandOutcome, DeviceId, DeviceStatus, EventBody, Quality, Value};
use jiff::Timestamp;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use self::config::{BacnetConfig, BacnetDeviceConfig};
use self::link::{Link, LinkError};
use self::mapping::{command_value, read_value, refusal, status_flags, status_quality};
use super::{Adapter, AdapterContext, Backoff, CommandEnvelope, changed, expired};
use crate::metrics::DeviceLabels;

/// Commands and COV notifications that may wait for one device.
const QUEUE_PER_DEVICE: usize = 16;

/// Objects read in one ReadPropertyMultiple: their present-values and status-flags fit in
/// the smallest APDU a B/IP device commonly takes (480 octets), so no answer needs segments.
const OBJECTS_PER_READ: usize = 16;

/// The agent's BACnet/IP port and the devices reached through it.
pub struct BacnetNetwork {
    config: BacnetConfig,
    ids: Vec<DeviceId>,
}

impl BacnetNetwork {
    pub fn new(config: BacnetConfig) -> Self {
        BacnetNetwork {
            ids: config
                .devices
                .iter()
                .map(|device| device.id.get_ref().clone())
                .collect(),
            config,
        }
    }

    fn address(text: &str) -> Result<SocketAddr, String> {
        text.parse()
            .map_err(|error| format!("`{text}` is not an address: {error}"))
    }

    async fn run_network(&self, context: &AdapterContext) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.rediscover_initial_ms),
            Duration::from_millis(self.config.rediscover_max_ms),
        );
        loop {
            let reason = match self.bind().await {
                Ok(socket) => {
                    backoff.reset();
                    match self.serve(socket, context).await {
                        Some(reason) => reason,
                        None => return,
                    }
                }
                Err(reason) => reason,
            };
            for id in &self.ids {
                report_offline(context, id, &reason).await;
            }
            let delay = backoff.next_delay();
            tracing::error!(bind = %self.config.bind.get_ref(), %reason,
                retry_in_ms = delay.as_millis() as u64, "BACnet/IP port unusable");
            if !context.wait_offline(delay, &reason).await {
                return;
            }
        }
    }

    async fn bind(&self) -> Result<UdpSocket, String> {
        let bind = Self::address(self.config.bind.get_ref())?;
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|error| format!("cannot bind BACnet/IP port {bind}: {error}"))?;
        socket
            .set_broadcast(true)
            .map_err(|error| format!("cannot broadcast from {bind}: {error}"))?;
        Ok(socket)
    }

    /// Serves the devices on `socket` until it fails (its reason) or the agent stops (None).
    async fn serve(&self, socket: UdpSocket, context: &AdapterContext) -> Option<String> {
        let bbmd = match self
            .config
            .bbmd
            .as_ref()
            .map(|b| Self::address(b.get_ref()))
        {
            Some(Ok(bbmd)) => Some(bbmd),
            Some(Err(reason)) => return Some(reason),
            None => None,
        };
        let broadcast = match Self::address(self.config.broadcast.get_ref()) {
            Ok(broadcast) => broadcast,
            Err(reason) => return Some(reason),
        };
        let mut notifications = HashMap::new();
        let mut commands = HashMap::new();
        let mut devices = Vec::new();
        for device in &self.config.devices {
            let (notify, notified) = mpsc::channel(QUEUE_PER_DEVICE);
            let (command, commanded) = mpsc::channel(QUEUE_PER_DEVICE);
            notifications.insert(*device.device_instance.get_ref(), notify);
            commands.insert(device.id.get_ref().clone(), command);
            devices.push((device, commanded, notified));
        }
        let (link, results) = Link::new(
            socket,
            Duration::from_millis(self.config.timeout_ms),
            self.config.retries,
            notifications,
            bbmd,
            context.metrics.clone(),
        );
        tracing::info!(local = ?link.local_addr(), devices = devices.len(), "BACnet/IP port open");
        let link = &link;
        let runners = devices
            .into_iter()
            .map(|(device, commands, notifications)| {
                let mut runner = Runner::new(self, device, link, context, broadcast);
                async move { runner.run(commands, notifications).await }
            });
        let registration = async {
            match bbmd {
                Some(bbmd) => register(link, bbmd, self.config.bbmd_ttl_s, results).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = context.shutdown.cancelled() => None,
            error = link.receive() => Some(format!("the BACnet/IP socket failed: {error}")),
            () = route_commands(context, &commands) => None,
            _ = join_all(runners) => None,
            () = registration => None,
        }
    }
}

impl Adapter for BacnetNetwork {
    fn name(&self) -> &str {
        "bacnet"
    }

    fn devices(&self) -> &[DeviceId] {
        &self.ids
    }

    fn run<'a>(&'a self, context: &'a AdapterContext) -> BoxFuture<'a, ()> {
        Box::pin(self.run_network(context))
    }
}

/// Hands each command to its device's queue; a full queue refuses it as busy.
async fn route_commands(
    context: &AdapterContext,
    devices: &HashMap<DeviceId, mpsc::Sender<CommandEnvelope>>,
) {
    let mut commands = context.commands.lock().await;
    while let Some(command) = commands.recv().await {
        let refused = match devices.get(&command.device) {
            Some(device) => match device.try_send(command) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(command)) => {
                    (command, "busy with earlier commands; try again")
                }
                Err(mpsc::error::TrySendError::Closed(command)) => (command, "stopped"),
            },
            None => (command, "not a BACnet device of this agent"),
        };
        let (command, reason) = refused;
        let reason = format!("device `{}`: {reason}", command.device);
        context
            .finish_command(command, CommandOutcome::Failed { reason })
            .await;
    }
}

/// Foreign-device registration with the BBMD, renewed at half the time-to-live.
async fn register(
    link: &Link,
    bbmd: SocketAddr,
    ttl: u16,
    mut results: mpsc::Receiver<BvlcResultCode>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let request = Bvlc::RegisterForeignDevice {
            time_to_live_seconds: ttl,
        };
        let problem = match link.send(&request, bbmd).await {
            Err(error) => Some(error.to_string()),
            Ok(()) => match tokio::time::timeout(link.timeout(), results.recv()).await {
                Ok(Some(BvlcResultCode::SUCCESSFUL_COMPLETION)) => None,
                Ok(Some(code)) => Some(format!("the BBMD answered {code}")),
                Ok(None) => return,
                Err(_) => Some(format!(
                    "no answer within {} ms",
                    link.timeout().as_millis()
                )),
            },
        };
        let delay = match &problem {
            None => {
                backoff.reset();
                tracing::debug!(%bbmd, ttl, "registered as a foreign device");
                Duration::from_secs(u64::from(ttl) / 2)
            }
            Some(problem) => {
                let delay = backoff.next_delay();
                tracing::warn!(%bbmd, %problem, retry_in_ms = delay.as_millis() as u64,
                    "foreign-device registration failed");
                delay
            }
        };
        link.set_registration_problem(problem);
        tokio::time::sleep(delay).await;
    }
}

/// Journals a device offline (used when the port itself fails; points are left to the
/// device's runner, which marks them stale when it runs again).
async fn report_offline(context: &AdapterContext, device: &DeviceId, reason: &str) {
    let current = context.live.device(device);
    if current.is_some_and(|state| {
        state.status == DeviceStatus::Offline && state.reason.as_deref() == Some(reason)
    }) {
        return;
    }
    context
        .emit(EventBody::DeviceStatus {
            device: device.clone(),
            status: DeviceStatus::Offline,
            reason: Some(reason.to_owned()),
        })
        .await;
}

/// What was last journaled of a point.
type Reported = Option<(Option<Value>, Quality)>;

/// A point's reading: its value (if any) and quality, and a problem that degrades the device.
struct Reading {
    value: Option<Value>,
    quality: Quality,
    problem: Option<String>,
}

impl Reading {
    fn error(object: &str, reason: String) -> Reading {
        Reading {
            value: None,
            quality: Quality::bad(reason.clone()),
            problem: Some(format!("{object}: {reason}")),
        }
    }
}

/// One device's state machine.
struct Runner<'a> {
    network: &'a BacnetNetwork,
    config: &'a BacnetDeviceConfig,
    id: DeviceId,
    link: &'a Link,
    context: &'a AdapterContext,
    broadcast: SocketAddr,
    objects: Vec<Option<ObjectIdentifier>>,
    reported_status: Option<(DeviceStatus, Option<String>)>,
    reported: Vec<Reported>,
    /// Whether each point's object is in the device's object-list (all true until read).
    present: Vec<bool>,
    /// Why the object-list could not be read, if it could not.
    object_list_problem: Option<String>,
    /// Each point's last read problem.
    problems: Vec<Option<String>>,
    /// ReadPropertyMultiple works (until refused).
    multiple: bool,
}

impl<'a> Runner<'a> {
    fn new(
        network: &'a BacnetNetwork,
        config: &'a BacnetDeviceConfig,
        link: &'a Link,
        context: &'a AdapterContext,
        broadcast: SocketAddr,
    ) -> Self {
        let id = config.id.get_ref().clone();
        Runner {
            network,
            config,
            link,
            context,
            broadcast,
            objects: config
                .points
                .iter()
                .map(|point| point.object_identifier())
                .collect(),
            reported_status: context
                .live
                .device(&id)
                .map(|state| (state.status, state.reason)),
            reported: context.last_recorded(config.points.iter().map(|point| point.id.get_ref())),
            present: vec![true; config.points.len()],
            object_list_problem: None,
            problems: vec![None; config.points.len()],
            multiple: true,
            id,
        }
    }

    fn instance(&self) -> u32 {
        *self.config.device_instance.get_ref()
    }

    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<CommandEnvelope>,
        mut notifications: mpsc::Receiver<(CovNotification, SocketAddr)>,
    ) {
        let network = &self.network.config;
        let mut backoff = Backoff::new(
            Duration::from_millis(network.rediscover_initial_ms),
            Duration::from_millis(network.rediscover_max_ms),
        );
        loop {
            let reason = match self.discover().await {
                Ok(address) => {
                    backoff.reset();
                    match self.serve(address, &mut commands, &mut notifications).await {
                        Some(reason) => reason,
                        None => return,
                    }
                }
                Err(reason) => reason,
            };
            self.set_status(DeviceStatus::Offline, Some(reason.clone()))
                .await;
            let delay = backoff.next_delay();
            tracing::warn!(device = %self.id, %reason, retry_in_ms = delay.as_millis() as u64,
                "BACnet device unreachable");
            self.context
                .metrics
                .bacnet_rediscoveries
                .get_or_create(&DeviceLabels {
                    device: self.id.to_string(),
                })
                .inc();
            if !self
                .wait_offline(delay, &reason, &mut commands, &mut notifications)
                .await
            {
                return;
            }
        }
    }

    /// Sleeps out `delay`, refusing commands; false on shutdown.
    async fn wait_offline(
        &self,
        delay: Duration,
        reason: &str,
        commands: &mut mpsc::Receiver<CommandEnvelope>,
        notifications: &mut mpsc::Receiver<(CovNotification, SocketAddr)>,
    ) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                () = self.context.shutdown.cancelled() => return false,
                // Notifications of an unreachable device are late news: dropped.
                Some(_) = notifications.recv() => {}
                Some(command) = commands.recv() => {
                    let outcome = if command.expired() {
                        expired()
                    } else {
                        CommandOutcome::Failed { reason: format!("device offline: {reason}") }
                    };
                    self.context.finish_command(command, outcome).await;
                }
            }
        }
    }

    /// Who-Is, ranged to the device's instance; its address from the I-Am.
    async fn discover(&self) -> Result<SocketAddr, String> {
        let instance = self.instance();
        let configured = self.config.socket_address();
        let mut i_ams = self.link.i_ams();
        let who_is = UnconfirmedRequest::WhoIs(WhoIs {
            range: Some(DeviceRange {
                low: instance,
                high: instance,
            }),
        });
        let attempts = self.network.config.retries + 1;
        for _ in 0..attempts {
            self.link
                .send_unconfirmed(who_is.clone(), configured, self.broadcast)
                .await
                .map_err(|error| error.to_string())?;
            let deadline = Instant::now() + self.link.timeout();
            loop {
                match tokio::time::timeout_at(deadline, i_ams.recv()).await {
                    Err(_) => break,
                    Ok(Ok((i_am, from)))
                        if i_am.device == ObjectIdentifier::new(ObjectType::DEVICE, instance) =>
                    {
                        if self.reported_status.as_ref().map(|s| s.0) != Some(DeviceStatus::Online)
                        {
                            tracing::info!(device = %self.id, instance, %from, "BACnet device found");
                        }
                        return Ok(from);
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                        return Err("the BACnet/IP port closed".into());
                    }
                    // Another device's I-Am, or some were missed (lagged): keep listening.
                    Ok(_) => {}
                }
            }
        }
        let to = match (configured, self.network.config.bbmd.as_ref()) {
            (Some(address), _) => address.to_string(),
            (None, Some(bbmd)) => format!("the BBMD at {}", bbmd.get_ref()),
            (None, None) => self.broadcast.to_string(),
        };
        let mut reason = format!(
            "no I-Am from device {instance} to {attempts} Who-Is sent to {to}, {} ms apart",
            self.link.timeout().as_millis()
        );
        if let Some(problem) = self.link.registration_problem() {
            reason.push_str(&format!("; foreign-device registration: {problem}"));
        }
        Err(reason)
    }

    /// Serves the device found at `address` until it goes silent (the reason) or the agent
    /// stops (None).
    async fn serve(
        &mut self,
        address: SocketAddr,
        commands: &mut mpsc::Receiver<CommandEnvelope>,
        notifications: &mut mpsc::Receiver<(CovNotification, SocketAddr)>,
    ) -> Option<String> {
        self.multiple = true;
        if let Err(error) = self.check_objects(address).await {
            return Some(error.to_string());
        }
        if let Err(error) = self.subscribe(address).await {
            return Some(error.to_string());
        }
        let mut poll = tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms));
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let renew_every = Duration::from_secs(u64::from(self.config.cov_lifetime_s) / 2);
        let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let outcome = tokio::select! {
                () = self.context.shutdown.cancelled() => return None,
                _ = poll.tick() => self.poll(address).await,
                _ = renew.tick(), if self.config.cov => self.subscribe(address).await,
                Some(command) = commands.recv() => self.command(address, command).await,
                Some((notification, source)) = notifications.recv() => {
                    // A notification names its device by instance, which anyone can write:
                    // only the device's own address is believed.
                    if source == address {
                        self.on_notification(&notification).await;
                    } else {
                        self.link.rejected(source, "a COV notification from another address than its device's");
                    }
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                return Some(error.to_string());
            }
        }
    }

    async fn request(
        &self,
        address: SocketAddr,
        request: ConfirmedRequest,
    ) -> Result<Apdu, LinkError> {
        self.link.request(self.id.as_str(), address, request).await
    }

    /// Reads the device's object-list and marks the points whose object is not in it.
    async fn check_objects(&mut self, address: SocketAddr) -> Result<(), LinkError> {
        let device = ObjectIdentifier::new(ObjectType::DEVICE, self.instance());
        let read = |array_index| {
            ConfirmedRequest::ReadProperty(ReadProperty {
                object: device,
                property: PropertyIdentifier::OBJECT_LIST,
                array_index,
            })
        };
        let whole = self.request(address, read(None)).await?;
        let list = match ack_values(&whole) {
            Some(values) => Ok(object_identifiers(values)),
            None if is_too_long(&whole) => {
                // Too long for one unsegmented answer: element by element.
                let count = self.request(address, read(Some(0))).await?;
                match ack_values(&count).and_then(|values| match values {
                    [BacnetValue::Application(ApplicationValue::Unsigned(n))] => Some(*n),
                    _ => None,
                }) {
                    Some(count) => {
                        let mut objects = Vec::new();
                        for index in 1..=count.min(u64::from(u32::MAX)) as u32 {
                            let element = self.request(address, read(Some(index))).await?;
                            match ack_values(&element) {
                                Some(values) => objects.extend(object_identifiers(values)),
                                None => {
                                    return self.objects_unknown(refusal(&element)).await;
                                }
                            }
                        }
                        Ok(objects)
                    }
                    None => Err(refusal(&count)),
                }
            }
            None => Err(refusal(&whole)),
        };
        match list {
            Ok(list) => {
                self.object_list_problem = None;
                for (present, object) in self.present.iter_mut().zip(&self.objects) {
                    *present = object.is_some_and(|object| list.contains(&object));
                }
                for index in 0..self.present.len() {
                    if !self.present[index] {
                        let reading = Reading::error(
                            self.object_name(index),
                            "not in the device's object-list".into(),
                        );
                        self.observe(index, reading, Timestamp::now()).await;
                    }
                }
                self.update_status().await;
                Ok(())
            }
            Err(reason) => self.objects_unknown(reason).await,
        }
    }

    async fn objects_unknown(&mut self, reason: String) -> Result<(), LinkError> {
        self.object_list_problem = Some(format!("cannot read the object-list: {reason}"));
        self.present.fill(true);
        self.update_status().await;
        Ok(())
    }

    fn object_name(&self, index: usize) -> &'a str {
        self.config.points[index].object.get_ref()
    }

    /// SubscribeCOV for every present point (when `cov`); a refusal leaves it to polling.
    async fn subscribe(&mut self, address: SocketAddr) -> Result<(), LinkError> {
        if !self.config.cov {
            return Ok(());
        }
        for index in 0..self.objects.len() {
            let (Some(object), true) = (self.objects[index], self.present[index]) else {
                continue;
            };
            let request = ConfirmedRequest::SubscribeCov(SubscribeCov {
                subscriber_process_id: index as u32 + 1,
                object,
                subscription: Some(CovSubscription {
                    confirmed: self.config.cov_confirmed,
                    lifetime_seconds: Some(self.config.cov_lifetime_s),
                }),
            });
            let answer = self.request(address, request).await?;
            if !matches!(answer, Apdu::SimpleAck { .. }) {
                tracing::info!(device = %self.id, object = self.object_name(index),
                    reason = refusal(&answer), "COV subscription refused; polled only");
            }
        }
        Ok(())
    }

    /// Reads every present point once and reports what changed. Err: the device is silent.
    async fn poll(&mut self, address: SocketAddr) -> Result<(), LinkError> {
        let indices: Vec<usize> = (0..self.objects.len())
            .filter(|&index| self.present[index] && self.objects[index].is_some())
            .collect();
        let observed_at = Timestamp::now();
        let mut readings = Vec::new();
        if self.multiple {
            for chunk in indices.chunks(OBJECTS_PER_READ) {
                match self.read_multiple(address, chunk).await? {
                    Some(read) => readings.extend(read),
                    // Refused: `multiple` is now false.
                    None => break,
                }
            }
        }
        if !self.multiple {
            readings.clear();
            for &index in &indices {
                readings.push((index, self.read_one(address, index).await?));
            }
        }
        for (index, reading) in readings {
            self.observe(index, reading, observed_at).await;
        }
        self.update_status().await;
        Ok(())
    }

    /// ReadPropertyMultiple of present-value and status-flags; None when the device refuses
    /// it (from then on ReadProperty is used).
    async fn read_multiple(
        &mut self,
        address: SocketAddr,
        indices: &[usize],
    ) -> Result<Option<Vec<(usize, Reading)>>, LinkError> {
        let specifications = indices
            .iter()
            .filter_map(|&index| self.objects[index])
            .map(|object| ReadAccessSpecification {
                object,
                properties: vec![
                    PropertyReference::new(PropertyIdentifier::PRESENT_VALUE),
                    PropertyReference::new(PropertyIdentifier::STATUS_FLAGS),
                ],
            })
            .collect();
        let request =
            ConfirmedRequest::ReadPropertyMultiple(ReadPropertyMultiple { specifications });
        let answer = self.request(address, request).await?;
        let Apdu::ComplexAck {
            ack: ComplexAck::ReadPropertyMultiple(ack),
            ..
        } = answer
        else {
            tracing::info!(device = %self.id, reason = refusal(&answer),
                "ReadPropertyMultiple refused; reading with ReadProperty");
            self.multiple = false;
            return Ok(None);
        };
        let readings = indices
            .iter()
            .map(|&index| {
                let object = self.objects[index];
                let result = ack.results.iter().find(|r| Some(r.object) == object);
                let property =
                    |wanted| result.and_then(|r| r.results.iter().find(|p| p.property == wanted));
                let present_value = match property(PropertyIdentifier::PRESENT_VALUE) {
                    Some(found) => match &found.result {
                        ReadResult::Value(values) => Ok(values.as_slice()),
                        ReadResult::Error(error) => Err(format!("BACnet error {error}")),
                    },
                    None => Err("present-value missing from the answer".to_owned()),
                };
                let flags =
                    property(PropertyIdentifier::STATUS_FLAGS).and_then(|found| {
                        match &found.result {
                            ReadResult::Value(values) => status_flags(values),
                            ReadResult::Error(_) => None,
                        }
                    });
                (index, self.reading(index, present_value, flags))
            })
            .collect();
        Ok(Some(readings))
    }

    /// ReadProperty of present-value, then of status-flags.
    async fn read_one(&self, address: SocketAddr, index: usize) -> Result<Reading, LinkError> {
        let Some(object) = self.objects[index] else {
            return Ok(Reading::error(
                self.object_name(index),
                "not an object".into(),
            ));
        };
        let read = |property| {
            ConfirmedRequest::ReadProperty(ReadProperty {
                object,
                property,
                array_index: None,
            })
        };
        let value = self
            .request(address, read(PropertyIdentifier::PRESENT_VALUE))
            .await?;
        let present_value = ack_values(&value).ok_or_else(|| refusal(&value));
        if present_value.is_err() {
            return Ok(self.reading(index, present_value, None));
        }
        let flags = self
            .request(address, read(PropertyIdentifier::STATUS_FLAGS))
            .await?;
        let flags = ack_values(&flags).and_then(status_flags);
        Ok(self.reading(index, present_value, flags))
    }

    fn reading(
        &self,
        index: usize,
        present_value: Result<&[BacnetValue], String>,
        flags: Option<StatusFlags>,
    ) -> Reading {
        let point_type = self.config.points[index].point_type();
        match present_value.and_then(|values| read_value(point_type, values)) {
            Ok(value) => Reading {
                value: Some(value),
                quality: status_quality(flags),
                problem: None,
            },
            Err(reason) => Reading::error(self.object_name(index), reason),
        }
    }

    async fn on_notification(&mut self, notification: &CovNotification) {
        let observed_at = Timestamp::now();
        let present_value = notification.value_of(PropertyIdentifier::PRESENT_VALUE);
        let flags = notification
            .value_of(PropertyIdentifier::STATUS_FLAGS)
            .and_then(status_flags);
        let Some(values) = present_value else {
            return;
        };
        for index in 0..self.objects.len() {
            if self.objects[index] == Some(notification.monitored_object) && self.present[index] {
                let reading = self.reading(index, Ok(values), flags);
                self.observe(index, reading, observed_at).await;
            }
        }
        self.update_status().await;
    }

    /// Journals a point's reading if it changed.
    async fn observe(&mut self, index: usize, reading: Reading, observed_at: Timestamp) {
        self.problems[index] = reading.problem;
        let point = &self.config.points[index];
        if !changed(
            point.deadband,
            self.reported[index].as_ref(),
            reading.value.as_ref(),
            &reading.quality,
        ) {
            return;
        }
        self.reported[index] = Some((reading.value.clone(), reading.quality.clone()));
        self.context
            .emit(EventBody::Observation {
                device: self.id.clone(),
                point: point.id.get_ref().clone(),
                zone: self.config.point_zone(point),
                value: reading.value,
                quality: reading.quality,
                observed_at,
            })
            .await;
    }

    /// Online, or degraded with every problem found.
    async fn update_status(&mut self) {
        let problems: Vec<String> = self
            .object_list_problem
            .iter()
            .cloned()
            .chain(self.problems.iter().flatten().cloned())
            .collect();
        if problems.is_empty() {
            self.set_status(DeviceStatus::Online, None).await;
        } else {
            self.set_status(DeviceStatus::Degraded, Some(problems.join("; ")))
                .await;
        }
    }

    /// Journals the status if it changed; offline turns the points stale.
    async fn set_status(&mut self, status: DeviceStatus, reason: Option<String>) {
        let new = (status, reason.clone());
        if self.reported_status.as_ref() == Some(&new) {
            return;
        }
        tracing::info!(device = %self.id, ?status, ?reason, "BACnet device status");
        self.reported_status = Some(new);
        self.context
            .emit(EventBody::DeviceStatus {
                device: self.id.clone(),
                status,
                reason: reason.clone(),
            })
            .await;
        if status != DeviceStatus::Offline {
            return;
        }
        let stale = Quality::stale(format!("device offline: {}", reason.unwrap_or_default()));
        let observed_at = Timestamp::now();
        for index in 0..self.reported.len() {
            let Some((value, quality)) = self.reported[index].clone() else {
                continue;
            };
            if matches!(quality, Quality::Stale { .. }) {
                continue;
            }
            let reading = Reading {
                value,
                quality: stale.clone(),
                problem: None,
            };
            self.observe(index, reading, observed_at).await;
        }
    }

    /// WriteProperty of present-value at the point's priority. Err: the device is silent.
    async fn command(
        &mut self,
        address: SocketAddr,
        command: CommandEnvelope,
    ) -> Result<(), LinkError> {
        if command.expired() {
            self.context.finish_command(command, expired()).await;
            return Ok(());
        }
        let failed = |reason: String| CommandOutcome::Failed { reason };
        let found = self
            .config
            .points
            .iter()
            .position(|p| p.id.get_ref() == &command.request.point);
        let write = match found {
            None => Err(format!(
                "device `{}` has no point `{}`",
                command.device, command.request.point
            )),
            Some(index) if !self.config.points[index].writable => {
                Err(format!("point `{}` is not writable", command.request.point))
            }
            Some(index) => match self.objects[index] {
                None => Err("the point's object is not valid".to_owned()),
                Some(object) => {
                    command_value(object.object_type, &command.request.value).map(|value| {
                        let priority = self.config.points[index].priority;
                        (index, WriteProperty::present_value(object, value, priority))
                    })
                }
            },
        };
        let (index, write) = match write {
            Ok(write) => write,
            Err(reason) => {
                self.context.finish_command(command, failed(reason)).await;
                return Ok(());
            }
        };
        let answer = self
            .request(address, ConfirmedRequest::WriteProperty(write))
            .await;
        let (outcome, silent) = match answer {
            Ok(Apdu::SimpleAck { .. }) => (CommandOutcome::Done, None),
            Ok(other) => (failed(refusal(&other)), None),
            Err(error @ LinkError::Timeout { .. }) => (
                CommandOutcome::Unconfirmed {
                    reason: format!("WriteProperty sent, {error}"),
                },
                Some(error),
            ),
            Err(error) => (failed(error.to_string()), None),
        };
        self.context.finish_command(command, outcome).await;
        if let Some(error) = silent {
            return Err(error);
        }
        // Show what the write did without waiting for the next poll.
        let reading = self.read_one(address, index).await?;
        self.observe(index, reading, Timestamp::now()).await;
        self.update_status().await;
        Ok(())
    }
}

/// The values of a ReadProperty-ACK.
fn ack_values(apdu: &Apdu) -> Option<&[BacnetValue]> {
    match apdu {
        Apdu::ComplexAck {
            ack: ComplexAck::ReadProperty(ack),
            ..
        } => Some(ack.value.as_slice()),
        _ => None,
    }
}

/// Whether the device refused an answer for its length (it would need segments).
fn is_too_long(apdu: &Apdu) -> bool {
    matches!(
        apdu,
        Apdu::Abort {
            reason: AbortReason::SEGMENTATION_NOT_SUPPORTED | AbortReason::BUFFER_OVERFLOW,
            ..
        }
    )
}

fn object_identifiers(values: &[BacnetValue]) -> Vec<ObjectIdentifier> {
    values
        .iter()
        .filter_map(|value| match value {
            BacnetValue::Application(ApplicationValue::ObjectIdentifier(object)) => Some(*object),
            _ => None,
        })
        .collect()
}

/// The BACpypes3 device the codec's interop tests start, started the same way here.
#[cfg(test)]
#[path = "../../../../bacnet/tests/support/peer.rs"]
mod peer;
#[cfg(test)]
mod tests;

//! The MQTT session that drains the outbox to the relay, and carries the relay's
//! acknowledgements and commands back. The decisions are in [`Sender`]; this is the I/O.
//!
//! - Records go out on `gatehouse/v1/{appliance}/up/records` in batches, QoS 1, up to a
//!   window of unacknowledged records; after any reconnection everything unacknowledged is
//!   sent again (the relay stores by (appliance, seq), so repeats are harmless).
//! - `down/ack` moves the outbox forward through the journal writer; only then does the
//!   [`Sender`] count the records as held.
//! - `down/commands` carries HQ's incident acknowledgements and resolutions into the journal.
//! - `up/status` is published retained on connect and every 30 s; the last will marks the
//!   appliance offline when the connection drops without a goodbye.
//! - The MQTT session is persistent ([`SESSION_EXPIRY_SECS`]): while the appliance is away,
//!   the broker keeps its subscriptions and queues what HQ sends it.
//!
//! # What a last will says
//! The broker receives the will in CONNECT and publishes it when that connection dies, maybe
//! days later; it cannot be updated in between. So the will is made afresh before every
//! connection attempt and describes that moment: `at_us` is when the connection that carries
//! it was made (not when it fires: the relay stamps statuses with its own clock), and the
//! outbox figures are the outbox's then.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_protocol::wire::topics::{Channel, topic};
use gatehouse_protocol::wire::{self, pb};
use gatehouse_protocol::{ApplianceId, Transition};
use gatehouse_transport::TlsIdentity;
use jiff::Timestamp;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::UplinkConfig;
use super::outbox;
use super::sender::Sender;
use crate::adapters::Backoff;
use crate::journal::{IncidentAction, JournalError, JournalHandle, Reader};
use crate::live::Live;
use crate::metrics::Metrics;

/// Records per MQTT message.
const BATCH_RECORDS: u64 = 500;
/// Records sent but not yet acknowledged, at most.
const WINDOW_RECORDS: u64 = 5_000;
const STATUS_EVERY: Duration = Duration::from_secs(30);
/// Records in flight without any acknowledgement for this long are sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the broker keeps this appliance's MQTT session after its connection drops (7
/// days): its subscriptions, and the QoS 1 messages for it that arrive meanwhile (HQ's
/// incident acknowledgements and resolutions). In MQTT v5 a CONNECT without this property
/// means 0, and the broker would forget the session, and drop every command sent to an
/// offline appliance, the moment the connection ends. A week covers a long outage; past it,
/// HQ's actions are stale, and nothing else is lost: the outbox resends whatever the relay
/// did not acknowledge, whatever became of its acks.
const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// Why the uplink could not start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink identity: {0}")]
    Identity(#[from] gatehouse_transport::TransportError),
    #[error("uplink.broker `{0}` must be host:port")]
    Broker(String),
}

/// Everything the session needs.
pub struct Uplink {
    appliance: ApplianceId,
    options: MqttOptions,
    journal: JournalHandle,
    reader: Reader,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
}

impl Uplink {
    pub fn new(
        config: &UplinkConfig,
        journal: JournalHandle,
        reader: Reader,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UplinkError> {
        let identity =
            TlsIdentity::from_files(&config.ca_file, &config.cert_file, &config.key_file)?;
        let (host, port) = config
            .broker
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| UplinkError::Broker(config.broker.clone()))?;
        let appliance = config.appliance_id.clone();
        let mut options = identity.mqtt_options(appliance.as_str(), host, port)?;
        persistent_session(&mut options);
        Ok(Uplink {
            appliance,
            options,
            journal,
            reader,
            live,
            metrics,
        })
    }

    /// Runs until shutdown; connection failures are retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), 64);
        let (events, mut incoming) = mpsc::channel::<Result<Event, ConnectionError>>(256);
        let (appliance, reader) = (self.appliance.clone(), self.reader.clone());
        let will = move || {
            let (appliance, reader) = (appliance.clone(), reader.clone());
            async move {
                let state = reader.run(outbox::state).await.unwrap_or_else(|error| {
                    tracing::warn!(%error, "uplink cannot read the outbox state for its last will");
                    outbox::OutboxState::default()
                });
                last_will(&appliance, state, Timestamp::now())
            }
        };
        tokio::spawn(drive(eventloop, events, shutdown.clone(), will));

        let acked = match self.reader.run(outbox::state).await {
            Ok(state) => state.acked,
            Err(error) => {
                tracing::error!(%error, "uplink cannot read the outbox; not starting");
                return;
            }
        };
        let mut sender = Sender::new(acked, WINDOW_RECORDS);
        let mut wake = self.live.subscribe();
        let mut status = tokio::time::interval(STATUS_EVERY);
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        let mut last_progress = (sender.acked(), tokio::time::Instant::now());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.say_goodbye(&client).await;
                    return;
                }
                Some(event) = incoming.recv() => self.on_event(&client, &mut sender, event).await,
                _ = wake.recv() => {}
                _ = poll.tick() => {}
                _ = status.tick() => if sender.is_connected() {
                    self.publish_status(&client).await;
                },
            }
            if sender.acked() != last_progress.0 || sender.in_flight() == 0 {
                last_progress = (sender.acked(), tokio::time::Instant::now());
            } else if last_progress.1.elapsed() > ACK_TIMEOUT {
                tracing::warn!(
                    in_flight = sender.in_flight(),
                    "no acknowledgement from the relay; sending again"
                );
                sender.rewind();
                last_progress.1 = tokio::time::Instant::now();
            }
            if let Err(error) = self.send_more(&client, &mut sender).await {
                tracing::error!(%error, "uplink cannot read the outbox");
            }
        }
    }

    async fn on_event(
        &self,
        client: &AsyncClient,
        sender: &mut Sender,
        event: Result<Event, ConnectionError>,
    ) {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(appliance = %self.appliance, "uplink connected");
                sender.on_connect();
                for channel in [Channel::DownAck, Channel::DownCommands] {
                    let subscribed = client
                        .subscribe(topic(&self.appliance, channel), QoS::AtLeastOnce)
                        .await;
                    if let Err(error) = subscribed {
                        tracing::warn!(%error, "uplink could not subscribe");
                    }
                }
                self.publish_status(client).await;
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                self.on_message(sender, &topic, &publish.payload).await;
            }
            Ok(Event::Incoming(Packet::Disconnect(_))) => sender.on_disconnect(),
            Ok(_) => {}
            Err(error) => {
                if sender.is_connected() {
                    tracing::warn!(%error, "uplink connection lost; reconnecting");
                } else {
                    tracing::debug!(%error, "uplink still cannot connect");
                }
                self.metrics.uplink_disconnects.inc();
                sender.on_disconnect();
            }
        }
    }

    async fn on_message(&self, sender: &mut Sender, topic: &str, payload: &[u8]) {
        let body = match wire::decode(payload) {
            Ok(body) => body,
            Err(error) => {
                self.metrics.uplink_rejected.inc();
                tracing::warn!(%error, topic, "uplink refused a message from the relay");
                return;
            }
        };
        match body {
            pb::envelope::Body::Ack(ack) => match self.journal.outbox_ack(ack.up_to_seq).await {
                Ok(_) => {
                    sender.on_ack(ack.up_to_seq);
                }
                Err(error) => tracing::error!(%error, "outbox acknowledgement failed"),
            },
            pb::envelope::Body::Command(command) => self.on_command(command).await,
            other => {
                self.metrics.uplink_rejected.inc();
                tracing::warn!(topic, ?other, "uplink ignored an unexpected message");
            }
        }
    }

    /// HQ acknowledges or resolves an incident: the journal records it like a local action.
    async fn on_command(&self, command: pb::Command) {
        let Some(pb::command::Action::Incident(action)) = command.action else {
            self.metrics.uplink_rejected.inc();
            tracing::warn!(command = command.command_id, "command without an action");
            return;
        };
        let step = match pb::incident_action::Step::try_from(action.step) {
            Ok(pb::incident_action::Step::Acknowledge) => IncidentAction::Acknowledge,
            Ok(pb::incident_action::Step::Resolve) => IncidentAction::Resolve,
            _ => {
                self.metrics.uplink_rejected.inc();
                tracing::warn!(
                    command = command.command_id,
                    step = action.step,
                    "unknown incident step"
                );
                return;
            }
        };
        let transition = Transition {
            by: format!("hq:{}", action.by),
            at: jiff::Timestamp::now(),
            comment: action.comment,
        };
        match self
            .journal
            .change_incident(action.incident_id, step, transition)
            .await
        {
            Ok(incident) => tracing::info!(
                incident = incident.id,
                command = command.command_id,
                state = incident.state.as_str(),
                "HQ changed an incident"
            ),
            // Already done (here or by an earlier delivery of the same command): nothing to do.
            Err(error) => {
                tracing::info!(%error, command = command.command_id, "HQ command not applied")
            }
        }
    }

    /// Publishes outbox records while the window allows.
    async fn send_more(
        &self,
        client: &AsyncClient,
        sender: &mut Sender,
    ) -> Result<(), JournalError> {
        while let Some((next, room)) = sender.wants() {
            let limit = room.min(BATCH_RECORDS) as usize;
            let records = self
                .reader
                .run(move |connection| outbox::read_records(connection, next, limit))
                .await?;
            let Some(last) = records.last().map(|record| record.seq) else {
                return Ok(());
            };
            let count = records.len() as u64;
            let payload = wire::encode(pb::envelope::Body::Batch(pb::Batch { records }));
            let published = client
                .publish(
                    topic(&self.appliance, Channel::UpRecords),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await;
            if let Err(error) = published {
                tracing::warn!(%error, "uplink could not queue a batch");
                return Ok(());
            }
            self.metrics.uplink_records_sent.inc_by(count);
            sender.on_sent(last);
        }
        Ok(())
    }

    async fn publish_status(&self, client: &AsyncClient) {
        let state = match self.reader.run(outbox::state).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, "uplink cannot read the outbox state");
                return;
            }
        };
        let payload = status_payload(true, state, Timestamp::now());
        let topic = topic(&self.appliance, Channel::UpStatus);
        if let Err(error) = client.publish(topic, QoS::AtLeastOnce, true, payload).await {
            tracing::warn!(%error, "uplink could not publish its status");
        }
    }

    /// A clean goodbye: offline status (retained), then disconnect.
    async fn say_goodbye(&self, client: &AsyncClient) {
        let state = self.reader.run(outbox::state).await.unwrap_or_default();
        let topic = topic(&self.appliance, Channel::UpStatus);
        let _ = client
            .publish(
                topic,
                QoS::AtLeastOnce,
                true,
                status_payload(false, state, Timestamp::now()),
            )
            .await;
        let _ = client.disconnect().await;
    }
}

/// A persistent session: resumed on reconnection (no clean start) and kept by the broker for
/// [`SESSION_EXPIRY_SECS`] while the appliance is away.
fn persistent_session(options: &mut MqttOptions) {
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
}

/// Polls rumqttc's event loop until shutdown and forwards what it yields. rumqttc needs the
/// loop polled continuously; a task of its own does that, so publishing can never deadlock
/// against it. A failed poll is followed by a backoff, and the next poll reconnects; before
/// every connection attempt the last will is made afresh by `will` (see the module
/// documentation).
async fn drive<Will>(
    mut eventloop: EventLoop,
    events: mpsc::Sender<Result<Event, ConnectionError>>,
    shutdown: CancellationToken,
    mut will: impl FnMut() -> Will,
) where
    Will: Future<Output = LastWill>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut connecting = true;
    loop {
        if connecting {
            eventloop.options.set_last_will(will().await);
        }
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = eventloop.poll() => event,
        };
        connecting = event.is_err();
        if events.send(event).await.is_err() {
            return;
        }
        if connecting {
            tokio::time::sleep(backoff.next_delay()).await;
        } else {
            backoff.reset();
        }
    }
}

/// The offline status the broker publishes (retained) for `appliance` if the connection made
/// `at` drops without a goodbye, with the outbox as it was then.
fn last_will(appliance: &ApplianceId, state: outbox::OutboxState, at: Timestamp) -> LastWill {
    LastWill::new(
        topic(appliance, Channel::UpStatus),
        status_payload(false, state, at),
        QoS::AtLeastOnce,
        true,
        None,
    )
}

fn status_payload(online: bool, state: outbox::OutboxState, at: Timestamp) -> Vec<u8> {
    wire::encode(pb::envelope::Body::Status(pb::ApplianceStatus {
        online,
        outbox_backlog: state.backlog,
        outbox_dropped: state.dropped,
        at_us: at.as_microsecond(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

#[cfg(test)]
#[path = "session/tests.rs"]
mod tests;

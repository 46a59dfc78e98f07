//! The relay's MQTT side: ingestion of what appliances send, through the replicas' shared
//! subscription, and the sending of HQ's commands down to them.
//!
//! # One message
//!
//! For each message on `gatehouse/v1/{appliance}/up/records`: decode the batch record by
//! record ([`decode_records`]), store it in one transaction ([`Store::ingest_report`]),
//! publish the application-level ack (the highest seq up to which the relay holds everything)
//! on `.../down/ack`, then show operators the incidents the batch changed
//! ([`LiveUpdate::Incident`]). A relay killed anywhere in between loses nothing: the appliance
//! resends what was not acked, and the store absorbs repeats.
//!
//! For each message on `.../up/status` (also the appliance's last will): apply it
//! ([`Store::set_appliance_status`]), clear the appliance's offline alert when it says it is
//! online, show operators the appliance when it came online or went offline, and send an
//! appliance that came back online the HQ commands it has not carried out yet. The relay stamps
//! a status with **its own clock**, not the appliance's `at_us`: liveness is "when did the
//! relay last hear from it", appliance clocks drift, and a last will carries the time its
//! session started, which would make it look older than the status it follows.
//!
//! # What is refused, and how much
//!
//! The appliance in the topic is trusted: the broker's ACL lets a client publish only under
//! the id in its certificate. One bad record must not stop an appliance's uplink, because an
//! appliance resends everything after its ack until the ack moves, so a batch refused whole is
//! refused forever and the appliance's outbox fills behind it. Hence three levels:
//!
//! - **A record whose content the relay cannot use** (no content it knows, as from a newer
//!   appliance; an event the protocol refuses; a record that does not decode; an eviction that
//!   ends before it starts; an id or range beyond the database's columns) is stored as a
//!   [`REJECTED_KIND`] row covering its seq, with the reason in its body. The ack moves past
//!   it, operators find it (`GET /events?kind=rejected`), and it is counted and logged once,
//!   when first stored, without its bytes.
//! - **A record whose seq cannot be stored** (0, or beyond `i64::MAX`) is left out, counted
//!   and logged. It can never be acknowledged, and need not be: the ack covers `1..=n`, which
//!   seq 0 is not part of, and no outbox reaches 2^63 (the appliance's SQLite `AUTOINCREMENT`
//!   cannot). Only a broken sender makes one, and it holds up nothing before it.
//! - **A message that is not an envelope at all, of an unknown version, not a batch, or of
//!   more than [`MAX_BATCH_RECORDS`] records** (or of an appliance the relay does not know) is
//!   refused whole, counted and logged. The appliance will send it again and it will be
//!   refused again, which is right: an unknown version means the appliance is newer than the
//!   relay, and its outbox must keep those records until the relay is upgraded; bytes that are
//!   not protobuf cannot come from a working appliance (TLS guarantees they arrived as sent),
//!   so there is nothing to salvage, and the cost stays with that one appliance. To keep this
//!   level small, a batch is decoded leniently: its records are split out as bytes first, so a
//!   record that does not decode costs only itself (it becomes a `rejected` row when its seq
//!   can still be read).
//!
//! # The event loop never waits for the store
//!
//! rumqttc's event loop also sends the keepalives: while it is not polled, the broker hears
//! nothing, and after 1.5 × the keepalive it drops the connection. So [`Ingest::run`] only
//! polls and dispatches: each message goes to one of [`WORKERS`] worker tasks through a bounded
//! queue, chosen by the appliance id, so the messages of one appliance are handled one after
//! the other in the order they came (a status after the batch before it), while appliances on
//! other workers go on. Records batches of one appliance that wait one behind the other (a
//! backlog coming in) are stored together, in one transaction, up to [`MERGE_MESSAGES`] of
//! them and [`MAX_BATCH_RECORDS`] records; while one such group is stored, the batches behind
//! it are decoded already. Every store call is bounded by [`STORE_TIMEOUT`]; one that takes longer
//! is a transient failure like an unreachable database: no ack to the appliance, which sends
//! the batch again.
//!
//! Every message is acknowledged to the broker (manual acks) once handled, even when storing
//! it failed: the appliance resends what the relay never acked. Acknowledging only then also
//! bounds the work in the queues: the broker sends at most [`RECEIVE_MAXIMUM`] messages the
//! relay has not acknowledged (MQTT v5's Receive Maximum), and each queue has room for that
//! many, so the event loop never finds one full unless the broker breaks that promise (then
//! the message is dropped, counted, and acknowledged: the appliance resends it). A message a
//! stopping relay leaves unacknowledged is kept by the broker for the relay's session.
//!
//! # The session
//!
//! The relay's MQTT session ends with its connection (`clean_start = true`, session expiry
//! [`SESSION_EXPIRY`] = 0). A persistent session looks attractive (the broker would queue
//! what appliances send while a replica restarts), but Mosquitto keeps handing a share of the
//! group's messages to a disconnected member whose session persists: with two replicas and
//! one of them dead, every other batch would wait in the dead one's queue, the survivor's
//! records would have gaps and its contiguous ack would stall
//! (`hil-tests/tests/uplink_end_to_end.rs`, two replicas, one killed). Nothing is lost
//! without the session: what a replica had not acknowledged, or what was sent while no
//! replica was connected, is sent again by its appliance, which resends every record the
//! relay has not acknowledged.
//!
//! The connection is kept by [`Ingest::run`], which polls rumqttc's event loop: after a
//! failure it waits (200 ms doubling to 10 s) and polls again, which reconnects. An outage is
//! logged once when it starts and once when it ends, not at every attempt.
//!
//! # HQ's commands
//!
//! An operator's acknowledgement or resolution is stored with its command
//! ([`Store::step_incident_with_downlink`]); [`send_downlink`] hands a command to the MQTT
//! client (QoS 1) without ever waiting. The service sends a new one at once and sweeps for
//! those not carried out in time; ingestion sends an appliance that comes back online all of
//! its pending ones. A command is done when the appliance's incident record shows the step.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_protocol::wire::topics::{Channel, parse, relay_subscription, topic};
use gatehouse_protocol::wire::{self, WIRE_VERSION, WireError, pb};
use gatehouse_protocol::{ApplianceId, Event, EventBody};
use prost::Message as _;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::hub::{Downlink, Hub, LiveUpdate};
use crate::store::{
    DownlinkStep, IngestIncident, IngestRecord, MAX_BATCH_RECORDS, Micros, StatusChange, Store,
    StoreError, StoredDownlink, TenantScope,
};

/// Requests rumqttc queues before a publish waits for the event loop.
const REQUEST_CAPACITY: usize = 256;

/// Messages the broker may send this replica before it acknowledges them (MQTT v5's Receive
/// Maximum). The relay acknowledges a message once handled, so this bounds what waits in the
/// workers' queues.
pub const RECEIVE_MAXIMUM: u16 = 64;

/// Worker tasks that handle messages, each the messages of its share of the appliances.
pub const WORKERS: usize = 4;

/// The most records batches of one appliance a worker stores in one transaction: ten of
/// the appliance's 500-record batches (and never more than [`MAX_BATCH_RECORDS`] records).
pub const MERGE_MESSAGES: usize = 10;

/// Room in one worker's queue: every message the broker may have in flight.
const WORKER_QUEUE: usize = RECEIVE_MAXIMUM as usize;

/// How long one store call may take; longer is a transient failure (no ack to the appliance).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the broker keeps a replica's session after it disconnects: not at all (see the
/// module note, "The session").
pub const SESSION_EXPIRY: Duration = Duration::ZERO;

/// How long a stopping relay lets its workers finish what they hold.
const WORKER_DRAIN: Duration = Duration::from_secs(5);

/// Reconnection delays: the first, and the most.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// How long a stopping relay waits for its DISCONNECT (and what was queued before it) to go
/// out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `kind` of a stored record whose content the relay could not use.
pub const REJECTED_KIND: &str = "rejected";

/// A command not carried out this long after it was last sent is sent again.
pub const DOWNLINK_RESEND_AFTER: Duration = Duration::from_secs(60);

/// How long the periodic resend keeps sending a command an online appliance does not carry
/// out (it does not know the incident any more, say): once a minute for a day at most.
pub const DOWNLINK_RESEND_FOR: Duration = Duration::from_secs(24 * 3600);

/// How long a command is sent to its appliance whenever it comes back online: an appliance
/// may be offline for weeks. After that the command stays pending in the store, and is no
/// longer sent or counted.
pub const DOWNLINK_RETRY_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the relay's MQTT side has done, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct MqttCounters {
    pub batches: AtomicU64,
    pub records_inserted: AtomicU64,
    pub records_duplicate: AtomicU64,
    /// Records stored as [`REJECTED_KIND`] rows, once each (when first stored).
    pub records_rejected: AtomicU64,
    /// Records left out because their seq cannot be stored (0, or beyond `i64::MAX`), or
    /// cannot be read: never acknowledged. Counted at every delivery.
    pub records_refused: AtomicU64,
    pub statuses: AtomicU64,
    /// Messages refused whole (see the module note).
    pub rejected: AtomicU64,
    /// Messages not stored because the store failed or timed out (the appliance resends).
    pub store_failures: AtomicU64,
    /// Of `store_failures`, store calls that took longer than [`STORE_TIMEOUT`].
    pub store_timeouts: AtomicU64,
    /// Messages dropped because their worker's queue was full (the broker sent more than
    /// [`RECEIVE_MAXIMUM`]); the appliance resends them.
    pub overloaded: AtomicU64,
    /// Commands handed to the MQTT client for an appliance's `down/commands`.
    pub downlinks_published: AtomicU64,
    /// Of `downlinks_published`, commands sent again: to an appliance back online, or to an
    /// online one that did not carry them out within [`DOWNLINK_RESEND_AFTER`].
    pub downlinks_resent: AtomicU64,
    /// Commands the MQTT client would not take (its queue was full, or it was shut down); the
    /// periodic resend sends them later.
    pub downlinks_failed: AtomicU64,
    /// Commands completed by a record of their appliance.
    pub downlinks_done: AtomicU64,
    /// Gauge: commands (made within [`DOWNLINK_RETRY_FOR`]) their appliance has not carried
    /// out yet, as of the last periodic resend.
    pub downlinks_pending: AtomicU64,
}

impl MqttCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }
}

/// The relay's MQTT client and its event loop, set up for ingestion: a session that ends
/// with the connection (see the module note), messages acknowledged to the broker by [`Ingest`] once handled, at
/// most [`RECEIVE_MAXIMUM`] of them in flight. Clone the client to publish (downlinks);
/// [`Ingest::run`] drives the event loop.
pub fn mqtt_client(mut options: MqttOptions) -> (AsyncClient, EventLoop) {
    let expiry = u32::try_from(SESSION_EXPIRY.as_secs()).unwrap_or(u32::MAX);
    options
        .set_manual_acks(true)
        .set_clean_start(true)
        .set_session_expiry_interval(Some(expiry))
        .set_receive_maximum(Some(RECEIVE_MAXIMUM));
    AsyncClient::new(options, REQUEST_CAPACITY)
}

/// Since when this replica has had its broker connection (`None` while it has none).
pub type LinkState = watch::Receiver<Option<Instant>>;

/// Why one message was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not a topic of the contract")]
    Topic,
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("a `{0}` message does not belong on this topic")]
    Unexpected(&'static str),
    #[error("a batch of {0} records (at most {MAX_BATCH_RECORDS} are accepted)")]
    TooLarge(usize),
    /// A refusal that will repeat: an unknown appliance, a constraint.
    #[error("the store refused it: {0}")]
    Store(StoreError),
}

/// A record stored as a [`REJECTED_KIND`] row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    pub seq: u64,
    /// Why, without the record's bytes.
    pub reason: String,
}

/// A record left out of the store: its seq cannot be stored, or could not be read (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnstorableRecord {
    pub seq: Option<u64>,
    pub reason: String,
}

/// A batch as the relay stores it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecodedBatch {
    /// What to store, in batch order: the usable records, and a [`REJECTED_KIND`] row for
    /// each record whose content the relay cannot use.
    pub records: Vec<IngestRecord>,
    /// The rejected rows among `records`, and why.
    pub rejected: Vec<RejectedRecord>,
    /// Records left out.
    pub unstorable: Vec<UnstorableRecord>,
}

impl DecodedBatch {
    /// Appends another message's batch.
    fn extend(&mut self, other: DecodedBatch) {
        self.records.extend(other.records);
        self.rejected.extend(other.rejected);
        self.unstorable.extend(other.unstorable);
    }

    fn add(&mut self, converted: Converted) {
        match converted {
            Converted::Usable(record) => self.records.push(record),
            Converted::Rejected(record, reason) => {
                self.rejected.push(RejectedRecord {
                    seq: record.seq,
                    reason,
                });
                self.records.push(record);
            }
            Converted::Unstorable(seq, reason) => {
                self.unstorable.push(UnstorableRecord { seq, reason });
            }
        }
    }
}

/// An `up/records` payload, decoded record by record ([`DecodedBatch`]). Refused whole only
/// when it is not an envelope of this version holding a batch, or holds more than
/// [`MAX_BATCH_RECORDS`] records.
pub fn decode_records(payload: &[u8]) -> Result<DecodedBatch, Refusal> {
    let envelope = RawEnvelope::decode(payload).map_err(WireError::from)?;
    if envelope.version != WIRE_VERSION {
        return Err(WireError::UnknownVersion(envelope.version).into());
    }
    let Some(batch) = envelope.batch else {
        // Not a batch: the strict decoder says what it is instead.
        return Err(match wire::decode(payload) {
            Ok(body) => Refusal::Unexpected(body_name(&body)),
            Err(error) => Refusal::Wire(error),
        });
    };
    check_batch_size(batch.records.len())?;
    let mut decoded = DecodedBatch::default();
    for bytes in &batch.records {
        decoded.add(match pb::Record::decode(bytes.as_slice()) {
            Ok(record) => convert(record),
            Err(error) => match RawRecord::decode(bytes.as_slice()) {
                Ok(RawRecord { seq }) => {
                    convert_unusable(seq, 0, format!("the record does not decode: {error}"))
                }
                Err(_) => {
                    Converted::Unstorable(None, format!("the record does not decode: {error}"))
                }
            },
        });
    }
    Ok(decoded)
}

/// Turns a decoded wire batch into the records to store: usable ones and `rejected` rows;
/// records whose seq cannot be stored are left out. (The relay itself uses
/// [`decode_records`], which also reports what it rejected or left out.)
pub fn to_ingest_records(batch: pb::Batch) -> Result<Vec<IngestRecord>, Refusal> {
    check_batch_size(batch.records.len())?;
    let mut decoded = DecodedBatch::default();
    for record in batch.records {
        decoded.add(convert(record));
    }
    Ok(decoded.records)
}

fn check_batch_size(records: usize) -> Result<(), Refusal> {
    if records > MAX_BATCH_RECORDS {
        return Err(Refusal::TooLarge(records));
    }
    Ok(())
}

/// The envelope of `wire.proto` as the relay first reads an `up/records` payload: a batch
/// whose records are still bytes, so each decodes (or fails) on its own. The tags are those
/// of `Envelope.version`, `Envelope.batch`, `Batch.records` and `Record.seq`; a test checks
/// them against the generated types.
#[derive(Clone, PartialEq, prost::Message)]
struct RawEnvelope {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, optional, tag = "2")]
    batch: Option<RawBatch>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawBatch {
    #[prost(bytes = "vec", repeated, tag = "1")]
    records: Vec<Vec<u8>>,
}

/// Only the seq of a record, which survives a content that does not decode.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRecord {
    #[prost(uint64, tag = "1")]
    seq: u64,
}

/// What one record becomes.
enum Converted {
    Usable(IngestRecord),
    /// A [`REJECTED_KIND`] row, and why.
    Rejected(IngestRecord, String),
    Unstorable(Option<u64>, String),
}

/// One wire record as the relay stores it. Each event becomes JSON (the form the REST API
/// serves); an eviction marker stays a marker.
fn convert(record: pb::Record) -> Converted {
    let seq = record.seq;
    let recorded_at = match &record.content {
        Some(pb::record::Content::Event(event)) => event.recorded_at_us,
        _ => 0,
    };
    match usable(seq, record.content) {
        Ok(record) => match record.check() {
            Ok(()) => Converted::Usable(record),
            Err(error) => convert_unusable(seq, recorded_at, error.to_string()),
        },
        Err(reason) => convert_unusable(seq, recorded_at, reason),
    }
}

/// A record the relay cannot use: a `rejected` row at its seq, when its seq can be stored.
fn convert_unusable(seq: u64, recorded_at: Micros, reason: String) -> Converted {
    if seq == 0 || i64::try_from(seq).is_err() {
        return Converted::Unstorable(
            Some(seq),
            format!("seq {seq} cannot be stored: outbox seqs run from 1 to 2^63 - 1"),
        );
    }
    let body = serde_json::json!({"kind": REJECTED_KIND, "seq": seq, "reason": reason});
    let row = IngestRecord {
        seq,
        recorded_at,
        kind: REJECTED_KIND.to_owned(),
        device: None,
        point: None,
        incident: None,
        evicted_through: None,
        body: body.to_string(),
    };
    Converted::Rejected(row, reason)
}

/// The record to store, or why the relay cannot use its content (a reason that never quotes
/// the record's bytes).
fn usable(seq: u64, content: Option<pb::record::Content>) -> Result<IngestRecord, String> {
    match content {
        None => Err("no content this relay knows (sent by a newer appliance?)".to_owned()),
        Some(pb::record::Content::Evicted(evicted)) => {
            if evicted.through_seq < seq {
                return Err(format!(
                    "an eviction through {} ends before it starts",
                    evicted.through_seq
                ));
            }
            Ok(IngestRecord {
                seq,
                recorded_at: 0,
                kind: "evicted".into(),
                device: None,
                point: None,
                incident: None,
                evicted_through: Some(evicted.through_seq),
                body: format!(
                    r#"{{"kind":"evicted","first_seq":{seq},"through_seq":{}}}"#,
                    evicted.through_seq
                ),
            })
        }
        Some(pb::record::Content::Event(event)) => {
            let event = Event::try_from(event).map_err(|error| describe(&error))?;
            let incident = match &event.body {
                EventBody::Incident { incident, .. } => Some(IngestIncident {
                    id: incident.id,
                    state: incident.state,
                    severity: incident.severity,
                    title: incident.title.clone(),
                    opened_at: incident.opened_at.as_microsecond(),
                }),
                _ => None,
            };
            let body = serde_json::to_string(&event).map_err(|error| error.to_string())?;
            Ok(IngestRecord {
                seq,
                recorded_at: event.recorded_at.as_microsecond(),
                kind: event.body.kind().as_str().into(),
                device: event.body.device().map(ToString::to_string),
                point: event.body.point().map(ToString::to_string),
                incident,
                evicted_through: None,
                body,
            })
        }
    }
}

/// A wire error, without the sender's text: an invalid id is quoted by [`WireError`]'s own
/// message, which could carry anything into a log or a stored body.
fn describe(error: &WireError) -> String {
    match error {
        WireError::BadId { field, .. } => format!("{field}: not a valid id"),
        other => other.to_string(),
    }
}

fn body_name(body: &pb::envelope::Body) -> &'static str {
    match body {
        pb::envelope::Body::Batch(_) => "batch",
        pb::envelope::Body::Ack(_) => "ack",
        pb::envelope::Body::Status(_) => "status",
        pb::envelope::Body::Command(_) => "command",
    }
}

/// The relay's consumer of appliance messages.
pub struct Ingest {
    handler: Arc<Handler>,
    subscription: String,
    link: watch::Sender<Option<Instant>>,
}

impl Ingest {
    /// Ingestion for the replicas' share group `share_group` (its name is a secret; see
    /// `relay/deploy/README.md`).
    pub fn new(store: Store, hub: Hub, share_group: &str, counters: Arc<MqttCounters>) -> Self {
        Ingest {
            handler: Arc::new(Handler {
                store,
                hub,
                counters,
                store_timeout: STORE_TIMEOUT,
            }),
            subscription: relay_subscription(share_group),
            link: watch::channel(None).0,
        }
    }

    /// Whether, and since when, this replica is connected to the broker.
    pub fn link_state(&self) -> LinkState {
        self.link.subscribe()
    }

    /// Consumes until `stop`, then lets the workers finish and disconnects; reconnects with
    /// backoff meanwhile.
    pub async fn run(self, client: AsyncClient, mut eventloop: EventLoop, stop: CancellationToken) {
        let mut workers = JoinSet::new();
        let queues: Vec<mpsc::Sender<Job>> = (0..WORKERS)
            .map(|_| {
                let (queue, jobs) = mpsc::channel(WORKER_QUEUE);
                workers.spawn(work(self.handler.clone(), client.clone(), jobs));
                queue
            })
            .collect();
        self.poll(&client, &mut eventloop, &queues, &stop).await;
        drop(queues);
        finish_work(&mut workers, &mut eventloop).await;
        disconnect(&client, &mut eventloop).await;
    }

    /// Polls the event loop until `stop`: the only thing this task does besides handing
    /// messages to the workers, so keepalives always go out.
    async fn poll(
        &self,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        queues: &[mpsc::Sender<Job>],
        stop: &CancellationToken,
    ) {
        let mut delay = FIRST_RETRY;
        let mut outage: Option<Outage> = None;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    delay = FIRST_RETRY;
                    self.link.send_replace(Some(Instant::now()));
                    match outage.take() {
                        Some(outage) => tracing::info!(
                            attempts = outage.attempts,
                            down_for_s = outage.since.elapsed().as_secs(),
                            "relay reconnected to the broker"
                        ),
                        None => tracing::info!("relay connected to the broker"),
                    }
                    // Subscribing from this task would wait on the event loop we are
                    // polling; rumqttc queues it, so hand it to a task.
                    let subscriber = client.clone();
                    let subscription = self.subscription.clone();
                    tokio::spawn(async move {
                        if let Err(error) =
                            subscriber.subscribe(subscription, QoS::AtLeastOnce).await
                        {
                            tracing::error!(%error, "relay could not subscribe");
                        }
                    });
                }
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                    self.dispatch(client, queues, publish);
                }
                Ok(_) => {}
                Err(error) => {
                    self.link.send_replace(None);
                    match &mut outage {
                        None => {
                            tracing::warn!(
                                %error,
                                "relay has no broker connection; retrying with backoff"
                            );
                            outage = Some(Outage {
                                since: Instant::now(),
                                attempts: 1,
                            });
                        }
                        Some(outage) => {
                            outage.attempts += 1;
                            tracing::debug!(%error, attempts = outage.attempts, "still no broker");
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(LAST_RETRY);
                }
            }
        }
    }

    /// Hands a message to the worker of its appliance, without waiting.
    fn dispatch(&self, client: &AsyncClient, queues: &[mpsc::Sender<Job>], publish: Publish) {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let Some((appliance, channel)) = parse(&topic) else {
            self.handler.refused(&topic, &Refusal::Topic);
            ack_now(client, &publish);
            return;
        };
        let job = Job {
            appliance,
            channel,
            topic,
            publish,
        };
        let not_taken = match queues.get(worker_of(&job.appliance, queues.len())) {
            Some(queue) => queue.try_send(job).err().map(|error| match error {
                TrySendError::Full(job) | TrySendError::Closed(job) => job,
            }),
            None => Some(job),
        };
        if let Some(job) = not_taken {
            MqttCounters::add(&self.handler.counters.overloaded, 1);
            tracing::warn!(
                topic = job.topic,
                "relay dropped a message: its worker's queue is full (the appliance will send it again)"
            );
            ack_now(client, &job.publish);
        }
    }
}

/// Which of `workers` handles `appliance`: always the same one, so its messages keep their
/// order.
fn worker_of(appliance: &ApplianceId, workers: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    appliance.as_str().hash(&mut hasher);
    let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
    usize::try_from(hasher.finish() % workers).unwrap_or(0)
}

/// Acknowledges a message to the broker from the event loop's task, without waiting.
fn ack_now(client: &AsyncClient, publish: &Publish) {
    if let Err(error) = client.try_ack(publish) {
        tracing::warn!(%error, "relay could not acknowledge to the broker");
    }
}

/// One message for a worker.
struct Job {
    appliance: ApplianceId,
    channel: Channel,
    topic: String,
    publish: Publish,
}

/// Messages a worker handles together: one message, or records batches of one appliance that
/// waited one behind the other, decoded as they were taken.
struct Group {
    jobs: Vec<Job>,
    /// For records batches, each job's payload decoded.
    decoded: Vec<Result<DecodedBatch, Refusal>>,
}

impl Group {
    fn new(job: Job) -> Group {
        let mut group = Group {
            jobs: Vec::with_capacity(MERGE_MESSAGES),
            decoded: Vec::with_capacity(MERGE_MESSAGES),
        };
        group.push(job);
        group
    }

    fn is_records(&self) -> bool {
        self.jobs[0].channel == Channel::UpRecords
    }

    /// Whether `job` can join: records batches of the same appliance, up to
    /// [`MERGE_MESSAGES`].
    fn takes(&self, job: &Job) -> bool {
        self.is_records()
            && self.jobs.len() < MERGE_MESSAGES
            && job.channel == Channel::UpRecords
            && job.appliance == self.jobs[0].appliance
    }

    fn push(&mut self, job: Job) {
        if job.channel == Channel::UpRecords {
            self.decoded.push(decode_records(&job.publish.payload));
        }
        self.jobs.push(job);
    }
}

/// A worker: handles its queue's messages one after the other until the queue closes.
/// Records batches of one appliance that wait one behind the other (a backlog being sent)
/// are taken together, up to [`MERGE_MESSAGES`], and stored in one transaction: the
/// per-transaction work (the appliance's row lock, the ack, the commit) is paid once.
///
/// While a records group is being stored, the worker takes the records batches that arrive
/// behind it and decodes them (the next group), so the database does not wait for that
/// decoding once the store call returns. It stops taking at any other message, which waits
/// for the groups before it: the order of one appliance's messages is kept.
async fn work(handler: Arc<Handler>, client: AsyncClient, mut jobs: mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    let mut following: Option<Group> = None;
    let mut closed = false;
    loop {
        let group = match following.take() {
            Some(group) => group,
            None => {
                let job = match next.take() {
                    Some(job) => job,
                    None => match jobs.recv().await {
                        Some(job) => job,
                        None => return,
                    },
                };
                let mut group = Group::new(job);
                while group.is_records() && group.jobs.len() < MERGE_MESSAGES {
                    match jobs.try_recv() {
                        Ok(job) if group.takes(&job) => group.push(job),
                        Ok(job) => {
                            next = Some(job);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                group
            }
        };
        if !group.is_records() {
            handler.handle(&client, group).await;
            continue;
        }
        let storing = handler.handle(&client, group);
        tokio::pin!(storing);
        loop {
            let taking = !closed
                && next.is_none()
                && following
                    .as_ref()
                    .is_none_or(|group| group.jobs.len() < MERGE_MESSAGES);
            tokio::select! {
                biased;
                () = &mut storing => break,
                job = jobs.recv(), if taking => match job {
                    None => closed = true,
                    Some(job) => match following.as_mut() {
                        Some(group) if group.takes(&job) => group.push(job),
                        None if job.channel == Channel::UpRecords => {
                            following = Some(Group::new(job));
                        }
                        _ => next = Some(job),
                    },
                },
            }
        }
    }
}

/// Lets the workers finish what they hold, for at most [`WORKER_DRAIN`], polling the event
/// loop meanwhile (their acks go out through it). What is left is dropped unacknowledged; the
/// broker keeps it for the relay's session.
async fn finish_work(workers: &mut JoinSet<()>, eventloop: &mut EventLoop) {
    let deadline = tokio::time::sleep(WORKER_DRAIN);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => return,
                Some(Err(error)) if error.is_panic() => {
                    tracing::error!(%error, "an ingestion worker panicked");
                }
                Some(_) => {}
            },
            () = &mut deadline => {
                workers.abort_all();
                tracing::warn!("ingestion workers did not finish in time; the broker keeps what they held");
                return;
            }
            event = eventloop.poll() => if event.is_err() {
                tokio::time::sleep(FIRST_RETRY).await;
            },
        }
    }
}

/// What the workers share.
struct Handler {
    store: Store,
    hub: Hub,
    counters: Arc<MqttCounters>,
    store_timeout: Duration,
}

impl Handler {
    /// Handles one message, or records batches of one appliance together, then
    /// acknowledges them to the broker.
    async fn handle(&self, client: &AsyncClient, group: Group) {
        let Group { jobs, decoded } = group;
        let Some(first) = jobs.first() else {
            return;
        };
        let result = match first.channel {
            Channel::UpRecords => {
                self.ingest_batches(client, &first.appliance, &jobs, decoded)
                    .await
            }
            _ => self.process(client, first).await,
        };
        match result {
            Ok(()) => {}
            Err(Outcome::Refused(refusal)) => self.refused(&first.topic, &refusal),
            Err(Outcome::Store(error)) => {
                MqttCounters::add(&self.counters.store_failures, 1);
                tracing::error!(
                    topic = first.topic,
                    messages = jobs.len(),
                    %error,
                    "relay could not store a message (the appliance will send it again)"
                );
            }
            Err(Outcome::TimedOut) => {
                MqttCounters::add(&self.counters.store_failures, 1);
                MqttCounters::add(&self.counters.store_timeouts, 1);
                tracing::error!(
                    topic = first.topic,
                    messages = jobs.len(),
                    timeout_ms = self.store_timeout.as_millis() as u64,
                    "the store did not answer in time (the appliance will send it again)"
                );
            }
        }
        // Handled, one way or the other: the broker may forget them (see the module note).
        for job in &jobs {
            if let Err(error) = client.ack(&job.publish).await {
                tracing::warn!(%error, "relay could not acknowledge to the broker");
            }
        }
    }

    fn refused(&self, topic: &str, refusal: &Refusal) {
        MqttCounters::add(&self.counters.rejected, 1);
        tracing::warn!(topic, %refusal, "relay refused a message");
    }

    async fn process(&self, client: &AsyncClient, job: &Job) -> Result<(), Outcome> {
        let payload = &job.publish.payload;
        match job.channel {
            Channel::UpStatus => match wire::decode(payload).map_err(Refusal::from)? {
                pb::envelope::Body::Status(status) => {
                    self.apply_status(client, &job.appliance, &status).await
                }
                other => Err(Refusal::Unexpected(body_name(&other)).into()),
            },
            Channel::UpRecords | Channel::DownAck | Channel::DownCommands => {
                Err(Refusal::Topic.into())
            }
        }
    }

    /// Runs one store call, for at most the store timeout.
    async fn stored<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Outcome> {
        match tokio::time::timeout(self.store_timeout, call).await {
            Ok(result) => result.map_err(Outcome::from_store),
            Err(_) => Err(Outcome::TimedOut),
        }
    }

    /// Stores an appliance's decoded records messages, together as far as
    /// [`MAX_BATCH_RECORDS`] allows. A message that does not decode is refused alone.
    async fn ingest_batches(
        &self,
        client: &AsyncClient,
        appliance: &ApplianceId,
        jobs: &[Job],
        decoded: Vec<Result<DecodedBatch, Refusal>>,
    ) -> Result<(), Outcome> {
        let mut merged: Option<DecodedBatch> = None;
        for (job, decoded) in jobs.iter().zip(decoded) {
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(refusal) => {
                    self.refused(&job.topic, &refusal);
                    continue;
                }
            };
            merged = Some(match merged.take() {
                Some(held) if held.records.len() + decoded.records.len() > MAX_BATCH_RECORDS => {
                    self.ingest_decoded(client, appliance, held).await?;
                    decoded
                }
                Some(mut held) => {
                    held.extend(decoded);
                    held
                }
                None => decoded,
            });
        }
        match merged {
            Some(decoded) => self.ingest_decoded(client, appliance, decoded).await,
            None => Ok(()),
        }
    }

    async fn ingest_decoded(
        &self,
        client: &AsyncClient,
        appliance: &ApplianceId,
        decoded: DecodedBatch,
    ) -> Result<(), Outcome> {
        for left_out in &decoded.unstorable {
            MqttCounters::add(&self.counters.records_refused, 1);
            tracing::warn!(
                %appliance,
                seq = left_out.seq,
                reason = left_out.reason,
                "relay left out a record it cannot store; it will never be acknowledged"
            );
        }
        let incidents: BTreeSet<u64> = decoded
            .records
            .iter()
            .filter_map(|record| record.incident.as_ref().map(|incident| incident.id))
            .collect();
        let report = self
            .stored(self.store.ingest_report(appliance, &decoded.records))
            .await?;
        let outcome = &report.outcome;
        MqttCounters::add(&self.counters.batches, 1);
        MqttCounters::add(&self.counters.records_inserted, outcome.inserted as u64);
        MqttCounters::add(&self.counters.records_duplicate, outcome.duplicates as u64);
        MqttCounters::add(&self.counters.downlinks_done, report.downlinks_done);
        self.log_rejected(appliance, &decoded.rejected, &report.stored);
        self.send_ack(client, appliance, outcome.highest_contiguous_seq)
            .await;
        if outcome.inserted > 0 {
            self.publish_incidents(&outcome.scope, appliance, &incidents)
                .await;
        }
        Ok(())
    }

    /// Counts and logs the rejected records this batch stored for the first time (a
    /// redelivery of the same record says nothing new).
    fn log_rejected(&self, appliance: &ApplianceId, rejected: &[RejectedRecord], stored: &[u64]) {
        if rejected.is_empty() {
            return;
        }
        let stored: BTreeSet<u64> = stored.iter().copied().collect();
        for record in rejected
            .iter()
            .filter(|record| stored.contains(&record.seq))
        {
            MqttCounters::add(&self.counters.records_rejected, 1);
            tracing::warn!(
                %appliance,
                seq = record.seq,
                reason = record.reason,
                "relay stored a record it cannot use as `rejected`; the ack moves past it"
            );
        }
    }

    /// Shows operators the current state of incidents a committed batch touched. A failure
    /// here is logged only: the batch is stored and acked, and operators can re-read.
    async fn publish_incidents(
        &self,
        scope: &TenantScope,
        appliance: &ApplianceId,
        incidents: &BTreeSet<u64>,
    ) {
        for id in incidents {
            match self
                .stored(self.store.incident(scope, appliance, *id))
                .await
            {
                Ok(Some(incident)) => self
                    .hub
                    .publish(scope.tenant(), LiveUpdate::Incident(incident)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%appliance, incident = id, %error, "an ingested incident was not published");
                }
            }
        }
    }

    async fn apply_status(
        &self,
        client: &AsyncClient,
        appliance: &ApplianceId,
        status: &pb::ApplianceStatus,
    ) -> Result<(), Outcome> {
        let now = now_micros();
        let change = self
            .stored(self.store.set_appliance_status(
                appliance,
                status.online,
                status.outbox_backlog,
                now,
            ))
            .await?;
        MqttCounters::add(&self.counters.statuses, 1);
        if change == StatusChange::Stale {
            return Ok(());
        }
        let scope = self
            .stored(self.store.appliance_scope(appliance))
            .await?
            .ok_or_else(|| {
                Outcome::from_store(StoreError::UnknownAppliance(appliance.to_string()))
            })?;
        if status.online
            && let Some(alert) = self
                .stored(self.store.clear_offline_alert(&scope, appliance, now))
                .await?
        {
            tracing::info!(%appliance, tenant = %scope.tenant(), "appliance back; offline alert cleared");
            self.hub.publish(scope.tenant(), LiveUpdate::Alert(alert));
        }
        if matches!(change, StatusChange::CameOnline | StatusChange::WentOffline)
            && let Some(current) = self.stored(self.store.appliance(&scope, appliance)).await?
        {
            self.hub
                .publish(scope.tenant(), LiveUpdate::Appliance(current));
        }
        if change == StatusChange::CameOnline {
            self.resend_downlinks(client, &scope, appliance, now)
                .await?;
        }
        Ok(())
    }

    /// Sends an appliance that has just come back online every command it has not carried
    /// out: the broker may not have kept them (a broker restart without persistence, an
    /// expired session), and a repeat is harmless.
    async fn resend_downlinks(
        &self,
        client: &AsyncClient,
        scope: &TenantScope,
        appliance: &ApplianceId,
        now: Micros,
    ) -> Result<(), Outcome> {
        let created_after = now.saturating_sub(micros_of(DOWNLINK_RETRY_FOR));
        let pending = self
            .stored(
                self.store
                    .claim_appliance_downlinks(scope, appliance, now, created_after),
            )
            .await?;
        if !pending.is_empty() {
            tracing::info!(%appliance, commands = pending.len(), "appliance back; pending HQ commands sent again");
        }
        for downlink in &pending {
            send_downlink(
                client,
                &self.counters,
                &Downlink::from(downlink),
                Sending::Again,
            );
        }
        Ok(())
    }

    async fn send_ack(&self, client: &AsyncClient, appliance: &ApplianceId, up_to: u64) {
        let payload = wire::encode(pb::envelope::Body::Ack(pb::Ack { up_to_seq: up_to }));
        let published = client
            .publish(
                topic(appliance, Channel::DownAck),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, %appliance, "relay could not queue an ack");
        }
    }
}

impl From<&StoredDownlink> for Downlink {
    /// A stored command as it goes on the wire.
    fn from(stored: &StoredDownlink) -> Downlink {
        let step = match stored.step {
            DownlinkStep::Acknowledge => pb::incident_action::Step::Acknowledge,
            DownlinkStep::Resolve => pb::incident_action::Step::Resolve,
        };
        Downlink {
            appliance: stored.appliance.clone(),
            command: pb::Command {
                command_id: stored.command_id.clone(),
                action: Some(pb::command::Action::Incident(pb::IncidentAction {
                    incident_id: stored.incident,
                    step: step.into(),
                    by: stored.by.clone(),
                    comment: stored.comment.clone(),
                })),
            },
        }
    }
}

/// Whether a command goes out for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    First,
    Again,
}

/// Hands a command to the MQTT client for the appliance's `down/commands` (QoS 1), without
/// waiting: when the client's queue is full (a broker outage) or it is shut down, the command
/// is counted as failed and stays pending in the store, to be sent again later. Returns
/// whether the client took it.
pub fn send_downlink(
    client: &AsyncClient,
    counters: &MqttCounters,
    downlink: &Downlink,
    sending: Sending,
) -> bool {
    let command = downlink.command.command_id.as_str();
    match client.try_publish(
        downlink.topic(),
        QoS::AtLeastOnce,
        false,
        downlink.payload(),
    ) {
        Ok(()) => {
            MqttCounters::add(&counters.downlinks_published, 1);
            if sending == Sending::Again {
                MqttCounters::add(&counters.downlinks_resent, 1);
            }
            tracing::debug!(appliance = %downlink.appliance, command, ?sending, "command queued for its appliance");
            true
        }
        Err(error) => {
            MqttCounters::add(&counters.downlinks_failed, 1);
            tracing::warn!(
                appliance = %downlink.appliance,
                command,
                %error,
                "a command for an appliance could not be queued; it stays pending"
            );
            false
        }
    }
}

/// A duration in microseconds, saturating.
pub(crate) fn micros_of(duration: Duration) -> Micros {
    Micros::try_from(duration.as_micros()).unwrap_or(Micros::MAX)
}

/// A broker outage in progress.
struct Outage {
    since: Instant,
    attempts: u32,
}

/// Sends DISCONNECT after whatever is queued, and polls until it is out (or the connection is
/// gone, or [`DISCONNECT_TIMEOUT`]).
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let sent = async {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, sent).await;
}

/// The relay's clock, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> Micros {
    jiff::Timestamp::now().as_microsecond()
}

/// How handling one message ended, when it did not succeed.
enum Outcome {
    Refused(Refusal),
    /// A transient store failure: the appliance will send it again.
    Store(StoreError),
    /// A store call took longer than the store timeout: transient too.
    TimedOut,
}

impl Outcome {
    /// A store error that will repeat (an unknown appliance, a constraint) refuses the message;
    /// any other is a transient failure.
    fn from_store(error: StoreError) -> Outcome {
        if error.is_transient() {
            Outcome::Store(error)
        } else {
            Outcome::Refused(Refusal::Store(error))
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Refused(refusal) => refusal.fmt(f),
            Outcome::Store(error) => error.fmt(f),
            Outcome::TimedOut => f.write_str("the store did not answer in time"),
        }
    }
}

impl From<Refusal> for Outcome {
    fn from(refusal: Refusal) -> Self {
        Outcome::Refused(refusal)
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;
    use gatehouse_protocol::{Incident, IncidentChange, IncidentState, Severity};
    use jiff::Timestamp;
    use rumqttc::v5::Request;
    use sqlx::Connection as _;

    use super::*;
    use crate::store::{EventFilter, Page};

    /// A moment in the tests' world.
    const T0: Micros = 1_700_000_000_000_000;

    fn record(seq: u64, content: pb::record::Content) -> pb::Record {
        pb::Record {
            seq,
            content: Some(content),
        }
    }

    /// Record `seq`: device `device` went online.
    fn device_online(seq: u64, device: &str) -> pb::Record {
        record(
            seq,
            pb::record::Content::Event(pb::Event {
                journal_seq: seq,
                recorded_at_us: T0 + i64::try_from(seq).unwrap_or(0),
                body: Some(pb::event::Body::DeviceStatus(pb::DeviceStatusChange {
                    device: device.to_owned(),
                    online: true,
                    reason: None,
                    degraded: false,
                })),
            }),
        )
    }

    /// Record `seq`: incident 7 in `state`.
    fn incident(seq: u64, state: IncidentState) -> anyhow::Result<pb::Record> {
        let now = Timestamp::from_microsecond(T0)?;
        let event = Event {
            seq,
            recorded_at: now,
            body: EventBody::Incident {
                change: IncidentChange::Opened,
                incident: Box::new(Incident {
                    id: 7,
                    rule: "door-held".parse()?,
                    title: "Door held open".into(),
                    severity: Severity::High,
                    zone: None,
                    state,
                    opened_at: now,
                    evidence: Vec::new(),
                    escalations: 0,
                    acknowledged: None,
                    resolved: None,
                    clips: Vec::new(),
                }),
            },
        };
        Ok(record(
            seq,
            pb::record::Content::Event(pb::Event::from(&event)),
        ))
    }

    fn batch(records: Vec<pb::Record>) -> Vec<u8> {
        wire::encode(pb::envelope::Body::Batch(pb::Batch { records }))
    }

    /// A batch envelope whose records are given as bytes.
    fn raw_batch(records: Vec<Vec<u8>>) -> Vec<u8> {
        RawEnvelope {
            version: WIRE_VERSION,
            batch: Some(RawBatch { records }),
        }
        .encode_to_vec()
    }

    fn kinds(decoded: &DecodedBatch) -> Vec<(u64, &str)> {
        decoded
            .records
            .iter()
            .map(|record| (record.seq, record.kind.as_str()))
            .collect()
    }

    #[test]
    fn records_the_relay_cannot_use_become_rejected_rows_and_unstorable_ones_are_left_out()
    -> anyhow::Result<()> {
        let evicted = |seq, through_seq| {
            record(
                seq,
                pb::record::Content::Evicted(pb::Evicted { through_seq }),
            )
        };
        let mut huge_incident = incident(8, IncidentState::Open)?;
        if let Some(pb::record::Content::Event(event)) = &mut huge_incident.content
            && let Some(pb::event::Body::Incident(change)) = &mut event.body
            && let Some(incident) = &mut change.incident
        {
            incident.id = u64::MAX;
        }
        let records = vec![
            device_online(1, "plc-1"),
            pb::Record {
                seq: 2,
                content: None,
            },
            device_online(3, "SECRET Device Name!"),
            evicted(4, 3),
            device_online(0, "plc-1"),
            device_online(u64::MAX, "plc-1"),
            evicted(5, u64::MAX),
            evicted(6, 7),
            huge_incident,
        ];
        let mut encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode_to_vec()).collect();
        // Seq 9 with an event that is not protobuf; then bytes with no readable seq at all.
        encoded.push(vec![0x08, 0x09, 0x12, 0x02, 0xff, 0xff]);
        encoded.push(vec![0xff]);

        let decoded = decode_records(&raw_batch(encoded))?;
        assert_eq!(
            kinds(&decoded),
            vec![
                (1, "device_status"),
                (2, REJECTED_KIND),
                (3, REJECTED_KIND),
                (4, REJECTED_KIND),
                (5, REJECTED_KIND),
                (6, "evicted"),
                (8, REJECTED_KIND),
                (9, REJECTED_KIND),
            ]
        );
        let reasons: Vec<(u64, &str)> = decoded
            .rejected
            .iter()
            .map(|r| (r.seq, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 6);
        assert!(reasons[0].1.contains("no content"), "{reasons:?}");
        assert_eq!(reasons[1], (3, "device_status.device: not a valid id"));
        assert!(
            reasons[2].1.contains("ends before it starts"),
            "{reasons:?}"
        );
        assert!(reasons[3].1.contains("evicted_through"), "{reasons:?}");
        assert!(reasons[4].1.contains("incident id"), "{reasons:?}");
        assert!(reasons[5].1.contains("does not decode"), "{reasons:?}");
        // The sender's text reaches neither the reason nor the stored body.
        for stored in &decoded.records {
            assert!(!stored.body.contains("SECRET"), "{}", stored.body);
            stored.check()?;
        }
        let rejected_body: serde_json::Value = serde_json::from_str(&decoded.records[1].body)?;
        assert_eq!(
            rejected_body,
            serde_json::json!({"kind": "rejected", "seq": 2, "reason": reasons[0].1})
        );
        // A rejected event keeps the time the appliance recorded it.
        assert_eq!(decoded.records[2].recorded_at, T0 + 3);

        let left_out: Vec<Option<u64>> = decoded.unstorable.iter().map(|u| u.seq).collect();
        assert_eq!(left_out, vec![Some(0), Some(u64::MAX), None]);

        // The load harness's entry point stores the same records.
        let pb::envelope::Body::Batch(wire_batch) = wire::decode(&batch(records))? else {
            anyhow::bail!("not a batch");
        };
        let stored = to_ingest_records(wire_batch)?;
        assert_eq!(stored.len(), 7);
        assert!(stored.iter().all(|record| record.seq != 0));
        Ok(())
    }

    #[test]
    fn only_a_payload_that_is_no_batch_of_this_version_is_refused_whole() -> anyhow::Result<()> {
        assert!(matches!(
            decode_records(b"not protobuf"),
            Err(Refusal::Wire(WireError::Decode(_)))
        ));
        let newer = pb::Envelope {
            version: WIRE_VERSION + 1,
            body: Some(pb::envelope::Body::Batch(pb::Batch::default())),
        };
        assert!(matches!(
            decode_records(&newer.encode_to_vec()),
            Err(Refusal::Wire(WireError::UnknownVersion(2)))
        ));
        let status = wire::encode(pb::envelope::Body::Status(pb::ApplianceStatus::default()));
        assert!(matches!(
            decode_records(&status),
            Err(Refusal::Unexpected("status"))
        ));
        let evicted = record(
            1,
            pb::record::Content::Evicted(pb::Evicted { through_seq: 1 }),
        );
        let too_many = batch(vec![evicted.clone(); MAX_BATCH_RECORDS + 1]);
        assert!(matches!(
            decode_records(&too_many),
            Err(Refusal::TooLarge(n)) if n == MAX_BATCH_RECORDS + 1
        ));
        assert_eq!(
            decode_records(&batch(vec![evicted; MAX_BATCH_RECORDS]))?
                .records
                .len(),
            MAX_BATCH_RECORDS
        );
        Ok(())
    }

    /// The lenient envelope reads what the generated types write: same tags.
    #[test]
    fn the_lenient_envelope_follows_the_contract() -> anyhow::Result<()> {
        let records = vec![device_online(1, "plc-1"), incident(2, IncidentState::Open)?];
        let envelope = RawEnvelope::decode(batch(records.clone()).as_slice())?;
        assert_eq!(envelope.version, WIRE_VERSION);
        let raw = envelope.batch.context("no batch")?.records;
        let decoded = raw
            .iter()
            .map(|bytes| pb::Record::decode(bytes.as_slice()))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(decoded, records);
        assert_eq!(RawRecord::decode(raw[1].as_slice())?.seq, 2);
        Ok(())
    }

    #[test]
    fn the_relays_session_ends_with_its_connection() {
        let (_, eventloop) = mqtt_client(MqttOptions::new("relay:test", "127.0.0.1", 8884));
        let options = &eventloop.options;
        assert!(options.clean_start());
        assert_eq!(options.session_expiry_interval(), Some(0));
        assert_eq!(options.receive_maximum(), Some(RECEIVE_MAXIMUM));
        assert!(options.manual_acks());
    }

    #[test]
    fn an_appliance_always_goes_to_the_same_worker_and_appliances_spread() -> anyhow::Result<()> {
        let mut used = BTreeSet::new();
        for n in 0..64 {
            let appliance = ApplianceId::new(format!("app-{n}"))?;
            let worker = worker_of(&appliance, WORKERS);
            assert_eq!(worker, worker_of(&appliance, WORKERS));
            assert!(worker < WORKERS);
            used.insert(worker);
        }
        assert_eq!(used.len(), WORKERS);
        Ok(())
    }

    /// A SQLite file store with one claimed appliance, and a handler over it.
    struct Setup {
        _folder: tempfile::TempDir,
        url: String,
        store: Store,
        scope: TenantScope,
        appliance: ApplianceId,
        handler: Handler,
        client: AsyncClient,
        eventloop: EventLoop,
    }

    impl Setup {
        async fn new(store_timeout: Duration) -> anyhow::Result<Setup> {
            let folder = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                folder.path().join("relay.db").display()
            );
            let store = Store::open(&url).await?;
            let (_, scope) = store.create_tenant("acme", T0).await?;
            let site = store.create_site(&scope, "HQ", T0).await?;
            let claim = store
                .create_claim(&scope, &site.id, "gate", T0, T0 + 3_600_000_000)
                .await?;
            store.redeem_claim(&claim.code, T0).await?;
            let handler = Handler {
                store: store.clone(),
                hub: Hub::new(),
                counters: Arc::new(MqttCounters::default()),
                store_timeout,
            };
            let (client, eventloop) =
                mqtt_client(MqttOptions::new("relay:test", "127.0.0.1", 8884));
            Ok(Setup {
                _folder: folder,
                url,
                store,
                scope,
                appliance: claim.appliance,
                handler,
                client,
                eventloop,
            })
        }

        /// Handles `payload` on the appliance's `channel`, as a worker does.
        async fn handle(&self, channel: Channel, payload: Vec<u8>) {
            self.handle_queued(channel, vec![payload]).await;
        }

        /// Handles messages a worker found queued one behind the other.
        async fn handle_queued(&self, channel: Channel, payloads: Vec<Vec<u8>>) {
            let topic = topic(&self.appliance, channel);
            let jobs = payloads
                .into_iter()
                .map(|payload| Job {
                    appliance: self.appliance.clone(),
                    channel,
                    topic: topic.clone(),
                    publish: Publish::new(topic.clone(), QoS::AtLeastOnce, payload, None),
                })
                .collect::<Vec<Job>>();
            let mut jobs = jobs.into_iter();
            let Some(first) = jobs.next() else {
                return;
            };
            let mut group = Group::new(first);
            for job in jobs {
                group.push(job);
            }
            self.handler.handle(&self.client, group).await;
        }

        /// What the relay published since the last call, from the client's queue.
        fn published(&mut self) -> anyhow::Result<Vec<pb::envelope::Body>> {
            self.eventloop.clean();
            self.eventloop
                .pending
                .drain(..)
                .filter_map(|request| match request {
                    Request::Publish(publish) => Some(publish),
                    _ => None,
                })
                .map(|publish| Ok(wire::decode(&publish.payload)?))
                .collect()
        }

        fn counter(&self, counter: fn(&MqttCounters) -> &AtomicU64) -> u64 {
            MqttCounters::get(counter(&self.handler.counters))
        }
    }

    fn ack(up_to_seq: u64) -> pb::envelope::Body {
        pb::envelope::Body::Ack(pb::Ack { up_to_seq })
    }

    fn status(online: bool) -> Vec<u8> {
        wire::encode(pb::envelope::Body::Status(pb::ApplianceStatus {
            online,
            ..pb::ApplianceStatus::default()
        }))
    }

    #[tokio::test]
    async fn a_record_the_relay_cannot_use_no_longer_blocks_the_ack() -> anyhow::Result<()> {
        let mut setup = Setup::new(STORE_TIMEOUT).await?;
        let payload = batch(vec![
            device_online(1, "plc-1"),
            pb::Record {
                seq: 2,
                content: None,
            },
            device_online(3, "plc-2"),
            device_online(0, "plc-3"),
        ]);
        setup.handle(Channel::UpRecords, payload.clone()).await;
        assert_eq!(setup.published()?, vec![ack(3)]);
        assert_eq!(setup.counter(|c| &c.records_rejected), 1);
        assert_eq!(setup.counter(|c| &c.records_refused), 1);
        assert_eq!(setup.counter(|c| &c.records_inserted), 3);
        assert_eq!(setup.counter(|c| &c.rejected), 0);

        // Delivered again: acked the same; the rejected record is not counted twice.
        setup.handle(Channel::UpRecords, payload).await;
        assert_eq!(setup.published()?, vec![ack(3)]);
        assert_eq!(setup.counter(|c| &c.records_rejected), 1);

        let filter = EventFilter {
            kind: Some(REJECTED_KIND.to_owned()),
            ..EventFilter::default()
        };
        let shown = setup
            .store
            .events(&setup.scope, &filter, &Page::first(10))
            .await?;
        assert_eq!(shown.items.len(), 1);
        assert_eq!(shown.items[0].seq, 2);

        // Garbage is refused whole: counted, and no ack.
        setup
            .handle(Channel::UpRecords, b"not protobuf".to_vec())
            .await;
        assert!(setup.published()?.is_empty());
        assert_eq!(setup.counter(|c| &c.rejected), 1);
        Ok(())
    }

    #[tokio::test]
    async fn queued_batches_of_one_appliance_are_stored_together() -> anyhow::Result<()> {
        let mut setup = Setup::new(STORE_TIMEOUT).await?;
        let records = |seqs: std::ops::RangeInclusive<u64>| {
            batch(seqs.map(|seq| device_online(seq, "plc-1")).collect())
        };
        // A message that does not decode is refused alone; the others share a transaction.
        setup
            .handle_queued(
                Channel::UpRecords,
                vec![records(1..=3), b"not protobuf".to_vec(), records(4..=6)],
            )
            .await;
        assert_eq!(setup.published()?, vec![ack(6)]);
        assert_eq!(setup.counter(|c| &c.batches), 1);
        assert_eq!(setup.counter(|c| &c.records_inserted), 6);
        assert_eq!(setup.counter(|c| &c.rejected), 1);

        // Together they would pass the limit of one transaction: stored in two.
        let big_end = 8 + MAX_BATCH_RECORDS as u64 - 1;
        setup
            .handle_queued(
                Channel::UpRecords,
                vec![
                    records(7..=8),
                    records(9..=big_end),
                    records(big_end + 1..=big_end + 1),
                ],
            )
            .await;
        assert_eq!(setup.published()?, vec![ack(8), ack(big_end + 1)]);
        assert_eq!(setup.counter(|c| &c.batches), 3);
        assert_eq!(setup.counter(|c| &c.records_inserted), big_end + 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_worker_takes_batches_in_order_while_it_stores_and_stops_at_other_messages()
    -> anyhow::Result<()> {
        let mut setup = Setup::new(STORE_TIMEOUT).await?;
        let records = |first: u64| {
            batch(
                (first..first + 3)
                    .map(|seq| device_online(seq, "plc-1"))
                    .collect(),
            )
        };
        let job = |channel: Channel, payload: Vec<u8>| {
            let topic = topic(&setup.appliance, channel);
            Job {
                appliance: setup.appliance.clone(),
                channel,
                topic: topic.clone(),
                publish: Publish::new(topic, QoS::AtLeastOnce, payload, None),
            }
        };
        // More than one group's worth queued, then a status, then one more batch: the first
        // group is stored while the worker takes (and decodes) the next batches, up to the
        // status.
        let (queue, jobs) = mpsc::channel(WORKER_QUEUE);
        for index in 0..13 {
            queue.try_send(job(Channel::UpRecords, records(1 + 3 * index)))?;
        }
        queue.try_send(job(Channel::UpStatus, status(true)))?;
        queue.try_send(job(Channel::UpRecords, records(40)))?;
        drop(queue);
        let handler = Arc::new(Handler {
            store: setup.store.clone(),
            hub: Hub::new(),
            counters: setup.handler.counters.clone(),
            store_timeout: STORE_TIMEOUT,
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            work(handler, setup.client.clone(), jobs),
        )
        .await?;

        let acks: Vec<u64> = setup
            .published()?
            .into_iter()
            .filter_map(|body| match body {
                pb::envelope::Body::Ack(ack) => Some(ack.up_to_seq),
                _ => None,
            })
            .collect();
        assert!(acks.windows(2).all(|pair| pair[0] < pair[1]), "{acks:?}");
        assert_eq!(acks.last(), Some(&42));
        assert_eq!(setup.counter(|c| &c.records_inserted), 42);
        assert_eq!(setup.counter(|c| &c.rejected), 0);
        let appliance = setup
            .store
            .appliance(&setup.scope, &setup.appliance)
            .await?;
        assert_eq!(appliance.map(|a| (a.online, a.acked_seq)), Some((true, 42)));
        Ok(())
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_in_time_is_a_transient_failure() -> anyhow::Result<()> {
        let mut setup = Setup::new(Duration::from_millis(200)).await?;
        // Another writer holds SQLite's write lock (longer than the timeout, shorter than
        // the busy timeout).
        let mut writer = sqlx::AnyConnection::connect(&setup.url).await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await?;
        let payload = batch(vec![device_online(1, "plc-1")]);
        let started = Instant::now();
        setup.handle(Channel::UpRecords, payload.clone()).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(setup.published()?.is_empty(), "acked without storing");
        assert_eq!(setup.counter(|c| &c.store_timeouts), 1);
        assert_eq!(setup.counter(|c| &c.store_failures), 1);

        sqlx::query("ROLLBACK").execute(&mut writer).await?;
        setup.handle(Channel::UpRecords, payload).await;
        assert_eq!(setup.published()?, vec![ack(1)]);
        Ok(())
    }

    #[tokio::test]
    async fn pending_commands_go_again_to_an_appliance_back_online_until_done() -> anyhow::Result<()>
    {
        let mut setup = Setup::new(STORE_TIMEOUT).await?;
        setup
            .handle(
                Channel::UpRecords,
                batch(vec![incident(1, IncidentState::Open)?]),
            )
            .await;
        assert_eq!(setup.published()?, vec![ack(1)]);
        let (_, command) = setup
            .store
            .step_incident_with_downlink(
                &setup.scope,
                &setup.appliance,
                7,
                DownlinkStep::Acknowledge,
                "dana",
                None,
                now_micros(),
            )
            .await?;

        setup.handle(Channel::UpStatus, status(true)).await;
        let sent = setup.published()?;
        let [pb::envelope::Body::Command(sent)] = sent.as_slice() else {
            anyhow::bail!("not one command: {sent:?}");
        };
        assert_eq!(sent, &Downlink::from(&command).command);
        let Some(pb::command::Action::Incident(action)) = &sent.action else {
            anyhow::bail!("not an incident action");
        };
        assert_eq!(
            (action.incident_id, action.step(), action.by.as_str()),
            (7, pb::incident_action::Step::Acknowledge, "dana")
        );
        assert_eq!(setup.counter(|c| &c.downlinks_resent), 1);

        // Still online: nothing again.
        setup.handle(Channel::UpStatus, status(true)).await;
        assert!(setup.published()?.is_empty());

        // The appliance acknowledged it: the command is done and not sent again.
        setup
            .handle(
                Channel::UpRecords,
                batch(vec![incident(2, IncidentState::Acknowledged)?]),
            )
            .await;
        assert_eq!(setup.published()?, vec![ack(2)]);
        assert_eq!(setup.counter(|c| &c.downlinks_done), 1);
        setup.handle(Channel::UpStatus, status(false)).await;
        setup.handle(Channel::UpStatus, status(true)).await;
        assert!(setup.published()?.is_empty());
        Ok(())
    }
}

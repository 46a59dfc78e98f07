//! Ingestion from the broker: the relay's shared subscription to everything appliances send.
//!
//! For each message on `gatehouse/v1/{appliance}/up/records`: decode the batch, store it in one
//! transaction ([`Store::ingest`]), publish the application-level ack (the highest seq up to
//! which the relay holds everything) on `.../down/ack`, and only then acknowledge the MQTT
//! message to the broker (manual acks). A relay killed anywhere in between loses nothing:
//! the broker redelivers what was not acknowledged, the appliance resends what was not
//! acked, and the store absorbs repeats.
//!
//! The appliance in the topic is trusted: the broker's ACL lets a client publish only under
//! the id in its certificate. A malformed payload, an unknown wire version or an unknown
//! appliance is refused, counted and logged; ingestion goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_protocol::wire::topics::{Channel, RELAY_SUBSCRIPTION, parse, topic};
use gatehouse_protocol::wire::{self, WireError, pb};
use gatehouse_protocol::{ApplianceId, Event, EventBody};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};
use tokio_util::sync::CancellationToken;

use crate::store::{IngestIncident, IngestRecord, Store, StoreError};

/// What ingestion has done, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub batches: AtomicU64,
    pub records_inserted: AtomicU64,
    pub records_duplicate: AtomicU64,
    pub rejected: AtomicU64,
    pub store_failures: AtomicU64,
}

impl IngestCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Why one message was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not a topic of the contract")]
    Topic,
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("an {0} message does not belong on an up/ topic")]
    Unexpected(&'static str),
    #[error("record {seq}: {reason}")]
    Record { seq: u64, reason: String },
}

/// Turns a wire batch into store records. Each event becomes JSON (the form the REST API
/// serves); an eviction marker stays a marker.
pub fn to_ingest_records(batch: pb::Batch) -> Result<Vec<IngestRecord>, Refusal> {
    batch
        .records
        .into_iter()
        .map(|record| {
            let seq = record.seq;
            let refuse = |reason: String| Refusal::Record { seq, reason };
            if seq == 0 {
                return Err(refuse(
                    "seq 0 does not exist; outbox seqs start at 1".into(),
                ));
            }
            match record.content {
                None => Err(refuse("no content".into())),
                Some(pb::record::Content::Evicted(evicted)) => {
                    if evicted.through_seq < seq {
                        return Err(refuse(format!(
                            "an eviction through {} ends before it starts",
                            evicted.through_seq
                        )));
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
                    let event = Event::try_from(event).map_err(|e| refuse(e.to_string()))?;
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
                    let body = serde_json::to_string(&event).map_err(|e| refuse(e.to_string()))?;
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
        })
        .collect()
}

/// The relay's consumer of appliance messages.
pub struct Ingest {
    store: Store,
    options: MqttOptions,
    counters: Arc<IngestCounters>,
}

impl Ingest {
    pub fn new(store: Store, mut options: MqttOptions, counters: Arc<IngestCounters>) -> Self {
        // Acknowledge to the broker only after the store committed.
        options.set_manual_acks(true).set_clean_start(false);
        Ingest {
            store,
            options,
            counters,
        }
    }

    /// Consumes until shutdown; reconnects on its own.
    pub async fn run(self, shutdown: CancellationToken) {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 256);
        let mut delay = Duration::from_millis(200);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = client.disconnect().await;
                    return;
                }
                event = eventloop.poll() => event,
            };
            match event {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    delay = Duration::from_millis(200);
                    tracing::info!("relay connected to the broker");
                    // Subscribing from this task would wait on the event loop we are
                    // polling; rumqttc queues it, so hand it to a task.
                    let subscriber = client.clone();
                    tokio::spawn(async move {
                        if let Err(error) = subscriber
                            .subscribe(RELAY_SUBSCRIPTION, QoS::AtLeastOnce)
                            .await
                        {
                            tracing::error!(%error, "relay could not subscribe");
                        }
                    });
                }
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                    let client = client.clone();
                    self.handle(&client, publish).await;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "relay lost the broker");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn handle(&self, client: &AsyncClient, publish: Publish) {
        let topic_text = String::from_utf8_lossy(&publish.topic).into_owned();
        match self.process(client, &topic_text, &publish.payload).await {
            Ok(()) => {}
            Err(Outcome::Refused(refusal)) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = topic_text, %refusal, "relay refused a message");
            }
            Err(Outcome::Store(error)) => {
                // Not acknowledged to anyone: the appliance will send it again.
                self.counters.store_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(topic = topic_text, %error, "relay could not store a batch");
                return;
            }
        }
        // Stored (or refused for good): the broker may forget it.
        let acker = client.clone();
        tokio::spawn(async move {
            if let Err(error) = acker.ack(&publish).await {
                tracing::warn!(%error, "relay could not acknowledge to the broker");
            }
        });
    }

    async fn process(
        &self,
        client: &AsyncClient,
        topic_text: &str,
        payload: &[u8],
    ) -> Result<(), Outcome> {
        let (appliance, channel) = parse(topic_text).ok_or(Refusal::Topic)?;
        let body = wire::decode(payload).map_err(Refusal::from)?;
        match (channel, body) {
            (Channel::UpRecords, pb::envelope::Body::Batch(batch)) => {
                let records = to_ingest_records(batch)?;
                let outcome = self
                    .store
                    .ingest(&appliance, &records)
                    .await
                    .map_err(Outcome::from_store)?;
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .records_inserted
                    .fetch_add(outcome.inserted as u64, Ordering::Relaxed);
                self.counters
                    .records_duplicate
                    .fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
                self.send_ack(client, &appliance, outcome.highest_contiguous_seq);
                Ok(())
            }
            (Channel::UpStatus, pb::envelope::Body::Status(status)) => {
                self.store
                    .set_appliance_status(
                        &appliance,
                        status.online,
                        status.outbox_backlog,
                        status.at_us,
                    )
                    .await
                    .map_err(Outcome::from_store)?;
                Ok(())
            }
            (_, body) => Err(Refusal::Unexpected(match body {
                pb::envelope::Body::Batch(_) => "batch",
                pb::envelope::Body::Ack(_) => "ack",
                pb::envelope::Body::Status(_) => "status",
                pb::envelope::Body::Command(_) => "command",
            })
            .into()),
        }
    }

    fn send_ack(&self, client: &AsyncClient, appliance: &ApplianceId, up_to: u64) {
        let client = client.clone();
        let topic = topic(appliance, Channel::DownAck);
        let payload = wire::encode(pb::envelope::Body::Ack(pb::Ack { up_to_seq: up_to }));
        tokio::spawn(async move {
            if let Err(error) = client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
            {
                tracing::warn!(%error, "relay could not queue an ack");
            }
        });
    }
}

/// How handling one message ended, when it did not succeed.
enum Outcome {
    Refused(Refusal),
    Store(StoreError),
}

impl Outcome {
    /// An unknown appliance is the sender's problem; anything else is the store's.
    fn from_store(error: StoreError) -> Outcome {
        match error {
            StoreError::UnknownAppliance(_) => Outcome::Refused(Refusal::Record {
                seq: 0,
                reason: error.to_string(),
            }),
            other => Outcome::Store(other),
        }
    }
}

impl From<Refusal> for Outcome {
    fn from(refusal: Refusal) -> Self {
        Outcome::Refused(refusal)
    }
}

//! Prometheus metrics: a counter for every dropped, retried or rejected thing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BridgeLabels {
    pub bridge: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub device: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    pub journal_events_committed: Counter,
    pub journal_events_expired: Counter,
    pub journal_commit_failures: Counter,
    pub journal_requests_rejected: Counter,
    pub journal_commit_seconds: Histogram,
    pub journal_wal_frames: Gauge,
    pub journal_checkpoint_failures: Counter,
    pub incidents_opened: Counter,
    pub rules_commands_refused: Counter,
    pub rules_clips_requested: Counter,
    pub rules_loops_suppressed: Counter,
    pub rules_reloads: Family<OutcomeLabels, Counter>,
    pub modbus_polls: Family<ResultLabels, Counter>,
    pub modbus_reconnects: Family<DeviceLabels, Counter>,
    pub zigbee_reconnects: Family<BridgeLabels, Counter>,
    pub zigbee_messages_rejected: Family<BridgeLabels, Counter>,
    pub bacnet_datagrams_rejected: Counter,
    pub video_reconnects: Family<DeviceLabels, Counter>,
    pub video_onvif_events_unmapped: Family<DeviceLabels, Counter>,
    pub bacnet_requests_retried: Family<DeviceLabels, Counter>,
    pub bacnet_rediscoveries: Family<DeviceLabels, Counter>,
    pub commands: Family<ResultLabels, Counter>,
    pub api_responses: Family<StatusLabels, Counter>,
    pub api_auth_rejected: Counter,
    pub stream_clients: Gauge,
    pub stream_catch_ups: Counter,
    pub outbox_evicted: Counter,
    pub outbox_backlog: Gauge,
    pub uplink_records_sent: Counter,
    pub uplink_disconnects: Counter,
    pub uplink_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let metrics = Metrics {
            journal_events_committed: Counter::default(),
            journal_events_expired: Counter::default(),
            journal_commit_failures: Counter::default(),
            journal_requests_rejected: Counter::default(),
            journal_commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            journal_wal_frames: Gauge::default(),
            journal_checkpoint_failures: Counter::default(),
            incidents_opened: Counter::default(),
            rules_commands_refused: Counter::default(),
            rules_clips_requested: Counter::default(),
            rules_loops_suppressed: Counter::default(),
            rules_reloads: Family::default(),
            modbus_polls: Family::default(),
            modbus_reconnects: Family::default(),
            zigbee_reconnects: Family::default(),
            zigbee_messages_rejected: Family::default(),
            bacnet_datagrams_rejected: Counter::default(),
            video_reconnects: Family::default(),
            video_onvif_events_unmapped: Family::default(),
            bacnet_requests_retried: Family::default(),
            bacnet_rediscoveries: Family::default(),
            commands: Family::default(),
            api_responses: Family::default(),
            api_auth_rejected: Counter::default(),
            stream_clients: Gauge::default(),
            stream_catch_ups: Counter::default(),
            outbox_evicted: Counter::default(),
            outbox_backlog: Gauge::default(),
            uplink_records_sent: Counter::default(),
            uplink_disconnects: Counter::default(),
            uplink_rejected: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "journal_events_committed",
            "Events committed to the journal",
            metrics.journal_events_committed.clone(),
        );
        registry.register(
            "journal_events_expired",
            "Events deleted by retention",
            metrics.journal_events_expired.clone(),
        );
        registry.register(
            "journal_commit_failures",
            "Journal commits that failed and were retried",
            metrics.journal_commit_failures.clone(),
        );
        registry.register(
            "journal_commit_seconds",
            "Time to commit one batch",
            metrics.journal_commit_seconds.clone(),
        );
        registry.register(
            "journal_wal_frames",
            "Pages in the journal's write-ahead log after the last checkpoint",
            metrics.journal_wal_frames.clone(),
        );
        registry.register(
            "journal_checkpoint_failures",
            "Journal WAL checkpoints that failed (retried on the next tick)",
            metrics.journal_checkpoint_failures.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened by rules",
            metrics.incidents_opened.clone(),
        );
        registry.register(
            "rules_commands_refused",
            "Rule commands the life-safety interlock refused",
            metrics.rules_commands_refused.clone(),
        );
        registry.register(
            "rules_clips_requested",
            "Video clips rules asked for",
            metrics.rules_clips_requested.clone(),
        );
        registry.register(
            "rules_loops_suppressed",
            "Spells of a rule held back for firing too often (a loop)",
            metrics.rules_loops_suppressed.clone(),
        );
        registry.register(
            "rules_reloads",
            "Config changes seen, by outcome (applied or refused)",
            metrics.rules_reloads.clone(),
        );
        registry.register(
            "modbus_polls",
            "Modbus read requests by device and result",
            metrics.modbus_polls.clone(),
        );
        registry.register(
            "modbus_reconnects",
            "Modbus connection attempts after a failure",
            metrics.modbus_reconnects.clone(),
        );
        registry.register(
            "zigbee_reconnects",
            "Connection attempts to a zigbee2mqtt broker after a failure",
            metrics.zigbee_reconnects.clone(),
        );
        registry.register(
            "zigbee_messages_rejected",
            "zigbee2mqtt messages that could not be read (malformed JSON, wrong shape)",
            metrics.zigbee_messages_rejected.clone(),
        );
        registry.register(
            "video_reconnects",
            "Camera connections that ended and were tried again, by camera",
            metrics.video_reconnects.clone(),
        );
        registry.register(
            "video_onvif_events_unmapped",
            "ONVIF events with a topic Gatehouse has no point for, or unreadable, by camera",
            metrics.video_onvif_events_unmapped.clone(),
        );
        registry.register(
            "bacnet_datagrams_rejected",
            "BACnet/IP datagrams that did not decode, or answered no request",
            metrics.bacnet_datagrams_rejected.clone(),
        );
        registry.register(
            "bacnet_requests_retried",
            "BACnet confirmed requests sent again after a timeout, by device",
            metrics.bacnet_requests_retried.clone(),
        );
        registry.register(
            "bacnet_rediscoveries",
            "BACnet Who-Is rounds after a device went offline, by device",
            metrics.bacnet_rediscoveries.clone(),
        );
        registry.register(
            "commands",
            "Commands to device points by device and result",
            metrics.commands.clone(),
        );
        registry.register(
            "api_responses",
            "API responses by HTTP status",
            metrics.api_responses.clone(),
        );
        registry.register(
            "api_auth_rejected",
            "API requests refused for a missing or unknown token",
            metrics.api_auth_rejected.clone(),
        );
        registry.register(
            "stream_clients",
            "Connected stream clients",
            metrics.stream_clients.clone(),
        );
        registry.register(
            "stream_catch_ups",
            "Times a stream client fell behind and caught up from the journal",
            metrics.stream_catch_ups.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        text
    }
}

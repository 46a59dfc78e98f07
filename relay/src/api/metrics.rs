//! `GET /metrics`: Prometheus metrics (OpenMetrics text) of this replica, for whoever runs the
//! relay, not for tenants. A tenant's API token, even an admin's, is no key to it: it takes
//! the metrics token whose SHA-256 is `[api] metrics_token_sha256`, and is refused (403) while
//! none is configured.
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `gatehouse_relay_mqtt_*_total` | counter | the MQTT side ([`MqttCounters`]): batches, records inserted, duplicate, rejected and refused, statuses, messages rejected, store failures and timeouts, overload, downlinks published, resent, failed and done |
//! | `gatehouse_relay_mqtt_downlinks_pending` | gauge | commands not carried out yet |
//! | `gatehouse_relay_claims_refused_total{reason}` | counter | claims refused: `code` (invalid, used or expired, 403), `rate_limited` (429), `bad_request` (the CSR, 400) |
//! | `gatehouse_relay_stream_clients` | gauge | WebSocket streams open |
//! | `gatehouse_relay_streams_lagged_total` | counter | times a stream fell behind and its client was told to re-read |

use std::fmt;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest as _, Sha256};

use super::Context;
use super::auth::bearer_token;
use super::error::ApiError;
use crate::ingest::MqttCounters;

const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a claim was refused, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimRefusal {
    Code,
    RateLimited,
    BadRequest,
}

impl ClaimRefusal {
    fn as_str(self) -> &'static str {
        match self {
            ClaimRefusal::Code => "code",
            ClaimRefusal::RateLimited => "rate_limited",
            ClaimRefusal::BadRequest => "bad_request",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// The API's own metrics, and the registry that exports them with the MQTT side's.
pub(super) struct ApiMetrics {
    registry: Registry,
    claims_refused: Family<RefusalLabels, Counter>,
    pub(super) stream_clients: Gauge,
    pub(super) streams_lagged: Counter,
}

impl ApiMetrics {
    pub(super) fn new(mqtt: Arc<MqttCounters>) -> ApiMetrics {
        let mut registry = Registry::with_prefix("gatehouse_relay");
        let claims_refused = Family::<RefusalLabels, Counter>::default();
        let stream_clients = Gauge::default();
        let streams_lagged = Counter::default();
        registry.register(
            "claims_refused",
            "Claims refused, by reason",
            claims_refused.clone(),
        );
        registry.register(
            "stream_clients",
            "WebSocket streams open",
            stream_clients.clone(),
        );
        registry.register(
            "streams_lagged",
            "Times a stream fell behind and its client was told to re-read",
            streams_lagged.clone(),
        );
        registry.register_collector(Box::new(MqttCollector(mqtt)));
        ApiMetrics {
            registry,
            claims_refused,
            stream_clients,
            streams_lagged,
        }
    }

    pub(super) fn claim_refused(&self, reason: ClaimRefusal) {
        self.claims_refused
            .get_or_create(&RefusalLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the MQTT side's counters at each scrape (they are plain atomics of `ingest`).
struct MqttCollector(Arc<MqttCounters>);

impl fmt::Debug for MqttCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MqttCollector")
    }
}

impl Collector for MqttCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counters = &self.0;
        let all = [
            (
                "mqtt_batches",
                "Record batches received from appliances",
                &counters.batches,
            ),
            (
                "mqtt_records_inserted",
                "Records stored",
                &counters.records_inserted,
            ),
            (
                "mqtt_records_duplicate",
                "Records received again (already stored)",
                &counters.records_duplicate,
            ),
            (
                "mqtt_statuses",
                "Status messages applied",
                &counters.statuses,
            ),
            (
                "mqtt_rejected",
                "Messages refused (topic, version, content)",
                &counters.rejected,
            ),
            (
                "mqtt_store_failures",
                "Messages the store could not take (retried by redelivery)",
                &counters.store_failures,
            ),
            (
                "mqtt_downlinks_published",
                "Commands handed to the MQTT client for an appliance",
                &counters.downlinks_published,
            ),
            (
                "mqtt_downlinks_failed",
                "Commands the MQTT client would not take",
                &counters.downlinks_failed,
            ),
            (
                "mqtt_records_rejected",
                "Records stored as rejected (unusable content) so the ack moves past them",
                &counters.records_rejected,
            ),
            (
                "mqtt_records_refused",
                "Records left out because their seq cannot be stored (counted per delivery)",
                &counters.records_refused,
            ),
            (
                "mqtt_store_timeouts",
                "Store calls that took longer than the ingest time limit",
                &counters.store_timeouts,
            ),
            (
                "mqtt_overloaded",
                "Messages dropped because their ingest worker's queue was full",
                &counters.overloaded,
            ),
            (
                "mqtt_downlinks_resent",
                "Commands sent again (appliance back online, or not carried out in time)",
                &counters.downlinks_resent,
            ),
            (
                "mqtt_downlinks_done",
                "Commands completed by a record of their appliance",
                &counters.downlinks_done,
            ),
        ];
        for (name, help, counter) in all {
            let metric = ConstCounter::new(MqttCounters::get(counter));
            let metric_encoder =
                encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(metric_encoder)?;
        }
        let pending = ConstGauge::new(
            i64::try_from(MqttCounters::get(&counters.downlinks_pending)).unwrap_or(i64::MAX),
        );
        let metric_encoder = encoder.encode_descriptor(
            "mqtt_downlinks_pending",
            "Commands their appliance has not carried out yet (as of the last periodic resend)",
            None,
            pending.metric_type(),
        )?;
        pending.encode(metric_encoder)?;
        Ok(())
    }
}

pub(super) async fn metrics(
    State(context): State<Arc<Context>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(expected) = context.state.metrics_token_sha256.as_deref() else {
        return Err(ApiError::forbidden(
            "metrics are disabled on this relay: set [api] metrics_token_sha256",
        ));
    };
    let Some(token) = bearer_token(&headers) else {
        return Err(ApiError::unauthorized(
            "missing bearer token: send `Authorization: Bearer <the metrics token>`",
        ));
    };
    // Comparing hashes: how long the comparison takes says nothing usable about the token.
    if hex::encode(Sha256::digest(token.as_bytes())) != expected {
        return Err(ApiError::unauthorized(
            "not the metrics token (API tokens do not give access to /metrics)",
        ));
    }
    let text = context.metrics.encode().map_err(ApiError::internal)?;
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text).into_response())
}

//! `GET /metrics`: the platform's token only, never a tenant's; what it exports.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::harness::{Api, Options, Tenant};
use crate::ingest::MqttCounters;
use crate::store::Store;

on_both_backends!(
    metrics_take_the_metrics_token_and_no_other,
    metrics_export_the_mqtt_side_claims_and_streams,
);

const TOKEN: &str = "metrics-token-for-the-tests";

fn metrics_api(store: &Store, counters: Arc<MqttCounters>) -> anyhow::Result<Api> {
    Api::with(
        store,
        Options {
            metrics_token: Some(TOKEN.to_owned()),
            mqtt_counters: counters,
            claims: true,
            ..Options::default()
        },
    )
}

async fn scrape(api: &Api, token: Option<&str>) -> anyhow::Result<(StatusCode, Value)> {
    api.call(Method::GET, "/metrics", token, None).await
}

async fn metrics_take_the_metrics_token_and_no_other(store: &Store) -> anyhow::Result<()> {
    let tenant = Tenant::new(store, "acme").await?;

    // Deny by default: without a configured token nobody reads them, not even an admin.
    let closed = Api::new(store)?;
    for token in [None, Some(TOKEN), Some(tenant.admin.as_str())] {
        let (status, body) = scrape(&closed, token).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            body,
            json!({"error": "metrics are disabled on this relay: set [api] metrics_token_sha256"})
        );
    }

    let api = metrics_api(store, Arc::default())?;
    let (status, body) = scrape(&api, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for wrong in [tenant.admin.as_str(), "metrics-token-for-the-test"] {
        let (status, body) = scrape(&api, Some(wrong)).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(
            body,
            json!({"error": "not the metrics token (API tokens do not give access to /metrics)"})
        );
    }
    let (status, body) = scrape(&api, Some(TOKEN)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // And the metrics token is no API token.
    let (status, _) = api.get("/api/v1/tenant", TOKEN).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

async fn metrics_export_the_mqtt_side_claims_and_streams(store: &Store) -> anyhow::Result<()> {
    let counters = Arc::new(MqttCounters::default());
    counters.batches.store(7, Ordering::Relaxed);
    counters.downlinks_failed.store(2, Ordering::Relaxed);
    let api = metrics_api(store, Arc::clone(&counters))?;
    let body = json!({"code": "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ", "csr_pem": "not a CSR"}).to_string();
    let (status, _) = api
        .call(Method::POST, "/api/v1/claim", None, Some(body))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let request = axum::http::Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {TOKEN}"))
        .extension(axum::extract::ConnectInfo(super::harness::CLIENT))
        .body(axum::body::Body::empty())?;
    let response = tower::ServiceExt::oneshot(api.app.clone(), request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec())?;
    for line in [
        "gatehouse_relay_mqtt_batches_total 7",
        "gatehouse_relay_mqtt_downlinks_failed_total 2",
        "gatehouse_relay_mqtt_records_inserted_total 0",
        "gatehouse_relay_claims_refused_total{reason=\"bad_request\"} 1",
        "gatehouse_relay_stream_clients 0",
        "gatehouse_relay_streams_lagged_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    Ok(())
}

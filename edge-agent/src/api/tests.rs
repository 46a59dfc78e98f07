//! The router driven without a socket (`oneshot`), over a real journal.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use gatehouse_protocol::Value;
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{ApiState, Catalog, auth::Users, router};
use crate::adapters::modbus::ModbusDevice;
use crate::adapters::{self, Adapter};
use crate::metrics::Metrics;
use crate::test_helpers::{TestJournal, observation, site_config};

struct Fixture {
    app: Router,
    journal: TestJournal,
    shutdown: CancellationToken,
    _adapters: JoinSet<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The test site, whose Modbus device points at a closed port (so it is offline). Returns once
/// the device's going offline is journaled (seq 1): from then on its adapter has nothing to
/// mark stale, so a test's own observations keep the quality they were given.
async fn fixture() -> Fixture {
    let config = site_config();
    let journal = TestJournal::with_defaults(&config);
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let devices: Vec<Arc<dyn Adapter>> = config
        .modbus
        .devices
        .iter()
        .map(|d| Arc::new(ModbusDevice::new(d.clone())) as Arc<dyn Adapter>)
        .collect();
    let commands = adapters::start(
        devices,
        &journal.handle,
        &journal.live,
        &metrics,
        &shutdown,
        &mut tasks,
    );
    let state = Arc::new(ApiState {
        catalog: Catalog::from_config(&config),
        users: Users::from_config(&config.api.users),
        live: journal.live.clone(),
        reader: journal.reader.clone(),
        journal: journal.handle.clone(),
        commands,
        metrics,
        command_timeout: Duration::from_secs(5),
        shutdown: shutdown.clone(),
        stream_slots: Arc::new(tokio::sync::Semaphore::new(super::MAX_STREAM_CLIENTS)),
        video: None,
    });
    journal.wait_for_seq(1).await;
    Fixture {
        app: router(state),
        journal,
        shutdown,
        _adapters: tasks,
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Json) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Body::from(body.unwrap_or("").to_owned()))
        .unwrap_or_else(|e| panic!("{e}"));
    let response = app
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or(Json::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}

async fn get(app: &Router, uri: &str, token: &str) -> (StatusCode, Json) {
    call(app, Method::GET, uri, Some(token), None).await
}

async fn post(app: &Router, uri: &str, token: &str, body: &str) -> (StatusCode, Json) {
    call(app, Method::POST, uri, Some(token), Some(body)).await
}

#[tokio::test]
async fn health_needs_no_token_and_says_nothing_about_the_site() {
    let f = fixture().await;
    let (status, body) = call(&f.app, Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2));
}

#[tokio::test]
async fn every_route_but_health_refuses_a_missing_or_unknown_token() {
    let f = fixture().await;
    let document = serde_json::to_value(super::openapi()).unwrap_or_default();
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    assert!(paths.len() >= 11, "{paths:?}");
    let mut checked = 0;
    for (path, item) in paths
        .iter()
        .chain([(&"/metrics".to_owned(), &json!({"get": {}}))])
    {
        if path == "/api/v1/health" {
            continue;
        }
        let uri = path.replace("{id}", "1");
        for method in item
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let method =
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
            for token in [None, Some("not-a-token"), Some("")] {
                let (status, body) = call(&f.app, method.clone(), &uri, token, Some("{}")).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {uri} with {token:?}"
                );
                assert_eq!(body["error"]["code"], "unauthorized");
                checked += 1;
            }
        }
    }
    assert!(checked >= 36, "{checked}");
    // An unknown route is refused before it is found, too.
    let (status, _) = call(&f.app, Method::GET, "/api/v1/secret", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(&f.app, "/api/v1/secret", "guard").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_console_s_files_are_public_and_locked_down_and_nothing_else_is() {
    let f = fixture().await;
    for path in [
        "/console/",
        "/console/console.js",
        "/console/live.js",
        "/console/console.css",
    ] {
        let response = send(&f.app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let response = send(&f.app, "/").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/console/");
    // Anything else under /console needs a token like the rest, then does not exist.
    for path in ["/console/secret.js", "/console/../api/v1/zones", "/console"] {
        let (status, _) = call(&f.app, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = get(&f.app, "/console/secret.js", "guard").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A GET without a token, answered with its headers.
async fn send(app: &Router, path: &str) -> axum::response::Response {
    let request = Request::get(path)
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    app.clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn roles_limit_what_each_user_may_do() {
    let f = fixture().await;
    let command = r#"{"point": "strike", "value": true}"#;
    let (status, body) = post(&f.app, "/api/v1/devices/plc/commands", "guard", command).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = get(&f.app, "/metrics", "integrator").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = get(&f.app, "/metrics", "admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .unwrap_or("")
            .contains("gatehouse_api_auth_rejected")
    );
    for token in ["admin", "integrator", "guard"] {
        let (status, _) = get(&f.app, "/api/v1/devices", token).await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_400_that_says_what_is_wrong() {
    let f = fixture().await;
    let cases = [
        ("/api/v1/events?limit=0", "limit must be between 1 and 1000"),
        ("/api/v1/events?limit=abc", "invalid query"),
        ("/api/v1/events?cursor=xyz", "not a cursor"),
        (
            "/api/v1/events?cursor=18446744073709551615",
            "beyond any sequence number",
        ),
        (
            "/api/v1/incidents?cursor=9223372036854775808",
            "beyond any sequence number",
        ),
        ("/api/v1/events?kind=alarm", "invalid query"),
        ("/api/v1/events?from=yesterday", "invalid query"),
        ("/api/v1/events?colour=red", "unknown field"),
        (
            "/api/v1/events?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "before",
        ),
        ("/api/v1/incidents?state=maybe", "invalid query"),
        ("/api/v1/incidents/abc", "invalid path"),
        ("/api/v1/devices/Bad%20Id", "invalid path"),
    ];
    for (uri, expected) in cases {
        let (status, body) = get(&f.app, uri, "admin").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(expected), "{uri}: {message}");
    }
    let posts = [
        ("/api/v1/incidents/1/ack", "{not json", "invalid JSON"),
        (
            "/api/v1/incidents/1/ack",
            r#"{"comment": 5}"#,
            "invalid JSON",
        ),
        (
            "/api/v1/incidents/1/ack",
            r#"{"note": "x"}"#,
            "unknown field",
        ),
        (
            "/api/v1/devices/plc/commands",
            r#"{"point": "strike"}"#,
            "missing field",
        ),
        (
            "/api/v1/devices/plc/commands",
            r#"{"point": "door", "value": true}"#,
            "not writable",
        ),
    ];
    for (uri, body, expected) in posts {
        let (status, answer) = post(&f.app, uri, "admin", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(expected), "{uri} {body}: {message}");
    }
    let long = format!(r#"{{"comment": "{}"}}"#, "x".repeat(2001));
    let (status, _) = post(&f.app, "/api/v1/incidents/1/ack", "admin", &long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_things_are_404() {
    let f = fixture().await;
    for uri in [
        "/api/v1/devices/nope",
        "/api/v1/points/nope",
        "/api/v1/incidents/42",
        "/api/v1/points?device=nope",
    ] {
        let (status, body) = get(&f.app, uri, "guard").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
    }
    let (status, _) = post(&f.app, "/api/v1/incidents/42/resolve", "guard", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let command = r#"{"point": "strike", "value": true}"#;
    let (status, _) = post(&f.app, "/api/v1/devices/nope/commands", "admin", command).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = r#"{"point": "nope", "value": true}"#;
    let (status, _) = post(&f.app, "/api/v1/devices/plc/commands", "admin", other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_command_to_an_offline_device_fails_with_the_reason_and_is_journaled() {
    let f = fixture().await;
    let command = r#"{"point": "strike", "value": true}"#;
    let (status, body) = post(
        &f.app,
        "/api/v1/devices/plc/commands",
        "integrator",
        command,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("device offline"), "{message}");
    let (_, page) = get(&f.app, "/api/v1/events?kind=command", "guard").await;
    assert_eq!(page["items"][0]["requested_by"], "integrator");
    assert_eq!(page["items"][0]["outcome"]["status"], "failed");
}

#[tokio::test]
async fn incidents_are_listed_acknowledged_and_resolved_over_rest() {
    let f = fixture().await;
    f.journal
        .handle
        .append(observation("door", Value::Bool(true)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    f.journal.wait_for_seq(3).await;
    let (status, page) = get(&f.app, "/api/v1/incidents?state=open", "guard").await;
    assert_eq!(status, StatusCode::OK);
    let id = page["items"][0]["id"].as_u64().unwrap_or(0);
    assert_eq!(page["items"][0]["rule"], "door-open");
    assert_eq!(page["items"][0]["severity"], "high");
    let ack = format!("/api/v1/incidents/{id}/ack");
    let (status, body) = post(&f.app, &ack, "guard", r#"{"comment": "checking"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged"]["by"], "guard");
    let (status, body) = post(&f.app, &ack, "guard", "{}").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let resolve = format!("/api/v1/incidents/{id}/resolve");
    let (status, body) = post(&f.app, &resolve, "admin", r#"{"comment": "cleaner"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resolved"]["by"], "admin");
    assert_eq!(body["resolved"]["comment"], "cleaner");
    let (_, body) = get(&f.app, &format!("/api/v1/incidents/{id}"), "guard").await;
    assert_eq!(body["state"], "resolved");
    let (_, points) = get(&f.app, "/api/v1/points?device=plc", "guard").await;
    let door = points
        .as_array()
        .and_then(|p| p.iter().find(|p| p["id"] == "door"))
        .cloned();
    assert_eq!(door.as_ref().map(|d| d["value"].clone()), Some(json!(true)));
    assert_eq!(
        door.map(|d| d["quality"]["status"].clone()),
        Some(json!("good"))
    );
}

#[tokio::test]
async fn event_pages_hand_out_a_cursor_until_the_end() {
    let f = fixture().await;
    for i in 0..25 {
        f.journal
            .handle
            .append(observation("strike", Value::Bool(i % 2 == 0)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    f.journal.wait_for_seq(26).await;
    let mut uri = "/api/v1/events?point=strike&limit=10".to_owned();
    let mut seen = 0;
    loop {
        let (status, page) = get(&f.app, &uri, "guard").await;
        assert_eq!(status, StatusCode::OK);
        seen += page["items"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/events?point=strike&limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, 25);
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes_and_bearer_auth() {
    let f = fixture().await;
    let (status, doc) = get(&f.app, "/api/v1/openapi.json", "guard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    assert!(doc["paths"]["/api/v1/incidents/{id}/ack"]["post"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["Event"].is_object());
}

async fn put(app: &Router, uri: &str, token: &str, body: &str) -> (StatusCode, Json) {
    call(app, Method::PUT, uri, Some(token), Some(body)).await
}

#[tokio::test]
async fn guards_arm_and_disarm_zones_and_integrators_bypass_points() {
    let f = fixture().await;
    let (status, zones) = get(&f.app, "/api/v1/zones", "guard").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(zones[0]["id"], "lobby");
    assert_eq!(zones[0]["mode"], "armed_away");
    assert_eq!(zones[0]["armed"], true);

    let disarm = r#"{"mode": "disarmed"}"#;
    let (status, zone) = put(&f.app, "/api/v1/zones/lobby/mode", "guard", disarm).await;
    assert_eq!(status, StatusCode::OK, "{zone}");
    assert_eq!(
        (zone["mode"].clone(), zone["armed"].clone()),
        (json!("disarmed"), json!(false))
    );
    let (status, body) = put(&f.app, "/api/v1/zones/attic/mode", "guard", disarm).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = put(
        &f.app,
        "/api/v1/zones/lobby/mode",
        "guard",
        r#"{"mode": "party"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("party"),
        "{body}"
    );

    let bypass = r#"{"bypassed": true}"#;
    let (status, _) = put(&f.app, "/api/v1/points/door/bypass", "guard", bypass).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = put(&f.app, "/api/v1/points/door/bypass", "integrator", bypass).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = put(
        &f.app,
        "/api/v1/points/nothing/bypass",
        "integrator",
        bypass,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, rules) = get(&f.app, "/api/v1/rules/status", "guard").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rules["bypassed"], json!(["door"]));
    assert_eq!(rules["zones"][0]["bypassed"], json!(["door"]));
    assert_eq!(
        (rules["rules"].clone(), rules["interlock"].clone()),
        (json!(2), json!(false))
    );

    // The changes are journaled with who made them.
    let (_, events) = get(&f.app, "/api/v1/events?kind=zone_mode", "guard").await;
    assert_eq!(events["items"][0]["mode"], "disarmed");
    assert_eq!(events["items"][0]["by"], "guard");
    let (_, events) = get(&f.app, "/api/v1/events?kind=bypass", "guard").await;
    assert_eq!(events["items"][0]["point"], "door");
    assert_eq!(events["items"][0]["bypassed"], true);
    assert_eq!(events["items"][0]["by"], "integrator");
}

#[tokio::test]
async fn while_the_fire_interlock_holds_nobody_may_lock_an_egress_door() {
    let f = fixture().await;
    f.journal
        .handle
        .append_committed(observation("fire", Value::Bool(true)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lock = r#"{"point": "strike", "value": true}"#;
    let (status, body) = post(&f.app, "/api/v1/devices/plc/commands", "admin", lock).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "interlock");
    // Unlocking is still allowed (it fails here only because the device is offline).
    let unlock = r#"{"point": "strike", "value": false}"#;
    let (status, body) = post(&f.app, "/api/v1/devices/plc/commands", "admin", unlock).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (_, rules) = get(&f.app, "/api/v1/rules/status", "guard").await;
    assert_eq!(rules["interlock"], true);
}

#[tokio::test]
async fn events_export_as_json_lines_oldest_first() {
    let f = fixture().await;
    for value in [1, 2, 3] {
        f.journal
            .handle
            .append_committed(observation("door", Value::Bool(value % 2 == 1)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (status, body) = get(&f.app, "/api/v1/events/export", "guard").await;
    assert_eq!(status, StatusCode::OK);
    let text = body
        .as_str()
        .unwrap_or_else(|| panic!("not JSON Lines: {body}"));
    let events: Vec<gatehouse_protocol::Event> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    assert!(events.len() >= 4, "{text}");
    assert!(events.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let (_, body) = get(
        &f.app,
        "/api/v1/events/export?limit=2&kind=observation",
        "guard",
    )
    .await;
    assert_eq!(body.as_str().map(|t| t.lines().count()), Some(2), "{body}");
    let (status, body) = get(&f.app, "/api/v1/events/export?limit=0", "guard").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

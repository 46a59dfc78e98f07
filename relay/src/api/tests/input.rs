//! Bad input gets a 4xx that says what was wrong, never a 500.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::harness::{Api, Tenant};
use crate::store::Store;

on_both_backends!(bad_input_gets_a_4xx_that_says_what_is_wrong);

async fn bad_input_gets_a_4xx_that_says_what_is_wrong(store: &Store) -> anyhow::Result<()> {
    let api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    let incident = format!("/api/v1/incidents/{}/1", a.appliance);
    let huge = json!({"name": "x".repeat(100 * 1024)}).to_string();

    // (method, path, body, status, words the error must contain)
    let cases: Vec<(Method, String, Option<String>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some("{\"name\": ".into()),
            StatusCode::BAD_REQUEST,
            "invalid JSON body: EOF while parsing",
        ),
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some("[1, 2]".into()),
            StatusCode::BAD_REQUEST,
            "invalid JSON body: invalid type",
        ),
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some(r#"{"name": "Depot", "city": "Oslo"}"#.into()),
            StatusCode::BAD_REQUEST,
            "unknown field `city`",
        ),
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some(r#"{"name": 5}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid type: integer `5`",
        ),
        (
            Method::POST,
            "/api/v1/sites".into(),
            None,
            StatusCode::BAD_REQUEST,
            "missing field `name`",
        ),
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some(r#"{"name": "  "}"#.into()),
            StatusCode::BAD_REQUEST,
            "site name: must be 1 to 200 characters",
        ),
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some(huge),
            StatusCode::PAYLOAD_TOO_LARGE,
            "could not read the body",
        ),
        (
            Method::POST,
            "/api/v1/claims".into(),
            Some(r#"{"site": "No Such Site!", "name": "x"}"#.into()),
            StatusCode::BAD_REQUEST,
            "`No Such Site!` is not a valid id",
        ),
        (
            Method::POST,
            "/api/v1/claims".into(),
            Some(r#"{"site": "site-0000000000000000", "name": "x"}"#.into()),
            StatusCode::NOT_FOUND,
            "site `site-0000000000000000` not found",
        ),
        (
            Method::POST,
            format!("{incident}/ack"),
            Some(r#"{"comment": 3}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            Method::POST,
            format!("{incident}/ack"),
            Some(r#"{"note": "x"}"#.into()),
            StatusCode::BAD_REQUEST,
            "unknown field `note`",
        ),
        (
            Method::POST,
            format!("{incident}/ack"),
            Some(json!({"comment": "x".repeat(5000)}).to_string()),
            StatusCode::BAD_REQUEST,
            "comment: must be 1 to 4000 characters",
        ),
        (
            Method::POST,
            format!("{incident}/close"),
            None,
            StatusCode::NOT_FOUND,
            "no incident action `close`: use ack, resolve or comment",
        ),
        (
            Method::GET,
            format!("/api/v1/incidents/{}/one", a.appliance),
            None,
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            Method::GET,
            format!("/api/v1/incidents/{}/99999999999999999999", a.appliance),
            None,
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            Method::GET,
            format!("/api/v1/incidents/{}/18446744073709551615", a.appliance),
            None,
            StatusCode::BAD_REQUEST,
            "does not fit",
        ),
        (
            Method::GET,
            "/api/v1/appliances/Not%20An%20Id".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            Method::GET,
            "/api/v1/incidents?state=closed".into(),
            None,
            StatusCode::BAD_REQUEST,
            "state: ",
        ),
        (
            Method::GET,
            "/api/v1/incidents?colour=red".into(),
            None,
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            Method::GET,
            "/api/v1/incidents?limit=0".into(),
            None,
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 1000, got 0",
        ),
        (
            Method::GET,
            "/api/v1/events?limit=1001".into(),
            None,
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 1000, got 1001",
        ),
        (
            Method::GET,
            "/api/v1/events?limit=-1".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid query",
        ),
        (
            Method::GET,
            "/api/v1/events?after=zz".into(),
            None,
            StatusCode::BAD_REQUEST,
            "`after` is not a cursor from this API",
        ),
        (
            Method::GET,
            "/api/v1/events?after=7b7d".into(),
            None,
            StatusCode::BAD_REQUEST,
            "`after` is not a cursor from this API",
        ),
        (
            Method::GET,
            "/api/v1/events?from=10&until=5".into(),
            None,
            StatusCode::BAD_REQUEST,
            "`from` (10) is after `until` (5)",
        ),
        (
            Method::GET,
            "/api/v1/events?incident=x".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid query",
        ),
        (
            Method::GET,
            "/api/v1/alerts?open=maybe".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid query",
        ),
        (
            Method::GET,
            "/api/v1/stream".into(),
            None,
            StatusCode::BAD_REQUEST,
            "not a WebSocket request",
        ),
    ];
    for (method, path, body, expected, words) in cases {
        let (status, answer) = api
            .call(method.clone(), &path, Some(&a.admin), body)
            .await?;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(words),
            "{method} {path}: `{error}` lacks `{words}`"
        );
    }
    // A claim with an unknown field is refused before anything else.
    let (status, answer) = api
        .call(
            Method::POST,
            "/api/v1/claim",
            None,
            Some(r#"{"code": "x", "csr_pem": "y", "site": "z"}"#.into()),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    Ok(())
}

//! Deny by default: who gets in, and what each role may do.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::harness::{Api, Tenant};
use crate::store::Store;

on_both_backends!(
    every_route_but_health_and_claim_needs_a_known_token,
    roles_limit_what_each_token_may_do,
);

/// Every route of the API, with ids of `tenant`.
fn routes(tenant: &Tenant) -> Vec<(Method, String)> {
    let (site, appliance) = (&tenant.site, &tenant.appliance);
    let incident = format!("/api/v1/incidents/{appliance}/1");
    vec![
        (Method::GET, "/api/v1/tenant".into()),
        (Method::GET, "/api/v1/sites".into()),
        (Method::POST, "/api/v1/sites".into()),
        (Method::GET, format!("/api/v1/sites/{site}")),
        (Method::GET, "/api/v1/appliances".into()),
        (Method::GET, format!("/api/v1/appliances/{appliance}")),
        (Method::POST, "/api/v1/claims".into()),
        (Method::GET, "/api/v1/incidents".into()),
        (Method::GET, incident.clone()),
        (Method::POST, format!("{incident}/ack")),
        (Method::POST, format!("{incident}/resolve")),
        (Method::POST, format!("{incident}/comment")),
        (Method::GET, "/api/v1/events".into()),
        (Method::GET, "/api/v1/alerts".into()),
        (Method::GET, "/api/v1/stream".into()),
        (Method::GET, "/api/v1/no-such-route".into()),
        (Method::GET, "/api/v1/claim".into()),
        (Method::DELETE, "/api/v1/health".into()),
        (Method::GET, "/".into()),
    ]
}

async fn every_route_but_health_and_claim_needs_a_known_token(store: &Store) -> anyhow::Result<()> {
    let api = Api::new(store)?;
    let tenant = Tenant::new(store, "acme").await?;
    let unknown = format!("ght_{}", "0".repeat(64));
    for (method, path) in routes(&tenant) {
        let (status, body) = api.call(method.clone(), &path, None, None).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("Authorization: Bearer")),
            "{method} {path}: {body}"
        );
        let (status, body) = api
            .call(method.clone(), &path, Some(&unknown), None)
            .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body, json!({"error": "unknown or revoked token"}));
    }
    // Another scheme is no bearer token.
    let request = axum::http::Request::builder()
        .uri("/api/v1/tenant")
        .header("authorization", format!("Basic {}", tenant.admin))
        .body(axum::body::Body::empty())?;
    let response = tower::ServiceExt::oneshot(api.app.clone(), request).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The public routes.
    let (status, body) = api.call(Method::GET, "/api/v1/health", None, None).await?;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let claim = json!({"code": "AAAA", "csr_pem": "x"}).to_string();
    let (status, _) = api
        .call(Method::POST, "/api/v1/claim", None, Some(claim))
        .await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no CA in this API");

    // With a token: unknown paths are 404, wrong methods 405, both as JSON.
    let (status, body) = api.get("/api/v1/no-such-route", &tenant.viewer).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "no route for GET /api/v1/no-such-route"})
    );
    let (status, body) = api
        .call(Method::DELETE, "/api/v1/sites", Some(&tenant.admin), None)
        .await?;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        body,
        json!({"error": "DELETE is not allowed on /api/v1/sites"})
    );
    Ok(())
}

async fn roles_limit_what_each_token_may_do(store: &Store) -> anyhow::Result<()> {
    let mut api = Api::new(store)?;
    let tenant = Tenant::new(store, "acme").await?;
    let incident = format!("/api/v1/incidents/{}/1", tenant.appliance);
    let new_site = json!({"name": "Depot"});
    let new_claim = json!({"site": tenant.site, "name": "gate-2"});

    // Everyone reads.
    for token in [&tenant.viewer, &tenant.operator, &tenant.admin] {
        for path in ["/api/v1/tenant", "/api/v1/sites", "/api/v1/incidents"] {
            assert_eq!(api.get(path, token).await?.0, StatusCode::OK, "{path}");
        }
    }

    // A viewer changes nothing.
    for (path, body) in [
        ("/api/v1/sites", &new_site),
        ("/api/v1/claims", &new_claim),
        (&format!("{incident}/ack"), &json!({})),
        (&format!("{incident}/comment"), &json!({"comment": "hi"})),
    ] {
        let (status, answer) = api.post(path, &tenant.viewer, body).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
        assert_eq!(
            answer,
            json!({"error": "token `viewer` (viewer) may not do this"})
        );
    }
    // An operator handles incidents, not sites or claims.
    for (path, body) in [("/api/v1/sites", &new_site), ("/api/v1/claims", &new_claim)] {
        let (status, _) = api.post(path, &tenant.operator, body).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = api
        .post(&format!("{incident}/ack"), &tenant.operator, &json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(api.next_downlink().await.is_some());
    // An admin does all of it.
    let (status, site) = api.post("/api/v1/sites", &tenant.admin, &new_site).await?;
    assert_eq!(status, StatusCode::CREATED, "{site}");
    assert_eq!(site["name"], json!("Depot"));
    let (status, claim) = api
        .post("/api/v1/claims", &tenant.admin, &new_claim)
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{claim}");
    let (status, _) = api
        .post(&format!("{incident}/resolve"), &tenant.admin, &json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    // Nothing a refused token tried reached the appliance: one ack, one resolve.
    assert!(api.next_downlink().await.is_some());
    assert!(api.next_downlink().await.is_none());
    Ok(())
}

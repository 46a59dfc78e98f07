//! Tenant isolation: a token of tenant A finds nothing of tenant B, changes nothing of it, and
//! is told "not found", as if B's things did not exist.

use axum::http::{Method, StatusCode};
use gatehouse_protocol::IncidentState;
use serde_json::{Value, json};

use super::harness::{Api, SECOND, T0, Tenant};
use crate::store::Store;

on_both_backends!(
    a_token_of_one_tenant_gets_404_for_everything_of_another,
    lists_show_only_the_tokens_tenant,
);

async fn a_token_of_one_tenant_gets_404_for_everything_of_another(
    store: &Store,
) -> anyhow::Result<()> {
    let mut api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    let b = Tenant::new(store, "bravo").await?;
    let (site, appliance) = (&b.site, &b.appliance);
    let incident = format!("/api/v1/incidents/{appliance}/1");

    let reads = [
        format!("/api/v1/sites/{site}"),
        format!("/api/v1/appliances/{appliance}"),
        format!("/api/v1/appliances?site={site}"),
        incident.clone(),
        format!("/api/v1/incidents?appliance={appliance}"),
        format!("/api/v1/incidents?site={site}"),
        format!("/api/v1/events?appliance={appliance}"),
        format!("/api/v1/events?site={site}"),
    ];
    for path in &reads {
        let (status, body) = api.get(path, &a.admin).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        // The same answer B gets for something that does not exist at all.
        let missing = path
            .replace(site.as_str(), "site-0000000000000000")
            .replace(appliance.as_str(), "app-0000000000000000");
        let (status, _) = api.get(&missing, &b.admin).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }

    let writes = [
        (format!("{incident}/ack"), json!({})),
        (
            format!("{incident}/resolve"),
            json!({"comment": "closed by A"}),
        ),
        (
            format!("{incident}/comment"),
            json!({"comment": "A was here"}),
        ),
        (
            "/api/v1/claims".to_owned(),
            json!({"site": site, "name": "intruder"}),
        ),
    ];
    for (path, body) in &writes {
        let (status, answer) = api.post(path, &a.admin, body).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    // Nothing changed at B, nothing went to B's appliance.
    assert!(api.next_downlink().await.is_none());
    let stored = store
        .incident(&b.scope, appliance, 1)
        .await?
        .ok_or_else(|| anyhow::anyhow!("B's incident is gone"))?;
    assert_eq!(stored.state, IncidentState::Open);
    assert!(
        store
            .incident_comments(&b.scope, appliance, 1)
            .await?
            .is_empty()
    );
    assert_eq!(store.appliances(&b.scope, None).await?.len(), 1);

    // B itself still can.
    let (status, _) = api
        .post(&format!("{incident}/ack"), &b.operator, &json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

async fn lists_show_only_the_tokens_tenant(store: &Store) -> anyhow::Result<()> {
    let api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    let b = Tenant::new(store, "bravo").await?;
    // Both tenants' appliances have been silent for a day: one alert each.
    let raised = store
        .raise_offline_alerts(T0 + 86_400 * SECOND, 3600 * SECOND)
        .await?;
    assert_eq!(raised.len(), 2);

    let (_, tenant) = api.get("/api/v1/tenant", &a.viewer).await?;
    assert_eq!(tenant["id"], json!(a.scope.tenant().as_str()));
    assert_eq!(tenant["name"], json!("acme"));

    let lists = [
        "/api/v1/sites",
        "/api/v1/appliances",
        "/api/v1/incidents",
        "/api/v1/events",
        "/api/v1/alerts",
        "/api/v1/alerts?open=true",
    ];
    for path in lists {
        let (status, body) = api.get(path, &a.viewer).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let items = match &body {
            Value::Array(items) => items,
            other => other["items"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("{path}: no items in {other}"))?,
        };
        assert!(!items.is_empty(), "{path}: A's own items are missing");
        let text = body.to_string();
        for foreign in [
            b.scope.tenant().as_str(),
            b.site.as_str(),
            b.appliance.as_str(),
        ] {
            assert!(
                !text.contains(foreign),
                "{path} shows B's {foreign}: {text}"
            );
        }
        assert!(
            text.contains(a.appliance.as_str()) || text.contains(a.site.as_str()),
            "{path}"
        );
    }
    let (_, alerts) = api
        .call(
            Method::GET,
            "/api/v1/alerts?open=true",
            Some(&b.viewer),
            None,
        )
        .await?;
    assert_eq!(alerts.as_array().map(Vec::len), Some(1));
    assert_eq!(alerts[0]["appliance"], json!(b.appliance.as_str()));
    Ok(())
}

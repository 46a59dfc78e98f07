//! Incidents and events over REST: steps stored with their commands, published and sent
//! down; the commands' delivery shown; lists filtered and paged.

use anyhow::Context as _;
use axum::http::StatusCode;
use gatehouse_protocol::IncidentState;
use gatehouse_protocol::wire::pb;
use gatehouse_protocol::wire::pb::incident_action::Step;
use serde_json::{Value, json};

use super::harness::{Api, T0, Tenant, incident_record, observation};
use crate::hub::{Downlink, LiveUpdate, Received};
use crate::store::Store;

on_both_backends!(
    an_acknowledgement_is_stored_published_and_sent_to_the_appliance,
    a_comment_stays_at_the_relay_and_steps_follow_the_lifecycle,
    a_step_and_its_command_are_stored_even_when_the_publisher_is_gone,
    the_detail_shows_when_the_appliance_carried_a_command_out,
    incidents_and_events_are_filtered_and_paged,
);

/// The incident action a downlink carries.
fn action(downlink: &Downlink) -> anyhow::Result<&pb::IncidentAction> {
    match &downlink.command.action {
        Some(pb::command::Action::Incident(action)) => Ok(action),
        None => anyhow::bail!("a command without an action"),
    }
}

/// An API, the tenant `acme` and the path of its open incident 1.
async fn acme(store: &Store) -> anyhow::Result<(Api, Tenant, String)> {
    let api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    let incident = format!("/api/v1/incidents/{}/1", a.appliance);
    Ok((api, a, incident))
}

/// `POST {incident}/{step}` with `body`, as the tenant's operator.
async fn operator_step(
    api: &Api,
    a: &Tenant,
    incident: &str,
    step: &str,
    body: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    api.post(&format!("{incident}/{step}"), &a.operator, &body)
        .await
}

/// Acknowledges `incident` as the operator, expecting success and a command sent down;
/// the answer's body.
async fn acknowledged(api: &mut Api, a: &Tenant, incident: &str) -> anyhow::Result<Value> {
    let (status, body) = operator_step(api, a, incident, "ack", json!({})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(api.next_downlink().await.is_some(), "no command sent down");
    Ok(body)
}

async fn an_acknowledgement_is_stored_published_and_sent_to_the_appliance(
    store: &Store,
) -> anyhow::Result<()> {
    let mut api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    let mut live = api.hub.subscribe(&a.scope);
    let path = format!("/api/v1/incidents/{}/1/ack", a.appliance);

    let (status, body) = api
        .post(&path, &a.operator, &json!({"comment": "on my way"}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["incident"]["state"], json!("acknowledged"));
    assert_eq!(body["incident"]["updated_at"], json!(T0));
    // The appliance's JSON is shown nested, not as a string.
    assert_eq!(
        body["incident"]["body"],
        json!({"incident": 1, "state": "open"})
    );

    let downlink = api.next_downlink().await.context("no downlink queued")?;
    assert_eq!(downlink.appliance, a.appliance);
    assert_eq!(body["command_id"], json!(downlink.command.command_id));
    assert!(downlink.command.command_id.starts_with("cmd-"));
    let sent = action(&downlink)?;
    assert_eq!(
        (
            sent.incident_id,
            sent.step(),
            sent.by.as_str(),
            sent.comment.as_deref()
        ),
        // The token's name: the appliance adds `hq:` itself.
        (1, Step::Acknowledge, "operator", Some("on my way"))
    );

    let stored = store
        .incident(&a.scope, &a.appliance, 1)
        .await?
        .context("gone")?;
    assert_eq!(stored.state, IncidentState::Acknowledged);
    match live.recv().await {
        Some(Received::Update(update)) => match update.as_ref() {
            LiveUpdate::Incident(incident) => assert_eq!(incident, &stored),
            other => anyhow::bail!("not an incident update: {other:?}"),
        },
        other => anyhow::bail!("no live update: {other:?}"),
    }

    let (status, detail) = api
        .get(&format!("/api/v1/incidents/{}/1", a.appliance), &a.viewer)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["state"], json!("acknowledged"));
    assert_eq!(detail["comments"][0]["author"], json!("operator"));
    assert_eq!(detail["comments"][0]["step"], json!("acknowledge"));
    assert_eq!(detail["comments"][0]["comment"], json!("on my way"));

    // Resolving sends the other step, without a comment.
    let resolve = format!("/api/v1/incidents/{}/1/resolve", a.appliance);
    let (status, body) = api.post(&resolve, &a.admin, &json!({})).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["incident"]["state"], json!("resolved"));
    let downlink = api.next_downlink().await.context("no resolve queued")?;
    let sent = action(&downlink)?;
    assert_eq!(
        (sent.step(), sent.by.as_str(), sent.comment.as_deref()),
        (Step::Resolve, "admin", None)
    );
    let (_, detail) = api
        .get(&format!("/api/v1/incidents/{}/1", a.appliance), &a.viewer)
        .await?;
    // Both made at the test clock's one instant: in no particular order.
    let mut steps: Vec<String> = detail["commands"]
        .as_array()
        .context("no commands")?
        .iter()
        .map(|command| command["step"].to_string())
        .collect();
    steps.sort();
    assert_eq!(steps, vec![r#""acknowledge""#, r#""resolve""#]);
    Ok(())
}

async fn a_comment_stays_at_the_relay_and_steps_follow_the_lifecycle(
    store: &Store,
) -> anyhow::Result<()> {
    let (mut api, a, incident) = acme(store).await?;

    let (status, body) = operator_step(
        &api,
        &a,
        &incident,
        "comment",
        json!({"comment": "camera 3"}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["command_id"], Value::Null);
    assert_eq!(body["incident"]["state"], json!("open"));
    assert!(api.next_downlink().await.is_none(), "a comment went down");

    let (status, body) = operator_step(&api, &a, &incident, "comment", json!({})).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "missing field `comment` in the body"})
    );

    // Twice the same step: 409, nothing sent the second time.
    acknowledged(&mut api, &a, &incident).await?;
    let (status, body) = operator_step(&api, &a, &incident, "ack", json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("acknowledged")),
        "{body}"
    );
    assert!(api.next_downlink().await.is_none());

    // An incident that does not exist.
    let missing = format!("/api/v1/incidents/{}/99", a.appliance);
    for step in ["ack", "resolve", "comment"] {
        let (status, body) =
            operator_step(&api, &a, &missing, step, json!({"comment": "x"})).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{step}: {body}");
    }
    assert_eq!(api.get(&missing, &a.viewer).await?.0, StatusCode::NOT_FOUND);
    assert!(api.next_downlink().await.is_none());
    Ok(())
}

async fn a_step_and_its_command_are_stored_even_when_the_publisher_is_gone(
    store: &Store,
) -> anyhow::Result<()> {
    let (mut api, a, incident) = acme(store).await?;
    api.downlink.close();
    let (status, body) = operator_step(&api, &a, &incident, "ack", json!({})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = store
        .incident(&a.scope, &a.appliance, 1)
        .await?
        .context("gone")?;
    assert_eq!(stored.state, IncidentState::Acknowledged);
    // The command waits in the store for the publisher's periodic resend.
    let commands = store.incident_downlinks(&a.scope, &a.appliance, 1).await?;
    assert_eq!(commands.len(), 1);
    assert_eq!(body["command_id"], json!(commands[0].command_id));
    assert_eq!((commands[0].sent_at, commands[0].done_at), (None, None));
    Ok(())
}

async fn the_detail_shows_when_the_appliance_carried_a_command_out(
    store: &Store,
) -> anyhow::Result<()> {
    let (mut api, a, incident) = acme(store).await?;
    let body = acknowledged(&mut api, &a, &incident).await?;
    let (_, detail) = api.get(&incident, &a.viewer).await?;
    assert_eq!(detail["commands"][0]["command_id"], body["command_id"]);
    assert_eq!(detail["commands"][0]["by"], json!("operator"));
    assert_eq!(detail["commands"][0]["done_at"], Value::Null);

    // The appliance's own record shows the acknowledgement.
    let mut acknowledged = incident_record(5, 1);
    if let Some(change) = acknowledged.incident.as_mut() {
        change.state = IncidentState::Acknowledged;
    }
    let recorded_at = acknowledged.recorded_at;
    store.ingest(&a.appliance, &[acknowledged]).await?;
    let (_, detail) = api.get(&incident, &a.viewer).await?;
    assert_eq!(detail["commands"][0]["done_at"], json!(recorded_at));
    Ok(())
}

/// Follows `next` from `first` to the end; every item of every page.
async fn all_pages(api: &Api, first: &str, token: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (status, body) = api.get(&path, token).await?;
        anyhow::ensure!(status == StatusCode::OK, "{path}: {status} {body}");
        pages.push(body["items"].as_array().cloned().unwrap_or_default());
        match body["next"].as_str() {
            Some(next) => path = format!("{first}&after={next}"),
            None => return Ok(pages),
        }
        anyhow::ensure!(pages.len() < 20, "paging does not end");
    }
}

async fn incidents_and_events_are_filtered_and_paged(store: &Store) -> anyhow::Result<()> {
    let api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    store.ingest(&a.appliance, &[observation(5)]).await?;

    let pages = all_pages(&api, "/api/v1/events?limit=2", &a.viewer).await?;
    let seqs: Vec<Vec<Value>> = pages
        .iter()
        .map(|page| page.iter().map(|item| item["seq"].clone()).collect())
        .collect();
    assert_eq!(
        seqs,
        vec![
            vec![json!(5), json!(4)],
            vec![json!(3), json!(2)],
            vec![json!(1)]
        ]
    );
    assert_eq!(pages[0][0]["body"], json!({"seq": 5, "value": "open"}));

    let query = format!(
        "/api/v1/events?appliance={}&site={}&kind=observation&device=plc-1&point=door.lobby.contact&from={}&until={}&limit=10",
        a.appliance,
        a.site,
        T0 + 3_000_000,
        T0 + 4_000_000,
    );
    let pages = all_pages(&api, &query, &a.viewer).await?;
    let seqs: Vec<&Value> = pages.iter().flatten().map(|item| &item["seq"]).collect();
    assert_eq!(seqs, vec![&json!(4), &json!(3)]);
    let pages = all_pages(&api, "/api/v1/events?incident=1&limit=10", &a.viewer).await?;
    assert_eq!(pages.concat().len(), 1);

    let pages = all_pages(&api, "/api/v1/incidents?state=open&limit=1", &a.viewer).await?;
    assert_eq!(pages.concat().len(), 1);
    assert_eq!(pages[0][0]["title"], json!("Door held open"));
    let filtered = format!(
        "/api/v1/incidents?state=resolved&site={}&appliance={}&limit=5",
        a.site, a.appliance
    );
    assert!(
        all_pages(&api, &filtered, &a.viewer)
            .await?
            .concat()
            .is_empty()
    );

    let (_, appliances) = api
        .get(&format!("/api/v1/appliances?site={}", a.site), &a.viewer)
        .await?;
    assert_eq!(appliances[0]["id"], json!(a.appliance.as_str()));
    assert_eq!(appliances[0]["acked_seq"], json!(5));
    assert_eq!(appliances[0]["online"], json!(false));
    Ok(())
}

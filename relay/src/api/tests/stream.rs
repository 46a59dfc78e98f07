//! `GET /stream` over a real socket: one tenant's updates, lag reported (without a count),
//! caps on streams (all, and per tenant), a close when the token is revoked and when the
//! relay stops.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::harness::{Api, Options, Tenant};
use crate::api::ApiLimits;
use crate::hub::{Hub, LiveUpdate};
use crate::store::Store;

on_both_backends!(
    a_stream_carries_its_tenants_updates_and_nothing_else,
    a_lagging_stream_is_told_to_re_read,
    streams_are_capped_and_closed_when_the_relay_stops,
    one_tenant_cannot_take_every_stream,
    a_stream_closes_when_its_token_is_revoked,
);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn request(
    address: SocketAddr,
    token: &str,
) -> anyhow::Result<tungstenite::handshake::client::Request> {
    let mut request = format!("ws://{address}/api/v1/stream").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn connect(address: SocketAddr, token: &str) -> anyhow::Result<Socket> {
    Ok(tokio_tungstenite::connect_async(request(address, token)?)
        .await?
        .0)
}

/// The HTTP status a refused upgrade answered.
async fn refusal(address: SocketAddr, token: &str) -> anyhow::Result<u16> {
    match tokio_tungstenite::connect_async(request(address, token)?).await {
        Err(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(other) => anyhow::bail!("not an HTTP refusal: {other}"),
        Ok(_) => anyhow::bail!("the stream was opened"),
    }
}

/// The next text message as JSON, skipping pings.
async fn next_json(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .context("no message within 5 s")?
            .context("the stream ended")??;
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Ping(_) | Message::Pong(_) => {}
            other => anyhow::bail!("unexpected message {other:?}"),
        }
    }
}

async fn a_stream_carries_its_tenants_updates_and_nothing_else(
    store: &Store,
) -> anyhow::Result<()> {
    let api = Api::new(store)?;
    let a = Tenant::new(store, "acme").await?;
    let b = Tenant::new(store, "bravo").await?;
    let address = api.serve().await?;
    assert_eq!(refusal(address, "ght_unknown").await?, 401);
    let mut of_a = connect(address, &a.viewer).await?;
    let mut of_b = connect(address, &b.viewer).await?;

    // B's incident changes first, then A's.
    for tenant in [&b, &a] {
        let path = format!("/api/v1/incidents/{}/1/ack", tenant.appliance);
        let (status, _) = api.post(&path, &tenant.operator, &json!({})).await?;
        assert_eq!(status, StatusCode::OK);
    }
    let seen = next_json(&mut of_a).await?;
    assert_eq!(seen["type"], json!("incident"));
    assert_eq!(seen["appliance"], json!(a.appliance.as_str()), "{seen}");
    assert_eq!(seen["state"], json!("acknowledged"));
    assert_eq!(seen["body"], json!({"incident": 1, "state": "open"}));
    let seen = next_json(&mut of_b).await?;
    assert_eq!(seen["appliance"], json!(b.appliance.as_str()), "{seen}");

    // Updates published by the rest of the relay, for B then A.
    let appliance_of = async |tenant: &Tenant| {
        store
            .appliance(&tenant.scope, &tenant.appliance)
            .await?
            .context("appliance gone")
    };
    api.hub.publish(
        b.scope.tenant(),
        LiveUpdate::Appliance(appliance_of(&b).await?),
    );
    api.hub.publish(
        a.scope.tenant(),
        LiveUpdate::Appliance(appliance_of(&a).await?),
    );
    let seen = next_json(&mut of_a).await?;
    assert_eq!(
        (&seen["type"], &seen["id"]),
        (&json!("appliance"), &json!(a.appliance.as_str())),
        "{seen}"
    );
    Ok(())
}

async fn a_lagging_stream_is_told_to_re_read(store: &Store) -> anyhow::Result<()> {
    let api = Api::with(
        store,
        Options {
            hub: Hub::with_capacity(8),
            ..Options::default()
        },
    )?;
    let a = Tenant::new(store, "acme").await?;
    let address = api.serve().await?;
    let mut socket = connect(address, &a.viewer).await?;
    let appliance = store
        .appliance(&a.scope, &a.appliance)
        .await?
        .context("appliance gone")?;
    // The test runs on one thread: the server cannot forward any of these before all 50 are
    // published, and its receiver keeps only the last 8.
    for _ in 0..50 {
        api.hub
            .publish(a.scope.tenant(), LiveUpdate::Appliance(appliance.clone()));
    }
    // No count: it would be of every tenant's updates.
    assert_eq!(next_json(&mut socket).await?, json!({"type": "lagged"}));
    for _ in 0..8 {
        assert_eq!(next_json(&mut socket).await?["type"], json!("appliance"));
    }
    Ok(())
}

async fn streams_are_capped_and_closed_when_the_relay_stops(store: &Store) -> anyhow::Result<()> {
    let api = Api::with(
        store,
        Options {
            limits: ApiLimits {
                max_streams: 1,
                ..ApiLimits::default()
            },
            ..Options::default()
        },
    )?;
    let a = Tenant::new(store, "acme").await?;
    let address = api.serve().await?;
    let mut first = connect(address, &a.viewer).await?;
    assert_eq!(refusal(address, &a.viewer).await?, 503);

    api.shutdown.cancel();
    let message = tokio::time::timeout(Duration::from_secs(5), first.next())
        .await
        .context("no close within 5 s")?
        .context("ended without a close frame")??;
    let Message::Close(Some(close)) = message else {
        anyhow::bail!("not a close frame: {message:?}");
    };
    assert_eq!(close.code, CloseCode::Away);
    Ok(())
}

async fn one_tenant_cannot_take_every_stream(store: &Store) -> anyhow::Result<()> {
    let api = Api::with(
        store,
        Options {
            limits: ApiLimits {
                max_streams: 3,
                max_streams_per_tenant: 2,
                ..ApiLimits::default()
            },
            ..Options::default()
        },
    )?;
    let a = Tenant::new(store, "acme").await?;
    let b = Tenant::new(store, "bravo").await?;
    let address = api.serve().await?;
    let _first = connect(address, &a.viewer).await?;
    let second = connect(address, &a.operator).await?;
    assert_eq!(refusal(address, &a.admin).await?, 429);
    // The other tenant still gets one; then the relay is full.
    let _of_b = connect(address, &b.viewer).await?;
    assert_eq!(refusal(address, &b.operator).await?, 503);
    // A closed stream gives its tenant's place back.
    drop(second);
    let mut again = None;
    for _ in 0..50 {
        match tokio_tungstenite::connect_async(request(address, &a.admin)?).await {
            Ok((socket, _)) => {
                again = Some(socket);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        again.is_some(),
        "the closed stream's place was not given back"
    );
    Ok(())
}

async fn a_stream_closes_when_its_token_is_revoked(store: &Store) -> anyhow::Result<()> {
    let api = Api::with(
        store,
        Options {
            limits: ApiLimits {
                stream_ping_interval: Duration::from_millis(100),
                ..ApiLimits::default()
            },
            ..Options::default()
        },
    )?;
    let a = Tenant::new(store, "acme").await?;
    let address = api.serve().await?;
    let mut revoked = connect(address, &a.viewer).await?;
    // Read all the time, so that its pongs go out: the server drops a silent client after
    // two ping intervals.
    let mut kept = connect(address, &a.operator).await?;
    let (texts, mut kept_texts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = kept.next().await {
            if let Message::Text(text) = message {
                texts.send(text.to_string()).ok();
            }
        }
    });
    store.revoke_api_token(&a.scope, "viewer").await?;

    let closed = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), revoked.next())
            .await
            .context("no close within 5 s")?
            .context("ended without a close frame")??;
        match message {
            Message::Close(close) => break close.context("a close without a code")?,
            Message::Ping(_) | Message::Pong(_) => {}
            other => anyhow::bail!("unexpected message {other:?}"),
        }
    };
    assert_eq!(closed.code, CloseCode::Policy);
    assert_eq!(closed.reason.as_str(), "the token was revoked");
    // The other token's stream goes on.
    let path = format!("/api/v1/incidents/{}/1/ack", a.appliance);
    let (status, _) = api.post(&path, &a.operator, &json!({})).await?;
    assert_eq!(status, StatusCode::OK);
    let text = tokio::time::timeout(Duration::from_secs(5), kept_texts.recv())
        .await
        .context("nothing on the kept stream within 5 s")?
        .context("the kept stream ended")?;
    let seen: Value = serde_json::from_str(&text)?;
    assert_eq!(seen["type"], json!("incident"), "{seen}");
    Ok(())
}

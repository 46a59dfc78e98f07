//! `GET /api/v1/stream`: committed events (observations, device status, commands, incident
//! changes) over a WebSocket, one JSON [`Event`](gatehouse_protocol::Event) per text message.
//!
//! Resuming: a client passes `?after=SEQ` with the last `seq` it processed and receives every
//! later event, first from the journal, then live. Without `after` it receives only what is
//! committed from now on. Nothing is skipped when the client is slow: if it falls behind the
//! live bus, it catches up from the journal again. When the agent stops, the server closes
//! the socket with code 1001 (going away); clients reconnect with `after`.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::Response;
use gatehouse_protocol::Event;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::auth::{Permission, Principal};
use super::error::{ApiError, Query};
use super::{ApiState, MAX_STREAM_CLIENTS, check_seq};
use crate::journal::{JournalError, query};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Resume after this `seq` (the last one received).
    after: Option<u64>,
}

/// Upgrades to a WebSocket of committed events.
#[utoipa::path(get, path = "/api/v1/stream", tag = "stream", params(StreamParams),
    responses((status = 101, description = "WebSocket of Event messages"),
        (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<StreamParams>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    principal.require(Permission::ReadState)?;
    let after = match params.after {
        Some(after) => check_seq(after)?,
        None => state.live.last_seq(),
    };
    let Ok(slot) = state.stream_slots.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_STREAM_CLIENTS} stream clients are connected already; try again later"),
        ));
    };
    // Clients only answer pings and close; they have nothing big to say.
    let upgrade = upgrade.max_message_size(4096).max_frame_size(4096);
    Ok(upgrade.on_upgrade(move |socket| async move {
        state.metrics.stream_clients.inc();
        let result = serve(socket, &state, after).await;
        state.metrics.stream_clients.dec();
        drop(slot);
        if let Err(error) = result {
            tracing::debug!(%error, user = %principal.name, "stream closed");
        }
    }))
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("client went away: {0}")]
    Socket(#[from] axum::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("client stopped reading for {SEND_TIMEOUT:?}")]
    Stalled,
}

const CATCH_UP_PAGE: usize = 1000;

/// A client that takes longer than this to accept one message is dropped; it can resume.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

async fn send_message(socket: &mut WebSocket, message: Message) -> Result<(), StreamError> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(StreamError::Stalled),
    }
}

async fn send(socket: &mut WebSocket, event: &Event) -> Result<(), StreamError> {
    let text = serde_json::to_string(event)?;
    send_message(socket, Message::Text(text.into())).await
}

/// Sends every committed event after `*last` from the journal; advances `*last`.
async fn catch_up(
    socket: &mut WebSocket,
    state: &ApiState,
    last: &mut u64,
) -> Result<(), StreamError> {
    loop {
        let after = *last;
        let events = state
            .reader
            .run(move |connection| query::events_after(connection, after, CATCH_UP_PAGE))
            .await?;
        for event in &events {
            send(socket, event).await?;
            *last = event.seq;
        }
        if events.len() < CATCH_UP_PAGE {
            return Ok(());
        }
    }
}

async fn serve(mut socket: WebSocket, state: &ApiState, after: u64) -> Result<(), StreamError> {
    // Subscribe before reading the journal, so nothing committed in between is missed.
    let mut bus = state.live.subscribe();
    let mut last = after;
    catch_up(&mut socket, state, &mut last).await?;
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            received = bus.recv() => match received {
                Ok(event) => {
                    if event.seq > last {
                        send(&mut socket, &event).await?;
                        last = event.seq;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    state.metrics.stream_catch_ups.inc();
                    catch_up(&mut socket, state, &mut last).await?;
                }
                Err(RecvError::Closed) => return Ok(()),
            },
            incoming = socket.recv() => match incoming {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => send_message(&mut socket, Message::Ping(Vec::new().into())).await?,
            () = state.shutdown.cancelled() => {
                let close = CloseFrame { code: close_code::AWAY, reason: "the agent is stopping".into() };
                send_message(&mut socket, Message::Close(Some(close))).await?;
                return Ok(());
            }
        }
    }
}

//! `GET /stream`: the live updates of the token's tenant over a WebSocket, one JSON text
//! message each: a [`LiveUpdate`](crate::hub::LiveUpdate)
//! (`{"type": "incident" | "appliance" | "alert", ...}`, shown as REST shows it), or
//! `{"type": "lagged"}` when the client fell so far behind that updates were dropped (re-read
//! over REST). The lag carries no count: the hub is shared by every tenant, so how many
//! updates went by would tell how busy the other tenants are.
//!
//! There is no replay: a client that connects or reconnects reads the current state over REST
//! after its stream is open.
//!
//! # Limits
//!
//! - The server pings every `ApiLimits::stream_ping_interval` (30 s) and drops a client that
//!   has said nothing (not even a pong) for more than two intervals; that is noticed at a
//!   ping, so a silent client is gone within three intervals. A client that takes longer than
//!   [`SEND_TIMEOUT`] to accept a message is dropped too.
//! - A stream lives no longer than its token: at each ping it checks that the token still
//!   exists, and closes with 1008 (policy violation) once it is revoked.
//! - At most `ApiLimits::max_streams` are served at once (503 beyond), and at most
//!   `ApiLimits::max_streams_per_tenant` of one tenant (429 beyond), so one tenant's clients
//!   cannot take every stream.
//! - When the relay stops, streams close with 1001 (going away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::auth::{Permission, require};
use super::error::ApiError;
use super::{Context, view};
use crate::hub::{HubReceiver, Received};
use crate::store::{Principal, SecretHash, TenantId};

/// A client that takes longer than this to accept one message is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the check of a stream's token may take; past it the stream goes on and the token
/// is checked again at the next ping.
const TOKEN_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients only answer pings and close: they have nothing big to say.
const MAX_CLIENT_MESSAGE: usize = 4096;

pub(super) async fn stream(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Extension(token): Extension<SecretHash>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    require(&principal, Permission::Read)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("not a WebSocket request: {}", rejection.body_text()),
        )
    })?;
    let slot = context
        .stream_slots
        .take(principal.scope.tenant(), &context.metrics.stream_clients)?;
    // Subscribed before the upgrade completes: whatever the client reads over REST once its
    // socket is open, later changes reach it.
    let updates = context.state.hub.subscribe(&principal.scope);
    let upgrade = upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    Ok(upgrade.on_upgrade(move |socket| async move {
        let session = Session {
            context: &context,
            principal: &principal,
            token: &token,
        };
        let outcome = session.serve(socket, updates).await;
        drop(slot);
        if let Err(error) = outcome {
            tracing::debug!(%error, token = principal.name, "stream closed");
        }
    }))
}

/// The streams being served: one permit of a semaphore each, and a count per tenant.
pub(super) struct StreamSlots {
    all: Arc<Semaphore>,
    max: usize,
    per_tenant: Mutex<HashMap<TenantId, usize>>,
    max_per_tenant: usize,
}

impl StreamSlots {
    pub(super) fn new(max: usize, max_per_tenant: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            all: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            per_tenant: Mutex::new(HashMap::new()),
            max_per_tenant,
        })
    }

    /// A slot for one more stream of `tenant`: 429 when the tenant has all it may have, 503
    /// when the relay has.
    fn take(self: &Arc<Self>, tenant: &TenantId, clients: &Gauge) -> Result<StreamSlot, ApiError> {
        let mut per_tenant = self
            .per_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = per_tenant.get(tenant).copied().unwrap_or(0);
        if count >= self.max_per_tenant {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this tenant has {} streams open already, the most it may; close one first",
                    self.max_per_tenant
                ),
            ));
        }
        let Ok(permit) = Arc::clone(&self.all).try_acquire_owned() else {
            return Err(ApiError::unavailable(format!(
                "{} streams are open already; try again later",
                self.max
            )));
        };
        per_tenant.insert(tenant.clone(), count + 1);
        clients.inc();
        Ok(StreamSlot {
            slots: Arc::clone(self),
            tenant: tenant.clone(),
            clients: clients.clone(),
            _permit: permit,
        })
    }
}

/// One stream's place; given back when dropped.
struct StreamSlot {
    slots: Arc<StreamSlots>,
    tenant: TenantId,
    clients: Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.clients.dec();
        let mut per_tenant = self
            .slots
            .per_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_tenant.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_tenant.remove(&self.tenant);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("client went away: {0}")]
    Socket(#[from] axum::Error),
    #[error("client stopped reading for {SEND_TIMEOUT:?}")]
    Stalled,
    #[error("client silent for {0:?}")]
    Silent(Duration),
    #[error("an update could not be shown: {0}")]
    View(String),
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), StreamError> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(StreamError::Stalled),
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) -> Result<(), StreamError> {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    send(socket, Message::Close(Some(frame))).await
}

/// The text message for what the hub gave.
fn frame(received: &Received) -> Result<String, StreamError> {
    let value = match received {
        Received::Update(update) => {
            view(update.as_ref()).map_err(|error| StreamError::View(error.message))?
        }
        Received::Lagged => serde_json::json!({"type": "lagged"}),
    };
    Ok(value.to_string())
}

/// One client's stream.
struct Session<'a> {
    context: &'a Context,
    principal: &'a Principal,
    token: &'a SecretHash,
}

impl Session<'_> {
    async fn serve(
        &self,
        mut socket: WebSocket,
        mut updates: HubReceiver,
    ) -> Result<(), StreamError> {
        let interval = self.context.state.limits.stream_ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut last_heard = Instant::now();
        let shutdown = &self.context.state.shutdown;
        loop {
            tokio::select! {
                received = updates.recv() => match received {
                    Some(received) => {
                        if received == Received::Lagged {
                            self.context.metrics.streams_lagged.inc();
                        }
                        let text = frame(&received)?;
                        send(&mut socket, Message::Text(text.into())).await?;
                    }
                    None => return Ok(()),
                },
                incoming = socket.recv() => match incoming {
                    None | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Err(error)) => return Err(error.into()),
                    Some(Ok(_)) => last_heard = Instant::now(),
                },
                _ = ping.tick() => {
                    let silent = last_heard.elapsed();
                    if silent > 2 * interval {
                        return Err(StreamError::Silent(silent));
                    }
                    if !self.token_still_valid().await {
                        tracing::info!(token = self.principal.name, "stream closed: its token was revoked");
                        return close(&mut socket, close_code::POLICY, "the token was revoked").await;
                    }
                    send(&mut socket, Message::Ping(Vec::new().into())).await?;
                }
                () = shutdown.cancelled() => {
                    return close(&mut socket, close_code::AWAY, "the relay is stopping").await;
                }
            }
        }
    }

    /// Whether the stream's token still speaks for its tenant. When the database cannot say,
    /// the stream goes on: the next ping asks again.
    async fn token_still_valid(&self) -> bool {
        let store = &self.context.state.store;
        match tokio::time::timeout(TOKEN_CHECK_TIMEOUT, store.token_principal(self.token)).await {
            Ok(Ok(Some(current))) => current.scope == self.principal.scope,
            Ok(Ok(None)) => false,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not check a stream's token; asking again at the next ping");
                true
            }
            Err(_) => {
                tracing::warn!(
                    "checking a stream's token timed out; asking again at the next ping"
                );
                true
            }
        }
    }
}

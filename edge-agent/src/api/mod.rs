//! The local REST API and WebSocket stream under `/api/v1`, plus `/metrics`.
//!
//! [`router`] builds everything from an [`ApiState`] and can be driven in tests with
//! `tower::ServiceExt::oneshot`, no socket needed. Every request, even to an unknown path,
//! passes [`auth::authenticate`], which lets only `/api/v1/health` and the LAN console's static
//! files ([`console`]) through without a token, and `/media/v1` with a signed URL; handlers
//! then check the permission they need.

pub mod auth;
mod catalog;
mod console;
mod devices;
pub mod error;
mod events;
mod incidents;
mod stream;
mod system;
mod video;
mod zones;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use self::catalog::{Catalog, DeviceView, PointView};
use self::error::ApiError;
use crate::adapters::CommandRouter;
use crate::journal::{JournalHandle, Reader};
use crate::live::Live;
use crate::metrics::{Metrics, StatusLabels};

/// Everything the handlers share.
pub struct ApiState {
    pub catalog: Catalog,
    pub users: auth::Users,
    pub live: Arc<Live>,
    pub reader: Reader,
    pub journal: JournalHandle,
    pub commands: CommandRouter,
    pub metrics: Arc<Metrics>,
    /// How long a command may wait for its device.
    pub command_timeout: Duration,
    /// Cancelled when the agent stops; long-lived streams end on it.
    pub shutdown: CancellationToken,
    /// One permit per stream client allowed at once.
    pub stream_slots: Arc<Semaphore>,
    /// Cameras and clips, when the config has cameras.
    pub video: Option<Arc<crate::video::service::Video>>,
}

/// Most stream clients served at once; more get 503.
pub const MAX_STREAM_CLIENTS: usize = 64;
/// Largest request body accepted (commands and comments are small).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP surface.
pub fn router(state: Arc<ApiState>) -> Router {
    // Signed URLs instead of bearer tokens (see video.rs); every route of it is checked.
    let media = Router::new()
        .route(
            "/media/v1/cameras/{camera}/live/{file}",
            get(video::live_file),
        )
        .route(
            "/media/v1/cameras/{camera}/snapshot.jpg",
            get(video::camera_snapshot),
        )
        .route("/media/v1/clips/{file}", get(video::clip_file))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            video::verify_signature,
        ));
    Router::new()
        .route("/", get(console::root))
        .route("/console/", get(console::file))
        .route("/console/{file}", get(console::file))
        .route("/api/v1/health", get(system::health))
        .route("/api/v1/devices", get(devices::list_devices))
        .route("/api/v1/devices/{id}", get(devices::get_device))
        .route("/api/v1/devices/{id}/commands", post(devices::command))
        .route("/api/v1/points", get(devices::list_points))
        .route("/api/v1/points/{id}", get(devices::get_point))
        .route("/api/v1/points/{id}/bypass", put(zones::bypass))
        .route("/api/v1/zones", get(zones::list_zones))
        .route("/api/v1/zones/{id}/mode", put(zones::set_mode))
        .route("/api/v1/rules/status", get(zones::rules_status))
        .route("/api/v1/events", get(events::list_events))
        .route("/api/v1/events/export", get(events::export_events))
        .route("/api/v1/incidents", get(incidents::list_incidents))
        .route("/api/v1/incidents/{id}", get(incidents::get_incident))
        .route("/api/v1/incidents/{id}/ack", post(incidents::acknowledge))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/cameras", get(video::list_cameras))
        .route("/api/v1/clips", get(video::list_clips))
        .route("/api/v1/clips/{id}", get(video::get_clip))
        .route("/api/v1/openapi.json", get(system::openapi))
        .route("/metrics", get(system::metrics))
        .merge(media)
        .fallback(system::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost first: count every response, then authenticate every request.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

/// Counts responses by status, for `/metrics`.
async fn count_responses(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    state
        .metrics
        .api_responses
        .get_or_create(&StatusLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    system::ApiDoc::openapi()
}

/// Limits for page sizes.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(limit @ 1..=1000) => Ok(limit),
        Some(other) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and 1000, got {other}"
        ))),
    }
}

/// Parses a cursor handed out by an earlier page.
pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    cursor
        .map(|text| match text.parse::<u64>() {
            Ok(seq) => check_seq(seq),
            Err(_) => Err(ApiError::bad_request(format!(
                "`{text}` is not a cursor from this API"
            ))),
        })
        .transpose()
}

/// Sequence numbers are SQLite integers: anything above i64::MAX cannot exist.
pub(crate) fn check_seq(seq: u64) -> Result<u64, ApiError> {
    if seq > i64::MAX as u64 {
        Err(ApiError::bad_request(format!(
            "{seq} is beyond any sequence number"
        )))
    } else {
        Ok(seq)
    }
}

#[cfg(test)]
mod tests;

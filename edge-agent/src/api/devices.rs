//! Devices, points and commands.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use gatehouse_protocol::{CommandOutcome, CommandRequest, DeviceId, PointId};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::auth::{Permission, Principal};
use super::error::{ApiError, Json, Path, Query};
use super::{ApiState, DeviceView, PointView};
use crate::adapters::{CommandEnvelope, RouteError};

/// Every device with its status.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    responses((status = 200, body = Vec<DeviceView>), (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_devices(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    principal.require(Permission::ReadState)?;
    Ok(Json(state.catalog.devices(&state.live)))
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_device(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<DeviceId>,
) -> Result<Json<DeviceView>, ApiError> {
    principal.require(Permission::ReadState)?;
    state
        .catalog
        .device(&id, &state.live)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("device `{id}` does not exist")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PointFilter {
    /// Only the points of this device.
    device: Option<DeviceId>,
}

/// Every point with its latest value and quality.
#[utoipa::path(get, path = "/api/v1/points", tag = "points", params(PointFilter),
    responses((status = 200, body = Vec<PointView>), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_points(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<PointFilter>,
) -> Result<Json<Vec<PointView>>, ApiError> {
    principal.require(Permission::ReadState)?;
    if let Some(device) = &filter.device
        && !state.catalog.has_device(device)
    {
        return Err(ApiError::not_found(format!(
            "device `{device}` does not exist"
        )));
    }
    Ok(Json(
        state.catalog.points(filter.device.as_ref(), &state.live),
    ))
}

/// One point.
#[utoipa::path(get, path = "/api/v1/points/{id}", tag = "points",
    params(("id" = String, Path, description = "point id")),
    responses((status = 200, body = PointView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_point(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<PointId>,
) -> Result<Json<PointView>, ApiError> {
    principal.require(Permission::ReadState)?;
    state
        .catalog
        .point(&id, &state.live)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("point `{id}` does not exist")))
}

/// The result of a command.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommandResponse {
    pub outcome: CommandOutcome,
    /// The journal record of the command.
    pub seq: u64,
}

/// Writes a value to a writable point. 200 when the device confirmed it (the command is
/// journaled before the answer); 502 when the device refused or is offline; 504 when it did
/// not confirm, in which case the write may or may not have taken effect.
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    request_body = CommandRequest,
    responses((status = 200, body = CommandResponse), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "refused by the life-safety interlock", body = super::error::ErrorBody),
        (status = 502, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody),
        (status = 504, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn command(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(device): Path<DeviceId>,
    Json(request): Json<CommandRequest>,
) -> Result<Json<CommandResponse>, ApiError> {
    principal.require(Permission::CommandDevices)?;
    if !state.catalog.has_device(&device) {
        return Err(ApiError::not_found(format!(
            "device `{device}` does not exist"
        )));
    }
    match state.catalog.point_owner(&request.point) {
        Some((owner, writable)) if owner == &device => {
            if !writable {
                return Err(ApiError::bad_request(format!(
                    "point `{}` is not writable",
                    request.point
                )));
            }
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "device `{device}` has no point `{}`",
                request.point
            )));
        }
    }
    // The life-safety interlock has the last word, whoever asks.
    if let Err(refusal) = state
        .journal
        .check_command(request.point.clone(), request.value.clone())
        .await?
    {
        tracing::warn!(user = %principal.name, point = %request.point, %refusal,
            "command refused by the interlock");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "interlock",
            refusal.to_string(),
        ));
    }
    let (reply, outcome) = oneshot::channel();
    let envelope = CommandEnvelope {
        device: device.clone(),
        request,
        requested_by: principal.name.clone(),
        deadline: tokio::time::Instant::now() + state.command_timeout,
        reply,
    };
    state
        .commands
        .send(&device, envelope)
        .map_err(|error| match error {
            RouteError::UnknownDevice(_) => ApiError::not_found(error.to_string()),
            RouteError::Busy(_) | RouteError::Stopped(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string())
            }
        })?;
    let not_confirmed =
        |reason: String| ApiError::new(StatusCode::GATEWAY_TIMEOUT, "device_timeout", reason);
    // A little longer than the adapter's own deadline, so its verdict normally arrives.
    match tokio::time::timeout(state.command_timeout + Duration::from_secs(1), outcome).await {
        Ok(Ok((CommandOutcome::Done, seq))) => Ok(Json(CommandResponse {
            outcome: CommandOutcome::Done,
            seq,
        })),
        Ok(Ok((CommandOutcome::Failed { reason }, _))) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "device_refused",
            reason,
        )),
        Ok(Ok((CommandOutcome::Unconfirmed { reason }, _))) => Err(not_confirmed(format!(
            "{reason}; the write may have taken effect: read the point"
        ))),
        Ok(Ok((CommandOutcome::Sent, _))) => Err(not_confirmed(
            "the command was sent without a confirmation; the write may have taken effect: read the point"
                .to_owned(),
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the agent is stopping",
        )),
        Err(_) => Err(not_confirmed(format!(
            "no outcome from device `{device}` within {} ms: a command not yet sent by then is dropped, one already sent may have taken effect",
            state.command_timeout.as_millis()
        ))),
    }
}

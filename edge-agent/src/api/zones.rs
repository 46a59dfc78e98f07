//! Zones and the rules' state: arm and disarm, bypass a sensor, the fire interlock.
//!
//! Every change goes through the journal writer, where the rules engine runs: it is
//! journaled (a `zone_mode` event) and takes effect in the same transaction, and the answer
//! comes after COMMIT.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use gatehouse_protocol::{PointId, ZoneId, ZoneMode};
use gatehouse_rules::engine::Refusal;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::{Permission, Principal};
use super::error::{ApiError, Json, Path};

/// A zone and its mode.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ZoneStatus {
    pub id: ZoneId,
    pub name: String,
    pub mode: ZoneMode,
    /// When an armed mode takes (or took) effect: after the exit delay.
    #[schema(value_type = String, format = DateTime)]
    pub effective_at: Timestamp,
    /// Whether the zone counts as armed now (armed, and its exit delay over).
    pub armed: bool,
    /// Its points that are bypassed until it is next disarmed.
    pub bypassed: Vec<PointId>,
}

/// The rules' state as a whole.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RulesStatus {
    /// How many rules are loaded.
    pub rules: usize,
    /// Whether the life-safety interlock holds egress doors released (see docs/rules.md).
    pub interlock: bool,
    pub bypassed: Vec<PointId>,
    pub zones: Vec<ZoneStatus>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    pub mode: ZoneMode,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BypassRequest {
    pub bypassed: bool,
}

fn statuses(state: &ApiState) -> (Vec<ZoneStatus>, crate::live::RulesView) {
    let view = state.live.rules();
    let now = Timestamp::now();
    let zones = state
        .catalog
        .zones()
        .map(|(id, name)| {
            let current = view.zones.iter().find(|zone| &zone.id == id);
            let (mode, effective_at) = current
                .map_or((ZoneMode::Disarmed, Timestamp::UNIX_EPOCH), |zone| {
                    (zone.mode, zone.effective_at)
                });
            ZoneStatus {
                id: id.clone(),
                name: name.to_owned(),
                mode,
                effective_at,
                armed: mode.is_armed() && effective_at <= now,
                bypassed: view
                    .bypassed
                    .iter()
                    .filter(|point| state.catalog.point_zone(point) == Some(id))
                    .cloned()
                    .collect(),
            }
        })
        .collect();
    (zones, view)
}

/// Every zone with its mode.
#[utoipa::path(get, path = "/api/v1/zones", tag = "zones",
    responses((status = 200, body = Vec<ZoneStatus>), (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_zones(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<ZoneStatus>>, ApiError> {
    principal.require(Permission::ReadState)?;
    Ok(Json(statuses(&state).0))
}

/// The rules' state: the interlock, bypassed points, zones.
#[utoipa::path(get, path = "/api/v1/rules/status", tag = "zones",
    responses((status = 200, body = RulesStatus), (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rules_status(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<RulesStatus>, ApiError> {
    principal.require(Permission::ReadState)?;
    let (zones, view) = statuses(&state);
    Ok(Json(RulesStatus {
        rules: view.rules,
        interlock: view.interlock,
        bypassed: view.bypassed,
        zones,
    }))
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::UnknownZone(_) | Refusal::UnknownPoint(_) => {
            ApiError::not_found(refusal.to_string())
        }
        Refusal::Interlock(_) => {
            ApiError::new(StatusCode::CONFLICT, "interlock", refusal.to_string())
        }
    }
}

/// Arms or disarms a zone. Arming with an exit delay answers at once with `armed: false`
/// until the delay is over.
#[utoipa::path(put, path = "/api/v1/zones/{id}/mode", tag = "zones",
    params(("id" = String, Path, description = "zone id")),
    request_body = ModeRequest,
    responses((status = 200, body = ZoneStatus), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_mode(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<ZoneId>,
    Json(request): Json<ModeRequest>,
) -> Result<Json<ZoneStatus>, ApiError> {
    principal.require(Permission::ArmZones)?;
    if state.catalog.zones().all(|(zone, _)| zone != &id) {
        return Err(ApiError::not_found(format!("zone `{id}` does not exist")));
    }
    state
        .journal
        .set_mode(id.clone(), request.mode, principal.name.clone())
        .await?
        .map_err(refused)?;
    statuses(&state)
        .0
        .into_iter()
        .find(|zone| zone.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("zone `{id}` does not exist")))
}

/// Bypasses a point (its alarms are ignored until its zone is next disarmed; life-safety
/// rules still see it), or ends the bypass.
#[utoipa::path(put, path = "/api/v1/points/{id}/bypass", tag = "zones",
    params(("id" = String, Path, description = "point id")),
    request_body = BypassRequest,
    responses((status = 204), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn bypass(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<PointId>,
    Json(request): Json<BypassRequest>,
) -> Result<StatusCode, ApiError> {
    principal.require(Permission::BypassPoints)?;
    state
        .journal
        .bypass(id, request.bypassed, principal.name.clone())
        .await?
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

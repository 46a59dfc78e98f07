//! Health, metrics, the OpenAPI document and the JSON 404.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::{Permission, Principal};
use super::error::{ApiError, Json};
use super::{ApiState, devices, events, incidents, stream, video, zones};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the journal cannot commit (disk full, I/O errors).
    pub status: &'static str,
    pub version: &'static str,
    /// Why the journal cannot commit, while it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
}

/// Liveness for watchdogs and load balancers; the only route without a token, so it says
/// nothing about the site. 503 while the journal cannot commit.
#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<Health>) {
    let failing = state.live.journal_failing();
    let status = if failing.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let health = Health {
        status: if failing.is_some() { "degraded" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        journal: failing.map(|(reason, since)| format!("commits failing since {since}: {reason}")),
    };
    (status, Json(health))
}

/// Prometheus metrics (admin).
pub async fn metrics(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    principal.require(Permission::ReadMetrics)?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document")), security(("bearer" = [])))]
pub async fn openapi(Extension(principal): Extension<Principal>) -> Result<Response, ApiError> {
    principal.require(Permission::ReadState)?;
    Ok(axum::Json(ApiDoc::openapi()).into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /api/v1/openapi.json")
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse edge agent", description = "Local REST API of a Gatehouse appliance. \
        Every route except /api/v1/health needs `Authorization: Bearer <token>`."),
    paths(
        health, openapi,
        devices::list_devices, devices::get_device, devices::command,
        devices::list_points, devices::get_point,
        events::list_events, events::export_events,
        zones::list_zones, zones::set_mode, zones::bypass, zones::rules_status,
        incidents::list_incidents, incidents::get_incident, incidents::acknowledge, incidents::resolve,
        stream::stream,
        video::list_cameras, video::list_clips, video::get_clip,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

//! Incidents: list, read, acknowledge, resolve.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use gatehouse_protocol::{Incident, IncidentState, Transition};
use serde::{Deserialize, Serialize};

use super::auth::{Permission, Principal};
use super::error::{ApiError, Json, Path, Query};
use super::{ApiState, page_limit, parse_cursor};
use crate::journal::IncidentError;
use crate::journal::{IncidentAction, IncidentQuery, query};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IncidentFilter {
    state: Option<IncidentState>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<usize>,
}

/// A page of incidents, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentPage {
    pub items: Vec<Incident>,
    pub next_cursor: Option<String>,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentFilter),
    responses((status = 200, body = IncidentPage), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_incidents(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<IncidentFilter>,
) -> Result<Json<IncidentPage>, ApiError> {
    principal.require(Permission::ReadState)?;
    let query = IncidentQuery {
        state: filter.state,
        cursor: parse_cursor(filter.cursor.as_deref())?,
        limit: page_limit(filter.limit)?,
    };
    let page = state
        .reader
        .run(move |connection| query::incidents(connection, &query))
        .await?;
    Ok(Json(IncidentPage {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// One incident.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = u64, Path, description = "incident id")),
    responses((status = 200, body = Incident), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_incident(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<u64>,
) -> Result<Json<Incident>, ApiError> {
    principal.require(Permission::ReadState)?;
    state
        .reader
        .run(move |connection| query::incident(connection, id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("incident {id} does not exist")))
}

/// What a person says when moving an incident along.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Free text, kept with the incident (at most 2000 characters).
    pub comment: Option<String>,
}

async fn change(
    state: &ApiState,
    principal: &Principal,
    id: u64,
    action: IncidentAction,
    request: TransitionRequest,
) -> Result<Json<Incident>, ApiError> {
    principal.require(Permission::HandleIncidents)?;
    if request
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > 2000)
    {
        return Err(ApiError::bad_request(
            "comment is longer than 2000 characters",
        ));
    }
    let transition = Transition {
        by: principal.name.clone(),
        at: jiff::Timestamp::now(),
        comment: request.comment,
    };
    match state.journal.change_incident(id, action, transition).await {
        Ok(incident) => Ok(Json(incident)),
        Err(IncidentError::NotFound(_)) => {
            Err(ApiError::not_found(format!("incident {id} does not exist")))
        }
        Err(IncidentError::Lifecycle(refused)) => Err(ApiError::conflict(refused.to_string())),
        Err(IncidentError::Journal(error)) => Err(ApiError::internal(error)),
    }
}

/// open → acknowledged.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/ack", tag = "incidents",
    params(("id" = u64, Path, description = "incident id")),
    request_body = TransitionRequest,
    responses((status = 200, body = Incident), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<u64>,
    Json(request): Json<TransitionRequest>,
) -> Result<Json<Incident>, ApiError> {
    change(&state, &principal, id, IncidentAction::Acknowledge, request).await
}

/// open or acknowledged → resolved.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = u64, Path, description = "incident id")),
    request_body = TransitionRequest,
    responses((status = 200, body = Incident), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<u64>,
    Json(request): Json<TransitionRequest>,
) -> Result<Json<Incident>, ApiError> {
    change(&state, &principal, id, IncidentAction::Resolve, request).await
}

//! `GET /incidents`, `GET /incidents/{appliance}/{id}` and the operator steps
//! `POST /incidents/{appliance}/{id}/ack|resolve|comment`.
//!
//! An acknowledgement or a resolution is stored together with the command that carries it to
//! the appliance, in one transaction ([`Store::step_incident_with_downlink`]; the store
//! refuses a step the lifecycle does not allow: 409), then published to the tenant's streams,
//! then handed to the downlink publisher so the command goes out at once. That last hand-over
//! never waits and may fail (the relay is stopping, the publisher is jammed): the command is
//! stored either way, and the publisher's periodic resend sends whatever its appliance has not
//! carried out. A comment stays at the relay.
//!
//! The operator is named by the token's name: as the author of the step at the relay, and in
//! the command (the appliance records it as `hq:<name>`).
//!
//! [`Store::step_incident_with_downlink`]: crate::store::Store::step_incident_with_downlink

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use gatehouse_protocol::{ApplianceId, IncidentState, SiteId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Permission, require};
use super::error::{ApiError, JsonBody, Path, Query};
use super::{Context, PageOut, list_scope, page_request, view, views};
use crate::hub::{Downlink, LiveUpdate};
use crate::store::{DownlinkStep, IncidentFilter, Principal, StoredDownlink};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    state: Option<String>,
    site: Option<SiteId>,
    appliance: Option<ApplianceId>,
    limit: Option<u32>,
    after: Option<String>,
}

pub(super) async fn list(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Json<PageOut>, ApiError> {
    let state = params
        .state
        .as_deref()
        .map(str::parse::<IncidentState>)
        .transpose()
        .map_err(|reason| ApiError::bad_request(format!("state: {reason}")))?;
    let scope = list_scope(
        &context,
        &principal,
        params.site.as_ref(),
        params.appliance.as_ref(),
    )
    .await?;
    let page = page_request(params.limit, params.after.as_deref())?;
    let filter = IncidentFilter {
        state,
        site: params.site,
        appliance: params.appliance,
    };
    let found = context.state.store.incidents(scope, &filter, &page).await?;
    Ok(Json(PageOut::new(found)?))
}

/// An incident, what operators did to it at the relay, and whether the appliance has carried
/// it out: each command has `sent_at` (last handed to the broker) and `done_at` (when the
/// appliance's own record showed the step; `null` while pending).
#[derive(Debug, Serialize)]
pub(super) struct IncidentDetail {
    #[serde(flatten)]
    incident: Value,
    comments: Vec<Value>,
    commands: Vec<Value>,
}

pub(super) async fn get_one(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Path((appliance, id)): Path<(ApplianceId, u64)>,
) -> Result<Json<IncidentDetail>, ApiError> {
    require(&principal, Permission::Read)?;
    let store = &context.state.store;
    let incident = store
        .incident(&principal.scope, &appliance, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("incident `{appliance}/{id}` not found")))?;
    let comments = store
        .incident_comments(&principal.scope, &appliance, id)
        .await?;
    let commands = store
        .incident_downlinks(&principal.scope, &appliance, id)
        .await?;
    Ok(Json(IncidentDetail {
        incident: view(&incident)?,
        comments: views(&comments)?,
        commands: views(&commands)?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepBody {
    comment: Option<String>,
}

/// The incident after a step, and the id of the command that carries the step to the
/// appliance (`null` for a comment).
#[derive(Debug, Serialize)]
pub(super) struct StepOutcome {
    incident: Value,
    command_id: Option<String>,
}

/// `POST /incidents/{appliance}/{id}/{action}`, `action` being `ack`, `resolve` or `comment`.
pub(super) async fn take_step(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Path((appliance, id, action)): Path<(ApplianceId, u64, String)>,
    JsonBody(body): JsonBody<StepBody>,
) -> Result<Json<StepOutcome>, ApiError> {
    let step = match action.as_str() {
        "ack" => Some(DownlinkStep::Acknowledge),
        "resolve" => Some(DownlinkStep::Resolve),
        "comment" => None,
        other => {
            return Err(ApiError::not_found(format!(
                "no incident action `{other}`: use ack, resolve or comment"
            )));
        }
    };
    require(&principal, Permission::HandleIncidents)?;
    let (store, scope) = (&context.state.store, &principal.scope);
    let by = principal.name.as_str();
    let now = context.now();
    let comment = body.comment.as_deref();
    let (incident, command) = match step {
        Some(step) => {
            let (incident, command) = store
                .step_incident_with_downlink(scope, &appliance, id, step, by, comment, now)
                .await?;
            (incident, Some(command))
        }
        None => {
            let comment = comment
                .ok_or_else(|| ApiError::bad_request("missing field `comment` in the body"))?;
            let incident = store
                .comment_incident(scope, &appliance, id, by, comment, now)
                .await?;
            (incident, None)
        }
    };
    tracing::info!(
        %appliance,
        incident = id,
        step = step.map_or("comment", DownlinkStep::as_str),
        by,
        "incident step taken at the relay"
    );
    let shown = view(&incident)?;
    context
        .state
        .hub
        .publish(scope.tenant(), LiveUpdate::Incident(incident));
    if let Some(command) = &command {
        send_now(&context, command);
    }
    Ok(Json(StepOutcome {
        incident: shown,
        command_id: command.map(|command| command.command_id),
    }))
}

/// Hands a new command to the downlink publisher, without waiting. When it cannot take it
/// (stopping, or jammed), the periodic resend sends it instead, a minute or two later.
fn send_now(context: &Context, command: &StoredDownlink) {
    if let Err(error) = context.state.downlink.try_send(Downlink::from(command)) {
        tracing::warn!(
            appliance = %command.appliance,
            command_id = command.command_id,
            %error,
            "a new command waits for the periodic resend: the downlink publisher did not take it"
        );
    }
}

//! `GET /events`: the records appliances sent, newest first, filtered and paged.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use gatehouse_protocol::{ApplianceId, SiteId};
use serde::Deserialize;

use super::error::{ApiError, Query};
use super::{Context, PageOut, list_scope, page_request};
use crate::store::{EventFilter, Micros, Principal};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    site: Option<SiteId>,
    appliance: Option<ApplianceId>,
    /// `observation`, `device_status`, `command`, `incident` or `evicted`.
    kind: Option<String>,
    device: Option<String>,
    point: Option<String>,
    incident: Option<u64>,
    /// Recorded at or after, µs since the Unix epoch.
    from: Option<Micros>,
    /// Recorded at or before, µs since the Unix epoch.
    until: Option<Micros>,
    limit: Option<u32>,
    after: Option<String>,
}

pub(super) async fn list(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Json<PageOut>, ApiError> {
    let scope = list_scope(
        &context,
        &principal,
        params.site.as_ref(),
        params.appliance.as_ref(),
    )
    .await?;
    if let (Some(from), Some(until)) = (params.from, params.until)
        && from > until
    {
        return Err(ApiError::bad_request(format!(
            "`from` ({from}) is after `until` ({until})"
        )));
    }
    let page = page_request(params.limit, params.after.as_deref())?;
    let filter = EventFilter {
        site: params.site,
        appliance: params.appliance,
        kind: params.kind,
        device: params.device,
        point: params.point,
        incident: params.incident,
        from: params.from,
        until: params.until,
    };
    let found = context.state.store.events(scope, &filter, &page).await?;
    Ok(Json(PageOut::new(found)?))
}

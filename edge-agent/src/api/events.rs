//! Querying the journal.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use gatehouse_protocol::{DeviceId, Event, EventKind, PointId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::auth::{Permission, Principal};
use super::error::{ApiError, Json, Query};
use super::{ApiState, page_limit, parse_cursor};
use crate::journal::query;
use crate::journal::{EventQuery, Order};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Recorded at or after this instant (RFC 3339).
    #[param(value_type = Option<String>)]
    from: Option<Timestamp>,
    /// Recorded before this instant (RFC 3339).
    #[param(value_type = Option<String>)]
    to: Option<Timestamp>,
    device: Option<DeviceId>,
    point: Option<PointId>,
    kind: Option<EventKind>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<usize>,
    /// `asc` (oldest first, default) or `desc`.
    order: Option<Order>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub items: Vec<Event>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Events from the journal, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventFilter),
    responses((status = 200, body = EventPage), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_events(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<EventFilter>,
) -> Result<Json<EventPage>, ApiError> {
    principal.require(Permission::ReadState)?;
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from >= to
    {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    let query = EventQuery {
        from: filter.from,
        to: filter.to,
        device: filter.device,
        point: filter.point,
        kind: filter.kind,
        cursor: parse_cursor(filter.cursor.as_deref())?,
        order: filter.order.unwrap_or_default(),
        limit: page_limit(filter.limit)?,
    };
    let page = state
        .reader
        .run(move |connection| query::events(connection, &query))
        .await?;
    Ok(Json(EventPage {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

//! Querying the journal.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use gatehouse_protocol::{DeviceId, Event, EventKind, PointId};
use jiff::{SignedDuration, Timestamp};
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportFilter {
    /// Recorded at or after this instant (RFC 3339); default: 24 hours ago.
    #[param(value_type = Option<String>)]
    from: Option<Timestamp>,
    /// Recorded before this instant (RFC 3339); default: now.
    #[param(value_type = Option<String>)]
    to: Option<Timestamp>,
    device: Option<DeviceId>,
    point: Option<PointId>,
    kind: Option<EventKind>,
    /// At most this many events, oldest first: 1 to 1,000,000, default 100,000.
    limit: Option<usize>,
}

/// The most events one export holds.
const EXPORT_MAX: usize = 1_000_000;
/// Events read from the journal per step of an export.
const EXPORT_PAGE: usize = 1000;

/// Events as JSON Lines (one event per line, oldest first): the file
/// `gatehouse-edge rules test --events` replays. Streamed, so a large export holds only one
/// page in memory.
#[utoipa::path(get, path = "/api/v1/events/export", tag = "events", params(ExportFilter),
    responses((status = 200, description = "JSON Lines, one event per line", content_type = "application/x-ndjson"),
        (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn export_events(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<ExportFilter>,
) -> Result<Response, ApiError> {
    principal.require(Permission::ReadState)?;
    let to = filter.to.unwrap_or_else(Timestamp::now);
    let from = match filter.from {
        Some(from) => from,
        None => to
            .checked_sub(SignedDuration::from_hours(24))
            .map_err(|_| ApiError::bad_request("`to` is too early"))?,
    };
    if from >= to {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    let limit = match filter.limit {
        None => 100_000,
        Some(limit @ 1..=EXPORT_MAX) => limit,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {EXPORT_MAX}, got {other}"
            )));
        }
    };
    let query = EventQuery {
        from: Some(from),
        to: Some(to),
        device: filter.device,
        point: filter.point,
        kind: filter.kind,
        cursor: None,
        order: Order::Asc,
        limit: EXPORT_PAGE,
    };
    let reader = state.reader.clone();
    // State: the query of the next page (None when done) and how many are left to send.
    let pages = futures_util::stream::unfold(Some((query, limit)), move |next| {
        let reader = reader.clone();
        async move {
            let (mut query, left) = next?;
            query.limit = left.min(EXPORT_PAGE);
            let asked = query.clone();
            let page = match reader.run(move |c| query::events(c, &asked)).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "event export failed part way");
                    return Some((
                        Err(std::io::Error::other("the journal could not be read")),
                        None,
                    ));
                }
            };
            let mut lines = String::new();
            for event in &page.items {
                match serde_json::to_string(event) {
                    Ok(line) => {
                        lines.push_str(&line);
                        lines.push('\n');
                    }
                    Err(error) => return Some((Err(std::io::Error::other(error)), None)),
                }
            }
            let left = left - page.items.len();
            let next = match page.next_cursor {
                Some(cursor) if left > 0 => {
                    query.cursor = Some(cursor);
                    Some((query, left))
                }
                _ => None,
            };
            Some((Ok(lines), next))
        }
    });
    Ok((
        [
            (CONTENT_TYPE, "application/x-ndjson"),
            (CONTENT_DISPOSITION, "attachment; filename=\"events.jsonl\""),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}

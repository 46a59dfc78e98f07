//! The operators' REST API and WebSocket stream, and the appliances' claim endpoint, under
//! `/api/v1`. JSON in and out; every error is `{"error": "..."}`.
//!
//! [`router`] builds everything from an [`ApiState`]; tests drive it with
//! `tower::ServiceExt::oneshot` or a real listener.
//!
//! # Authentication and tenants
//!
//! Deny by default: every request, even to an unknown path, passes the authentication
//! middleware. Only `GET /health` and `POST /claim` are public, and `GET /metrics` takes the
//! platform's metrics token instead of an API token (see `metrics.rs`); anything else needs
//! `Authorization: Bearer ght_...`, an API token of one tenant with one role. Everything a
//! token reads or changes is its tenant's (through the store's `TenantScope`); a resource of
//! another tenant is a 404, the same answer as one that does not exist.
//!
//! | route | role | what |
//! | --- | --- | --- |
//! | `GET /health` | public | liveness |
//! | `POST /claim` | public (a claim code) | `{code, csr_pem}` → the appliance's certificate, the CA, the broker |
//! | `GET /tenant` | viewer | the token's tenant |
//! | `GET /sites`, `GET /sites/{id}` | viewer | sites |
//! | `POST /sites` | admin | `{name}` → a new site |
//! | `GET /appliances?site=`, `GET /appliances/{id}` | viewer | appliances and their health |
//! | `POST /claims` | admin | `{site, name}` → `{appliance_id, code, expires_at}`; the code is shown once |
//! | `GET /incidents?state=&site=&appliance=&limit=&after=` | viewer | incidents, newest opened first |
//! | `GET /incidents/{appliance}/{id}` | viewer | one incident with its comments |
//! | `POST /incidents/{appliance}/{id}/ack`, `.../resolve` | operator | `{comment?}`; stored, then sent to the appliance |
//! | `POST /incidents/{appliance}/{id}/comment` | operator | `{comment}`; stored at the relay only |
//! | `GET /events?site=&appliance=&kind=&device=&point=&incident=&from=&until=&limit=&after=` | viewer | stored records, newest first |
//! | `GET /alerts?open=` | viewer | the relay's alerts (appliance offline), the 1000 newest |
//! | `GET /stream` | viewer | WebSocket of live updates |
//! | `GET /metrics` (no `/api/v1` prefix) | the metrics token | Prometheus metrics of this replica |
//!
//! "viewer" means any role; "operator" means operator or admin.
//!
//! The lists that grow with time, `/incidents` and `/events`, are paged: `limit` (1 to 1000,
//! default 100) and `after`, the opaque `next` of the previous page (`null` on the last page).
//! The others are whole arrays: `/sites` and `/appliances` grow only with the tenant's fleet
//! (one entry per site or appliance), and `/alerts` answers the 1000 newest alerts (at most
//! one is open per appliance; `?open=true` lists those). Times are microseconds since the Unix
//! epoch. A record's or incident's `body` is the appliance's JSON, nested as is.
//!
//! # Time limits
//!
//! Every request but `/stream`'s upgrade must be answered within
//! [`ApiLimits::request_timeout`], or it is abandoned (anything it had begun in the database
//! rolls back) and answered 503. The connection-level limits (how many, how long a client may
//! take to send its headers) are `service`'s.

mod alerts;
mod appliances;
mod auth;
mod claim;
mod error;
mod events;
mod incidents;
mod metrics;
mod sites;
mod stream;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use gatehouse_protocol::{ApplianceId, SiteId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::auth::{Permission, require};
pub use self::claim::ClaimSigner;
use self::claim::FailedClaims;
use self::error::ApiError;
use self::metrics::ApiMetrics;
use self::stream::StreamSlots;
use crate::hub::{Downlink, Hub};
use crate::ingest::MqttCounters;
use crate::store::{Micros, Page, Paged, Principal, Store, TenantScope};

/// What the API needs from the rest of the relay.
pub struct ApiState {
    pub store: Store,
    /// Live updates: the API publishes its own incident steps and claims, and serves the
    /// stream from it.
    pub hub: Hub,
    /// Incident steps on their way to appliances.
    pub downlink: mpsc::Sender<Downlink>,
    /// The fleet CA and broker address for `POST /claim`; `None` answers 503.
    pub claims: Option<Arc<ClaimSigner>>,
    /// Now, in microseconds since the Unix epoch ([`system_clock`] outside tests).
    pub clock: fn() -> Micros,
    /// Cancelled when the relay stops: streams close with 1001 (going away).
    pub shutdown: CancellationToken,
    pub limits: ApiLimits,
    /// The MQTT side's counters, exported on `/metrics`.
    pub mqtt_counters: Arc<MqttCounters>,
    /// SHA-256 (lowercase hex) of the token that may read `/metrics`
    /// (`[api] metrics_token_sha256`); `None` refuses every scrape.
    pub metrics_token_sha256: Option<String>,
    /// `[api] behind_tls_proxy`: a proxy forwards every request, and the client's address is
    /// the last one of `X-Forwarded-For` (which the proxy must set), not the peer's.
    pub behind_proxy: bool,
}

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Streams served at once; more are refused with 503.
    pub max_streams: usize,
    /// Streams of one tenant served at once; more are refused with 429.
    pub max_streams_per_tenant: usize,
    /// Claims refused (invalid, used or expired code) per minute from one address (an IPv4
    /// address or an IPv6 /64), before that address's claims are answered 429 until its
    /// minute is over. Claim codes have 100 bits, so this guards the database rather than
    /// the codes.
    pub failed_claims_per_minute: u32,
    /// How often a stream pings its client and checks its token.
    pub stream_ping_interval: Duration,
    /// How long any request but a stream's upgrade may take.
    pub request_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_streams: 256,
            max_streams_per_tenant: 32,
            failed_claims_per_minute: 20,
            stream_ping_interval: Duration::from_secs(30),
            // Shorter than an appliance's claim timeout (30 s): the relay gives up, and rolls
            // the claim back, before the appliance does.
            request_timeout: Duration::from_secs(20),
        }
    }
}

/// The wall clock in microseconds since the Unix epoch.
pub fn system_clock() -> Micros {
    jiff::Timestamp::now().as_microsecond()
}

/// Largest request body accepted (a CSR is under 1 KiB, a comment at most 4000 characters).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share: the caller's [`ApiState`] and the API's own bookkeeping.
struct Context {
    state: ApiState,
    stream_slots: Arc<StreamSlots>,
    failed_claims: FailedClaims,
    metrics: ApiMetrics,
}

impl Context {
    fn now(&self) -> Micros {
        (self.state.clock)()
    }
}

/// The whole HTTP surface. Serve it with `service::serve_api` (or anything that adds the
/// peer's `ConnectInfo<SocketAddr>`, which the claim route needs).
pub fn router(state: ApiState) -> Router {
    let limits = state.limits;
    let context = Arc::new(Context {
        stream_slots: StreamSlots::new(limits.max_streams, limits.max_streams_per_tenant),
        failed_claims: FailedClaims::new(limits.failed_claims_per_minute),
        metrics: ApiMetrics::new(Arc::clone(&state.mqtt_counters)),
        state,
    });
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/claim", post(claim::claim))
        .route("/api/v1/tenant", get(sites::tenant))
        .route("/api/v1/sites", get(sites::list).post(sites::create))
        .route("/api/v1/sites/{id}", get(sites::get_one))
        .route("/api/v1/appliances", get(appliances::list))
        .route("/api/v1/appliances/{id}", get(appliances::get_one))
        .route("/api/v1/claims", post(appliances::create_claim))
        .route("/api/v1/incidents", get(incidents::list))
        .route(
            "/api/v1/incidents/{appliance}/{id}",
            get(incidents::get_one),
        )
        .route(
            "/api/v1/incidents/{appliance}/{id}/{action}",
            post(incidents::take_step),
        )
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/alerts", get(alerts::list))
        .route(STREAM_PATH, get(stream::stream))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            context.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            time_limit,
        ))
        .with_state(context)
}

/// The one route without a time limit: a stream lasts as long as its client wants.
const STREAM_PATH: &str = "/api/v1/stream";

/// Middleware, outermost (so it bounds authentication too): abandons a request that takes
/// longer than `limit` (its future is dropped, so a transaction it holds rolls back) and
/// answers 503. [`STREAM_PATH`] is exempt.
async fn time_limit(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.uri().path() == STREAM_PATH {
        return Ok(next.run(request).await);
    }
    tokio::time::timeout(limit, next.run(request))
        .await
        .map_err(|_| {
            ApiError::unavailable(format!(
                "the relay did not answer within {} s; try again",
                limit.as_secs_f64()
            ))
        })
}

async fn health() -> axum::Json<Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// An item as the API shows it: its JSON, with a `body` that holds the appliance's JSON as
/// text replaced by that JSON.
fn view(item: &impl Serialize) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(item).map_err(ApiError::internal)?;
    if let Some(body) = value.get_mut("body")
        && let Some(parsed) = body
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        *body = parsed;
    }
    Ok(value)
}

/// Several items as the API shows them.
fn views<T: Serialize>(items: &[T]) -> Result<Vec<Value>, ApiError> {
    items.iter().map(view).collect()
}

/// A page of a list: `next` is the `after` of the following page, `None` on the last.
#[derive(Debug, Serialize)]
struct PageOut {
    items: Vec<Value>,
    next: Option<String>,
}

impl PageOut {
    fn new<T: Serialize, C: Serialize>(page: Paged<T, C>) -> Result<Self, ApiError> {
        Ok(PageOut {
            items: views(&page.items)?,
            next: page.next.as_ref().map(encode_cursor).transpose()?,
        })
    }
}

/// The tenant a list request reads, once the principal may read and the list's `site` and
/// `appliance` filters name things in that tenant: a filter on an unknown (or another
/// tenant's) site or appliance is a 404 rather than an empty page that would hide the typo.
async fn list_scope<'p>(
    context: &Context,
    principal: &'p Principal,
    site: Option<&SiteId>,
    appliance: Option<&ApplianceId>,
) -> Result<&'p TenantScope, ApiError> {
    require(principal, Permission::Read)?;
    let scope = &principal.scope;
    if let Some(site) = site {
        sites::known_site(context, scope, site).await?;
    }
    if let Some(appliance) = appliance {
        appliances::known_appliance(context, scope, appliance).await?;
    }
    Ok(scope)
}

/// Default page size.
const DEFAULT_LIMIT: u32 = 100;

/// The page a client asked for with `limit` and `after`.
fn page_request<C: DeserializeOwned>(
    limit: Option<u32>,
    after: Option<&str>,
) -> Result<Page<C>, ApiError> {
    let max = Page::<C>::MAX_LIMIT;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=max).contains(&limit) => limit,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {max}, got {other}"
            )));
        }
    };
    let after = after.map(decode_cursor).transpose()?;
    Ok(Page { limit, after })
}

/// A cursor as clients see it: opaque (hex of the store's cursor as JSON).
fn encode_cursor(cursor: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_vec(cursor)
        .map(hex::encode)
        .map_err(ApiError::internal)
}

fn decode_cursor<C: DeserializeOwned>(text: &str) -> Result<C, ApiError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request("`after` is not a cursor from this API: pass a page's `next`")
        })
}

//! `POST /claim` (public): an appliance being installed trades its one-time claim code and a
//! certificate signing request for its identity.
//!
//! Order matters:
//! 1. the CSR is checked first ([`CheckedCsr::parse`]), so a malformed request (400) never
//!    uses up a code;
//! 2. the caller's address must not be over its refusals
//!    ([`ApiLimits::failed_claims_per_minute`](super::ApiLimits), 429); the attempt holds a
//!    refusal in reserve while it runs, so parallel attempts cannot overshoot the limit;
//! 3. the code is redeemed in a transaction
//!    ([`Store::begin_claim`](crate::store::Store::begin_claim)): hashed lookup, expiry, one
//!    use. An invalid, used or expired code is one answer, 403
//!    [`CLAIM_REFUSED`], so a guesser learns nothing;
//! 4. the fleet CA signs the checked key with `CN = {appliance id}` (whatever the CSR asked
//!    for);
//! 5. the certificate's fingerprint is stored and the transaction commits: only now is the
//!    code spent. Any failure before (the database, the signature, the request's time limit)
//!    leaves it as it was.
//!
//! The answer can still be lost after the commit (the appliance gave up waiting, or refused
//! what came back). The appliance then retries with the same key, and the same code with the
//! same key is accepted again for
//! [`CLAIM_RETRY_WINDOW`](crate::store::CLAIM_RETRY_WINDOW) after its first use: a new
//! certificate for the same appliance. Another key gets [`CLAIM_REFUSED`].
//!
//! Neither the code nor anything of the request reaches a log.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use gatehouse_protocol::ApplianceId;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Context;
use super::error::{ApiError, JsonBody};
use super::metrics::ClaimRefusal;
use crate::hub::LiveUpdate;
use crate::pki::{CheckedCsr, FleetCa, Validity};
use crate::store::{Claim, StoreError};

/// The one answer to an invalid, used or expired code.
pub const CLAIM_REFUSED: &str = "claim code is invalid, used or expired";

/// What the relay needs to answer claims.
pub struct ClaimSigner {
    pub ca: FleetCa,
    /// Where appliances reach the broker (a name in the broker's server certificate).
    pub broker_host: String,
    pub broker_port: u16,
    /// How long an appliance certificate is valid.
    pub validity: Duration,
}

/// No `Debug`: the code is a secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimRequest {
    code: String,
    csr_pem: String,
}

#[derive(Debug, Serialize)]
pub(super) struct ClaimResponse {
    appliance_id: ApplianceId,
    certificate_pem: String,
    ca_pem: String,
    broker: Broker,
}

#[derive(Debug, Serialize)]
struct Broker {
    host: String,
    port: u16,
}

pub(super) async fn claim(
    State(context): State<Arc<Context>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let Some(signer) = context.state.claims.as_deref() else {
        return Err(ApiError::unavailable(
            "this relay does not take claims: it has no fleet CA configured",
        ));
    };
    let refused = |reason| context.metrics.claim_refused(reason);
    let csr = CheckedCsr::parse(&request.csr_pem).map_err(|error| {
        refused(ClaimRefusal::BadRequest);
        ApiError::bad_request(error.to_string())
    })?;
    let client = client_address(peer, &headers, context.state.behind_proxy);
    let attempt = context.failed_claims.reserve(client).inspect_err(|_| {
        refused(ClaimRefusal::RateLimited);
    })?;
    let store = &context.state.store;
    let pending = match store
        .begin_claim(&request.code, csr.key_sha256(), context.now())
        .await
    {
        Ok(pending) => pending,
        Err(StoreError::ClaimUnknown | StoreError::ClaimUsed | StoreError::ClaimExpired) => {
            attempt.refused();
            refused(ClaimRefusal::Code);
            tracing::warn!(%client, "a claim was refused: invalid, used or expired code");
            return Err(ApiError::forbidden(CLAIM_REFUSED));
        }
        Err(error) => return Err(error.into()),
    };
    let repeat = pending.is_repeat();
    // Signed before the commit: if this fails, the code is not spent (none is expected to:
    // the key was checked and appliance ids are never relay identities).
    let certificate_pem = signer
        .ca
        .sign_checked(
            &csr,
            &pending.claim().appliance,
            Validity::starting_now(signer.validity),
        )
        .map_err(ApiError::internal)?;
    let fingerprint = fingerprint(&certificate_pem).map_err(ApiError::internal)?;
    let claim = pending.commit(&fingerprint).await?;
    drop(attempt);
    publish_claimed(&context, &claim).await;
    tracing::info!(
        appliance = %claim.appliance,
        tenant = %claim.tenant,
        site = %claim.site,
        repeat,
        "appliance claimed"
    );
    Ok(Json(ClaimResponse {
        appliance_id: claim.appliance,
        certificate_pem,
        ca_pem: signer.ca.cert_pem().to_owned(),
        broker: Broker {
            host: signer.broker_host.clone(),
            port: signer.broker_port,
        },
    }))
}

/// Shows the newly claimed appliance on its tenant's streams (best effort: the claim stands
/// whatever happens here).
async fn publish_claimed(context: &Context, claim: &Claim) {
    let store = &context.state.store;
    let found = match store.appliance_scope(&claim.appliance).await {
        Ok(Some(scope)) => store.appliance(&scope, &claim.appliance).await,
        Ok(None) => Ok(None),
        Err(error) => Err(error),
    };
    match found {
        Ok(Some(appliance)) => context
            .state
            .hub
            .publish(&claim.tenant, LiveUpdate::Appliance(appliance)),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(
                appliance = %claim.appliance,
                %error,
                "a claimed appliance was not published"
            );
        }
    }
}

/// Lowercase hex SHA-256 of the certificate's DER.
fn fingerprint(certificate_pem: &str) -> Result<String, rustls::pki_types::pem::Error> {
    let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

/// Who is asking, for the refusal limit: the peer's address, or behind a TLS proxy
/// (`[api] behind_tls_proxy`) the last address of `X-Forwarded-For`, the one the proxy
/// appended (earlier ones are the client's word). IPv6 clients count per /64, the block one
/// subscriber usually holds.
fn client_address(peer: SocketAddr, headers: &HeaderMap, behind_proxy: bool) -> IpAddr {
    let forwarded = behind_proxy
        .then(|| headers.get_all("x-forwarded-for").iter().next_back())
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    match forwarded.unwrap_or(peer.ip()).to_canonical() {
        IpAddr::V6(address) => {
            let block = u128::from(address) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(block))
        }
        v4 => v4,
    }
}

/// Refused claims per client address in the current minute of that client.
pub(super) struct FailedClaims {
    per_minute: u32,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

/// One client's minute: when it started and the refusals in it, counting attempts in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    started: Instant,
    refusals: u32,
}

impl FailedClaims {
    const WINDOW: Duration = Duration::from_secs(60);
    /// Clients tracked at once. When that many were refused in the last minute, new ones wait
    /// too: the table's memory is bounded whatever the number of addresses used against it.
    const MAX_CLIENTS: usize = 10_000;

    pub(super) fn new(per_minute: u32) -> Self {
        FailedClaims {
            per_minute,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// 429 while `client`'s refusals this minute are used up; otherwise an [`Attempt`] that
    /// counts as one refusal until it is dropped without [`Attempt::refused`].
    fn reserve(&self, client: IpAddr) -> Result<Attempt<'_>, ApiError> {
        self.reserve_at(client, Instant::now())
    }

    fn reserve_at(&self, client: IpAddr, now: Instant) -> Result<Attempt<'_>, ApiError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= Self::MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, window| now.duration_since(window.started) < Self::WINDOW);
            if clients.len() >= Self::MAX_CLIENTS {
                return Err(too_many(
                    "too many clients had claims refused this minute; try again in a minute"
                        .to_owned(),
                ));
            }
        }
        let window = clients.entry(client).or_insert(Window {
            started: now,
            refusals: 0,
        });
        if now.duration_since(window.started) >= Self::WINDOW {
            *window = Window {
                started: now,
                refusals: 0,
            };
        }
        if window.refusals >= self.per_minute {
            let wait = Self::WINDOW
                .saturating_sub(now.duration_since(window.started))
                .as_secs()
                + 1;
            return Err(too_many(format!(
                "too many refused claims from this address; try again in {wait} s"
            )));
        }
        window.refusals += 1;
        Ok(Attempt {
            limiter: self,
            client,
            window: window.started,
            refused: false,
        })
    }

    /// Gives back the refusal an attempt held, if its window is still the current one.
    fn release(&self, client: IpAddr, window: Instant) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = clients.get_mut(&client)
            && current.started == window
        {
            current.refusals = current.refusals.saturating_sub(1);
            if current.refusals == 0 {
                clients.remove(&client);
            }
        }
    }
}

fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
}

/// A claim attempt in flight: it holds one of its client's refusals, given back when it is
/// dropped, unless the attempt was [`Attempt::refused`].
pub(super) struct Attempt<'a> {
    limiter: &'a FailedClaims,
    client: IpAddr,
    window: Instant,
    refused: bool,
}

impl Attempt<'_> {
    /// The code was refused: the refusal stays counted.
    fn refused(mut self) {
        self.refused = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.refused {
            self.limiter.release(self.client, self.window);
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> anyhow::Result<IpAddr> {
        Ok(text.parse()?)
    }

    #[test]
    fn refusals_are_counted_per_client_and_per_minute() -> anyhow::Result<()> {
        let limiter = FailedClaims::new(2);
        let start = Instant::now();
        let (a, b) = (ip("192.0.2.1")?, ip("192.0.2.2")?);
        for _ in 0..2 {
            limiter.reserve_at(a, start)?.refused();
        }
        let refused = limiter.reserve_at(a, start + Duration::from_secs(59)).err();
        assert_eq!(
            refused.map(|error| (error.status, error.message)),
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                "too many refused claims from this address; try again in 2 s".to_owned()
            ))
        );
        // Another client is not locked out, and a's next minute starts afresh.
        assert!(limiter.reserve_at(b, start).is_ok());
        assert!(
            limiter
                .reserve_at(a, start + Duration::from_secs(60))
                .is_ok()
        );
        Ok(())
    }

    #[test]
    fn attempts_in_flight_count_until_they_succeed() -> anyhow::Result<()> {
        let limiter = FailedClaims::new(2);
        let now = Instant::now();
        let client = ip("192.0.2.1")?;
        let first = limiter.reserve_at(client, now)?;
        let second = limiter.reserve_at(client, now)?;
        // Two in flight: a third waits, though nothing was refused yet.
        assert!(limiter.reserve_at(client, now).is_err());
        // One succeeds: its place is free again; the other is refused and stays counted.
        drop(first);
        let third = limiter.reserve_at(client, now)?;
        second.refused();
        drop(third);
        let _fourth = limiter.reserve_at(client, now)?;
        assert!(limiter.reserve_at(client, now).is_err());
        Ok(())
    }

    #[test]
    fn the_table_of_clients_is_bounded() -> anyhow::Result<()> {
        let limiter = FailedClaims::new(1);
        let now = Instant::now();
        let count = u32::try_from(FailedClaims::MAX_CLIENTS)?;
        for n in 0..count {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(n));
            limiter.reserve_at(client, now)?.refused();
        }
        let newcomer = ip("198.51.100.7")?;
        assert!(limiter.reserve_at(newcomer, now).is_err());
        // A minute later the old windows are dropped to make room.
        let later = now + Duration::from_secs(60);
        assert!(limiter.reserve_at(newcomer, later).is_ok());
        let tracked = limiter
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert_eq!(tracked, 0, "the newcomer's attempt was given back");
        Ok(())
    }

    #[test]
    fn the_client_is_the_peer_or_the_address_the_proxy_appended() -> anyhow::Result<()> {
        let peer: SocketAddr = "10.0.0.9:4000".parse()?;
        let forwarded = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.append("x-forwarded-for", HeaderValue::from_static(value));
            headers
        };
        let headers = forwarded("203.0.113.5, 198.51.100.7");
        assert_eq!(client_address(peer, &headers, false), ip("10.0.0.9")?);
        assert_eq!(client_address(peer, &headers, true), ip("198.51.100.7")?);
        // Without the header, or with garbage in it: the proxy itself.
        for headers in [HeaderMap::new(), forwarded("nonsense")] {
            assert_eq!(client_address(peer, &headers, true), ip("10.0.0.9")?);
        }
        // IPv6 per /64; IPv4-mapped as IPv4.
        let v6: SocketAddr = "[2001:db8:1:2:3:4:5:6]:1".parse()?;
        assert_eq!(client_address(v6, &headers, false), ip("2001:db8:1:2::")?);
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1".parse()?;
        assert_eq!(client_address(mapped, &headers, false), ip("192.0.2.1")?);
        Ok(())
    }
}

//! A fresh database per test on either backend, the API over it, tenants with tokens of each
//! role, and HTTP helpers.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use futures_util::FutureExt as _;
use gatehouse_protocol::{ApplianceId, IncidentState, Severity, SiteId};
use http_body_util::BodyExt as _;
use rand::RngCore as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::Any;
use sqlx::migrate::MigrateDatabase as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::api::{ApiLimits, ApiState, ClaimSigner, router};
use crate::hub::{Downlink, Hub};
use crate::ingest::MqttCounters;
use crate::pki::FleetCa;
use crate::service::{ConnectionLimits, serve_api};
use crate::store::{Backend, IngestIncident, IngestRecord, Micros, Role, Store, TenantScope};

/// The API's "now" in the tests (2023-11-14).
pub(crate) const T0: Micros = 1_700_000_000_000_000;
pub(crate) const SECOND: Micros = 1_000_000;

fn fixed_clock() -> Micros {
    T0
}

const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const POSTGRES_HINT: &str = "the PostgreSQL tests need a server on 127.0.0.1:5432 (user \
     postgres, trust auth); start it with: pg_ctlcluster --skip-systemctl-redirect \
     $(ls /etc/postgresql) main start";

/// Runs `test` on a fresh database of `backend`, then removes the database.
pub(crate) async fn run<F>(backend: Backend, test: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Store) -> anyhow::Result<()>,
{
    let directory = tempfile::tempdir()?;
    let url = match backend {
        Backend::Sqlite => format!(
            "sqlite://{}?mode=rwc",
            directory.path().join("relay.db").display()
        ),
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            let mut suffix = [0u8; 6];
            rand::rng().fill_bytes(&mut suffix);
            let url = format!("{POSTGRES_SERVER}/gh_api_test_{}", hex::encode(suffix));
            Any::create_database(&url)
                .await
                .with_context(|| format!("creating a test database: {POSTGRES_HINT}"))?;
            url
        }
    };
    let store = match Store::open(&url).await {
        Ok(store) => store,
        Err(error) => {
            drop_database(backend, &url).await?;
            return Err(error).context("opening the store");
        }
    };
    let outcome = AssertUnwindSafe(test(&store)).catch_unwind().await;
    store.close().await;
    drop_database(backend, &url).await?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Drops a test's PostgreSQL database (a SQLite file goes with its directory).
async fn drop_database(backend: Backend, url: &str) -> anyhow::Result<()> {
    if backend == Backend::Postgres {
        Any::force_drop_database(url)
            .await
            .with_context(|| format!("dropping {url}"))?;
    }
    Ok(())
}

/// The API over a store, with the other ends of its channels.
pub(crate) struct Api {
    pub(crate) app: Router,
    pub(crate) hub: Hub,
    pub(crate) downlink: mpsc::Receiver<Downlink>,
    pub(crate) shutdown: CancellationToken,
    /// The fleet CA that signs claims, when the API takes them.
    pub(crate) ca_pem: Option<String>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How an [`Api`] is built.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) hub: Hub,
    pub(crate) limits: ApiLimits,
    pub(crate) claims: bool,
    /// The token `/metrics` takes (its hash goes into the state).
    pub(crate) metrics_token: Option<String>,
    pub(crate) mqtt_counters: Arc<MqttCounters>,
}

/// Where [`Api::call`]'s requests come from.
pub(crate) const CLIENT: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)),
    50_000,
);

impl Api {
    pub(crate) fn new(store: &Store) -> anyhow::Result<Api> {
        Api::with(store, Options::default())
    }

    pub(crate) fn with(store: &Store, options: Options) -> anyhow::Result<Api> {
        let (sender, downlink) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let signer = if options.claims {
            Some(Arc::new(ClaimSigner {
                ca: FleetCa::generate("Gatehouse test fleet CA")?,
                broker_host: "broker.example.net".into(),
                broker_port: 8883,
                validity: Duration::from_secs(24 * 3600),
            }))
        } else {
            None
        };
        let ca_pem = signer.as_ref().map(|s| s.ca.cert_pem().to_owned());
        let app = router(ApiState {
            store: store.clone(),
            hub: options.hub.clone(),
            downlink: sender,
            claims: signer,
            clock: fixed_clock,
            shutdown: shutdown.clone(),
            limits: options.limits,
            mqtt_counters: options.mqtt_counters,
            metrics_token_sha256: options
                .metrics_token
                .map(|token| hex::encode(Sha256::digest(token.as_bytes()))),
            behind_proxy: false,
        });
        Ok(Api {
            app,
            hub: options.hub,
            downlink,
            shutdown,
            ca_pem,
        })
    }

    /// Sends one request from [`CLIENT`]; the answer's status and JSON (or its text as a
    /// JSON string).
    pub(crate) async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call_from(CLIENT, method, uri, token, body).await
    }

    /// [`Api::call`] from `client`.
    pub(crate) async fn call_from(
        &self,
        client: SocketAddr,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .extension(ConnectInfo(client));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Body::from(body.unwrap_or_default()))?;
        let response = self.app.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, json))
    }

    pub(crate) async fn get(&self, uri: &str, token: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::GET, uri, Some(token), None).await
    }

    pub(crate) async fn post(
        &self,
        uri: &str,
        token: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::POST, uri, Some(token), Some(body.to_string()))
            .await
    }

    /// Serves the API on 127.0.0.1, as the relay does, until the API is dropped.
    pub(crate) async fn serve(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(serve_api(
            listener,
            None,
            self.app.clone(),
            ConnectionLimits::default(),
            self.shutdown.clone().cancelled_owned(),
        ));
        Ok(address)
    }

    /// The next queued downlink, if one comes within a second.
    pub(crate) async fn next_downlink(&mut self) -> Option<Downlink> {
        tokio::time::timeout(Duration::from_secs(1), self.downlink.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A tenant with one site, one claimed appliance with an open incident (id 1) and three
/// observations (seq 2 to 4), and a token of each role.
pub(crate) struct Tenant {
    pub(crate) scope: TenantScope,
    pub(crate) site: SiteId,
    pub(crate) appliance: ApplianceId,
    pub(crate) admin: String,
    pub(crate) operator: String,
    pub(crate) viewer: String,
}

impl Tenant {
    pub(crate) async fn new(store: &Store, name: &str) -> anyhow::Result<Tenant> {
        let (_, scope) = store.create_tenant(name, T0).await?;
        let site = store.create_site(&scope, &format!("{name} HQ"), T0).await?;
        let claim = store
            .create_claim(&scope, &site.id, "gate", T0, T0 + 3600 * SECOND)
            .await?;
        store.redeem_claim(&claim.code, T0 + SECOND).await?;
        let mut records = vec![incident_record(1, 1)];
        records.extend((2..=4).map(observation));
        store.ingest(&claim.appliance, &records).await?;
        let token = async |role: Role| -> anyhow::Result<String> {
            let made = store
                .create_api_token(&scope, role.as_str(), role, T0)
                .await?;
            Ok(made.token)
        };
        Ok(Tenant {
            admin: token(Role::Admin).await?,
            operator: token(Role::Operator).await?,
            viewer: token(Role::Viewer).await?,
            scope,
            site: site.id,
            appliance: claim.appliance,
        })
    }
}

/// Record `seq`: incident `id` opened.
pub(crate) fn incident_record(seq: u64, id: u64) -> IngestRecord {
    IngestRecord {
        seq,
        recorded_at: T0 + seq as Micros * SECOND,
        kind: "incident".into(),
        device: None,
        point: Some("door.lobby.contact".into()),
        incident: Some(IngestIncident {
            id,
            state: IncidentState::Open,
            severity: Severity::High,
            title: "Door held open".into(),
            opened_at: T0,
        }),
        evicted_through: None,
        body: format!(r#"{{"incident":{id},"state":"open"}}"#),
    }
}

/// Record `seq`: an observation of the lobby door.
pub(crate) fn observation(seq: u64) -> IngestRecord {
    IngestRecord {
        seq,
        recorded_at: T0 + seq as Micros * SECOND,
        kind: "observation".into(),
        device: Some("plc-1".into()),
        point: Some("door.lobby.contact".into()),
        incident: None,
        evicted_through: None,
        body: format!(r#"{{"seq":{seq},"value":"open"}}"#),
    }
}

//! Running one relay replica from its [`Config`]: ingestion, the downlink, the API and the
//! offline-alert watcher, together.
//!
//! ```text
//!  broker ──► ingest: event loop ──► workers ──► store ──► hub ──► operators' streams
//!    ▲                                  │          ▲
//!    │                                  └──────────┼──► commands again (appliance back online)
//!    └── downlink publisher ◄── new command ◄── API: step + command, one transaction
//!          └── every minute: commands not carried out in time, from the store
//!  offline-alert watcher ──► store ──► hub
//! ```
//!
//! One MQTT connection per replica carries both directions: [`Ingest::run`] polls its event
//! loop (and so reconnects it), the downlink publisher uses a clone of its client.
//!
//! # Commands for appliances
//!
//! An operator's step is stored with its command; the API then hands the command to the
//! downlink publisher, which sends it at once (QoS 1). The store is the queue, not the
//! channel: every [`DOWNLINK_SWEEP_EVERY`], while the replica has its broker connection, the
//! publisher claims the commands of online appliances not carried out [`DOWNLINK_RESEND_AFTER`]
//! after they were last sent (or made, when the API's hand-over failed), for at most
//! [`DOWNLINK_RESEND_FOR`], sends them again, and refreshes the `downlinks_pending` gauge.
//! Replicas sweep the same table; the claim gives each row to one. An offline appliance gets
//! its commands from ingestion when it comes back online.
//!
//! # Stopping
//!
//! When `shutdown` is cancelled (SIGTERM, or any task ending early, which cancels it too):
//! 1. the API stops accepting and finishes its requests (streams close with 1001), at most
//!    [`API_DRAIN`];
//! 2. with the API gone, the downlink channel closes and the publisher hands the last commands
//!    to the MQTT client, at most [`DOWNLINK_DRAIN`] (a command it did not is still pending in
//!    the store);
//! 3. ingestion lets its workers finish, sends DISCONNECT after everything queued, and the
//!    store closes.

mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gatehouse_transport::TlsIdentity;
use rumqttc::v5::AsyncClient;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiLimits, ApiState, ClaimSigner};
use crate::config::{Config, FleetConfig};
use crate::hub::{Downlink, Hub, LiveUpdate};
use crate::ingest::{
    self, DOWNLINK_RESEND_AFTER, DOWNLINK_RESEND_FOR, DOWNLINK_RETRY_FOR, Ingest, LinkState,
    MqttCounters, STORE_TIMEOUT, Sending, micros_of, now_micros, send_downlink,
};
use crate::pki::FleetCa;
use crate::store::{Store, StoreError};

pub use self::tls::{ConnectionLimits, serve_api, server_config};

/// How long the API may take to finish its requests once the relay stops.
pub const API_DRAIN: Duration = Duration::from_secs(10);

/// How long the downlink publisher may take to hand over its last commands.
pub const DOWNLINK_DRAIN: Duration = Duration::from_secs(5);

/// New commands waiting for the publisher; the API never waits for room (see
/// `api/incidents.rs`).
const DOWNLINK_QUEUE: usize = 1024;

/// How often the downlink publisher looks for commands to send again.
pub const DOWNLINK_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Commands sent again per sweep, at most (the rest wait for the next one).
const DOWNLINK_SWEEP_LIMIT: u32 = 500;

/// A started relay.
#[derive(Debug)]
pub struct Running {
    /// Where the API listens (the configured address, with the port the system chose for 0).
    pub api_addr: SocketAddr,
    /// Whether the API speaks HTTPS.
    pub api_tls: bool,
    pub counters: Arc<MqttCounters>,
    stopped: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the relay has stopped (after `shutdown` is cancelled, or a task failed).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.stopped
            .await
            .context("the relay's supervisor panicked")?
    }
}

/// Runs the relay until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Opens the store, binds the API and starts every task; returns once the relay serves.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let store = Store::open(config.store.url.get_ref())
        .await
        .with_context(|| format!("opening the store {}", config.store.redacted_url()))?;
    let broker = &config.broker;
    let identity = TlsIdentity::from_files(
        broker.ca_file.get_ref(),
        broker.cert_file.get_ref(),
        broker.key_file.get_ref(),
    )?;
    let options = identity
        .mqtt_options(
            broker.client_id.get_ref(),
            broker.host.get_ref(),
            *broker.port.get_ref(),
        )
        .context("the relay's broker identity")?;
    let share_group = match &broker.share_group {
        Some(group) => group.get_ref().clone(),
        None => derived_share_group(&identity.key_pem),
    };
    let claims = config.fleet.as_ref().map(claim_signer).transpose()?;
    let tls = config
        .api
        .tls()
        .map(|(cert, key)| tls::server_config(cert, key))
        .transpose()?;
    let listen = *config.api.listen.get_ref();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let api_addr = listener.local_addr()?;

    let hub = Hub::new();
    let counters = Arc::new(MqttCounters::default());
    let (client, eventloop) = ingest::mqtt_client(options);
    let (downlink, downlinks) = mpsc::channel(DOWNLINK_QUEUE);
    let router = api::router(ApiState {
        store: store.clone(),
        hub: hub.clone(),
        downlink,
        claims: claims.map(Arc::new),
        clock: api::system_clock,
        shutdown: shutdown.clone(),
        limits: ApiLimits::default(),
        mqtt_counters: counters.clone(),
        metrics_token_sha256: config.api.metrics_token_sha256(),
        behind_proxy: config.api.behind_tls_proxy,
    });

    let api_tls = tls.is_some();
    let api_task = {
        let guard = shutdown.clone();
        let drained = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            let _stop_all = guard.drop_guard();
            let tls = tls.map(Arc::new);
            serve_api(listener, tls, router, ConnectionLimits::default(), drained).await;
        })
    };
    let ingest = Ingest::new(store.clone(), hub.clone(), &share_group, counters.clone());
    let link = ingest.link_state();
    let downlink_task = tokio::spawn(publish_downlinks(
        client.clone(),
        store.clone(),
        downlinks,
        counters.clone(),
        link.clone(),
    ));
    let stop_mqtt = CancellationToken::new();
    let ingest_task = {
        let guard = shutdown.clone();
        let stop = stop_mqtt.clone();
        tokio::spawn(async move {
            let _stop_all = guard.drop_guard();
            ingest.run(client, eventloop, stop).await;
        })
    };
    let watcher_task = tokio::spawn(watch_offline_appliances(
        store.clone(),
        hub,
        config.alerts.offline_after(),
        link,
        shutdown.clone(),
    ));

    tracing::info!(
        %api_addr,
        https = api_tls,
        broker = %format!("{}:{}", broker.host.get_ref(), broker.port.get_ref()),
        client_id = broker.client_id.get_ref(),
        store = %config.store.redacted_url(),
        claims = config.fleet.is_some(),
        "relay started"
    );
    let stopped = tokio::spawn(async move {
        shutdown.cancelled().await;
        let (mut api_task, mut downlink_task) = (api_task, downlink_task);
        let api = match tokio::time::timeout(API_DRAIN, &mut api_task).await {
            Ok(joined) => joined.context("the API panicked"),
            Err(_) => {
                // Dropping a handle would leave the task (and the downlink's sender) running.
                api_task.abort();
                tracing::warn!("the API did not finish its requests in time");
                Ok(())
            }
        };
        if tokio::time::timeout(DOWNLINK_DRAIN, &mut downlink_task)
            .await
            .is_err()
        {
            downlink_task.abort();
            tracing::warn!("commands still queued for appliances were dropped at shutdown");
        }
        stop_mqtt.cancel();
        let ingest = ingest_task.await.context("ingestion panicked");
        let watcher = watcher_task
            .await
            .context("the offline-alert watcher panicked");
        store.close().await;
        tracing::info!("relay stopped");
        api.and(ingest).and(watcher)
    });
    Ok(Running {
        api_addr,
        api_tls,
        counters,
        stopped,
    })
}

/// The share group when the configuration names none: derived from the relay's private key,
/// which appliances never see, so they cannot name the group; replicas holding the same key
/// agree on it.
fn derived_share_group(key_pem: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"gatehouse relay share group\n")
        .chain_update(key_pem)
        .finalize();
    format!("relay-{}", hex::encode(&digest[..8]))
}

fn claim_signer(fleet: &FleetConfig) -> anyhow::Result<ClaimSigner> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let ca = FleetCa::load(
        &read(fleet.ca_cert.get_ref())?,
        &read(fleet.ca_key.get_ref())?,
    )
    .with_context(|| format!("loading the fleet CA {}", fleet.ca_cert.get_ref().display()))?;
    Ok(ClaimSigner {
        ca,
        broker_host: fleet.broker_host.get_ref().clone(),
        broker_port: *fleet.broker_port.get_ref(),
        validity: fleet.cert_validity(),
    })
}

/// Sends each new command the API hands over at once, and every [`DOWNLINK_SWEEP_EVERY`] the
/// stored ones not carried out in time; until the API is gone (the channel closes).
async fn publish_downlinks(
    client: AsyncClient,
    store: Store,
    mut new_commands: mpsc::Receiver<Downlink>,
    counters: Arc<MqttCounters>,
    link: LinkState,
) {
    let mut sweeps = tokio::time::interval(DOWNLINK_SWEEP_EVERY);
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = new_commands.recv() => match command {
                Some(command) => send_new_command(&client, &store, &counters, &command).await,
                None => return,
            },
            _ = sweeps.tick() => if link.borrow().is_some() {
                resend_due_commands(&client, &store, &counters).await;
            },
        }
    }
}

/// Sends a command just made, and notes when (a failure to note it only means the sweep may
/// send it once more).
async fn send_new_command(
    client: &AsyncClient,
    store: &Store,
    counters: &MqttCounters,
    command: &Downlink,
) {
    if !send_downlink(client, counters, command, Sending::First) {
        return;
    }
    let noted = tokio::time::timeout(
        STORE_TIMEOUT,
        store.mark_downlink_sent(
            &command.appliance,
            &command.command.command_id,
            now_micros(),
        ),
    )
    .await;
    if !matches!(noted, Ok(Ok(()))) {
        tracing::warn!(
            appliance = %command.appliance,
            command = command.command.command_id,
            "a command was sent but its sending was not noted; it may be sent again"
        );
    }
}

/// Claims and sends the commands not carried out in time, then refreshes the pending gauge.
/// A failure is logged; the next sweep tries again.
async fn resend_due_commands(client: &AsyncClient, store: &Store, counters: &MqttCounters) {
    let now = now_micros();
    let resend_before = now.saturating_sub(micros_of(DOWNLINK_RESEND_AFTER));
    let resend_from = now.saturating_sub(micros_of(DOWNLINK_RESEND_FOR));
    let sweep = async {
        let due = store
            .claim_due_downlinks(now, resend_before, resend_from, DOWNLINK_SWEEP_LIMIT)
            .await?;
        for command in &due {
            send_downlink(client, counters, &Downlink::from(command), Sending::Again);
        }
        let pending = store
            .count_pending_downlinks(now.saturating_sub(micros_of(DOWNLINK_RETRY_FOR)))
            .await?;
        Ok::<_, StoreError>((due.len(), pending))
    };
    match tokio::time::timeout(STORE_TIMEOUT, sweep).await {
        Ok(Ok((resent, pending))) => {
            MqttCounters::set(&counters.downlinks_pending, pending);
            if resent > 0 {
                tracing::info!(
                    resent,
                    pending,
                    "HQ commands not carried out in time sent again"
                );
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "the downlink resend failed; retrying later"),
        Err(_) => tracing::warn!("the downlink resend timed out; retrying later"),
    }
}

/// Raises offline alerts every few seconds and shows them to the tenant's operators.
///
/// Silence is judged only once this replica has been connected to the broker for a whole
/// grace period: after an outage of its own (or at start) every appliance would look silent,
/// and it must first hear their next status.
async fn watch_offline_appliances(
    store: Store,
    hub: Hub,
    offline_after: Duration,
    link: LinkState,
    shutdown: CancellationToken,
) {
    let period = (offline_after / 6).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let grace = micros_of(offline_after);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let listening = link
            .borrow()
            .is_some_and(|since| since.elapsed() >= offline_after);
        if !listening {
            continue;
        }
        match store.raise_offline_alerts(now_micros(), grace).await {
            Ok(alerts) => {
                for alert in alerts {
                    tracing::warn!(
                        tenant = %alert.tenant,
                        appliance = %alert.appliance,
                        detail = alert.detail,
                        "appliance offline"
                    );
                    let tenant = alert.tenant.clone();
                    hub.publish(&tenant, LiveUpdate::Alert(alert));
                }
            }
            Err(error) => tracing::warn!(%error, "the offline-alert check failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_share_group_is_a_valid_secret_name_per_key() {
        let group = derived_share_group(b"key one");
        assert_eq!(group, derived_share_group(b"key one"));
        assert_ne!(group, derived_share_group(b"key two"));
        assert_eq!(group.len(), "relay-".len() + 16);
        assert!(
            gatehouse_protocol::ids::validate_id(&group).is_ok(),
            "{group}"
        );
        assert!(group.chars().count() >= crate::config::MIN_SHARE_GROUP_CHARS);
    }
}

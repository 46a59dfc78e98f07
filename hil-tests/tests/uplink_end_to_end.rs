//! The uplink end to end, with real processes only: the `gatehouse-edge` agent, claimed with
//! `gatehouse-edge claim` and connected with mutual TLS, sends its journal through a real
//! Mosquitto running the shipped configuration to the `gatehouse-relay` binary, which stores it
//! in SQLite or PostgreSQL and serves HQ. Outages (the broker down for a minute, kill -9 of the
//! relay and of the agent, one of two relay replicas killed) must lose and duplicate nothing:
//! at the end the relay holds exactly the agent's journal, seq 1..=N, in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use gatehouse_hil_tests::broker::{MqttSession, TlsBroker};
use gatehouse_hil_tests::harness::{
    self, ADMIN_TOKEN, AgentProcess, ApiClient, GUARD_TOKEN, busy_device, churn_registers,
    door_device, door_rule,
};
use gatehouse_hil_tests::modbus_sim::ModbusSim;
use gatehouse_hil_tests::relay::{
    self, DEFAULT_LOG_FILTER, InstalledAppliance, RelayConfig, RelayProcess, TestStore,
    claim_appliance, relay_records,
};
use gatehouse_protocol::wire::{self, WIRE_VERSION, pb};
use gatehouse_protocol::{DeviceStatus, Event, EventBody, IncidentState};
use prost::Message as _;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

/// The most one step (a message through the whole chain, a process start) may take.
const STEP: Duration = Duration::from_secs(20);

/// How long the relay may take to hold everything after the last disturbance: an agent
/// reconnects within 30 s of the broker's return (its backoff), and records lost with a
/// killed relay are sent again after 20 s without an acknowledgement.
const DRAIN: Duration = Duration::from_secs(90);

/// How long a surviving relay replica may take to hold everything once the other is killed:
/// what the dead one had not acknowledged comes again after the appliance's 20 s without an
/// acknowledgement; everything else goes to the survivor at once.
const CARRY_ON: Duration = Duration::from_secs(45);

/// Registers of the busy device: about this many events per 10 ms poll while they churn.
const BUSY_REGISTERS: u16 = 20;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// HQ: a broker with the shipped configuration and a relay on a fresh store. Fields drop in
/// order: the relay before the broker, both before the store and their folder.
struct Hq {
    relay: RelayProcess,
    broker: TlsBroker,
    _store: TestStore,
    folder: tempfile::TempDir,
}

/// A tenant with one site and an operator's API token (named `night-shift`).
struct Tenant {
    id: String,
    site: String,
    token: String,
    operator: ApiClient,
}

impl Hq {
    async fn start(backend: Backend, relay_log_filter: &str) -> anyhow::Result<Hq> {
        let folder = tempfile::tempdir()?;
        let store = match backend {
            Backend::Sqlite => TestStore::sqlite(folder.path()),
            Backend::Postgres => TestStore::postgres().await?,
        };
        let broker = TlsBroker::start(&subfolder(folder.path(), "broker")?)?;
        let mut config =
            RelayConfig::write(&subfolder(folder.path(), "relay")?, &broker, &store.url())?;
        config.log_filter = relay_log_filter.to_owned();
        let relay = RelayProcess::start(&config).await?;
        Ok(Hq {
            relay,
            broker,
            _store: store,
            folder,
        })
    }

    /// A tenant made with the relay's admin commands.
    fn tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        let config = self.relay.config();
        let id = config.create_tenant(name)?;
        let site = config.create_site(&id, "Head office")?;
        let token = config.create_token(&id, "operator", "night-shift")?;
        Ok(Tenant {
            operator: self.relay.api(&token),
            id,
            site,
            token,
        })
    }

    /// Claims and starts an appliance of `tenant` (its files in a folder named `name`).
    async fn install(
        &self,
        tenant: &Tenant,
        name: &str,
        devices_and_rules: &str,
    ) -> anyhow::Result<InstalledAppliance> {
        let folder = subfolder(self.folder.path(), name)?;
        relay::install_appliance(
            &self.relay,
            &tenant.id,
            &tenant.site,
            &folder,
            devices_and_rules,
        )
        .await
    }
}

fn subfolder(parent: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let folder = parent.join(name);
    std::fs::create_dir(&folder)?;
    Ok(folder)
}

/// Polls `probe` until it answers `Some`, for at most `timeout`.
async fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seq of the newest event in the agent's journal (0 while it is empty).
async fn edge_last_seq(edge: &ApiClient) -> anyhow::Result<u64> {
    let (status, page) = edge.get("/api/v1/events?order=desc&limit=1").await?;
    ensure!(
        status == 200,
        "the agent's events answered {status}: {page}"
    );
    Ok(page["items"][0]["seq"].as_u64().unwrap_or(0))
}

/// Every record of `appliance` up to this seq is stored at the relay.
async fn relay_acked(operator: &ApiClient, appliance: &str) -> anyhow::Result<u64> {
    let (status, body) = operator
        .get(&format!("/api/v1/appliances/{appliance}"))
        .await?;
    ensure!(
        status == 200,
        "the relay's appliance answered {status}: {body}"
    );
    body["acked_seq"].as_u64().context("no acked_seq")
}

/// Waits until the relay's ack reaches `seq`.
async fn relay_acked_at_least(
    operator: &ApiClient,
    appliance: &str,
    seq: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    until(&format!("the relay holds seq {seq}"), timeout, async || {
        let acked = relay_acked(operator, appliance).await?;
        Ok((acked >= seq).then_some(acked))
    })
    .await
}

/// Waits until the agent's journal reaches `seq` (its device produces events).
async fn edge_reaches(edge: &ApiClient, seq: u64, timeout: Duration) -> anyhow::Result<u64> {
    until(
        &format!("the agent journals seq {seq}"),
        timeout,
        async || {
            let last = edge_last_seq(edge).await?;
            Ok((last >= seq).then_some(last))
        },
    )
    .await
}

/// The busy device's registers changing in the background until stopped.
struct Churn {
    running: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Churn {
    fn start(sim: &Arc<ModbusSim>) -> Churn {
        let running = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(churn_registers(
            sim.clone(),
            BUSY_REGISTERS,
            running.clone(),
        ));
        Churn { running, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.running.store(false, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// A simulator with the busy device's unit, and the device's config section.
async fn busy_simulator() -> anyhow::Result<(Arc<ModbusSim>, String)> {
    let sim = Arc::new(harness::simulator().await?);
    let device = busy_device("busy", sim.addr(), BUSY_REGISTERS);
    Ok((sim, device))
}

/// Waits (at most `within`) until the relay holds everything the agent journaled, then checks
/// the relay's records of the appliance: exactly seq 1..=N, each once, in order, each the
/// agent's event of the same rank with the same content. Returns N. Events journaled while it
/// waits (a device status on a loaded machine) are waited for too.
async fn assert_relay_holds_the_journal(
    operator: &ApiClient,
    appliance: &str,
    edge: &ApiClient,
    within: Duration,
) -> anyhow::Result<usize> {
    let caught_up = until("the relay holds the whole journal", within, async || {
        let last = edge_last_seq(edge).await?;
        let acked = relay_acked(operator, appliance).await?;
        if last == 0 || acked != last {
            return Ok(None);
        }
        let mut journal = edge.all_events("").await?;
        journal.sort_by_key(|event| event.seq);
        Ok((journal.last().map(|event| event.seq) == Some(last)).then_some(journal))
    })
    .await;
    let journal = match caught_up {
        Ok(journal) => journal,
        Err(error) => {
            let last = edge_last_seq(edge).await?;
            let acked = relay_acked(operator, appliance).await?;
            let held = relay_records(operator, appliance).await?.len();
            bail!(
                "{error}: the agent journaled {last} events, the relay acknowledges {acked} \
                 and holds {held} records"
            );
        }
    };
    let records = relay_records(operator, appliance).await?;
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    let expected: Vec<u64> = (1..=journal.len() as u64).collect();
    if seqs != expected {
        let missing: Vec<&u64> = expected.iter().filter(|s| !seqs.contains(s)).collect();
        bail!(
            "the relay holds {} records for {} journal events; missing seqs (first 20): {:?}",
            seqs.len(),
            journal.len(),
            &missing[..missing.len().min(20)]
        );
    }
    for (record, event) in records.iter().zip(&journal) {
        ensure!(
            record["through_seq"] == record["seq"] && record["kind"] != "evicted",
            "an eviction marker where nothing was evicted: {record}"
        );
        let event = serde_json::to_value(event)?;
        ensure!(
            equal_to_the_microsecond(&record["body"], &event),
            "record {} differs from the journal:\nrelay: {}\nagent: {event}",
            record["seq"],
            record["body"]
        );
    }
    Ok(journal.len())
}

/// Whether two JSON values are equal, times compared to the microsecond: the wire carries
/// times in µs (`wire.proto`), while the journal keeps what the clock gave.
fn equal_to_the_microsecond(relay: &Json, edge: &Json) -> bool {
    match (relay, edge) {
        (Json::Object(relay), Json::Object(edge)) => {
            relay.len() == edge.len()
                && relay.iter().all(|(key, value)| {
                    edge.get(key)
                        .is_some_and(|other| equal_to_the_microsecond(value, other))
                })
        }
        (Json::Array(relay), Json::Array(edge)) => {
            relay.len() == edge.len()
                && relay
                    .iter()
                    .zip(edge)
                    .all(|(value, other)| equal_to_the_microsecond(value, other))
        }
        (Json::String(relay), Json::String(edge)) => {
            relay == edge
                || matches!(
                    (relay.parse::<jiff::Timestamp>(), edge.parse::<jiff::Timestamp>()),
                    (Ok(relay), Ok(edge)) if relay.as_microsecond() == edge.as_microsecond()
                )
        }
        _ => relay == edge,
    }
}

/// The door device with its rule.
fn door_site(sim: &ModbusSim) -> String {
    format!("{}{}", door_device("io", sim.addr(), 50), door_rule("io"))
}

/// Whether a relay stream message is incident `id` (any, when `None`) of `appliance` in
/// `state`.
fn is_incident(update: &Json, appliance: &str, id: Option<u64>, state: IncidentState) -> bool {
    update["type"] == "incident"
        && update["appliance"] == appliance
        && id.is_none_or(|id| update["id"] == id)
        && update["state"] == state.as_str()
}

/// The whole loop once: a claimed appliance's incident reaches HQ's stream and list, HQ's
/// acknowledgement reaches the appliance, and the guard's resolution on site reaches HQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_then_an_incident_reaches_hq() -> anyhow::Result<()> {
    let hq = Hq::start(Backend::Sqlite, DEFAULT_LOG_FILTER).await?;
    let tenant = hq.tenant("Acme")?;
    let sim = harness::simulator().await?;
    let appliance = hq.install(&tenant, "lobby", &door_site(&sim)).await?;
    let edge = appliance.agent.api(GUARD_TOKEN);

    // Claimed, and heard over MQTT (its status).
    let known = tenant
        .operator
        .wait_for(&format!("/api/v1/appliances/{}", appliance.id), STEP, |a| {
            a["online"] == true
        })
        .await?;
    assert!(known["claimed_at"].is_number(), "{known}");
    assert!(known["cert_fingerprint"].is_string(), "{known}");
    edge.wait_for("/api/v1/points/io.door", STEP, |p| p["value"] == false)
        .await?;

    let mut stream = hq.relay.stream(&tenant.token).await?;
    sim.set_discrete(1, 0, true);
    let (opened, _) = stream
        .wait_for_json(STEP, |u| {
            is_incident(u, &appliance.id, None, IncidentState::Open)
        })
        .await?;
    let id = opened["id"].as_u64().context("no incident id")?;
    assert_eq!(opened["severity"], "high", "{opened}");
    assert_eq!(opened["title"], "Door of io opened while armed", "{opened}");
    let (status, local) = edge.get(&format!("/api/v1/incidents/{id}")).await?;
    assert_eq!(status, 200, "{local}");
    assert_eq!(local["rule"], "io-door-open", "{local}");
    let listed = tenant.operator.get("/api/v1/incidents").await?.1;
    let items = listed["items"].as_array().context("no items")?;
    assert!(
        items.iter().any(|i| i["appliance"] == appliance.id.as_str()
            && i["id"] == id
            && i["state"] == "open"),
        "{listed}"
    );

    // Acknowledged at HQ: the appliance's own incident follows.
    let (status, answer) = tenant
        .operator
        .post(
            &format!("/api/v1/incidents/{}/{id}/ack", appliance.id),
            &json!({"comment": "on my way"}),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["incident"]["state"], "acknowledged", "{answer}");
    assert!(answer["command_id"].is_string(), "{answer}");
    let local = edge
        .wait_for(&format!("/api/v1/incidents/{id}"), STEP, |i| {
            i["state"] == "acknowledged"
        })
        .await?;
    assert_eq!(local["acknowledged"]["by"], "hq:night-shift", "{local}");
    assert_eq!(local["acknowledged"]["comment"], "on my way", "{local}");

    // Resolved on site: HQ sees it.
    let (status, body) = edge
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            &json!({"comment": "door wedged"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (resolved, _) = stream
        .wait_for_json(STEP, |u| {
            is_incident(u, &appliance.id, Some(id), IncidentState::Resolved)
        })
        .await?;
    let event: Event = serde_json::from_value(resolved["body"].clone())?;
    let EventBody::Incident { incident, .. } = event.body else {
        bail!("not an incident record: {resolved}");
    };
    let resolution = incident.resolved.context("no resolution")?;
    assert_eq!(resolution.by, "guard");
    assert_eq!(resolution.comment.as_deref(), Some("door wedged"));
    let (status, detail) = tenant
        .operator
        .get(&format!("/api/v1/incidents/{}/{id}", appliance.id))
        .await?;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["state"], "resolved", "{detail}");
    Ok(())
}

/// The broker (persistence on, as shipped) goes away for a minute in the middle of a stream;
/// the appliance keeps journaling into its outbox and catches up once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_a_minute_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    const OUTAGE: Duration = Duration::from_secs(60);
    const EVENTS: u64 = 10_000;
    let mut hq = Hq::start(Backend::Postgres, DEFAULT_LOG_FILTER).await?;
    let tenant = hq.tenant("Acme")?;
    let (sim, device) = busy_simulator().await?;
    let appliance = hq.install(&tenant, "busy", &device).await?;
    let edge = appliance.agent.api(ADMIN_TOKEN);
    let operator = &tenant.operator;

    // Records flow...
    let churn = Churn::start(&sim);
    relay_acked_at_least(operator, &appliance.id, 2_000, Duration::from_secs(60)).await?;
    // ...when the broker goes away for a minute; the appliance goes on journaling.
    hq.broker.stop()?;
    let outage = tokio::time::Instant::now();
    let journaled = edge_reaches(&edge, 7_000, OUTAGE).await?;
    churn.stop().await?;
    tokio::time::sleep_until(outage + OUTAGE).await;
    let acked = relay_acked(operator, &appliance.id).await?;
    ensure!(
        journaled >= acked + 1_000,
        "the outage held nothing back: journal at {journaled}, relay at {acked}"
    );
    hq.broker.restart()?;
    // More events while the appliance catches up.
    let churn = Churn::start(&sim);
    edge_reaches(
        &edge,
        EVENTS.max(journaled + 1_000),
        Duration::from_secs(60),
    )
    .await?;
    churn.stop().await?;

    let count = assert_relay_holds_the_journal(operator, &appliance.id, &edge, DRAIN).await?;
    assert!(count as u64 >= EVENTS, "{count}");
    Ok(())
}

/// kill -9 of the relay while batches flow, then of the agent with records in flight: the
/// relay's idempotent store and the appliance's resend of everything unacknowledged make it
/// exactly once, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_batch_and_appliance_killed_mid_send() -> anyhow::Result<()> {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        kill_relay_then_appliance(backend)
            .await
            .with_context(|| format!("on {backend:?}"))?;
    }
    Ok(())
}

async fn kill_relay_then_appliance(backend: Backend) -> anyhow::Result<()> {
    let mut hq = Hq::start(backend, DEFAULT_LOG_FILTER).await?;
    let tenant = hq.tenant("Acme")?;
    let (sim, device) = busy_simulator().await?;
    let mut appliance = hq.install(&tenant, "busy", &device).await?;
    let edge = appliance.agent.api(ADMIN_TOKEN);
    let operator = &tenant.operator;
    let churn = Churn::start(&sim);

    // kill -9 the relay while batches flow, and start it again.
    let acked = relay_acked_at_least(operator, &appliance.id, 1_000, STEP).await?;
    hq.relay.kill9()?;
    hq.relay.restart().await?;
    edge_reaches(&edge, acked + 3_000, STEP).await?;

    // kill -9 the agent while it has records in flight, and start it again.
    until("records in flight", STEP, async || {
        let acked = relay_acked(operator, &appliance.id).await?;
        let last = edge_last_seq(&edge).await?;
        Ok((last > acked + BUSY_REGISTERS as u64).then_some(()))
    })
    .await?;
    appliance.agent.kill9()?;
    let config = appliance.agent.config.clone();
    appliance.agent = AgentProcess::start_with(&config, appliance.agent.api.port()).await?;
    let edge = appliance.agent.api(ADMIN_TOKEN);
    let restarted_at = edge_last_seq(&edge).await?;
    edge_reaches(&edge, restarted_at + 1_000, STEP).await?;
    churn.stop().await?;

    assert_relay_holds_the_journal(operator, &appliance.id, &edge, DRAIN).await?;
    Ok(())
}

/// How many statements inserting records a replica ran, from its log: sqlx logs every
/// statement at debug with its first four words as `summary`, and the relay inserts records
/// only with `WITH batch (...) AS (VALUES ...) INSERT INTO records ...`
/// (relay/src/store/ingest.rs, `insert_statement`).
fn records_written(relay: &RelayProcess) -> usize {
    relay.log().matches("summary=\"WITH batch (seq,").count()
}

/// Two replicas of one relay (one share group, one PostgreSQL store) split the batches; when
/// one dies the other must get everything from then on. Mosquitto keeps giving a share of the
/// group to a disconnected member whose session persists, so a replica's session must end with
/// its connection (or the appliance's resend never gets past the messages queued for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relay_replicas_store_each_record_once() -> anyhow::Result<()> {
    let mut hq = Hq::start(Backend::Postgres, "info,sqlx::query=debug").await?;
    let replica = hq
        .relay
        .config()
        .replica(&subfolder(hq.folder.path(), "replica")?, "replica")?;
    let second = RelayProcess::start(&replica).await?;
    let tenant = hq.tenant("Acme")?;
    // The surviving replica's API: the first one is killed below.
    let operator = second.api(&tenant.token);
    let (sim, device) = busy_simulator().await?;
    let appliance = hq.install(&tenant, "busy", &device).await?;
    let edge = appliance.agent.api(ADMIN_TOKEN);
    let churn = Churn::start(&sim);

    // Both replicas of the share group take batches...
    relay_acked_at_least(&operator, &appliance.id, 1_000, Duration::from_secs(60)).await?;
    until("both replicas ingest", STEP, async || {
        let both = records_written(&hq.relay) > 0 && records_written(&second) > 0;
        Ok(both.then_some(()))
    })
    .await?;
    // ...until one is killed mid-stream: the other carries on alone, with everything sent
    // after the kill and everything the dead one had not acknowledged.
    hq.relay.kill9()?;
    let acked = relay_acked(&operator, &appliance.id).await?;
    let written = records_written(&second);
    edge_reaches(&edge, acked + 3_000, STEP).await?;
    churn.stop().await?;

    assert_relay_holds_the_journal(&operator, &appliance.id, &edge, CARRY_ON).await?;
    assert!(
        records_written(&second) > written,
        "the surviving replica wrote nothing after the kill"
    );
    Ok(())
}

/// The API's unit tests cover the matrix; this is the real-process version: another tenant's
/// appliance, incident and records are 404s, and its incident never shows on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_end_to_end() -> anyhow::Result<()> {
    let hq = Hq::start(Backend::Sqlite, DEFAULT_LOG_FILTER).await?;
    let (acme, bravo) = (hq.tenant("Acme")?, hq.tenant("Bravo")?);
    let (sim_a, sim_b) = (harness::simulator().await?, harness::simulator().await?);
    let app_a = hq.install(&acme, "acme", &door_site(&sim_a)).await?;
    let app_b = hq.install(&bravo, "bravo", &door_site(&sim_b)).await?;
    for appliance in [&app_a, &app_b] {
        appliance
            .agent
            .api(GUARD_TOKEN)
            .wait_for("/api/v1/points/io.door", STEP, |p| p["value"] == false)
            .await?;
    }
    let mut acme_stream = hq.relay.stream(&acme.token).await?;

    // Bravo's incident reaches the relay first, then Acme's: Acme's stream shows Acme's only.
    sim_b.set_discrete(1, 0, true);
    let listed = bravo
        .operator
        .wait_for("/api/v1/incidents", STEP, |page| {
            page["items"][0]["appliance"] == app_b.id.as_str()
        })
        .await?;
    let bravo_incident = listed["items"][0]["id"].as_u64().context("no id")?;
    sim_a.set_discrete(1, 0, true);
    let (shown, before) = acme_stream
        .wait_for_json(STEP, |u| {
            is_incident(u, &app_a.id, None, IncidentState::Open)
        })
        .await?;
    for update in before.iter().chain([&shown]) {
        assert!(
            !update.to_string().contains(&app_b.id),
            "Acme's stream showed Bravo's appliance: {update}"
        );
    }

    let b = &app_b.id;
    for path in [
        format!("/api/v1/appliances/{b}"),
        format!("/api/v1/incidents/{b}/{bravo_incident}"),
        format!("/api/v1/events?appliance={b}"),
        format!("/api/v1/incidents?appliance={b}"),
    ] {
        let (status, body) = acme.operator.get(&path).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let path = format!("/api/v1/incidents/{b}/{bravo_incident}/ack");
    let (status, body) = acme.operator.post(&path, &json!({})).await?;
    assert_eq!(status, 404, "{path}: {body}");
    for path in ["/api/v1/appliances", "/api/v1/incidents", "/api/v1/events"] {
        let (status, body) = acme.operator.get(path).await?;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains(b.as_str()), "{path}: {body}");
        assert!(body.to_string().contains(&app_a.id), "{path}: {body}");
    }
    Ok(())
}

/// A batch of one device status record at `seq`, its reason `reason`, in an envelope of
/// `version`.
fn status_batch(version: u32, seq: u64, reason: &str) -> anyhow::Result<Vec<u8>> {
    let event = Event {
        seq,
        recorded_at: jiff::Timestamp::now(),
        body: EventBody::DeviceStatus {
            device: "io".parse()?,
            status: DeviceStatus::Offline,
            reason: Some(reason.to_owned()),
        },
    };
    let batch = pb::envelope::Body::Batch(pb::Batch {
        records: vec![pb::Record {
            seq,
            content: Some(pb::record::Content::Event(pb::Event::from(&event))),
        }],
    });
    Ok(pb::Envelope {
        version,
        body: Some(batch),
    }
    .encode_to_vec())
}

/// Publishes `payload` on `topic` every half second until the relay acknowledges `seq` (the
/// relay may still be subscribing: an appliance resends too).
async fn publish_until_acked(
    session: &mut MqttSession,
    topic: &str,
    payload: &[u8],
    seq: u64,
) -> anyhow::Result<()> {
    until(&format!("the ack of {seq}"), STEP, async || {
        session
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await?;
        while let Some(message) = session.next_message(Duration::from_millis(500)).await? {
            if let pb::envelope::Body::Ack(ack) = wire::decode(&message.payload)?
                && ack.up_to_seq >= seq
            {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await
}

/// relay_service.rs covers garbage payloads; this is an envelope of a version the relay does
/// not speak, from a really claimed appliance, to the relay binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_wire_version_is_refused_and_ingestion_goes_on() -> anyhow::Result<()> {
    let hq = Hq::start(Backend::Sqlite, DEFAULT_LOG_FILTER).await?;
    let tenant = hq.tenant("Acme")?;
    let folder = subfolder(hq.folder.path(), "lobby")?;
    let claimed = claim_appliance(&hq.relay, &tenant.id, &tenant.site, &folder, "")?;
    let options = hq
        .broker
        .options_for(&claimed.id, &claimed.tls_identity()?)?;
    let mut session = MqttSession::connect(options, STEP).await?;
    session
        .subscribe_acked(&format!("gatehouse/v1/{}/down/ack", claimed.id), STEP)
        .await?;
    let up = format!("gatehouse/v1/{}/up/records", claimed.id);

    publish_until_acked(&mut session, &up, &status_batch(WIRE_VERSION, 1, "one")?, 1).await?;
    let future = status_batch(WIRE_VERSION + 1, 2, "from the future")?;
    session.publish_acked(&up, &future, false, STEP).await?;
    publish_until_acked(&mut session, &up, &status_batch(WIRE_VERSION, 2, "two")?, 2).await?;

    let log = hq.relay.log();
    let refusal = format!("envelope version {} is not supported", WIRE_VERSION + 1);
    assert!(
        log.lines()
            .any(|line| line.contains("relay refused a message") && line.contains(&refusal)),
        "the relay's log does not show the refusal:\n{log}"
    );
    let records = relay_records(&tenant.operator, &claimed.id).await?;
    let reasons: Vec<&Json> = records.iter().map(|r| &r["body"]["reason"]).collect();
    assert_eq!(reasons, [&json!("one"), &json!("two")], "{records:?}");
    Ok(())
}

//! The relay service in-process (`gatehouse_relay::service`) against a real Mosquitto running
//! the shipped configuration: a fake appliance (rumqttc with an appliance certificate) sends
//! its status and a batch and gets the ack; a malformed payload is refused without stopping
//! ingestion; a record the relay cannot use is stored as `rejected` and acked past; an
//! operator's acknowledgement over the API reaches the appliance as a command, comes again
//! when the appliance comes back online, and no more once the appliance has carried it out;
//! the relay rides out a broker restart; the relay stops cleanly, and what an appliance sends
//! while it is away is acked once the appliance sends it again.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use gatehouse_hil_tests::broker::{MqttSession, TlsBroker};
use gatehouse_protocol::wire::{self, pb};
use gatehouse_protocol::{
    ApplianceId, Event, EventBody, Incident, IncidentChange, IncidentState, Severity,
};
use gatehouse_relay::config::Config;
use gatehouse_relay::ingest::MqttCounters;
use gatehouse_relay::service;
use gatehouse_relay::store::{Role, Store};
use jiff::Timestamp;
use rumqttc::v5::mqttbytes::QoS;
use tokio_util::sync::CancellationToken;

/// The most the test may take.
const LIMIT: Duration = Duration::from_secs(60);
/// The most one step may take.
const STEP: Duration = Duration::from_secs(10);

/// Writes the relay's files and configuration for `broker` in `folder`.
fn relay_config(broker: &TlsBroker, folder: &Path, database: &str) -> anyhow::Result<Config> {
    let relay = broker.relay_identity()?;
    std::fs::write(folder.join("fleet-ca.pem"), broker.ca().cert_pem())?;
    std::fs::write(folder.join("fleet-ca.key"), broker.ca().key_pem())?;
    std::fs::write(folder.join("relay.pem"), &relay.cert_pem)?;
    std::fs::write(folder.join("relay.key"), &relay.key_pem)?;
    let path = folder.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[store]
url = "{database}"

[api]
listen = "127.0.0.1:0"

[broker]
host = "127.0.0.1"
port = {relay_port}
ca_file = "fleet-ca.pem"
cert_file = "relay.pem"
key_file = "relay.key"
client_id = "relay:hil"

[fleet]
ca_cert = "fleet-ca.pem"
ca_key = "fleet-ca.key"
broker_host = "127.0.0.1"
broker_port = {port}
"#,
            relay_port = broker.relay_port(),
            port = broker.port(),
        ),
    )?;
    Config::load(&path).map_err(|error| anyhow::anyhow!("{error}"))
}

/// A tenant, a site and a claimed appliance, and an operator's API token.
async fn provision(store: &Store) -> anyhow::Result<(ApplianceId, String)> {
    let now = Timestamp::now().as_microsecond();
    let (_, scope) = store.create_tenant("Acme", now).await?;
    let site = store.create_site(&scope, "HQ", now).await?;
    let claim = store
        .create_claim(&scope, &site.id, "lobby", now, now + 3_600_000_000)
        .await?;
    store.redeem_claim(&claim.code, now).await?;
    let token = store
        .create_api_token(&scope, "night-shift", Role::Operator, now)
        .await?;
    Ok((claim.appliance, token.token))
}

/// Record `seq`: incident 7 in `state`.
fn incident(seq: u64, state: IncidentState) -> anyhow::Result<pb::Record> {
    let now = Timestamp::now();
    let change = match state {
        IncidentState::Open => IncidentChange::Opened,
        IncidentState::Acknowledged => IncidentChange::Acknowledged,
        IncidentState::Resolved => IncidentChange::Resolved,
    };
    let event = Event {
        seq: 100 + seq,
        recorded_at: now,
        body: EventBody::Incident {
            change,
            incident: Box::new(Incident {
                id: 7,
                rule: "door-held".parse()?,
                title: "Door held open".into(),
                severity: Severity::High,
                zone: None,
                state,
                opened_at: now,
                evidence: Vec::new(),
                escalations: 0,
                acknowledged: None,
                resolved: None,
                clips: Vec::new(),
            }),
        },
    };
    Ok(pb::Record {
        seq,
        content: Some(pb::record::Content::Event(pb::Event::from(&event))),
    })
}

fn batch(records: Vec<pb::Record>) -> Vec<u8> {
    wire::encode(pb::envelope::Body::Batch(pb::Batch { records }))
}

fn status(online: bool) -> Vec<u8> {
    wire::encode(pb::envelope::Body::Status(pb::ApplianceStatus {
        online,
        outbox_backlog: 0,
        outbox_dropped: 0,
        at_us: Timestamp::now().as_microsecond(),
        agent_version: "test".into(),
    }))
}

/// Publishes `payload` on `topic` every half second until the appliance receives a message
/// `accept` likes (the relay may still be subscribing: an appliance resends too).
async fn until_answered<T>(
    session: &mut MqttSession,
    topic: &str,
    payload: &[u8],
    mut accept: impl FnMut(pb::envelope::Body) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        session
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await?;
        while let Some(message) = session.next_message(Duration::from_millis(500)).await? {
            if let Some(found) = accept(wire::decode(&message.payload)?) {
                return Ok(found);
            }
        }
    }
    anyhow::bail!("no answer to {topic} within {STEP:?}")
}

fn ack_of(body: pb::envelope::Body) -> Option<u64> {
    match body {
        pb::envelope::Body::Ack(ack) => Some(ack.up_to_seq),
        _ => None,
    }
}

/// `appliance` connected to the broker with its own certificate, subscribed to its down
/// topics.
async fn connect_appliance(
    broker: &TlsBroker,
    appliance: &ApplianceId,
) -> anyhow::Result<MqttSession> {
    let mut app = MqttSession::connect(
        broker.client_options(appliance.as_str(), appliance.as_str())?,
        STEP,
    )
    .await?;
    app.subscribe_acked(&format!("gatehouse/v1/{appliance}/down/#"), STEP)
        .await?;
    Ok(app)
}

/// Sends `records` on `topic` until the relay acks them up to `through`.
async fn acked_through(
    session: &mut MqttSession,
    topic: &str,
    records: Vec<pb::Record>,
    through: u64,
) -> anyhow::Result<()> {
    let acked = until_answered(session, topic, &batch(records), |body| {
        ack_of(body).filter(|seq| *seq == through)
    })
    .await?;
    assert_eq!(acked, through);
    Ok(())
}

/// Stops the relay, which must finish within a step.
async fn stop(shutdown: &CancellationToken, running: service::Running) -> anyhow::Result<()> {
    shutdown.cancel();
    tokio::time::timeout(STEP, running.wait())
        .await
        .context("the relay did not stop in time")?
}

/// The next command the appliance receives (other messages are skipped).
async fn next_command(session: &mut MqttSession) -> anyhow::Result<pb::Command> {
    loop {
        let message = session
            .next_message(STEP)
            .await?
            .context("no command arrived")?;
        if message.topic.ends_with(b"/down/commands") {
            let pb::envelope::Body::Command(command) = wire::decode(&message.payload)? else {
                anyhow::bail!("not a command");
            };
            return Ok(command);
        }
    }
}

fn is_command(message: &rumqttc::v5::mqttbytes::v5::Publish) -> bool {
    message.topic.ends_with(b"/down/commands")
}

#[tokio::test]
async fn an_appliance_is_heard_acked_and_commanded_through_the_running_relay() -> anyhow::Result<()>
{
    tokio::time::timeout(LIMIT, scenario())
        .await
        .map_err(|_| anyhow::anyhow!("the test took more than {LIMIT:?}"))?
}

async fn scenario() -> anyhow::Result<()> {
    // The relay's log, shown when the test fails (RUST_LOG to change the level).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let folder = tempfile::tempdir()?;
    let broker_folder = folder.path().join("broker");
    std::fs::create_dir(&broker_folder)?;
    let mut broker = TlsBroker::start(&broker_folder)?;
    let database = format!(
        "sqlite://{}?mode=rwc",
        folder.path().join("relay.db").display()
    );
    let config = relay_config(&broker, folder.path(), &database)?;
    let store = Store::open(&database).await?;
    let (appliance, token) = provision(&store).await?;

    let shutdown = CancellationToken::new();
    let running = service::start(config, shutdown.clone()).await?;
    let api = format!("http://{}/api/v1", running.api_addr);
    let counters = running.counters.clone();

    let mut app = connect_appliance(&broker, &appliance).await?;
    let up = |channel: &str| format!("gatehouse/v1/{appliance}/up/{channel}");

    // A batch with an incident: stored, then acked.
    let acked = until_answered(
        &mut app,
        &up("records"),
        &batch(vec![incident(1, IncidentState::Open)?]),
        ack_of,
    )
    .await?;
    assert_eq!(acked, 1);

    // A status: the relay marks the appliance online.
    app.client
        .publish(up("status"), QoS::AtLeastOnce, true, status(true))
        .await?;
    let scope = store
        .appliance_scope(&appliance)
        .await?
        .context("the appliance has no tenant")?;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let health = store.appliance(&scope, &appliance).await?.context("gone")?;
        if health.online {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Garbage is refused, counted, and ingestion goes on.
    app.client
        .publish(
            up("records"),
            QoS::AtLeastOnce,
            false,
            b"not protobuf".to_vec(),
        )
        .await?;
    let two_to_five = pb::Record {
        seq: 2,
        content: Some(pb::record::Content::Evicted(pb::Evicted { through_seq: 5 })),
    };
    acked_through(&mut app, &up("records"), vec![two_to_five], 5).await?;
    assert_eq!(MqttCounters::get(&counters.rejected), 1);
    assert!(MqttCounters::get(&counters.batches) >= 2);

    // A record the relay cannot use (no content it knows, as from a newer appliance) is
    // stored as `rejected` and acked past, instead of holding the appliance's outbox forever.
    let unknown = pb::Record {
        seq: 6,
        content: None,
    };
    acked_through(&mut app, &up("records"), vec![unknown], 6).await?;
    assert_eq!(MqttCounters::get(&counters.records_rejected), 1);
    assert_eq!(MqttCounters::get(&counters.rejected), 1);

    // An operator acknowledges the incident: the appliance receives the command.
    // reqwest may be built with rustls (features unify across the workspace) and then needs
    // a process-wide provider; the API here is plain HTTP either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{api}/incidents/{appliance}/7/ack"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"comment": "on my way"}))
        .send()
        .await?;
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = answer.json().await?;
    let command_id = answer["command_id"]
        .as_str()
        .context("no command id")?
        .to_owned();
    let command = next_command(&mut app).await?;
    assert_eq!(command.command_id, command_id);
    let Some(pb::command::Action::Incident(action)) = command.action else {
        anyhow::bail!("not an incident action: {command:?}");
    };
    assert_eq!(action.incident_id, 7);
    assert_eq!(action.step(), pb::incident_action::Step::Acknowledge);
    // The token's name: the appliance records it as `hq:night-shift`.
    assert_eq!(action.by, "night-shift");
    assert_eq!(MqttCounters::get(&counters.downlinks_published), 1);

    // The appliance goes away and comes back before carrying it out: the command comes again.
    for online in [false, true] {
        app.client
            .publish(up("status"), QoS::AtLeastOnce, true, status(online))
            .await?;
    }
    assert_eq!(next_command(&mut app).await?.command_id, command_id);
    assert_eq!(MqttCounters::get(&counters.downlinks_resent), 1);

    // It carries it out: its incident record completes the command, which stops coming.
    let done = incident(7, IncidentState::Acknowledged)?;
    acked_through(&mut app, &up("records"), vec![done], 7).await?;
    assert_eq!(MqttCounters::get(&counters.downlinks_done), 1);
    for online in [false, true] {
        app.client
            .publish(up("status"), QoS::AtLeastOnce, true, status(online))
            .await?;
    }
    let later = app.messages_during(Duration::from_secs(1)).await?;
    assert!(!later.iter().any(is_command), "a done command came again");
    assert_eq!(MqttCounters::get(&counters.downlinks_resent), 1);

    // The broker restarts: the relay reconnects and subscribes again on its own.
    drop(app);
    broker.stop()?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    broker.restart()?;
    let mut app = connect_appliance(&broker, &appliance).await?;
    acked_through(&mut app, &up("records"), vec![evicted(8)], 8).await?;

    stop(&shutdown, running).await?;
    assert!(
        http.get(format!("{api}/health")).send().await.is_err(),
        "the API still answers"
    );

    // Sent while no relay is connected: the relay keeps no session (a dead replica must not
    // hold a share of the group's messages), so nothing acks it; the appliance sends it again,
    // as it does with every record the relay has not acknowledged, and that is acked.
    app.publish_acked(&up("records"), &batch(vec![evicted(9)]), false, STEP)
        .await?;
    let shutdown = CancellationToken::new();
    let running = service::start(
        relay_config(&broker, folder.path(), &database)?,
        shutdown.clone(),
    )
    .await?;
    acked_through(&mut app, &up("records"), vec![evicted(9)], 9).await?;
    stop(&shutdown, running).await?;
    Ok(())
}

/// Record `seq`: the appliance evicted it (a record that is always stored).
fn evicted(seq: u64) -> pb::Record {
    pb::Record {
        seq,
        content: Some(pb::record::Content::Evicted(pb::Evicted {
            through_seq: seq,
        })),
    }
}

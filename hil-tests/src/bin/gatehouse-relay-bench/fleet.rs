//! `fleet`: many appliances connected at once through one broker and one relay, each
//! sending a trickle of events; what do the relay and the broker cost, and does every event
//! get acknowledged?
//!
//! What runs, all on 127.0.0.1: a TLS Mosquitto with the shipped configuration, the
//! `gatehouse-relay` binary on a fresh database, and `--appliances` simulated appliances in
//! this process. A simulated appliance is what the edge's uplink is on the wire, without a
//! journal: its own MQTT v5 connection (rumqttc over TLS 1.3, a certificate of the fleet CA
//! for its id, claimed at the relay), persistent session and last will, an online status
//! (retained) at every connection and every 30 s, and records sent as wire batches on its own
//! `up/records`, driven by the edge's own [`Sender`] state machine (window, resend after a
//! reconnection or after 20 s without acknowledgement), acknowledged by the relay on its
//! `down/ack`. Each appliance produces `--events-per-second` observations, at its own phase,
//! so the fleet's load is spread evenly over each second.
//!
//! One run per fleet size, `--baseline-appliances` first, each on a fresh broker, database and
//! relay: provision and connect every appliance (`--connect-concurrency` TLS handshakes at a
//! time), wait `--warm-up-seconds`, then measure `--seconds`: CPU of the relay, the broker,
//! PostgreSQL and this process from `/proc/<pid>/stat`, and the relay's and the broker's
//! VmRSS every second (the median is reported). Then the appliances stop producing and get
//! up to `--settle-seconds` for every event to be acknowledged.
//!
//! Every connection is a file descriptor here and one in the broker, which inherits this
//! process's limit: `ulimit -n` must exceed the fleet.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use gatehouse_edge::uplink::sender::Sender;
use gatehouse_hil_tests::broker::TlsBroker;
use gatehouse_protocol::wire::topics::{Channel, topic};
use gatehouse_protocol::wire::{self, pb};
use gatehouse_protocol::{
    ApplianceId, DeviceId, Event, EventBody, PointId, Quality, Value, ZoneId,
};
use gatehouse_relay::store::Store;
use jiff::Timestamp;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, MqttOptions};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::measure::{self, CpuMeter, CpuUse, Distribution, Watched};
use crate::setup::{self, Backend, CommonArgs, Database, Tenant};

/// Records per message at most, and unacknowledged records at most, as the edge's uplink
/// (`BATCH_RECORDS`, `WINDOW_RECORDS` in `edge-agent/src/uplink/session.rs`).
const BATCH_RECORDS: u64 = 500;
const WINDOW_RECORDS: u64 = 5_000;
/// Records in flight without any acknowledgement for this long are sent again (the uplink's
/// `ACK_TIMEOUT`).
const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How often an appliance looks for records to send and for an overdue acknowledgement even
/// when nothing happened (the uplink's poll tick).
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often an appliance says it is online (the uplink's `STATUS_EVERY`).
const STATUS_EVERY: Duration = Duration::from_secs(30);
/// Publishes in flight per simulated appliance. rumqttc's v5 event loop allocates an array of
/// this many `Option<Publish>` per client, 65,536 unless told (about 14 MiB, resident): 2,000
/// of them do not fit in this machine's memory. An appliance sending a batch a second never
/// has more than a few in flight, so this changes nothing on the wire.
const INFLIGHT_LIMIT: u16 = 32;
/// Wait before reconnecting after a connection error.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long the whole fleet may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);
/// File descriptors this process needs besides its appliances' connections.
const SPARE_FILES: u64 = 200;

/// Many simulated appliances through one broker and one relay; see the module documentation.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated appliances connected at once in the load run.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    appliances: u32,

    /// Simulated appliances in the baseline run, before the load run (0 skips it).
    #[arg(long, default_value_t = 100)]
    baseline_appliances: u32,

    /// Events each appliance produces per second.
    #[arg(long, default_value_t = 1.0)]
    events_per_second: f64,

    /// The measured steady-state window of each run.
    #[arg(long, default_value_t = 45, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,

    /// How long every appliance runs connected before the window starts.
    #[arg(long, default_value_t = 10)]
    warm_up_seconds: u64,

    /// TLS connections set up at once while the fleet connects.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    connect_concurrency: u32,

    /// After the window, how long every event produced may take to be acknowledged.
    #[arg(long, default_value_t = 45)]
    settle_seconds: u64,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    started_at: Timestamp,
    store: Backend,
    events_per_second_per_appliance: f64,
    runs: Vec<RunReport>,
}

#[derive(Debug, Serialize)]
struct RunReport {
    appliances: u32,
    /// From the first connection attempt until every appliance had its CONNACK.
    connect_seconds: f64,
    window_seconds: f64,
    /// Events produced per second in the window, by the whole fleet.
    offered_events_per_second: f64,
    /// Events the relay acknowledged per second in the window.
    acked_events_per_second: f64,
    events_produced: u64,
    events_acked: u64,
    /// Every event produced was acknowledged by the end of the settling time.
    all_acked: bool,
    appliances_not_fully_acked: usize,
    /// From an event's production to the relay's acknowledgement covering it, in the window.
    ack_latency: Distribution,
    /// The relay after it started, before any appliance connected.
    relay_idle_rss_kib: u64,
    relay_rss_kib: u64,
    relay_rss_max_kib: u64,
    broker_rss_kib: u64,
    broker_rss_max_kib: u64,
    /// This process at the end of the window: the simulated appliances.
    harness_rss_kib: u64,
    /// Over the window; `harness` is this process (the simulated appliances).
    cpu: Vec<CpuUse>,
    batches_published: u64,
    connection_losses: u64,
    /// Times an appliance resent its unacknowledged records after [`ACK_TIMEOUT`].
    resends_after_timeout: u64,
    load_average: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.events_per_second > 0.0 && args.events_per_second <= 1000.0) {
        bail!("--events-per-second must be above 0 and at most 1000");
    }
    let needed = u64::from(args.appliances.max(args.baseline_appliances)) + SPARE_FILES;
    match measure::open_files_limit() {
        Some(limit) if limit < needed => bail!(
            "{} appliances need about {needed} open files here and in the broker, but the \
             limit is {limit}: raise it first (ulimit -n {})",
            args.appliances,
            needed.next_power_of_two()
        ),
        _ => {}
    }
    let mut report = Report {
        started_at: Timestamp::now(),
        store: args.common.store,
        events_per_second_per_appliance: args.events_per_second,
        runs: Vec::new(),
    };
    for (index, appliances) in [args.baseline_appliances, args.appliances]
        .into_iter()
        .filter(|count| *count > 0)
        .enumerate()
    {
        eprintln!(
            "run {}: {appliances} appliances × {} events/s ({:?}) …",
            index + 1,
            args.events_per_second,
            args.common.store
        );
        let run = run_fleet(&args, appliances).await?;
        eprintln!("  {}", summary_line(&run));
        report.runs.push(run);
    }
    println!("{}", summary(&report));
    if let Some(path) = &args.common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// What the simulated appliances share: counters and the two stop signals.
#[derive(Debug, Default)]
struct Fleet {
    connected: AtomicU64,
    produced: AtomicU64,
    acked: AtomicU64,
    batches: AtomicU64,
    connection_losses: AtomicU64,
    resends: AtomicU64,
    /// Ack latencies are kept only while measuring.
    measuring: AtomicBool,
    ack_latencies_ms: Mutex<Vec<f64>>,
    /// Cancelled: stop producing (keep sending and taking acks).
    producing: CancellationToken,
    /// Cancelled: disconnect and end.
    stop: CancellationToken,
}

impl Fleet {
    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One fleet size on a fresh broker, database and relay.
async fn run_fleet(args: &Args, appliances: u32) -> anyhow::Result<RunReport> {
    let folder = tempfile::tempdir()?;
    let broker_folder = folder.path().join("broker");
    std::fs::create_dir(&broker_folder)?;
    let broker = TlsBroker::start(&broker_folder)?;
    let database = Database::create(&args.common, folder.path(), "fleet").await?;
    let store = Store::open(&database.url).await?;
    let tenant = Tenant::create(store.clone()).await?;
    let mut fleet_options = Vec::with_capacity(appliances as usize);
    for index in 0..appliances {
        let id = tenant.appliance(&format!("sim-{index:05}")).await?;
        let options = broker.client_options(id.as_str(), id.as_str())?;
        fleet_options.push((id, options));
        if (index + 1) % 500 == 0 {
            eprintln!("  {} appliances claimed", index + 1);
        }
    }
    let mut relay = setup::start_relay(folder.path(), &broker, &database.url).await?;
    setup::wait_until_relay_consumes(&broker, &tenant).await?;
    let relay_idle = measure::sample(relay.pid()?)?;
    let broker_pid = setup::broker_pid(&broker)?;

    let fleet = Arc::new(Fleet::default());
    let slots = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let template = Arc::new(observation_template()?);
    let period = Duration::from_secs_f64(1.0 / args.events_per_second);
    let connecting = Instant::now();
    let tasks: Vec<_> = fleet_options
        .into_iter()
        .map(|(id, options)| {
            tokio::spawn(simulate(
                SimAppliance::new(id, options, template.clone()),
                fleet.clone(),
                slots.clone(),
                period,
            ))
        })
        .collect();
    let mut next_progress = Instant::now() + Duration::from_secs(5);
    while Fleet::count(&fleet.connected) < u64::from(appliances) {
        if connecting.elapsed() > CONNECT_TIMEOUT {
            bail!(
                "only {} of {appliances} appliances connected within {CONNECT_TIMEOUT:?}; broker \
                 log tail:\n{}",
                Fleet::count(&fleet.connected),
                broker
                    .log()
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if Instant::now() >= next_progress {
            eprintln!("  {} connected", Fleet::count(&fleet.connected));
            next_progress += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();
    eprintln!("  all {appliances} connected in {connect_seconds:.1} s; warming up …");
    tokio::time::sleep(Duration::from_secs(args.warm_up_seconds)).await;

    let meter = CpuMeter::start(&[
        ("relay", Watched::Process(relay.pid()?)),
        ("broker", Watched::Process(broker_pid)),
        ("postgres", Watched::Postgres),
        ("harness", Watched::Process(std::process::id())),
    ]);
    let window_start = Instant::now();
    let (produced_before, acked_before) =
        (Fleet::count(&fleet.produced), Fleet::count(&fleet.acked));
    fleet.measuring.store(true, Ordering::Relaxed);
    let (mut relay_rss, mut broker_rss) = (Vec::new(), Vec::new());
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    for second in 0..args.seconds {
        ticks.tick().await;
        relay_rss.push(measure::sample(relay.pid()?)?.rss_kib);
        broker_rss.push(measure::sample(broker_pid)?.rss_kib);
        if second % 10 == 9 {
            eprintln!(
                "  {:>3} s: relay {:.1} MiB, broker {:.1} MiB, {} produced, {} acked",
                second + 1,
                mib(relay_rss.last()),
                mib(broker_rss.last()),
                Fleet::count(&fleet.produced),
                Fleet::count(&fleet.acked)
            );
        }
    }
    ticks.tick().await;
    fleet.measuring.store(false, Ordering::Relaxed);
    let cpu = meter.read();
    let harness_rss_kib = measure::sample(std::process::id())?.rss_kib;
    let window = window_start.elapsed().as_secs_f64();
    let offered = (Fleet::count(&fleet.produced) - produced_before) as f64 / window;
    let acked_rate = (Fleet::count(&fleet.acked) - acked_before) as f64 / window;

    fleet.producing.cancel();
    let settle_until = Instant::now() + Duration::from_secs(args.settle_seconds);
    while Fleet::count(&fleet.acked) < Fleet::count(&fleet.produced)
        && Instant::now() < settle_until
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.stop.cancel();
    let mut not_fully_acked = 0;
    for task in tasks {
        let (produced, acked) = task.await?;
        if acked < produced {
            not_fully_acked += 1;
        }
    }
    let latencies = std::mem::take(
        &mut *fleet
            .ack_latencies_ms
            .lock()
            .map_err(|_| anyhow::anyhow!("an appliance panicked"))?,
    );
    relay.stop().await?;
    store.close().await;
    database.destroy().await?;
    drop(broker);

    Ok(RunReport {
        appliances,
        connect_seconds,
        window_seconds: window,
        offered_events_per_second: offered,
        acked_events_per_second: acked_rate,
        events_produced: Fleet::count(&fleet.produced),
        events_acked: Fleet::count(&fleet.acked),
        all_acked: not_fully_acked == 0,
        appliances_not_fully_acked: not_fully_acked,
        ack_latency: Distribution::of(latencies),
        relay_idle_rss_kib: relay_idle.rss_kib,
        relay_rss_kib: measure::median_of_last(&relay_rss, relay_rss.len()),
        relay_rss_max_kib: relay_rss.iter().copied().max().unwrap_or(0),
        broker_rss_kib: measure::median_of_last(&broker_rss, broker_rss.len()),
        broker_rss_max_kib: broker_rss.iter().copied().max().unwrap_or(0),
        harness_rss_kib,
        cpu,
        batches_published: Fleet::count(&fleet.batches),
        connection_losses: Fleet::count(&fleet.connection_losses),
        resends_after_timeout: Fleet::count(&fleet.resends),
        load_average: measure::load_average(),
    })
}

fn mib(kib: Option<&u64>) -> f64 {
    kib.copied().unwrap_or(0) as f64 / 1024.0
}

/// The observation every simulated appliance sends (only seq and times change).
fn observation_template() -> anyhow::Result<EventBody> {
    Ok(EventBody::Observation {
        device: DeviceId::new("door-1")?,
        point: PointId::new("door-1.temperature")?,
        zone: Some(ZoneId::new("lobby")?),
        value: Some(Value::Float(21.5)),
        quality: Quality::Good,
        observed_at: Timestamp::now(),
    })
}

/// One simulated appliance: its connection, its in-memory outbox and the edge's [`Sender`].
struct SimAppliance {
    id: ApplianceId,
    options: MqttOptions,
    template: Arc<EventBody>,
    sender: Sender,
    /// Every record produced, seq `index + 1`, with when it was produced.
    outbox: Vec<(Instant, pb::Record)>,
    /// The ack last moved (or nothing was in flight) at this time.
    progress: (u64, Instant),
}

impl SimAppliance {
    fn new(id: ApplianceId, options: MqttOptions, template: Arc<EventBody>) -> Self {
        SimAppliance {
            id,
            options,
            template,
            sender: Sender::new(0, WINDOW_RECORDS),
            outbox: Vec::new(),
            progress: (0, Instant::now()),
        }
    }

    fn status(online: bool) -> Vec<u8> {
        wire::encode(pb::envelope::Body::Status(pb::ApplianceStatus {
            online,
            outbox_backlog: 0,
            outbox_dropped: 0,
            at_us: setup::now_micros(),
            agent_version: "bench-sim".into(),
        }))
    }

    fn produce(&mut self, fleet: &Fleet) {
        let seq = self.outbox.len() as u64 + 1;
        let now = Timestamp::now();
        let mut body = (*self.template).clone();
        if let EventBody::Observation {
            value, observed_at, ..
        } = &mut body
        {
            *value = Some(Value::Float(20.0 + (seq % 100) as f64 / 10.0));
            *observed_at = now;
        }
        let event = Event {
            seq,
            recorded_at: now,
            body,
        };
        self.outbox.push((
            Instant::now(),
            pb::Record {
                seq,
                content: Some(pb::record::Content::Event(pb::Event::from(&event))),
            },
        ));
        Fleet::add(&fleet.produced, 1);
    }

    fn on_connect(&mut self, client: &AsyncClient) {
        self.sender.on_connect();
        self.progress.1 = Instant::now();
        // try_*: the event loop is polled by this same task, so waiting for room in its
        // queue would wait forever; a full queue means the next loop turn sends it.
        let _ = client.try_subscribe(topic(&self.id, Channel::DownAck), QoS::AtLeastOnce);
        let _ = client.try_publish(
            topic(&self.id, Channel::UpStatus),
            QoS::AtLeastOnce,
            true,
            Self::status(true),
        );
    }

    fn on_message(&mut self, payload: &[u8], fleet: &Fleet) {
        let Ok(pb::envelope::Body::Ack(ack)) = wire::decode(payload) else {
            return;
        };
        let before = self.sender.acked();
        let up_to = ack.up_to_seq.min(self.outbox.len() as u64);
        if self.sender.on_ack(up_to) {
            Fleet::add(&fleet.acked, up_to - before);
            if fleet.measuring.load(Ordering::Relaxed)
                && let Some((produced, _)) = self.outbox.get(up_to as usize - 1)
                && let Ok(mut latencies) = fleet.ack_latencies_ms.lock()
            {
                latencies.push(measure::ms(produced.elapsed()));
            }
        }
    }

    /// Publishes records while the window allows, and resends after [`ACK_TIMEOUT`].
    fn send_more(&mut self, client: &AsyncClient, fleet: &Fleet) {
        if self.sender.acked() != self.progress.0 || self.sender.in_flight() == 0 {
            self.progress = (self.sender.acked(), Instant::now());
        } else if self.progress.1.elapsed() > ACK_TIMEOUT {
            self.sender.rewind();
            self.progress.1 = Instant::now();
            Fleet::add(&fleet.resends, 1);
        }
        let produced = self.outbox.len() as u64;
        while let Some((next, room)) = self.sender.wants() {
            if next > produced {
                return;
            }
            let last = produced.min(next + room.min(BATCH_RECORDS) - 1);
            let records = self.outbox[(next - 1) as usize..last as usize]
                .iter()
                .map(|(_, record)| record.clone())
                .collect();
            let payload = wire::encode(pb::envelope::Body::Batch(pb::Batch { records }));
            let queued = client.try_publish(
                topic(&self.id, Channel::UpRecords),
                QoS::AtLeastOnce,
                false,
                payload,
            );
            if queued.is_err() {
                return;
            }
            Fleet::add(&fleet.batches, 1);
            self.sender.on_sent(last);
        }
    }
}

/// Runs one simulated appliance until `fleet.stop`; returns (produced, acked).
async fn simulate(
    mut appliance: SimAppliance,
    fleet: Arc<Fleet>,
    slots: Arc<Semaphore>,
    period: Duration,
) -> (u64, u64) {
    let mut slot = slots.acquire_owned().await.ok();
    let mut options = appliance.options.clone();
    options
        .set_outgoing_inflight_upper_limit(INFLIGHT_LIMIT)
        .set_clean_start(false)
        .set_last_will(LastWill::new(
            topic(&appliance.id, Channel::UpStatus),
            SimAppliance::status(false),
            QoS::AtLeastOnce,
            true,
            None,
        ));
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (poller, mut events) = poll_in_task(eventloop);
    let phase = Duration::from_secs_f64(period.as_secs_f64() * rand::random::<f64>());
    let mut production = tokio::time::interval_at(Instant::now() + phase, period);
    production.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status = tokio::time::interval_at(Instant::now() + STATUS_EVERY, STATUS_EVERY);
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            () = fleet.stop.cancelled() => break,
            event = events.recv() => match event {
                Some(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                    slot = None;
                    appliance.on_connect(&client);
                    Fleet::add(&fleet.connected, 1);
                }
                Some(Ok(MqttEvent::Incoming(Packet::Publish(publish)))) => {
                    appliance.on_message(&publish.payload, &fleet);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    slot = None;
                    if appliance.sender.is_connected() {
                        appliance.sender.on_disconnect();
                        fleet.connected.fetch_sub(1, Ordering::Relaxed);
                        Fleet::add(&fleet.connection_losses, 1);
                    }
                }
                None => break,
            },
            // Checked again when the tick comes: the select may have been entered before
            // production stopped, and an event made after the settle loop saw every event
            // acked would never be sent (the "one event unacknowledged" of earlier runs).
            _ = production.tick(), if !fleet.producing.is_cancelled() => {
                if !fleet.producing.is_cancelled() {
                    appliance.produce(&fleet);
                }
            }
            // Nothing to do but the checks after the select: resend, or send what a full
            // request queue held back.
            _ = check.tick() => {}
            _ = status.tick(), if appliance.sender.is_connected() => {
                let _ = client.try_publish(
                    topic(&appliance.id, Channel::UpStatus),
                    QoS::AtLeastOnce,
                    true,
                    SimAppliance::status(true),
                );
            }
        }
        if appliance.sender.is_connected() {
            appliance.send_more(&client, &fleet);
        }
    }
    drop(slot);
    // A clean goodbye (no last will): DISCONNECT, polled out for at most a second.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(event) = events.recv().await {
                if matches!(
                    event,
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_)
                ) {
                    return;
                }
            }
        })
        .await;
    }
    poller.abort();
    (appliance.outbox.len() as u64, appliance.sender.acked())
}

/// Polls `eventloop` in a task of its own and hands every event over: rumqttc's `poll` must
/// not be cancelled half-way (a TLS handshake would start over), as a `select!` with timers
/// would. After a connection error the next poll (a reconnection) waits [`RECONNECT_DELAY`].
fn poll_in_task(
    mut eventloop: EventLoop,
) -> (
    JoinHandle<()>,
    mpsc::Receiver<Result<MqttEvent, ConnectionError>>,
) {
    let (sender, receiver) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if sender.send(event).await.is_err() {
                return;
            }
            if failed {
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    });
    (task, receiver)
}

fn summary_line(run: &RunReport) -> String {
    let cpu: Vec<String> = run
        .cpu
        .iter()
        .map(|use_| format!("{} {:.0} %", use_.process, use_.cpu_percent))
        .collect();
    format!(
        "{:>5} appliances: relay {:.1} MiB (idle {:.1}), broker {:.1} MiB, harness {:.0} MiB; CPU \
         {}; {:.0} events/s offered, {:.0} acked; {} of {} acked ({}); ack latency {}",
        run.appliances,
        run.relay_rss_kib as f64 / 1024.0,
        run.relay_idle_rss_kib as f64 / 1024.0,
        run.broker_rss_kib as f64 / 1024.0,
        run.harness_rss_kib as f64 / 1024.0,
        cpu.join(", "),
        run.offered_events_per_second,
        run.acked_events_per_second,
        run.events_acked,
        run.events_produced,
        if run.all_acked {
            "all".to_owned()
        } else {
            format!("{} appliances behind", run.appliances_not_fully_acked)
        },
        run.ack_latency.brief()
    )
}

fn summary(report: &Report) -> String {
    let mut text = format!(
        "store {:?}, {} events/s per appliance\n",
        report.store, report.events_per_second_per_appliance
    );
    for run in &report.runs {
        text.push_str(&summary_line(run));
        text.push('\n');
    }
    if let [baseline, load] = report.runs.as_slice() {
        text.push_str(&format!(
            "load / baseline: relay RSS × {:.2}, broker RSS × {:.2}; every event acked: {}",
            load.relay_rss_kib as f64 / baseline.relay_rss_kib.max(1) as f64,
            load.broker_rss_kib as f64 / baseline.broker_rss_kib.max(1) as f64,
            if load.all_acked && baseline.all_acked {
                "yes"
            } else {
                "NO"
            }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observation_template_encodes_on_the_wire() -> anyhow::Result<()> {
        let template = observation_template()?;
        let event = Event {
            seq: 1,
            recorded_at: Timestamp::now(),
            body: template,
        };
        let payload = wire::encode(pb::envelope::Body::Batch(pb::Batch {
            records: vec![pb::Record {
                seq: 1,
                content: Some(pb::record::Content::Event(pb::Event::from(&event))),
            }],
        }));
        let pb::envelope::Body::Batch(batch) = wire::decode(&payload)? else {
            bail!("not a batch");
        };
        let records = gatehouse_relay::ingest::to_ingest_records(batch)?;
        assert_eq!(records[0].kind, "observation");
        Ok(())
    }
}

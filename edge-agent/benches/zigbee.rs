//! zigbee2mqtt message → event (issue 5): how many zigbee2mqtt state messages per second the
//! agent turns into committed events through a real Mosquitto (target ≥ 50,000/s with the
//! adapter on one core), and the latency from publish to committed event.
//!
//! ```text
//! cargo bench -p gatehouse-edge --bench zigbee            # 3 rounds, about 1 minute
//! cargo bench -p gatehouse-edge --bench zigbee -- --rounds 5
//! ```
//!
//! Each round starts its own Mosquitto (`/usr/sbin/mosquitto`, default settings, a free
//! loopback port) and, in this process:
//! - a publisher in zigbee2mqtt's place, on its own thread: the retained device list (100
//!   door sensors), then state messages as zigbee2mqtt sends them
//!   (`{"battery":91,"contact":true,"linkquality":120,"seq":N,"voltage":3005}`), round robin
//!   over the devices, QoS 1. Only `seq` changes, so each message is one event.
//! - the agent's zigbee adapter (`ZigbeeBridge`) under the agent's supervisor on a
//!   current-thread runtime (one core), feeding the real journal writer (its own thread, a
//!   SQLite file in a temporary folder, `synchronous = normal`).
//!
//! Phases:
//! - *baseline*: the same messages to a plain MQTT subscriber that only counts them: what the
//!   broker and the client library deliver on this machine.
//! - *throughput*: [`MESSAGES`] messages; the clock runs from the first publish to the commit
//!   of the last event. The publisher stays at most [`WINDOW`] messages ahead of the commits,
//!   well under Mosquitto's default per-client queue (1,000 + 20 in flight), so nothing is dropped.
//! - *latency*: [`PACED`] messages at [`PACED_RATE`]/s; each one's time from publish to the
//!   commit of its event (`Live::subscribe`), p50 / p99 / max.
//!
//! "On one core": the adapter thread's CPU time during the throughput phase gives the
//! messages it handles per CPU-second; the wall-clock rate is also printed, with everything
//! (publisher, broker, adapter, journal writer) sharing this machine's cores.
//!
//! Medians over the rounds are printed last.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gatehouse_edge::adapters::zigbee::ZigbeeBridge;
use gatehouse_edge::adapters::{self, Adapter};
use gatehouse_edge::config::Config;
use gatehouse_edge::journal::rules::RuleDriver;
use gatehouse_edge::journal::{self, Writer, WriterSettings};
use gatehouse_edge::live::Live;
use gatehouse_edge::metrics::Metrics;
use gatehouse_protocol::{EventBody, Value};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 100;
const MESSAGES: u64 = 100_000;
const WINDOW: u64 = 500;
const PACED: u64 = 5_000;
const PACED_RATE: u64 = 1_000;
const BASE: &str = "zigbee2mqtt";
const PATIENCE: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let rounds = std::env::args()
        .skip_while(|arg| arg != "--rounds")
        .nth(1)
        .map(|n| n.parse::<usize>())
        .transpose()
        .context("--rounds takes a number")?
        .unwrap_or(3);
    let mut results = Vec::new();
    for round in 1..=rounds {
        let result = run_round()?;
        println!(
            "round {round}: baseline {:.0} msgs/s, through the adapter {:.0} msgs/s ({:.2}× baseline), adapter thread {:.0} msgs per CPU-second, latency p50 {:.2} / p99 {:.2} / max {:.2} ms, load {:.2}",
            result.baseline,
            result.throughput,
            result.throughput / result.baseline,
            result.per_core,
            result.p50_ms,
            result.p99_ms,
            result.max_ms,
            result.load
        );
        results.push(result);
    }
    let median = |pick: fn(&Round) -> f64| {
        let mut values: Vec<f64> = results.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "median of {rounds}: baseline {:.0} msgs/s, through the adapter {:.0} msgs/s, adapter thread {:.0} msgs per CPU-second (target ≥ 50000 on one core: {}), latency p50 {:.2} / p99 {:.2} ms",
        median(|r| r.baseline),
        median(|r| r.throughput),
        median(|r| r.per_core),
        if median(|r| r.per_core) >= 50_000.0 {
            "met"
        } else {
            "missed"
        },
        median(|r| r.p50_ms),
        median(|r| r.p99_ms),
    );
    Ok(())
}

struct Round {
    baseline: f64,
    throughput: f64,
    per_core: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    load: f64,
}

fn ieee(device: usize) -> String {
    format!("0x00158d00{device:08x}")
}

fn site(port: u16) -> String {
    let mut site = format!(
        "[site]\nid = \"bench\"\nname = \"Bench\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [[zigbee.bridges]]\nid = \"z2m\"\nbroker = \"mqtt://127.0.0.1:{port}\"\n"
    );
    for device in 0..DEVICES {
        site.push_str(&format!(
            "[[zigbee.devices]]\nid = \"door-{device}\"\nieee_address = \"{}\"\n\
             [[zigbee.devices.points]]\nid = \"door-{device}.contact\"\nproperty = \"contact\"\n\
             [[zigbee.devices.points]]\nid = \"door-{device}.battery\"\nproperty = \"battery\"\n\
             [[zigbee.devices.points]]\nid = \"door-{device}.seq\"\nproperty = \"seq\"\ntype = \"int\"\n",
            ieee(device)
        ));
    }
    site
}

/// `bridge/devices` with [`DEVICES`] door sensors, in zigbee2mqtt's shape.
fn device_list() -> String {
    let devices: Vec<serde_json::Value> = (0..DEVICES)
        .map(|device| {
            serde_json::json!({
                "ieee_address": ieee(device), "type": "EndDevice", "friendly_name": format!("door/{device}"),
                "definition": {"model": "MCCGQ11LM", "vendor": "Xiaomi", "exposes": [
                    {"type": "binary", "name": "contact", "property": "contact", "access": 1, "value_on": false, "value_off": true},
                    {"type": "numeric", "name": "battery", "property": "battery", "access": 1, "unit": "%"},
                    {"type": "numeric", "name": "seq", "property": "seq", "access": 1}]}
            })
        })
        .collect();
    serde_json::Value::Array(devices).to_string()
}

fn state(seq: u64) -> String {
    format!(r#"{{"battery":91,"contact":true,"linkquality":120,"seq":{seq},"voltage":3005}}"#)
}

/// CPU time of the calling thread so far (user + system), from `/proc/thread-self/stat`
/// (clock ticks of 10 ms).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A Mosquitto with its default settings on a free loopback port.
struct Broker {
    port: u16,
    child: Child,
    _folder: tempfile::TempDir,
}

impl Broker {
    fn start() -> anyhow::Result<Broker> {
        let folder = tempfile::tempdir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let config = folder.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"
            ),
        )?;
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run /usr/sbin/mosquitto: apt-get install mosquitto")?;
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("mosquitto did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker {
            port,
            child,
            _folder: folder,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects an MQTT client and drives its event loop in the background; `on_publish` sees
/// every message it receives.
async fn client(
    port: u16,
    id: &str,
    on_publish: impl Fn(&str) + Send + 'static,
) -> anyhow::Result<AsyncClient> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut events) = AsyncClient::new(options, 1024);
    let (connected, ready) = tokio::sync::oneshot::channel();
    let mut connected = Some(connected);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(connected) = connected.take() {
                        let _ = connected.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => on_publish(&publish.topic),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready).await??;
    Ok(client)
}

/// Publishes `count` state messages from `first_seq` on, round robin over the devices, no
/// more than [`WINDOW`] ahead of `done` (what the receiving side finished), or paced at
/// `rate` per second. Returns when each was published, once the receiving side has all (the
/// client's event loop must run until then).
async fn publish(
    client: &AsyncClient,
    first_seq: u64,
    count: u64,
    done: &AtomicU64,
    rate: Option<u64>,
) -> anyhow::Result<Vec<Instant>> {
    let mut sent = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for index in 0..count {
        if let Some(rate) = rate {
            let due = started + Duration::from_micros(index * 1_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
        } else {
            while index >= done.load(Ordering::Acquire) + WINDOW {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let seq = first_seq + index;
        let topic = format!("{BASE}/door/{}", seq % DEVICES as u64);
        sent.push(Instant::now());
        client
            .publish(topic, QoS::AtLeastOnce, false, state(seq))
            .await?;
    }
    let started = Instant::now();
    while done.load(Ordering::Acquire) < count {
        if started.elapsed() > PATIENCE {
            bail!(
                "the receiving side got {} of {count}",
                done.load(Ordering::Acquire)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(sent)
}

/// Runs `body` on a thread of its own with a current-thread runtime.
fn on_thread<T: Send + 'static>(
    body: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    std::thread::spawn(body)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The baseline: a subscriber that counts.
fn baseline(port: u16) -> anyhow::Result<f64> {
    let counted = Arc::new(AtomicU64::new(0));
    let rt = runtime()?;
    rt.block_on(async {
        let seen = counted.clone();
        let subscriber = client(port, "counter", move |_| {
            seen.fetch_add(1, Ordering::AcqRel);
        })
        .await?;
        subscriber
            .subscribe(format!("{BASE}/#"), QoS::AtLeastOnce)
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = counted.clone();
        let publisher = on_thread(move || {
            runtime()?.block_on(async {
                let client = client(port, "baseline-publisher", |_| {}).await?;
                publish(&client, 0, MESSAGES, &done, None).await
            })
        });
        let started = Instant::now();
        while counted.load(Ordering::Acquire) < MESSAGES {
            if started.elapsed() > PATIENCE {
                bail!(
                    "the baseline subscriber got {} of {MESSAGES}",
                    counted.load(Ordering::Acquire)
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        publisher
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
        Ok(MESSAGES as f64 / elapsed.as_secs_f64())
    })
}

fn run_round() -> anyhow::Result<Round> {
    let load = load_average();
    let broker = Broker::start()?;
    let port = broker.port;
    let baseline = baseline(port)?;

    let config = Config::parse(&site(port)).map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
    let folder = tempfile::tempdir()?;
    let connection = journal::open_for_writing(&folder.path().join("journal.db"), false)?;
    let live = Arc::new(Live::default());
    let metrics = Arc::new(Metrics::default());
    let (links, _outlets) = journal::rules::links();
    let engine = config
        .engine()
        .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
    let rules = RuleDriver::new(engine, links, live.clone(), metrics.clone());
    let settings = WriterSettings {
        batch_max_events: 1024,
        max_age: None,
        max_bytes: None,
        outbox_max_records: None,
    };
    let (journal, writer) =
        Writer::new(connection, rules, live.clone(), metrics.clone(), settings).spawn()?;

    let rt = runtime()?;
    let result = rt.block_on(async {
        // zigbee2mqtt's retained device list, then the agent.
        let zigbee = client(port, "zigbee2mqtt", |_| {}).await?;
        zigbee
            .publish(
                format!("{BASE}/bridge/devices"),
                QoS::AtLeastOnce,
                true,
                device_list(),
            )
            .await?;
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let bridge = ZigbeeBridge::new(
            config.zigbee.bridges[0].clone(),
            config.zigbee.devices.clone(),
            "agent".into(),
        )?;
        let adapters: Vec<Arc<dyn Adapter>> = vec![Arc::new(bridge)];
        adapters::start(adapters, &journal, &live, &metrics, &shutdown, &mut tasks);

        // Subscribed once every device is online (listed); then a warm-up: every device's
        // first message makes all its points (contact, battery, seq, linkquality, voltage).
        wait_for_seq(&live, DEVICES as u64).await?;
        let all = AtomicU64::new(u64::MAX / 2);
        publish(&zigbee, 0, DEVICES as u64, &all, None).await?;
        wait_for_seq(&live, (DEVICES * 6) as u64).await?;

        let throughput = timed(&live, port).await?;
        let latencies = paced(&live, port).await?;
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        anyhow::Ok((throughput, latencies))
    });
    let ((throughput, per_core), mut latencies) = result?;
    drop(journal);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the journal writer panicked"))?;
    drop(broker);
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Round {
        baseline,
        throughput,
        per_core,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        load,
    })
}

async fn wait_for_seq(live: &Live, seq: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    while live.last_seq() < seq {
        if started.elapsed() > PATIENCE {
            bail!("the journal reached seq {} of {seq}", live.last_seq());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The throughput phase: [`MESSAGES`] messages as fast as the window allows. Returns
/// messages per second of wall-clock time, and per second of CPU time of this thread, which
/// runs the adapter (its MQTT client, the decoding, the events handed to the journal).
async fn timed(live: &Arc<Live>, port: u16) -> anyhow::Result<(f64, f64)> {
    let first_seq = DEVICES as u64;
    let start_seq = live.last_seq();
    let done = Arc::new(AtomicU64::new(0));
    let progress = done.clone();
    let publisher = on_thread(move || {
        runtime()?.block_on(async {
            let client = client(port, "publisher", |_| {}).await?;
            publish(&client, first_seq, MESSAGES, &progress, None).await
        })
    });
    let started = Instant::now();
    let cpu_before = thread_cpu_seconds();
    loop {
        let committed = live.last_seq() - start_seq;
        done.store(committed, Ordering::Release);
        if committed >= MESSAGES {
            break;
        }
        if started.elapsed() > PATIENCE {
            bail!("{committed} of {MESSAGES} events committed");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu_seconds() - cpu_before;
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    Ok((
        MESSAGES as f64 / elapsed.as_secs_f64(),
        MESSAGES as f64 / cpu.max(0.01),
    ))
}

/// The latency phase: [`PACED`] messages at [`PACED_RATE`]/s; ms from publish to commit.
async fn paced(live: &Arc<Live>, port: u16) -> anyhow::Result<Vec<f64>> {
    let first_seq = DEVICES as u64 + MESSAGES;
    let mut committed = live.subscribe();
    let done = Arc::new(AtomicU64::new(0));
    let progress = done.clone();
    let publisher = on_thread(move || {
        runtime()?.block_on(async {
            let client = client(port, "paced-publisher", |_| {}).await?;
            publish(&client, first_seq, PACED, &progress, Some(PACED_RATE)).await
        })
    });
    let mut seen = vec![None; PACED as usize];
    let mut count = 0;
    let started = Instant::now();
    while count < PACED {
        let event =
            tokio::time::timeout(PATIENCE.saturating_sub(started.elapsed()), committed.recv())
                .await
                .context("the paced events did not all arrive")??;
        let at = Instant::now();
        if let EventBody::Observation {
            value: Some(Value::Int(seq)),
            ..
        } = &event.body
            && let Some(index) = u64::try_from(*seq)
                .ok()
                .and_then(|seq| seq.checked_sub(first_seq))
                .filter(|index| *index < PACED)
        {
            let slot = &mut seen[index as usize];
            if slot.is_none() {
                *slot = Some(at);
                count += 1;
                done.store(count, Ordering::Release);
            }
        }
    }
    let sent = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    Ok(sent
        .iter()
        .zip(&seen)
        .filter_map(|(sent, seen)| {
            Some((seen.as_ref()?.duration_since(*sent)).as_secs_f64() * 1000.0)
        })
        .collect())
}

//! `drain`: an appliance that was offline with a full outbox comes back; how fast does the
//! relay take the backlog in?
//!
//! 1. **Fill**: a journal with `--events` observations, written by the edge's real journal
//!    writer with an uplink configured, so every event is also in the outbox (exactly what an
//!    offline appliance accumulates).
//! 2. **Baseline**: the first `--baseline-events` of those outbox records, encoded in batches
//!    of 500 as the uplink sends them, pushed through the relay's ingest path in this process
//!    without MQTT: [`decode_records`], then [`Store::ingest`], one batch after the other on a
//!    runtime worker thread (as one of the relay's ingestion workers does for one appliance),
//!    into a fresh database of the same backend.
//! 3. **Drain**: a TLS Mosquitto with the shipped configuration, the `gatehouse-relay` binary
//!    on a fresh database, and the real `gatehouse-edge` binary on the filled journal with an
//!    `[uplink]` section and the appliance's certificate. The clock starts when the agent is
//!    launched and stops when the relay's store acknowledges the last seq (`acked_seq`, which
//!    is only advanced in the batch's committed transaction, and only over a contiguous run
//!    of stored records).
//!
//! CPU of the relay, the broker, the agent and PostgreSQL (all its processes) is read from
//! `/proc` over the drain, to show where the time goes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gatehouse_edge::journal::rules::RuleDriver;
use gatehouse_edge::journal::{self, Reader, Writer, WriterSettings};
use gatehouse_edge::live::Live;
use gatehouse_edge::metrics::Metrics;
use gatehouse_edge::uplink::outbox;
use gatehouse_hil_tests::broker::TlsBroker;
use gatehouse_hil_tests::harness::{self, AgentProcess};
use gatehouse_protocol::wire::{self, pb};
use gatehouse_protocol::{DeviceId, EventBody, PointId, Quality, Value, ZoneId};
use gatehouse_relay::ingest::decode_records;
use gatehouse_relay::store::Store;
use gatehouse_rules::Engine;
use jiff::Timestamp;
use serde::Serialize;

use crate::measure::{self, CpuMeter, CpuUse, Watched};
use crate::setup::{self, Backend, CommonArgs, Database, Tenant};

/// Events per second the issue asks for.
const TARGET_EVENTS_PER_SECOND: f64 = 50_000.0;

/// Records per MQTT message, as the edge's uplink batches them (`BATCH_RECORDS` in
/// `edge-agent/src/uplink/session.rs`).
const BATCH_RECORDS: usize = 500;

/// How often the drain's progress is read from the store.
const POLL: Duration = Duration::from_millis(100);

/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long the agent may take to empty its outbox once the relay holds everything.
const EDGE_EMPTY_TIMEOUT: Duration = Duration::from_secs(30);

/// Drains an offline appliance's outbox into the relay; see the module documentation.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events buffered in the appliance's outbox before it connects.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    events: u64,

    /// Events pushed straight through the relay's ingest path (no MQTT) for the baseline.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    baseline_events: u64,

    /// Give up on the drain after this long; what was committed by then is reported.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    started_at: Timestamp,
    store: Backend,
    events: u64,
    fill: Fill,
    baseline: Baseline,
    drain: Drain,
    target_events_per_second: f64,
    met: bool,
    /// The machine's 1-minute load average at the end (others' work is noise).
    load_average: f64,
}

#[derive(Debug, Serialize)]
struct Fill {
    seconds: f64,
    events_per_second: f64,
    journal_bytes: u64,
}

/// The relay's ingest path without MQTT.
#[derive(Debug, Serialize)]
struct Baseline {
    events: u64,
    batches: usize,
    seconds: f64,
    events_per_second: f64,
    /// Of `seconds`: wire decoding and conversion to store records (JSON).
    decode_seconds: f64,
    /// Of `seconds`: `Store::ingest`, one transaction per batch.
    store_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Drain {
    /// Everything committed at the relay before the timeout.
    completed: bool,
    committed: u64,
    /// From launching the agent to the last record committed at the relay.
    seconds: f64,
    events_per_second: f64,
    /// From launching the agent to the first committed batch (agent start, TLS, MQTT).
    first_commit_after_s: f64,
    /// From the first to the last committed batch.
    steady_events_per_second: f64,
    /// From launching the agent until its outbox is empty (every ack applied at the edge).
    edge_outbox_empty_after_s: Option<f64>,
    /// Over the drain, from the agent's API answering to the last commit.
    cpu: Vec<CpuUse>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let journal_path = folder.path().join("journal.db");
    eprintln!(
        "fill: {} events through the edge's journal writer, with the outbox …",
        args.events
    );
    let fill = fill_outbox(&journal_path, args.events).await?;
    eprintln!(
        "  {:.1} s, {:.0} events/s, journal {:.0} MiB",
        fill.seconds,
        fill.events_per_second,
        fill.journal_bytes as f64 / 1_048_576.0
    );

    eprintln!(
        "baseline: {} events through decode + Store::ingest, no MQTT ({:?}) …",
        args.baseline_events, args.common.store
    );
    let baseline = baseline(&args, folder.path(), &journal_path).await?;
    eprintln!(
        "  {:.1} s, {:.0} events/s (decode {:.1} s, store {:.1} s)",
        baseline.seconds,
        baseline.events_per_second,
        baseline.decode_seconds,
        baseline.store_seconds
    );

    eprintln!(
        "drain: {} events, agent → TLS broker → relay ({:?}) …",
        args.events, args.common.store
    );
    let drain = drain(&args, folder.path(), &journal_path).await?;
    let report = Report {
        started_at: Timestamp::now(),
        store: args.common.store,
        events: args.events,
        fill,
        baseline,
        met: drain.completed && drain.events_per_second >= TARGET_EVENTS_PER_SECOND,
        drain,
        target_events_per_second: TARGET_EVENTS_PER_SECOND,
        load_average: measure::load_average(),
    };
    println!("{}", summary(&report));
    if let Some(path) = &args.common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes `events` observations (100 devices × 20 points) through the real journal writer
/// with an uplink configured, so each is in the outbox too.
async fn fill_outbox(path: &Path, events: u64) -> anyhow::Result<Fill> {
    let connection = journal::open_for_writing(path, false)?;
    let live = Arc::new(Live::default());
    let metrics = Arc::new(Metrics::default());
    // Filling the outbox needs no rules; nothing reads their (absent) commands.
    let (links, _outlets) = journal::rules::links();
    let writer = Writer::new(
        connection,
        RuleDriver::new(Engine::empty(), links, live.clone(), metrics.clone()),
        live.clone(),
        metrics,
        WriterSettings {
            batch_max_events: 1024,
            max_age: None,
            max_bytes: None,
            outbox_max_records: Some(events),
        },
    );
    let (handle, thread) = writer.spawn()?;
    let started = Instant::now();
    let zone = ZoneId::new("lobby")?;
    let observed_at = Timestamp::now();
    for index in 0..events {
        let device = index % 100;
        let point = (index / 100) % 20;
        let value = if point % 2 == 0 {
            Value::Int((index % 65_536) as i64)
        } else {
            Value::Float(20.0 + (index % 1000) as f64 / 100.0)
        };
        handle
            .append(EventBody::Observation {
                device: DeviceId::new(format!("dev-{device:03}"))?,
                point: PointId::new(format!("dev-{device:03}.reg-{point:02}"))?,
                zone: Some(zone.clone()),
                value: Some(value),
                quality: Quality::Good,
                observed_at,
            })
            .await?;
        if (index + 1) % 250_000 == 0 {
            eprintln!("  queued {}", index + 1);
        }
    }
    while live.last_seq() < events {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the journal writer panicked"))?;
    Ok(Fill {
        seconds,
        events_per_second: events as f64 / seconds,
        journal_bytes: files_bytes(path),
    })
}

/// The journal file and its WAL, in bytes.
fn files_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// The relay's ingest path without MQTT, on the first outbox records.
async fn baseline(args: &Args, folder: &Path, journal_path: &Path) -> anyhow::Result<Baseline> {
    let count = args.baseline_events.min(args.events) as usize;
    let records = Reader::new(journal_path.to_owned())
        .run(move |connection| outbox::read_records(connection, 1, count))
        .await?;
    let payloads: Vec<Vec<u8>> = records
        .chunks(BATCH_RECORDS)
        .map(|chunk| {
            wire::encode(pb::envelope::Body::Batch(pb::Batch {
                records: chunk.to_vec(),
            }))
        })
        .collect();
    drop(records);

    let database = Database::create(&args.common, folder, "baseline").await?;
    let store = Store::open(&database.url).await?;
    let tenant = Tenant::create(store.clone()).await?;
    let appliance = tenant.appliance("baseline").await?;
    let batches = payloads.len();
    // On a worker thread of the runtime, as the relay's ingestion workers run: the main task
    // of `#[tokio::main]` has a thread of its own, where every round trip to the database
    // would cost a wake-up across threads.
    let ingest_all = {
        let store = store.clone();
        async move {
            let (mut decode, mut stored) = (Duration::ZERO, Duration::ZERO);
            let mut acked = 0;
            for payload in &payloads {
                let started = Instant::now();
                let records = decode_records(payload)?.records;
                let decoded = Instant::now();
                acked = store
                    .ingest(&appliance, &records)
                    .await?
                    .highest_contiguous_seq;
                decode += decoded - started;
                stored += decoded.elapsed();
            }
            anyhow::Ok((decode, stored, acked))
        }
    };
    let (decode, stored, acked) = tokio::spawn(ingest_all).await??;
    store.close().await;
    database.destroy().await?;
    if acked != count as u64 {
        bail!("the baseline stored up to seq {acked}, not {count}");
    }
    let seconds = (decode + stored).as_secs_f64();
    Ok(Baseline {
        events: count as u64,
        batches,
        seconds,
        events_per_second: count as f64 / seconds,
        decode_seconds: decode.as_secs_f64(),
        store_seconds: stored.as_secs_f64(),
    })
}

/// The real agent drains the journal at `journal_path` through the broker into the relay.
async fn drain(args: &Args, folder: &Path, journal_path: &Path) -> anyhow::Result<Drain> {
    let broker_folder = folder.join("broker");
    std::fs::create_dir(&broker_folder)?;
    let broker = TlsBroker::start(&broker_folder)?;
    let database = Database::create(&args.common, folder, "drain").await?;
    let store = Store::open(&database.url).await?;
    let tenant = Tenant::create(store.clone()).await?;
    let appliance = tenant.appliance("drained").await?;
    let mut relay = setup::start_relay(folder, &broker, &database.url).await?;
    setup::wait_until_relay_consumes(&broker, &tenant).await?;

    let port = harness::free_port()?;
    let config = format!(
        "{}{}",
        harness::site_header(port, journal_path),
        setup::uplink_section(folder, &broker, &appliance, args.events.max(1_000))?
    );
    let broker_pid = setup::broker_pid(&broker)?;

    let started = Instant::now();
    let agent = AgentProcess::start(folder, &config, port).await?;
    let meter = CpuMeter::start(&[
        ("relay", Watched::Process(relay.pid()?)),
        ("broker", Watched::Process(broker_pid)),
        ("agent", Watched::Process(agent.pid())),
        ("postgres", Watched::Postgres),
    ]);
    let timeout = Duration::from_secs(args.timeout_seconds);
    let mut first_commit: Option<Duration> = None;
    let mut committed = 0;
    let mut last_progress = (Instant::now(), 0u64);
    while committed < args.events && started.elapsed() < timeout {
        tokio::time::sleep(POLL).await;
        committed = tenant.acked_seq(&appliance).await?;
        if committed > 0 && first_commit.is_none() {
            first_commit = Some(started.elapsed());
        }
        if last_progress.0.elapsed() >= PROGRESS_EVERY {
            let rate =
                (committed - last_progress.1) as f64 / last_progress.0.elapsed().as_secs_f64();
            eprintln!(
                "  {:>5.1} s: {committed} committed at the relay ({rate:.0}/s lately)",
                started.elapsed().as_secs_f64()
            );
            last_progress = (Instant::now(), committed);
        }
    }
    let elapsed = started.elapsed();
    let cpu = meter.read();
    let completed = committed >= args.events;
    if !completed {
        eprintln!(
            "  timed out after {timeout:?} with {committed} of {} committed; relay log tail:\n{}",
            args.events,
            tail(&relay.log(), 20)
        );
    }
    let edge_outbox_empty_after_s = if completed {
        edge_outbox_empty(journal_path, started).await?
    } else {
        None
    };

    drop(agent);
    relay.stop().await?;
    store.close().await;
    database.destroy().await?;
    drop(broker);

    let first = first_commit.unwrap_or(elapsed);
    let steady = elapsed.saturating_sub(first).as_secs_f64().max(1e-9);
    Ok(Drain {
        completed,
        committed,
        seconds: elapsed.as_secs_f64(),
        events_per_second: committed as f64 / elapsed.as_secs_f64(),
        first_commit_after_s: first.as_secs_f64(),
        steady_events_per_second: committed as f64 / steady,
        edge_outbox_empty_after_s,
        cpu,
    })
}

/// Waits until the agent's outbox is empty; returns when, since `started`.
async fn edge_outbox_empty(journal_path: &Path, started: Instant) -> anyhow::Result<Option<f64>> {
    let reader = Reader::new(journal_path.to_owned());
    let deadline = Instant::now() + EDGE_EMPTY_TIMEOUT;
    while Instant::now() < deadline {
        if reader.run(outbox::state).await?.backlog == 0 {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(None)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn summary(report: &Report) -> String {
    let drain = &report.drain;
    let cpu: Vec<String> = drain
        .cpu
        .iter()
        .map(|use_| format!("{} {:.0} %", use_.process, use_.cpu_percent))
        .collect();
    format!(
        "store {:?}, {} events\n\
         fill (edge journal writer + outbox): {:>9.0} events/s\n\
         baseline (decode + Store::ingest):   {:>9.0} events/s (decode {:.1} s, store {:.1} s)\n\
         drain (agent → broker → relay):      {:>9.0} events/s over {:.1} s{}; first commit after \
         {:.2} s, then {:.0} events/s; edge outbox empty after {}\n\
         CPU during the drain (100 % = one core): {}\n\
         drain / baseline: × {:.2}\n\
         target ≥ {:.0} events/s: {}",
        report.store,
        report.events,
        report.fill.events_per_second,
        report.baseline.events_per_second,
        report.baseline.decode_seconds,
        report.baseline.store_seconds,
        drain.events_per_second,
        drain.seconds,
        if drain.completed {
            String::new()
        } else {
            format!(" (INCOMPLETE: {} committed)", drain.committed)
        },
        drain.first_commit_after_s,
        drain.steady_events_per_second,
        drain
            .edge_outbox_empty_after_s
            .map_or("(not seen)".to_owned(), |s| format!("{s:.1} s")),
        cpu.join(", "),
        drain.events_per_second / report.baseline.events_per_second,
        report.target_events_per_second,
        if report.met { "met" } else { "missed" }
    )
}

//! Journal append throughput: observation events per second appended through the real
//! [`Writer`] (its own thread, fed through `JournalHandle::append` from a current-thread
//! runtime on the bench thread, as the adapters' tasks feed it) and committed in batches of
//! up to 1024 into a SQLite file in a temporary folder, with `synchronous` = NORMAL and FULL.
//!
//! One iteration = a fresh journal, [`EVENTS`] events queued as fast as the channel takes
//! them, and the clock stopped when the last one is committed and published
//! ([`Live::last_seq`] reaches [`EVENTS`]). Setup (the file, the schema, the thread, the event
//! bodies) and teardown are outside the clock.
//!
//! Baseline in the same run (`raw_sqlite/*`): the same connection settings and schema
//! ([`journal::open_for_writing`]), the same rows with their JSON already serialized, inserted
//! by plain rusqlite, one transaction per 1024 rows, on the bench thread, with no channel, no
//! thread hop, no rules and no live state. `writer / raw_sqlite` is the writer's overhead.
//!
//! `writer_with_outbox/normal` is the writer of an appliance with an uplink: every event is
//! also encoded into the outbox in the same transaction (capped far above what one iteration
//! writes, so nothing is evicted).
//!
//! ```text
//! cargo bench -p gatehouse-edge --bench journal
//! ```
//!
//! The temporary folder is `tempfile`'s (`$TMPDIR`, else `/tmp`): put it on the disk whose
//! fsync you want to measure, a tmpfs makes FULL as cheap as NORMAL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use gatehouse_edge::config::Config;
use gatehouse_edge::journal::rules::RuleDriver;
use gatehouse_edge::journal::{self, Writer, WriterSettings};
use gatehouse_edge::live::Live;
use gatehouse_edge::metrics::Metrics;
use gatehouse_protocol::{DeviceId, EventBody, PointId, Quality, Value, ZoneId};
use jiff::Timestamp;
use rusqlite::params;

/// Events per iteration: about 49 full batches.
const EVENTS: usize = 50_000;

/// The agent's default `[journal] batch_max_events`.
const BATCH_MAX_EVENTS: usize = 1024;

/// The default `[uplink] outbox_max_records`: far above [`EVENTS`], so nothing is evicted.
const OUTBOX_MAX_RECORDS: u64 = 1_000_000;

/// How long to wait for the writer before calling the run broken.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);

/// 100 devices with 20 points each, and a rule on one point per device whose predicate is
/// `predicate`, so the rules are looked up for every event as in the agent.
fn site_config(predicate: &str) -> Config {
    let mut source = String::from(
        r#"
[site]
id = "bench-site"
name = "Bench site"
[api]
listen = "127.0.0.1:0"
[[zones]]
id = "lobby"
name = "Lobby"
mode = "armed_away"
"#,
    );
    for device in 0..100 {
        source.push_str(&format!(
            "[[modbus.devices]]\nid = \"dev-{device:03}\"\naddress = \"127.0.0.1:1\"\nzone = \"lobby\"\n"
        ));
        for point in 0..20 {
            source.push_str(&format!(
                "[[modbus.devices.points]]\nid = \"dev-{device:03}.reg-{point:02}\"\n\
                 table = \"holding_register\"\naddress = {point}\n"
            ));
        }
    }
    for device in 0..100 {
        source.push_str(&format!(
            "[[rules]]\nid = \"dev-{device:03}-high\"\n\
             when.event = {{ point = \"dev-{device:03}.reg-00\", value = \"{predicate}\" }}\n\
             then = [{{ raise = {{ severity = \"low\", title = \"High\" }} }}]\n"
        ));
    }
    Config::parse(&source).unwrap_or_else(|problems| panic!("bench config: {problems:?}"))
}

/// `count` observations spread over the 2000 points, as the Modbus adapter makes them.
fn observations(count: usize) -> Vec<EventBody> {
    let zone = ZoneId::new("lobby").unwrap_or_else(|e| panic!("{e}"));
    let observed_at = Timestamp::now();
    (0..count)
        .map(|index| {
            let device = index % 100;
            let point = (index / 100) % 20;
            let value = if point % 2 == 0 {
                Value::Int((index % 65_536) as i64)
            } else {
                Value::Float(20.0 + (index % 1000) as f64 / 100.0)
            };
            EventBody::Observation {
                device: DeviceId::new(format!("dev-{device:03}")).unwrap_or_else(|e| panic!("{e}")),
                point: PointId::new(format!("dev-{device:03}.reg-{point:02}"))
                    .unwrap_or_else(|e| panic!("{e}")),
                zone: Some(zone.clone()),
                value: Some(value),
                quality: Quality::Good,
                observed_at,
            }
        })
        .collect()
}

/// One writer run: appends `bodies` from `producer` (a runtime on the bench thread, as an
/// adapter task would) and returns the time until the last is committed.
fn writer_run(
    producer: &tokio::runtime::Runtime,
    config: &Config,
    bodies: Vec<EventBody>,
    synchronous_full: bool,
    outbox_max_records: Option<u64>,
    incidents: u64,
) -> Duration {
    let folder = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let connection = journal::open_for_writing(&folder.path().join("journal.db"), synchronous_full)
        .unwrap_or_else(|e| panic!("{e}"));
    let live = Arc::new(Live::default());
    let metrics = Arc::new(Metrics::default());
    let engine = config.engine().unwrap_or_else(|p| panic!("{p:?}"));
    // Nothing reads the rules' commands or deadlines: these rules only raise, at once.
    let (links, _outlets) = journal::rules::links();
    let writer = Writer::new(
        connection,
        RuleDriver::new(engine, links, live.clone(), metrics.clone()),
        live.clone(),
        metrics.clone(),
        WriterSettings {
            batch_max_events: BATCH_MAX_EVENTS,
            max_age: None,
            max_bytes: None,
            outbox_max_records,
        },
    );
    let (handle, thread) = writer.spawn().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    // The last body is waited for: it is committed after every other (rules may add incident
    // events, so the count of bodies is not the last seq).
    let target = producer.block_on(async {
        let mut bodies = bodies;
        let last = bodies.pop().unwrap_or_else(|| panic!("no events"));
        for body in bodies {
            handle.append(body).await.unwrap_or_else(|e| panic!("{e}"));
        }
        handle
            .append_committed(last)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    });
    while live.last_seq() < target {
        assert!(
            started.elapsed() < COMMIT_TIMEOUT,
            "the writer published {} of {target} events in {COMMIT_TIMEOUT:?}",
            live.last_seq()
        );
        std::thread::sleep(Duration::from_micros(50));
    }
    let elapsed = started.elapsed();

    drop(handle);
    thread
        .join()
        .unwrap_or_else(|_| panic!("the writer panicked"));
    assert_eq!(
        metrics.incidents_opened.get(),
        incidents,
        "the rules fired otherwise than planned"
    );
    elapsed
}

/// The same rows as the writer stores (recorded_at, kind, device, point, JSON).
struct Row {
    kind: &'static str,
    device: Option<String>,
    point: Option<String>,
    json: String,
}

fn rows(bodies: &[EventBody]) -> Vec<Row> {
    bodies
        .iter()
        .map(|body| Row {
            kind: body.kind().as_str(),
            device: body.device().map(|d| d.as_str().to_owned()),
            point: body.point().map(|p| p.as_str().to_owned()),
            json: serde_json::to_string(body).unwrap_or_else(|e| panic!("{e}")),
        })
        .collect()
}

/// One baseline run: plain rusqlite, one transaction per `BATCH_MAX_EVENTS` rows.
fn raw_run(folder: &Path, rows: &[Row], synchronous_full: bool) -> Duration {
    let mut connection = journal::open_for_writing(&folder.join("journal.db"), synchronous_full)
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    for chunk in rows.chunks(BATCH_MAX_EVENTS) {
        let recorded_at = Timestamp::now().as_microsecond();
        let transaction = connection.transaction().unwrap_or_else(|e| panic!("{e}"));
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO events (recorded_at, kind, device, point, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap_or_else(|e| panic!("{e}"));
            for row in chunk {
                insert
                    .execute(params![
                        recorded_at,
                        row.kind,
                        row.device,
                        row.point,
                        row.json
                    ])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        transaction.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    started.elapsed()
}

/// None of the rules fires: the values stay below 10^6.
const NEVER: &str = "value > 1000000";

/// Each device's `reg-00` reads `k × 2000 + device` at its k-th event (k = 0..=24): this
/// becomes true at every even k, so 1,300 of the 50,000 events raise: an incident per device
/// (100), then evidence added to it (1,200), as on a busy alarm night.
const EVERY_OTHER: &str = "value % 4000 < 2000";

/// The incidents [`EVERY_OTHER`] opens: one per device.
const FIRING_INCIDENTS: u64 = 100;

fn append_throughput(c: &mut Criterion) {
    let config = site_config(NEVER);
    let firing = site_config(EVERY_OTHER);
    let template = observations(EVENTS);
    let raw_rows = rows(&template);
    let producer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("journal_append");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(EVENTS as u64));

    for (name, synchronous_full) in [("normal", false), ("full", true)] {
        group.bench_function(format!("raw_sqlite/{name}"), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        let folder = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                        raw_run(folder.path(), &raw_rows, synchronous_full)
                    })
                    .sum()
            });
        });
        group.bench_function(format!("writer/{name}"), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        writer_run(
                            &producer,
                            &config,
                            template.clone(),
                            synchronous_full,
                            None,
                            0,
                        )
                    })
                    .sum()
            });
        });
    }
    // Rules that fire: incidents opened and evidence added in the events' transactions.
    group.bench_function("writer_rules_firing/normal", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    writer_run(
                        &producer,
                        &firing,
                        template.clone(),
                        false,
                        None,
                        FIRING_INCIDENTS,
                    )
                })
                .sum()
        });
    });
    // With an uplink every event also goes to the outbox, in the same transaction.
    group.bench_function("writer_with_outbox/normal", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    let outbox = Some(OUTBOX_MAX_RECORDS);
                    writer_run(&producer, &config, template.clone(), false, outbox, 0)
                })
                .sum()
        });
    });
    group.finish();
}

criterion_group!(benches, append_throughput);
criterion_main!(benches);

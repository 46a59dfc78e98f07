//! The rules engine's two figures (issue 4): throughput with 1,000 rules over 10,000 points
//! (target ≥ 200,000 events/s on one core) and event in → incident out inside the engine
//! (p99 target < 100 µs).
//!
//! `cargo bench -p gatehouse-rules --bench engine` (add `-- --rounds N` for more rounds).
//! Each round measures, on this one thread:
//! - *baseline*: the same events through an engine of the same site with no rules: what
//!   finding a point and keeping its value costs, whatever the rules;
//! - *throughput*: 200,000 events through the 1,000-rule engine;
//! - *latency*: every event that makes an incident, timed alone (`Instant` around
//!   `on_event`), p50 / p99 / max.
//!
//! Medians over the rounds are printed last, with the ratio to the baseline.

use std::hint::black_box;
use std::time::Instant;

use gatehouse_protocol::{Event, EventBody, Quality, Value};
use gatehouse_rules::config::{RuleConfig, ScheduleConfig, ZoneConfig};
use gatehouse_rules::expr::Type;
use gatehouse_rules::{Catalog, Engine, Output, PointSpec, Site};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

const ZONES: usize = 50;
const DEVICES: usize = 100;
const POINTS: usize = 10_000;
const EVENTS: usize = 200_000;

#[derive(Deserialize)]
struct Rules {
    #[serde(default)]
    zones: Vec<ZoneConfig>,
    #[serde(default)]
    schedules: Vec<ScheduleConfig>,
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

/// 10,000 points on 100 devices in 50 zones: in each zone 100 doors and 100 temperatures
/// (`z7.door.13`, `z7.temp.13`).
fn catalog() -> Catalog {
    let mut points = Vec::with_capacity(POINTS);
    for zone in 0..ZONES {
        for n in 0..POINTS / ZONES / 2 {
            for (kind, value_type) in [("door", Type::Bool), ("temp", Type::Float)] {
                points.push(PointSpec {
                    id: id(&format!("z{zone}.{kind}.{n}")),
                    device: id(&format!("dev{}", (zone * 2 + n % 2) % DEVICES)),
                    zone: Some(id(&format!("z{zone}"))),
                    value_type,
                    writable: false,
                    egress_locked: None,
                });
            }
        }
    }
    Catalog {
        points,
        devices: (0..DEVICES).map(|d| id(&format!("dev{d}"))).collect(),
        cameras: Vec::new(),
    }
}

/// 1,000 rules, 20 per zone, of every trigger kind, each over 10 points:
/// intrusion (edge + mode), threshold, door held, count, sequence.
fn site_toml(with_rules: bool) -> String {
    let mut text = String::new();
    for zone in 0..ZONES {
        text.push_str(&format!(
            "[[zones]]\nid = \"z{zone}\"\nname = \"Zone {zone}\"\nmode = \"armed_away\"\n"
        ));
    }
    if !with_rules {
        return text;
    }
    for zone in 0..ZONES {
        for group in 0..10 {
            // Points z{zone}.door.{group}0 .. {group}9 (glob `z3.door.4*` also matches 4, 40-49).
            let doors = format!("z{zone}.door.{group}*");
            let temps = format!("z{zone}.temp.{group}*");
            let rule = match group % 5 {
                0 | 1 => format!(
                    "when.event = {{ point = \"{doors}\", value = \"value == true\" }}\n\
                     if = {{ modes = [\"armed_away\", \"armed_night\"] }}\n\
                     then = [{{ raise = {{ severity = \"high\", title = \"Intrusion at {{point}}\" }} }}]\n"
                ),
                2 => format!(
                    "when.event = {{ point = \"{temps}\", value = \"value > 30.0 && value < 90.0\" }}\n\
                     then = [{{ raise = {{ severity = \"medium\", title = \"Hot: {{point}} {{value}}\" }} }}]\n"
                ),
                3 => format!(
                    "when.held = {{ event = {{ point = \"{doors}\", value = \"value\" }}, for = \"30s\" }}\n\
                     then = [{{ raise = {{ severity = \"low\", title = \"Held: {{point}}\" }} }}]\n"
                ),
                _ => format!(
                    "when.count = {{ event = {{ point = \"{temps}\", value = \"value < 5.0\" }}, times = 3, within = \"1m\" }}\n\
                     then = [{{ raise = {{ severity = \"low\", title = \"Cold: {{point}}\" }} }}]\n"
                ),
            };
            for copy in 0..2 {
                text.push_str(&format!(
                    "[[rules]]\nid = \"r{zone}-{group}-{copy}\"\n{rule}"
                ));
            }
        }
    }
    text
}

fn engine(with_rules: bool, catalog: &Catalog) -> Engine {
    let source = site_toml(with_rules);
    let rules: Rules = toml::from_str(&source).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::compile(&Site {
        zones: &rules.zones,
        schedules: &rules.schedules,
        rules: &rules.rules,
        catalog,
        time_zone: &TimeZone::UTC,
        source: &source,
    })
    .unwrap_or_else(|problems| panic!("{problems:#?}"));
    let start: Timestamp = id("2026-11-26T00:00:00Z");
    engine.start(&[], None, start);
    engine
}

/// Events 1 ms apart, spread over every point: doors open and close, temperatures wander
/// (some too hot, some too cold).
fn events(catalog: &Catalog) -> Vec<Event> {
    let start: Timestamp = id("2026-11-26T00:01:00Z");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..EVENTS)
        .map(|n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let spec = &catalog.points[(state % POINTS as u64) as usize];
            let value = match spec.value_type {
                Type::Bool => Value::Bool(state & (1 << 20) != 0),
                _ => Value::Float(((state >> 24) % 1000) as f64 / 10.0),
            };
            let at = start
                .saturating_add(SignedDuration::from_millis(n as i64))
                .unwrap_or(start);
            Event {
                seq: n as u64 + 1,
                recorded_at: at,
                body: EventBody::Observation {
                    device: spec.device.clone(),
                    point: spec.id.clone(),
                    zone: spec.zone.clone(),
                    value: Some(value),
                    quality: Quality::Good,
                    observed_at: at,
                },
            }
        })
        .collect()
}

struct Round {
    baseline: f64,
    throughput: f64,
    raises: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn round(catalog: &Catalog, events: &[Event]) -> Round {
    let mut empty = engine(false, catalog);
    let started = Instant::now();
    for event in events {
        black_box(empty.on_event(event));
    }
    let baseline = events.len() as f64 / started.elapsed().as_secs_f64();

    let mut full = engine(true, catalog);
    let started = Instant::now();
    let mut raises = 0;
    for event in events {
        raises += full
            .on_event(event)
            .iter()
            .filter(|output| matches!(output, Output::Raise(_)))
            .count();
    }
    let throughput = events.len() as f64 / started.elapsed().as_secs_f64();

    // Latency: the same events on a fresh engine, each timed; kept for those that raise.
    let mut timed = engine(true, catalog);
    let mut samples = Vec::new();
    for event in events {
        let started = Instant::now();
        let outputs = timed.on_event(event);
        let took = started.elapsed();
        if outputs
            .iter()
            .any(|output| matches!(output, Output::Raise(_)))
        {
            samples.push(took.as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Round {
        baseline,
        throughput,
        raises,
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: samples.last().copied().unwrap_or(0.0),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|arg| arg != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let catalog = catalog();
    let events = events(&catalog);
    let rules = engine(true, &catalog).rule_count();
    println!(
        "{rules} rules over {} points, {} events per round, {rounds} rounds",
        catalog.points.len(),
        events.len()
    );
    let mut results = Vec::new();
    for n in 1..=rounds {
        let result = round(&catalog, &events);
        println!(
            "round {n}: baseline {:.0}/s, rules {:.0}/s ({} raises), raise latency p50 {:.2} µs p99 {:.2} µs max {:.1} µs",
            result.baseline,
            result.throughput,
            result.raises,
            result.p50_us,
            result.p99_us,
            result.max_us
        );
        results.push(result);
    }
    let baseline = median(results.iter().map(|r| r.baseline).collect());
    let throughput = median(results.iter().map(|r| r.throughput).collect());
    println!(
        "median: baseline {baseline:.0} events/s, 1,000 rules {throughput:.0} events/s ({:.2} × baseline; target ≥ 200,000), raise p99 {:.2} µs (target < 100), p50 {:.2} µs",
        throughput / baseline,
        median(results.iter().map(|r| r.p99_us).collect()),
        median(results.iter().map(|r| r.p50_us).collect()),
    );
}

//! `gatehouse-latency`: how long a register change seen by the Modbus adapter takes to reach a
//! WebSocket client of the real agent, at a given event rate.
//!
//! What runs, all on 127.0.0.1: `--devices` simulated Modbus devices ([`ModbusSim`], in this
//! process), each with `--registers` u16 holding registers; the `gatehouse-edge` binary
//! (`$GATEHOUSE_EDGE_BIN`, else `target/debug`) polling them every `--poll-interval-ms`; and
//! one client of `/api/v1/stream` (in this process).
//!
//! How: a changer task writes new values into the simulators' registers, round-robin over
//! devices and registers, at `--events-per-second` (distinct registers between two polls of a
//! device, so each change becomes exactly one observation event). For every observation the
//! client receives, latency = receive time − the event's `observed_at`, the moment the adapter
//! sent the read that saw the value (same machine, same clock). It thus covers the Modbus
//! read, the journal channel, the batched commit (an fsync per batch with `synchronous =
//! full`), the broadcast and the WebSocket; it does not include the wait for the next poll.
//!
//! Each run starts a fresh agent and journal, waits for the first poll of every register,
//! then measures for `--seconds`. Runs: for each `--synchronous` mode, a baseline at
//! `--baseline-events-per-second` and the load at `--events-per-second`, so the ratio of the
//! two shows the cost of load. Prints a summary; `--json FILE` also writes the figures.
//!
//! ```text
//! cargo build --release -p gatehouse-edge -p gatehouse-hil-tests
//! GATEHOUSE_EDGE_BIN=target/release/gatehouse-edge target/release/gatehouse-latency \
//!     --events-per-second 1000 --seconds 10 --json latency.json
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use gatehouse_hil_tests::harness::{self, AgentProcess, StreamClient};
use gatehouse_hil_tests::modbus_sim::ModbusSim;
use gatehouse_protocol::EventBody;
use jiff::Timestamp;
use serde::Serialize;
use tokio::time::Instant;

/// Latency from a register change seen by the adapter to a WebSocket client of the agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Observation events per second to generate in the load runs.
    #[arg(long, default_value_t = 1000.0)]
    events_per_second: f64,

    /// Observation events per second in the baseline runs.
    #[arg(long, default_value_t = 10.0)]
    baseline_events_per_second: f64,

    /// How long each run measures.
    #[arg(long, default_value_t = 10)]
    seconds: u64,

    /// Simulated Modbus devices.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    devices: u16,

    /// Holding registers (u16 points) per device, at addresses 0..N (at most 125: one read).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=125))]
    registers: u16,

    /// How often the agent polls each device.
    #[arg(long, default_value_t = 100)]
    poll_interval_ms: u64,

    /// The journal's `synchronous` setting; repeat to measure several.
    #[arg(long, value_enum, default_values_t = [Synchronous::Normal, Synchronous::Full])]
    synchronous: Vec<Synchronous>,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Also write every latency as CSV (synchronous, phase, observed_at µs, latency ms) to
    /// this file, e.g. to see whether slow events come in periodic clusters.
    #[arg(long, value_name = "FILE")]
    samples: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Synchronous {
    Normal,
    Full,
}

impl Synchronous {
    fn as_str(self) -> &'static str {
        match self {
            Synchronous::Normal => "normal",
            Synchronous::Full => "full",
        }
    }
}

/// Time to wait for the agent's first poll of every register.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after the changes stop the client keeps reading (the last polls, the commit).
const DRAIN: Duration = Duration::from_secs(2);

/// How often the changer wakes up to apply the changes that are due.
const CHANGE_TICK: Duration = Duration::from_millis(2);

/// The figures of one run.
#[derive(Debug, Serialize)]
struct RunReport {
    synchronous: Synchronous,
    /// `baseline` or `load`.
    phase: &'static str,
    requested_events_per_second: f64,
    /// Observations received whose `observed_at` lies in the measured window, per second.
    achieved_events_per_second: f64,
    changes_made: u64,
    events_received: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    /// Batches committed by the journal writer while measuring (from the agent's /metrics).
    journal_commits: u64,
    journal_commit_mean_ms: f64,
    /// Commits slower than 6.4 ms, a bucket bound of the agent's histogram.
    journal_commits_over_6_4_ms: u64,
    /// The machine's 1-minute load average at the end of the run (others' work is noise).
    load_average: f64,
}

/// The agent's `gatehouse_journal_commit_seconds` histogram, in part.
#[derive(Debug, Default)]
struct CommitStats {
    count: u64,
    sum_seconds: f64,
    at_most_6_4_ms: u64,
}

impl CommitStats {
    /// Reads it from `/metrics` (admin token).
    async fn read(api: SocketAddr) -> anyhow::Result<Self> {
        let text = reqwest::Client::new()
            .get(format!("http://{api}/metrics"))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let mut stats = CommitStats::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            match name {
                "gatehouse_journal_commit_seconds_count" => {
                    stats.count = value.parse().unwrap_or(0);
                }
                "gatehouse_journal_commit_seconds_sum" => {
                    stats.sum_seconds = value.parse().unwrap_or(0.0);
                }
                "gatehouse_journal_commit_seconds_bucket{le=\"0.0064\"}" => {
                    stats.at_most_6_4_ms = value.parse().unwrap_or(0);
                }
                _ => {}
            }
        }
        stats
    }

    /// What happened since `before`.
    fn since(&self, before: &CommitStats) -> CommitStats {
        CommitStats {
            count: self.count.saturating_sub(before.count),
            sum_seconds: self.sum_seconds - before.sum_seconds,
            at_most_6_4_ms: self.at_most_6_4_ms.saturating_sub(before.at_most_6_4_ms),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    started_at: Timestamp,
    agent_binary: String,
    devices: u16,
    registers: u16,
    poll_interval_ms: u64,
    seconds: u64,
    runs: Vec<RunReport>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut report = Report {
        started_at: Timestamp::now(),
        agent_binary: harness::agent_binary()?.display().to_string(),
        devices: args.devices,
        registers: args.registers,
        poll_interval_ms: args.poll_interval_ms,
        seconds: args.seconds,
        runs: Vec::new(),
    };
    let per_poll =
        args.events_per_second * args.poll_interval_ms as f64 / 1000.0 / f64::from(args.devices);
    if per_poll > f64::from(args.registers) {
        bail!(
            "{} events/s over {} devices polled every {} ms is {per_poll:.0} changes per poll \
             of a device, more than its {} registers: changes would merge",
            args.events_per_second,
            args.devices,
            args.poll_interval_ms,
            args.registers
        );
    }
    eprintln!(
        "agent {}; {} devices × {} registers, polled every {} ms; {} s per run",
        report.agent_binary, args.devices, args.registers, args.poll_interval_ms, args.seconds
    );
    let mut samples = match &args.samples {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut file = std::io::BufWriter::new(file);
            writeln!(file, "synchronous,phase,observed_at_us,latency_ms")?;
            Some(file)
        }
        None => None,
    };
    for &synchronous in &args.synchronous {
        for (phase, rate) in [
            ("baseline", args.baseline_events_per_second),
            ("load", args.events_per_second),
        ] {
            eprintln!(
                "run: synchronous = {}, {rate} events/s …",
                synchronous.as_str()
            );
            let run = measure(&args, synchronous, phase, rate, &mut samples).await?;
            eprintln!("  {}", summary_line(&run));
            report.runs.push(run);
        }
    }
    if let Some(mut samples) = samples {
        samples.flush()?;
    }
    println!("{}", summary(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One run: a fresh agent, warm-up, changes at `rate` for `args.seconds`, latencies.
async fn measure(
    args: &Args,
    synchronous: Synchronous,
    phase: &'static str,
    rate: f64,
    samples: &mut Option<std::io::BufWriter<std::fs::File>>,
) -> anyhow::Result<RunReport> {
    let folder = tempfile::tempdir()?;
    let mut sims = Vec::new();
    for _ in 0..args.devices {
        let sim = ModbusSim::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        sim.add_unit(1);
        sims.push(sim);
    }
    let sims = Arc::new(sims);
    let port = harness::free_port()?;
    let config = site_config(
        port,
        &folder.path().join("journal.db"),
        synchronous,
        &sims,
        args,
    )?;
    let mut agent = AgentProcess::start(folder.path(), &config, port).await?;
    // The first poll reports every register once, likely before the client connects: read
    // them from the start of the journal, and wait for all of them.
    let mut stream = StreamClient::connect(agent.api, harness::GUARD_TOKEN, Some(0)).await?;
    let initial = usize::from(args.devices) * usize::from(args.registers);
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    let mut seen = 0;
    while seen < initial {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match stream.next_event(remaining).await? {
            Some(event) if matches!(event.body, EventBody::Observation { .. }) => seen += 1,
            Some(_) => {}
            None => bail!(
                "only {seen} of {initial} first observations arrived within {WARM_UP_TIMEOUT:?}; \
                 agent log:\n{}",
                agent.log()
            ),
        }
    }

    let window = Duration::from_secs(args.seconds);
    let commits_before = CommitStats::read(agent.api).await?;
    let started_at = Timestamp::now();
    let changes = Arc::new(AtomicU64::new(0));
    let changer = tokio::spawn(change_registers(
        Arc::clone(&sims),
        args.registers,
        rate,
        window,
        Arc::clone(&changes),
    ));
    let mut latencies_ms = Vec::new();
    let mut in_window = 0usize;
    let window_end = started_at.checked_add(window)?;
    let deadline = Instant::now() + window + DRAIN;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let Some(event) = stream.next_event(remaining).await? else {
            break;
        };
        let received_at = Timestamp::now();
        if let EventBody::Observation { observed_at, .. } = event.body
            && observed_at >= started_at
        {
            let latency = received_at.as_nanosecond() - observed_at.as_nanosecond();
            latencies_ms.push(latency as f64 / 1e6);
            if let Some(samples) = samples.as_mut() {
                writeln!(
                    samples,
                    "{},{phase},{},{:.3}",
                    synchronous.as_str(),
                    observed_at.as_microsecond(),
                    latency as f64 / 1e6
                )?;
            }
            if observed_at < window_end {
                in_window += 1;
            }
        }
    }
    changer.await?;
    let commits = CommitStats::read(agent.api).await?.since(&commits_before);
    agent.stop().await?;
    for sim in sims.iter() {
        sim.go_away().await;
    }

    if latencies_ms.is_empty() {
        bail!("no observation arrived; agent log:\n{}", agent.log());
    }
    latencies_ms.sort_by(f64::total_cmp);
    let mean_ms = latencies_ms.iter().sum::<f64>() / latencies_ms.len() as f64;
    Ok(RunReport {
        synchronous,
        phase,
        requested_events_per_second: rate,
        achieved_events_per_second: in_window as f64 / window.as_secs_f64(),
        changes_made: changes.load(Ordering::Relaxed),
        events_received: latencies_ms.len(),
        p50_ms: percentile(&latencies_ms, 50.0),
        p90_ms: percentile(&latencies_ms, 90.0),
        p99_ms: percentile(&latencies_ms, 99.0),
        max_ms: latencies_ms.last().copied().unwrap_or_default(),
        mean_ms,
        journal_commits: commits.count,
        journal_commit_mean_ms: commits.sum_seconds * 1e3 / commits.count.max(1) as f64,
        journal_commits_over_6_4_ms: commits.count - commits.at_most_6_4_ms,
        load_average: load_average(),
    })
}

/// The site header with the journal's `synchronous` mode and the devices.
fn site_config(
    api_port: u16,
    journal: &std::path::Path,
    synchronous: Synchronous,
    sims: &[ModbusSim],
    args: &Args,
) -> anyhow::Result<String> {
    let header = harness::site_header(api_port, journal);
    let default = "synchronous = \"full\"";
    if !header.contains(default) {
        bail!("harness::site_header no longer sets `{default}`; update gatehouse-latency");
    }
    let mut config = header.replace(
        default,
        &format!("synchronous = \"{}\"", synchronous.as_str()),
    );
    for (index, sim) in sims.iter().enumerate() {
        config.push_str(&register_device(
            &format!("dev-{index:02}"),
            sim.addr(),
            args.poll_interval_ms,
            args.registers,
        ));
    }
    Ok(config)
}

/// A device with `registers` u16 holding registers `{id}.r{N}` at addresses 0..registers.
fn register_device(id: &str, address: SocketAddr, poll_interval_ms: u64, registers: u16) -> String {
    let mut toml = format!(
        r#"
[[modbus.devices]]
id = "{id}"
address = "{address}"
poll_interval_ms = {poll_interval_ms}
timeout_ms = 1000
reconnect_initial_ms = 100
reconnect_max_ms = 1000
zone = "lobby"
"#
    );
    for register in 0..registers {
        let _ = write!(
            toml,
            "\n[[modbus.devices.points]]\nid = \"{id}.r{register}\"\n\
             table = \"holding_register\"\naddress = {register}\n"
        );
    }
    toml
}

/// Changes `rate` registers per second for `window`, round-robin: change `k` goes to device
/// `k % devices`, register `(k / devices) % registers`, and sets it to its pass number + 1,
/// so every change is a new value.
async fn change_registers(
    sims: Arc<Vec<ModbusSim>>,
    registers: u16,
    rate: f64,
    window: Duration,
    done: Arc<AtomicU64>,
) {
    let devices = sims.len() as u64;
    let registers = u64::from(registers);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(CHANGE_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut made = 0u64;
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().min(window);
        let due = (rate * elapsed.as_secs_f64()) as u64;
        while made < due {
            let device = (made % devices) as usize;
            let register = ((made / devices) % registers) as u16;
            let pass = made / (devices * registers);
            sims[device].set_holding(1, register, (pass % 65_535 + 1) as u16);
            made += 1;
        }
        done.store(made, Ordering::Relaxed);
        if elapsed >= window {
            return;
        }
    }
}

/// The 1-minute load average, 0 if unknown.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary_line(run: &RunReport) -> String {
    format!(
        "{:<6} {:<8} {:>8.1} {:>8.1} {:>7} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7} {:>7.2} {:>7} {:>5.2}",
        run.synchronous.as_str(),
        run.phase,
        run.requested_events_per_second,
        run.achieved_events_per_second,
        run.events_received,
        run.p50_ms,
        run.p90_ms,
        run.p99_ms,
        run.max_ms,
        run.journal_commits,
        run.journal_commit_mean_ms,
        run.journal_commits_over_6_4_ms,
        run.load_average
    )
}

/// The table printed at the end, with the load/baseline ratios per mode.
fn summary(report: &Report) -> String {
    let mut text = format!(
        "{:<6} {:<8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5}\n",
        "sync",
        "phase",
        "ev/s req",
        "ev/s got",
        "count",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "commits",
        "c. ms",
        ">6.4ms",
        "load"
    );
    for run in &report.runs {
        text.push_str(&summary_line(run));
        text.push('\n');
    }
    for mode in [Synchronous::Normal, Synchronous::Full] {
        let find = |phase| {
            report
                .runs
                .iter()
                .find(|r| r.synchronous == mode && r.phase == phase)
        };
        if let (Some(baseline), Some(load)) = (find("baseline"), find("load")) {
            let _ = writeln!(
                text,
                "{}: load/baseline p50 × {:.2}, p99 × {:.2}; p99 target < 5 ms: {}",
                mode.as_str(),
                load.p50_ms / baseline.p50_ms,
                load.p99_ms / baseline.p99_ms,
                if load.p99_ms < 5.0 { "met" } else { "missed" }
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_arguments_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn commit_stats_come_from_the_histogram() {
        let text = "gatehouse_journal_commit_seconds_sum 0.5\n\
                    gatehouse_journal_commit_seconds_count 100\n\
                    gatehouse_journal_commit_seconds_bucket{le=\"0.0032\"} 90\n\
                    gatehouse_journal_commit_seconds_bucket{le=\"0.0064\"} 97\n";
        let stats = CommitStats::parse(text).since(&CommitStats {
            count: 10,
            sum_seconds: 0.1,
            at_most_6_4_ms: 10,
        });
        assert_eq!((stats.count, stats.at_most_6_4_ms), (90, 87));
        assert!((stats.sum_seconds - 0.4).abs() < 1e-9);
    }

    #[test]
    fn generated_devices_parse_as_agent_config() -> anyhow::Result<()> {
        let header = harness::site_header(1234, std::path::Path::new("/tmp/j.db"));
        let device = register_device("dev-00", "127.0.0.1:1502".parse()?, 100, 125);
        let config = gatehouse_edge::config::Config::parse(&format!("{header}{device}"))
            .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
        assert_eq!(config.modbus.devices[0].points.len(), 125);
        Ok(())
    }
}

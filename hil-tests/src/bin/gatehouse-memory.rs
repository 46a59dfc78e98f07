//! `gatehouse-memory`: the resident memory of the real agent with 100 Modbus devices × 20
//! points, against the same agent idle with no device.
//!
//! What runs, all on 127.0.0.1: `--devices` simulated Modbus devices ([`ModbusSim`], in this
//! process), each with 20 points in all four tables and all types (4 coils, 4 discrete
//! inputs, 5 holding registers: u16, i16, 2 × f32, 7 input registers: u16, i16, i32, u32),
//! so the agent reads 4 blocks per device per poll; the `gatehouse-edge` binary
//! (`$GATEHOUSE_EDGE_BIN`, else `target/debug`); and one client of `/api/v1/stream` reading
//! every event, as a guard's screen would.
//!
//! How: first the baseline, the agent with no device, sampled after `--idle-seconds`. Then one
//! run per `--poll-interval-ms`: a fresh agent and journal, `--changes-per-second` value
//! changes spread round-robin over every point of every device for `--seconds`, and the
//! agent's `/proc/<pid>/status` sampled every second: VmRSS (resident now), VmHWM (peak
//! resident), RssAnon (heap and stacks), RssFile (mapped binary and libraries) and Threads.
//! "Load" is the median VmRSS of the last 10 samples. With `--query-clients N`, N REST clients
//! also page through the whole journal during the loaded runs.
//!
//! The agent inherits this process's environment, so allocator and runtime settings can be
//! tried without a rebuild, e.g. `MALLOC_ARENA_MAX=2` or `TOKIO_WORKER_THREADS=1`; the values
//! seen are printed with the figures.
//!
//! ```text
//! cargo build --release -p gatehouse-edge -p gatehouse-hil-tests
//! GATEHOUSE_EDGE_BIN=target/release/gatehouse-edge target/release/gatehouse-memory \
//!     --json memory.json
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use gatehouse_hil_tests::harness::{self, AgentProcess, StreamClient};
use gatehouse_hil_tests::modbus_sim::ModbusSim;
use jiff::Timestamp;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Resident memory of the agent with many Modbus devices, against the idle agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Simulated Modbus devices, 20 points each.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    devices: u16,

    /// Poll interval of every device; repeat for one run each.
    #[arg(long, default_values_t = [1000u64, 100])]
    poll_interval_ms: Vec<u64>,

    /// Value changes per second, spread over every point of every device.
    #[arg(long, default_value_t = 1000.0)]
    changes_per_second: f64,

    /// How long each loaded run lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,

    /// REST clients paging through the whole journal (`GET /api/v1/events`, 1000 a page)
    /// again and again during the loaded runs, as integrators syncing would; each query
    /// holds one of the agent's pooled SQLite read connections and its page cache.
    #[arg(long, default_value_t = 0)]
    query_clients: usize,

    /// How long the idle agent runs before it is sampled.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The target from the issue, in MiB of VmRSS under load.
const TARGET_MIB: f64 = 30.0;

/// Samples of the end of a run whose median is the "load" figure.
const STEADY_SAMPLES: usize = 10;

/// How often the changer wakes up to apply the changes that are due.
const CHANGE_TICK: Duration = Duration::from_millis(5);

/// What `/proc/<pid>/status` says, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Status {
    vm_rss_kib: u64,
    vm_hwm_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
    threads: u64,
    /// User and system CPU time used since the process started, seconds.
    cpu_seconds: f64,
}

/// One run: the agent idle with no device, or loaded.
#[derive(Debug, Serialize)]
struct RunReport {
    name: String,
    devices: u16,
    points: u32,
    poll_interval_ms: Option<u64>,
    /// Right after the API answered (loaded runs: the devices connecting).
    at_start: Status,
    /// The last sample.
    at_end: Status,
    /// Median VmRSS of the last samples.
    steady_vm_rss_kib: u64,
    changes_made: u64,
    events_received: u64,
    /// Pages of 1000 events the query clients read.
    query_pages: u64,
    /// The journal (database and WAL) at the end.
    journal_bytes: u64,
    /// The agent's CPU use over the run, percent of one core.
    cpu_percent: f64,
    /// VmRSS every second, KiB.
    vm_rss_timeline_kib: Vec<u64>,
    /// The machine's 1-minute load average at the end of the run (others' work is noise).
    load_average: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    started_at: Timestamp,
    agent_binary: String,
    /// Environment variables that change the agent's memory, as the agent inherits them.
    environment: Vec<(String, String)>,
    changes_per_second: f64,
    seconds: u64,
    runs: Vec<RunReport>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut report = Report {
        started_at: Timestamp::now(),
        agent_binary: harness::agent_binary()?.display().to_string(),
        environment: ["MALLOC_ARENA_MAX", "TOKIO_WORKER_THREADS", "GLIBC_TUNABLES"]
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
            .collect(),
        changes_per_second: args.changes_per_second,
        seconds: args.seconds,
        runs: Vec::new(),
    };
    eprintln!(
        "agent {}; environment {:?}",
        report.agent_binary, report.environment
    );
    eprintln!("run: idle, no device …");
    report.runs.push(idle(&args).await?);
    for &poll_interval_ms in &args.poll_interval_ms {
        eprintln!(
            "run: {} devices × 20 points, polled every {poll_interval_ms} ms, {} changes/s, {} s …",
            args.devices, args.changes_per_second, args.seconds
        );
        report.runs.push(loaded(&args, poll_interval_ms).await?);
    }
    println!("{}", summary(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The agent with no device: the baseline.
async fn idle(args: &Args) -> anyhow::Result<RunReport> {
    let folder = tempfile::tempdir()?;
    let port = harness::free_port()?;
    let config = harness::site_header(port, &folder.path().join("journal.db"));
    let mut agent = AgentProcess::start(folder.path(), &config, port).await?;
    let at_start = status(agent.pid())?;
    let mut timeline = Vec::new();
    for _ in 0..args.idle_seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        timeline.push(status(agent.pid())?.vm_rss_kib);
    }
    let at_end = status(agent.pid())?;
    let cpu_percent = cpu_percent(&at_start, &at_end, args.idle_seconds as f64);
    agent.stop().await?;
    Ok(RunReport {
        name: "idle".into(),
        devices: 0,
        points: 0,
        poll_interval_ms: None,
        at_start,
        at_end,
        steady_vm_rss_kib: median_of_last(&timeline, STEADY_SAMPLES),
        changes_made: 0,
        events_received: 0,
        query_pages: 0,
        journal_bytes: journal_bytes(folder.path()),
        cpu_percent,
        vm_rss_timeline_kib: timeline,
        load_average: load_average(),
    })
}

/// The agent with `args.devices` devices polled every `poll_interval_ms`, values changing.
async fn loaded(args: &Args, poll_interval_ms: u64) -> anyhow::Result<RunReport> {
    let folder = tempfile::tempdir()?;
    let mut sims = Vec::new();
    for _ in 0..args.devices {
        let sim = ModbusSim::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        sim.add_unit(1);
        sims.push(sim);
    }
    let sims = Arc::new(sims);
    let port = harness::free_port()?;
    let mut config = harness::site_header(port, &folder.path().join("journal.db"));
    for (index, sim) in sims.iter().enumerate() {
        config.push_str(&mixed_device(
            &format!("dev-{index:03}"),
            sim.addr(),
            poll_interval_ms,
        ));
    }
    let mut agent = AgentProcess::start(folder.path(), &config, port).await?;
    let pid = agent.pid();
    let at_start = status(pid)?;

    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let stream = StreamClient::connect(agent.api, harness::GUARD_TOKEN, None).await?;
    let reader = tokio::spawn(read_stream(stream, Arc::clone(&received), stop.clone()));
    let pages = Arc::new(AtomicU64::new(0));
    let mut queries = tokio::task::JoinSet::new();
    for _ in 0..args.query_clients {
        queries.spawn(query_journal(
            agent.api(harness::ADMIN_TOKEN),
            Arc::clone(&pages),
            stop.clone(),
        ));
    }
    let changes = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(args.seconds);
    let changer = tokio::spawn(change_points(
        Arc::clone(&sims),
        args.changes_per_second,
        window,
        Arc::clone(&changes),
    ));

    let mut timeline = Vec::new();
    let started = Instant::now();
    for second in 1..=args.seconds {
        tokio::time::sleep_until(started + Duration::from_secs(second)).await;
        timeline.push(status(pid)?.vm_rss_kib);
    }
    let at_end = status(pid)?;
    let cpu_percent = cpu_percent(&at_start, &at_end, started.elapsed().as_secs_f64());
    changer.await?;
    stop.cancel();
    let read = reader.await?;
    let mut queried = Ok(());
    while let Some(result) = queries.join_next().await {
        queried = queried.and(result?);
    }
    let journal_bytes = journal_bytes(folder.path());
    agent.stop().await?;
    for sim in sims.iter() {
        sim.go_away().await;
    }
    read.with_context(|| format!("the stream client failed; agent log:\n{}", agent.log()))?;
    queried.with_context(|| format!("a query client failed; agent log:\n{}", agent.log()))?;
    Ok(RunReport {
        name: match args.query_clients {
            0 => format!("{} devices, poll {poll_interval_ms} ms", args.devices),
            n => format!("{} dev., poll {poll_interval_ms} ms, {n} q.", args.devices),
        },
        devices: args.devices,
        points: u32::from(args.devices) * POINTS.len() as u32,
        poll_interval_ms: Some(poll_interval_ms),
        at_start,
        at_end,
        steady_vm_rss_kib: median_of_last(&timeline, STEADY_SAMPLES),
        changes_made: changes.load(Ordering::Relaxed),
        events_received: received.load(Ordering::Relaxed),
        query_pages: pages.load(Ordering::Relaxed),
        journal_bytes,
        cpu_percent,
        vm_rss_timeline_kib: timeline,
        load_average: load_average(),
    })
}

/// How a point of [`mixed_device`] is read and changed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Coil,
    Discrete,
    /// A 16-bit holding register; a change adds 1.
    Holding16,
    /// A f32 in two holding registers; a change adds 0.5, from 15 to 35 and round again.
    HoldingF32,
    /// A 16-bit input register; a change adds 1.
    Input16,
    /// A 32-bit integer in two input registers, high word first; a change adds 1 to the low
    /// word.
    Input32,
}

/// The 20 points of every device: (name, kind, address, TOML table, TOML type).
const POINTS: [(&str, Kind, u16, &str, &str); 20] = [
    ("door-1", Kind::Discrete, 0, "discrete_input", "bool"),
    ("door-2", Kind::Discrete, 1, "discrete_input", "bool"),
    ("motion-1", Kind::Discrete, 2, "discrete_input", "bool"),
    ("tamper", Kind::Discrete, 3, "discrete_input", "bool"),
    ("strike-1", Kind::Coil, 0, "coil", "bool"),
    ("strike-2", Kind::Coil, 1, "coil", "bool"),
    ("siren", Kind::Coil, 2, "coil", "bool"),
    ("light", Kind::Coil, 3, "coil", "bool"),
    ("setpoint", Kind::Holding16, 0, "holding_register", "u16"),
    ("offset", Kind::Holding16, 1, "holding_register", "i16"),
    (
        "temperature",
        Kind::HoldingF32,
        2,
        "holding_register",
        "f32",
    ),
    ("humidity", Kind::HoldingF32, 4, "holding_register", "f32"),
    ("mode", Kind::Holding16, 6, "holding_register", "u16"),
    ("counter", Kind::Input16, 0, "input_register", "u16"),
    ("badge-reads", Kind::Input16, 1, "input_register", "u16"),
    ("voltage", Kind::Input16, 2, "input_register", "i16"),
    ("energy", Kind::Input32, 3, "input_register", "i32"),
    ("uptime", Kind::Input32, 5, "input_register", "u32"),
    ("faults", Kind::Input16, 7, "input_register", "u16"),
    ("signal", Kind::Input16, 8, "input_register", "i16"),
];

/// A device with the 20 [`POINTS`], ids `{id}.{name}`, in zone `lobby`.
fn mixed_device(id: &str, address: SocketAddr, poll_interval_ms: u64) -> String {
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
    for (name, _, point_address, table, data_type) in POINTS {
        toml.push_str(&format!(
            "\n[[modbus.devices.points]]\nid = \"{id}.{name}\"\ntable = \"{table}\"\n\
             address = {point_address}\ntype = \"{data_type}\"\n"
        ));
    }
    toml
}

/// Changes `rate` points per second for `window`, round-robin: change `k` goes to device
/// `k % devices`, point `(k / devices) % 20`, so the points of a device change in turn.
async fn change_points(
    sims: Arc<Vec<ModbusSim>>,
    rate: f64,
    window: Duration,
    done: Arc<AtomicU64>,
) {
    let devices = sims.len() as u64;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(CHANGE_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut made = 0u64;
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().min(window);
        let due = (rate * elapsed.as_secs_f64()) as u64;
        while made < due {
            let sim = &sims[(made % devices) as usize];
            let (_, kind, address, _, _) =
                POINTS[((made / devices) % POINTS.len() as u64) as usize];
            change(sim, kind, address);
            made += 1;
        }
        done.store(made, Ordering::Relaxed);
        if elapsed >= window {
            return;
        }
    }
}

/// Gives one point a new value.
fn change(sim: &ModbusSim, kind: Kind, address: u16) {
    match kind {
        Kind::Coil => sim.set_coil(1, address, !sim.coil(1, address)),
        Kind::Discrete => sim.set_discrete(1, address, !sim.discrete(1, address)),
        Kind::Holding16 => sim.set_holding(1, address, sim.holding(1, address).wrapping_add(1)),
        Kind::HoldingF32 => {
            let next = sim.holding_f32(1, address) + 0.5;
            sim.set_holding_f32(1, address, if next > 35.0 { 15.0 } else { next });
        }
        Kind::Input16 => sim.set_input(1, address, sim.input(1, address).wrapping_add(1)),
        Kind::Input32 => {
            let low = address.saturating_add(1);
            sim.set_input(1, low, sim.input(1, low).wrapping_add(1));
        }
    }
}

/// Reads events until `stop`; counts them.
async fn read_stream(
    mut stream: StreamClient,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            event = stream.next_event(Duration::from_secs(5)) => {
                if event?.is_none() {
                    bail!("the stream ended or stayed silent for 5 s");
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
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

/// Pages through the whole journal, oldest first, again and again until `stop`; counts pages.
async fn query_journal(
    api: harness::ApiClient,
    pages: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut cursor: Option<String> = None;
    while !stop.is_cancelled() {
        let mut path = String::from("/api/v1/events?limit=1000");
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        let (status, page) = api.get(&path).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {page}");
        }
        pages.fetch_add(1, Ordering::Relaxed);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    Ok(())
}

/// The memory figures of a process.
fn status(pid: u32) -> anyhow::Result<Status> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut status = parse_status(&text);
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status.cpu_seconds = parse_cpu_seconds(&stat);
    Ok(status)
}

/// utime + stime from `/proc/<pid>/stat`, in seconds (USER_HZ is 100 on Linux).
fn parse_cpu_seconds(stat: &str) -> f64 {
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of the line; the first after the name is field 3.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = value
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        match key {
            "VmRSS" => status.vm_rss_kib = number,
            "VmHWM" => status.vm_hwm_kib = number,
            "RssAnon" => status.rss_anon_kib = number,
            "RssFile" => status.rss_file_kib = number,
            "Threads" => status.threads = number,
            _ => {}
        }
    }
    status
}

/// The median of the last `count` values.
fn median_of_last(values: &[u64], count: usize) -> u64 {
    let mut last = values[values.len().saturating_sub(count)..].to_vec();
    last.sort_unstable();
    last.get(last.len() / 2).copied().unwrap_or(0)
}

/// Bytes of `journal.db` and its WAL in `folder`.
fn journal_bytes(folder: &Path) -> u64 {
    ["journal.db", "journal.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(folder.join(name)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn cpu_percent(start: &Status, end: &Status, seconds: f64) -> f64 {
    (end.cpu_seconds - start.cpu_seconds) / seconds.max(f64::MIN_POSITIVE) * 100.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The table printed at the end, with the loaded/idle ratios.
fn summary(report: &Report) -> String {
    let mut text = format!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>8} {:>8} {:>5}\n",
        "run (MiB)",
        "start",
        "load",
        "peak",
        "anon",
        "file",
        "threads",
        "cpu %",
        "changes",
        "events",
        "load"
    );
    for run in &report.runs {
        text.push_str(&format!(
            "{:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>6.0} {:>8} {:>8} {:>5.2}\n",
            run.name,
            mib(run.at_start.vm_rss_kib),
            mib(run.steady_vm_rss_kib),
            mib(run.at_end.vm_hwm_kib),
            mib(run.at_end.rss_anon_kib),
            mib(run.at_end.rss_file_kib),
            run.at_end.threads,
            run.cpu_percent,
            run.changes_made,
            run.events_received,
            run.load_average
        ));
    }
    if let Some(idle) = report.runs.first() {
        for run in report.runs.iter().skip(1) {
            let load = mib(run.steady_vm_rss_kib);
            text.push_str(&format!(
                "{}: load/idle × {:.2}; target < {TARGET_MIB} MiB: {}\n",
                run.name,
                load / mib(idle.steady_vm_rss_kib).max(f64::MIN_POSITIVE),
                if load < TARGET_MIB { "met" } else { "missed" }
            ));
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
    fn proc_status_is_parsed() {
        let text = "Name:\tgatehouse-edge\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n\
                    RssAnon:\t    6000 kB\nRssFile:\t    4240 kB\nThreads:\t7\n";
        let status = parse_status(text);
        assert_eq!(
            (status.vm_rss_kib, status.vm_hwm_kib, status.threads),
            (10240, 20480, 7)
        );
        assert_eq!((status.rss_anon_kib, status.rss_file_kib), (6000, 4240));
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 7";
        assert_eq!(parse_cpu_seconds(stat), 3.0);
        assert_eq!(parse_cpu_seconds(""), 0.0);
    }

    #[test]
    fn the_median_is_of_the_last_samples() {
        assert_eq!(median_of_last(&[100, 1, 2, 3], 3), 2);
        assert_eq!(median_of_last(&[], 3), 0);
    }

    #[test]
    fn generated_devices_parse_as_agent_config() -> anyhow::Result<()> {
        let header = harness::site_header(1234, Path::new("/tmp/j.db"));
        let device = mixed_device("dev-000", "127.0.0.1:1502".parse()?, 1000);
        let config = gatehouse_edge::config::Config::parse(&format!("{header}{device}"))
            .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
        assert_eq!(config.modbus.devices[0].points.len(), 20);
        Ok(())
    }
}

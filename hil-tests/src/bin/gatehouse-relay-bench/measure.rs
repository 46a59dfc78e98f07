//! Reading what processes cost from `/proc`, and summarising latencies.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

/// Linux's USER_HZ: the unit of the CPU times in `/proc/<pid>/stat` (100 on every
/// architecture Gatehouse runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of `pid` so far, in ticks, and its resident memory.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessSample {
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Samples `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> anyhow::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let cpu_ticks = cpu_ticks_of(&stat).with_context(|| format!("/proc/{pid}/stat: {stat}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(ProcessSample { cpu_ticks, rss_kib })
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so the fields are counted after its last `)`.
fn cpu_ticks_of(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3) ... utime (field 14), stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU ticks of every process named `name` (e.g. all of PostgreSQL's backends).
fn ticks_of_all_named(name: &str) -> u64 {
    let wanted = format!("({name})");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.contains(&wanted))
        .filter_map(|stat| cpu_ticks_of(&stat))
        .sum()
}

/// The first process whose command line contains `needle` (e.g. the broker by its config
/// file's path).
pub fn find_process(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(needle))
        })
}

/// What a [`CpuMeter`] watches.
#[derive(Debug, Clone, Copy)]
pub enum Watched {
    Process(u32),
    /// Every process named `postgres`: the server and its backends, one per connection.
    /// Backends that exit during the window take their CPU time with them.
    Postgres,
}

impl Watched {
    fn ticks(self) -> u64 {
        match self {
            Watched::Process(pid) => sample(pid).map(|s| s.cpu_ticks).unwrap_or(0),
            Watched::Postgres => ticks_of_all_named("postgres"),
        }
    }
}

/// CPU used by several processes over a window.
#[derive(Debug)]
pub struct CpuMeter {
    started: Instant,
    watched: Vec<(&'static str, Watched, u64)>,
}

/// CPU used by one process over a window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub process: &'static str,
    /// Percent of one core, averaged over the window.
    pub cpu_percent: f64,
    /// CPU seconds used in the window.
    pub cpu_seconds: f64,
}

impl CpuMeter {
    pub fn start(watched: &[(&'static str, Watched)]) -> Self {
        CpuMeter {
            started: Instant::now(),
            watched: watched
                .iter()
                .map(|&(name, what)| (name, what, what.ticks()))
                .collect(),
        }
    }

    /// The CPU each watched process used since [`CpuMeter::start`].
    pub fn read(&self) -> Vec<CpuUse> {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        self.watched
            .iter()
            .map(|&(process, what, before)| {
                let cpu_seconds = what.ticks().saturating_sub(before) as f64 / TICKS_PER_SECOND;
                CpuUse {
                    process,
                    cpu_percent: 100.0 * cpu_seconds / elapsed,
                    cpu_seconds,
                }
            })
            .collect()
    }
}

/// The machine's 1-minute load average, 0 if unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The soft limit of open files of this process (children inherit it).
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Distribution {
    pub fn of(mut values_ms: Vec<f64>) -> Self {
        if values_ms.is_empty() {
            return Distribution::default();
        }
        values_ms.sort_by(f64::total_cmp);
        Distribution {
            count: values_ms.len(),
            p50_ms: percentile(&values_ms, 50.0),
            p90_ms: percentile(&values_ms, 90.0),
            p99_ms: percentile(&values_ms, 99.0),
            max_ms: values_ms.last().copied().unwrap_or_default(),
            mean_ms: values_ms.iter().sum::<f64>() / values_ms.len() as f64,
        }
    }

    /// `p50 / p90 / p99 / max` in ms, for summaries.
    pub fn brief(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1} ms (n = {})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of the last `count` values (all of them if fewer).
pub fn median_of_last(values: &[u64], count: usize) -> u64 {
    let mut tail: Vec<u64> = values[values.len().saturating_sub(count)..].to_vec();
    tail.sort_unstable();
    tail.get(tail.len() / 2).copied().unwrap_or(0)
}

/// Milliseconds in a duration, for reports.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "1234 (tokio (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(cpu_ticks_of(stat), Some(300));
        assert_eq!(cpu_ticks_of("garbage"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let distribution = Distribution::of(values);
        assert_eq!(
            (
                distribution.p50_ms,
                distribution.p99_ms,
                distribution.max_ms
            ),
            (50.0, 99.0, 100.0)
        );
        assert_eq!(Distribution::of(vec![7.0]).p99_ms, 7.0);
        assert_eq!(Distribution::of(Vec::new()).count, 0);
    }

    #[test]
    fn the_median_is_of_the_tail() {
        assert_eq!(median_of_last(&[100, 1, 2, 3], 3), 2);
        assert_eq!(median_of_last(&[], 3), 0);
    }
}

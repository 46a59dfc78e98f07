//! CPU time of a process, for the load harnesses: user + system seconds from
//! `/proc/PID/stat` (fields 14 and 15, all threads).

use anyhow::Context as _;

/// Seconds of CPU process `pid` has used (`"self"` for this process).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it follow the last ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("/proc/{pid}/stat has no ')'"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / rustix::param::clock_ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_used_some_cpu() -> anyhow::Result<()> {
        let before = super::cpu_seconds("self")?;
        let mut x = 0_u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(super::cpu_seconds("self")? > before);
        Ok(())
    }
}

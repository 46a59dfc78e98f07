//! `gatehouse-video-bench`: what video costs the real agent, against RTSP test cameras.
//!
//! What runs, all on 127.0.0.1: `--cameras` test cameras (`gatehouse-test-camera`, x264 at
//! `--width`×`--height`, `--fps`, one key frame per second), a simulated Modbus door, and the
//! `gatehouse-edge` binary (`$GATEHOUSE_EDGE_BIN`, else `target/debug`) recording every camera
//! into its pre-event buffer (and live view, when watched), with a rule that clips camera 1 around
//! each door opening.
//!
//! Measured:
//! - **CPU**: the agent's user + system time (`/proc/PID/stat`) over `--seconds`, as a share of
//!   one core, in all and per camera; the cameras' own (encoding) CPU beside it.
//! - **Frames**: frames the agent received per camera per second (from `/api/v1/cameras`),
//!   against the cameras' frame rate: fewer means dropped frames.
//! - **Live latency, glass to browser**: the cameras stamp each frame with the wall-clock time
//!   it is encoded (`--stamp`, [`gatehouse_hil_tests::glass`]); headless Chromium signs in to
//!   the LAN console, opens camera 1's live view (LL-HLS through Media Source Extensions) and
//!   for 10 s reads the stamp off every frame it presents, against the frame's expected display
//!   time. `--latency-runs` runs (a new browser each), each run's median and 95th percentile.
//! - **Clip**: the door opens; the time from the clip's end (trigger + `after`) until the API
//!   lists it ready (polled every 20 ms). `--clip-runs` times, median.
//! - **Baseline**, in the same window: `gst-launch-1.0 rtspsrc ! rtph264depay ! h264parse !
//!   fakesink` reading camera 1 as the agent does; the agent's CPU per camera is reported as a
//!   ratio to it. The door is polled once a second so that it costs next to nothing.
//!
//! ```text
//! cargo build --release -p gatehouse-edge -p gatehouse-hil-tests
//! GATEHOUSE_EDGE_BIN=target/release/gatehouse-edge target/release/gatehouse-video-bench
//! ```

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use gatehouse_hil_tests::browser::Browser;
use gatehouse_hil_tests::cpu::cpu_seconds;
use gatehouse_hil_tests::glass::read_stamps;
use gatehouse_hil_tests::harness::{self, AgentProcess, GUARD_TOKEN};
use gatehouse_hil_tests::test_camera::{CameraOptions, TestCamera};
use serde_json::Value as Json;
use tokio::time::Instant;

/// What video costs the agent: CPU per camera, frames, live latency, clip latency.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value_t = 1)]
    cameras: usize,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Camera bitrate, kbit/s.
    #[arg(long, default_value_t = 4000)]
    bitrate: u32,
    /// Seconds of CPU and frame measurement (after a 10 s warm-up).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Runs of the glass-to-browser measurement.
    #[arg(long, default_value_t = 3)]
    latency_runs: usize,
    /// Seconds of each glass-to-browser run.
    #[arg(long, default_value_t = 10.0)]
    latency_seconds: f64,
    #[arg(long, default_value_t = 3)]
    clip_runs: usize,
    /// One test camera for all: every agent camera is its own RTSP session to the same
    /// camera (whose encoding is shared), so that more cameras can be fed than this machine
    /// could encode.
    #[arg(long)]
    shared_camera: bool,
    /// During the CPU window, fetch every camera's live playlists and newest segment each
    /// second (a viewer on each), so live view is packaged and served.
    #[arg(long)]
    watch: bool,
}

/// What a viewer fetches each second: the playlists and the newest whole segment.
async fn watch_once(agent: &AgentProcess, live_url: &str) -> anyhow::Result<()> {
    let base = live_url.rsplit_once('/').context("no folder")?.0;
    let (_, index) = fetch(agent, live_url).await?;
    let index = String::from_utf8_lossy(&index).to_string();
    let Some(media) = index.lines().find(|l| l.starts_with("live.m3u8")) else {
        return Ok(());
    };
    let (_, playlist) = fetch(agent, &format!("{base}/{media}")).await?;
    let playlist = String::from_utf8_lossy(&playlist).to_string();
    if let Some(segment) = playlist.lines().rfind(|l| l.starts_with("segment-")) {
        fetch(agent, &format!("{base}/{segment}")).await?;
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn cameras(agent: &AgentProcess) -> anyhow::Result<Vec<Json>> {
    let (status, body) = agent.api(GUARD_TOKEN).get("/api/v1/cameras").await?;
    anyhow::ensure!(status == 200, "GET /api/v1/cameras: {status}");
    Ok(body.as_array().cloned().unwrap_or_default())
}

async fn fetch(agent: &AgentProcess, url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let response = reqwest::get(format!("http://{}{url}", agent.api)).await?;
    Ok((response.status().as_u16(), response.bytes().await?.to_vec()))
}

/// Glass-to-screen latency as a guard sees it: headless Chromium signs in to the LAN console
/// and opens camera 1's live view; for `seconds` it reads the wall-clock stamp off every frame
/// it presents. Returns the frames' ages in milliseconds.
async fn glass_to_browser(agent: &AgentProcess, seconds: f64) -> anyhow::Result<Vec<f64>> {
    let mut browser = Browser::launch().await?;
    browser
        .open(&format!("http://{}/console/#camera=cam1", agent.api))
        .await?;
    browser.sign_in_to_console(GUARD_TOKEN).await?;
    browser
        .wait_until(
            "document.getElementById('live').currentTime > 2",
            Duration::from_secs(30),
        )
        .await?;
    let measured = read_stamps(&mut browser, seconds).await?;
    anyhow::ensure!(
        !measured.ages.is_empty(),
        "no stamp could be read: {measured:?}"
    );
    eprintln!(
        "video-bench: {} frames shown, {} stamps read",
        measured.frames,
        measured.ages.len()
    );
    Ok(measured.ages)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gstreamer::init()?;
    let folder = tempfile::tempdir()?;
    let mut cams = Vec::new();
    for _ in 0..if args.shared_camera { 1 } else { args.cameras } {
        cams.push(TestCamera::start(CameraOptions {
            width: args.width,
            height: args.height,
            fps: args.fps,
            bitrate_kbps: args.bitrate,
            stamp: true,
            ..CameraOptions::default()
        })?);
    }
    let door = harness::simulator().await?;
    let mut config = format!(
        "{door}\n[video]\nstorage = \"{}\"\npre_event = \"10s\"\n",
        folder.path().join("video").display(),
        door = harness::door_device("io", door.addr(), 1000)
    );
    for index in 0..args.cameras {
        config.push_str(&format!(
            "[[video.cameras]]\nid = \"cam{}\"\nurl = \"{}\"\n",
            index + 1,
            cams[index % cams.len()].url()
        ));
    }
    config.push_str(
        r#"
[[rules]]
id = "door-clip"
when.event = { point = "io.door", value = "value == true" }
then = [{ clip = { camera = "cam1", before = "5s", after = "5s" } }]
"#,
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cameras(&agent)
        .await?
        .iter()
        .any(|c| c["status"] != "online")
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "cameras not online:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "video-bench: {} camera(s) online; warming up 10 s",
        args.cameras
    );
    tokio::time::sleep(Duration::from_secs(10)).await;

    let frames = |list: &[Json]| -> Vec<u64> {
        list.iter()
            .map(|c| c["frames"].as_u64().unwrap_or(0))
            .collect()
    };
    let camera_cpu = |cams: &[TestCamera]| -> anyhow::Result<f64> {
        cams.iter().map(|c| cpu_seconds(&c.pid().to_string())).sum()
    };
    // The baseline, in the same window: GStreamer alone reading camera 1 the way the agent
    // does (RTSP over TCP, depayload, parse), into a fakesink.
    let mut baseline = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "rtspsrc"])
        .arg(format!("location={}", cams[0].url()))
        .args([
            "protocols=tcp",
            "latency=200",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "fakesink",
        ])
        .spawn()
        .context("running gst-launch-1.0 for the baseline")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list = cameras(&agent).await?;
    let live_urls: Vec<String> = list
        .iter()
        .filter_map(|c| c["live_url"].as_str().map(str::to_owned))
        .collect();
    let (agent_before, cams_before) = (cpu_seconds(&agent.pid().to_string())?, camera_cpu(&cams)?);
    let baseline_before = cpu_seconds(&baseline.id().to_string())?;
    let frames_before = frames(&list);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(args.seconds) {
        if args.watch {
            for url in &live_urls {
                watch_once(&agent, url).await?;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let agent_share = (cpu_seconds(&agent.pid().to_string())? - agent_before) / elapsed;
    let cams_share = (camera_cpu(&cams)? - cams_before) / elapsed;
    let baseline_share = (cpu_seconds(&baseline.id().to_string())? - baseline_before) / elapsed;
    let _ = baseline.kill();
    let _ = baseline.wait();
    let frames_after = frames(&cameras(&agent).await?);
    let rates: Vec<f64> = frames_after
        .iter()
        .zip(&frames_before)
        .map(|(after, before)| after.saturating_sub(*before) as f64 / elapsed)
        .collect();
    println!(
        "cameras {} at {}x{} {} fps {} kbit/s: agent CPU {:.2}% of one core ({:.2}% per camera); cameras' own encoding {:.0}%",
        args.cameras,
        args.width,
        args.height,
        args.fps,
        args.bitrate,
        agent_share * 100.0,
        agent_share * 100.0 / args.cameras as f64,
        cams_share * 100.0
    );
    println!(
        "baseline gst-launch (rtspsrc ! depay ! parse ! fakesink, camera 1): {:.2}% of one core; agent per camera / baseline: {:.2} (live view {})",
        baseline_share * 100.0,
        agent_share / args.cameras as f64 / baseline_share,
        if args.watch { "watched" } else { "not watched" }
    );
    let short = rates
        .iter()
        .filter(|&&rate| rate < f64::from(args.fps) - 0.5)
        .count();
    let (slowest, fastest) = rates
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "frames received per camera per second: {slowest:.2} to {fastest:.2} (camera rate {}); cameras short of it by more than 0.5/s: {short}{}",
        args.fps,
        if rates.len() <= 8 {
            format!(
                " ({})",
                rates
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );

    let mut medians = Vec::new();
    for _ in 0..args.latency_runs {
        let mut ages = glass_to_browser(&agent, args.latency_seconds).await?;
        medians.push(median(&mut ages));
        let p95 = ages[(ages.len() * 95 / 100).min(ages.len() - 1)];
        let oldest = ages[ages.len() - 1];
        println!(
            "live view glass-to-browser (Chromium, LAN console, {} s): median {:.0} ms, 95th percentile {p95:.0} ms, oldest {oldest:.0} ms, {} frames",
            args.latency_seconds,
            medians[medians.len() - 1],
            ages.len()
        );
    }
    if !medians.is_empty() {
        println!(
            "live view glass-to-browser: median of {} runs {:.0} ms",
            medians.len(),
            median(&mut medians.clone())
        );
    }

    let mut clip_delays = Vec::new();
    for run in 0..args.clip_runs {
        door.set_discrete(1, 0, false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        door.set_discrete(1, 0, true);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, page) = agent.api(GUARD_TOKEN).get("/api/v1/clips?limit=1").await?;
            let clip = &page["items"][0];
            if clip["id"].as_u64() == Some(run as u64 + 1) && clip["state"] != "recording" {
                anyhow::ensure!(clip["state"] == "ready", "clip failed: {clip}");
                let end: jiff::Timestamp = clip["to"].as_str().context("no `to`")?.parse()?;
                clip_delays.push(jiff::Timestamp::now().duration_since(end).as_secs_f64());
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no clip: {page}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "clip available after its end: median {:.2} s ({})",
        median(&mut clip_delays.clone()),
        clip_delays
            .iter()
            .map(|l| format!("{l:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

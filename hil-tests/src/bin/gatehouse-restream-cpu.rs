//! `gatehouse-restream-cpu`: the CPU the agent's RTSP re-streaming costs for one camera, in
//! passthrough and in transcode, as CPU seconds per minute of this process.
//!
//! What runs, all on 127.0.0.1: one `gatehouse-test-camera` (a child process, 1080p30 H.264
//! by default, not counted); a [`Restreamer`] in this process serving it, first in
//! passthrough, then transcoded to `--transcode-height` lines; and one client, `gst-launch-1.0
//! rtspsrc ! rtph264depay ! h264parse ! fpsdisplaysink` (a child process, not counted), which
//! reports the frame rate it received so that a transcoder falling behind shows.
//!
//! How: for each mode, start the restreamer and the client, wait `--warmup-seconds`, read this
//! process's user + system time from `/proc/self/stat` (all threads), wait `--seconds`, read it
//! again. Figures are CPU seconds per wall-clock minute (60 = one core busy).
//!
//! ```text
//! cargo build --release -p gatehouse-hil-tests --bins
//! target/release/gatehouse-restream-cpu --seconds 60
//! ```

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use gatehouse_edge::video::restream::{
    RestreamMode, RestreamSettings, RestreamSource, Restreamer, RtspAuth, StreamUrl,
};
use gatehouse_hil_tests::cpu::cpu_seconds;
use gatehouse_hil_tests::test_camera::{CameraOptions, TestCamera};
use gatehouse_protocol::DeviceId;

/// CPU of the agent's RTSP re-streaming, passthrough against transcode.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How long each mode is measured.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Time for each mode to settle before measuring.
    #[arg(long, default_value_t = 5)]
    warmup_seconds: u64,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// The camera's bitrate in kbit/s.
    #[arg(long, default_value_t = 4000)]
    camera_bitrate: u32,
    #[arg(long, default_value_t = 480)]
    transcode_height: u32,
    #[arg(long, default_value_t = 800)]
    transcode_bitrate: u32,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench-secret";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let camera = TestCamera::start(CameraOptions {
        codec: "h264",
        width: args.width,
        height: args.height,
        fps: args.fps,
        bitrate_kbps: args.camera_bitrate,
        ..CameraOptions::default()
    })?;
    println!(
        "camera: {}x{} at {} fps, H.264 {} kbit/s; {} s per mode after {} s of warm-up",
        args.width, args.height, args.fps, args.camera_bitrate, args.seconds, args.warmup_seconds
    );
    let modes = [
        ("passthrough", RestreamMode::Passthrough),
        (
            "transcode",
            RestreamMode::Transcode {
                height: args.transcode_height,
                bitrate_kbps: args.transcode_bitrate,
            },
        ),
    ];
    for (name, mode) in modes {
        let (cpu_per_minute, fps, encoder) =
            measure(&args, &camera, mode).with_context(|| format!("measuring {name}"))?;
        println!(
            "{name:<12} {cpu_per_minute:>6.1} CPU s/min  client received {fps} fps{}",
            encoder.map_or_else(String::new, |encoder| format!("  (encoder {encoder})"))
        );
    }
    Ok(())
}

fn measure(
    args: &Args,
    camera: &TestCamera,
    mode: RestreamMode,
) -> anyhow::Result<(f64, String, Option<&'static str>)> {
    let id = DeviceId::new("cam.bench")?;
    let restreamer = Restreamer::start(
        &RestreamSettings {
            listen: ([127, 0, 0, 1], 0).into(),
            user: USER.to_owned(),
            password: PASSWORD.to_owned(),
            auth: RtspAuth::Digest,
        },
        &[RestreamSource {
            camera: id.clone(),
            url: StreamUrl::Fixed(camera.url().to_owned()),
            camera_user: None,
            camera_password: None,
            mode,
        }],
    )?;
    let url = restreamer
        .url(&id)
        .replacen("rtsp://", &format!("rtsp://{USER}:{PASSWORD}@"), 1);
    let client = Client::start(&url)?;
    thread::sleep(Duration::from_secs(args.warmup_seconds));
    let before = cpu_seconds("self")?;
    let started = Instant::now();
    thread::sleep(Duration::from_secs(args.seconds));
    let seconds = cpu_seconds("self")? - before;
    let elapsed = started.elapsed().as_secs_f64();
    let fps = client.last_average_fps();
    client.stop();
    if restreamer.cameras_pulled().is_empty() {
        bail!("the camera was not pulled during the measurement (client said: {fps})");
    }
    let encoder = restreamer.encoder();
    restreamer.stop();
    Ok((seconds * 60.0 / elapsed, fps, encoder))
}

/// A `gst-launch-1.0` client that reports the frame rate it receives.
struct Client {
    child: Child,
    last: Arc<Mutex<String>>,
}

impl Client {
    fn start(url: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("gst-launch-1.0")
            .args([
                "-v",
                "rtspsrc",
                &format!("location={url}"),
                "protocols=tcp",
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "fpsdisplaysink",
                "video-sink=fakesink",
                "text-overlay=false",
                "sync=false",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running gst-launch-1.0 (apt-get install gstreamer1.0-tools)")?;
        let last = Arc::new(Mutex::new("nothing".to_owned()));
        if let Some(stdout) = child.stdout.take() {
            let seen = Arc::clone(&last);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some((_, average)) = line.split_once("average: ") {
                        let average = average.trim_end_matches('"').trim().to_owned();
                        *seen.lock().unwrap_or_else(PoisonError::into_inner) = average;
                    }
                }
            });
        }
        Ok(Self { child, last })
    }

    fn last_average_fps(&self) -> String {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

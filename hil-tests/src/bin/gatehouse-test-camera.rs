//! `gatehouse-test-camera`: an RTSP camera for tests and benchmarks, served by
//! gstreamer-rtsp-server from `videotestsrc` with the wall clock and a frame counter drawn on
//! the picture.
//!
//! Driven by lines on stdin (see `LONG_ABOUT`); [`gatehouse_hil_tests::test_camera`] runs it.

use std::{
    io::BufRead as _,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use gatehouse_hil_tests::glass;
use gstreamer as gst;
use gstreamer::{glib, prelude::*};
use gstreamer_rtsp_server::{self as rtsp, prelude::*};

const LONG_ABOUT: &str = "\
Serves one camera over RTSP at rtsp://ADDRESS:PORT/cam until stdin closes (or until killed, with --until-killed). The picture is
videotestsrc with the local wall-clock time (to the second) at the top left and the stream's
running time at the top right, encoded by x264enc or x265enc with one key frame per second.
One pipeline is shared by every client, so all of them see the same frames.

With --user and --password, clients must authenticate (RTSP basic authentication).

With --stamp, each frame carries the wall-clock time it was handed to the encoder (Unix
milliseconds), as a bar code in its bottom 16 rows, so that whoever shows the frame can tell how
old it is: glass-to-screen latency. See `gatehouse_hil_tests::glass` for its layout.

When it listens it prints `ready rtsp://ADDRESS:PORT/cam`. Then each line on stdin is a
command, answered by one line (`ok`, or `error REASON`):
  pattern NAME   show videotestsrc's pattern NAME (smpte, black, white, red, ball, ...)
  stall          stop sending frames; the RTSP session stays up (a camera that hangs)
  resume         send frames again
A closed stdin stops the camera, unless --until-killed.";

/// An RTSP test camera (videotestsrc through gstreamer-rtsp-server).
#[derive(Debug, Parser)]
#[command(version, long_about = LONG_ABOUT)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, value_enum, default_value_t = Codec::H264)]
    codec: Codec,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 360)]
    height: u32,
    #[arg(long, default_value_t = 15)]
    fps: u32,
    /// Encoder bitrate in kbit/s.
    #[arg(long, default_value_t = 1000)]
    bitrate: u32,
    /// User clients must authenticate as (with --password).
    #[arg(long, requires = "password")]
    user: Option<String>,
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Stamp each frame with the time it is encoded, as a bar code (needs a width of at least
    /// 256 and a multiple of 8).
    #[arg(long)]
    stamp: bool,
    /// Serve until killed, without reading commands from stdin (for the demo).
    #[arg(long)]
    until_killed: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Codec {
    H264,
    H265,
}

/// The elements of the running media that commands act on.
#[derive(Default)]
struct Controls {
    source: Option<gst::Element>,
    valve: Option<gst::Element>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gst::init().context("initialising GStreamer")?;
    let (encoder, payloader) = match args.codec {
        Codec::H264 => (
            format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate={bitrate} \
                 ! video/x-h264,profile=constrained-baseline",
                fps = args.fps,
                bitrate = args.bitrate
            ),
            "rtph264pay",
        ),
        Codec::H265 => (
            format!(
                "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate={bitrate}",
                fps = args.fps,
                bitrate = args.bitrate
            ),
            "rtph265pay",
        ),
    };
    let launch = format!(
        "( videotestsrc name=source is-live=true pattern=smpte \
         ! video/x-raw,width={width},height={height},framerate={fps}/1 \
         ! clockoverlay time-format=\"%H:%M:%S\" halignment=left valignment=top font-desc=\"Sans 24\" \
         ! timeoverlay halignment=right valignment=top font-desc=\"Sans 24\" \
         ! videoconvert ! video/x-raw,format=I420 ! identity name=stamp ! {encoder} \
         ! valve name=valve drop=false ! {payloader} name=pay0 pt=96 config-interval=-1 )",
        width = args.width,
        height = args.height,
        fps = args.fps,
    );

    let server = rtsp::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.port.to_string());
    let mounts = server
        .mount_points()
        .context("the RTSP server has no mount points")?;
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(&launch);
    factory.set_shared(true);
    if args.stamp && (args.width < 256 || args.width % 8 != 0 || args.height % 2 != 0) {
        bail!("--stamp needs a width of at least 256 that is a multiple of 8, and an even height");
    }
    let controls = Arc::new(Mutex::new(Controls::default()));
    let configured = Arc::clone(&controls);
    let (width, height, stamp) = (args.width as usize, args.height as usize, args.stamp);
    factory.connect_media_configure(move |_, media| {
        let element = media.element();
        let Ok(bin) = element.downcast::<gst::Bin>() else {
            return;
        };
        if let Some(pad) = bin
            .by_name("stamp")
            .and_then(|identity| identity.static_pad("src"))
            .filter(|_| stamp)
        {
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer_mut() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    if let Ok(mut map) = buffer.make_mut().map_writable() {
                        glass::stamp_i420(map.as_mut_slice(), width, height, now);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        let mut controls = configured.lock().unwrap_or_else(PoisonError::into_inner);
        controls.source = bin.by_name("source");
        controls.valve = bin.by_name("valve");
    });
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        let auth = rtsp::RTSPAuth::new();
        let token = rtsp::RTSPToken::builder()
            .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
            .build();
        auth.add_basic(rtsp::RTSPAuth::make_basic(user, password).as_str(), &token);
        server.set_auth(Some(&auth));
        factory.add_role_from_structure(
            &gst::Structure::builder("viewer")
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
    }
    mounts.add_factory("/cam", factory);
    let main_loop = glib::MainLoop::new(None, false);
    let _source = server
        .attach(None)
        .with_context(|| format!("listening on {}:{}", args.address, args.port))?;
    println!("ready rtsp://{}:{}/cam", args.address, server.bound_port());

    if args.until_killed {
        main_loop.run();
        return Ok(());
    }
    let stopper = main_loop.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines().map_while(Result::ok) {
            if line.trim().is_empty() {
                continue;
            }
            let answer = match command(&controls, line.trim()) {
                Ok(()) => "ok".to_owned(),
                Err(error) => format!("error {error:#}"),
            };
            println!("{answer}");
        }
        stopper.quit();
    });
    main_loop.run();
    Ok(())
}

fn command(controls: &Mutex<Controls>, line: &str) -> anyhow::Result<()> {
    let controls = controls.lock().unwrap_or_else(PoisonError::into_inner);
    let (verb, argument) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "pattern" => {
            let source = controls
                .source
                .as_ref()
                .context("no client has opened the stream yet")?;
            let pattern = source
                .find_property("pattern")
                .context("videotestsrc has no pattern property")?;
            let value = glib::Value::deserialize(argument, pattern.value_type())
                .map_err(|_| anyhow::anyhow!("unknown pattern {argument:?}"))?;
            source.set_property_from_value("pattern", &value);
        }
        "stall" | "resume" => {
            let valve = controls
                .valve
                .as_ref()
                .context("no client has opened the stream yet")?;
            valve.set_property("drop", verb == "stall");
        }
        other => bail!("unknown command {other:?}"),
    }
    Ok(())
}

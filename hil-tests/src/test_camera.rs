//! RTSP cameras for tests: [`TestCamera`] runs `gatehouse-test-camera` (gstreamer-rtsp-server
//! serving videotestsrc) in a child process; [`GarbageCamera`] answers RTSP with junk.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use crate::child_peer::ChildPeer;

/// How long the camera may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the camera encodes and who may watch.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    /// `h264` or `h265`.
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// User and password clients must give (RTSP basic authentication).
    pub credentials: Option<(String, String)>,
    /// The port to listen on; 0 picks a free one. A restarted camera reuses its port.
    pub port: u16,
    /// Stamp each frame with its encoding time ([`crate::glass`]).
    pub stamp: bool,
}

impl Default for CameraOptions {
    fn default() -> Self {
        Self {
            codec: "h264",
            width: 320,
            height: 240,
            fps: 15,
            bitrate_kbps: 500,
            credentials: None,
            port: 0,
            stamp: false,
        }
    }
}

/// A running test camera; stopped on drop.
#[derive(Debug)]
pub struct TestCamera {
    url: String,
    port: u16,
    options: CameraOptions,
    peer: ChildPeer,
}

impl TestCamera {
    /// Starts the camera and waits until it listens.
    pub fn start(options: CameraOptions) -> anyhow::Result<Self> {
        let mut command = Command::new(binary()?);
        command.args([
            "--codec",
            options.codec,
            "--width",
            &options.width.to_string(),
            "--height",
            &options.height.to_string(),
            "--fps",
            &options.fps.to_string(),
            "--bitrate",
            &options.bitrate_kbps.to_string(),
            "--port",
            &options.port.to_string(),
        ]);
        if let Some((user, password)) = &options.credentials {
            command.args(["--user", user, "--password", password]);
        }
        if options.stamp {
            command.arg("--stamp");
        }
        let (peer, url) = ChildPeer::spawn("the test camera", command, STARTUP_TIMEOUT)?;
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .with_context(|| format!("the test camera announced {url:?}, not an RTSP URL"))?;
        Ok(Self {
            url,
            port,
            options,
            peer,
        })
    }

    /// `rtsp://127.0.0.1:PORT/cam`, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The camera process's id (its CPU is the encoding's, not the agent's).
    pub fn pid(&self) -> u32 {
        self.peer.pid()
    }

    /// Shows videotestsrc's pattern `name` (`black`, `white`, `smpte`, ...) from now on.
    pub fn set_pattern(&self, name: &str) -> anyhow::Result<()> {
        self.peer.command(&format!("pattern {name}")).map(drop)
    }

    /// Stops sending frames while the RTSP session stays up.
    pub fn stall(&self) -> anyhow::Result<()> {
        self.peer.command("stall").map(drop)
    }

    /// Sends frames again after [`TestCamera::stall`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.peer.command("resume").map(drop)
    }

    /// Kills the camera (a camera that loses power); [`TestCamera::restart`] brings it back.
    pub fn kill(self) -> StoppedCamera {
        StoppedCamera {
            port: self.port,
            options: self.options.clone(),
        }
    }
}

/// A camera killed by [`TestCamera::kill`], remembering its port.
#[derive(Debug)]
pub struct StoppedCamera {
    port: u16,
    options: CameraOptions,
}

impl StoppedCamera {
    /// Starts the camera again on the same port.
    pub fn restart(self) -> anyhow::Result<TestCamera> {
        TestCamera::start(CameraOptions {
            port: self.port,
            ..self.options
        })
    }
}

/// A TCP server on the RTSP port that answers every connection with bytes that are not RTSP.
#[derive(Debug)]
pub struct GarbageCamera {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl GarbageCamera {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                thread::spawn(move || {
                    let mut request = [0_u8; 2048];
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    while matches!(stream.read(&mut request), Ok(n) if n > 0) {
                        let junk: Vec<u8> = (0..512).map(|i| (i * 37 % 251) as u8).collect();
                        if stream.write_all(&junk).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, stop })
    }

    /// `rtsp://127.0.0.1:PORT/cam`.
    pub fn url(&self) -> String {
        format!("rtsp://{}/cam", self.addr)
    }
}

impl Drop for GarbageCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// The camera binary, from the workspace's target folder (`$GATEHOUSE_TEST_CAMERA_BIN` to
/// use another).
fn binary() -> anyhow::Result<PathBuf> {
    crate::harness::workspace_binary(
        "gatehouse-test-camera",
        "GATEHOUSE_TEST_CAMERA_BIN",
        &["hil-tests/src/bin"],
    )
}

//! Re-streaming the site's cameras over RTSP, so that other LAN clients (an existing NVR, VLC)
//! pull them from the agent instead of from each camera.
//!
//! # What it serves
//!
//! One RTSP server (gstreamer-rtsp-server) on [`RestreamSettings::listen`], with one mount per
//! camera at `/{camera id}` (`rtsp://HOST:PORT/cam.lobby`; ids are lowercase letters, digits,
//! `-`, `_` and `.`, all safe in a path). Each mount is either:
//!
//! - **passthrough**: `rtspsrc ! rtph26Xdepay ! h26Xparse ! rtph26Xpay`. The codec (H.264 or
//!   H.265) is read from the camera's own caps when its stream appears (the `encoding-name` of
//!   the RTP pad `rtspsrc` exposes after the camera's SDP), so it needs no configuration and
//!   costs nothing: the elements are built on that pad, not by an autoplugger. Other codecs
//!   (MJPEG, ...) are refused with an error that names them. Nothing is decoded.
//! - **transcode**: `rtspsrc ! decodebin ! queue (leaky) ! videoscale ! video/x-raw,width=W,
//!   height=H,pixel-aspect-ratio=1/1 ! videoconvert ! video/x-raw,format=I420 ! ENCODER !
//!   h264parse ! rtph264pay`: H.264 at the given height, the width following the camera's
//!   display aspect ratio rounded to an even number (H.264 4:2:0 needs even sizes); a camera no
//!   taller than the target keeps its size. The I420 caps matter: x264enc fed anything else
//!   encodes High 4:4:4, which browsers and NVRs refuse. The leaky queue holds up to 0.5 s of
//!   decoded frames and drops the oldest when the encoder falls further behind, rather than
//!   letting latency grow; QoS dropping is off in the decoder and converters, so that this queue
//!   is the one place where frames are dropped.
//!
//! Only the first video stream of a camera is pulled (audio and metadata streams are not
//! requested), over RTSP-over-TCP with a 200 ms jitter buffer. Camera credentials are given to
//! `rtspsrc` as properties (from [`RestreamSource::camera_user`] or from the URL's user info,
//! which is stripped from the location), so they never appear in a pipeline description; every
//! message this module logs about a camera has them scrubbed out (`Secrets::scrub`).
//!
//! # Encoders
//!
//! The H.264 encoder is chosen once, at [`Restreamer::start`], as the first of
//! `ENCODER_PREFERENCE` whose element exists: `vaapih264enc` (Intel/AMD VA-API),
//! `v4l2h264enc` (Raspberry Pi and other V4L2 M2M SoCs), `nvh264enc` (NVIDIA NVENC),
//! `omxh264enc` (older OpenMAX SoCs), then software `x264enc` (`tune=zerolatency
//! speed-preset=superfast`, Main profile, a key frame every 60 frames) and `openh264enc`. The
//! choice is logged and available as [`Restreamer::encoder`]. Only x264enc has been exercised
//! (the test machines have no GPU); the hardware entries set their own bitrate property and
//! nothing else.
//!
//! # Sharing and lifetime
//!
//! Every mount is shared: however many clients watch, the camera is pulled once. Nothing is
//! pulled until a client asks (DESCRIBE or SETUP); when the last client leaves (TEARDOWN, a
//! closed connection, or a session timing out) the pipeline is stopped and the camera released;
//! the next client builds a new one. [`Restreamer::cameras_pulled`] tells which cameras are
//! pulled right now.
//!
//! # Authentication
//!
//! Deny by default: every request needs RTSP authentication as [`RestreamSettings::user`] with
//! [`RestreamSettings::password`] (stable credentials, as NVR configurations need); there is
//! no anonymous access and no per-camera permission. The scheme is Digest unless the site
//! asks for Basic ([`RtspAuth`]), never both. RTSP over TLS is not offered, so the stream
//! itself crosses the LAN in clear.
//!
//! # Failures
//!
//! A camera that is down, refuses its credentials, sends something other than H.264/H.265 or
//! sends no video within [`PREPARE_TIMEOUT`] fails only its own mount: the client gets `503
//! Service Unavailable`, the error is logged with the camera, the GStreamer element's path, its
//! message and debug text ([`RestreamError::Pipeline`]), and the next request tries the camera
//! again. A camera failing while watched (its connection drops, or it sends nothing for
//! [`STALL_TIMEOUT`] while playing) stops that media and its clients are disconnected, so NVRs
//! reconnect and get a fresh pull (or a 503). Each client connection is served on its own
//! thread, so a camera slow to answer never holds up the others' requests.
//!
//! # Cost
//!
//! `gatehouse-restream-cpu` (hil-tests) measures it: for one 1080p30 H.264 camera (4 Mbit/s,
//! a test pattern) read by one client, this process used 1.6 to 1.9 CPU s per minute in
//! passthrough and 12.7 to 13.2 CPU s per minute transcoding to 854x480 at 800 kbit/s with
//! x264enc (two 60 s runs, debug build, 2-core x86-64 VM busy with other work). Real scenes
//! cost more to decode and encode than a test pattern.
//!
//! # Limits
//!
//! - The output size of a transcoded camera is fixed when its stream starts; a camera changing
//!   resolution mid-stream is not handled (untested; expect its media to fail and clients to
//!   reconnect).
//! - Unicast only (UDP or TCP to each client); no multicast, no RTSPS, no audio.
//! - One thread per connected RTSP client, plus GStreamer's streaming threads per pulled camera.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

pub use super::config::RtspAuth;
use gatehouse_protocol::DeviceId;
use gstreamer as gst;
use gstreamer::{glib, prelude::*};
use gstreamer_rtsp_server::{self as rtsp, prelude::*};

/// How long a camera may take, from the first client's request, to deliver video before the
/// request fails with 503.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a pulled camera may send nothing before its media is stopped and its clients
/// disconnected (they reconnect, and a new media asks the camera again).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often each media's watchdog looks at it.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);

/// The jitter buffer of the camera's RTP stream (`rtspsrc latency`), in milliseconds.
const CAMERA_LATENCY_MS: u32 = 200;

/// How long `rtspsrc` waits for the camera's TCP connection and RTSP answers.
const CAMERA_TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// The most decoded video waiting for the encoder before the oldest frames are dropped (ns).
const QUEUE_TIME_NS: u64 = 500_000_000;

/// The dynamic payload type of every served stream.
const PAYLOAD_TYPE: u32 = 96;

/// The role the server's one user has; every mount grants it access.
const VIEWER_ROLE: &str = "viewer";

/// The element in every media's launch line that this module fills in; gstreamer-rtsp-server
/// creates a stream for each pad it exposes (`dynpay` elements).
const DYNAMIC_PAYLOADER: &str = "dynpay0";

/// Where and for whom the server listens.
#[derive(Clone)]
pub struct RestreamSettings {
    /// Address and port; port 0 picks a free one ([`Restreamer::port`] tells which).
    pub listen: SocketAddr,
    /// The one user RTSP clients authenticate as.
    pub user: String,
    pub password: String,
    pub auth: RtspAuth,
}

impl fmt::Debug for RestreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestreamSettings")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &"***")
            .field("auth", &self.auth)
            .finish()
    }
}

/// One camera to re-stream.
#[derive(Clone)]
pub struct RestreamSource {
    /// Served at `/{camera}`.
    pub camera: DeviceId,
    /// Where the camera's stream is.
    pub url: StreamUrl,
    pub camera_user: Option<String>,
    pub camera_password: Option<String>,
    pub mode: RestreamMode,
}

impl fmt::Debug for RestreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestreamSource")
            .field("camera", &self.camera)
            .field("url", &self.url)
            .field("camera_user", &self.camera_user)
            .field(
                "camera_password",
                &self.camera_password.as_ref().map(|_| "***"),
            )
            .field("mode", &self.mode)
            .finish()
    }
}

/// Where a re-streamed camera's stream is: in the config, or found at run time (ONVIF).
#[derive(Clone)]
pub enum StreamUrl {
    /// The camera's `rtsp://` (or `rtsps://`) URL. User info in it (`rtsp://user:pass@host/`)
    /// is accepted, taken out of the URL and used as the camera credentials.
    Fixed(String),
    /// Filled in by whoever finds it (the camera's ONVIF client, [`DiscoveredUrl::set`]);
    /// until then a client asking for the camera gets 503.
    Discovered(Arc<DiscoveredUrl>),
}

impl fmt::Debug for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(url) => f.write_str(&redact_userinfo(url)),
            Self::Discovered(found) => match found.get() {
                Some(url) => write!(f, "{} (discovered)", redact_userinfo(&url)),
                None => f.write_str("(not discovered yet)"),
            },
        }
    }
}

/// A stream URL found at run time.
#[derive(Debug, Default)]
pub struct DiscoveredUrl(std::sync::RwLock<Option<String>>);

impl DiscoveredUrl {
    pub fn set(&self, url: String) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(url);
    }

    pub fn get(&self) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What a mount serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestreamMode {
    /// The camera's H.264 or H.265 as it comes, repacketised.
    Passthrough,
    /// Decoded and encoded again as H.264 of `height` lines at `bitrate_kbps`, for an uplink.
    Transcode { height: u32, bitrate_kbps: u32 },
}

/// Why the server could not start, or why a camera's media failed.
#[derive(Debug, thiserror::Error)]
pub enum RestreamError {
    #[error("the re-streaming settings are not valid: {}", .problems.join("; "))]
    InvalidSettings { problems: Vec<String> },
    #[error("initialising GStreamer: {0}")]
    Init(#[source] glib::Error),
    #[error(
        "the GStreamer element `{element}` is missing ({needed_for}); install the GStreamer plugin that provides it"
    )]
    MissingElement {
        element: &'static str,
        needed_for: String,
    },
    #[error(
        "camera {camera}: no H.264 encoder is installed for transcoding (looked for {})",
        ENCODER_PREFERENCE.iter().map(|encoder| encoder.factory).collect::<Vec<_>>().join(", ")
    )]
    NoEncoder { camera: DeviceId },
    #[error("listening for RTSP on {listen}: {reason}")]
    Listen { listen: SocketAddr, reason: String },
    #[error("starting the RTSP server thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A camera's pipeline failed (logged, not returned: it happens while serving).
    #[error("camera {camera}: {element}: {message}{}", .debug.as_ref().map(|debug| format!(" ({debug})")).unwrap_or_default())]
    Pipeline {
        camera: DeviceId,
        /// The GStreamer path of the element that failed (`/GstPipeline:media-pipeline/...`).
        element: String,
        message: String,
        debug: Option<String>,
    },
}

/// A running RTSP re-streaming server; stopped by [`Restreamer::stop`] or on drop.
pub struct Restreamer {
    port: u16,
    host: String,
    encoder: Option<&'static str>,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    pulled: Arc<Mutex<BTreeMap<DeviceId, usize>>>,
}

impl fmt::Debug for Restreamer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restreamer")
            .field("port", &self.port)
            .field("host", &self.host)
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

impl Restreamer {
    /// Checks the settings (all problems at once), then listens on its own thread with its own
    /// glib main context. Cameras are not contacted until a client asks for them.
    pub fn start(
        settings: &RestreamSettings,
        sources: &[RestreamSource],
    ) -> Result<Self, RestreamError> {
        let cameras = validate(settings, sources)?;
        gst::init().map_err(RestreamError::Init)?;
        check_elements(sources)?;
        let encoder = match sources
            .iter()
            .find(|source| source.mode != RestreamMode::Passthrough)
        {
            Some(source) => {
                let spec = choose_encoder(|name| gst::ElementFactory::find(name).is_some())
                    .ok_or_else(|| RestreamError::NoEncoder {
                        camera: source.camera.clone(),
                    })?;
                tracing::info!(
                    encoder = spec.factory,
                    hardware = spec.hardware,
                    "restream: H.264 encoder for transcoded cameras"
                );
                Some(spec)
            }
            None => None,
        };

        let pulled = Arc::new(Mutex::new(BTreeMap::new()));
        let context = glib::MainContext::new();
        let plans: Vec<Arc<CameraPlan>> = cameras
            .into_iter()
            .map(|camera| {
                Arc::new(CameraPlan::new(
                    camera,
                    encoder,
                    Arc::clone(&pulled),
                    context.clone(),
                ))
            })
            .collect();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let (ready, started) = mpsc::sync_channel(1);
        let server_settings = settings.clone();
        let server_loop = main_loop.clone();
        let server_context = context.clone();
        let thread = thread::Builder::new()
            .name("restream".to_owned())
            .spawn(move || {
                let context = server_context;
                let ran = context.with_thread_default(|| {
                    serve(&context, &server_loop, &server_settings, plans, &ready);
                });
                if let Err(error) = ran {
                    let _ = ready.send(Err(RestreamError::Listen {
                        listen: server_settings.listen,
                        reason: format!("the server's main context is taken: {error}"),
                    }));
                }
            })
            .map_err(RestreamError::Thread)?;
        let port = match started.recv() {
            Ok(Ok(port)) => port,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(RestreamError::Listen {
                    listen: settings.listen,
                    reason: "the server thread stopped before listening".to_owned(),
                });
            }
        };
        let host = match settings.listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        tracing::info!(
            port,
            cameras = sources.len(),
            "restream: RTSP server listening"
        );
        Ok(Self {
            port,
            host,
            encoder: encoder.map(|spec| spec.factory),
            context,
            main_loop,
            thread: Some(thread),
            pulled,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://HOST:PORT/{camera}`, without credentials. HOST is the listen address, or the
    /// loopback address when listening on all of them.
    pub fn url(&self, camera: &DeviceId) -> String {
        format!("rtsp://{}:{}/{}", self.host, self.port, camera.as_str())
    }

    /// The H.264 encoder element transcoded cameras use (`None` when none is transcoded).
    pub fn encoder(&self) -> Option<&'static str> {
        self.encoder
    }

    /// The cameras pulled right now (some client is watching them).
    pub fn cameras_pulled(&self) -> Vec<DeviceId> {
        let pulled = self.pulled.lock().unwrap_or_else(PoisonError::into_inner);
        pulled
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(camera, _)| camera.clone())
            .collect()
    }

    /// Stops listening, disconnects every client and releases every camera.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            // Quit from inside the loop: a quit() that came before run() would be forgotten.
            let main_loop = self.main_loop.clone();
            self.context.invoke(move || main_loop.quit());
            if thread.join().is_err() {
                tracing::error!("restream: the RTSP server thread panicked");
            }
            tracing::info!(port = self.port, "restream: RTSP server stopped");
        }
    }
}

impl Drop for Restreamer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The server thread: sets up, reports the port (or the error) on `ready`, runs the loop until
/// [`Restreamer::shutdown`] quits it, then closes clients and sessions.
fn serve(
    context: &glib::MainContext,
    main_loop: &glib::MainLoop,
    settings: &RestreamSettings,
    plans: Vec<Arc<CameraPlan>>,
    ready: &mpsc::SyncSender<Result<u16, RestreamError>>,
) {
    let listen_error = |reason: String| RestreamError::Listen {
        listen: settings.listen,
        reason,
    };
    let server = rtsp::RTSPServer::new();
    server.set_address(&settings.listen.ip().to_string());
    server.set_service(&settings.listen.port().to_string());
    // A client whose camera is slow to answer blocks its thread while the media prepares; one
    // thread per client keeps the others answered.
    if let Some(pool) = server.thread_pool() {
        pool.set_max_threads(-1);
    }
    let auth = rtsp::RTSPAuth::new();
    let token = rtsp::RTSPToken::builder()
        .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, VIEWER_ROLE)
        .build();
    // One scheme only: a server offering Basic beside Digest lets a client (or a man in the
    // middle rewriting the challenge) pick the one that sends the password in clear.
    match settings.auth {
        RtspAuth::Digest => {
            auth.set_supported_methods(rtsp::gst_rtsp::RTSPAuthMethod::Digest);
            auth.add_digest(&settings.user, &settings.password, &token);
        }
        RtspAuth::Basic => {
            auth.set_supported_methods(rtsp::gst_rtsp::RTSPAuthMethod::Basic);
            auth.add_basic(
                rtsp::RTSPAuth::make_basic(&settings.user, &settings.password).as_str(),
                &token,
            );
        }
    }
    server.set_auth(Some(&auth));
    let Some(mounts) = server.mount_points() else {
        let _ = ready.send(Err(listen_error(
            "the RTSP server has no mount points".to_owned(),
        )));
        return;
    };
    for plan in plans {
        let path = format!("/{}", plan.camera.as_str());
        let _ = plan.server.set(server.downgrade());
        mounts.add_factory(&path, media_factory(plan));
    }
    let listening = match server.attach(Some(context)) {
        Ok(id) => id,
        Err(error) => {
            let _ = ready.send(Err(listen_error(format!(
                "{error} (is the address local and the port free?)"
            ))));
            return;
        }
    };
    // Removes sessions whose client vanished without TEARDOWN once they time out, which
    // releases their camera.
    let session_cleanup = server.session_pool().map(|pool| {
        let watch = pool.create_watch(None, glib::Priority::DEFAULT, |pool| {
            pool.cleanup();
            glib::ControlFlow::Continue
        });
        watch.attach(Some(context));
        watch
    });
    let port = u16::try_from(server.bound_port()).unwrap_or(0);
    if ready.send(Ok(port)).is_err() {
        return;
    }
    main_loop.run();

    if let Some(source) = context.find_source_by_id(&listening) {
        source.destroy();
    }
    if let Some(watch) = session_cleanup {
        watch.destroy();
    }
    server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
    if let Some(pool) = server.session_pool() {
        pool.filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
    }
}

/// The factory of one mount: shared, on demand, only for the viewer role.
fn media_factory(plan: Arc<CameraPlan>) -> rtsp::RTSPMediaFactory {
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(&format!("( bin name={DYNAMIC_PAYLOADER} )"));
    factory.set_shared(true);
    factory.add_role_from_structure(
        &gst::Structure::builder(VIEWER_ROLE)
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
            .build(),
    );
    factory.connect_media_configure(move |_, media| plan.configure(media));
    factory
}

/// Everything needed to build one camera's media, shared by its callbacks.
struct CameraPlan {
    camera: DeviceId,
    location: Location,
    user: Option<String>,
    password: Option<String>,
    mode: RestreamMode,
    encoder: Option<&'static EncoderSpec>,
    secrets: Secrets,
    pulled: Arc<Mutex<BTreeMap<DeviceId, usize>>>,
    /// The server's main context, where clients are disconnected.
    context: glib::MainContext,
    /// Set once the server exists.
    server: OnceLock<glib::WeakRef<rtsp::RTSPServer>>,
}

/// The camera URL without user info, or where it will be found.
enum Location {
    Fixed(String),
    Discovered(Arc<DiscoveredUrl>),
}

/// A camera as [`validate`] leaves it.
struct CheckedCamera {
    camera: DeviceId,
    location: Location,
    user: Option<String>,
    password: Option<String>,
    mode: RestreamMode,
}

impl CameraPlan {
    fn new(
        checked: CheckedCamera,
        encoder: Option<&'static EncoderSpec>,
        pulled: Arc<Mutex<BTreeMap<DeviceId, usize>>>,
        context: glib::MainContext,
    ) -> Self {
        let secrets = Secrets(checked.password.iter().cloned().collect());
        Self {
            camera: checked.camera,
            location: checked.location,
            user: checked.user,
            password: checked.password,
            mode: checked.mode,
            encoder: match checked.mode {
                RestreamMode::Passthrough => None,
                RestreamMode::Transcode { .. } => encoder,
            },
            secrets,
            pulled,
            context,
            server: OnceLock::new(),
        }
    }

    /// Called by the factory for each new media, before it is prepared.
    fn configure(self: &Arc<Self>, media: &rtsp::RTSPMedia) {
        let element = media.element();
        let bin = element
            .downcast_ref::<gst::Bin>()
            .and_then(|bin| bin.by_name(DYNAMIC_PAYLOADER))
            .and_then(|element| element.downcast::<gst::Bin>().ok());
        let Some(bin) = bin else {
            tracing::error!(camera = %self.camera, "restream: the media has no {DYNAMIC_PAYLOADER} bin");
            return;
        };
        let state = Arc::new(MediaState::new());
        let pipeline = element
            .parent()
            .and_then(|parent| parent.downcast::<gst::Pipeline>().ok());
        let Some(pipeline) = pipeline else {
            tracing::error!(camera = %self.camera, "restream: the media has no pipeline");
            return;
        };
        self.watch_bus(media, &pipeline, &state);
        self.count_pulls(media, &state);
        if let Err(reason) = self.build_source(&bin) {
            // Posted by the watchdog once the media prepares: an error posted before that made
            // GStreamer 1.22 unprepare the media twice and abort (`finish_unprepare: assertion
            // failed: (handlers != NULL)`).
            tracing::error!(camera = %self.camera, %reason, "restream: cannot build the camera's media");
            *state.failure.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(format!("camera {}: {reason}", self.camera));
        }
        self.watch_flow(media, &bin, &pipeline, &state);
    }

    /// `rtspsrc` for the camera; the rest is built when its video pad appears.
    fn build_source(self: &Arc<Self>, bin: &gst::Bin) -> Result<(), String> {
        let (location, url_user, url_password) = match &self.location {
            Location::Fixed(location) => (Some(location.clone()), None, None),
            Location::Discovered(found) => match found.get() {
                Some(url) => {
                    let (location, user, password) = split_userinfo(&url);
                    (Some(location), user, password)
                }
                None => (None, None, None),
            },
        };
        let source = make("rtspsrc")?;
        match &location {
            Some(location) => set(&source, "location", location)?,
            // An rtspsrc without a location fails as the media prepares ("No valid RTSP URL"),
            // so the client gets 503 through the same path as a camera that does not answer.
            // An error posted here, before the media prepares, made GStreamer 1.22 unprepare
            // it twice and abort (`finish_unprepare: assertion failed: (handlers != NULL)`).
            None => tracing::warn!(camera = %self.camera,
                "restream: its stream address is not known yet (ONVIF has not answered)"),
        }
        if let Some(user) = self.user.as_ref().or(url_user.as_ref()) {
            set(&source, "user-id", user)?;
        }
        if let Some(password) = self.password.as_ref().or(url_password.as_ref()) {
            set(&source, "user-pw", password)?;
        }
        set(&source, "latency", CAMERA_LATENCY_MS)?;
        set_from_str(&source, "protocols", "tcp")?;
        let timeout = u64::try_from(CAMERA_TCP_TIMEOUT.as_micros()).unwrap_or(u64::MAX);
        set(&source, "tcp-timeout", timeout)?;
        // Only the first video stream is set up with the camera.
        let chosen = Arc::new(AtomicU32::new(u32::MAX));
        source.connect("select-stream", false, move |args| {
            let number = args.get(1).and_then(|value| value.get::<u32>().ok());
            let is_video = args
                .get(2)
                .and_then(|value| value.get::<gst::Caps>().ok())
                .and_then(|caps| {
                    caps.structure(0)
                        .and_then(|s| s.get::<&str>("media").ok().map(|media| media == "video"))
                })
                .unwrap_or(false);
            let selected = match number {
                Some(number) if is_video => {
                    match chosen.compare_exchange(
                        u32::MAX,
                        number,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(_) => true,
                        Err(first) => first == number,
                    }
                }
                _ => false,
            };
            Some(selected.to_value())
        });
        bin.add(&source).map_err(|error| error.to_string())?;
        let plan = Arc::clone(self);
        let weak_bin = bin.downgrade();
        source.connect_pad_added(move |_, pad| {
            let Some(bin) = weak_bin.upgrade() else {
                return;
            };
            let linked = match plan.mode {
                RestreamMode::Passthrough => plan.link_passthrough(&bin, pad),
                RestreamMode::Transcode {
                    height,
                    bitrate_kbps,
                } => plan.link_decoder(&bin, pad, height, bitrate_kbps),
            };
            if let Err(reason) = linked {
                bin.post_error_message(gst::error_msg!(
                    gst::StreamError::Format,
                    ("camera {}: {reason}", plan.camera)
                ));
            }
        });
        Ok(())
    }

    /// Passthrough: the depayloader, parser and payloader of the codec the camera announced.
    fn link_passthrough(&self, bin: &gst::Bin, pad: &gst::Pad) -> Result<(), String> {
        let caps = pad
            .current_caps()
            .ok_or("the camera's stream has no caps")?;
        let encoding = caps
            .structure(0)
            .and_then(|s| s.get::<&str>("encoding-name").ok())
            .unwrap_or("")
            .to_ascii_uppercase();
        let (names, codec) = match encoding.as_str() {
            "H264" => (["rtph264depay", "h264parse", "rtph264pay"], "H.264"),
            "H265" => (["rtph265depay", "h265parse", "rtph265pay"], "H.265"),
            other => {
                return Err(format!(
                    "the camera sends {other:?}; passthrough serves H264 and H265 only (use transcode)"
                ));
            }
        };
        let elements = names
            .iter()
            .map(|name| make(name))
            .collect::<Result<Vec<_>, _>>()?;
        let [depay, _, pay] = elements.as_slice() else {
            return Err("internal: expected three elements".to_owned());
        };
        set(pay, "config-interval", -1_i32)?;
        set(pay, "pt", PAYLOAD_TYPE)?;
        bin.add_many(&elements).map_err(|error| error.to_string())?;
        gst::Element::link_many(&elements).map_err(|error| error.to_string())?;
        for element in &elements {
            element
                .sync_state_with_parent()
                .map_err(|error| error.to_string())?;
        }
        let sink = depay
            .static_pad("sink")
            .ok_or("the depayloader has no sink pad")?;
        pad.link(&sink)
            .map_err(|error| format!("linking the camera's stream: {error:?}"))?;
        tracing::info!(camera = %self.camera, codec, "restream: passthrough started");
        expose(bin, pay)
    }

    /// Transcode, first half: decodebin; the encoder follows once the decoded size is known.
    fn link_decoder(
        self: &Arc<Self>,
        bin: &gst::Bin,
        pad: &gst::Pad,
        height: u32,
        bitrate_kbps: u32,
    ) -> Result<(), String> {
        let decoder = make("decodebin")?;
        if let Some(decoder) = decoder.downcast_ref::<gst::Bin>() {
            decoder.connect_deep_element_added(|_, _, element| no_qos(element));
        }
        bin.add(&decoder).map_err(|error| error.to_string())?;
        let plan = Arc::clone(self);
        let weak_bin = bin.downgrade();
        decoder.connect_pad_added(move |_, pad| {
            let Some(bin) = weak_bin.upgrade() else {
                return;
            };
            if let Err(reason) = plan.link_encoder(&bin, pad, height, bitrate_kbps) {
                bin.post_error_message(gst::error_msg!(
                    gst::StreamError::Encode,
                    ("camera {}: {reason}", plan.camera)
                ));
            }
        });
        decoder
            .sync_state_with_parent()
            .map_err(|error| error.to_string())?;
        let sink = decoder
            .static_pad("sink")
            .ok_or("decodebin has no sink pad")?;
        pad.link(&sink)
            .map_err(|error| format!("linking the camera's stream to decodebin: {error:?}"))?;
        Ok(())
    }

    /// Transcode, second half: scale, I420, encode, payload.
    fn link_encoder(
        &self,
        bin: &gst::Bin,
        pad: &gst::Pad,
        height: u32,
        bitrate_kbps: u32,
    ) -> Result<(), String> {
        let caps = pad.current_caps().ok_or("the decoded video has no caps")?;
        let Some(structure) = caps.structure(0) else {
            return Err("the decoded video has empty caps".to_owned());
        };
        if !structure.name().starts_with("video/x-raw") {
            // Not video (the camera's only stream is video, but be safe): leave it unlinked.
            return Ok(());
        }
        let source_width = structure.get::<i32>("width").map_err(|e| e.to_string())?;
        let source_height = structure.get::<i32>("height").map_err(|e| e.to_string())?;
        let aspect = structure
            .get::<gst::Fraction>("pixel-aspect-ratio")
            .unwrap_or_else(|_| gst::Fraction::new(1, 1));
        let (width, height) = scaled_size(
            u32::try_from(source_width).unwrap_or(0),
            u32::try_from(source_height).unwrap_or(0),
            (aspect.numer(), aspect.denom()),
            height,
        )
        .ok_or_else(|| format!("cannot scale a {source_width}x{source_height} picture"))?;
        let Some(spec) = self.encoder else {
            return Err("no H.264 encoder was chosen".to_owned());
        };

        let queue = make("queue")?;
        // Half a second of decoded frames: enough for the encoder's bursts (3 frames dropped
        // three quarters of them), little enough to bound the delay added when it falls behind.
        set(&queue, "max-size-buffers", 0_u32)?;
        set(&queue, "max-size-bytes", 0_u32)?;
        set(&queue, "max-size-time", QUEUE_TIME_NS)?;
        set_from_str(&queue, "leaky", "downstream")?;
        let scale = make("videoscale")?;
        no_qos(&scale);
        let scaled = capsfilter(
            gst::Caps::builder("video/x-raw")
                .field("width", i32::try_from(width).unwrap_or(i32::MAX))
                .field("height", i32::try_from(height).unwrap_or(i32::MAX))
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        )?;
        let convert = make("videoconvert")?;
        no_qos(&convert);
        let i420 = capsfilter(
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )?;
        let encoder = make(spec.factory)?;
        spec.configure(&encoder, bitrate_kbps)?;
        let profile = match spec.profile {
            Some(profile) => Some(capsfilter(
                gst::Caps::builder("video/x-h264")
                    .field("profile", profile)
                    .build(),
            )?),
            None => None,
        };
        let parse = make("h264parse")?;
        let pay = make("rtph264pay")?;
        set(&pay, "config-interval", -1_i32)?;
        set(&pay, "pt", PAYLOAD_TYPE)?;
        let mut elements = vec![queue, scale, scaled, convert, i420, encoder];
        elements.extend(profile);
        elements.extend([parse, pay.clone()]);
        bin.add_many(&elements).map_err(|error| error.to_string())?;
        gst::Element::link_many(&elements).map_err(|error| error.to_string())?;
        for element in &elements {
            element
                .sync_state_with_parent()
                .map_err(|error| error.to_string())?;
        }
        let sink = elements
            .first()
            .and_then(|queue| queue.static_pad("sink"))
            .ok_or("the queue has no sink pad")?;
        pad.link(&sink)
            .map_err(|error| format!("linking the decoded video: {error:?}"))?;
        tracing::info!(
            camera = %self.camera,
            source = %format!("{source_width}x{source_height}"),
            output = %format!("{width}x{height}"),
            bitrate_kbps,
            encoder = spec.factory,
            "restream: transcoding started"
        );
        expose(bin, &pay)
    }

    /// Logs the pipeline's errors and warnings (scrubbed), and stops a media that fails after
    /// it was prepared so that the next client starts afresh (its clients disconnected; the
    /// error itself goes no further). Errors while it prepares go on to the media, which
    /// fails the client's request with 503.
    fn watch_bus(
        self: &Arc<Self>,
        media: &rtsp::RTSPMedia,
        pipeline: &gst::Pipeline,
        state: &Arc<MediaState>,
    ) {
        let Some(bus) = pipeline.bus() else {
            return;
        };
        let plan = Arc::clone(self);
        let camera = self.camera.clone();
        let secrets = self.secrets.clone();
        let state = Arc::clone(state);
        let weak_media = media.downgrade();
        let weak_pipeline = pipeline.downgrade();
        bus.set_sync_handler(move |_, message| {
            // Closing the camera's session while the media stops often fails (the camera has
            // already gone, or hangs up first): not worth a warning.
            let stopping = weak_pipeline
                .upgrade()
                .is_some_and(|pipeline| pipeline.pending_state() == gst::State::Null);
            match message.view() {
                gst::MessageView::Error(error) if stopping => {
                    tracing::debug!(
                        camera = %camera,
                        error = %secrets.scrub(&error.error().to_string()),
                        "restream: error while stopping the camera's media"
                    );
                }
                gst::MessageView::Error(error) => {
                    let failure = RestreamError::Pipeline {
                        camera: camera.clone(),
                        element: message
                            .src()
                            .map(|src| src.path_string().to_string())
                            .unwrap_or_default(),
                        message: secrets.scrub(&error.error().to_string()),
                        debug: error.debug().map(|debug| secrets.scrub(&debug)),
                    };
                    tracing::warn!(camera = %camera, error = %failure, "restream: camera media failed");
                    if state.prepared.load(Ordering::SeqCst) {
                        // Its clients are disconnected, which stops the media; the media must
                        // not see the error too: its own error handling and the clients'
                        // teardown both unprepared it, and GStreamer 1.22 aborted
                        // (`finish_unprepare: assertion failed: (handlers != NULL)`, one run in
                        // 16 of a connection reset while watched).
                        plan.drop_media(&weak_media);
                        return gst::BusSyncReply::Drop;
                    }
                }
                gst::MessageView::Warning(warning) => {
                    tracing::warn!(
                        camera = %camera,
                        element = %message.src().map(|src| src.path_string().to_string()).unwrap_or_default(),
                        warning = %secrets.scrub(&warning.error().to_string()),
                        debug = %warning.debug().map(|debug| secrets.scrub(&debug)).unwrap_or_default(),
                        "restream: camera media warning"
                    );
                }
                _ => {}
            }
            gst::BusSyncReply::Pass
        });
    }

    /// Keeps [`Restreamer::cameras_pulled`] current and logs when a camera is pulled.
    fn count_pulls(&self, media: &rtsp::RTSPMedia, state: &Arc<MediaState>) {
        let (camera, pulled, flag) = (
            self.camera.clone(),
            Arc::clone(&self.pulled),
            Arc::clone(state),
        );
        media.connect_prepared(move |_| {
            if !flag.prepared.swap(true, Ordering::SeqCst) {
                let mut pulled = pulled.lock().unwrap_or_else(PoisonError::into_inner);
                *pulled.entry(camera.clone()).or_insert(0) += 1;
                tracing::info!(camera = %camera, "restream: pulling the camera");
            }
        });
        let (camera, pulled, flag) = (
            self.camera.clone(),
            Arc::clone(&self.pulled),
            Arc::clone(state),
        );
        media.connect_unprepared(move |_| {
            flag.ended.store(true, Ordering::SeqCst);
            if flag.prepared.swap(false, Ordering::SeqCst) {
                let mut pulled = pulled.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(count) = pulled.get_mut(&camera) {
                    *count = count.saturating_sub(1);
                }
                tracing::info!(camera = %camera, "restream: camera released");
            }
        });
    }

    /// Disconnects the clients watching `media` and stops it, so that they reconnect and
    /// the next client starts afresh (a camera that failed or stalled while watched).
    fn drop_media(&self, media: &glib::WeakRef<rtsp::RTSPMedia>) {
        let Some(server) = self.server.get().cloned() else {
            return;
        };
        let media = media.clone();
        // Clients live on the server's context; unpreparing sets the pipeline to NULL, which
        // must not happen on a streaming thread (this may be one) nor block the server.
        self.context.invoke(move || {
            let (Some(server), Some(media)) = (server.upgrade(), media.upgrade()) else {
                return;
            };
            let disconnected = server.client_filter(Some(&mut |_, client| {
                let mut watching = false;
                client.session_filter(Some(&mut |_, session| {
                    session.filter(Some(&mut |_, session_media| {
                        watching |= session_media.media().as_ref() == Some(&media);
                        rtsp::RTSPFilterResult::Keep
                    }));
                    rtsp::RTSPFilterResult::Keep
                }));
                if watching {
                    rtsp::RTSPFilterResult::Remove
                } else {
                    rtsp::RTSPFilterResult::Keep
                }
            }));
            tracing::info!(
                clients = disconnected.len(),
                "restream: disconnected the clients of a failed camera media"
            );
            // Closing its clients' sessions unprepares the shared media. Unpreparing it here
            // as well (from any thread) raced with that and aborted the process in GStreamer
            // 1.22 (`finish_unprepare: assertion failed: (handlers != NULL)`), so the server
            // alone stops it.
            drop(media);
        });
    }

    /// Fails the media when the camera has not delivered video within [`PREPARE_TIMEOUT`] of
    /// the first request (the waiting client gets 503 rather than waiting forever), or stops
    /// sending it for [`STALL_TIMEOUT`] while the media plays (the error disconnects its
    /// clients: `CameraPlan::drop_media`).
    ///
    /// (Not by asking the media: `gst_rtsp_media_get_status` blocks while it prepares.)
    fn watch_flow(
        self: &Arc<Self>,
        media: &rtsp::RTSPMedia,
        bin: &gst::Bin,
        pipeline: &gst::Pipeline,
        state: &Arc<MediaState>,
    ) {
        let flowing = Arc::clone(state);
        bin.connect_pad_added(move |_, pad| {
            let flowing = Arc::clone(&flowing);
            pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                move |_, _| {
                    flowing.saw_data();
                    gst::PadProbeReturn::Ok
                },
            );
        });
        let camera = self.camera.clone();
        let (weak_bin, weak_pipeline) = (bin.downgrade(), pipeline.downgrade());
        let (plan, weak_media) = (Arc::clone(self), media.downgrade());
        let state = Arc::clone(state);
        let spawned = thread::Builder::new()
            .name("restream-watchdog".to_owned())
            .spawn(move || {
                loop {
                    thread::sleep(WATCHDOG_PERIOD);
                    let (Some(bin), Some(pipeline)) = (weak_bin.upgrade(), weak_pipeline.upgrade())
                    else {
                        return;
                    };
                    if state.ended.load(Ordering::SeqCst) {
                        return;
                    }
                    let failure = state
                        .failure
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    let reason = if failure.is_some() {
                        failure
                    } else if !state.prepared.load(Ordering::SeqCst) {
                        (state.started.elapsed() > PREPARE_TIMEOUT).then(|| {
                            format!(
                                "camera {camera} delivered no video within {} s",
                                PREPARE_TIMEOUT.as_secs()
                            )
                        })
                    } else if pipeline.current_state() != gst::State::Playing {
                        // Paused by its clients: no data is expected.
                        state.saw_data();
                        None
                    } else {
                        if state.since_data() > STALL_TIMEOUT {
                            // Its clients are disconnected, which stops the media. Not by
                            // an error on the bin: the media's own error handling and the
                            // clients' teardown both unprepared it, which aborted the
                            // process in GStreamer 1.22 (`finish_unprepare: assertion
                            // failed: (handlers != NULL)`), about one run in three.
                            tracing::warn!(camera = %camera, stalled_for = STALL_TIMEOUT.as_secs(),
                                "restream: camera sent no video while watched; disconnecting its clients");
                            plan.drop_media(&weak_media);
                            return;
                        }
                        None
                    };
                    if let Some(reason) = reason {
                        bin.post_error_message(gst::error_msg!(
                            gst::ResourceError::Read,
                            ("{reason}")
                        ));
                        return;
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(camera = %self.camera, %error, "restream: no watchdog for the camera media");
        }
    }
}

/// What the callbacks of one media know of it.
#[derive(Debug)]
struct MediaState {
    /// Between its `prepared` and `unprepared` signals: the camera is pulled.
    prepared: AtomicBool,
    /// After its `unprepared` signal (a failed preparation ends this way too).
    ended: AtomicBool,
    /// When the media was configured.
    started: Instant,
    /// When the last buffer left for the clients, in milliseconds since `started`.
    last_data_ms: AtomicU64,
    /// Why the media could not be built, for the watchdog to fail it with.
    failure: Mutex<Option<String>>,
}

impl MediaState {
    fn new() -> Self {
        Self {
            prepared: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            started: Instant::now(),
            last_data_ms: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn saw_data(&self) {
        self.last_data_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    fn since_data(&self) -> Duration {
        let last = self.last_data_ms.load(Ordering::SeqCst);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

/// Exposes `payloader`'s source pad on the dynamic-payloader bin, which makes
/// gstreamer-rtsp-server create the stream, and tells it no other stream follows.
fn expose(bin: &gst::Bin, payloader: &gst::Element) -> Result<(), String> {
    let target = payloader
        .static_pad("src")
        .ok_or("the payloader has no source pad")?;
    let ghost = gst::GhostPad::with_target(&target).map_err(|error| error.to_string())?;
    ghost.set_active(true).map_err(|error| error.to_string())?;
    bin.add_pad(&ghost).map_err(|error| error.to_string())?;
    bin.no_more_pads();
    Ok(())
}

/// Turns off QoS frame dropping, so that the leaky queue before the encoder is the one place
/// where frames are dropped.
fn no_qos(element: &gst::Element) {
    if element.find_property("qos").is_some() {
        let _ = set(element, "qos", false);
    }
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("the GStreamer element {factory} is missing"))
}

fn capsfilter(caps: gst::Caps) -> Result<gst::Element, String> {
    let filter = make("capsfilter")?;
    set(&filter, "caps", caps)?;
    Ok(filter)
}

/// Sets a property after checking it exists with that type (`set_property` would panic).
fn set(element: &gst::Element, name: &str, value: impl ToValue) -> Result<(), String> {
    let value = value.to_value();
    let spec = element
        .find_property(name)
        .ok_or_else(|| format!("{} has no property {name}", element_kind(element)))?;
    if !value.type_().is_a(spec.value_type()) {
        return Err(format!(
            "{}'s property {name} is a {}, not a {}",
            element_kind(element),
            spec.value_type(),
            value.type_()
        ));
    }
    element.set_property_from_value(name, &value);
    Ok(())
}

/// Sets a property from its textual form (enums and flags: `leaky=downstream`).
fn set_from_str(element: &gst::Element, name: &str, text: &str) -> Result<(), String> {
    let spec = element
        .find_property(name)
        .ok_or_else(|| format!("{} has no property {name}", element_kind(element)))?;
    let value = glib::Value::deserialize(text, spec.value_type()).map_err(|_| {
        format!(
            "{}'s property {name} does not take {text:?}",
            element_kind(element)
        )
    })?;
    element.set_property_from_value(name, &value);
    Ok(())
}

fn element_kind(element: &gst::Element) -> String {
    element
        .factory()
        .map(|factory| factory.name().to_string())
        .unwrap_or_else(|| element.name().to_string())
}

/// One H.264 encoder and how to set its bitrate.
#[derive(Debug)]
struct EncoderSpec {
    factory: &'static str,
    hardware: bool,
    bitrate: Bitrate,
    /// Caps after the encoder (`video/x-h264,profile=...`), when it negotiates a profile.
    profile: Option<&'static str>,
    /// Other properties, in textual form.
    extra: &'static [(&'static str, &'static str)],
}

#[derive(Debug)]
enum Bitrate {
    /// A property in kbit/s.
    Kbps(&'static str),
    /// A property in bit/s.
    Bps(&'static str),
    /// V4L2's `extra-controls` structure, in bit/s.
    V4l2Controls,
}

/// The H.264 encoders, best first (see the module documentation).
const ENCODER_PREFERENCE: &[EncoderSpec] = &[
    EncoderSpec {
        factory: "vaapih264enc",
        hardware: true,
        bitrate: Bitrate::Kbps("bitrate"),
        profile: None,
        extra: &[],
    },
    EncoderSpec {
        factory: "v4l2h264enc",
        hardware: true,
        bitrate: Bitrate::V4l2Controls,
        profile: None,
        extra: &[],
    },
    EncoderSpec {
        factory: "nvh264enc",
        hardware: true,
        bitrate: Bitrate::Kbps("bitrate"),
        profile: None,
        extra: &[],
    },
    EncoderSpec {
        factory: "omxh264enc",
        hardware: true,
        bitrate: Bitrate::Bps("target-bitrate"),
        profile: None,
        extra: &[],
    },
    EncoderSpec {
        factory: "x264enc",
        hardware: false,
        bitrate: Bitrate::Kbps("bitrate"),
        profile: Some("main"),
        extra: &[
            ("tune", "zerolatency"),
            ("speed-preset", "superfast"),
            ("key-int-max", "60"),
        ],
    },
    EncoderSpec {
        factory: "openh264enc",
        hardware: false,
        bitrate: Bitrate::Bps("bitrate"),
        profile: None,
        extra: &[],
    },
];

impl EncoderSpec {
    fn configure(&self, encoder: &gst::Element, bitrate_kbps: u32) -> Result<(), String> {
        for (name, value) in self.extra {
            set_from_str(encoder, name, value)?;
        }
        let bps = u64::from(bitrate_kbps) * 1000;
        match self.bitrate {
            Bitrate::Kbps(name) => set_from_str(encoder, name, &bitrate_kbps.to_string()),
            Bitrate::Bps(name) => set_from_str(encoder, name, &bps.to_string()),
            Bitrate::V4l2Controls => set_from_str(
                encoder,
                "extra-controls",
                &format!("controls,video_bitrate={bps}"),
            ),
        }
    }
}

/// The first encoder of [`ENCODER_PREFERENCE`] for which `exists` is true.
fn choose_encoder(exists: impl Fn(&str) -> bool) -> Option<&'static EncoderSpec> {
    ENCODER_PREFERENCE
        .iter()
        .find(|encoder| exists(encoder.factory))
}

/// The output size for a `width`x`height` picture of pixel aspect ratio `aspect` scaled to
/// `target_height` lines with square pixels: the width keeps the display aspect ratio and both
/// are even. A picture no taller than the target keeps its height.
fn scaled_size(
    width: u32,
    height: u32,
    aspect: (i32, i32),
    target_height: u32,
) -> Option<(u32, u32)> {
    let (numerator, denominator) = (u64::try_from(aspect.0).ok()?, u64::try_from(aspect.1).ok()?);
    if width == 0 || height == 0 || numerator == 0 || denominator == 0 {
        return None;
    }
    let out_height = u64::from(target_height.min(height) & !1).max(2);
    let display_width = u64::from(width) * numerator;
    // out_width = display_width * out_height / (height * denominator), rounded to even.
    let exact_twice = 2 * display_width * out_height / (u64::from(height) * denominator);
    let half = (exact_twice + 2) / 4;
    let out_width = (half * 2).max(2);
    Some((
        u32::try_from(out_width).ok()?,
        u32::try_from(out_height).ok()?,
    ))
}

/// Secrets to take out of anything logged about a camera.
#[derive(Debug, Clone, Default)]
struct Secrets(Vec<String>);

impl Secrets {
    /// `text` with URL user info and every secret replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut text = redact_userinfo(text);
        for secret in self.0.iter().filter(|secret| !secret.is_empty()) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }
}

/// `text` with the user info of every URL in it (`scheme://user:pass@host`) replaced by `***`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Splits `rtsp://user:pass@host/path` into the URL without user info and the decoded user
/// and password.
fn split_userinfo(url: &str) -> (String, Option<String>, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), None, None);
    };
    let (scheme, after) = url.split_at(scheme_end + 3);
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    let Some(user_end) = authority.rfind('@') else {
        return (url.to_owned(), None, None);
    };
    let userinfo = &authority[..user_end];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (percent_decode(user), Some(percent_decode(password))),
        None => (percent_decode(userinfo), None),
    };
    let location = format!(
        "{scheme}{}{}",
        &authority[user_end + 1..],
        &after[authority_end..]
    );
    (location, Some(user), password)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks everything before anything starts; names every problem.
fn validate(
    settings: &RestreamSettings,
    sources: &[RestreamSource],
) -> Result<Vec<CheckedCamera>, RestreamError> {
    let mut problems = Vec::new();
    if settings.user.is_empty() || settings.password.is_empty() {
        problems
            .push("the RTSP user and password must not be empty (no anonymous access)".to_owned());
    }
    if settings.user.contains(':') {
        problems.push(format!(
            "the RTSP user {:?} contains ':', which RTSP authentication cannot carry",
            settings.user
        ));
    }
    let mut seen = BTreeSet::new();
    let mut cameras = Vec::new();
    for source in sources {
        let camera = &source.camera;
        if !seen.insert(camera.clone()) {
            problems.push(format!("camera {camera} is listed twice"));
        }
        let (location, url_user, url_password) = match &source.url {
            StreamUrl::Fixed(url) => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("rtsp://") || lower.starts_with("rtsps://")) {
                    problems.push(format!(
                        "camera {camera}: the URL {:?} is not rtsp:// or rtsps://",
                        redact_userinfo(url)
                    ));
                }
                let (location, user, password) = split_userinfo(url);
                (Location::Fixed(location), user, password)
            }
            StreamUrl::Discovered(found) => (Location::Discovered(Arc::clone(found)), None, None),
        };
        if url_user.is_some() && source.camera_user.is_some() {
            problems.push(format!(
                "camera {camera}: credentials are both in the URL and in camera_user; give them once"
            ));
        }
        let user = source.camera_user.clone().or(url_user);
        let password = source.camera_password.clone().or(url_password);
        if password.is_some() && user.is_none() {
            problems.push(format!(
                "camera {camera}: a camera password needs a camera user"
            ));
        }
        if let RestreamMode::Transcode {
            height,
            bitrate_kbps,
        } = source.mode
        {
            if !(64..=4320).contains(&height) {
                problems.push(format!(
                    "camera {camera}: transcode height {height} is outside 64..=4320"
                ));
            }
            if !(64..=100_000).contains(&bitrate_kbps) {
                problems.push(format!(
                    "camera {camera}: transcode bitrate {bitrate_kbps} kbit/s is outside 64..=100000"
                ));
            }
        }
        cameras.push(CheckedCamera {
            camera: camera.clone(),
            location,
            user,
            password,
            mode: source.mode,
        });
    }
    if problems.is_empty() {
        Ok(cameras)
    } else {
        Err(RestreamError::InvalidSettings { problems })
    }
}

/// Fails early, naming the element, when a plugin the sources need is not installed.
fn check_elements(sources: &[RestreamSource]) -> Result<(), RestreamError> {
    let mut needed: Vec<(&'static str, &'static str)> = Vec::new();
    if !sources.is_empty() {
        needed.push(("rtspsrc", "pulling cameras"));
    }
    if sources.iter().any(|s| s.mode == RestreamMode::Passthrough) {
        for element in [
            "rtph264depay",
            "h264parse",
            "rtph264pay",
            "rtph265depay",
            "h265parse",
            "rtph265pay",
        ] {
            needed.push((element, "passthrough"));
        }
    }
    if sources.iter().any(|s| s.mode != RestreamMode::Passthrough) {
        for element in [
            "decodebin",
            "queue",
            "videoscale",
            "videoconvert",
            "capsfilter",
            "h264parse",
            "rtph264pay",
        ] {
            needed.push((element, "transcoding"));
        }
    }
    match needed
        .into_iter()
        .find(|(element, _)| gst::ElementFactory::find(element).is_none())
    {
        Some((element, needed_for)) => Err(RestreamError::MissingElement {
            element,
            needed_for: needed_for.to_owned(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RestreamSettings {
        RestreamSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            user: "nvr".to_owned(),
            password: "secret".to_owned(),
            auth: RtspAuth::Digest,
        }
    }

    fn source(camera: &str, url: &str) -> RestreamSource {
        RestreamSource {
            camera: DeviceId::new(camera).unwrap_or_else(|error| panic!("{camera}: {error}")),
            url: StreamUrl::Fixed(url.to_owned()),
            camera_user: None,
            camera_password: None,
            mode: RestreamMode::Passthrough,
        }
    }

    #[test]
    fn user_info_is_redacted_everywhere_in_a_text() {
        assert_eq!(
            redact_userinfo("opening rtsp://admin:hunter2@10.0.0.5:554/stream1 failed"),
            "opening rtsp://***@10.0.0.5:554/stream1 failed"
        );
        assert_eq!(redact_userinfo("rtsp://10.0.0.5/s"), "rtsp://10.0.0.5/s");
        assert_eq!(
            redact_userinfo("a rtsp://u@h b rtsps://u:p@h:1"),
            "a rtsp://***@h b rtsps://***@h:1"
        );
        let secrets = Secrets(vec!["hunter2".to_owned()]);
        assert_eq!(secrets.scrub("bad password hunter2"), "bad password ***");
    }

    #[test]
    fn user_info_moves_out_of_the_location_decoded() {
        assert_eq!(
            split_userinfo("rtsp://admin:p%40ss@cam:554/live?x=1"),
            (
                "rtsp://cam:554/live?x=1".to_owned(),
                Some("admin".to_owned()),
                Some("p@ss".to_owned())
            )
        );
        assert_eq!(
            split_userinfo("rtsp://cam/live"),
            ("rtsp://cam/live".to_owned(), None, None)
        );
    }

    #[test]
    fn scaling_keeps_the_aspect_ratio_with_even_sizes() {
        assert_eq!(scaled_size(1280, 720, (1, 1), 480), Some((854, 480)));
        assert_eq!(scaled_size(1920, 1080, (1, 1), 480), Some((854, 480)));
        assert_eq!(scaled_size(640, 480, (1, 1), 480), Some((640, 480)));
        assert_eq!(scaled_size(320, 240, (1, 1), 480), Some((320, 240)));
        // Anamorphic 720x576 with 16:15 pixels is 768x576 displayed.
        assert_eq!(scaled_size(720, 576, (16, 15), 480), Some((640, 480)));
        assert_eq!(scaled_size(0, 720, (1, 1), 480), None);
    }

    #[test]
    fn hardware_encoders_come_before_software_ones() {
        let chosen = choose_encoder(|name| name == "x264enc" || name == "v4l2h264enc");
        assert_eq!(chosen.map(|spec| spec.factory), Some("v4l2h264enc"));
        let chosen = choose_encoder(|name| name == "x264enc" || name == "openh264enc");
        assert_eq!(chosen.map(|spec| spec.factory), Some("x264enc"));
        assert!(choose_encoder(|_| false).is_none());
    }

    #[test]
    fn every_problem_in_the_settings_is_named_at_once() {
        let mut bad = settings();
        bad.password.clear();
        let mut transcoded = source("cam.b", "http://cam/b");
        transcoded.mode = RestreamMode::Transcode {
            height: 10,
            bitrate_kbps: 0,
        };
        let sources = [
            source("cam.a", "rtsp://u:p@cam/a"),
            source("cam.a", "rtsp://cam/a2"),
            transcoded,
        ];
        let Err(RestreamError::InvalidSettings { problems }) = validate(&bad, &sources) else {
            panic!("expected invalid settings");
        };
        let text = problems.join("\n");
        for expected in [
            "no anonymous access",
            "cam.a is listed twice",
            "cam.b: the URL \"http://cam/b\"",
            "transcode height 10",
            "bitrate 0 kbit/s",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
        assert!(!text.contains(":p@"), "a camera password leaked: {text}");
    }

    #[test]
    fn the_server_handle_can_move_between_threads_and_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Restreamer>();
        shareable::<RestreamError>();
    }

    #[test]
    fn debug_output_hides_passwords() {
        let mut camera = source("cam.a", "rtsp://admin:hunter2@cam/a");
        camera.camera_password = Some("other-secret".to_owned());
        let text = format!("{:?} {camera:?}", settings());
        assert!(
            !text.contains("hunter2")
                && !text.contains("other-secret")
                && !text.contains("\"secret\"")
        );
    }
}

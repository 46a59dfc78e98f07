//! The agent's RTSP re-streaming (`gatehouse_edge::video::restream`) against real RTSP cameras
//! (`gatehouse-test-camera`), read back by a real client: `gst-discoverer-1.0`, whose text
//! output says the codec, profile and size of what it received.
//!
//! Needs `cargo build -p gatehouse-hil-tests --bin gatehouse-test-camera` and
//! gstreamer1.0-plugins-base-apps (for `gst-discoverer-1.0`).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use gatehouse_edge::video::restream::{
    DiscoveredUrl, RestreamMode, RestreamSettings, RestreamSource, Restreamer, RtspAuth,
    STALL_TIMEOUT, StreamUrl,
};
use gatehouse_hil_tests::test_camera::{CameraOptions, TestCamera};
use gatehouse_protocol::DeviceId;

const USER: &str = "nvr";
const PASSWORD: &str = "nvr-secret";

fn settings() -> RestreamSettings {
    RestreamSettings {
        listen: ([127, 0, 0, 1], 0).into(),
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
        auth: RtspAuth::Digest,
    }
}

fn camera_id(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap_or_else(|error| panic!("{id}: {error}"))
}

fn source(id: &str, camera: &TestCamera, mode: RestreamMode) -> RestreamSource {
    source_at(id, StreamUrl::Fixed(camera.url().to_owned()), mode)
}

fn source_at(id: &str, url: StreamUrl, mode: RestreamMode) -> RestreamSource {
    RestreamSource {
        camera: camera_id(id),
        url,
        camera_user: None,
        camera_password: None,
        mode,
    }
}

/// Everything every test logged, to check that no camera password ever shows.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes log lines to the test output and to [`LOGS`].
struct KeptLog;

impl std::io::Write for KeptLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        print!("{}", String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| KeptLog)
        .with_ansi(false)
        .with_env_filter("gatehouse_edge=debug")
        .try_init();
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// What `gst-discoverer-1.0 -v` saw of the first video stream.
#[derive(Debug)]
struct Discovered {
    /// `video/x-h264` or `video/x-h265`.
    media_type: String,
    profile: Option<String>,
    width: u32,
    height: u32,
}

/// The restreamer's URL for `camera` with credentials in it.
fn url_with(restreamer: &Restreamer, camera: &str, user: &str, password: &str) -> String {
    restreamer
        .url(&camera_id(camera))
        .replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
}

/// Runs `gst-discoverer-1.0 -v` on `url`; returns its whole output and whether it found video.
fn run_discoverer(url: &str) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let output = Command::new("gst-discoverer-1.0")
        .args(["-v", "-t", "15", url])
        .output()
        .context("running gst-discoverer-1.0 (apt-get install gstreamer1.0-plugins-base-apps)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((text, started.elapsed()))
}

fn discover(url: &str) -> anyhow::Result<Discovered> {
    let (text, _) = run_discoverer(url)?;
    parse_discovered(&text).with_context(|| format!("gst-discoverer-1.0 said:\n{text}"))
}

/// Reads the `video #N: video/x-h26X, ..., profile=(string)P, width=(int)W, height=(int)H`
/// line.
fn parse_discovered(text: &str) -> anyhow::Result<Discovered> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("video #"))
        .context("no video stream found")?;
    let caps = line.split_once(": ").map_or("", |(_, caps)| caps);
    let field = |name: &str| {
        caps.split(", ").find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.split_once(')').map_or(value, |(_, v)| v).to_owned())
        })
    };
    Ok(Discovered {
        media_type: caps.split(',').next().unwrap_or("").to_owned(),
        profile: field("profile"),
        width: field("width").context("no width")?.parse()?,
        height: field("height").context("no height")?.parse()?,
    })
}

/// Sends an RTSP DESCRIBE for `camera` and returns the answer's status code and how long it
/// took. With credentials it answers the server's challenge on the same connection, as
/// players do: Digest (RFC 2617, no `qop`, as gstreamer-rtsp-server asks) or Basic.
fn describe(
    restreamer: &Restreamer,
    camera: &str,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<(u16, Duration)> {
    let started = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", restreamer.port()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut answers = BufReader::new(stream.try_clone()?);
    let mut requests = stream;
    let url = restreamer.url(&camera_id(camera));
    let mut send = |cseq: u32, authorization: &str| {
        write!(
            requests,
            "DESCRIBE {url} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\n{authorization}\r\n"
        )
    };
    send(1, "")?;
    let (code, challenges) = read_answer(&mut answers)?;
    let Some((user, password)) = credentials.filter(|_| code == 401) else {
        return Ok((code, started.elapsed()));
    };
    let challenge = challenges.first().context("401 without a challenge")?;
    let authorization = if let Some(digest) = challenge.strip_prefix("Digest ") {
        let field = |name: &str| {
            digest.split(',').find_map(|part| {
                let (key, value) = part.trim().split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_owned())
            })
        };
        ensure!(field("qop").is_none(), "a qop challenge: {challenge}");
        let realm = field("realm").context("no realm")?;
        let nonce = field("nonce").context("no nonce")?;
        let secret = md5_hex(&format!("{user}:{realm}:{password}"));
        let request = md5_hex(&format!("DESCRIBE:{url}"));
        let response = md5_hex(&format!("{secret}:{nonce}:{request}"));
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{url}\", response=\"{response}\"\r\n"
        )
    } else {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {token}\r\n")
    };
    send(2, &authorization)?;
    let (code, _) = read_answer(&mut answers)?;
    Ok((code, started.elapsed()))
}

/// The schemes a server asks a client without credentials for (its `WWW-Authenticate`
/// headers).
fn challenges(restreamer: &Restreamer, camera: &str) -> anyhow::Result<Vec<String>> {
    let stream = TcpStream::connect(("127.0.0.1", restreamer.port()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut answers = BufReader::new(stream.try_clone()?);
    let mut requests = stream;
    write!(
        requests,
        "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        restreamer.url(&camera_id(camera))
    )?;
    let (code, challenges) = read_answer(&mut answers)?;
    ensure!(code == 401, "DESCRIBE without credentials got {code}");
    Ok(challenges)
}

/// Reads one RTSP answer: its status code and its `WWW-Authenticate` headers (the body, if
/// any, is skipped so that the connection can carry the next request).
fn read_answer(answers: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, Vec<String>)> {
    let mut status_line = String::new();
    answers.read_line(&mut status_line)?;
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an RTSP answer: {status_line:?}"))?;
    let mut challenges = Vec::new();
    let mut body = 0;
    loop {
        let mut line = String::new();
        answers.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            bail!("not an RTSP header: {line:?}");
        };
        if name.eq_ignore_ascii_case("WWW-Authenticate") {
            challenges.push(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("Content-Length") {
            body = value.trim().parse()?;
        }
    }
    std::io::copy(&mut answers.take(body), &mut std::io::sink())?;
    Ok((code, challenges))
}

fn md5_hex(text: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Waits until the restreamer has released every camera.
fn wait_released(restreamer: &Restreamer) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !restreamer.cameras_pulled().is_empty() {
        if Instant::now() > deadline {
            bail!(
                "cameras still pulled 10 s after the client left: {:?}",
                restreamer.cameras_pulled()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn passthrough_h264_keeps_the_cameras_picture_and_pulls_only_on_demand() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source("cam.lobby", &camera, RestreamMode::Passthrough)],
    )?;
    ensure!(
        restreamer.cameras_pulled().is_empty(),
        "pulled before any client asked"
    );
    let url = url_with(&restreamer, "cam.lobby", USER, PASSWORD);

    // Two clients at once share one pull of the camera.
    let second_url = url.clone();
    let second = std::thread::spawn(move || discover(&second_url));
    let seen = discover(&url)?;
    let seen_too = second
        .join()
        .map_err(|_| anyhow::anyhow!("the second client panicked"))??;
    for seen in [&seen, &seen_too] {
        assert_eq!(seen.media_type, "video/x-h264", "{seen:?}");
        assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
        assert_eq!(
            seen.profile.as_deref(),
            Some("constrained-baseline"),
            "{seen:?}"
        );
    }
    wait_released(&restreamer)?;

    // A mount that is a prefix of the camera id, or another id, is not served.
    let (text, _) = run_discoverer(&url.replace("/cam.lobby", "/cam"))?;
    ensure!(
        parse_discovered(&text).is_err(),
        "/cam served something: {text}"
    );
    restreamer.stop();
    Ok(())
}

#[test]
fn passthrough_h265_stays_h265() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions {
        codec: "h265",
        ..CameraOptions::default()
    })?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source("cam.yard", &camera, RestreamMode::Passthrough)],
    )?;
    let seen = discover(&url_with(&restreamer, "cam.yard", USER, PASSWORD))?;
    assert_eq!(seen.media_type, "video/x-h265", "{seen:?}");
    assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
    Ok(())
}

#[test]
fn transcode_gives_480_lines_of_h264_that_players_accept() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions {
        width: 1280,
        height: 720,
        bitrate_kbps: 2000,
        ..CameraOptions::default()
    })?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source(
            "cam.gate",
            &camera,
            RestreamMode::Transcode {
                height: 480,
                bitrate_kbps: 600,
            },
        )],
    )?;
    assert!(restreamer.encoder().is_some());
    let seen = discover(&url_with(&restreamer, "cam.gate", USER, PASSWORD))?;
    assert_eq!(seen.media_type, "video/x-h264", "{seen:?}");
    assert_eq!((seen.width, seen.height), (854, 480), "{seen:?}");
    let profile = seen.profile.as_deref().unwrap_or("");
    assert!(
        ["constrained-baseline", "baseline", "main", "high"].contains(&profile),
        "a profile players refuse: {seen:?}"
    );
    Ok(())
}

#[test]
fn clients_without_the_right_password_are_unauthorized() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source("cam.lobby", &camera, RestreamMode::Passthrough)],
    )?;
    // Digest only: the password never crosses the LAN, and no client can choose Basic.
    let offered = challenges(&restreamer, "cam.lobby")?;
    ensure!(
        offered.len() == 1 && offered[0].starts_with("Digest ") && offered[0].contains("nonce="),
        "challenges: {offered:?}"
    );
    for credentials in [None, Some((USER, "wrong")), Some(("admin", PASSWORD))] {
        let (status, _) = describe(&restreamer, "cam.lobby", credentials)?;
        assert_eq!(status, 401, "{credentials:?}");
    }
    let (status, _) = describe(&restreamer, "cam.lobby", Some((USER, PASSWORD)))?;
    assert_eq!(status, 200);
    wait_released(&restreamer)?;
    for url in [
        url_with(&restreamer, "cam.lobby", USER, "wrong"),
        restreamer.url(&camera_id("cam.lobby")),
    ] {
        let (text, _) = run_discoverer(&url)?;
        ensure!(
            text.contains("Unauthorized") && parse_discovered(&text).is_err(),
            "{url}: expected Unauthorized, got:\n{text}"
        );
    }
    ensure!(
        restreamer.cameras_pulled().is_empty(),
        "an unauthorized client made the camera be pulled"
    );
    Ok(())
}

#[test]
fn a_site_that_asks_for_basic_gets_basic_only() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let basic = RestreamSettings {
        auth: RtspAuth::Basic,
        ..settings()
    };
    let restreamer = Restreamer::start(
        &basic,
        &[source("cam.lobby", &camera, RestreamMode::Passthrough)],
    )?;
    let offered = challenges(&restreamer, "cam.lobby")?;
    ensure!(
        offered.len() == 1 && offered[0].starts_with("Basic "),
        "challenges: {offered:?}"
    );
    let (status, _) = describe(&restreamer, "cam.lobby", Some((USER, "wrong")))?;
    assert_eq!(status, 401);
    let seen = discover(&url_with(&restreamer, "cam.lobby", USER, PASSWORD))?;
    assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
    Ok(())
}

#[test]
fn a_camera_that_needs_credentials_works_when_given_them() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions {
        credentials: Some(("admin".to_owned(), "cam-secret".to_owned())),
        ..CameraOptions::default()
    })?;
    let mut given = source("cam.office", &camera, RestreamMode::Passthrough);
    given.camera_user = Some("admin".to_owned());
    given.camera_password = Some("cam-secret".to_owned());
    // The same camera, credentials in the URL.
    let mut in_url = source("cam.office2", &camera, RestreamMode::Passthrough);
    in_url.url = StreamUrl::Fixed(
        camera
            .url()
            .replacen("rtsp://", "rtsp://admin:cam-secret@", 1),
    );
    let missing = source("cam.office3", &camera, RestreamMode::Passthrough);
    let mut refused = source("cam.office4", &camera, RestreamMode::Passthrough);
    refused.url = StreamUrl::Fixed(camera.url().replacen(
        "rtsp://",
        "rtsp://admin:wrong%2Dsecret@",
        1,
    ));
    let restreamer = Restreamer::start(&settings(), &[given, in_url, missing, refused])?;
    for id in ["cam.office", "cam.office2"] {
        let seen = discover(&url_with(&restreamer, id, USER, PASSWORD))?;
        assert_eq!((seen.width, seen.height), (320, 240), "{id}: {seen:?}");
    }
    let (text, elapsed) = run_discoverer(&url_with(&restreamer, "cam.office3", USER, PASSWORD))?;
    ensure!(
        parse_discovered(&text).is_err() && elapsed < Duration::from_secs(12),
        "a camera refusing the agent served something, or hung ({elapsed:?}):\n{text}"
    );
    let (status, _) = describe(&restreamer, "cam.office4", Some((USER, PASSWORD)))?;
    assert_eq!(status, 503);
    let logs = logs();
    ensure!(
        logs.contains("cam.office4") && logs.contains("Unauthorized"),
        "the refused camera was not logged:\n{logs}"
    );
    for secret in ["cam-secret", "wrong-secret", "wrong%2Dsecret"] {
        ensure!(!logs.contains(secret), "{secret} is in the logs:\n{logs}");
    }
    Ok(())
}

#[test]
fn a_dead_camera_fails_its_own_mount_quickly_and_no_other() -> anyhow::Result<()> {
    init_logs();
    let alive = TestCamera::start(CameraOptions::default())?;
    let doomed = TestCamera::start(CameraOptions::default())?;
    let restreamer = Restreamer::start(
        &settings(),
        &[
            source("cam.alive", &alive, RestreamMode::Passthrough),
            source("cam.dead", &doomed, RestreamMode::Passthrough),
        ],
    )?;
    let _stopped = doomed.kill();
    let (text, elapsed) = run_discoverer(&url_with(&restreamer, "cam.dead", USER, PASSWORD))?;
    ensure!(
        parse_discovered(&text).is_err(),
        "a dead camera served video:\n{text}"
    );
    ensure!(
        elapsed < Duration::from_secs(12),
        "the client waited {elapsed:?} for a dead camera:\n{text}"
    );
    let (status, elapsed) = describe(&restreamer, "cam.dead", Some((USER, PASSWORD)))?;
    assert_eq!(status, 503, "after {elapsed:?}");
    ensure!(
        elapsed < Duration::from_secs(10),
        "503 came after {elapsed:?}"
    );
    let (status, _) = describe(&restreamer, "cam.nobody", Some((USER, PASSWORD)))?;
    assert_eq!(status, 404);
    let seen = discover(&url_with(&restreamer, "cam.alive", USER, PASSWORD))?;
    assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
    Ok(())
}

#[test]
fn a_camera_that_stops_sending_is_dropped_and_its_clients_disconnected() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source("cam.stuck", &camera, RestreamMode::Passthrough)],
    )?;
    // The client is disconnected (gst-launch ends) and the camera released, but only once
    // the camera has been silent for the stall timeout.
    let broken_for = watch_until_broken(&restreamer, "cam.stuck", || camera.stall())?;
    ensure!(
        broken_for >= STALL_TIMEOUT - Duration::from_secs(1),
        "dropped after only {broken_for:?}"
    );
    // Once the camera sends again, the mount serves again.
    camera.resume()?;
    let seen = discover(&url_with(&restreamer, "cam.stuck", USER, PASSWORD))?;
    assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
    Ok(())
}

#[test]
fn a_camera_that_dies_while_watched_disconnects_its_clients_and_comes_back() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source("cam.dies", &camera, RestreamMode::Passthrough)],
    )?;
    let mut stopped = None;
    // GStreamer reports a camera killed mid-stream as a warning and end of stream.
    watch_until_broken(&restreamer, "cam.dies", || {
        stopped = Some(camera.kill());
        Ok(())
    })?;
    let _camera = stopped.context("the camera was not killed")?.restart()?;
    let seen = discover(&url_with(&restreamer, "cam.dies", USER, PASSWORD))?;
    assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
    Ok(())
}

#[test]
fn a_camera_connection_reset_while_watched_disconnects_its_clients_and_comes_back()
-> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let proxy = ResettingProxy::start(camera.url())?;
    let restreamer = Restreamer::start(
        &settings(),
        &[source_at(
            "cam.reset",
            StreamUrl::Fixed(proxy.url.clone()),
            RestreamMode::Passthrough,
        )],
    )?;
    // A reset connection is an element error mid-stream ("Could not read from resource"):
    // the media's own error handling and the clients' teardown must not both stop it.
    watch_until_broken(&restreamer, "cam.reset", || {
        proxy.reset_all();
        Ok(())
    })?;
    ensure!(
        logs().contains("Could not read from resource"),
        "the reset was not reported as an element error"
    );
    let seen = discover(&url_with(&restreamer, "cam.reset", USER, PASSWORD))?;
    assert_eq!((seen.width, seen.height), (320, 240), "{seen:?}");
    Ok(())
}

/// A client watches `camera` until `break_it` breaks the camera; then the client must be
/// disconnected and the camera released. Returns how long that took after the break.
fn watch_until_broken(
    restreamer: &Restreamer,
    camera: &str,
    break_it: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let url = url_with(restreamer, camera, USER, PASSWORD);
    let mut client = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "rtspsrc",
            &format!("location={url}"),
            "protocols=tcp",
            "!",
            "fakesink",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running gst-launch-1.0 (apt-get install gstreamer1.0-tools)")?;
    let outcome = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while restreamer.cameras_pulled().is_empty() {
            ensure!(
                Instant::now() < deadline,
                "the client never made the camera be pulled"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        break_it()?;
        let broken = Instant::now();
        let deadline = broken + STALL_TIMEOUT + Duration::from_secs(10);
        while client.try_wait()?.is_none() || !restreamer.cameras_pulled().is_empty() {
            ensure!(
                Instant::now() < deadline,
                "{:?} after the camera broke: client still connected or camera still pulled ({:?})",
                broken.elapsed(),
                restreamer.cameras_pulled()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(broken.elapsed())
    })();
    let _ = client.kill();
    let _ = client.wait();
    outcome
}

/// A TCP proxy in front of a camera that can reset (RST, not close) every connection it
/// carries, as a camera that crashes or a switch port that drops does.
struct ResettingProxy {
    url: String,
    links: Arc<Mutex<Vec<Link>>>,
}

/// A client's connection, and the flag that stops copying the camera's bytes to it.
type Link = (TcpStream, Arc<AtomicBool>);

impl ResettingProxy {
    fn start(camera_url: &str) -> anyhow::Result<Self> {
        let target = camera_url
            .strip_prefix("rtsp://")
            .and_then(|rest| rest.split('/').next())
            .context("not an rtsp:// URL")?
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = camera_url.replacen(&target, &listener.local_addr()?.to_string(), 1);
        let links = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&links);
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (Ok(camera), Ok(to_client), Ok(from_client)) = (
                    TcpStream::connect(&target),
                    client.try_clone(),
                    client.try_clone(),
                ) else {
                    continue;
                };
                let reset = Arc::new(AtomicBool::new(false));
                let stop = Arc::clone(&reset);
                if let Ok(to_camera) = camera.try_clone() {
                    let mut from_client = from_client;
                    let mut to_camera = to_camera;
                    std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_camera));
                }
                std::thread::spawn(move || forward_until(camera, to_client, &stop));
                kept.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((client, reset));
            }
        });
        Ok(Self { url, links })
    }

    /// Resets every connection to the proxy's clients: once every handle on a socket with
    /// SO_LINGER 0 is closed, the kernel sends RST instead of FIN.
    fn reset_all(&self) {
        for (client, reset) in self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            reset.store(true, Ordering::SeqCst);
            let _ = rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO));
            // Ends the reader's copy without sending anything.
            let _ = client.shutdown(std::net::Shutdown::Read);
        }
    }
}

/// Copies the camera's bytes to the client until the camera closes or `stop` is set.
fn forward_until(mut camera: TcpStream, mut client: TcpStream, stop: &AtomicBool) {
    let mut buffer = [0_u8; 16 * 1024];
    while let Ok(read) = camera.read(&mut buffer) {
        if read == 0 || stop.load(Ordering::SeqCst) || client.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
}

#[test]
fn a_camera_that_never_answers_does_not_hold_up_the_other_mounts() -> anyhow::Result<()> {
    init_logs();
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("rtsp://{}/cam", silent.local_addr()?);
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = silent.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let alive = TestCamera::start(CameraOptions::default())?;
    let mut hanging = source("cam.silent", &alive, RestreamMode::Passthrough);
    hanging.url = StreamUrl::Fixed(silent_url);
    let restreamer = Restreamer::start(
        &settings(),
        &[
            hanging,
            source("cam.alive", &alive, RestreamMode::Passthrough),
        ],
    )?;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let waiting = scope.spawn(|| describe(&restreamer, "cam.silent", Some((USER, PASSWORD))));
        std::thread::sleep(Duration::from_millis(300));
        let (status, elapsed) = describe(&restreamer, "cam.alive", Some((USER, PASSWORD)))?;
        assert_eq!(status, 200);
        ensure!(
            elapsed < Duration::from_secs(3),
            "the live camera took {elapsed:?} while another hung"
        );
        let (status, elapsed) = waiting
            .join()
            .map_err(|_| anyhow::anyhow!("the waiting client panicked"))??;
        assert_eq!(status, 503, "after {elapsed:?}");
        ensure!(
            elapsed < Duration::from_secs(12),
            "503 came after {elapsed:?}"
        );
        Ok(())
    })
}

#[test]
fn a_busy_port_is_an_error_that_names_it() -> anyhow::Result<()> {
    init_logs();
    let first = Restreamer::start(&settings(), &[])?;
    let busy = RestreamSettings {
        listen: ([127, 0, 0, 1], first.port()).into(),
        ..settings()
    };
    let Err(error) = Restreamer::start(&busy, &[]) else {
        bail!("a second server listened on port {}", first.port());
    };
    let text = error.to_string();
    ensure!(
        text.contains(&format!("127.0.0.1:{}", first.port())),
        "the error does not name the address: {text}"
    );
    Ok(())
}

#[test]
fn a_camera_whose_address_is_found_later_is_served_once_it_is() -> anyhow::Result<()> {
    init_logs();
    let camera = TestCamera::start(CameraOptions::default())?;
    let found = Arc::new(DiscoveredUrl::default());
    let restreamer = Restreamer::start(
        &settings(),
        &[source_at(
            "cam.onvif",
            StreamUrl::Discovered(Arc::clone(&found)),
            RestreamMode::Passthrough,
        )],
    )?;
    // ONVIF has not answered yet: the camera cannot be served, and says so.
    let (status, _) = describe(&restreamer, "cam.onvif", Some((USER, PASSWORD)))?;
    assert_eq!(status, 503);
    ensure!(
        logs().contains("its stream address is not known yet"),
        "the reason was not logged"
    );
    // The supervisor found the stream URI: the next client gets the camera.
    found.set(camera.url().to_owned());
    let seen = discover(&url_with(&restreamer, "cam.onvif", USER, PASSWORD))?;
    assert_eq!(seen.media_type, "video/x-h264", "{seen:?}");
    Ok(())
}

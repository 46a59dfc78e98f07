//! Video in the real agent, against the RTSP test camera (gstreamer-rtsp-server) and a Modbus
//! door: a rule's incident carries a clip that starts before the door opened and a snapshot;
//! media URLs are signed, short-lived and scoped; live view is Low-Latency HLS; a camera that drops is
//! reported and comes back; a full video disk stops recording with a degraded camera and
//! nothing else.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use gatehouse_hil_tests::harness::{self, ADMIN_TOKEN, AgentProcess, GUARD_TOKEN};
use gatehouse_hil_tests::onvif_sim::{OnvifSim, OnvifSimOptions};
use gatehouse_hil_tests::small_disk::SmallDisk;
use gatehouse_hil_tests::test_camera::{CameraOptions, TestCamera};
use gatehouse_hil_tests::video_check::{discover, frame_brightness};
use serde_json::Value as Json;

const WAIT: Duration = Duration::from_secs(30);

/// A camera and a rule: the lobby door opening while armed raises an incident with a clip of
/// 2 s before and 2 s after.
fn site(
    door: std::net::SocketAddr,
    camera_url: &str,
    storage: &Path,
    password_file: &Path,
) -> String {
    format!(
        r#"{door}
[video]
storage = "{storage}"
pre_event = "4s"
min_free_megabytes = 16
media_url_ttl = "1m"

[video.restream]
listen = "127.0.0.1:{restream_port}"
username = "nvr"
password_file = "{password}"

[[video.cameras]]
id = "cam.lobby"
zone = "lobby"
url = "{camera_url}"
username = "viewer"
password_file = "{password}"
stall_timeout = "2s"
reconnect_initial_ms = 200
reconnect_max_ms = 1000

[[rules]]
id = "door-open"
when.event = {{ point = "io.door", value = "value == true" }}
then = [
  {{ raise = {{ severity = "high", title = "Lobby door opened" }} }},
  {{ clip = {{ camera = "cam.lobby", before = "2s", after = "2s" }} }},
]
"#,
        door = harness::door_device("io", door, 50),
        storage = storage.display(),
        password = password_file.display(),
        restream_port = harness::free_port().unwrap_or(18554),
    )
}

async fn camera_view(agent: &AgentProcess) -> anyhow::Result<Json> {
    let (status, cameras) = agent.api(GUARD_TOKEN).get("/api/v1/cameras").await?;
    anyhow::ensure!(status == 200, "GET /api/v1/cameras: {status} {cameras}");
    Ok(cameras[0].clone())
}

/// Waits until the camera's status is `status`; returns its view.
async fn wait_camera(agent: &AgentProcess, status: &str) -> anyhow::Result<Json> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let camera = camera_view(agent).await?;
        if camera["status"] == status {
            return Ok(camera);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the camera never became {status}: {camera}\n{}",
                agent.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until incident `id`'s first clip is no longer recording; returns the clip's view.
async fn wait_clip(agent: &AgentProcess, incident: u64) -> anyhow::Result<Json> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, page) = agent
            .api(GUARD_TOKEN)
            .get(&format!("/api/v1/clips?incident={incident}"))
            .await?;
        if let Some(clip) = page["items"].get(0)
            && clip["state"] != "recording"
        {
            return Ok(clip.clone());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "incident {incident}'s clip never finished: {page}\n{}",
                agent.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for the newest incident after `after`.
async fn wait_incident(agent: &AgentProcess, after: u64) -> anyhow::Result<Json> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, page) = agent.api(GUARD_TOKEN).get("/api/v1/incidents").await?;
        if let Some(incident) = page["items"].get(0)
            && incident["id"].as_u64().is_some_and(|id| id > after)
        {
            return Ok(incident.clone());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no incident after {after}: {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET without a bearer token (media URLs carry their own signature).
async fn fetch(agent: &AgentProcess, url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let response = reqwest::get(format!("http://{}{url}", agent.api)).await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

fn camera_options() -> CameraOptions {
    CameraOptions {
        credentials: Some(("viewer".into(), "s3cret".into())),
        ..CameraOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incident_carries_a_clip_from_before_its_trigger() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let door = harness::simulator().await?;
    let camera = TestCamera::start(camera_options())?;
    let password = folder.path().join("camera.password");
    std::fs::write(&password, "s3cret\n")?;
    let config = site(
        door.addr(),
        camera.url(),
        &folder.path().join("video"),
        &password,
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let view = wait_camera(&agent, "online").await?;
    assert_eq!(view["codec"], "H.264");
    // The password never reaches the log.
    assert!(!agent.log().contains("s3cret"));

    camera.set_pattern("black")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    camera.set_pattern("white")?;
    door.set_discrete(1, 0, true);
    let incident = wait_incident(&agent, 0).await?;
    let id = incident["id"].as_u64().context("incident id")?;
    let clip = wait_clip(&agent, id).await?;
    assert_eq!(clip["state"], "ready", "{clip}");
    assert_eq!(clip["camera"], "cam.lobby");
    assert_eq!(clip["incident"], id);

    // The incident itself names the clip, ready.
    let (_, incident) = agent
        .api(GUARD_TOKEN)
        .get(&format!("/api/v1/incidents/{id}"))
        .await?;
    assert_eq!(incident["clips"][0]["id"], clip["id"], "{incident}");
    assert_eq!(incident["clips"][0]["state"], "ready", "{incident}");

    // The MP4, fetched by its signed URL and checked by GStreamer's own tools: H.264, about
    // 4 s, black before the trigger and white after it.
    let media_url = clip["media_url"].as_str().context("no media_url")?;
    let (status, mp4) = fetch(&agent, media_url).await?;
    assert_eq!(status, 200);
    let path = folder.path().join("downloaded.mp4");
    std::fs::write(&path, &mp4)?;
    let found = discover(&path.to_string_lossy())?;
    assert!(found.video.starts_with("H.264"), "{found:?}");
    let duration = found.duration.context("no duration")?;
    assert!(duration >= Duration::from_millis(3_800), "{found:?}");
    let brightness = frame_brightness(&path)?;
    assert!(
        brightness[0] < 60.0,
        "the clip does not start before the trigger: {brightness:?}"
    );
    assert!(brightness[brightness.len() - 1] > 180.0, "{brightness:?}");
    let (status, jpeg) = fetch(
        &agent,
        clip["snapshot_url"].as_str().context("snapshot_url")?,
    )
    .await?;
    assert_eq!((status, &jpeg[..2]), (200, &[0xFF_u8, 0xD8][..]));

    // Signed URLs: no signature 401, another clip's 403, tampered 403.
    let unsigned = media_url.split('?').next().context("no path")?;
    assert_eq!(fetch(&agent, unsigned).await?.0, 401);
    let other = media_url.replacen(&format!("/clips/{}.mp4", clip["id"]), "/clips/999.mp4", 1);
    assert_eq!(fetch(&agent, &other).await?.0, 403);
    let tampered = media_url.replacen("expires=", "expires=9", 1);
    assert_eq!(fetch(&agent, &tampered).await?.0, 403);
    // The listing itself needs a token.
    assert_eq!(agent.api("wrong").get("/api/v1/clips").await?.0, 401);

    // Live view: Low-Latency HLS whose every URI carries the signature, and a snapshot.
    let live_url = view["live_url"].as_str().context("live_url")?;
    let (status, index) = fetch(&agent, live_url).await?;
    let index = String::from_utf8_lossy(&index).to_string();
    assert_eq!(status, 200, "{index}");
    assert!(
        index.contains("CODECS=\"avc1.42c0") && index.contains("RESOLUTION=320x240"),
        "{index}"
    );
    let base = live_url.rsplit_once('/').context("no folder")?.0;
    let media = index
        .lines()
        .find(|line| line.starts_with("live.m3u8?expires="))
        .context("no media playlist")?;
    // Wait for a whole segment, then check what a player would be given.
    let deadline = tokio::time::Instant::now() + WAIT;
    let playlist = loop {
        let (status, body) = fetch(&agent, &format!("{base}/{media}")).await?;
        let text = String::from_utf8_lossy(&body).to_string();
        if status == 200 && text.contains("#EXTINF:") {
            break text;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no segment: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(playlist.contains("#EXT-X-PART:DURATION="), "{playlist}");
    let quoted_uri = |tag: &str| {
        playlist
            .lines()
            .filter(|line| line.starts_with(tag))
            .find_map(|line| line.split('"').nth(1))
            .map(str::to_owned)
    };
    let init = quoted_uri("#EXT-X-MAP:").context("no init segment")?;
    let hint = quoted_uri("#EXT-X-PRELOAD-HINT:").context("no preload hint")?;
    let segment = playlist
        .lines()
        .find(|line| line.starts_with("segment-"))
        .context("no segment")?;
    assert!(init.contains("signature=") && segment.contains("signature="));
    let (status, init) = fetch(&agent, &format!("{base}/{init}")).await?;
    assert_eq!(status, 200);
    let (status, segment) = fetch(&agent, &format!("{base}/{segment}")).await?;
    assert_eq!(status, 200);
    // Init and segment make an MP4 that GStreamer's own demuxer and decoder read.
    let path = folder.path().join("live.mp4");
    std::fs::write(&path, [init, segment].concat())?;
    let live = discover(&path.display().to_string())?;
    assert!(live.video.starts_with("H.264"), "{live:?}");
    assert_eq!((live.width, live.height), (320, 240));
    let frames = tokio::task::spawn_blocking(move || frame_brightness(&path)).await??;
    assert!(
        frames.len() >= 10,
        "{} frames in a live segment",
        frames.len()
    );
    // The hinted next part does not exist yet: the request waits until it is cut.
    let (status, part) = fetch(&agent, &format!("{base}/{hint}")).await?;
    assert_eq!((status, &part[4..8]), (200, &b"moof"[..]));
    let (status, jpeg) = fetch(&agent, view["snapshot_url"].as_str().context("snapshot")?).await?;
    assert_eq!((status, &jpeg[..2]), (200, &[0xFF_u8, 0xD8][..]));
    // A live URL opens nothing of another camera's scope.
    let snapshot_with_live_signature = live_url.replacen("live/index.m3u8", "snapshot.jpg", 1);
    assert_eq!(fetch(&agent, &snapshot_with_live_signature).await?.0, 403);
    assert_eq!(
        fetch(&agent, live_url.split('?').next().context("no path")?)
            .await?
            .0,
        401
    );

    // Other LAN clients pull the camera re-streamed by the agent, with its RTSP credentials.
    let config = std::fs::read_to_string(&agent.config)?;
    let api_port = agent.api.port().to_string();
    let listen = config
        .lines()
        .filter_map(|line| line.strip_prefix("listen = \"127.0.0.1:"))
        .filter_map(|rest| rest.strip_suffix('"'))
        .find(|port| *port != api_port)
        .context("no restream port")?;
    let restreamed = discover(&format!("rtsp://nvr:s3cret@127.0.0.1:{listen}/cam.lobby"))?;
    assert!(restreamed.video.starts_with("H.264"), "{restreamed:?}");
    assert_eq!((restreamed.width, restreamed.height), (320, 240));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_that_drops_is_reported_and_comes_back() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let door = harness::simulator().await?;
    let camera = TestCamera::start(camera_options())?;
    let password = folder.path().join("camera.password");
    std::fs::write(&password, "wrong")?;
    let config = site(
        door.addr(),
        camera.url(),
        &folder.path().join("video"),
        &password,
    );
    // Wrong credentials first: offline with the camera's answer.
    let mut agent = AgentProcess::start_site(folder.path(), &config).await?;
    let view = wait_camera(&agent, "offline").await?;
    assert!(
        view["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Unauthorized"),
        "{view}"
    );
    agent.stop().await?;

    std::fs::write(&password, "s3cret")?;
    let agent = AgentProcess::start_with(&agent.config, agent.api.port()).await?;
    wait_camera(&agent, "online").await?;
    let stopped = camera.kill();
    let view = wait_camera(&agent, "offline").await?;
    assert!(view["reason"].as_str().is_some(), "{view}");
    let _camera = stopped.restart()?;
    wait_camera(&agent, "online").await?;
    let metrics = agent_metrics(&agent).await?;
    assert!(
        metrics.contains("gatehouse_video_reconnects_total{device=\"cam.lobby\"}"),
        "{metrics}"
    );
    Ok(())
}

async fn agent_metrics(agent: &AgentProcess) -> anyhow::Result<String> {
    Ok(reqwest::Client::new()
        .get(format!("http://{}/metrics", agent.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_video_disk_stops_recording_and_says_so() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let storage = folder.path().join("video");
    let _disk = SmallDisk::mount(&storage, "40m")?;
    let door = harness::simulator().await?;
    let camera = TestCamera::start(camera_options())?;
    let password = folder.path().join("camera.password");
    std::fs::write(&password, "s3cret")?;
    let agent = AgentProcess::start_site(
        folder.path(),
        &site(door.addr(), camera.url(), &storage, &password),
    )
    .await?;
    wait_camera(&agent, "online").await?;

    // Leave less than min_free_megabytes (16) free.
    let filler = storage.join("filler");
    std::fs::write(&filler, vec![0_u8; 30 << 20])?;
    door.set_discrete(1, 0, true);
    let incident = wait_incident(&agent, 0).await?;
    let clip = wait_clip(&agent, incident["id"].as_u64().context("id")?).await?;
    assert_eq!(clip["state"], "failed", "{clip}");
    assert!(
        clip["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("free space"),
        "{clip}"
    );
    let view = wait_camera(&agent, "degraded").await?;
    assert!(
        view["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("recording stopped"),
        "{view}"
    );
    // The journal was not touched by it: the agent answers and the door's events are there.
    let (status, _) = agent.api(ADMIN_TOKEN).get("/api/v1/events?limit=5").await?;
    assert_eq!(status, 200);

    // Space again: the next clip is written and the camera is online.
    std::fs::remove_file(&filler)?;
    door.set_discrete(1, 0, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    door.set_discrete(1, 0, true);
    let second = wait_incident(&agent, incident["id"].as_u64().unwrap_or_default()).await;
    // The door rule adds evidence to the open incident rather than opening a new one.
    let id = match second {
        Ok(second) => second["id"].as_u64(),
        Err(_) => incident["id"].as_u64(),
    }
    .context("id")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, page) = agent
            .api(GUARD_TOKEN)
            .get(&format!("/api/v1/clips?incident={id}"))
            .await?;
        if page["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|c| c["state"] == "ready"))
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no clip written after space came back: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_camera(&agent, "online").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_onvif_cameras_motion_raises_an_incident_with_its_clip_and_it_is_re_streamed()
-> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let restream_port = harness::free_port()?;
    let camera = TestCamera::start(camera_options())?;
    let sim = OnvifSim::start(OnvifSimOptions {
        user: "viewer".into(),
        password: "s3cret".into(),
        stream_uri: camera.url().to_owned(),
        ..OnvifSimOptions::default()
    })
    .await?;
    let password = folder.path().join("camera.password");
    std::fs::write(&password, "s3cret")?;
    let config = format!(
        r#"
[video]
storage = "{storage}"
pre_event = "3s"

[video.restream]
listen = "127.0.0.1:{restream_port}"
username = "nvr"
password_file = "{password}"

[[video.cameras]]
id = "cam.lobby"
zone = "lobby"
onvif = "{onvif}"
username = "viewer"
password_file = "{password}"

[[rules]]
id = "motion"
when.event = {{ point = "cam.lobby.motion", value = "value == true" }}
then = [
  {{ raise = {{ severity = "medium", title = "Motion in the lobby" }} }},
  {{ clip = {{ camera = "cam.lobby", before = "1s", after = "1s" }} }},
]
"#,
        storage = folder.path().join("video").display(),
        onvif = sim.device_url(),
        password = password.display(),
        restream_port = restream_port,
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    // The stream URL came from ONVIF's GetStreamUri.
    wait_camera(&agent, "online").await?;
    let (_, points) = agent.api(GUARD_TOKEN).get("/api/v1/points").await?;
    assert!(points.to_string().contains("cam.lobby.motion"), "{points}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // An event Gatehouse has no point for is counted, not turned into anything.
    sim.push_event(
        "tns1:RuleEngine/FieldDetector/ObjectsInside",
        "<tt:SimpleItem Name=\"Rule\" Value=\"Car park\"/>",
        "<tt:SimpleItem Name=\"IsInside\" Value=\"true\"/>",
    );
    sim.push_motion(true);
    let incident = wait_incident(&agent, 0).await?;
    assert_eq!(incident["title"], "Motion in the lobby");
    let clip = wait_clip(&agent, incident["id"].as_u64().context("id")?).await?;
    assert_eq!(clip["state"], "ready", "{clip}");
    let metrics = agent_metrics(&agent).await?;
    assert!(
        metrics.contains("gatehouse_video_onvif_events_unmapped_total{device=\"cam.lobby\"} 1"),
        "{metrics}"
    );
    // NVRs pull it re-streamed, from the stream URI ONVIF gave, with the camera's credentials.
    let restreamed = discover(&format!(
        "rtsp://nvr:s3cret@127.0.0.1:{restream_port}/cam.lobby"
    ))?;
    assert!(restreamed.video.starts_with("H.264"), "{restreamed:?}");
    Ok(())
}

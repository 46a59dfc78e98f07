//! The camera feed against a real RTSP camera (gstreamer-rtsp-server): the pre-event buffer,
//! clips that really start before their trigger, snapshots, credentials, a stalled camera, a
//! camera that answers junk.

use std::time::Duration;

use anyhow::Context as _;
use gatehouse_edge::video::buffer::Ended;
use gatehouse_edge::video::config::RtspTransport;
use gatehouse_edge::video::feed::{CameraFeed, Codec, FeedError, Source};
use gatehouse_edge::video::media;
use gatehouse_hil_tests::test_camera::{CameraOptions, GarbageCamera, TestCamera};
use gatehouse_hil_tests::video_check::{discover, frame_brightness};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::oneshot;

fn source(url: &str, credentials: Option<(&str, &str)>) -> Source {
    Source {
        url: url.to_owned(),
        username: credentials.map(|(user, _)| user.to_owned()),
        password: credentials.map(|(_, password)| password.to_owned()),
        transport: RtspTransport::Tcp,
    }
}

/// Plays `feed` in a task; resolves the returned receiver at the first frame.
fn play(
    feed: &CameraFeed,
    source: Source,
) -> (oneshot::Receiver<Codec>, tokio::task::JoinHandle<FeedError>) {
    let (online, first_frame) = oneshot::channel();
    let feed = feed.clone();
    let task = tokio::spawn(async move {
        feed.play(&source, None, SignedDuration::from_secs(2), |codec| {
            let _ = online.send(codec);
        })
        .await
    });
    (first_frame, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clip_starts_before_its_trigger_and_ends_after_it() -> anyhow::Result<()> {
    gstreamer::init()?;
    let camera = TestCamera::start(CameraOptions {
        credentials: Some(("viewer".into(), "s3cret".into())),
        ..CameraOptions::default()
    })?;
    let (feed, mut clips) = CameraFeed::new("cam.test", SignedDuration::from_secs(4), 64 << 20);
    let (online, task) = play(&feed, source(camera.url(), Some(("viewer", "s3cret"))));
    let codec = tokio::time::timeout(Duration::from_secs(20), online)
        .await
        .context("no frame within 20 s")??;
    assert_eq!(codec, Codec::H264);
    camera.set_pattern("black")?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The trigger: the picture turns white at this moment; the clip asks for 2 s before and
    // 2 s after it.
    camera.set_pattern("white")?;
    let trigger = Timestamp::now();
    feed.collect(
        1,
        trigger - SignedDuration::from_secs(2),
        trigger + SignedDuration::from_secs(2),
    );
    let clip = tokio::time::timeout(Duration::from_secs(10), clips.recv())
        .await
        .context("the clip did not complete")?
        .context("the feed dropped its clip channel")?;
    assert_eq!(clip.ended, Ended::Complete);
    let frames: Vec<_> = clip
        .collector
        .frames
        .iter()
        .map(|f| f.data.clone())
        .collect();
    assert!(clip.collector.frames[0].keyframe);
    assert!(clip.collector.frames[0].at <= trigger - SignedDuration::from_secs(2));

    let folder = tempfile::tempdir()?;
    let path = folder.path().join("clip.mp4");
    let written = tokio::task::spawn_blocking({
        let path = path.clone();
        move || media::write_mp4(codec, &frames, &path)
    })
    .await??;
    assert!(written >= Duration::from_millis(3_900), "{written:?}");

    // Checked by tools that are not ours: an MP4 holding H.264 of the camera's size and of
    // at least 4 s, whose first frames are black (before the trigger) and last are white.
    let found = discover(&path.to_string_lossy())?;
    assert!(found.video.starts_with("H.264"), "{found:?}");
    assert_eq!((found.width, found.height), (320, 240));
    let duration = found.duration.context("no duration")?;
    assert!(duration >= Duration::from_millis(3_900), "{found:?}");
    assert!(duration <= Duration::from_millis(6_500), "{found:?}");
    let brightness = frame_brightness(&path)?;
    let (first, last) = (brightness[0], brightness[brightness.len() - 1]);
    assert!(first < 60.0, "first frame is not black: {first}");
    assert!(last > 180.0, "last frame is not white: {last}");

    // A snapshot now is a JPEG of the white picture.
    let latest = feed.latest_group();
    let jpeg = tokio::task::spawn_blocking(move || media::snapshot_jpeg(codec, &latest)).await??;
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn h265_is_recorded_without_re_encoding() -> anyhow::Result<()> {
    gstreamer::init()?;
    let camera = TestCamera::start(CameraOptions {
        codec: "h265",
        ..CameraOptions::default()
    })?;
    let (feed, mut clips) = CameraFeed::new("cam.h265", SignedDuration::from_secs(2), 64 << 20);
    let (online, task) = play(&feed, source(camera.url(), None));
    let codec = tokio::time::timeout(Duration::from_secs(20), online).await??;
    assert_eq!(codec, Codec::H265);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let now = Timestamp::now();
    feed.collect(
        1,
        now - SignedDuration::from_secs(1),
        now + SignedDuration::from_secs(1),
    );
    let clip = tokio::time::timeout(Duration::from_secs(10), clips.recv())
        .await?
        .context("no clip")?;
    let frames: Vec<_> = clip
        .collector
        .frames
        .iter()
        .map(|f| f.data.clone())
        .collect();
    let folder = tempfile::tempdir()?;
    let path = folder.path().join("clip.mp4");
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || media::write_mp4(codec, &frames, &path)
    })
    .await??;
    let found = discover(&path.to_string_lossy())?;
    assert!(found.video.starts_with("H.265"), "{found:?}");
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_fail_with_the_cameras_answer() -> anyhow::Result<()> {
    gstreamer::init()?;
    let camera = TestCamera::start(CameraOptions {
        credentials: Some(("viewer".into(), "s3cret".into())),
        ..CameraOptions::default()
    })?;
    let (feed, _clips) = CameraFeed::new("cam.auth", SignedDuration::from_secs(2), 64 << 20);
    let (_online, task) = play(&feed, source(camera.url(), Some(("viewer", "wrong"))));
    let error = tokio::time::timeout(Duration::from_secs(20), task).await??;
    let message = error.to_string();
    assert!(message.contains("Unauthorized"), "{message}");
    assert!(!message.contains("wrong"), "the password leaked: {message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_that_stops_sending_is_reported_stalled() -> anyhow::Result<()> {
    gstreamer::init()?;
    let camera = TestCamera::start(CameraOptions::default())?;
    let (feed, _clips) = CameraFeed::new("cam.stall", SignedDuration::from_secs(2), 64 << 20);
    let (online, task) = play(&feed, source(camera.url(), None));
    tokio::time::timeout(Duration::from_secs(20), online).await??;
    camera.stall()?;
    let error = tokio::time::timeout(Duration::from_secs(20), task).await??;
    assert!(matches!(error, FeedError::Stalled(_)), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_answering_junk_fails_with_a_reason() -> anyhow::Result<()> {
    gstreamer::init()?;
    let junk = GarbageCamera::start()?;
    let (feed, _clips) = CameraFeed::new("cam.junk", SignedDuration::from_secs(2), 64 << 20);
    let (_online, task) = play(&feed, source(&junk.url(), None));
    let error = tokio::time::timeout(Duration::from_secs(30), task).await??;
    assert!(
        matches!(&error, FeedError::Pipeline { element, .. } if element == "rtspsrc")
            || matches!(error, FeedError::Stalled(_)),
        "{error}"
    );
    Ok(())
}

//! The LAN console in a real browser (headless Chromium): a guard signs in with a token, sees
//! the cameras and opens one's live view, which plays the agent's Low-Latency HLS through
//! Media Source Extensions. The test camera stamps every frame with the time it was encoded;
//! the page reads the stamp back off each frame it shows, so what is checked is that the guard
//! sees the camera live, frame after frame, not a page that merely loaded; and that a camera
//! dropping and coming back while watched is said on the page, then played again.
//! (How old the frames are is a figure of `gatehouse-video-bench`, not an assertion here.)

use std::time::Duration;

use gatehouse_hil_tests::browser::Browser;
use gatehouse_hil_tests::glass::read_stamps;
use gatehouse_hil_tests::harness::{AgentProcess, GUARD_TOKEN};
use gatehouse_hil_tests::test_camera::{CameraOptions, TestCamera};

fn site(camera_url: &str, storage: &std::path::Path) -> String {
    format!(
        r#"[video]
storage = "{storage}"
pre_event = "2s"
min_free_megabytes = 16

[[video.cameras]]
id = "cam.lobby"
url = "{camera_url}"
reconnect_initial_ms = 200
reconnect_max_ms = 1000
"#,
        storage = storage.display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guard_signs_in_and_watches_a_camera_live() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let camera = TestCamera::start(CameraOptions {
        width: 640,
        height: 360,
        fps: 25,
        bitrate_kbps: 1500,
        stamp: true,
        ..CameraOptions::default()
    })?;
    let agent =
        AgentProcess::start_site(folder.path(), &site(camera.url(), &folder.path().join("v")))
            .await?;
    let console = format!("http://{}/", agent.api);
    let mut browser = Browser::launch().await?;

    // A wrong token is refused and said so; nothing is shown.
    browser.open(&console).await?;
    browser.sign_in_to_console("gh_wrong").await?;
    browser
        .wait_until(
            "document.getElementById('sign-in-error').textContent.includes('refused')",
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(
        browser
            .evaluate("document.getElementById('cameras').hidden")
            .await?,
        true
    );

    // The guard's token shows the camera, online, with a snapshot.
    browser.sign_in_to_console(GUARD_TOKEN).await?;
    browser
        .wait_until(
            "document.querySelector('[data-camera=\"cam.lobby\"] .status-online') !== null",
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log()))?;
    browser
        .wait_until(
            "document.querySelector('[data-camera=\"cam.lobby\"] img').naturalWidth === 640",
            Duration::from_secs(20),
        )
        .await?;

    // Live view: the page shows frames the camera encoded moments ago, one after another.
    browser
        .evaluate("document.querySelector('[data-camera=\"cam.lobby\"] button').click()")
        .await?;
    browser
        .wait_until(
            "document.getElementById('live').currentTime > 1",
            Duration::from_secs(20),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log()))?;
    let measured = read_stamps(&mut browser, 4.0).await?;
    let frames = measured.frames;
    assert!(
        frames >= 50,
        "4 s of 25 frames/s showed {frames} frames: {measured:?}"
    );
    assert!(
        measured.ages.len() as u64 >= frames * 9 / 10,
        "stamps unreadable: {measured:?}"
    );
    // Live, not a recording: every frame shown (each a new one) is seconds old at most.
    assert!(
        measured
            .ages
            .iter()
            .all(|&age| (-100.0..10_000.0).contains(&age)),
        "{measured:?}"
    );
    let status = browser
        .evaluate("document.getElementById('viewer-status').textContent")
        .await?;
    assert_eq!(status, "Live");

    // The camera drops while the guard watches: the page says so, with the agent's reason;
    // when the camera is back, live view resumes on its own.
    let stopped = camera.kill();
    browser
        .wait_until(
            "document.getElementById('viewer-status').textContent.includes('no live video')",
            Duration::from_secs(30),
        )
        .await?;
    let _camera = stopped.restart()?;
    browser
        .wait_until(
            "document.getElementById('viewer-status').textContent === 'Live'",
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log()))?;
    let measured = read_stamps(&mut browser, 2.0).await?;
    assert!(
        measured.ages.len() >= 25,
        "after the camera came back: {measured:?}"
    );
    Ok(())
}

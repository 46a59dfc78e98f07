//! The ONVIF client (`gatehouse_edge::video::onvif`) against the simulated camera
//! (`gatehouse_hil_tests::onvif_sim`): profiles and a stream URI that really is the RTSP test
//! camera (checked with `gst-discoverer-1.0`), wrong passwords, PullPoint events in order,
//! renewals, and a camera that answers garbage or nothing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use gatehouse_edge::video::onvif::{
    CameraEvent, CameraEventKind, Credentials, OnvifClient, OnvifError, PullPoint, PullPointOptions,
};
use gatehouse_hil_tests::onvif_sim::{OnvifSim, OnvifSimOptions, SimMode};
use gatehouse_hil_tests::test_camera::{CameraOptions, TestCamera};
use gatehouse_protocol::Value;
use jiff::SignedDuration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn credentials(password: &str) -> Option<Credentials> {
    Some(Credentials {
        user: "admin".to_owned(),
        password: password.to_owned(),
    })
}

async fn connect(sim: &OnvifSim) -> anyhow::Result<OnvifClient> {
    Ok(OnvifClient::connect(&sim.address(), credentials("camera-pass"), TIMEOUT).await?)
}

/// Pulls until `count` events came or `within` passed.
async fn pull_events(
    pull_point: &mut PullPoint,
    count: usize,
    within: Duration,
) -> anyhow::Result<Vec<CameraEvent>> {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    while events.len() < count && Instant::now() < deadline {
        events.extend(pull_point.pull().await?);
    }
    Ok(events)
}

/// What `gst-discoverer-1.0` says of `url`.
async fn discover(url: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("gst-discoverer-1.0")
            .args(["--timeout", "10", &url])
            .output()
            .context("gst-discoverer-1.0 is missing: install gstreamer1.0-tools (scripts/ installs the GStreamer packages)")?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_and_stream_uri_lead_to_the_test_camera() -> anyhow::Result<()> {
    let camera =
        tokio::task::spawn_blocking(|| TestCamera::start(CameraOptions::default())).await??;
    let sim = OnvifSim::start(OnvifSimOptions {
        stream_uri: camera.url().to_owned(),
        ..OnvifSimOptions::default()
    })
    .await?;
    let client = connect(&sim).await?;
    assert_eq!(client.device_address(), sim.device_url());
    assert_eq!(
        client.services().media.as_deref(),
        Some(format!("http://{}/onvif/media_service", sim.address()).as_str())
    );

    let profiles = client.profiles().await?;
    let tokens: Vec<_> = profiles.iter().map(|p| p.token.as_str()).collect();
    assert_eq!(tokens, ["Profile_1", "Profile_2", "Profile_Audio"]);
    let main = profiles[0]
        .video
        .as_ref()
        .context("the main profile has no video")?;
    assert_eq!(
        (main.encoding.as_str(), main.width, main.height),
        ("H264", 320, 240)
    );
    assert!(profiles[2].video.is_none());

    let stream = client.stream_uri(&profiles[0].token).await?;
    assert_eq!(stream.uri, camera.url());
    let snapshot = client.snapshot_uri("Profile_2").await?;
    assert!(
        snapshot.uri.ends_with("/snapshot/Profile_2.jpg"),
        "{snapshot:?}"
    );

    // The address really is a camera sending H.264.
    let discovered = discover(stream.uri.clone()).await?;
    let video = discovered
        .lines()
        .find(|line| line.trim_start().starts_with("video #"));
    assert!(
        video.is_some_and(|line| line.contains("H.264")) && discovered.contains("Width: 320"),
        "gst-discoverer-1.0 {} found no H.264:\n{discovered}",
        stream.uri
    );

    // An unknown profile is the device's fault, named.
    let error = client
        .stream_uri("Profile_9")
        .await
        .err()
        .context("expected an error")?;
    let message = error.to_string();
    assert!(matches!(error, OnvifError::Fault { .. }), "{error:?}");
    assert!(
        message.contains("GetStreamUri") && message.contains("ter:NoProfile"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_not_authorized() -> anyhow::Result<()> {
    let sim = OnvifSim::start(OnvifSimOptions::default()).await?;
    let error = OnvifClient::connect(&sim.address(), credentials("guess"), TIMEOUT)
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(error, OnvifError::NotAuthorized { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "wrong user or password for the ONVIF device at http://{}/",
            sim.address()
        )),
        "{message}"
    );
    assert!(sim.refused_logins() >= 1);

    let no_credentials = OnvifClient::connect(&sim.address(), None, TIMEOUT)
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(no_credentials, OnvifError::NotAuthorized { .. }),
        "{no_credentials:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_camera_clock_hours_off_and_an_old_device_still_work() -> anyhow::Result<()> {
    // The simulator refuses a Created more than 30 s from its clock: the client must use the
    // device's time. And it has no GetServices: the client must fall back to GetCapabilities.
    let sim = OnvifSim::start(OnvifSimOptions {
        clock_skew: SignedDuration::from_hours(-3),
        without_get_services: true,
        ..OnvifSimOptions::default()
    })
    .await?;
    let client = connect(&sim).await?;
    let offset = client.clock_offset().as_secs();
    assert!(
        (-3 * 3600 - 5..=-3 * 3600 + 5).contains(&offset),
        "{offset}"
    );
    assert!(client.services().events.is_some());
    assert_eq!(client.profiles().await?.len(), 3);
    assert_eq!(sim.refused_logins(), 0);
    Ok(())
}

#[tokio::test]
async fn pull_point_delivers_motion_tamper_and_line_crossing_in_order() -> anyhow::Result<()> {
    let sim = OnvifSim::start(OnvifSimOptions::default()).await?;
    let client = connect(&sim).await?;
    let mut pull_point = client
        .pull_point(PullPointOptions {
            pull_timeout: Duration::from_secs(1),
            ..PullPointOptions::default()
        })
        .await?;
    assert!(pull_point.address().contains("/onvif/subscription/"));
    assert_eq!(sim.live_subscriptions(), 1);

    // Nothing queued: the long poll ends empty after its timeout.
    let started = Instant::now();
    assert!(pull_point.pull().await?.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));

    sim.push_motion(true);
    sim.push_tamper(true);
    sim.push_line_crossing(7);
    sim.push_raw(
        "<wsnt:NotificationMessage><wsnt:Topic>tns1:Device/Trigger/DigitalInput</wsnt:Topic>\
         <wsnt:Message><tt:Message UtcTime=\"2026-11-26T13:00:00Z\" PropertyOperation=\"Changed\">\
         <tt:Source><tt:SimpleItem Name=\"InputToken\" Value=\"DI_1\"/></tt:Source>\
         <tt:Data><tt:SimpleItem Name=\"LogicalState\" Value=\"true\"/></tt:Data>\
         </tt:Message></wsnt:Message></wsnt:NotificationMessage>",
    );
    sim.push_tamper(false);
    sim.push_motion(false);
    let events = pull_events(&mut pull_point, 6, Duration::from_secs(5)).await?;
    let kinds: Vec<_> = events.iter().map(|event| event.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            CameraEventKind::Motion(true),
            CameraEventKind::Tamper(true),
            CameraEventKind::LineCrossed,
            CameraEventKind::Other {
                topic: "tns1:Device/Trigger/DigitalInput".to_owned(),
                data: vec![("LogicalState".to_owned(), "true".to_owned())],
            },
            CameraEventKind::Tamper(false),
            CameraEventKind::Motion(false),
        ]
    );
    assert_eq!(
        events[2].source.as_deref(),
        Some(
            "VideoSourceConfigurationToken=VideoSourceConfig_1,VideoAnalyticsConfigurationToken=VideoAnalyticsConfig_1,Rule=Entrance line"
        )
    );
    let points: Vec<_> = events.iter().flat_map(CameraEvent::point_values).collect();
    assert_eq!(
        points,
        [
            ("motion", Value::Bool(true)),
            ("tamper", Value::Bool(true)),
            ("line_crossed", Value::Bool(true)),
            ("line_crossed", Value::Bool(false)),
            ("tamper", Value::Bool(false)),
            ("motion", Value::Bool(false)),
        ]
    );
    // Times come from the camera, in order, close to now.
    let now = jiff::Timestamp::now();
    assert!(events[0].at <= events[5].at);
    assert!(now.duration_since(events[0].at).abs() < SignedDuration::from_secs(10));

    pull_point.unsubscribe().await?;
    assert_eq!(sim.unsubscribes(), 1);
    assert_eq!(sim.live_subscriptions(), 0);
    Ok(())
}

#[tokio::test]
async fn pull_point_renews_before_its_end() -> anyhow::Result<()> {
    let sim = OnvifSim::start(OnvifSimOptions::default()).await?;
    let client = connect(&sim).await?;
    // 4 s subscriptions, 1 s long polls: renewed once less than 3 s are left.
    let mut pull_point = client
        .pull_point(PullPointOptions {
            termination: Duration::from_secs(4),
            pull_timeout: Duration::from_secs(1),
            message_limit: 8,
        })
        .await?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        pull_point.pull().await?;
    }
    // Past the first termination time, still alive and still delivering.
    assert!(sim.renewals() >= 1, "renewals: {}", sim.renewals());
    assert_eq!(pull_point.renewals(), u64::from(sim.renewals()));
    sim.push_motion(true);
    let events = pull_events(&mut pull_point, 1, Duration::from_secs(3)).await?;
    assert_eq!(events[0].kind, CameraEventKind::Motion(true));

    // An explicit renewal too.
    pull_point.renew().await?;
    assert!(pull_point.time_left() > Duration::from_secs(3));
    pull_point.unsubscribe().await?;
    Ok(())
}

#[tokio::test]
async fn garbage_and_silence_are_clear_errors() -> anyhow::Result<()> {
    let sim = OnvifSim::start(OnvifSimOptions::default()).await?;
    let client = OnvifClient::connect(
        &sim.address(),
        credentials("camera-pass"),
        Duration::from_secs(1),
    )
    .await?;
    let mut pull_point = client
        .pull_point(PullPointOptions {
            pull_timeout: Duration::from_secs(1),
            ..PullPointOptions::default()
        })
        .await?;

    sim.set_mode(SimMode::Garbage);
    let error = client.profiles().await.err().context("expected an error")?;
    let message = error.to_string();
    assert!(matches!(error, OnvifError::Answer { .. }), "{error:?}");
    assert!(
        message.starts_with(&format!(
            "the ONVIF device at http://{}/onvif/media_service answered GetProfiles with a document that is not XML",
            sim.address()
        )),
        "{message}"
    );
    let error = pull_point.pull().await.err().context("expected an error")?;
    assert!(
        error
            .to_string()
            .contains("answered PullMessages with a document that is not XML"),
        "{error}"
    );

    sim.set_mode(SimMode::Silent);
    let started = Instant::now();
    let error = client
        .stream_uri("Profile_1")
        .await
        .err()
        .context("expected an error")?;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(error, OnvifError::Timeout { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("did not answer GetStreamUri within 1s"),
        "{error}"
    );

    // Back to normal, the same client and subscription work again.
    sim.set_mode(SimMode::Normal);
    assert_eq!(client.profiles().await?.len(), 3);
    sim.push_motion(true);
    let events = pull_events(&mut pull_point, 1, Duration::from_secs(3)).await?;
    assert_eq!(events[0].kind, CameraEventKind::Motion(true));

    // Nobody listening at all.
    drop(sim);
    let unreachable = OnvifClient::connect("127.0.0.1:9", None, Duration::from_secs(1))
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(unreachable, OnvifError::Unreachable { .. }),
        "{unreachable:?}"
    );
    assert!(
        unreachable.to_string().starts_with(
            "could not reach the ONVIF device at http://127.0.0.1:9/onvif/device_service for GetSystemDateAndTime"
        ),
        "{unreachable}"
    );
    Ok(())
}

#[tokio::test]
async fn a_subscription_the_camera_forgot_is_a_clear_error_and_a_new_one_works()
-> anyhow::Result<()> {
    let sim = OnvifSim::start(OnvifSimOptions::default()).await?;
    let client = connect(&sim).await?;
    let options = PullPointOptions {
        pull_timeout: Duration::from_secs(1),
        ..PullPointOptions::default()
    };
    let mut pull_point = client.pull_point(options).await?;
    sim.forget_subscriptions();
    let error = pull_point.pull().await.err().context("expected an error")?;
    assert!(matches!(error, OnvifError::Fault { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "the ONVIF device at {} refused PullMessages with the SOAP fault env:Sender/ter:InvalidArgVal",
            pull_point.address()
        )),
        "{message}"
    );

    let mut again = client.pull_point(options).await?;
    assert_ne!(again.address(), pull_point.address());
    sim.push_line_crossing(1);
    let events = pull_events(&mut again, 1, Duration::from_secs(3)).await?;
    assert_eq!(events[0].kind, CameraEventKind::LineCrossed);
    Ok(())
}

//! The edge agent binary against Modbus TCP devices: our simulator and pymodbus.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_hil_tests::harness::{
    self, ADMIN_TOKEN, AgentProcess, GUARD_TOKEN, INTEGRATOR_TOKEN, StreamClient, device_status,
    incident_change, is_observation,
};
use gatehouse_hil_tests::modbus_sim::{ExceptionCode, Mode, Table};
use gatehouse_hil_tests::pymodbus_peer::PymodbusPeer;
use gatehouse_protocol::{DeviceStatus, EventBody, IncidentChange, Quality, Value};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// A register change on the device → journal → rule → incident on the stream → ack and
/// resolve over REST, which the stream shows too.
async fn door_alarm_round_trip(
    device: SocketAddr,
    open_door: impl AsyncFnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let config = format!(
        "{}{}",
        harness::door_device("io", device, 50),
        harness::door_rule("io"),
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let guard = agent.api(GUARD_TOKEN);
    guard
        .wait_for("/api/v1/points/io.door", WAIT, |p| {
            p["value"] == json!(false)
        })
        .await?;
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, None).await?;

    open_door().await?;
    let (observed, _) = stream
        .wait_for(WAIT, |e| {
            is_observation(e, "io.door", Some(&Value::Bool(true)))
        })
        .await?;
    let (opened, _) = stream
        .wait_for(WAIT, |e| {
            incident_change(e).is_some_and(|(c, _)| c == IncidentChange::Opened)
        })
        .await?;
    let Some((_, id)) = incident_change(&opened) else {
        anyhow::bail!("not an incident: {opened:?}");
    };
    let EventBody::Incident { incident, .. } = &opened.body else {
        anyhow::bail!("not an incident: {opened:?}");
    };
    assert_eq!(incident.evidence[0].seq, observed.seq);
    assert_eq!(incident.rule.as_str(), "io-door-open");

    // The event is in the journal, queried by point.
    let events = guard.all_events("point=io.door&kind=observation").await?;
    assert!(events.iter().any(|e| e.seq == observed.seq), "{events:?}");

    let (status, body) = guard
        .post(
            &format!("/api/v1/incidents/{id}/ack"),
            &json!({"comment": "guard on the way"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (acked, _) = stream
        .wait_for(WAIT, |e| {
            incident_change(e) == Some((IncidentChange::Acknowledged, id))
        })
        .await?;
    assert!(acked.seq > opened.seq);
    let (status, body) = guard
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            &json!({"comment": "door wedged"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resolved"]["by"], "guard");
    stream
        .wait_for(WAIT, |e| {
            incident_change(e) == Some((IncidentChange::Resolved, id))
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_door_opening_on_our_simulator_raises_an_incident_that_is_handled_over_rest()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    let handle = &sim;
    door_alarm_round_trip(sim.addr(), async move || {
        handle.set_discrete(1, 0, true);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_door_opening_on_a_pymodbus_device_raises_an_incident_that_is_handled_over_rest()
-> anyhow::Result<()> {
    let peer = PymodbusPeer::start()?;
    let handle = &peer;
    door_alarm_round_trip(peer.addr(), async move || handle.set_di(0, true)).await
}

#[tokio::test]
async fn values_decode_and_commands_reach_the_device_on_both_peers() -> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    let peer = PymodbusPeer::start()?;
    sim.set_holding_f32(1, 0, 21.5);
    sim.set_input(1, 10, 42);
    // 0x41AC0000 is 21.5 as an IEEE float, high word first.
    peer.set_hr(0, 0x41ac)?;
    peer.set_hr(1, 0)?;
    peer.set_ir(10, 42)?;
    let folder = tempfile::tempdir()?;
    let config = format!(
        "{}{}",
        harness::door_device("sim", sim.addr(), 50),
        harness::door_device("py", peer.addr(), 50),
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let integrator = agent.api(INTEGRATOR_TOKEN);
    for device in ["sim", "py"] {
        integrator
            .wait_for(&format!("/api/v1/points/{device}.temperature"), WAIT, |p| {
                p["value"] == json!(21.5) && p["unit"] == "°C" && p["quality"]["status"] == "good"
            })
            .await?;
        integrator
            .wait_for(&format!("/api/v1/points/{device}.count"), WAIT, |p| {
                p["value"] == json!(42)
            })
            .await?;
        let (status, body) = integrator
            .post(
                &format!("/api/v1/devices/{device}/commands"),
                &json!({"point": format!("{device}.strike"), "value": true}),
            )
            .await?;
        assert_eq!(status, 200, "{device}: {body}");
        assert_eq!(body["outcome"]["status"], "done");
        integrator
            .wait_for(&format!("/api/v1/points/{device}.strike"), WAIT, |p| {
                p["value"] == json!(true)
            })
            .await?;
    }
    assert!(sim.coil(1, 0), "the simulator's coil was written");
    assert!(peer.get_coil(0)?, "pymodbus's coil was written");
    let commands = integrator.all_events("kind=command").await?;
    assert_eq!(commands.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_device_that_goes_away_is_reported_offline_and_polled_again_when_back()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    let folder = tempfile::tempdir()?;
    let config = harness::door_device("io", sim.addr(), 50);
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let guard = agent.api(GUARD_TOKEN);
    guard
        .wait_for("/api/v1/devices/io", WAIT, |d| d["status"] == "online")
        .await?;
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, None).await?;

    sim.go_away().await;
    stream
        .wait_for(WAIT, |e| {
            device_status(e, "io") == Some(DeviceStatus::Offline)
        })
        .await?;
    let device = guard
        .wait_for("/api/v1/devices/io", WAIT, |d| d["status"] == "offline")
        .await?;
    assert!(
        device["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{device}"
    );
    let point = guard.get("/api/v1/points/io.door").await?.1;
    assert_eq!(point["quality"]["status"], "stale", "{point}");

    // While away, the door opens; once back, the agent sees it.
    sim.set_discrete(1, 0, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.come_back().await?;
    stream
        .wait_for(WAIT, |e| {
            device_status(e, "io") == Some(DeviceStatus::Online)
        })
        .await?;
    stream
        .wait_for(WAIT, |e| {
            is_observation(e, "io.door", Some(&Value::Bool(true)))
        })
        .await?;
    let status = guard.get("/api/v1/health").await?.0;
    assert_eq!(status, 200, "the agent is still up");
    Ok(())
}

#[tokio::test]
async fn modbus_exceptions_become_bad_quality_with_the_reason_and_the_device_stays_online()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    sim.set_exception_range(
        1,
        Table::InputRegisters,
        10..=10,
        ExceptionCode::IllegalDataAddress,
    );
    let peer = PymodbusPeer::start()?;
    let folder = tempfile::tempdir()?;
    // pymodbus answers IllegalDataAddress past the end of its data block.
    let beyond = r#"
[[modbus.devices.points]]
id = "py.beyond"
table = "holding_register"
address = 60000
"#;
    // Holding registers 0-1 (temperature) and 4 (spare) are read in one request, but the
    // device refuses its hole at 2-3: the agent must fall back to reading them one by one.
    sim.set_exception_range(
        1,
        Table::HoldingRegisters,
        2..=3,
        ExceptionCode::IllegalDataAddress,
    );
    sim.set_holding_f32(1, 0, 19.5);
    sim.set_holding(1, 4, 44);
    let spare = r#"
[[modbus.devices.points]]
id = "sim.spare"
table = "holding_register"
address = 4
"#;
    let config = format!(
        "{}{beyond}{}{spare}",
        harness::door_device("py", peer.addr(), 50),
        harness::door_device("sim", sim.addr(), 50),
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let guard = agent.api(GUARD_TOKEN);
    guard
        .wait_for("/api/v1/points/sim.spare", WAIT, |p| {
            p["value"] == json!(44)
        })
        .await?;
    guard
        .wait_for("/api/v1/points/sim.temperature", WAIT, |p| {
            p["value"] == json!(19.5)
        })
        .await?;
    for point in ["sim.count", "py.beyond"] {
        let body = guard
            .wait_for(&format!("/api/v1/points/{point}"), WAIT, |p| {
                p["quality"]["status"] == "bad"
            })
            .await?;
        let reason = body["quality"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("0x02"), "{point}: {reason}");
        assert!(body["value"].is_null());
    }
    // The other points of the same devices are fine and the devices online.
    for device in ["sim", "py"] {
        guard
            .wait_for(&format!("/api/v1/points/{device}.door"), WAIT, |p| {
                p["quality"]["status"] == "good"
            })
            .await?;
        let (_, body) = guard.get(&format!("/api/v1/devices/{device}")).await?;
        assert_eq!(body["status"], "online", "{device}: {body}");
    }
    // When the exception clears, the value comes back good.
    sim.set_input(1, 10, 7);
    sim.clear_exceptions();
    guard
        .wait_for("/api/v1/points/sim.count", WAIT, |p| p["value"] == json!(7))
        .await?;
    Ok(())
}

#[tokio::test]
async fn silent_and_garbage_devices_go_offline_without_stalling_a_healthy_one() -> anyhow::Result<()>
{
    let silent = harness::simulator().await?;
    let garbage = harness::simulator().await?;
    let healthy = harness::simulator().await?;
    let folder = tempfile::tempdir()?;
    let config = format!(
        "{}{}{}",
        harness::door_device("silent", silent.addr(), 50),
        harness::door_device("garbage", garbage.addr(), 50),
        harness::door_device("healthy", healthy.addr(), 50),
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let admin = agent.api(ADMIN_TOKEN);
    for device in ["silent", "garbage", "healthy"] {
        admin
            .wait_for(&format!("/api/v1/devices/{device}"), WAIT, |d| {
                d["status"] == "online"
            })
            .await?;
    }
    silent.set_mode(Mode::Silent);
    garbage.set_mode(Mode::Garbage);
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, None).await?;
    let body = admin
        .wait_for("/api/v1/devices/silent", WAIT, |d| d["status"] == "offline")
        .await?;
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no answer within 500 ms"),
        "{body}"
    );
    let body = admin
        .wait_for("/api/v1/devices/garbage", WAIT, |d| {
            d["status"] == "offline"
        })
        .await?;
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    // A device that accepts connections but never answers stays offline: it is not
    // reported online on every reconnect.
    let flapped = stream
        .wait_for(Duration::from_secs(3), |e| {
            device_status(e, "silent") == Some(DeviceStatus::Online)
        })
        .await;
    assert!(
        flapped.is_err(),
        "the silent device was reported online: {flapped:?}"
    );
    // The healthy device is still polled: a change shows up promptly.
    for value in [true, false, true] {
        healthy.set_discrete(1, 0, value);
        admin
            .wait_for("/api/v1/points/healthy.door", Duration::from_secs(3), |p| {
                p["value"] == json!(value)
            })
            .await?;
    }
    // A command to the silent device fails with a reason instead of hanging forever.
    let (status, body) = admin
        .post(
            "/api/v1/devices/silent/commands",
            &json!({"point": "silent.strike", "value": true}),
        )
        .await?;
    assert!(status == 502, "{status} {body}");
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", agent.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("gatehouse_modbus_reconnects_total{device=\"silent\"}"),
        "{metrics}"
    );
    // Both recover.
    silent.set_mode(Mode::Normal);
    garbage.set_mode(Mode::Normal);
    for device in ["silent", "garbage"] {
        admin
            .wait_for(&format!("/api/v1/devices/{device}"), WAIT, |d| {
                d["status"] == "online"
            })
            .await?;
    }
    // The status comes before the values it vouches for (a good point implies an online
    // device, not the reverse): the point turns good right after.
    let good = serde_json::to_value(Quality::Good)?;
    admin
        .wait_for("/api/v1/points/silent.door", WAIT, |p| p["quality"] == good)
        .await?;
    Ok(())
}

#[tokio::test]
async fn after_a_restart_an_unreachable_device_is_offline_and_its_points_stale()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    let folder = tempfile::tempdir()?;
    let config = format!(
        "{}{}",
        harness::door_device("io", sim.addr(), 50),
        harness::door_rule("io")
    );
    let mut agent = AgentProcess::start_site(folder.path(), &config).await?;
    let guard = agent.api(GUARD_TOKEN);
    sim.set_discrete(1, 0, true);
    guard
        .wait_for("/api/v1/incidents", WAIT, |p| {
            p["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await?;
    agent.kill9()?;

    // The device dies while the agent is down; the agent comes back without it.
    sim.go_away().await;
    let agent = AgentProcess::start_with(&agent.config, agent.api.port()).await?;
    let guard = agent.api(GUARD_TOKEN);
    let door = guard
        .wait_for("/api/v1/points/io.door", WAIT, |p| {
            p["quality"]["status"] == "stale"
        })
        .await?;
    assert_eq!(
        door["value"],
        json!(true),
        "the last known value is kept: {door}"
    );
    let device = guard.get("/api/v1/devices/io").await?.1;
    assert_eq!(device["status"], "offline", "{device}");

    // It comes back with the door still open: the same state, so no second incident.
    sim.come_back().await?;
    guard
        .wait_for("/api/v1/points/io.door", WAIT, |p| {
            p["quality"]["status"] == "good"
        })
        .await?;
    let incidents = guard.get("/api/v1/incidents").await?.1;
    assert_eq!(
        incidents["items"].as_array().map(Vec::len),
        Some(1),
        "{incidents}"
    );
    // Closing and opening again is a new trigger: the incident, still open, gets its evidence.
    sim.set_discrete(1, 0, false);
    guard
        .wait_for("/api/v1/points/io.door", WAIT, |p| {
            p["value"] == json!(false)
        })
        .await?;
    sim.set_discrete(1, 0, true);
    let incidents = guard
        .wait_for("/api/v1/incidents", WAIT, |p| {
            p["items"][0]["evidence"]
                .as_array()
                .is_some_and(|e| e.len() == 2)
        })
        .await?;
    assert_eq!(
        incidents["items"].as_array().map(Vec::len),
        Some(1),
        "{incidents}"
    );
    Ok(())
}

//! The edge agent binary on a serial Modbus RTU bus: a socat pseudo-terminal pair as the
//! RS-485 line, pymodbus as the devices on it (several unit ids), and a scripted device for
//! answers with a broken CRC.

use std::path::Path;
use std::time::Duration;

use gatehouse_hil_tests::harness::{self, AgentProcess, ApiClient, GUARD_TOKEN, INTEGRATOR_TOKEN};
use gatehouse_hil_tests::pymodbus_peer::PymodbusPeer;
use gatehouse_hil_tests::serial_line::{PtyPair, Reply, ScriptedRtuDevice};
use serde_json::{Value as Json, json};

const WAIT: Duration = Duration::from_secs(15);

/// The bus `rs485` on `port`, 19200 8N1 (a pty takes no parity), reopened quickly.
fn bus(port: &Path) -> String {
    format!(
        r#"
[[modbus.buses]]
id = "rs485"
port = "{}"
baud = 19200
parity = "none"
reconnect_initial_ms = 100
reconnect_max_ms = 500
"#,
        port.display()
    )
}

/// [`harness::door_unit`] on the bus `rs485` (door: discrete input 0, strike: coil 0,
/// temperature: f32 in holding registers 0-1, count: input register 10), with a writable
/// setpoint in holding register 5.
fn unit(id: &str, unit_id: u8) -> String {
    format!(
        "{}\n[[modbus.devices.points]]\nid = \"{id}.setpoint\"\ntable = \"holding_register\"\naddress = 5\nwritable = true\n",
        harness::door_unit(id, "rs485", unit_id, 50)
    )
}

fn good(point: &Json) -> bool {
    point["quality"]["status"] == "good"
}

/// Waits until `point` reads `value` with good quality.
async fn wait_value(api: &ApiClient, point: &str, value: Json) -> anyhow::Result<Json> {
    api.wait_for(&format!("/api/v1/points/{point}"), WAIT, |p| {
        p["value"] == value && good(p)
    })
    .await
}

/// Waits until `device` has `status`, and checks that its reason mentions `reason`.
async fn wait_status(
    api: &ApiClient,
    device: &str,
    status: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let found = api
        .wait_for(&format!("/api/v1/devices/{device}"), WAIT, |d| {
            d["status"] == status
        })
        .await?;
    let text = found["reason"].as_str().unwrap_or_default();
    anyhow::ensure!(
        text.contains(reason),
        "{device}: expected `{reason}` in {found}"
    );
    Ok(())
}

#[tokio::test]
async fn several_units_on_one_bus_are_polled_and_commanded_while_a_silent_one_is_offline()
-> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let line = PtyPair::start(folder.path()).await?;
    let peer = PymodbusPeer::start_serial(&line.device_end, &[1, 2])?;
    peer.unit(1).set_ir(10, 111)?;
    peer.unit(2).set_ir(10, 222)?;
    peer.unit(2).set_di(0, true)?;
    let config = format!(
        "{}{}{}{}",
        bus(&line.agent_end),
        unit("first", 1),
        unit("second", 2),
        unit("ghost", 7),
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let api = agent.api(INTEGRATOR_TOKEN);

    // Each unit's values, not its neighbour's.
    wait_value(&api, "first.count", json!(111)).await?;
    wait_value(&api, "second.count", json!(222)).await?;
    wait_value(&api, "second.door", json!(true)).await?;
    wait_value(&api, "first.door", json!(false)).await?;

    // Nobody answers unit 7: offline with the reason, while the others stay online.
    wait_status(
        &api,
        "ghost",
        "offline",
        "unit 7 did not answer within 500 ms",
    )
    .await?;
    let (_, devices) = api.get("/api/v1/devices").await?;
    for device in devices.as_array().into_iter().flatten() {
        assert_eq!(device["protocol"], "modbus_rtu", "{device}");
        let expected = if device["id"] == "ghost" {
            "offline"
        } else {
            "online"
        };
        assert_eq!(device["status"], expected, "{device}");
    }
    assert!(
        devices.to_string().contains("agent-tty unit 2"),
        "{devices}"
    );

    // Commands reach the right unit: a coil on unit 2, a register on unit 1.
    let (status, body) = api
        .post(
            "/api/v1/devices/second/commands",
            &json!({"point": "second.strike", "value": true}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["status"], "done", "{body}");
    let (status, body) = api
        .post(
            "/api/v1/devices/first/commands",
            &json!({"point": "first.setpoint", "value": 1234}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(peer.unit(2).get_coil(0)?, "unit 2's coil was written");
    assert!(!peer.unit(1).get_coil(0)?, "unit 1's coil was not");
    assert_eq!(peer.unit(1).get_hr(5)?, 1234);
    assert_eq!(peer.unit(2).get_hr(5)?, 0);
    wait_value(&api, "second.strike", json!(true)).await?;

    // A command to the silent unit fails at once with the reason.
    let (status, body) = api
        .post(
            "/api/v1/devices/ghost/commands",
            &json!({"point": "ghost.strike", "value": true}),
        )
        .await?;
    assert_eq!(status, 502, "{body}");
    assert!(body.to_string().contains("offline"), "{body}");

    // The answering units keep being polled while the silent one times out.
    peer.unit(1).set_ir(10, 333)?;
    wait_value(&api, "first.count", json!(333)).await?;
    let (_, first) = api.get("/api/v1/devices/first").await?;
    assert_eq!(first["status"], "online", "{first}");
    Ok(())
}

#[tokio::test]
async fn answers_with_a_broken_crc_give_bad_quality_and_a_degraded_or_offline_unit()
-> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let line = PtyPair::start(folder.path()).await?;
    // Unit 1 answers well; unit 2 garbles its holding registers (temperature, setpoint)
    // only; unit 3 garbles all; unit 4 answers a stream of zeros.
    let device =
        ScriptedRtuDevice::start(&line.device_end, |unit, function| match (unit, function) {
            (1, _) => Reply::Good,
            (2, 3) | (3, _) => Reply::BadCrc,
            (4, _) => Reply::Garbage,
            (2, _) => Reply::Good,
            _ => Reply::Silent,
        })?;
    let config = format!(
        "{}{}{}{}{}",
        bus(&line.agent_end),
        unit("clean", 1),
        unit("flaky", 2),
        unit("noisy", 3),
        unit("babbling", 4),
    );
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let api = agent.api(GUARD_TOKEN);

    wait_value(&api, "clean.count", json!(42)).await?;
    wait_status(
        &api,
        "flaky",
        "degraded",
        "unit 2: an answer with a bad CRC",
    )
    .await?;
    let temperature = api
        .wait_for("/api/v1/points/flaky.temperature", WAIT, |p| {
            p["quality"]["status"] == "bad"
        })
        .await?;
    assert!(temperature.to_string().contains("bad CRC"), "{temperature}");
    assert_eq!(temperature["value"], Json::Null, "{temperature}");
    wait_value(&api, "flaky.door", json!(true)).await?;
    wait_value(&api, "flaky.count", json!(42)).await?;
    wait_status(&api, "noisy", "offline", "unit 3: an answer with a bad CRC").await?;
    wait_status(&api, "babbling", "offline", "unit 4: ").await?;
    // The healthy unit is still asked, and still online, after all that.
    let asked = device.requests(1);
    tokio::time::timeout(WAIT, async {
        while device.requests(1) < asked + 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let (_, clean) = api.get("/api/v1/devices/clean").await?;
    assert_eq!(clean["status"], "online", "{clean}");
    assert_eq!(api.get("/api/v1/health").await?.0, 200, "the agent is up");
    // Frames are kept apart by the RTU silent interval: 3.5 characters of 10 bits (8N1) at
    // 19200 baud, 1.82 ms, even right after a garbled answer.
    let pause = device.shortest_pause();
    assert!(
        pause.is_some_and(|p| p >= Duration::from_micros(1820)),
        "{pause:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_port_that_is_missing_or_goes_away_takes_its_units_offline_until_it_is_back()
-> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let agent_end = folder.path().join("agent-tty");
    let config = format!("{}{}", bus(&agent_end), unit("meter", 1));
    // The agent starts before the line exists.
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let api = agent.api(GUARD_TOKEN);
    wait_status(
        &api,
        "meter",
        "offline",
        "bus `rs485`: cannot open serial port",
    )
    .await?;

    let mut line = PtyPair::start(folder.path()).await?;
    let peer = PymodbusPeer::start_serial(&line.device_end, &[1])?;
    peer.set_ir(10, 7)?;
    wait_value(&api, "meter.count", json!(7)).await?;
    wait_status(&api, "meter", "online", "").await?;

    // The line goes away (socat killed, as an adapter pulled out).
    drop(peer);
    line.kill()?;
    wait_status(&api, "meter", "offline", "bus `rs485`").await?;
    let count = api.get("/api/v1/points/meter.count").await?.1;
    assert_eq!(count["quality"]["status"], "stale", "{count}");
    assert_eq!(count["value"], json!(7), "the last value is kept: {count}");

    // Back: the agent reopens the port by itself.
    line.restart().await?;
    let peer = PymodbusPeer::start_serial(&line.device_end, &[1])?;
    peer.set_ir(10, 8)?;
    wait_value(&api, "meter.count", json!(8)).await?;
    wait_status(&api, "meter", "online", "").await?;
    Ok(())
}

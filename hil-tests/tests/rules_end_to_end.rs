//! The rules engine in the real agent, against a Modbus device: actions reach the device,
//! their results are journaled, the fire interlock holds the egress lock open whoever asks,
//! and a changed config file is taken over without a restart (or refused, with its line).

use std::time::Duration;

use gatehouse_hil_tests::harness::{
    self, ADMIN_TOKEN, AgentProcess, GUARD_TOKEN, StreamClient, incident_change,
};
use gatehouse_protocol::{CommandOutcome, EventBody, IncidentChange};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// The door device of the harness plus a lock (coil 1, an egress door: `true` locks), a siren
/// (coil 2) and the fire panel's alarm (discrete input 1).
fn site(device: std::net::SocketAddr) -> String {
    format!(
        r#"{door}
[[modbus.devices.points]]
id = "io.lock"
table = "coil"
address = 1
writable = true
egress_lock_value = true

[[modbus.devices.points]]
id = "io.siren"
table = "coil"
address = 2
writable = true

[[modbus.devices.points]]
id = "io.fire"
table = "discrete_input"
address = 1

[[rules]]
id = "door-forced"
when.event = {{ point = "io.door", value = "value == true" }}
if = {{ expr = 'state("io.lock") == true' }}
then = [
  {{ raise = {{ severity = "critical", title = "Door forced: {{point}}" }} }},
  {{ command = {{ point = "io.siren", value = true }} }},
]

[[rules]]
id = "fire"
life_safety = true
when.event = {{ point = "io.fire", value = "value == true" }}
then = [{{ raise = {{ severity = "critical", title = "Fire alarm" }} }}]
"#,
        door = harness::door_device("io", device, 50)
    )
}

/// Waits until the agent's log says `text`.
async fn wait_for_log(agent: &AgentProcess, text: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.log().contains(text) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the log never said `{text}`: {}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until `check` holds for the simulator.
async fn wait_until(what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("never happened: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_forced_door_sounds_the_siren_and_a_fire_releases_the_lock_until_reset()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    sim.set_coil(1, 1, true); // locked
    let folder = tempfile::tempdir()?;
    let agent = AgentProcess::start_site(folder.path(), &site(sim.addr())).await?;
    let admin = agent.api(ADMIN_TOKEN);
    admin
        .wait_for("/api/v1/points/io.lock", WAIT, |p| {
            p["value"] == json!(true)
        })
        .await?;
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, None).await?;

    // The door opens while the lock says locked: forced. The siren sounds on the device, and
    // the command's result is an event naming the rule.
    sim.set_discrete(1, 0, true);
    stream
        .wait_for(WAIT, |e| {
            incident_change(e).is_some_and(|(c, _)| c == IncidentChange::Opened)
        })
        .await?;
    wait_until("the siren sounds", || sim.coil(1, 2)).await?;
    let is_siren = |e: &gatehouse_protocol::Event, expected: &CommandOutcome| {
        matches!(&e.body, EventBody::Command { point, outcome, requested_by, .. }
            if point.as_str() == "io.siren" && outcome == expected && requested_by == "rule:door-forced")
    };
    let (sent, _) = stream
        .wait_for(WAIT, |e| is_siren(e, &CommandOutcome::Sent))
        .await?;
    let (done, _) = stream
        .wait_for(WAIT, |e| is_siren(e, &CommandOutcome::Done))
        .await?;
    assert!(sent.seq < done.seq);

    // Fire: the egress lock is released on the device, and nobody may lock it.
    sim.set_discrete(1, 1, true);
    wait_until("the fire releases the lock", || !sim.coil(1, 1)).await?;
    let lock = json!({"point": "io.lock", "value": true});
    let (status, body) = admin.post("/api/v1/devices/io/commands", &lock).await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "interlock");
    assert!(!sim.coil(1, 1), "the refused lock never reached the device");
    let (_, rules) = admin.get("/api/v1/rules/status").await?;
    assert_eq!(rules["interlock"], true);

    // The fire panel is reset: locking works again.
    sim.set_discrete(1, 1, false);
    admin
        .wait_for("/api/v1/rules/status", WAIT, |r| {
            r["interlock"] == json!(false)
        })
        .await?;
    let (status, body) = admin.post("/api/v1/devices/io/commands", &lock).await?;
    assert_eq!(status, 200, "{body}");
    assert!(sim.coil(1, 1));
    Ok(())
}

#[tokio::test]
async fn a_changed_config_file_reloads_the_rules_keeping_modes_and_a_broken_one_is_refused()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    let folder = tempfile::tempdir()?;
    let agent = AgentProcess::start_site(
        folder.path(),
        &format!(
            "{}{}",
            harness::door_device("io", sim.addr(), 50),
            harness::door_rule("io")
        ),
    )
    .await?;
    let guard = agent.api(GUARD_TOKEN);
    let (status, body) = guard
        .put("/api/v1/zones/lobby/mode", &json!({"mode": "armed_night"}))
        .await?;
    assert_eq!(status, 200, "{body}");

    // A new title: taken over without a restart; the lobby stays as the guard set it.
    let original = std::fs::read_to_string(&agent.config)?;
    let changed = original.replace("Door of io opened while armed", "Reloaded: {point} open");
    assert_ne!(changed, original);
    std::fs::write(&agent.config, &changed)?;
    wait_for_log(&agent, "rules reloaded").await?;
    let (_, zones) = guard.get("/api/v1/zones").await?;
    assert_eq!(zones[0]["mode"], "armed_night", "{zones}");
    sim.set_discrete(1, 0, true);
    let incident = guard
        .wait_for("/api/v1/incidents?state=open", WAIT, |page| {
            page["items"][0]["title"].is_string()
        })
        .await?;
    assert_eq!(incident["items"][0]["title"], "Reloaded: io.door open");

    // A broken change is refused with its line; the running rules stay.
    let broken = changed.replace("point = \"io.door\", value", "point = \"io.dor\", value");
    std::fs::write(&agent.config, &broken)?;
    let line = broken
        .lines()
        .position(|l| l.contains("io.dor\""))
        .map_or(0, |i| i + 1);
    wait_for_log(&agent, "the changed config is refused").await?;
    assert!(
        agent.log().contains(&format!("site.toml:{line}:")),
        "{}",
        agent.log()
    );
    sim.set_discrete(1, 0, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.set_discrete(1, 0, true);
    guard
        .wait_for("/api/v1/incidents/1", WAIT, |i| {
            i["evidence"].as_array().is_some_and(|e| e.len() == 2)
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_entry_delay_running_when_the_agent_is_killed_raises_after_the_restart()
-> anyhow::Result<()> {
    let sim = harness::simulator().await?;
    let folder = tempfile::tempdir()?;
    let rule = harness::door_rule("io").replace(
        "opened while armed\" }",
        "opened while armed\", delay = \"entry\" }",
    );
    let mut agent = AgentProcess::start_site(
        folder.path(),
        &format!("{}{rule}", harness::door_device("io", sim.addr(), 50)),
    )
    .await?;
    let config = std::fs::read_to_string(&agent.config)?.replace(
        "mode = \"armed_away\"",
        "mode = \"armed_away\"\nentry_delay = \"2s\"",
    );
    std::fs::write(&agent.config, config)?;
    let guard = agent.api(GUARD_TOKEN);
    guard
        .wait_for("/api/v1/rules/status", WAIT, |r| {
            r["zones"][0]["mode"] == json!("armed_away")
        })
        .await?;
    // Wait for the reload that brought the entry delay in.
    wait_for_log(&agent, "rules reloaded").await?;

    // The door opens; once that is committed (the entry delay with it), the agent is killed.
    sim.set_discrete(1, 0, true);
    let point = guard
        .wait_for("/api/v1/points/io.door", WAIT, |p| {
            p["value"] == json!(true)
        })
        .await?;
    let (_, before) = guard.get("/api/v1/incidents").await?;
    agent.kill9()?;
    assert_eq!(before["items"], json!([]), "still within the entry delay");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let port = agent.api.port();
    let agent = AgentProcess::start_with(&agent.config, port).await?;
    let guard = agent.api(GUARD_TOKEN);
    let page = guard
        .wait_for("/api/v1/incidents", WAIT, |page| {
            page["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        })
        .await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{page}");
    // Its evidence is the observation from before the kill; the open door seen again after
    // the restart is the same state, not a new trigger.
    let observed: Vec<gatehouse_protocol::Event> =
        guard.all_events("point=io.door&kind=observation").await?;
    let opened = observed
        .iter()
        .find(|e| matches!(&e.body, EventBody::Observation { value: Some(v), .. } if *v == gatehouse_protocol::Value::Bool(true)))
        .map(|e| e.seq);
    assert_eq!(
        items[0]["evidence"][0]["seq"].as_u64(),
        opened,
        "{point} {page}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, page) = guard.get("/api/v1/incidents").await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    Ok(())
}

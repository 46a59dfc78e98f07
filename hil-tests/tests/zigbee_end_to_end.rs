//! The edge agent binary with a zigbee2mqtt bridge: a site's Mosquitto, a test client
//! publishing what zigbee2mqtt documents, and the agent's REST API and stream.

use std::time::Duration;

use gatehouse_hil_tests::broker::LocalBroker;
use gatehouse_hil_tests::harness::{
    AgentProcess, GUARD_TOKEN, INTEGRATOR_TOKEN, StreamClient, incident_change,
};
use gatehouse_protocol::IncidentChange;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// A door sensor and a lock, as zigbee2mqtt lists them in `bridge/devices`.
const DEVICES: &str = r#"[
  {"ieee_address":"0x00158d0001a2b3c4","type":"EndDevice","friendly_name":"lobby/door",
   "definition":{"model":"MCCGQ11LM","vendor":"Xiaomi","exposes":[
     {"type":"binary","name":"contact","property":"contact","access":1,"value_on":false,"value_off":true},
     {"type":"numeric","name":"battery","property":"battery","access":1,"unit":"%"}]}},
  {"ieee_address":"0x0017880100000002","type":"Router","friendly_name":"lobby/lock",
   "definition":{"model":"YRD226HA2619","vendor":"Yale","exposes":[
     {"type":"lock","features":[
       {"type":"binary","name":"state","property":"state","access":7,"value_on":"LOCK","value_off":"UNLOCK"}]}]}}
]"#;

fn zigbee_site(port: u16) -> String {
    format!(
        r#"
[[zigbee.bridges]]
id = "z2m"
broker = "mqtt://127.0.0.1:{port}"

[[zigbee.devices]]
id = "door"
ieee_address = "0x00158d0001a2b3c4"
zone = "lobby"
[[zigbee.devices.points]]
id = "door.contact"
property = "contact"

[[zigbee.devices]]
id = "lock"
ieee_address = "0x0017880100000002"
zone = "lobby"
[[zigbee.devices.points]]
id = "lock.state"
property = "state"
writable = true

[[rules]]
id = "door-open"
when.event = {{ point = "door.contact", value = "value == false" }}
if = {{ modes = ["armed_away"] }}
then = [{{ raise = {{ severity = "high", title = "Lobby door opened" }} }}]
"#
    )
}

#[tokio::test]
async fn a_zigbee_door_raises_an_incident_and_a_zigbee_lock_takes_a_command() -> anyhow::Result<()>
{
    let broker = LocalBroker::start()?;
    let (zigbee, mut events) = AsyncClient::new(
        MqttOptions::new("zigbee2mqtt", "127.0.0.1", broker.port),
        64,
    );
    zigbee
        .subscribe("zigbee2mqtt/+/+/set", QoS::AtLeastOnce)
        .await?;
    for (topic, payload) in [
        ("zigbee2mqtt/bridge/state", r#"{"state":"online"}"#),
        ("zigbee2mqtt/bridge/devices", DEVICES),
        (
            "zigbee2mqtt/lobby/door/availability",
            r#"{"state":"online"}"#,
        ),
        ("zigbee2mqtt/lobby/door", r#"{"contact":true,"battery":97}"#),
        ("zigbee2mqtt/lobby/lock", r#"{"state":"UNLOCK"}"#),
    ] {
        zigbee
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await?;
    }
    // zigbee2mqtt's part: answer a lock's /set with the new state.
    let (sets, mut set_requests) = tokio::sync::mpsc::unbounded_channel();
    let responder = zigbee.clone();
    let driver = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&publish.payload).unwrap_or_default();
                    let _ = sets.send((publish.topic.clone(), body.clone()));
                    if let Some(name) = publish.topic.strip_suffix("/set") {
                        let _ =
                            responder.try_publish(name, QoS::AtLeastOnce, true, body.to_string());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });

    let folder = tempfile::tempdir()?;
    let agent = AgentProcess::start_site(folder.path(), &zigbee_site(broker.port)).await?;
    let guard = agent.api(GUARD_TOKEN);
    let (status, devices) = guard.get("/api/v1/devices").await?;
    assert_eq!(status, 200, "{devices}");
    assert_eq!(devices[0]["protocol"], "zigbee2mqtt");
    guard
        .wait_for("/api/v1/devices/door", WAIT, |d| d["status"] == "online")
        .await?;
    guard
        .wait_for("/api/v1/points/door.contact", WAIT, |p| {
            p["value"] == json!(true)
        })
        .await?;
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, None).await?;

    zigbee
        .publish(
            "zigbee2mqtt/lobby/door",
            QoS::AtLeastOnce,
            false,
            r#"{"contact":false,"battery":97}"#,
        )
        .await?;
    stream
        .wait_for(WAIT, |e| {
            incident_change(e).is_some_and(|(c, _)| c == IncidentChange::Opened)
        })
        .await?;

    let integrator = agent.api(INTEGRATOR_TOKEN);
    let (status, body) = integrator
        .post(
            "/api/v1/devices/lock/commands",
            &json!({"point": "lock.state", "value": true}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["status"], "done");
    let (topic, request) = tokio::time::timeout(WAIT, set_requests.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no /set"))?;
    assert_eq!(topic, "zigbee2mqtt/lobby/lock/set");
    assert_eq!(request, json!({"state": "LOCK"}));
    integrator
        .wait_for("/api/v1/points/lock.state", WAIT, |p| {
            p["value"] == json!(true)
        })
        .await?;
    let events = integrator.all_events("point=door.contact").await?;
    assert_eq!(events.len(), 2, "{events:?}");
    driver.abort();
    Ok(())
}

//! The bridge against a real Mosquitto, fed zigbee2mqtt's messages as it documents them by a
//! test client standing in for zigbee2mqtt.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_protocol::{CommandOutcome, DeviceStatus, EventBody, PointId, Quality, Value};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::test_helpers::{Agent, PlainBroker, all_events, site_config_from};

use super::ZigbeeBridge;

/// A `bridge/devices` payload in zigbee2mqtt's documented shape: the coordinator, a
/// contact sensor, a lock with its specific expose, and a device not yet interviewed.
pub(crate) const DEVICES: &str = r#"[
  {"ieee_address":"0x00124b0000000001","type":"Coordinator","network_address":0,
   "supported":false,"friendly_name":"Coordinator","definition":null,"interview_completed":true},
  {"ieee_address":"0x00158d0001a2b3c4","type":"EndDevice","network_address":1234,
   "supported":true,"friendly_name":"lobby/door","power_source":"Battery",
   "definition":{"model":"MCCGQ11LM","vendor":"Xiaomi","description":"Door and window sensor",
     "exposes":[
       {"type":"binary","name":"contact","property":"contact","access":1,"value_on":false,"value_off":true},
       {"type":"numeric","name":"battery","property":"battery","access":1,"unit":"%","value_min":0,"value_max":100},
       {"type":"numeric","name":"linkquality","property":"linkquality","access":1,"unit":"lqi"}]}},
  {"ieee_address":"0x0017880100000002","type":"Router","friendly_name":"back lock",
   "definition":{"model":"YRD226HA2619","vendor":"Yale","exposes":[
     {"type":"lock","features":[
       {"type":"binary","name":"state","property":"state","access":7,"value_on":"LOCK","value_off":"UNLOCK"},
       {"type":"enum","name":"lock_state","property":"lock_state","access":1,
        "values":["not_fully_locked","locked","unlocked"]}]},
     {"type":"composite","name":"warning","property":"warning","access":2,"features":[
       {"type":"enum","name":"mode","property":"mode","access":2,"values":["stop","burglar"]}]}]}},
  {"ieee_address":"0x0017880100000003","type":"EndDevice","friendly_name":"new","definition":null}
]"#;

const BASE: &str = "zigbee2mqtt";

/// A site with one bridge: the door sensor and the lock of [`DEVICES`] by IEEE address, and a
/// motion sensor zigbee2mqtt does not know.
fn site(port: u16) -> String {
    site_with(&format!("broker = \"mqtt://127.0.0.1:{port}\"\n"))
}

/// [`site`] with `broker` (the bridge's connection settings).
fn site_with(broker: &str) -> String {
    format!(
        r#"
[site]
id = "test-site"
name = "Test site"
[api]
listen = "127.0.0.1:0"
[[zigbee.bridges]]
id = "z2m"
{broker}confirm_timeout_ms = 500
reconnect_initial_ms = 100
reconnect_max_ms = 400
[[zigbee.devices]]
id = "door"
ieee_address = "0x00158d0001a2b3c4"
[[zigbee.devices.points]]
id = "door.contact"
property = "contact"
[[zigbee.devices.points]]
id = "door.battery"
property = "battery"
[[zigbee.devices]]
id = "lock"
ieee_address = "0x0017880100000002"
[[zigbee.devices.points]]
id = "lock.state"
property = "state"
writable = true
[[zigbee.devices.points]]
id = "lock.siren"
property = "warning"
writable = true
[[zigbee.devices]]
id = "motion"
ieee_address = "0x00158d00000000ff"
[[zigbee.devices.points]]
id = "motion.occupancy"
property = "occupancy"
"#
    )
}

/// The agent's side with the bridge adapter of [`site`] on the broker at `port`.
fn start_agent(port: u16) -> anyhow::Result<Agent> {
    start_site(&site(port))
}

/// The agent's side with the (first) bridge adapter of `site`.
fn start_site(site: &str) -> anyhow::Result<Agent> {
    let config = site_config_from(site);
    let bridge = config.zigbee.bridges[0].clone();
    let adapter = ZigbeeBridge::new(bridge, config.zigbee.devices.clone(), "agent".into())?;
    Ok(Agent::start(&config, vec![Arc::new(adapter)]))
}

/// A test client in zigbee2mqtt's place: publishes its messages, sees the `/set` requests.
struct Zigbee2Mqtt {
    client: AsyncClient,
    sets: mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl Zigbee2Mqtt {
    async fn connect(port: u16) -> anyhow::Result<Zigbee2Mqtt> {
        Self::connect_with(MqttOptions::new("zigbee2mqtt", "127.0.0.1", port)).await
    }

    async fn connect_with(options: MqttOptions) -> anyhow::Result<Zigbee2Mqtt> {
        let (client, mut events) = AsyncClient::new(options, 64);
        let (sender, sets) = mpsc::unbounded_channel();
        let (connected, ready) = oneshot::channel();
        let mut connected = Some(connected);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(connected) = connected.take() {
                            let _ = connected.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if let Some(name) = publish
                            .topic
                            .strip_prefix("zigbee2mqtt/")
                            .and_then(|rest| rest.strip_suffix("/set"))
                        {
                            let body = serde_json::from_slice(&publish.payload)
                                .unwrap_or(serde_json::Value::Null);
                            let _ = sender.send((name.to_owned(), body));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready).await??;
        client.subscribe("zigbee2mqtt/#", QoS::AtLeastOnce).await?;
        Ok(Zigbee2Mqtt { client, sets, task })
    }

    async fn publish(&self, topic: &str, payload: &str, retain: bool) -> anyhow::Result<()> {
        self.client
            .publish(
                format!("{BASE}/{topic}"),
                QoS::AtLeastOnce,
                retain,
                payload.to_owned(),
            )
            .await?;
        Ok(())
    }

    /// What zigbee2mqtt has retained at a site: bridge online, the device list, availability
    /// (the door's in the JSON form, the lock's in the legacy plain form), the door's state.
    async fn retained(&self) -> anyhow::Result<()> {
        self.publish("bridge/state", r#"{"state":"online"}"#, true)
            .await?;
        self.publish("bridge/devices", DEVICES, true).await?;
        self.publish("lobby/door/availability", r#"{"state":"online"}"#, true)
            .await?;
        self.publish("back lock/availability", "online", true)
            .await?;
        self.publish(
            "lobby/door",
            r#"{"contact":true,"battery":91,"linkquality":120,"voltage":3005}"#,
            true,
        )
        .await
    }

    /// The next `/set` request, as (friendly name, payload).
    async fn next_set(&mut self) -> anyhow::Result<(String, serde_json::Value)> {
        tokio::time::timeout(Duration::from_secs(10), self.sets.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("zigbee2mqtt's client stopped"))
    }
}

impl Drop for Zigbee2Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn retained_state_at_connect_live_changes_and_unknown_properties_become_points()
-> anyhow::Result<()> {
    let broker = PlainBroker::start()?;
    let zigbee = Zigbee2Mqtt::connect(broker.port).await?;
    zigbee.retained().await?;
    let agent = start_agent(broker.port)?;

    agent
        .until("the retained state is read", |a| {
            a.good("door.contact", Value::Bool(true)) && a.good("door.battery", Value::Int(91))
        })
        .await;
    agent
        .until("the door is online", |a| {
            a.status_is("door", DeviceStatus::Online, "")
        })
        .await;
    // Properties the config does not name are kept as raw points of the device.
    agent
        .until("raw points", |a| {
            a.good("door.linkquality", Value::Int(120)) && a.good("door.voltage", Value::Int(3005))
        })
        .await;
    // The motion sensor is not in zigbee2mqtt's list at all.
    agent
        .until("the unknown device is offline", |a| {
            a.status_is(
                "motion",
                DeviceStatus::Offline,
                "not in zigbee2mqtt's device list",
            )
        })
        .await;
    agent
        .until("the lock is online", |a| {
            a.status_is("lock", DeviceStatus::Online, "")
        })
        .await;

    zigbee
        .publish(
            "lobby/door",
            r#"{"contact":false,"battery":91,"linkquality":117}"#,
            false,
        )
        .await?;
    agent
        .until("the door opens", |a| {
            a.good("door.contact", Value::Bool(false))
        })
        .await;

    // Malformed messages are counted and change nothing; the next good one is read.
    zigbee
        .publish("lobby/door", r#"{"contact":tru"#, false)
        .await?;
    zigbee.publish("lobby/door", "[1,2,3]", false).await?;
    zigbee.publish("bridge/devices", "{}", false).await?;
    zigbee
        .publish("lobby/door", r#"{"contact":"ajar","battery":90}"#, false)
        .await?;
    agent
        .until("the next good message", |a| {
            a.good("door.battery", Value::Int(90))
        })
        .await;
    let rejected = agent.journal.metrics.encode();
    assert!(
        rejected.contains("gatehouse_zigbee_messages_rejected_total{bridge=\"z2m\"} 3"),
        "{rejected}"
    );
    // A value that is not what the point holds is bad quality, with the reason.
    match agent.value("door.contact") {
        Some((None, Quality::Bad { reason })) => assert!(reason.contains("\"ajar\""), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(agent.status_is("door", DeviceStatus::Online, ""));

    // Only changes are journaled: the retained state once, each change once.
    let contact = PointId::new("door.contact")?;
    let journaled: Vec<Option<Value>> = all_events(&agent.journal.reader)
        .into_iter()
        .filter_map(|event| match event.body {
            EventBody::Observation { point, value, .. } if point == contact => Some(value),
            _ => None,
        })
        .collect();
    assert_eq!(
        journaled,
        vec![Some(Value::Bool(true)), Some(Value::Bool(false)), None]
    );
    agent.stop().await;
    Ok(())
}

#[tokio::test]
async fn availability_renames_removals_and_a_broker_restart_are_followed() -> anyhow::Result<()> {
    let mut broker = PlainBroker::start()?;
    let zigbee = Zigbee2Mqtt::connect(broker.port).await?;
    zigbee.retained().await?;
    let agent = start_agent(broker.port)?;
    agent
        .until("online", |a| a.status_is("door", DeviceStatus::Online, ""))
        .await;

    zigbee
        .publish("lobby/door/availability", r#"{"state":"offline"}"#, true)
        .await?;
    agent
        .until("offline by availability", |a| {
            a.status_is("door", DeviceStatus::Offline, "unavailable")
        })
        .await;
    assert!(matches!(
        agent.value("door.contact"),
        Some((Some(Value::Bool(true)), Quality::Stale { .. }))
    ));
    zigbee
        .publish("lobby/door/availability", "online", true)
        .await?;
    agent
        .until("online again (legacy form)", |a| {
            a.status_is("door", DeviceStatus::Online, "")
        })
        .await;

    // Renamed in zigbee2mqtt: same IEEE address, new friendly name and topics.
    let renamed = DEVICES.replace("\"lobby/door\"", "\"hall/door\"");
    zigbee.publish("bridge/devices", &renamed, true).await?;
    zigbee
        .publish("hall/door", r#"{"contact":false,"battery":88}"#, false)
        .await?;
    agent
        .until("the renamed door is read", |a| {
            a.good("door.contact", Value::Bool(false)) && a.good("door.battery", Value::Int(88))
        })
        .await;

    // Removed from zigbee2mqtt: offline with the reason.
    let without_lock = serde_json::to_string(
        &serde_json::from_str::<Vec<serde_json::Value>>(&renamed)?
            .into_iter()
            .filter(|device| device["friendly_name"] != "back lock")
            .collect::<Vec<_>>(),
    )?;
    zigbee
        .publish("bridge/devices", &without_lock, true)
        .await?;
    agent
        .until("the removed lock is offline", |a| {
            a.status_is(
                "lock",
                DeviceStatus::Offline,
                "not in zigbee2mqtt's device list",
            )
        })
        .await;

    // The broker goes away (a kill, nothing retained: persistence is off) and comes back;
    // zigbee2mqtt publishes its retained state again when it reconnects.
    drop(zigbee);
    broker.restart()?;
    agent
        .until("offline while the broker is down", |a| {
            a.status_is(
                "door",
                DeviceStatus::Offline,
                "cannot reach zigbee2mqtt's broker",
            )
        })
        .await;
    let zigbee = Zigbee2Mqtt::connect(broker.port).await?;
    zigbee.retained().await?;
    agent
        .until("online after the broker restart", |a| {
            a.status_is("door", DeviceStatus::Online, "")
                && a.good("door.contact", Value::Bool(true))
        })
        .await;
    assert!(
        agent
            .journal
            .metrics
            .encode()
            .contains("gatehouse_zigbee_reconnects_total{bridge=\"z2m\"}")
    );
    agent.stop().await;
    Ok(())
}

#[tokio::test]
async fn commands_are_published_to_set_and_done_when_the_state_comes_back() -> anyhow::Result<()> {
    let broker = PlainBroker::start()?;
    let mut zigbee = Zigbee2Mqtt::connect(broker.port).await?;
    zigbee.retained().await?;
    let agent = start_agent(broker.port)?;
    agent
        .until("lock online", |a| {
            a.status_is("lock", DeviceStatus::Online, "")
        })
        .await;

    // zigbee2mqtt locks and reports the new state: done.
    let (sent, answered) = tokio::join!(
        agent.command("lock", "lock.state", Value::Bool(true)),
        async {
            let set = zigbee.next_set().await?;
            zigbee
                .publish(
                    "back lock",
                    r#"{"state":"LOCK","lock_state":"locked"}"#,
                    false,
                )
                .await?;
            anyhow::Ok(set)
        }
    );
    assert_eq!(sent?, CommandOutcome::Done);
    assert_eq!(
        answered?,
        ("back lock".to_owned(), serde_json::json!({"state": "LOCK"}))
    );
    agent
        .until("the lock reads locked", |a| {
            a.good("lock.state", Value::Bool(true))
        })
        .await;

    // The lock does not report back in time: unconfirmed, with the reason.
    let outcome = agent
        .command("lock", "lock.state", Value::Bool(false))
        .await?;
    assert!(
        matches!(&outcome, CommandOutcome::Unconfirmed { reason } if reason.contains("did not report `state` = \"UNLOCK\"")),
        "{outcome:?}"
    );
    assert_eq!(
        zigbee.next_set().await?,
        (
            "back lock".to_owned(),
            serde_json::json!({"state": "UNLOCK"})
        )
    );

    // A siren's warning is sent, but zigbee2mqtt never reports it back.
    let outcome = agent
        .command("lock", "lock.siren", Value::Bool(true))
        .await?;
    assert!(
        matches!(outcome, CommandOutcome::Unconfirmed { .. }),
        "{outcome:?}"
    );
    let (name, body) = zigbee.next_set().await?;
    assert_eq!(
        (name.as_str(), &body["warning"]["mode"]),
        ("back lock", &serde_json::json!("emergency"))
    );

    // Refused before anything is sent: a read-only point, an offline device.
    let outcome = agent
        .command("door", "door.contact", Value::Bool(true))
        .await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("not writable")),
        "{outcome:?}"
    );
    let outcome = agent
        .command("motion", "motion.occupancy", Value::Bool(true))
        .await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { .. }),
        "{outcome:?}"
    );
    zigbee
        .publish("back lock/availability", "offline", true)
        .await?;
    agent
        .until("lock offline", |a| {
            a.status_is("lock", DeviceStatus::Offline, "")
        })
        .await;
    let outcome = agent
        .command("lock", "lock.state", Value::Bool(true))
        .await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("device offline")),
        "{outcome:?}"
    );

    // Every outcome is journaled.
    let outcomes = all_events(&agent.journal.reader)
        .into_iter()
        .filter(|event| matches!(event.body, EventBody::Command { .. }))
        .count();
    assert_eq!(outcomes, 6);
    agent.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_configured_property_the_model_does_not_expose_degrades_the_device() -> anyhow::Result<()>
{
    let broker = PlainBroker::start()?;
    let zigbee = Zigbee2Mqtt::connect(broker.port).await?;
    // The door sensor's model without its battery expose.
    let without_battery = DEVICES.replace(
        r#"{"type":"numeric","name":"battery","property":"battery","access":1,"unit":"%","value_min":0,"value_max":100},"#,
        "",
    );
    assert_ne!(without_battery, DEVICES);
    zigbee
        .publish("bridge/devices", &without_battery, true)
        .await?;
    zigbee
        .publish("lobby/door", r#"{"contact":true}"#, true)
        .await?;
    let agent = start_agent(broker.port)?;
    agent
        .until("degraded", |a| {
            a.status_is(
                "door",
                DeviceStatus::Degraded,
                "Xiaomi MCCGQ11LM does not expose `battery`",
            )
        })
        .await;
    agent
        .until("still read", |a| a.good("door.contact", Value::Bool(true)))
        .await;
    agent.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_broker_with_tls_and_a_password_is_reached_and_a_wrong_password_is_reported()
-> anyhow::Result<()> {
    use gatehouse_relay::pki::{FleetCa, Validity};
    let ca = FleetCa::generate("Site broker CA")?;
    let server = ca.issue_server_cert(
        &["localhost", "127.0.0.1"],
        Validity::starting_now(Duration::from_secs(3600)),
    )?;
    let files = tempfile::tempdir()?;
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let password_file = files.path().join("password");
    std::fs::write(&password_file, "s3cret\n")?;
    let wrong_password_file = files.path().join("wrong");
    std::fs::write(&wrong_password_file, "guess")?;
    let broker = PlainBroker::start_with(|folder| {
        std::fs::write(folder.join("server.pem"), &server.cert_pem)?;
        std::fs::write(folder.join("server.key"), &server.key_pem)?;
        std::fs::write(folder.join("ca.pem"), ca.cert_pem())?;
        let passwords = folder.join("passwords");
        let made = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["gatehouse", "s3cret"])
            .status()?;
        anyhow::ensure!(made.success(), "mosquitto_passwd failed");
        // zigbee2mqtt's own account.
        let made = std::process::Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwords)
            .args(["zigbee2mqtt", "z2m"])
            .status()?;
        anyhow::ensure!(made.success(), "mosquitto_passwd failed");
        Ok(format!(
            "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n\
             tls_version tlsv1.3\n",
            passwords.display(),
            folder.join("ca.pem").display(),
            folder.join("server.pem").display(),
            folder.join("server.key").display(),
        ))
    })?;

    let mut options = MqttOptions::new("zigbee2mqtt", "127.0.0.1", broker.port);
    let roots = gatehouse_transport::root_store(gatehouse_transport::certificates_from_pem(
        ca.cert_pem().as_bytes(),
    )?)?;
    options
        .set_credentials("zigbee2mqtt", "z2m")
        .set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            Arc::new(gatehouse_transport::tls13_client_config(roots, None)?),
        )));
    let zigbee = Zigbee2Mqtt::connect_with(options).await?;
    zigbee.retained().await?;

    let settings = |password: &std::path::Path| {
        format!(
            "broker = \"mqtts://127.0.0.1:{}\"\nusername = \"gatehouse\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            broker.port,
            password.display(),
            ca_file.display()
        )
    };
    let agent = start_site(&site_with(&settings(&password_file)))?;
    agent
        .until("read over TLS with a password", |a| {
            a.status_is("door", DeviceStatus::Online, "")
                && a.good("door.contact", Value::Bool(true))
        })
        .await;
    agent.stop().await;

    let refused = start_site(&site_with(&settings(&wrong_password_file)))?;
    refused
        .until("a wrong password is reported", |a| {
            a.status_is(
                "door",
                DeviceStatus::Offline,
                "cannot reach zigbee2mqtt's broker",
            )
        })
        .await;
    let (_, reason) = refused
        .status("door")
        .unwrap_or((DeviceStatus::Online, None));
    let reason = reason.unwrap_or_default();
    assert!(
        !reason.contains("guess"),
        "the password must not be shown: {reason}"
    );
    refused.stop().await;
    Ok(())
}

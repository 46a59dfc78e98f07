//! The adapter against a BACpypes3 device (`hil-tests/peers/bacnet_device.py`, started as
//! the codec's interop tests start it), and against a scripted device for the answers
//! BACpypes3 does not give (Reject of ReadPropertyMultiple, an object-list only readable
//! element by element, status-flags in fault, an Error to a write).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_bacnet::services::{CovNotification, IAm, PropertyValue, ReadPropertyAck};
use gatehouse_bacnet::{
    AbortReason, Apdu, ApplicationValue, BitString, Bvlc, ComplexAck, ConfirmedRequest,
    ConfirmedRequestHeader, ConfirmedServiceChoice, ErrorClass, ErrorClassAndCode, ErrorCode, Npdu,
    ObjectIdentifier, ObjectType, PropertyIdentifier, RejectReason, Segmentation,
    UnconfirmedRequest, Value as BacnetValue,
};
use gatehouse_protocol::{CommandOutcome, DeviceStatus, Quality, Value};

use super::BacnetNetwork;
use super::peer::{Bacpypes3Device, DEVICE_INSTANCE};
use crate::api::Catalog;
use crate::config::Config;
use crate::test_helpers::{Agent, site_config_from};

/// The peer's objects as points.
const POINTS: &str = r#"
[[bacnet.devices.points]]
id = "temp"
object = "analog-input:1"
unit = "°C"
[[bacnet.devices.points]]
id = "door"
object = "binary-input:1"
[[bacnet.devices.points]]
id = "lock"
object = "binary-output:1"
writable = true
priority = 8
[[bacnet.devices.points]]
id = "mode"
object = "multi-state-value:1"
writable = true
"#;

/// A UDP port free a moment ago on 127.0.0.1, for the agent to bind.
fn free_port() -> anyhow::Result<u16> {
    Ok(StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A site with one BACnet device `ahu` of instance `instance`: `network` goes into
/// `[bacnet]`, `device` into its `[[bacnet.devices]]`.
fn site(port: u16, network: &str, instance: u32, device: &str, points: &str) -> String {
    format!(
        r#"
[site]
id = "test-site"
name = "Test site"
[api]
listen = "127.0.0.1:0"
[bacnet]
bind = "127.0.0.1:{port}"
timeout_ms = 300
retries = 1
rediscover_initial_ms = 100
rediscover_max_ms = 400
{network}
[[bacnet.devices]]
id = "ahu"
device_instance = {instance}
{device}
{points}"#
    )
}

/// The agent with the BACnet adapter of `site`; its config and its BACnet/IP address.
fn start(
    network: &str,
    instance: u32,
    device: &str,
    points: &str,
) -> anyhow::Result<(Agent, Config, SocketAddr)> {
    let port = free_port()?;
    let config = site_config_from(&site(port, network, instance, device, points));
    let adapter = BacnetNetwork::new(config.bacnet.clone());
    let agent = Agent::start(&config, vec![Arc::new(adapter)]);
    Ok((agent, config, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}

/// The agent polling the BACpypes3 device at its address every 200 ms.
fn start_polling(peer: &Bacpypes3Device, device: &str) -> anyhow::Result<(Agent, Config)> {
    let device = format!("address = \"{}\"\n{device}", peer.addr);
    let (agent, config, _) = start("", DEVICE_INSTANCE, &device, POINTS)?;
    Ok((agent, config))
}

fn online(agent: &Agent) -> bool {
    agent.status_is("ahu", DeviceStatus::Online, "")
}

/// The peer's values at its start.
fn initial_values(agent: &Agent) -> bool {
    agent.good("temp", Value::Float(21.5))
        && agent.good("door", Value::Bool(false))
        && agent.good("lock", Value::Bool(false))
        && agent.good("mode", Value::Int(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_found_by_who_is_is_read_and_its_changes_polled() -> anyhow::Result<()> {
    let mut peer = Bacpypes3Device::start()?;
    // No address: Who-Is goes to the broadcast address, here the peer's (it serves unicast).
    let network = format!("broadcast = \"{}\"", peer.addr);
    let (agent, config, _) = start(&network, DEVICE_INSTANCE, "poll_interval_ms = 200", POINTS)?;

    agent.until("the device online", online).await;
    agent.until("every point read", initial_values).await;
    peer.command("set_ai 25.5")?;
    peer.command("set_bi active")?;
    peer.command("set_msv 3")?;
    agent
        .until("the changes polled", |a| {
            a.good("temp", Value::Float(25.5))
                && a.good("door", Value::Bool(true))
                && a.good("mode", Value::Int(3))
        })
        .await;

    let devices = Catalog::from_config(&config).devices(&agent.journal.live);
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].protocol, "bacnet_ip");
    assert_eq!(devices[0].status, Some(DeviceStatus::Online));
    assert!(devices[0].address.contains("1234"), "{devices:?}");
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cov_notifications_bring_changes_before_the_next_poll() -> anyhow::Result<()> {
    for confirmed in [false, true] {
        let mut peer = Bacpypes3Device::start()?;
        // The first poll reads everything; the next is an hour away: only COV can tell.
        let device = format!("poll_interval_ms = 3600000\ncov = true\ncov_confirmed = {confirmed}");
        let (agent, _) = start_polling(&peer, &device)?;
        agent.until("every point read", initial_values).await;

        peer.command("set_ai 30")?;
        peer.command("set_bi active")?;

        agent
            .until(&format!("COV (confirmed: {confirmed}) seen"), |a| {
                a.good("temp", Value::Float(30.0)) && a.good("door", Value::Bool(true))
            })
            .await;
        assert!(online(&agent), "{:?}", agent.status("ahu"));
        agent.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_the_points_priority_commands_the_output_until_relinquished()
-> anyhow::Result<()> {
    let mut peer = Bacpypes3Device::start()?;
    let (agent, _) = start_polling(&peer, "poll_interval_ms = 200")?;
    agent.until("every point read", initial_values).await;

    let outcome = agent.command("ahu", "lock", Value::Bool(true)).await?;
    assert_eq!(outcome, CommandOutcome::Done);
    assert_eq!(peer.command("get_bo_priority 8")?, "active");
    assert_eq!(peer.command("get_bo")?, "active");
    agent
        .until("the write read back", |a| a.good("lock", Value::Bool(true)))
        .await;

    let outcome = agent
        .command("ahu", "lock", Value::Text("relinquish".into()))
        .await?;
    assert_eq!(outcome, CommandOutcome::Done);
    assert_eq!(peer.command("get_bo_priority 8")?, "null");
    assert_eq!(
        peer.command("get_bo")?,
        "inactive",
        "the relinquish-default"
    );
    agent
        .until("the relinquish read back", |a| {
            a.good("lock", Value::Bool(false))
        })
        .await;

    let outcome = agent
        .command("ahu", "lock", Value::Text("open".into()))
        .await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("relinquish")),
        "{outcome:?}"
    );
    let outcome = agent.command("ahu", "temp", Value::Float(1.0)).await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("not writable")),
        "{outcome:?}"
    );
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_object_degrades_the_device_and_a_write_to_it_fails_with_the_error()
-> anyhow::Result<()> {
    let peer = Bacpypes3Device::start()?;
    let device = format!("address = \"{}\"\npoll_interval_ms = 200", peer.addr);
    let points = format!(
        "{POINTS}[[bacnet.devices.points]]\nid = \"ghost\"\nobject = \"analog-output:9\"\nwritable = true\n"
    );
    let (agent, _, _) = start("", DEVICE_INSTANCE, &device, &points)?;

    agent
        .until("degraded naming the object", |a| {
            a.status_is("ahu", DeviceStatus::Degraded, "analog-output:9")
        })
        .await;
    agent.until("the others read", initial_values).await;
    assert!(
        matches!(agent.value("ghost"), Some((None, Quality::Bad { reason })) if reason.contains("object-list")),
        "{:?}",
        agent.value("ghost")
    );

    let outcome = agent.command("ahu", "ghost", Value::Float(1.0)).await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("object: unknown-object")),
        "{outcome:?}"
    );
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_datagram_is_counted_and_ignored() -> anyhow::Result<()> {
    let mut peer = Bacpypes3Device::start()?;
    let device = format!("address = \"{}\"\npoll_interval_ms = 200", peer.addr);
    let (agent, _, address) = start("", DEVICE_INSTANCE, &device, POINTS)?;
    agent.until("every point read", initial_values).await;

    let sender = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    // A B/IP header announcing 64 octets that are not there; a non-B/IP datagram; an answer
    // to a request nobody made.
    sender.send_to(&[0x81, 0x0A, 0x00, 0x40, 0x01], address)?;
    sender.send_to(b"GET / HTTP/1.1\r\n", address)?;
    let stray = Apdu::SimpleAck {
        invoke_id: 200,
        service: ConfirmedServiceChoice::WRITE_PROPERTY,
    };
    sender.send_to(
        &Bvlc::OriginalUnicast(Npdu::local(stray)).to_bytes()?,
        address,
    )?;

    let metrics = agent.journal.metrics.clone();
    agent
        .until("three datagrams counted", |_| {
            metrics.bacnet_datagrams_rejected.get() >= 3
        })
        .await;
    peer.command("set_ai 19")?;
    agent
        .until("polling goes on", |a| a.good("temp", Value::Float(19.0)))
        .await;
    assert!(online(&agent), "{:?}", agent.status("ahu"));
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A notification names its device by instance number, which anyone on the network can
/// write: one from another address is acknowledged (the protocol asks for it) but not
/// believed. (Notifications from the device itself are recorded: see
/// `cov_notifications_bring_changes_before_the_next_poll`.)
async fn a_cov_notification_from_another_address_is_acknowledged_but_not_believed()
-> anyhow::Result<()> {
    let peer = Bacpypes3Device::start()?;
    let device = format!("address = \"{}\"\npoll_interval_ms = 3600000", peer.addr);
    let (agent, _, address) = start("", DEVICE_INSTANCE, &device, POINTS)?;
    agent.until("every point read", initial_values).await;

    let notification = CovNotification {
        subscriber_process_id: 1,
        initiating_device: ObjectIdentifier::new(ObjectType::DEVICE, DEVICE_INSTANCE),
        monitored_object: ObjectIdentifier::new(ObjectType::ANALOG_INPUT, 1),
        time_remaining_seconds: 60,
        values: vec![PropertyValue {
            property: PropertyIdentifier::PRESENT_VALUE,
            array_index: None,
            value: vec![ApplicationValue::Real(99.0).into()],
            priority: None,
        }],
    };
    let request = Apdu::ConfirmedRequest {
        header: ConfirmedRequestHeader::unsegmented(9),
        request: ConfirmedRequest::CovNotification(notification),
    };
    let rejected_before = agent.journal.metrics.bacnet_datagrams_rejected.get();
    let sender = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sender.set_read_timeout(Some(Duration::from_secs(5)))?;
    sender.send_to(
        &Bvlc::OriginalUnicast(Npdu::local(request)).to_bytes()?,
        address,
    )?;
    let mut buffer = [0; 1500];
    let (length, _) = sender.recv_from(&mut buffer)?;
    let answer = Bvlc::decode(&buffer[..length])?;
    assert_eq!(
        answer.npdu().and_then(Npdu::apdu),
        Some(&Apdu::SimpleAck {
            invoke_id: 9,
            service: ConfirmedServiceChoice::CONFIRMED_COV_NOTIFICATION
        })
    );
    agent
        .until("counted as rejected", |a| {
            a.journal.metrics.bacnet_datagrams_rejected.get() > rejected_before
        })
        .await;
    assert!(
        !agent.good("temp", Value::Float(99.0)),
        "a spoofed value was recorded"
    );
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_device_goes_offline_then_online_with_cov_again() -> anyhow::Result<()> {
    let peer = Bacpypes3Device::start()?;
    let port = peer.addr.port();
    let (agent, _) = start_polling(&peer, "poll_interval_ms = 3600000\ncov = true")?;
    agent.until("every point read", initial_values).await;

    drop(peer);
    let outcome = agent.command("ahu", "lock", Value::Bool(true)).await?;
    assert!(
        matches!(&outcome, CommandOutcome::Unconfirmed { reason } if reason.contains("no answer")),
        "{outcome:?}"
    );
    agent
        .until("offline with the reason", |a| {
            a.status_is("ahu", DeviceStatus::Offline, "no answer")
        })
        .await;
    agent
        .until("the points stale", |a| {
            matches!(
                a.value("temp"),
                Some((Some(Value::Float(_)), Quality::Stale { .. }))
            )
        })
        .await;
    let outcome = agent.command("ahu", "lock", Value::Bool(true)).await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("device offline")),
        "{outcome:?}"
    );

    let mut peer = Bacpypes3Device::start_on(port)?;
    agent.until("found again", online).await;
    agent.until("read again", initial_values).await;
    peer.command("set_ai 28")?;
    agent
        .until("COV subscribed again", |a| {
            a.good("temp", Value::Float(28.0))
        })
        .await;
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_found_through_a_bbmd_as_a_foreign_device() -> anyhow::Result<()> {
    let peer = Bacpypes3Device::start_bbmd()?;
    // No address: Who-Is goes to the BBMD for distribution.
    let network = format!("bbmd = \"{}\"\nbbmd_ttl_s = 60", peer.addr);
    let (agent, _, _) = start(&network, DEVICE_INSTANCE, "poll_interval_ms = 200", POINTS)?;
    agent.until("found through the BBMD", online).await;
    agent.until("every point read", initial_values).await;
    agent.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_does_not_delay_the_others() -> anyhow::Result<()> {
    let mut peer = Bacpypes3Device::start()?;
    let silent = free_port()?;
    let points = POINTS.to_owned()
        + &format!(
            "[[bacnet.devices]]\nid = \"silent\"\ndevice_instance = 99\naddress = \"127.0.0.1:{silent}\"\n\
             [[bacnet.devices.points]]\nid = \"silent.temp\"\nobject = \"analog-input:1\"\n"
        );
    let device = format!("address = \"{}\"\npoll_interval_ms = 200", peer.addr);
    let (agent, _, _) = start("", DEVICE_INSTANCE, &device, &points)?;
    agent.until("every point read", initial_values).await;
    agent
        .until("the silent one offline", |a| {
            a.status_is("silent", DeviceStatus::Offline, "no I-Am")
        })
        .await;
    for value in [22.0, 23.0, 24.0] {
        peer.command(&format!("set_ai {value}"))?;
        agent
            .until("polled on time", |a| a.good("temp", Value::Float(value)))
            .await;
    }
    agent.stop().await;
    Ok(())
}

/// A device that refuses ReadPropertyMultiple (Reject), answers the whole object-list with an
/// Abort (it would need segments), reports its only object in fault, and refuses writes with
/// an Error; the number of ReadPropertyMultiple requests it saw.
async fn scripted_device(socket: tokio::net::UdpSocket, multiple: Arc<AtomicUsize>) {
    const INSTANCE: u32 = 77;
    let device = ObjectIdentifier::new(ObjectType::DEVICE, INSTANCE);
    let value = ObjectIdentifier::new(ObjectType::ANALOG_VALUE, 1);
    let mut buffer = vec![0; 1500];
    while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
        let Some(Apdu::ConfirmedRequest { header, request }) = Bvlc::decode(&buffer[..length])
            .ok()
            .and_then(|bvlc| bvlc.npdu().and_then(Npdu::apdu).cloned())
        else {
            let i_am = Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(IAm {
                device,
                max_apdu_length_accepted: 1476,
                segmentation: Segmentation::NONE,
                vendor_id: 999,
            }));
            if let Ok(bytes) = Bvlc::OriginalUnicast(Npdu::local(i_am)).to_bytes() {
                let _ = socket.send_to(&bytes, from).await;
            }
            continue;
        };
        let invoke_id = header.invoke_id;
        let ack = |object, property, array_index, value: Vec<BacnetValue>| Apdu::ComplexAck {
            invoke_id,
            ack: ComplexAck::ReadProperty(ReadPropertyAck {
                object,
                property,
                array_index,
                value,
            }),
        };
        let answer = match request {
            ConfirmedRequest::ReadPropertyMultiple(_) => {
                multiple.fetch_add(1, Ordering::SeqCst);
                Apdu::Reject {
                    invoke_id,
                    reason: RejectReason::UNRECOGNIZED_SERVICE,
                }
            }
            ConfirmedRequest::ReadProperty(read) => match (read.property, read.array_index) {
                (PropertyIdentifier::OBJECT_LIST, None) => Apdu::Abort {
                    invoke_id,
                    from_server: true,
                    reason: AbortReason::SEGMENTATION_NOT_SUPPORTED,
                },
                (PropertyIdentifier::OBJECT_LIST, Some(index)) => {
                    let element = match index {
                        0 => ApplicationValue::Unsigned(2),
                        1 => ApplicationValue::ObjectIdentifier(device),
                        _ => ApplicationValue::ObjectIdentifier(value),
                    };
                    ack(device, read.property, Some(index), vec![element.into()])
                }
                (PropertyIdentifier::PRESENT_VALUE, _) => ack(
                    value,
                    read.property,
                    None,
                    vec![ApplicationValue::Real(5.0).into()],
                ),
                (property, _) => {
                    let fault = BitString {
                        bits: vec![false, true, false, false],
                    };
                    ack(
                        value,
                        property,
                        None,
                        vec![ApplicationValue::BitString(fault).into()],
                    )
                }
            },
            _ => Apdu::Error {
                invoke_id,
                service: ConfirmedServiceChoice::WRITE_PROPERTY,
                error: ErrorClassAndCode {
                    class: ErrorClass::PROPERTY,
                    code: ErrorCode::WRITE_ACCESS_DENIED,
                },
            },
        };
        if let Ok(bytes) = Bvlc::OriginalUnicast(Npdu::local(answer)).to_bytes() {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_abort_and_error_answers_are_handled() -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = socket.local_addr()?;
    let multiple = Arc::new(AtomicUsize::new(0));
    let device = tokio::spawn(scripted_device(socket, multiple.clone()));
    let points = "[[bacnet.devices.points]]\nid = \"setpoint\"\nobject = \"analog-value:1\"\nwritable = true\n";
    let settings = format!("address = \"{address}\"\npoll_interval_ms = 100");
    let (agent, _, _) = start("", 77, &settings, points)?;

    // The object-list read element by element: the object is there, so the device is online;
    // its value comes by ReadProperty, in fault.
    agent.until("online", online).await;
    agent
        .until("read by ReadProperty, in fault", |a| {
            a.value("setpoint")
                == Some((Some(Value::Float(5.0)), Quality::bad("status-flags: fault")))
        })
        .await;
    let outcome = agent.command("ahu", "setpoint", Value::Float(7.0)).await?;
    assert!(
        matches!(&outcome, CommandOutcome::Failed { reason } if reason.contains("property: write-access-denied")),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        multiple.load(Ordering::SeqCst),
        1,
        "ReadPropertyMultiple asked once, then never again"
    );
    agent.stop().await;
    device.abort();
    Ok(())
}

//! The session's MQTT behaviour against a real Mosquitto (plain TCP on a free loopback port:
//! what is tested here does not depend on TLS; `hil-tests` runs the shipped TLS broker).

use std::net::Ipv4Addr;

use anyhow::{Context as _, bail};

use crate::test_helpers::{PATIENCE, PlainBroker};
use rumqttc::v5::mqttbytes::v5::{ConnAck, Publish};

use super::*;

/// MQTT v5 options for `client_id` on `broker`.
fn broker_options(broker: &PlainBroker, client_id: &str) -> MqttOptions {
    MqttOptions::new(client_id, Ipv4Addr::LOCALHOST.to_string(), broker.port)
}

/// A client driven by [`drive`], as the uplink drives its own; dropping it (or [`gone`])
/// ends its connection without a goodbye, like a power cut.
///
/// [`gone`]: Connection::gone
struct Connection {
    client: AsyncClient,
    incoming: mpsc::Receiver<Result<Event, ConnectionError>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn open<Will>(options: MqttOptions, will: impl FnMut() -> Will + Send + 'static) -> Self
    where
        Will: Future<Output = LastWill> + Send + 'static,
    {
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (events, incoming) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(drive(eventloop, events, stop.clone(), will));
        Connection {
            client,
            incoming,
            stop,
            task,
        }
    }

    /// The first incoming packet `pick` takes, waiting at most [`PATIENCE`].
    async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(Packet) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let event = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .context("nothing of the kind arrived in time")?
                .context("the event loop stopped")?;
            if let Ok(Event::Incoming(packet)) = event
                && let Some(found) = pick(packet)
            {
                return Ok(found);
            }
        }
    }

    async fn connected(&mut self) -> anyhow::Result<ConnAck> {
        self.wait_for(|packet| match packet {
            Packet::ConnAck(connack) => Some(connack),
            _ => None,
        })
        .await
    }

    async fn published(&mut self) -> anyhow::Result<Publish> {
        self.wait_for(|packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, topic: &str) -> anyhow::Result<()> {
        self.client.subscribe(topic, QoS::AtLeastOnce).await?;
        self.wait_for(|packet| matches!(packet, Packet::SubAck(_)).then_some(()))
            .await
    }

    /// Ends the connection without DISCONNECT: the broker keeps the session, if any, and
    /// publishes the will.
    async fn gone(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?;
        Ok(())
    }
}

/// A will on a topic of the test's own, for clients whose will does not matter.
fn no_will(client: &str) -> impl Fn() -> std::future::Ready<LastWill> + Send + 'static {
    let topic = format!("test/{client}/gone");
    move || {
        std::future::ready(LastWill::new(
            topic.clone(),
            Vec::new(),
            QoS::AtMostOnce,
            false,
            None,
        ))
    }
}

#[tokio::test]
async fn the_broker_keeps_the_session_and_what_hq_sent_while_the_appliance_was_away()
-> anyhow::Result<()> {
    let broker = PlainBroker::start()?;
    let appliance_options = || {
        let mut options = broker_options(&broker, "app-1");
        persistent_session(&mut options);
        options
    };
    let mut appliance = Connection::open(appliance_options(), no_will("app-1"));
    appliance.connected().await?;
    appliance
        .subscribe("gatehouse/v1/app-1/down/commands")
        .await?;
    appliance.gone().await?;

    // HQ acts while the appliance is offline.
    let mut hq = Connection::open(broker_options(&broker, "hq"), no_will("hq"));
    hq.connected().await?;
    hq.client
        .publish(
            "gatehouse/v1/app-1/down/commands",
            QoS::AtLeastOnce,
            false,
            "resolve incident 7",
        )
        .await?;
    hq.wait_for(|packet| matches!(packet, Packet::PubAck(_)).then_some(()))
        .await?;

    // Back: the session is there, and the command with it, without subscribing again.
    let mut appliance = Connection::open(appliance_options(), no_will("app-1"));
    let connack = appliance.connected().await?;
    assert!(connack.session_present, "the broker forgot the session");
    let command = appliance.published().await?;
    assert_eq!(&command.payload[..], b"resolve incident 7");
    Ok(())
}

#[tokio::test]
async fn the_last_will_says_when_its_connection_was_made() -> anyhow::Result<()> {
    let mut broker = PlainBroker::start()?;
    let appliance = ApplianceId::new("app-1")?;
    let backlog = outbox::OutboxState {
        acked: 0,
        dropped: 2,
        backlog: 40,
    };
    let mut options = broker_options(&broker, appliance.as_str());
    persistent_session(&mut options);
    let will_of = appliance.clone();
    let mut connection = Connection::open(options, move || {
        std::future::ready(last_will(&will_of, backlog, Timestamp::now()))
    });
    connection.connected().await?;

    // The broker goes away and comes back: the uplink reconnects with a new will.
    let restarted = Timestamp::now();
    broker.restart()?;
    connection.connected().await?;
    connection.gone().await?;

    let mut watcher = Connection::open(broker_options(&broker, "watcher"), no_will("watcher"));
    watcher.connected().await?;
    watcher
        .subscribe(&topic(&appliance, Channel::UpStatus))
        .await?;
    let will = watcher.published().await?;
    assert!(will.retain);
    let pb::envelope::Body::Status(status) = wire::decode(&will.payload)? else {
        bail!("the will is not a status");
    };
    assert!(!status.online);
    assert_eq!((status.outbox_backlog, status.outbox_dropped), (40, 2));
    assert!(
        status.at_us >= restarted.as_microsecond(),
        "the will dates from before the connection that carried it: {} < {}",
        status.at_us,
        restarted.as_microsecond()
    );
    Ok(())
}

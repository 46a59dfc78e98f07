//! BACnet (issue text): points read per second from one BACpypes3 device with
//! ReadPropertyMultiple, through the adapter's own link (`adapters::bacnet::link::Link`: the
//! shared UDP socket, invoke ids, the demultiplexer, the codec).
//!
//! ```text
//! cargo bench -p gatehouse-edge --bench bacnet             # 3 rounds of 2 × 5 s
//! cargo bench -p gatehouse-edge --bench bacnet -- --rounds 5
//! ```
//!
//! Each round starts its own BACpypes3 device (`hil-tests/peers/bacnet_device.py`, started as
//! the codec's interop tests start it; needs the virtualenv of `scripts/setup-test-deps.sh` or
//! `GATEHOUSE_VENV`) and, in this process on a current-thread runtime, a link on 127.0.0.1.
//! A point is one object's present-value and status-flags, as the adapter polls them.
//!
//! Phases, each [`PHASE`] long, one request outstanding at a time (as one device's poll is):
//! - *multiple*: ReadPropertyMultiple of the device's 4 objects (8 properties) per request;
//! - *single*: ReadProperty, 2 requests per point: the fallback, for comparison.
//!
//! Printed per phase: requests/s, points/s, request latency p50 / p99 / max; medians over the
//! rounds last. The device (Python) is the bottleneck by far: these figures say what one
//! BACpypes3 device serves, not what the agent could read from faster devices.

#[path = "../../bacnet/tests/support/peer.rs"]
mod peer;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use gatehouse_bacnet::services::{
    PropertyReference, ReadAccessSpecification, ReadProperty, ReadPropertyMultiple,
};
use gatehouse_bacnet::{Apdu, ComplexAck, ConfirmedRequest, PropertyIdentifier};
use gatehouse_edge::adapters::bacnet::link::Link;
use gatehouse_edge::metrics::Metrics;

use peer::{ANALOG_INPUT, BINARY_INPUT, BINARY_OUTPUT, Bacpypes3Device, MULTI_STATE_VALUE};

const PHASE: Duration = Duration::from_secs(5);
const OBJECTS: [gatehouse_bacnet::ObjectIdentifier; 4] =
    [ANALOG_INPUT, BINARY_INPUT, BINARY_OUTPUT, MULTI_STATE_VALUE];
const PROPERTIES: [PropertyIdentifier; 2] = [
    PropertyIdentifier::PRESENT_VALUE,
    PropertyIdentifier::STATUS_FLAGS,
];

struct Phase {
    requests_per_second: f64,
    points_per_second: f64,
    latency: [Duration; 3],
}

fn main() -> anyhow::Result<()> {
    let mut rounds = 3;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        if argument == "--rounds" {
            rounds = arguments
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(rounds);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results: HashMap<&str, Vec<Phase>> = HashMap::new();
    for round in 1..=rounds {
        let device = Bacpypes3Device::start()?;
        for (name, phase) in runtime.block_on(round_against(&device))? {
            println!(
                "round {round} {name:>8}: {:>7.0} requests/s {:>7.0} points/s  latency p50 {:?} p99 {:?} max {:?}",
                phase.requests_per_second,
                phase.points_per_second,
                phase.latency[0],
                phase.latency[1],
                phase.latency[2]
            );
            results.entry(name).or_default().push(phase);
        }
    }
    for name in ["multiple", "single"] {
        let phases = results.remove(name).unwrap_or_default();
        let median = |key: fn(&Phase) -> f64| {
            let mut values: Vec<f64> = phases.iter().map(key).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        println!(
            "median {name:>8}: {:>7.0} requests/s {:>7.0} points/s  latency p50 {:.2} ms p99 {:.2} ms",
            median(|p| p.requests_per_second),
            median(|p| p.points_per_second),
            median(|p| p.latency[0].as_secs_f64() * 1000.0),
            median(|p| p.latency[1].as_secs_f64() * 1000.0),
        );
    }
    Ok(())
}

async fn round_against(device: &Bacpypes3Device) -> anyhow::Result<Vec<(&'static str, Phase)>> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let (link, _) = Link::new(
        socket,
        Duration::from_secs(2),
        0,
        HashMap::new(),
        None,
        Arc::new(Metrics::default()),
    );
    let link = &link;
    let measure = async {
        let multiple = ConfirmedRequest::ReadPropertyMultiple(ReadPropertyMultiple {
            specifications: OBJECTS
                .iter()
                .map(|object| ReadAccessSpecification {
                    object: *object,
                    properties: PROPERTIES
                        .iter()
                        .map(|p| PropertyReference::new(*p))
                        .collect(),
                })
                .collect(),
        });
        let multiple = phase(link, device, &[multiple], OBJECTS.len()).await?;
        let singles: Vec<ConfirmedRequest> = OBJECTS
            .iter()
            .flat_map(|object| {
                PROPERTIES.iter().map(|property| {
                    ConfirmedRequest::ReadProperty(ReadProperty {
                        object: *object,
                        property: *property,
                        array_index: None,
                    })
                })
            })
            .collect();
        let single = phase(link, device, &singles, OBJECTS.len()).await?;
        anyhow::Ok(vec![("multiple", multiple), ("single", single)])
    };
    tokio::select! {
        error = link.receive() => bail!("the socket failed: {error}"),
        result = measure => result,
    }
}

/// Sends `requests` (together: `points` points) over and over for [`PHASE`].
async fn phase(
    link: &Link,
    device: &Bacpypes3Device,
    requests: &[ConfirmedRequest],
    points: usize,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut rounds = 0;
    while start.elapsed() < PHASE {
        for request in requests {
            let sent = Instant::now();
            let answer = link.request("bench", device.addr, request.clone()).await?;
            latencies.push(sent.elapsed());
            ensure!(
                matches!(
                    answer,
                    Apdu::ComplexAck {
                        ack: ComplexAck::ReadPropertyMultiple(_) | ComplexAck::ReadProperty(_),
                        ..
                    }
                ),
                "unexpected answer {answer:?}"
            );
        }
        rounds += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |fraction: f64| {
        latencies
            .get(
                ((latencies.len() as f64 * fraction) as usize)
                    .min(latencies.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or_default()
    };
    Ok(Phase {
        requests_per_second: latencies.len() as f64 / seconds,
        points_per_second: (rounds * points) as f64 / seconds,
        latency: [at(0.5), at(0.99), at(1.0)],
    })
}

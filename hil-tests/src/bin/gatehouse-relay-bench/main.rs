//! `gatehouse-relay-bench`: the relay's three benchmarks (issue 3), one subcommand each, run
//! by hand (not part of the test suite); `docs/benchmarks.md` ("Relay") has the figures.
//!
//! - `drain`: 1,000,000 events buffered in an offline appliance's outbox; the real agent
//!   reconnects and the relay takes them in. Events/s, against the relay's ingest path without
//!   MQTT ([`drain`]).
//! - `latency`: an incident opened on the edge until an HQ operator's WebSocket on the relay
//!   shows it, against the edge's own WebSocket ([`latency`]).
//! - `fleet`: 2,000 simulated appliances connected at once, 1 event/s each; the relay's and
//!   the broker's CPU and memory, and whether every event was acknowledged, against 100
//!   appliances ([`fleet`]).
//!
//! Everything runs on 127.0.0.1: a real Mosquitto with the shipped configuration over TLS
//! 1.3 ([`TlsBroker`](gatehouse_hil_tests::broker::TlsBroker)), the `gatehouse-relay` binary
//! (a child process, so `/proc` tells its costs apart; [`setup`]) on a fresh PostgreSQL
//! database (or SQLite with `--store sqlite`), and, for `drain` and `latency`, the
//! `gatehouse-edge` binary. Each prints progress on stderr, a summary on stdout, and with
//! `--json FILE` writes its figures.
//!
//! ```text
//! cargo build --release -p gatehouse-edge -p gatehouse-relay -p gatehouse-hil-tests
//! GATEHOUSE_EDGE_BIN=$PWD/target/release/gatehouse-edge \
//! GATEHOUSE_RELAY_BIN=$PWD/target/release/gatehouse-relay \
//!     target/release/gatehouse-relay-bench drain --json drain.json
//! ```

mod drain;
mod fleet;
mod latency;
mod measure;
mod setup;

use clap::{Parser, Subcommand};

/// The relay's benchmarks: backlog drain, incident latency to HQ, and a fleet of appliances.
/// Each starts its own TLS Mosquitto (the shipped configuration), the gatehouse-relay binary
/// ($GATEHOUSE_RELAY_BIN, else target/debug) on a fresh database, and, for drain and latency,
/// the gatehouse-edge binary ($GATEHOUSE_EDGE_BIN, else target/debug). Set both to the release
/// builds to measure them.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// An appliance reconnects with --events (1,000,000) records in its outbox: events/s until
    /// all are committed at the relay (target ≥ 50,000/s), against the relay's ingest path
    /// without MQTT.
    Drain(drain::Args),
    /// Incidents opened on the edge (doors of simulated Modbus controllers): p50/p99 until an
    /// HQ operator's WebSocket on the relay shows them (target p99 < 50 ms), against the
    /// agent's own WebSocket.
    Latency(latency::Args),
    /// --appliances (2,000) simulated appliances at once, each sending events: the relay's
    /// and the broker's CPU and resident memory, and whether every event was acknowledged,
    /// against --baseline-appliances (100).
    Fleet(fleet::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest may be built with rustls without a provider (features unify across the
    // workspace); the clients here speak plain HTTP to loopback, but it must not panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().bench {
        Bench::Drain(args) => drain::run(args).await,
        Bench::Latency(args) => latency::run(args).await,
        Bench::Fleet(args) => fleet::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}

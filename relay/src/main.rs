//! `gatehouse-relay`: the Gatehouse cloud relay (work in progress).

use clap::Parser;

/// The Gatehouse cloud relay. Work in progress: nothing to run yet.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}

//! `gatehouse-modbus-sim`: simulated Modbus TCP devices for the demo and benchmarks.
//!
//! Parses arguments, starts one [`ModbusSim`] per address, runs the demo values if asked, and
//! stops on Ctrl-C or SIGTERM. What a device serves is in `LONG_ABOUT` (`--help`).

use std::{
    io::IsTerminal as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use gatehouse_hil_tests::modbus_sim::{ModbusSim, demo};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

const LONG_ABOUT: &str = "\
Serves simulated Modbus TCP devices until Ctrl-C or SIGTERM, for the Gatehouse demo and
benchmarks. Function codes: 1 read coils, 2 read discrete inputs, 3 read holding registers,
4 read input registers, 5 write single coil, 6 write single register, 15 write multiple coils,
16 write multiple registers; any other answers exception 0x01.

Each device answers as every --unit id; another unit id answers exception 0x0B (gateway target
device failed to respond). Each unit has coils, discrete inputs, holding registers and input
registers at addresses 0-65535, all 0 at start; what clients write to coils and holding
registers stays. Addresses are protocol addresses, 0-based as on the wire (holding register 0
is 40001 in 1-based Modicon notation).

With --demo, every unit of every device also serves, updated once a second:
  discrete input 0       door contact: 0 closed, 1 open; toggles every 10 s, closed first
  holding registers 0-1  temperature in degrees Celsius, IEEE 754 f32, high word in register 0,
                         drifting within 20.4-21.6 around 21.0 (a client's write is overwritten)
  input register 10      counter: seconds since start, +1 every second, wrapping at 65535

Logs go to stderr; RUST_LOG sets the level (default: info).";

/// Simulated Modbus TCP devices for the Gatehouse demo and benchmarks.
#[derive(Debug, Parser)]
#[command(version, long_about = LONG_ABOUT)]
struct Args {
    /// Address to serve one device on; repeat for more devices.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5020")]
    listen: Vec<SocketAddr>,

    /// Serve N devices on consecutive ports from --base-port instead of --listen.
    #[arg(
        long,
        value_name = "N",
        requires = "base_port",
        conflicts_with = "listen"
    )]
    devices: Option<u16>,

    /// First port for --devices.
    #[arg(long, value_name = "PORT", requires = "devices")]
    base_port: Option<u16>,

    /// Interface for --devices.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,

    /// Unit id every device answers as; repeat for more.
    #[arg(long = "unit", value_name = "ID", default_values_t = [1u8])]
    units: Vec<u8>,

    /// Change values over time: door contact, temperature and counter (see above).
    #[arg(long)]
    demo: bool,
}

impl Args {
    /// The addresses to serve devices on.
    fn addresses(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let (Some(devices), Some(base_port)) = (self.devices, self.base_port) else {
            return Ok(self.listen.clone());
        };
        let last_port = u32::from(base_port) + u32::from(devices);
        if devices == 0 || base_port == 0 || last_port > 65536 {
            bail!("--devices {devices} from --base-port {base_port} does not fit in ports 1-65535");
        }
        Ok((0..devices)
            .map(|offset| SocketAddr::new(self.host, base_port + offset))
            .collect())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let mut sims = Vec::new();
    for addr in args.addresses()? {
        let sim = ModbusSim::start(addr).await?;
        args.units.iter().for_each(|&unit| sim.add_unit(unit));
        tracing::info!(addr = %sim.addr(), units = ?args.units, demo = args.demo, "serving a simulated device");
        sims.push(sim);
    }

    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal = signal?, "stopping"),
        () = run_demo(&sims, &args.units), if args.demo => {}
    }
    for sim in &sims {
        sim.go_away().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies the demo values to every unit once a second; never returns.
async fn run_demo(sims: &[ModbusSim], units: &[u8]) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    for second in 0.. {
        ticks.tick().await;
        for sim in sims {
            units
                .iter()
                .for_each(|&unit| demo::apply(sim, unit, second));
        }
        if second % demo::DOOR_PERIOD_SECONDS == 0 {
            tracing::info!(
                door_open = demo::door_open(second),
                temperature = demo::temperature(second),
                counter = second % 65_536,
                "demo values"
            );
        }
    }
}

/// Waits for Ctrl-C or SIGTERM and names it.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT").context("listening for Ctrl-C"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn addresses(args: &[&str]) -> anyhow::Result<Vec<String>> {
        let args = Args::try_parse_from([&["gatehouse-modbus-sim"], args].concat())?;
        Ok(args.addresses()?.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_arguments_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn devices_get_their_addresses() -> anyhow::Result<()> {
        assert_eq!(addresses(&[])?, ["127.0.0.1:5020"]);
        let listen = ["--listen", "127.0.0.1:6000", "--listen", "[::1]:6001"];
        assert_eq!(addresses(&listen)?, ["127.0.0.1:6000", "[::1]:6001"]);
        let consecutive = ["--devices", "3", "--base-port", "7000"];
        assert_eq!(
            addresses(&consecutive)?,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert!(addresses(&["--devices", "2", "--base-port", "65535"]).is_err());
        assert!(addresses(&["--devices", "2"]).is_err(), "needs --base-port");
        assert!(
            addresses(&[
                "--devices",
                "2",
                "--base-port",
                "1",
                "--listen",
                "127.0.0.1:1"
            ])
            .is_err()
        );
        Ok(())
    }
}

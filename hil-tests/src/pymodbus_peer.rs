//! A third-party Modbus device: `peers/pymodbus_device.py` (pymodbus 3.16.1) in a child
//! process, driven over its stdin, so the edge agent is tested against a Modbus stack that is
//! not ours.
//!
//! Over TCP ([`PymodbusPeer::start`]) the device is unit id 1 on 127.0.0.1; over a serial line
//! ([`PymodbusPeer::start_serial`], one end of a [`crate::serial_line::PtyPair`]) it is a Modbus
//! RTU server answering as each of the unit ids it is given, and nobody else. Every unit has
//! [`TABLE_SIZE`] addresses in each of its four tables, numbered as on the wire: what
//! [`PymodbusPeer::set_hr`] sets at N, a client reads at N. Requests past the end answer
//! exception 0x02 (Illegal Data Address). The Python script runs in the virtualenv
//! `scripts/setup-test-deps.sh` creates.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::child_peer::ChildPeer;

/// Addresses in each table of the peer: 0..TABLE_SIZE (a multiple of 16, as pymodbus stores
/// bits in 16-bit words).
pub const TABLE_SIZE: u16 = 128;

/// The peer's script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pymodbus_device.py");

/// How long Python may take to import pymodbus and listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running pymodbus device; killed on drop. Its methods block for one round trip to the
/// child process (a millisecond or so), which is fine inside async tests.
#[derive(Debug)]
pub struct PymodbusPeer {
    addr: SocketAddr,
    peer: ChildPeer,
}

impl PymodbusPeer {
    /// Starts the device on a free port and waits until it listens. Fails, saying to run
    /// `scripts/setup-test-deps.sh`, when the virtualenv is missing.
    pub fn start() -> anyhow::Result<Self> {
        Self::spawn(&["--port", "0"])
    }

    /// Starts a Modbus RTU server on the serial device `port` (8N1 at 19200 baud: Linux
    /// refuses parity on a pseudo-terminal) answering as each of `units`.
    pub fn start_serial(port: &Path, units: &[u8]) -> anyhow::Result<Self> {
        let units: Vec<String> = units.iter().map(u8::to_string).collect();
        let port = port.to_string_lossy();
        Self::spawn(&[
            "--serial",
            &port,
            "--units",
            &units.join(","),
            "--parity",
            "N",
        ])
    }

    fn spawn(link: &[&str]) -> anyhow::Result<Self> {
        let python = venv_python()?;
        let mut command = Command::new(&python);
        command
            .arg(SCRIPT)
            .args(link)
            .args(["--size", &TABLE_SIZE.to_string()]);
        let (peer, ready) = ChildPeer::spawn("the pymodbus peer", command, STARTUP_TIMEOUT)?;
        let port = ready
            .parse::<u16>()
            .with_context(|| format!("expected `ready PORT` from {SCRIPT}, got {ready:?}"))?;
        Ok(Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            peer,
        })
    }

    /// The address the device listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One unit of a serial peer (a TCP peer has only unit 1, the one the methods of
    /// [`PymodbusPeer`] itself address).
    pub fn unit(&self, unit: u8) -> PeerUnit<'_> {
        PeerUnit {
            peer: self,
            unit: Some(unit),
        }
    }

    fn first_unit(&self) -> PeerUnit<'_> {
        PeerUnit {
            peer: self,
            unit: None,
        }
    }

    /// Sets a discrete input.
    pub fn set_di(&self, address: u16, value: bool) -> anyhow::Result<()> {
        self.first_unit().set_di(address, value)
    }

    /// Sets a coil.
    pub fn set_coil(&self, address: u16, value: bool) -> anyhow::Result<()> {
        self.first_unit().set_coil(address, value)
    }

    /// Sets a holding register.
    pub fn set_hr(&self, address: u16, value: u16) -> anyhow::Result<()> {
        self.first_unit().set_hr(address, value)
    }

    /// Sets an input register.
    pub fn set_ir(&self, address: u16, value: u16) -> anyhow::Result<()> {
        self.first_unit().set_ir(address, value)
    }

    /// A holding register, e.g. to check that a client's write arrived.
    pub fn get_hr(&self, address: u16) -> anyhow::Result<u16> {
        self.first_unit().get_hr(address)
    }

    /// A coil, e.g. to check that a client's write arrived.
    pub fn get_coil(&self, address: u16) -> anyhow::Result<bool> {
        self.first_unit().get_coil(address)
    }

    fn command(&self, line: &str) -> anyhow::Result<String> {
        self.peer.command(line)
    }
}

/// The tables of one unit of a peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerUnit<'a> {
    peer: &'a PymodbusPeer,
    /// None: the peer's first unit.
    unit: Option<u8>,
}

impl PeerUnit<'_> {
    /// Runs `verb ARGS [UNIT]` on the peer.
    fn command(&self, verb_and_arguments: &str) -> anyhow::Result<String> {
        match self.unit {
            Some(unit) => self.peer.command(&format!("{verb_and_arguments} {unit}")),
            None => self.peer.command(verb_and_arguments),
        }
    }

    /// Sets a discrete input.
    pub fn set_di(&self, address: u16, value: bool) -> anyhow::Result<()> {
        self.command(&format!("set_di {address} {}", u8::from(value)))
            .map(drop)
    }

    /// Sets a coil.
    pub fn set_coil(&self, address: u16, value: bool) -> anyhow::Result<()> {
        self.command(&format!("set_coil {address} {}", u8::from(value)))
            .map(drop)
    }

    /// Sets a holding register.
    pub fn set_hr(&self, address: u16, value: u16) -> anyhow::Result<()> {
        self.command(&format!("set_hr {address} {value}")).map(drop)
    }

    /// Sets an input register.
    pub fn set_ir(&self, address: u16, value: u16) -> anyhow::Result<()> {
        self.command(&format!("set_ir {address} {value}")).map(drop)
    }

    /// A holding register, e.g. to check that a client's write arrived.
    pub fn get_hr(&self, address: u16) -> anyhow::Result<u16> {
        let answer = self.command(&format!("get_hr {address}"))?;
        answer
            .parse()
            .with_context(|| format!("pymodbus peer answered get_hr with {answer:?}"))
    }

    /// A coil, e.g. to check that a client's write arrived.
    pub fn get_coil(&self, address: u16) -> anyhow::Result<bool> {
        match self.command(&format!("get_coil {address}"))?.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            other => bail!("pymodbus peer answered get_coil with {other:?}"),
        }
    }
}

/// The virtualenv's Python: `$GATEHOUSE_VENV/bin/python`, else `<workspace>/.venv/bin/python`.
fn venv_python() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("GATEHOUSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv")));
    let python = venv.join("bin").join("python");
    if !python.exists() {
        bail!(
            "no Python virtualenv at {} (for pymodbus): run scripts/setup-test-deps.sh, \
             or point GATEHOUSE_VENV at a virtualenv with pymodbus==3.16.1",
            venv.display()
        );
    }
    Ok(python)
}

#[cfg(test)]
mod tests {
    use tokio_modbus::{ExceptionCode, client::tcp, prelude::*};

    use super::*;

    #[tokio::test]
    async fn a_modbus_client_reads_what_the_peer_was_told() -> anyhow::Result<()> {
        let peer = PymodbusPeer::start()?;
        peer.set_hr(0, 1234)?;
        peer.set_hr(TABLE_SIZE - 1, 7)?;
        peer.set_ir(10, 42)?;
        peer.set_di(3, true)?;
        peer.set_coil(TABLE_SIZE - 1, true)?;
        let mut client = tcp::connect_slave(peer.addr(), Slave(1)).await?;

        assert_eq!(client.read_holding_registers(0, 2).await??, [1234, 0]);
        assert_eq!(
            client.read_holding_registers(TABLE_SIZE - 1, 1).await??,
            [7]
        );
        assert_eq!(client.read_input_registers(10, 1).await??, [42]);
        assert_eq!(
            client.read_discrete_inputs(2, 3).await??,
            [false, true, false]
        );
        assert_eq!(client.read_coils(TABLE_SIZE - 1, 1).await??, [true]);
        Ok(())
    }

    #[tokio::test]
    async fn requests_past_the_table_end_answer_illegal_data_address() -> anyhow::Result<()> {
        let peer = PymodbusPeer::start()?;
        let mut client = tcp::connect_slave(peer.addr(), Slave(1)).await?;

        for answer in [
            client.read_holding_registers(TABLE_SIZE - 1, 2).await?,
            client.read_input_registers(TABLE_SIZE, 1).await?,
        ] {
            assert_eq!(answer, Err(ExceptionCode::IllegalDataAddress));
        }
        assert_eq!(
            client.read_coils(TABLE_SIZE, 1).await?,
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            client.write_single_register(TABLE_SIZE, 1).await?,
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert!(
            peer.set_hr(TABLE_SIZE, 1).is_err(),
            "the peer's own commands check too"
        );
        Ok(())
    }

    #[tokio::test]
    async fn client_writes_reach_the_peer() -> anyhow::Result<()> {
        let peer = PymodbusPeer::start()?;
        let mut client = tcp::connect_slave(peer.addr(), Slave(1)).await?;

        client.write_single_register(3, 99).await??;
        client
            .write_multiple_coils(5, &[true, false, true])
            .await??;

        assert_eq!(peer.get_hr(3)?, 99);
        assert_eq!(
            [peer.get_coil(5)?, peer.get_coil(6)?, peer.get_coil(7)?],
            [true, false, true]
        );
        Ok(())
    }
}

//! A BACpypes3 device in a child process ([`Bacpypes3Device`]): the peer of the codec's
//! interop tests and of the agent's BACnet adapter tests (which include this file by path, so
//! both start it the same way).

#![allow(dead_code)] // each test uses part of this module

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use gatehouse_bacnet::{ObjectIdentifier, ObjectType};

/// The peer's script, beside the other third-party peers in hil-tests.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../hil-tests/peers/bacnet_device.py"
);

/// The device instance the tests give the peer.
pub const DEVICE_INSTANCE: u32 = 1234;

pub const DEVICE: ObjectIdentifier = ObjectIdentifier::new(ObjectType::DEVICE, DEVICE_INSTANCE);
pub const ANALOG_INPUT: ObjectIdentifier = ObjectIdentifier::new(ObjectType::ANALOG_INPUT, 1);
pub const BINARY_INPUT: ObjectIdentifier = ObjectIdentifier::new(ObjectType::BINARY_INPUT, 1);
pub const BINARY_OUTPUT: ObjectIdentifier = ObjectIdentifier::new(ObjectType::BINARY_OUTPUT, 1);
pub const MULTI_STATE_VALUE: ObjectIdentifier =
    ObjectIdentifier::new(ObjectType::MULTI_STATE_VALUE, 1);

/// How long Python may take to import BACpypes3 and bind its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the device may take to answer a command or a BACnet request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A BACpypes3 device (`hil-tests/peers/bacnet_device.py`); killed on drop.
pub struct Bacpypes3Device {
    pub addr: SocketAddr,
    child: Child,
    commands: ChildStdin,
    answers: Receiver<String>,
}

impl Bacpypes3Device {
    /// Starts the device on a free port of 127.0.0.1 and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        Self::spawn(0, &[])
    }

    /// Starts the device on `port` (0: a free one).
    pub fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::spawn(port, &[])
    }

    /// Starts the device as a BBMD too, accepting foreign device registrations.
    pub fn start_bbmd() -> anyhow::Result<Self> {
        Self::spawn(0, &["--bbmd"])
    }

    fn spawn(port: u16, options: &[&str]) -> anyhow::Result<Self> {
        let python = python()?;
        let mut child = Command::new(&python)
            .arg(SCRIPT)
            .args([
                "--port",
                &port.to_string(),
                "--instance",
                &DEVICE_INSTANCE.to_string(),
            ])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} {SCRIPT}", python.display()))?;
        let (Some(commands), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            bail!("the BACpypes3 device has no piped stdin/stdout");
        };
        let (lines, answers) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut device = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            child,
            commands,
            answers,
        };
        let ready = device.next_line(STARTUP_TIMEOUT)?;
        let port = ready
            .strip_prefix("ready ")
            .and_then(|port| port.parse::<u16>().ok())
            .with_context(|| format!("expected `ready PORT` from {SCRIPT}, got {ready:?}"))?;
        device.addr.set_port(port);
        Ok(device)
    }

    /// Sends one stdin command (see the script's docstring) and returns its answer.
    pub fn command(&mut self, line: &str) -> anyhow::Result<String> {
        writeln!(self.commands, "{line}")
            .and_then(|()| self.commands.flush())
            .with_context(|| format!("sending `{line}` to the BACpypes3 device"))?;
        let answer = self.next_line(ANSWER_TIMEOUT)?;
        match answer.strip_prefix("error ") {
            Some(reason) => bail!("the BACpypes3 device refused `{line}`: {reason}"),
            None => Ok(answer),
        }
    }

    fn next_line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        self.answers.recv_timeout(timeout).map_err(|_| {
            let status = self.child.try_wait().ok().flatten();
            anyhow!("no line from the BACpypes3 device within {timeout:?} (exit status {status:?}; its stderr is above)")
        })
    }
}

impl Drop for Bacpypes3Device {
    fn drop(&mut self) {
        // Fails only if the child already exited; wait() reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$GATEHOUSE_VENV/bin/python`, else `<workspace>/.venv/bin/python`, with BACpypes3 in it.
fn python() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("GATEHOUSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv")));
    let python = venv.join("bin/python");
    ensure!(
        python.exists(),
        "no Python virtualenv at {} (for BACpypes3): run scripts/setup-test-deps.sh, \
         or point GATEHOUSE_VENV at a virtualenv with bacpypes3==0.0.110",
        venv.display()
    );
    Ok(python)
}

//! Modbus RTU over a serial RS-485 bus: one adapter per bus, driving every unit on it.
//!
//! ```text
//!   open port ok                     a unit answers nothing (timeout)
//!  ┌───────┐ ────► ┌────────────────────────────┐ ───────────────────► that unit offline,
//!  │opening│       │ one request at a time:     │                       asked again after
//!  └───────┘ ◄──── │ the unit due next, or a    │ ◄─ bad CRC on a block: its own backoff
//!    ▲  backoff    │ command between two polls  │    points bad, unit degraded
//!    │             └────────────────────────────┘
//!    └──────────── port I/O error (unplugged adapter, port gone): every unit offline
//! ```
//!
//! Invariants:
//! - The bus adapter owns the port. There is never more than one request on the line: units
//!   are polled one after another (the one due soonest first), commands run between polls.
//! - Two frames are separated by at least the silent interval (3.5 character times, 1.75 ms
//!   above 19200 baud), and the input is flushed before each request, so a late answer to a
//!   request that timed out cannot be taken for the answer to the next one.
//! - A unit's failure is that unit's: a silent unit is offline and asked again with backoff,
//!   so it costs the others one timeout per attempt; a garbled answer (bad CRC) makes its
//!   points bad quality and the unit degraded. Only a failing port takes every unit offline.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_protocol::DeviceId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout};
use tokio_modbus::Slave;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::SlaveContext;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::codec::Write;
use super::config::{ModbusBusConfig, ModbusDeviceConfig, Parity, Table};
use super::station::{
    self, Answer, Data, Ended, Failure, Lifecycle, Link, LinkError, PollError, Station,
};
use crate::adapters::{Adapter, AdapterContext, Backoff, CommandEnvelope, expired};

/// One serial bus and the Modbus devices on it.
pub struct ModbusBus {
    config: ModbusBusConfig,
    devices: Vec<ModbusDeviceConfig>,
    ids: Vec<DeviceId>,
}

impl ModbusBus {
    pub fn new(config: ModbusBusConfig, devices: Vec<ModbusDeviceConfig>) -> Self {
        ModbusBus {
            ids: devices.iter().map(|d| d.id.get_ref().clone()).collect(),
            config,
            devices,
        }
    }

    fn port(&self) -> &str {
        self.config.port.get_ref()
    }
}

impl Adapter for ModbusBus {
    fn name(&self) -> &str {
        self.config.id.get_ref()
    }

    fn devices(&self) -> &[DeviceId] {
        &self.ids
    }

    fn run<'a>(&'a self, context: &'a AdapterContext) -> BoxFuture<'a, ()> {
        Box::pin(self.run_bus(context))
    }
}

/// One device of the bus and when it is next asked.
struct Unit {
    station: Station,
    due: Instant,
    /// Spaces the attempts to reach a silent unit.
    backoff: Backoff,
}

/// The bus's serial port, with the units that outlive it.
struct Port<'a> {
    bus: &'a ModbusBus,
    units: Vec<Unit>,
    backoff: Backoff,
}

impl Lifecycle for Port<'_> {
    type Open = SerialStream;

    async fn open(&mut self) -> Result<SerialStream, String> {
        open(&self.bus.config)
    }

    async fn serve(&mut self, stream: SerialStream, context: &AdapterContext) -> Ended {
        let bus = self.bus;
        tracing::info!(bus = bus.name(), port = bus.port(), "serial port open");
        let mut link = RtuLink::new(stream, &bus.config);
        for unit in &mut self.units {
            unit.due = Instant::now();
        }
        bus.session(&mut link, &mut self.units, context, &mut self.backoff)
            .await
    }

    async fn lost(&mut self, context: &AdapterContext, reason: String) -> bool {
        let reason = format!("bus `{}`: {reason}", self.bus.name());
        for unit in &mut self.units {
            unit.station.go_offline(context, &reason).await;
            unit.station.count_reconnect(context);
        }
        let delay = self.backoff.next_delay();
        tracing::warn!(bus = self.bus.name(), %reason, retry_in_ms = delay.as_millis() as u64, "serial bus unusable");
        context.wait_offline(delay, &reason).await
    }
}

impl ModbusBus {
    async fn run_bus(&self, context: &AdapterContext) {
        let units: Vec<Unit> = self
            .devices
            .iter()
            .map(|config| Unit {
                station: Station::new(config.clone(), context),
                due: Instant::now(),
                backoff: Backoff::new(
                    Duration::from_millis(config.reconnect_initial_ms),
                    Duration::from_millis(config.reconnect_max_ms),
                ),
            })
            .collect();
        let mut port = Port {
            bus: self,
            units,
            backoff: Backoff::new(
                Duration::from_millis(self.config.reconnect_initial_ms),
                Duration::from_millis(self.config.reconnect_max_ms),
            ),
        };
        station::keep_open(&mut port, context).await;
    }

    /// Polls the units as they fall due and runs commands between polls, until the port
    /// fails or the agent stops.
    async fn session(
        &self,
        link: &mut RtuLink,
        units: &mut [Unit],
        context: &AdapterContext,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut commands = context.commands.lock().await;
        loop {
            let Some(next) = (0..units.len()).min_by_key(|&index| units[index].due) else {
                return Ended::Broken("no devices on the bus".into());
            };
            let due = units[next].due;
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => return Ended::Shutdown,
                Some(command) = commands.recv() => {
                    if let Some(reason) = self.command(link, units, context, command).await {
                        return Ended::Broken(reason);
                    }
                }
                () = tokio::time::sleep_until(due) => {
                    let unit = &mut units[next];
                    link.address(&unit.station);
                    let interval = Duration::from_millis(unit.station.config.poll_interval_ms);
                    match unit.station.poll(link, context).await {
                        Ok(()) => {
                            unit.backoff.reset();
                            backoff.reset();
                            // Behind schedule (a slow line), it is due again at once:
                            // the units due longer ago still go first.
                            unit.due = (due + interval).max(Instant::now());
                        }
                        Err(PollError::Broken(reason)) => return Ended::Broken(reason),
                        Err(PollError::Unreachable(reason)) => {
                            unit.station.go_offline(context, &reason).await;
                            let delay = unit.backoff.next_delay();
                            unit.station.count_reconnect(context);
                            tracing::debug!(device = %unit.station.id, %reason, retry_in_ms = delay.as_millis() as u64, "unit unreachable");
                            unit.due = Instant::now() + delay;
                        }
                    }
                }
            }
        }
    }

    /// Carries out one command; the reason when the port failed on it.
    async fn command(
        &self,
        link: &mut RtuLink,
        units: &mut [Unit],
        context: &AdapterContext,
        command: CommandEnvelope,
    ) -> Option<String> {
        let point = command.request.point.clone();
        let Some(unit) = units.iter_mut().find(|unit| unit.station.owns(&point)) else {
            // The API and the rules route by the point's device: not reached in practice.
            let outcome = gatehouse_protocol::CommandOutcome::Failed {
                reason: format!("no device on bus `{}` has point `{point}`", self.name()),
            };
            context.finish_command(command, outcome).await;
            return None;
        };
        if command.expired() {
            context.finish_command(command, expired()).await;
            return None;
        }
        if unit.station.is_offline() {
            let outcome = gatehouse_protocol::CommandOutcome::Failed {
                reason: format!(
                    "device offline: unit {} does not answer",
                    unit.station.config.unit_id.get_ref()
                ),
            };
            context.finish_command(command, outcome).await;
            return None;
        }
        link.address(&unit.station);
        let (outcome, failure) = unit.station.write(link, &command).await;
        context.finish_command(command, outcome).await;
        // Show the effect of the write at once.
        unit.due = Instant::now();
        failure
            .filter(|error| error.failure == Failure::Broken)
            .map(|error| error.reason)
    }
}

/// Opens the serial port with the bus's line settings.
fn open(config: &ModbusBusConfig) -> Result<SerialStream, String> {
    let port = config.port.get_ref();
    let parity = match config.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = match config.stop_bits.get_ref() {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    tokio_serial::new(port.as_str(), *config.baud.get_ref())
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(parity)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|error| format!("cannot open serial port {port}: {error}"))
}

/// The serial port and the bytes received since the last request, shared between the
/// tokio-modbus client (which reads and writes through it) and the link (which looks at what
/// came back when no valid frame did).
#[derive(Clone)]
struct SharedPort(Arc<Mutex<PortState>>);

struct PortState {
    stream: SerialStream,
    received: Vec<u8>,
}

/// The most received bytes kept to explain a garbled answer (an RTU frame is ≤ 256 bytes).
const RECEIVED_KEPT: usize = 256;

impl SharedPort {
    fn with<T>(&self, f: impl FnOnce(&mut PortState) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.with(|port| {
            let before = buf.filled().len();
            let poll = Pin::new(&mut port.stream).poll_read(cx, buf);
            let new = &buf.filled()[before..];
            let room = RECEIVED_KEPT.saturating_sub(port.received.len());
            port.received.extend_from_slice(&new[..new.len().min(room)]);
            poll
        })
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|port| Pin::new(&mut port.stream).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        self.with(|port| Pin::new(&mut port.stream).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        self.with(|port| Pin::new(&mut port.stream).poll_shutdown(cx))
    }
}

/// The bus as a [`Link`] to whichever unit [`RtuLink::address`] last chose.
struct RtuLink {
    port: SharedPort,
    client: Context,
    port_name: String,
    silent_interval: Duration,
    /// When the line last carried a frame (or a request was given up).
    last_traffic: Instant,
    unit: u8,
    timeout_ms: u64,
}

impl RtuLink {
    fn new(stream: SerialStream, config: &ModbusBusConfig) -> Self {
        let port = SharedPort(Arc::new(Mutex::new(PortState {
            stream,
            received: Vec::new(),
        })));
        RtuLink {
            client: tokio_modbus::client::rtu::attach(port.clone()),
            port,
            port_name: config.port.get_ref().clone(),
            silent_interval: config.silent_interval(),
            last_traffic: Instant::now(),
            unit: 0,
            timeout_ms: 1000,
        }
    }

    /// Directs the next requests to a station's unit, with its timeout.
    fn address(&mut self, station: &Station) {
        self.unit = *station.config.unit_id.get_ref();
        self.timeout_ms = station.config.timeout_ms;
        self.client.set_slave(Slave(self.unit));
    }

    /// Waits out the silent interval and clears what is left of earlier answers.
    async fn before_request(&mut self) {
        tokio::time::sleep_until(self.last_traffic + self.silent_interval).await;
        self.port.with(|port| {
            // Best effort: a port that cannot flush fails on the request itself.
            let _ = port.stream.clear(tokio_serial::ClearBuffer::Input);
            port.received.clear();
        });
    }

    /// Turns tokio-modbus's answer (or its absence) into the link's terms.
    fn classify<T>(
        &mut self,
        answer: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    ) -> Answer<T> {
        self.last_traffic = Instant::now();
        let unit = self.unit;
        let error = |failure, reason: String, counted_as| LinkError {
            failure,
            reason,
            counted_as,
        };
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Err(_) => {
                let received = self.port.with(|port| std::mem::take(&mut port.received));
                Err(match frame_fault(&received) {
                    Some(fault) => {
                        error(Failure::Garbled, format!("unit {unit}: {fault}"), "garbled")
                    }
                    None => error(
                        Failure::Silent,
                        format!("unit {unit} did not answer within {} ms", self.timeout_ms),
                        "timeout",
                    ),
                })
            }
            Ok(Err(tokio_modbus::Error::Protocol(mismatch))) => Err(error(
                Failure::Garbled,
                format!("unit {unit}: an answer that does not match the request: {mismatch}"),
                "garbled",
            )),
            Ok(Err(tokio_modbus::Error::Transport(io)))
                if io.kind() == std::io::ErrorKind::InvalidData =>
            {
                // tokio-modbus gave up on undecodable bytes and its framing is spent: start
                // a fresh client on the same port.
                self.client =
                    tokio_modbus::client::rtu::attach_slave(self.port.clone(), Slave(unit));
                Err(error(
                    Failure::Garbled,
                    format!("unit {unit}: undecodable answer: {io}"),
                    "garbled",
                ))
            }
            Ok(Err(tokio_modbus::Error::Transport(io))) => Err(error(
                Failure::Broken,
                format!("serial port {}: {io}", self.port_name),
                "error",
            )),
        }
    }
}

impl Link for RtuLink {
    async fn read(&mut self, table: Table, start: u16, count: u16) -> Answer<Data> {
        self.before_request().await;
        let limit = Duration::from_millis(self.timeout_ms);
        let answer = timeout(
            limit,
            station::read_table(&mut self.client, table, start, count),
        )
        .await;
        self.classify(answer)
    }

    async fn write(&mut self, address: u16, write: &Write) -> Answer<()> {
        self.before_request().await;
        let limit = Duration::from_millis(self.timeout_ms);
        let answer = timeout(
            limit,
            station::write_point(&mut self.client, address, write),
        )
        .await;
        self.classify(answer)
    }
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for byte in bytes {
        crc ^= u16::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// What was wrong with the bytes received for a request that got no valid answer in time;
/// None when nothing came at all (the unit is silent).
pub fn frame_fault(received: &[u8]) -> Option<String> {
    let length = received.len();
    match length {
        0 => None,
        1..=3 => Some(format!(
            "an answer cut short ({length} bytes, a frame has at least 4)"
        )),
        _ => {
            let (frame, sent) = received.split_at(length - 2);
            let expected = crc16(frame);
            let got = u16::from_le_bytes([sent[0], sent[1]]);
            if expected == got {
                Some(format!(
                    "an answer of {length} bytes that does not fit the request"
                ))
            } else {
                Some(format!(
                    "an answer with a bad CRC ({length} bytes, CRC {got:#06x} where {expected:#06x} was due)"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_crc_is_the_modbus_one() {
        // Read holding register 0 of unit 1: the textbook frame 01 03 00 00 00 01 84 0A.
        let request = [0x01, 0x03, 0x00, 0x00, 0x00, 0x01];
        assert_eq!(crc16(&request).to_le_bytes(), [0x84, 0x0a]);
        assert_eq!(crc16(&[0x02, 0x07]), 0x1241);
    }

    #[test]
    fn received_bytes_tell_a_silent_unit_from_a_garbled_answer() {
        assert_eq!(frame_fault(&[]), None);
        let cut = frame_fault(&[0x01, 0x03]).unwrap_or_default();
        assert!(cut.contains("cut short"), "{cut}");
        let mut answer = vec![0x01, 0x03, 0x02, 0x00, 0x2a];
        let crc = crc16(&answer).to_le_bytes();
        answer.extend(crc);
        let fitting = frame_fault(&answer).unwrap_or_default();
        assert!(fitting.contains("does not fit"), "{fitting}");
        let last = answer.len() - 1;
        answer[last] ^= 0xff;
        let bad = frame_fault(&answer).unwrap_or_default();
        assert!(bad.contains("bad CRC"), "{bad}");
    }

    fn bus(settings: &str) -> ModbusBusConfig {
        let source = format!(
            "[site]\nid = \"s\"\nname = \"S\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [[modbus.buses]]\nid = \"rs485\"\nport = \"/dev/ttyUSB0\"\n{settings}\n\
             [[modbus.devices]]\nid = \"d\"\nbus = \"rs485\"\nunit_id = 3\n\
             [[modbus.devices.points]]\nid = \"p\"\ntable = \"coil\"\naddress = 0\n"
        );
        let config = Config::parse(&source).unwrap_or_else(|p| panic!("{settings}: {p:?}"));
        config.modbus.buses[0].clone()
    }

    #[test]
    fn the_silent_interval_is_three_and_a_half_characters_or_1750_microseconds() {
        // 19200 8E1: 11 bits a character, 3.5 × 11 / 19200 s = 2.005 ms.
        let default = bus("");
        assert_eq!(*default.baud.get_ref(), 19_200);
        assert_eq!(default.parity, Parity::Even);
        assert_eq!(default.bits_per_character(), 11);
        assert_eq!(default.silent_interval(), Duration::from_micros(2005));
        // 9600 8N1: 10 bits, 3.646 ms.
        let slow = bus("baud = 9600\nparity = \"none\"");
        assert_eq!(slow.bits_per_character(), 10);
        assert_eq!(slow.silent_interval(), Duration::from_micros(3645));
        // 9600 8O2: 12 bits.
        let odd = bus("baud = 9600\nparity = \"odd\"\nstop_bits = 2");
        assert_eq!(odd.parity, Parity::Odd);
        assert_eq!(odd.bits_per_character(), 12);
        // Above 19200 the interval is fixed.
        let fast = bus("baud = 115200");
        assert_eq!(fast.silent_interval(), Duration::from_micros(1750));
    }
}

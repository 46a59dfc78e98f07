//! An in-process Modbus TCP device for tests and demos, with faults switchable at runtime.
//!
//! [`ModbusSim`] serves four tables per unit id (coils, discrete inputs, holding registers,
//! input registers, each addressable 0..=65535 and reading 0 until written) over a hand-written
//! MBAP codec on a plain tokio `TcpListener`. The codec is our own rather than tokio-modbus's
//! server because the faults need control below the Modbus layer: a device that reads requests
//! and never answers ([`Mode::Silent`]), one that answers with bytes no client may accept
//! ([`Mode::Garbage`]), and one that vanishes and comes back on the same address
//! ([`ModbusSim::go_away`], [`ModbusSim::come_back`]).
//!
//! Layout:
//! - `codec`: MBAP header, request decoding and response encoding, free of I/O.
//! - `bank`: the values, the configured unit ids, the injected exceptions, and how a request
//!   PDU is answered from them, free of I/O.
//! - [`demo`]: the changing values `gatehouse-modbus-sim --demo` serves.
//! - this file: the listener, one task per connection, and the handle tests hold.
//!
//! Invariants: a client write is applied only when the request is answered normally; every
//! connection task ends when the sim goes away or is dropped; a unit id answers only once
//! something configured it ([`ModbusSim::add_unit`], a setter, or an injected exception).

mod bank;
mod codec;
pub mod demo;

use std::{
    io,
    net::SocketAddr,
    ops::{Bound, RangeBounds},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket, TcpStream},
    task::{JoinHandle, JoinSet},
};
pub use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;

pub use self::codec::Table;
use self::{
    bank::Bank,
    codec::{HEADER_LEN, Header},
};

/// How the simulated device answers requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answers every request per the Modbus spec.
    #[default]
    Normal,
    /// Reads requests and never answers, keeping the connection open.
    Silent,
    /// Answers every request with a complete frame of random bytes whose MBAP protocol id is
    /// not 0, which a Modbus client must reject.
    Garbage,
}

/// A running simulated Modbus TCP device; see the [module docs](self).
///
/// Dropping it stops serving, like [`ModbusSim::go_away`] without waiting.
#[derive(Debug)]
pub struct ModbusSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<Serving>>,
}

/// What the connection tasks share with the handle.
#[derive(Debug, Default)]
struct Shared {
    bank: Mutex<Bank>,
    mode: Mutex<Mode>,
    requests_received: AtomicU64,
    requests_served: AtomicU64,
}

/// The accept task while the device is reachable.
#[derive(Debug)]
struct Serving {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ModbusSim {
    /// Binds `addr` (port 0 picks a free port) and serves. No unit id answers until configured.
    pub async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener =
            bind(addr).with_context(|| format!("binding the Modbus simulator to {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let serving = Serving::spawn(listener, Arc::clone(&shared));
        tracing::debug!(%addr, "Modbus simulator listening");
        Ok(Self {
            addr,
            shared,
            serving: Mutex::new(Some(serving)),
        })
    }

    /// The address the simulator is bound to, the same after [`Self::come_back`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `unit` answer requests; its tables read 0 until written.
    pub fn add_unit(&self, unit: u8) {
        self.bank().add_unit(unit);
    }

    /// Sets one value (0 or 1 for a bit table, any non-zero value meaning 1); configures `unit`.
    pub fn set(&self, unit: u8, table: Table, address: u16, value: u16) {
        self.bank().write(unit, table, address, &[value]);
    }

    /// One value; 0 or 1 for a bit table.
    pub fn get(&self, unit: u8, table: Table, address: u16) -> u16 {
        self.bank().get(unit, table, address)
    }

    /// Sets a coil.
    pub fn set_coil(&self, unit: u8, address: u16, value: bool) {
        self.set(unit, Table::Coils, address, value.into());
    }

    /// Sets a discrete input.
    pub fn set_discrete(&self, unit: u8, address: u16, value: bool) {
        self.set(unit, Table::DiscreteInputs, address, value.into());
    }

    /// Sets a holding register.
    pub fn set_holding(&self, unit: u8, address: u16, value: u16) {
        self.set(unit, Table::HoldingRegisters, address, value);
    }

    /// Sets an input register.
    pub fn set_input(&self, unit: u8, address: u16, value: u16) {
        self.set(unit, Table::InputRegisters, address, value);
    }

    /// Sets holding registers `address` and `address + 1` to an IEEE 754 `f32`, high word first
    /// (big-endian word order), in one step so no client reads half of it. At address 65535
    /// only the high word fits and is written.
    pub fn set_holding_f32(&self, unit: u8, address: u16, value: f32) {
        let [high, low] = split_words(value.to_bits());
        self.bank()
            .write(unit, Table::HoldingRegisters, address, &[high, low]);
    }

    /// A coil.
    pub fn coil(&self, unit: u8, address: u16) -> bool {
        self.get(unit, Table::Coils, address) != 0
    }

    /// A discrete input.
    pub fn discrete(&self, unit: u8, address: u16) -> bool {
        self.get(unit, Table::DiscreteInputs, address) != 0
    }

    /// A holding register.
    pub fn holding(&self, unit: u8, address: u16) -> u16 {
        self.get(unit, Table::HoldingRegisters, address)
    }

    /// An input register.
    pub fn input(&self, unit: u8, address: u16) -> u16 {
        self.get(unit, Table::InputRegisters, address)
    }

    /// The `f32` in holding registers `address` (high word) and `address + 1` (low word).
    pub fn holding_f32(&self, unit: u8, address: u16) -> f32 {
        let bank = self.bank();
        let word = |address| bank.get(unit, Table::HoldingRegisters, address);
        let low = address.checked_add(1).map_or(0, word);
        f32::from_bits(u32::from(word(address)) << 16 | u32::from(low))
    }

    /// Makes every request to `unit` that touches `addresses` of `table` (reads and writes)
    /// answer the exception `code`, e.g. `ExceptionCode::IllegalDataAddress` (0x02), until
    /// [`Self::clear_exceptions`]. An empty range does nothing. Configures `unit`.
    pub fn set_exception_range(
        &self,
        unit: u8,
        table: Table,
        addresses: impl RangeBounds<u16>,
        code: ExceptionCode,
    ) {
        let first = match addresses.start_bound() {
            Bound::Included(&first) => Some(first),
            Bound::Excluded(&before) => before.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let last = match addresses.end_bound() {
            Bound::Included(&last) => Some(last),
            Bound::Excluded(&after) => after.checked_sub(1),
            Bound::Unbounded => Some(u16::MAX),
        };
        match (first, last) {
            (Some(first), Some(last)) if first <= last => {
                self.bank()
                    .inject_exception(unit, table, first..=last, code);
            }
            _ => self.add_unit(unit),
        }
    }

    /// Removes every range set by [`Self::set_exception_range`].
    pub fn clear_exceptions(&self) {
        self.bank().clear_exceptions();
    }

    /// Switches how requests are answered, from the next request on (open connections too).
    pub fn set_mode(&self, mode: Mode) {
        tracing::debug!(addr = %self.addr, ?mode, "Modbus simulator mode");
        *lock(&self.shared.mode) = mode;
    }

    /// How requests are answered now.
    pub fn mode(&self) -> Mode {
        *lock(&self.shared.mode)
    }

    /// Requests answered per the protocol, with data or an exception (not in silent or garbage
    /// mode), since start.
    pub fn requests_served(&self) -> u64 {
        self.shared.requests_served.load(Ordering::Relaxed)
    }

    /// Requests read from any connection, answered or not, since start.
    pub fn requests_received(&self) -> u64 {
        self.shared.requests_received.load(Ordering::Relaxed)
    }

    /// The device vanishes: closes the listener and every open connection, and returns once
    /// they are closed, so new connections are refused. The bank is kept. Does nothing if the
    /// device is already away.
    pub async fn go_away(&self) {
        let serving = lock(&self.serving).take();
        if let Some(Serving { cancel, task }) = serving {
            cancel.cancel();
            if let Err(error) = task.await {
                tracing::warn!(addr = %self.addr, %error, "Modbus simulator accept task failed");
            }
            tracing::debug!(addr = %self.addr, "Modbus simulator went away");
        }
    }

    /// Stops serving; the same as [`Self::go_away`].
    pub async fn stop(&self) {
        self.go_away().await;
    }

    /// Binds the same address again and serves the same bank after [`Self::go_away`]. Does
    /// nothing if the device is serving.
    pub async fn come_back(&self) -> anyhow::Result<()> {
        let mut serving = lock(&self.serving);
        if serving.is_none() {
            let listener = bind(self.addr)
                .with_context(|| format!("binding the Modbus simulator to {} again", self.addr))?;
            *serving = Some(Serving::spawn(listener, Arc::clone(&self.shared)));
            tracing::debug!(addr = %self.addr, "Modbus simulator came back");
        }
        Ok(())
    }

    fn bank(&self) -> MutexGuard<'_, Bank> {
        lock(&self.shared.bank)
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        if let Some(serving) = lock(&self.serving).as_ref() {
            serving.cancel.cancel();
        }
    }
}

impl Serving {
    fn spawn(listener: TcpListener, shared: Arc<Shared>) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_connections(listener, shared, cancel.clone()));
        Self { cancel, task }
    }
}

/// Accepts connections until cancelled, then closes the listener and every connection.
async fn accept_connections(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "Modbus simulator accepted a connection");
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared)));
                }
                Err(error) => {
                    // E.g. out of file descriptors: wait rather than spin.
                    tracing::warn!(%error, "Modbus simulator could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    match shared.converse(&mut stream).await {
        Ok(()) => tracing::debug!(%peer, "Modbus client closed the connection"),
        Err(error) => tracing::debug!(%peer, %error, "Modbus simulator closed the connection"),
    }
}

impl Shared {
    /// Reads requests and writes answers until the client closes the connection (`Ok`) or the
    /// stream breaks or goes out of frame (`Err`).
    async fn converse(&self, stream: &mut TcpStream) -> io::Result<()> {
        loop {
            let mut header = [0; HEADER_LEN];
            match stream.read_exact(&mut header).await {
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                result => result?,
            };
            let header = Header::parse(header).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "MBAP length field out of range")
            })?;
            let mut pdu = vec![0; header.pdu_len];
            stream.read_exact(&mut pdu).await?;
            if let Some(answer) = self.answer(header, &pdu) {
                stream.write_all(&answer).await?;
            }
        }
    }

    /// The ADU to send back for one request, if any.
    fn answer(&self, header: Header, pdu: &[u8]) -> Option<Vec<u8>> {
        self.requests_received.fetch_add(1, Ordering::Relaxed);
        let mode = *lock(&self.mode);
        match mode {
            Mode::Silent => None,
            Mode::Garbage => Some(codec::garbage_frame(&mut rand::rng())),
            // Not Modbus: the spec has the server discard it.
            Mode::Normal if header.protocol_id != 0 => None,
            Mode::Normal => {
                let response = lock(&self.bank).answer(header.unit_id, pdu);
                self.requests_served.fetch_add(1, Ordering::Relaxed);
                Some(codec::encode_adu(
                    header.transaction_id,
                    header.unit_id,
                    &response,
                ))
            }
        }
    }
}

/// A listener with `SO_REUSEADDR`, so the same address can be bound again right after a
/// [`ModbusSim::go_away`] despite connections in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// High and low 16-bit words of a 32-bit value.
fn split_words(value: u32) -> [u16; 2] {
    [(value >> 16) as u16, value as u16]
}

/// Locks a mutex; the data behind ours stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;
    use tokio_modbus::{
        client::{Context, tcp},
        prelude::*,
    };

    use super::*;

    /// Longer than the simulator ever takes to answer on loopback.
    const PATIENCE: Duration = Duration::from_secs(5);

    async fn start_sim() -> anyhow::Result<ModbusSim> {
        ModbusSim::start("127.0.0.1:0".parse()?).await
    }

    async fn connect(sim: &ModbusSim, unit: u8) -> anyhow::Result<Context> {
        Ok(tcp::connect_slave(sim.addr(), Slave(unit)).await?)
    }

    #[tokio::test]
    async fn a_client_reads_every_table() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        sim.set_coil(1, 3, true);
        sim.set_discrete(1, 0, true);
        sim.set_holding(1, 7, 0xBEEF);
        sim.set_input(1, 10, 42);
        sim.set_holding_f32(1, 0, 21.5);
        let mut client = connect(&sim, 1).await?;

        assert_eq!(
            client.read_coils(0, 5).await??,
            [false, false, false, true, false]
        );
        assert_eq!(client.read_discrete_inputs(0, 2).await??, [true, false]);
        assert_eq!(client.read_holding_registers(7, 1).await??, [0xBEEF]);
        assert_eq!(client.read_input_registers(9, 2).await??, [0, 42]);
        // 21.5 is 0x41AC_0000 in IEEE 754, high word first.
        assert_eq!(
            client.read_holding_registers(0, 2).await??,
            [0x41AC, 0x0000]
        );
        assert_eq!(sim.holding_f32(1, 0), 21.5);
        assert_eq!(sim.requests_served(), 5);
        Ok(())
    }

    #[tokio::test]
    async fn client_writes_reach_the_bank() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        sim.add_unit(4);
        let mut client = connect(&sim, 4).await?;

        client.write_single_coil(2, true).await??;
        client.write_single_register(5, 0x1234).await??;
        client
            .write_multiple_coils(10, &[true, false, true])
            .await??;
        client.write_multiple_registers(20, &[1, 2, 3]).await??;

        assert!(sim.coil(4, 2));
        assert_eq!(sim.holding(4, 5), 0x1234);
        assert_eq!(
            [sim.coil(4, 10), sim.coil(4, 11), sim.coil(4, 12)],
            [true, false, true]
        );
        assert_eq!(
            [sim.holding(4, 20), sim.holding(4, 21), sim.holding(4, 22)],
            [1, 2, 3]
        );
        assert!(!sim.coil(1, 2), "another unit is untouched");
        Ok(())
    }

    #[tokio::test]
    async fn injected_ranges_and_unknown_units_answer_exceptions() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        sim.set_holding(1, 99, 7);
        sim.set_exception_range(
            1,
            Table::HoldingRegisters,
            100..110,
            ExceptionCode::IllegalDataAddress,
        );
        let mut client = connect(&sim, 1).await?;

        assert_eq!(client.read_holding_registers(99, 1).await??, [7]);
        assert_eq!(
            client.read_holding_registers(99, 2).await?,
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            client.write_single_register(109, 1).await?,
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            client.read_holding_registers(110, 1).await??,
            [0],
            "end is exclusive"
        );

        sim.clear_exceptions();
        assert_eq!(client.read_holding_registers(105, 1).await??, [0]);

        client.set_slave(Slave(2));
        assert_eq!(
            client.read_holding_registers(0, 1).await?,
            Err(ExceptionCode::GatewayTargetDevice)
        );
        assert_eq!(sim.requests_served(), 6, "exceptions are answers too");
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_device_reads_requests_and_never_answers() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        sim.set_holding(1, 0, 5);
        sim.set_mode(Mode::Silent);
        let mut client = connect(&sim, 1).await?;

        let waited = timeout(
            Duration::from_millis(300),
            client.read_holding_registers(0, 1),
        )
        .await;
        assert!(waited.is_err(), "expected a timeout, got {waited:?}");
        assert_eq!((sim.requests_received(), sim.requests_served()), (1, 0));

        sim.set_mode(Mode::Normal);
        let mut client = connect(&sim, 1).await?;
        assert_eq!(client.read_holding_registers(0, 1).await??, [5]);
        Ok(())
    }

    #[tokio::test]
    async fn a_garbage_answer_is_a_client_error_not_a_hang() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        sim.add_unit(1);
        sim.set_mode(Mode::Garbage);
        let mut client = connect(&sim, 1).await?;

        let answer = timeout(PATIENCE, client.read_holding_registers(0, 1)).await?;
        assert!(answer.is_err(), "expected a protocol error, got {answer:?}");
        assert_eq!((sim.requests_received(), sim.requests_served()), (1, 0));
        Ok(())
    }

    #[tokio::test]
    async fn a_device_that_went_away_comes_back_on_the_same_address() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        let addr = sim.addr();
        sim.set_input(1, 3, 33);
        let mut client = connect(&sim, 1).await?;
        assert_eq!(client.read_input_registers(3, 1).await??, [33]);

        sim.go_away().await;
        let answer = timeout(PATIENCE, client.read_input_registers(3, 1)).await?;
        assert!(
            answer.is_err(),
            "the open connection was dropped, got {answer:?}"
        );
        assert!(
            connect(&sim, 1).await.is_err(),
            "new connections are refused"
        );

        sim.come_back().await?;
        assert_eq!(sim.addr(), addr);
        let mut client = connect(&sim, 1).await?;
        assert_eq!(
            client.read_input_registers(3, 1).await??,
            [33],
            "the same bank"
        );
        Ok(())
    }

    #[tokio::test]
    async fn frames_on_the_wire_follow_the_mbap_rules() -> anyhow::Result<()> {
        let sim = start_sim().await?;
        sim.set_holding(1, 0, 0x0102);
        let mut stream = TcpStream::connect(sim.addr()).await?;

        // Protocol id 1 is not Modbus: discarded without an answer. Then a valid request,
        // whose answer must carry its transaction id.
        stream
            .write_all(&[0, 9, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1])
            .await?;
        stream
            .write_all(&[0xAB, 0xCD, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1])
            .await?;
        let mut answer = [0; 11];
        timeout(PATIENCE, stream.read_exact(&mut answer)).await??;
        assert_eq!(answer, [0xAB, 0xCD, 0, 0, 0, 5, 1, 3, 2, 1, 2]);

        // A length field of 0 cannot be framed: the device closes the connection.
        stream.write_all(&[0, 1, 0, 0, 0, 0, 1]).await?;
        let mut rest = Vec::new();
        timeout(PATIENCE, stream.read_to_end(&mut rest)).await??;
        assert_eq!(rest, [0u8; 0]);
        Ok(())
    }
}

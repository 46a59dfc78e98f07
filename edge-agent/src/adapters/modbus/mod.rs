//! Modbus adapters (tokio-modbus clients): one task per TCP device, one task per serial RTU
//! bus ([`rtu`]). What a device does whatever the link (read blocks, decode, report, write)
//! lives in [`station`]; this file is the TCP connection's life cycle.
//!
//! ```text
//!            connect ok                      read/write failed, timeout, garbage
//!  ┌──────────┐ ───────► ┌──────────────┐ ─────────────────────────────────────┐
//!  │connecting│          │ online: poll │                                       │
//!  └──────────┘ ◄─────── └──────────────┘ ◄── exception: point → bad quality    │
//!       ▲   backoff+jitter      ▲  commands (write coil/registers)              │
//!       └───────────────────────┴───────────────────────────────────────────────┘
//!                      offline event, points → stale
//! ```
//!
//! - Points are read in as few requests as the protocol allows ([`codec::plan_reads`]).
//! - A Modbus exception answer is not a connection failure: the points of that block get
//!   bad quality with the exception as reason, the device stays online.
//! - Over TCP, a timeout, an I/O error or an answer that does not parse means the connection
//!   is broken (a late answer could be taken for the next one): the device is reported
//!   offline, its points stale, and the connection is retried with backoff.
//! - Change of value: a point is reported when its quality changes, or its value moves by at
//!   least its deadband (any change of a boolean or of a point with deadband 0).

pub mod codec;
pub mod config;
pub mod rtu;
pub(crate) mod station;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_protocol::DeviceId;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_modbus::Slave;
use tokio_modbus::client::Context;

use self::codec::Write;
use self::config::{ModbusDeviceConfig, Table};
use self::station::{Answer, Data, Ended, Failure, Lifecycle, Link, LinkError, PollError, Station};
use super::{Adapter, AdapterContext, Backoff, expired};

/// One Modbus TCP device.
pub struct ModbusDevice {
    id: DeviceId,
    config: ModbusDeviceConfig,
}

impl ModbusDevice {
    pub fn new(config: ModbusDeviceConfig) -> Self {
        ModbusDevice {
            id: config.id.get_ref().clone(),
            config,
        }
    }

    fn address(&self) -> &str {
        self.config.address.as_ref().map_or("", |a| a.get_ref())
    }
}

impl Adapter for ModbusDevice {
    fn name(&self) -> &str {
        self.id.as_str()
    }

    fn devices(&self) -> &[DeviceId] {
        std::slice::from_ref(&self.id)
    }

    fn run<'a>(&'a self, context: &'a AdapterContext) -> BoxFuture<'a, ()> {
        Box::pin(self.run_device(context))
    }
}

/// A TCP connection as a [`Link`]: any failure breaks it.
struct TcpLink<'a> {
    client: &'a mut Context,
    timeout_ms: u64,
}

impl TcpLink<'_> {
    fn fail<T>(
        &self,
        answer: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
        what: &str,
    ) -> Answer<T> {
        let (reason, counted_as) = match answer {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(error)) => (format!("{what} failed: {error}"), "error"),
            Err(_) => (
                format!("no answer within {} ms", self.timeout_ms),
                "timeout",
            ),
        };
        Err(LinkError {
            failure: Failure::Broken,
            reason,
            counted_as,
        })
    }
}

impl Link for TcpLink<'_> {
    async fn read(&mut self, table: Table, start: u16, count: u16) -> Answer<Data> {
        let limit = Duration::from_millis(self.timeout_ms);
        let answer = timeout(limit, station::read_table(self.client, table, start, count)).await;
        self.fail(answer, &format!("{} read", table.as_str()))
    }

    async fn write(&mut self, address: u16, write: &Write) -> Answer<()> {
        let limit = Duration::from_millis(self.timeout_ms);
        let answer = timeout(limit, station::write_point(self.client, address, write)).await;
        self.fail(answer, "write")
    }
}

/// The TCP connection to one device, with what outlives it.
struct Connection<'a> {
    device: &'a ModbusDevice,
    station: Station,
    backoff: Backoff,
}

impl Lifecycle for Connection<'_> {
    type Open = Context;

    async fn open(&mut self) -> Result<Context, String> {
        self.device.connect().await
    }

    async fn serve(&mut self, mut client: Context, context: &AdapterContext) -> Ended {
        let device = self.device;
        tracing::debug!(device = %device.id, address = device.address(), "modbus connection open");
        let mut link = TcpLink {
            client: &mut client,
            timeout_ms: device.config.timeout_ms,
        };
        device
            .session(&mut link, &mut self.station, context, &mut self.backoff)
            .await
    }

    async fn lost(&mut self, context: &AdapterContext, reason: String) -> bool {
        self.station.go_offline(context, &reason).await;
        let delay = self.backoff.next_delay();
        tracing::warn!(device = %self.device.id, %reason, retry_in_ms = delay.as_millis() as u64, "modbus device unreachable");
        self.station.count_reconnect(context);
        context.wait_offline(delay, &reason).await
    }
}

impl ModbusDevice {
    async fn run_device(&self, context: &AdapterContext) {
        let mut connection = Connection {
            device: self,
            station: Station::new(self.config.clone(), context),
            backoff: Backoff::new(
                Duration::from_millis(self.config.reconnect_initial_ms),
                Duration::from_millis(self.config.reconnect_max_ms),
            ),
        };
        station::keep_open(&mut connection, context).await;
    }

    async fn connect(&self) -> Result<Context, String> {
        let address = self.address();
        let attempt = async {
            // An IP address needs no resolver; a host name goes through the system's.
            let socket = match address.parse::<SocketAddr>() {
                Ok(socket) => socket,
                Err(_) => tokio::net::lookup_host(address)
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other("the host name resolved to no address"))?,
            };
            tokio_modbus::client::tcp::connect_slave(socket, Slave(*self.config.unit_id.get_ref()))
                .await
        };
        match timeout(Duration::from_millis(self.config.timeout_ms), attempt).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(format!("cannot connect to {address}: {error}")),
            Err(_) => Err(format!(
                "cannot connect to {address}: no answer within {} ms",
                self.config.timeout_ms
            )),
        }
    }

    /// Polls and serves commands until the link breaks or the agent stops. The device counts
    /// as online from its first complete poll, not from the TCP connect: a gateway or a
    /// device that accepts connections and never answers is not online.
    async fn session(
        &self,
        link: &mut TcpLink<'_>,
        station: &mut Station,
        context: &AdapterContext,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut commands = context.commands.lock().await;
        loop {
            tokio::select! {
                () = context.shutdown.cancelled() => return Ended::Shutdown,
                _ = ticker.tick() => {
                    match station.poll(link, context).await {
                        Ok(()) => backoff.reset(),
                        Err(PollError::Unreachable(reason) | PollError::Broken(reason)) => {
                            return Ended::Broken(reason);
                        }
                    }
                }
                Some(command) = commands.recv() => {
                    if command.expired() {
                        context.finish_command(command, expired()).await;
                        continue;
                    }
                    let (outcome, broken) = station.write(link, &command).await;
                    context.finish_command(command, outcome).await;
                    if let Some(error) = broken {
                        return Ended::Broken(error.reason);
                    }
                    // Show the effect of the write at once.
                    ticker.reset_immediately();
                }
            }
        }
    }
}

//! Modbus TCP adapter (tokio-modbus client), one task per device.
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
//! - A timeout, an I/O error or an answer that does not parse means the link is broken: the
//!   device is reported offline, its points stale, and the connection is retried with backoff.
//! - Change of value: a point is reported when its quality changes, or its value moves by at
//!   least its deadband (any change of a boolean or of a point with deadband 0).

pub mod codec;
pub mod config;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_protocol::{CommandOutcome, DeviceId, DeviceStatus, EventBody, Quality, Value};
use jiff::Timestamp;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

use self::codec::{Block, Raw, Write};
use self::config::{ModbusDeviceConfig, ModbusPointConfig, Table};
use super::{Adapter, AdapterContext, Backoff, CommandEnvelope, expired};
use crate::metrics::{DeviceLabels, ResultLabels};

/// One Modbus TCP device.
pub struct ModbusDevice {
    id: DeviceId,
    config: ModbusDeviceConfig,
    blocks: Vec<Block>,
}

impl ModbusDevice {
    pub fn new(config: ModbusDeviceConfig) -> Self {
        ModbusDevice {
            id: config.id.get_ref().clone(),
            blocks: codec::plan_reads(&config.points),
            config,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
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

/// What was last reported for each point (index as in the config) and for the device.
struct Reported {
    points: Vec<Option<(Option<Value>, Quality)>>,
    online: Option<bool>,
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    Broken(String),
}

fn exception_reason(code: ExceptionCode) -> String {
    format!("modbus exception {:#04x}: {code}", u8::from(code))
}

/// Gateway exceptions mean the device behind a gateway does not answer: the device is
/// unreachable, not one of its points.
fn is_gateway_exception(code: ExceptionCode) -> bool {
    matches!(
        code,
        ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice
    )
}

/// One block per point, for a block whose merged read the device refuses.
fn split(block: &Block, points: &[ModbusPointConfig]) -> Vec<Block> {
    block
        .points
        .iter()
        .map(|&index| {
            let point = &points[index];
            Block {
                table: block.table,
                start: point.address,
                count: if point.table.is_bits() {
                    1
                } else {
                    point.data_type().words()
                },
                points: vec![index],
            }
        })
        .collect()
}

impl ModbusDevice {
    /// Starts from what the journal last recorded, so a restart repeats nothing unchanged
    /// and still marks stale what it cannot reach.
    fn last_reported(&self, context: &AdapterContext) -> Reported {
        Reported {
            points: context.last_recorded(self.config.points.iter().map(|p| p.id.get_ref())),
            online: context
                .live
                .device(&self.id)
                .map(|state| state.status == DeviceStatus::Online),
        }
    }

    async fn run_device(&self, context: &AdapterContext) {
        let mut reported = self.last_reported(context);
        let mut blocks = self.blocks.clone();
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.reconnect_initial_ms),
            Duration::from_millis(self.config.reconnect_max_ms),
        );
        loop {
            let reason = match self.connect().await {
                Ok(mut client) => {
                    tracing::debug!(device = %self.id, address = %self.config.address.get_ref(), "modbus connection open");
                    let session = self.session(
                        &mut client,
                        context,
                        &mut reported,
                        &mut blocks,
                        &mut backoff,
                    );
                    match session.await {
                        Ended::Shutdown => return,
                        Ended::Broken(reason) => reason,
                    }
                }
                Err(reason) => reason,
            };
            if context.shutdown.is_cancelled() {
                return;
            }
            self.go_offline(context, &mut reported, &reason).await;
            let delay = backoff.next_delay();
            tracing::warn!(device = %self.id, %reason, retry_in_ms = delay.as_millis() as u64, "modbus device unreachable");
            context
                .metrics
                .modbus_reconnects
                .get_or_create(&DeviceLabels {
                    device: self.id.to_string(),
                })
                .inc();
            if !context.wait_offline(delay, &reason).await {
                return;
            }
        }
    }

    async fn connect(&self) -> Result<Context, String> {
        let address = self.config.address.get_ref();
        let attempt = async {
            // An IP address needs no resolver; a host name goes through the system's.
            let socket = match address.parse::<SocketAddr>() {
                Ok(socket) => socket,
                Err(_) => tokio::net::lookup_host(address.as_str())
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other("the host name resolved to no address"))?,
            };
            tokio_modbus::client::tcp::connect_slave(socket, Slave(self.config.unit_id)).await
        };
        match timeout(self.timeout(), attempt).await {
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
        client: &mut Context,
        context: &AdapterContext,
        reported: &mut Reported,
        blocks: &mut Vec<Block>,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut commands = context.commands.lock().await;
        loop {
            tokio::select! {
                () = context.shutdown.cancelled() => return Ended::Shutdown,
                _ = ticker.tick() => {
                    if let Err(reason) = self.poll(client, context, reported, blocks).await {
                        return Ended::Broken(reason);
                    }
                    backoff.reset();
                }
                Some(command) = commands.recv() => {
                    if command.expired() {
                        context.finish_command(command, expired()).await;
                        continue;
                    }
                    let (outcome, broken) = self.write(client, &command).await;
                    context.finish_command(command, outcome).await;
                    if let Some(reason) = broken {
                        return Ended::Broken(reason);
                    }
                    // Show the effect of the write at once.
                    ticker.reset_immediately();
                }
            }
        }
    }

    /// Reads every block once and reports what changed. Err means the link is broken.
    async fn poll(
        &self,
        client: &mut Context,
        context: &AdapterContext,
        reported: &mut Reported,
        blocks: &mut Vec<Block>,
    ) -> Result<(), String> {
        let mut index = 0;
        while index < blocks.len() {
            let block = &blocks[index];
            let (start, count) = (block.start, block.count);
            let read = async {
                match block.table {
                    Table::Coil => client.read_coils(start, count).await.map(|r| r.map(Err)),
                    Table::DiscreteInput => client
                        .read_discrete_inputs(start, count)
                        .await
                        .map(|r| r.map(Err)),
                    Table::HoldingRegister => client
                        .read_holding_registers(start, count)
                        .await
                        .map(|r| r.map(Ok)),
                    Table::InputRegister => client
                        .read_input_registers(start, count)
                        .await
                        .map(|r| r.map(Ok)),
                }
            };
            let observed_at = Timestamp::now();
            let (result, outcome) = match timeout(self.timeout(), read).await {
                Err(_) => {
                    self.count_poll(context, "timeout");
                    return Err(format!("no answer within {} ms", self.config.timeout_ms));
                }
                Ok(Err(error)) => {
                    self.count_poll(context, "error");
                    return Err(format!("{} read failed: {error}", block.table.as_str()));
                }
                Ok(Ok(Err(code))) if is_gateway_exception(code) => {
                    self.count_poll(context, "exception");
                    return Err(exception_reason(code));
                }
                Ok(Ok(Err(code))) if block.points.len() > 1 => {
                    // The device refuses the merged read (a hole in its map): read these
                    // points one by one from now on, starting right away.
                    self.count_poll(context, "exception");
                    tracing::info!(device = %self.id, table = block.table.as_str(), start, count,
                        exception = %exception_reason(code), "merged read refused; reading its points one by one");
                    let singles = split(block, &self.config.points);
                    blocks.splice(index..=index, singles);
                    continue;
                }
                Ok(Ok(Err(code))) => (Err(exception_reason(code)), "exception"),
                Ok(Ok(Ok(data))) => (Ok(data), "ok"),
            };
            self.count_poll(context, outcome);
            if reported.online != Some(true) {
                // The device answered: online, reported before what it answered.
                tracing::info!(device = %self.id, address = %self.config.address.get_ref(), "modbus device online");
                self.report_status(context, reported, true, None).await;
            }
            for &point_index in &block.points {
                let point = &self.config.points[point_index];
                let (value, quality) = match &result {
                    Err(reason) => (None, Quality::bad(reason.clone())),
                    Ok(data) => {
                        let raw = match data {
                            Ok(words) => Raw::Words(words),
                            Err(bits) => Raw::Bits(bits),
                        };
                        match codec::decode(point, start, &raw) {
                            Ok(value) => (Some(value), Quality::Good),
                            Err(error) => (None, Quality::bad(error.to_string())),
                        }
                    }
                };
                let last = reported.points[point_index].as_ref();
                if changed(point, last, value.as_ref(), &quality) {
                    reported.points[point_index] = Some((value.clone(), quality.clone()));
                    self.observe(context, point, value, quality, observed_at)
                        .await;
                }
            }
            index += 1;
        }
        Ok(())
    }

    fn count_poll(&self, context: &AdapterContext, result: &'static str) {
        context
            .metrics
            .modbus_polls
            .get_or_create(&ResultLabels {
                device: self.id.to_string(),
                result,
            })
            .inc();
    }

    async fn observe(
        &self,
        context: &AdapterContext,
        point: &ModbusPointConfig,
        value: Option<Value>,
        quality: Quality,
        observed_at: Timestamp,
    ) {
        context
            .emit(EventBody::Observation {
                device: self.id.clone(),
                point: point.id.get_ref().clone(),
                zone: self.config.point_zone(point),
                value,
                quality,
                observed_at,
            })
            .await;
    }

    async fn report_status(
        &self,
        context: &AdapterContext,
        reported: &mut Reported,
        online: bool,
        reason: Option<&str>,
    ) {
        if reported.online == Some(online) {
            return;
        }
        reported.online = Some(online);
        context
            .emit(EventBody::DeviceStatus {
                device: self.id.clone(),
                status: if online {
                    DeviceStatus::Online
                } else {
                    DeviceStatus::Offline
                },
                reason: reason.map(str::to_owned),
            })
            .await;
    }

    /// Reports the device offline and its known points stale, once per outage.
    async fn go_offline(&self, context: &AdapterContext, reported: &mut Reported, reason: &str) {
        self.report_status(context, reported, false, Some(reason))
            .await;
        let observed_at = Timestamp::now();
        for (index, point) in self.config.points.iter().enumerate() {
            let Some((value, quality)) = &reported.points[index] else {
                continue; // never read: nothing to call stale
            };
            if matches!(quality, Quality::Stale { .. }) {
                continue;
            }
            let value = value.clone();
            let quality = Quality::stale(format!("device offline: {reason}"));
            reported.points[index] = Some((value.clone(), quality.clone()));
            self.observe(context, point, value, quality, observed_at)
                .await;
        }
    }

    /// Carries out a write. Returns the outcome and, if the link broke, why.
    async fn write(
        &self,
        client: &mut Context,
        command: &CommandEnvelope,
    ) -> (CommandOutcome, Option<String>) {
        let failed = |reason: String| CommandOutcome::Failed { reason };
        let request = &command.request;
        let Some(point) = self
            .config
            .points
            .iter()
            .find(|p| p.id.get_ref() == &request.point)
        else {
            return (
                failed(format!(
                    "device `{}` has no point `{}`",
                    self.id, request.point
                )),
                None,
            );
        };
        if !point.writable {
            return (
                failed(format!("point `{}` is not writable", request.point)),
                None,
            );
        }
        let write = match codec::encode(point, &request.value) {
            Ok(write) => write,
            Err(error) => return (failed(error.to_string()), None),
        };
        let address = point.address;
        let attempt = async {
            match &write {
                Write::Coil(bit) => client.write_single_coil(address, *bit).await,
                Write::Registers(words) if words.len() == 1 => {
                    client.write_single_register(address, words[0]).await
                }
                Write::Registers(words) => client.write_multiple_registers(address, words).await,
            }
        };
        // Once the request is on the wire, silence does not mean it failed.
        let unconfirmed = |reason: String| CommandOutcome::Unconfirmed { reason };
        match timeout(self.timeout(), attempt).await {
            Ok(Ok(Ok(()))) => (CommandOutcome::Done, None),
            Ok(Ok(Err(code))) => (failed(exception_reason(code)), None),
            Ok(Err(error)) => {
                let reason = format!("write not confirmed: {error}");
                (unconfirmed(reason.clone()), Some(reason))
            }
            Err(_) => {
                let reason = format!("write not confirmed within {} ms", self.config.timeout_ms);
                (unconfirmed(reason.clone()), Some(reason))
            }
        }
    }
}

/// Change of value with deadband: whether a new reading must be reported.
fn changed(
    point: &ModbusPointConfig,
    last: Option<&(Option<Value>, Quality)>,
    value: Option<&Value>,
    quality: &Quality,
) -> bool {
    let Some((last_value, last_quality)) = last else {
        return true;
    };
    if last_quality != quality {
        return true;
    }
    match (last_value, value) {
        (Some(Value::Float(_) | Value::Int(_)), Some(new @ (Value::Float(_) | Value::Int(_))))
            if point.deadband > 0.0 =>
        {
            let old = last_value.as_ref().and_then(Value::as_f64).unwrap_or(0.0);
            new.as_f64()
                .is_some_and(|new| (new - old).abs() >= point.deadband)
        }
        (old, new) => old.as_ref() != new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::modbus::config::DataType;
    use gatehouse_protocol::PointId;
    use toml::Spanned;

    fn point(deadband: f64) -> ModbusPointConfig {
        ModbusPointConfig {
            id: Spanned::new(0..0, PointId::new("t").unwrap_or_else(|e| panic!("{e}"))),
            table: Table::InputRegister,
            address: 0,
            data_type: Some(Spanned::new(0..0, DataType::U16)),
            word_order: Default::default(),
            scale: 0.1,
            offset: 0.0,
            unit: None,
            deadband,
            writable: false,
            zone: None,
            egress_lock_value: None,
        }
    }

    #[test]
    fn deadband_filters_small_moves_but_not_quality_changes() {
        let p = point(0.5);
        let last = (Some(Value::Float(20.0)), Quality::Good);
        let good = Quality::Good;
        assert!(!changed(&p, Some(&last), Some(&Value::Float(20.4)), &good));
        assert!(changed(&p, Some(&last), Some(&Value::Float(20.5)), &good));
        assert!(changed(&p, Some(&last), Some(&Value::Float(19.5)), &good));
        assert!(changed(&p, Some(&last), None, &Quality::bad("exception")));
        assert!(changed(&p, None, Some(&Value::Float(20.0)), &good));
        let p = point(0.0);
        assert!(changed(&p, Some(&last), Some(&Value::Float(20.01)), &good));
        assert!(!changed(&p, Some(&last), Some(&Value::Float(20.0)), &good));
    }
}

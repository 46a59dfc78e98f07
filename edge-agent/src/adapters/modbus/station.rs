//! What every Modbus device does whatever carries its requests (a TCP connection, a serial
//! bus): read its points in blocks, decode them, report what changed and its health, carry
//! out writes and journal their outcome.
//!
//! The requests go through a [`Link`], the narrow seam between this logic and the wire; the
//! TCP adapter and the RTU bus each implement it, and tests drive it with a scripted one.
//!
//! Health of a device after one poll (all its blocks read once):
//! - every block answered (values or Modbus exceptions): **online**;
//! - some blocks answered and others did not, or came back garbled (a bad CRC): **degraded**,
//!   with the reason; the points of the failed blocks get bad quality;
//! - nothing answered (the first request silent, or the first two garbled): **offline**
//!   ([`PollError::Unreachable`]); the caller reports it with [`Station::go_offline`], which
//!   marks the points stale, and retries with backoff;
//! - the link itself failed (connection reset, serial port gone): [`PollError::Broken`], for
//!   the caller to reconnect.
//!
//! Order of events, so that a reader never finds a good point on an offline device: coming
//! up, the status comes before the values it vouches for; going down, the points turn stale
//! before the device is reported offline. (The journal commits and publishes in order.)

use std::future::Future;

use gatehouse_protocol::{
    CommandOutcome, DeviceId, DeviceStatus, EventBody, PointId, Quality, Value,
};
use jiff::Timestamp;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Context, Reader, Writer};

use super::codec::{self, Block, Raw, Write};
use super::config::{ModbusDeviceConfig, ModbusPointConfig, Table};
use crate::adapters::{AdapterContext, CommandEnvelope};
use crate::metrics::{DeviceLabels, ResultLabels};

/// The data of one block: registers, or bits.
pub(crate) type Data = Result<Vec<u16>, Vec<bool>>;

/// How a request failed to get a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing came back in time: the device is absent, off or deaf.
    Silent,
    /// Something came back that is not a valid answer (a bad CRC, a frame cut short, an
    /// answer from another unit). The device is there; the line or the device is faulty.
    Garbled,
    /// The connection or the port failed: every device behind it is unreachable.
    Broken,
}

/// A request that got no usable answer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkError {
    pub failure: Failure,
    pub reason: String,
    /// The `result` label of the poll counter.
    pub counted_as: &'static str,
}

/// What a request gets: an answer (what was asked, or a Modbus exception), or a
/// [`LinkError`].
pub(crate) type Answer<T> = Result<Result<T, ExceptionCode>, LinkError>;

/// Carries one device's requests.
pub(crate) trait Link {
    fn read(
        &mut self,
        table: Table,
        start: u16,
        count: u16,
    ) -> impl Future<Output = Answer<Data>> + Send;

    fn write(&mut self, address: u16, write: &Write) -> impl Future<Output = Answer<()>> + Send;
}

/// Reads a block with a tokio-modbus client, TCP or RTU alike.
pub(crate) async fn read_table(
    client: &mut Context,
    table: Table,
    start: u16,
    count: u16,
) -> tokio_modbus::Result<Data> {
    match table {
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
}

/// Writes a coil or registers with a tokio-modbus client, TCP or RTU alike.
pub(crate) async fn write_point(
    client: &mut Context,
    address: u16,
    write: &Write,
) -> tokio_modbus::Result<()> {
    match write {
        Write::Coil(bit) => client.write_single_coil(address, *bit).await,
        Write::Registers(words) if words.len() == 1 => {
            client.write_single_register(address, words[0]).await
        }
        Write::Registers(words) => client.write_multiple_registers(address, words).await,
    }
}

/// Why a session on an open link ended.
pub(crate) enum Ended {
    Shutdown,
    Broken(String),
}

/// The life of a link (a TCP connection, a serial port): opened, used until it breaks, the
/// devices behind it reported unreachable while a backoff delay passes, opened again.
/// [`keep_open`] runs it; TCP and RTU fill in the steps.
pub(crate) trait Lifecycle {
    type Open: Send;

    /// Opens the link, or says why it cannot.
    fn open(&mut self) -> impl Future<Output = Result<Self::Open, String>> + Send;

    /// Uses an open link until it breaks or the agent stops.
    fn serve(
        &mut self,
        link: Self::Open,
        context: &AdapterContext,
    ) -> impl Future<Output = Ended> + Send;

    /// Reports the devices behind the link unreachable and waits out the backoff delay;
    /// false when the agent stops meanwhile.
    fn lost(
        &mut self,
        context: &AdapterContext,
        reason: String,
    ) -> impl Future<Output = bool> + Send;
}

/// Runs a link's life until the agent stops.
pub(crate) async fn keep_open<L: Lifecycle>(lifecycle: &mut L, context: &AdapterContext) {
    loop {
        let reason = match lifecycle.open().await {
            Ok(link) => match lifecycle.serve(link, context).await {
                Ended::Shutdown => return,
                Ended::Broken(reason) => reason,
            },
            Err(reason) => reason,
        };
        if context.shutdown.is_cancelled() || !lifecycle.lost(context, reason).await {
            return;
        }
    }
}

/// Why a poll ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PollError {
    /// The device gave no usable answer at all.
    Unreachable(String),
    /// The link failed; every device behind it is unreachable.
    Broken(String),
}

/// One Modbus device: its points, how they are read, and what was last reported of them.
pub(crate) struct Station {
    pub id: DeviceId,
    pub config: ModbusDeviceConfig,
    blocks: Vec<Block>,
    /// What was last reported for each point (index as in the config).
    points: Vec<Option<(Option<Value>, Quality)>>,
    status: Option<DeviceStatus>,
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

/// A reading to report once the poll's status is known.
struct Reading {
    point: usize,
    value: Option<Value>,
    quality: Quality,
    observed_at: Timestamp,
}

impl Station {
    /// Starts from what the journal last recorded, so a restart repeats nothing unchanged
    /// and still marks stale what it cannot reach.
    pub fn new(config: ModbusDeviceConfig, context: &AdapterContext) -> Self {
        let id = config.id.get_ref().clone();
        Station {
            points: context.last_recorded(config.points.iter().map(|p| p.id.get_ref())),
            status: context.live.device(&id).map(|state| state.status),
            blocks: codec::plan_reads(&config.points),
            id,
            config,
        }
    }

    pub fn is_offline(&self) -> bool {
        self.status == Some(DeviceStatus::Offline)
    }

    pub fn owns(&self, point: &PointId) -> bool {
        self.config.points.iter().any(|p| p.id.get_ref() == point)
    }

    /// Reads every block once, then reports the device's status and what changed.
    pub async fn poll<L: Link>(
        &mut self,
        link: &mut L,
        context: &AdapterContext,
    ) -> Result<(), PollError> {
        let mut answered = false;
        let mut failures = 0;
        let mut failed: Option<String> = None;
        let mut readings = Vec::new();
        let mut index = 0;
        while index < self.blocks.len() {
            let block = &self.blocks[index];
            let (start, count) = (block.start, block.count);
            let observed_at = Timestamp::now();
            let result = match link.read(block.table, start, count).await {
                Err(error) => {
                    self.count_poll(context, error.counted_as);
                    failures += 1;
                    if error.failure == Failure::Broken {
                        return Err(PollError::Broken(error.reason));
                    }
                    // Each further block of a device that answered nothing yet would cost
                    // a timeout: give up at once when it is silent, after two garbled
                    // answers (a bad line rarely garbles one block only).
                    let hopeless = error.failure == Failure::Silent || failures >= 2;
                    if hopeless && !answered {
                        return Err(PollError::Unreachable(error.reason));
                    }
                    failed = Some(error.reason.clone());
                    Err(error.reason)
                }
                Ok(Err(code)) if is_gateway_exception(code) => {
                    self.count_poll(context, "exception");
                    return Err(PollError::Unreachable(exception_reason(code)));
                }
                Ok(Err(code)) if block.points.len() > 1 => {
                    // The device refuses the merged read (a hole in its map): read these
                    // points one by one from now on, starting right away.
                    self.count_poll(context, "exception");
                    answered = true;
                    tracing::info!(device = %self.id, table = block.table.as_str(), start, count,
                        exception = %exception_reason(code), "merged read refused; reading its points one by one");
                    let singles = split(block, &self.config.points);
                    self.blocks.splice(index..=index, singles);
                    continue;
                }
                Ok(Err(code)) => {
                    self.count_poll(context, "exception");
                    answered = true;
                    Err(exception_reason(code))
                }
                Ok(Ok(data)) => {
                    self.count_poll(context, "ok");
                    answered = true;
                    Ok(data)
                }
            };
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
                let last = self.points[point_index].as_ref();
                if changed(point, last, value.as_ref(), &quality) {
                    readings.push(Reading {
                        point: point_index,
                        value,
                        quality,
                        observed_at,
                    });
                }
            }
            index += 1;
        }
        if !answered {
            return Err(PollError::Unreachable(
                failed.unwrap_or_else(|| "no answer".to_owned()),
            ));
        }
        // The status first, then what the device answered.
        match &failed {
            None => {
                self.report_status(context, DeviceStatus::Online, None)
                    .await
            }
            Some(reason) => {
                self.report_status(context, DeviceStatus::Degraded, Some(reason))
                    .await
            }
        }
        for reading in readings {
            self.points[reading.point] = Some((reading.value.clone(), reading.quality.clone()));
            let point = &self.config.points[reading.point];
            self.observe(
                context,
                point,
                reading.value,
                reading.quality,
                reading.observed_at,
            )
            .await;
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

    /// Counts an attempt to reach the device again after a failure.
    pub fn count_reconnect(&self, context: &AdapterContext) {
        context
            .metrics
            .modbus_reconnects
            .get_or_create(&DeviceLabels {
                device: self.id.to_string(),
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

    /// Reports a status when it differs from the last one reported.
    async fn report_status(
        &mut self,
        context: &AdapterContext,
        status: DeviceStatus,
        reason: Option<&str>,
    ) {
        if self.status == Some(status) {
            return;
        }
        self.status = Some(status);
        match status {
            DeviceStatus::Online => tracing::info!(device = %self.id, "modbus device online"),
            _ => tracing::warn!(device = %self.id, ?status, reason, "modbus device unhealthy"),
        }
        context
            .emit(EventBody::DeviceStatus {
                device: self.id.clone(),
                status,
                reason: reason.map(str::to_owned),
            })
            .await;
    }

    /// Reports the device's known points stale and the device offline, once per outage.
    /// The points first: whoever sees the device offline (events are committed in order)
    /// finds its points stale already.
    pub async fn go_offline(&mut self, context: &AdapterContext, reason: &str) {
        let observed_at = Timestamp::now();
        for (index, point) in self.config.points.iter().enumerate() {
            let Some((value, quality)) = &self.points[index] else {
                continue; // never read: nothing to call stale
            };
            if matches!(quality, Quality::Stale { .. }) {
                continue;
            }
            let value = value.clone();
            let quality = Quality::stale(format!("device offline: {reason}"));
            self.points[index] = Some((value.clone(), quality.clone()));
            self.observe(context, point, value, quality, observed_at)
                .await;
        }
        self.report_status(context, DeviceStatus::Offline, Some(reason))
            .await;
    }

    /// Carries out a write. Returns the outcome and, if the request got no answer, why.
    pub async fn write<L: Link>(
        &self,
        link: &mut L,
        command: &CommandEnvelope,
    ) -> (CommandOutcome, Option<LinkError>) {
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
        // Once the request is on the wire, silence does not mean it failed.
        match link.write(point.address, &write).await {
            Ok(Ok(())) => (CommandOutcome::Done, None),
            Ok(Err(code)) => (failed(exception_reason(code)), None),
            Err(error) => (
                CommandOutcome::Unconfirmed {
                    reason: format!("write not confirmed: {}", error.reason),
                },
                Some(error),
            ),
        }
    }
}

/// Change of value with the point's deadband: whether a new reading must be reported.
fn changed(
    point: &ModbusPointConfig,
    last: Option<&(Option<Value>, Quality)>,
    value: Option<&Value>,
    quality: &Quality,
) -> bool {
    crate::adapters::changed(point.deadband, last, value, quality)
}

#[cfg(test)]
mod tests;

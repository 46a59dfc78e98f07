//! Device adapters: one folder per protocol, all behind the [`Adapter`] trait.
//!
//! An adapter owns one device's protocol: it connects, polls or subscribes, reconnects with
//! backoff, reports its status and turns what it reads into observation events. It executes
//! the commands addressed to its points. It never touches the journal's storage, the rules or
//! the API: it sends [`EventBody`] values into the [`JournalHandle`] and receives
//! [`CommandEnvelope`]s.
//!
//! The [`supervise`] loop restarts an adapter that panics or returns, with backoff, so one
//! broken device never takes the agent down.

pub mod bacnet;
pub mod modbus;
pub mod zigbee;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_protocol::{
    CommandOutcome, CommandRequest, DeviceId, EventBody, PointId, Quality, Value,
};
use rand::Rng;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::journal::JournalHandle;
use crate::live::Live;
use crate::metrics::{Metrics, ResultLabels};

/// A command on its way to an adapter, with the slot for its outcome.
#[derive(Debug)]
pub struct CommandEnvelope {
    /// The device the command is for (one adapter may drive several).
    pub device: DeviceId,
    pub request: CommandRequest,
    pub requested_by: String,
    /// After this instant the requester has given up: the command must not be carried out.
    pub deadline: tokio::time::Instant,
    /// Answered with the outcome and the seq of its journal record, once committed.
    pub reply: oneshot::Sender<(CommandOutcome, u64)>,
}

impl CommandEnvelope {
    /// Whether the requester is gone or its deadline passed.
    pub fn expired(&self) -> bool {
        self.reply.is_closed() || tokio::time::Instant::now() >= self.deadline
    }
}

/// What an adapter is given to run.
pub struct AdapterContext {
    pub journal: JournalHandle,
    /// The last committed state, to start from what the journal already says.
    pub live: Arc<Live>,
    pub commands: Arc<Mutex<mpsc::Receiver<CommandEnvelope>>>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl AdapterContext {
    /// Sends an event to the journal; false when the agent is stopping or the journal is
    /// gone. Waits while the journal is saturated, but not past shutdown.
    pub async fn emit(&self, body: EventBody) -> bool {
        tokio::select! {
            sent = self.journal.append(body) => sent.is_ok(),
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Sends an event and waits until it is committed; its seq, or None on shutdown.
    pub async fn emit_committed(&self, body: EventBody) -> Option<u64> {
        tokio::select! {
            seq = self.journal.append_committed(body) => seq.ok(),
            () = self.shutdown.cancelled() => None,
        }
    }

    /// What the journal last recorded of each of `points` (value and quality), so that an
    /// adapter starting again repeats nothing unchanged and still marks stale what it cannot
    /// reach.
    pub fn last_recorded<'p>(
        &self,
        points: impl Iterator<Item = &'p PointId>,
    ) -> Vec<Option<(Option<Value>, Quality)>> {
        points
            .map(|point| {
                self.live
                    .point(point)
                    .map(|state| (state.value, state.quality))
            })
            .collect()
    }

    /// Journals a command's outcome and, once that is committed, answers the requester.
    pub async fn finish_command(&self, command: CommandEnvelope, outcome: CommandOutcome) {
        let result = match outcome {
            CommandOutcome::Sent => "sent",
            CommandOutcome::Done => "done",
            CommandOutcome::Failed { .. } => "failed",
            CommandOutcome::Unconfirmed { .. } => "unconfirmed",
        };
        self.metrics
            .commands
            .get_or_create(&ResultLabels {
                device: command.device.to_string(),
                result,
            })
            .inc();
        tracing::info!(device = %command.device, point = %command.request.point,
            value = %command.request.value, by = %command.requested_by, result, "command");
        let record = EventBody::Command {
            device: command.device.clone(),
            point: command.request.point.clone(),
            value: command.request.value.clone(),
            outcome: outcome.clone(),
            requested_by: command.requested_by.clone(),
        };
        if let Some(seq) = self.emit_committed(record).await {
            let _ = command.reply.send((outcome, seq));
        }
    }

    /// Sleeps out a backoff delay while refusing commands (the devices are unreachable for
    /// `reason`); false on shutdown.
    pub async fn wait_offline(&self, delay: Duration, reason: &str) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut commands = self.commands.lock().await;
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                () = self.shutdown.cancelled() => return false,
                Some(command) = commands.recv() => {
                    let outcome = if command.expired() {
                        expired()
                    } else {
                        CommandOutcome::Failed { reason: format!("device offline: {reason}") }
                    };
                    self.finish_command(command, outcome).await;
                }
            }
        }
    }
}

/// The outcome of a command whose requester stopped waiting.
pub fn expired() -> CommandOutcome {
    CommandOutcome::Failed {
        reason: "expired: the requester stopped waiting before the device could be reached".into(),
    }
}

/// A protocol driver for one device, or for several behind one connection (a serial bus, a
/// zigbee2mqtt bridge).
pub trait Adapter: Send + Sync + 'static {
    /// What logs call it: its device, or its bus or bridge.
    fn name(&self) -> &str;

    /// The devices whose commands it executes.
    fn devices(&self) -> &[DeviceId];

    /// Runs until `context.shutdown` is cancelled. Connection failures are handled inside
    /// (reported and retried); returning early is treated as a crash and restarted.
    fn run<'a>(&'a self, context: &'a AdapterContext) -> BoxFuture<'a, ()>;
}

/// Routes API commands to the adapter owning the device.
#[derive(Clone, Default)]
pub struct CommandRouter {
    devices: Arc<HashMap<DeviceId, mpsc::Sender<CommandEnvelope>>>,
}

/// Why a command could not be handed to a device.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("device `{0}` does not exist")]
    UnknownDevice(DeviceId),
    #[error("device `{0}` is busy with earlier commands; try again")]
    Busy(DeviceId),
    #[error("the adapter of device `{0}` has stopped")]
    Stopped(DeviceId),
}

impl CommandRouter {
    pub fn send(&self, device: &DeviceId, envelope: CommandEnvelope) -> Result<(), RouteError> {
        let sender = self
            .devices
            .get(device)
            .ok_or_else(|| RouteError::UnknownDevice(device.clone()))?;
        sender.try_send(envelope).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => RouteError::Busy(device.clone()),
            mpsc::error::TrySendError::Closed(_) => RouteError::Stopped(device.clone()),
        })
    }
}

/// Exponential backoff with full jitter: each delay is uniform in [base/2, base], base doubling
/// up to `max`. Jitter keeps a fleet of devices from reconnecting in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// How many commands may wait for an adapter, per device it drives, before more are refused
/// as busy.
const COMMANDS_QUEUED_PER_DEVICE: usize = 16;

/// Change of value with deadband: whether a new reading must be reported (its quality
/// changed, or its value moved by at least `deadband`; any change when 0 or not numeric).
pub(crate) fn changed(
    deadband: f64,
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
            if deadband > 0.0 =>
        {
            let old = last_value.as_ref().and_then(Value::as_f64).unwrap_or(0.0);
            new.as_f64()
                .is_some_and(|new| (new - old).abs() >= deadband)
        }
        (old, new) => old.as_ref() != new,
    }
}

/// Starts every adapter under supervision; returns the command router.
pub fn start(
    adapters: Vec<Arc<dyn Adapter>>,
    journal: &JournalHandle,
    live: &Arc<Live>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> CommandRouter {
    let mut routes = HashMap::new();
    for adapter in adapters {
        let (sender, receiver) =
            mpsc::channel(COMMANDS_QUEUED_PER_DEVICE * adapter.devices().len().max(1));
        for device in adapter.devices() {
            routes.insert(device.clone(), sender.clone());
        }
        let context = AdapterContext {
            journal: journal.clone(),
            live: live.clone(),
            commands: Arc::new(Mutex::new(receiver)),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(supervise(adapter, context));
    }
    CommandRouter {
        devices: Arc::new(routes),
    }
}

/// Runs an adapter, restarting it with backoff if it panics or returns before shutdown.
async fn supervise(adapter: Arc<dyn Adapter>, context: AdapterContext) {
    let context = Arc::new(context);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let run = {
            let adapter = adapter.clone();
            let context = context.clone();
            tokio::spawn(async move { adapter.run(&context).await })
        };
        let outcome = run.await;
        if context.shutdown.is_cancelled() {
            return;
        }
        let delay = backoff.next_delay();
        match outcome {
            Ok(()) => {
                tracing::error!(
                    adapter = adapter.name(),
                    restart_in_ms = delay.as_millis() as u64,
                    "adapter returned unexpectedly; restarting"
                )
            }
            Err(error) => {
                tracing::error!(adapter = adapter.name(), %error, restart_in_ms = delay.as_millis() as u64,
                "adapter crashed; restarting")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = context.shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(
        deadline: tokio::time::Instant,
    ) -> (CommandEnvelope, oneshot::Receiver<(CommandOutcome, u64)>) {
        let (reply, answer) = oneshot::channel();
        let request = CommandRequest {
            point: PointId::new("strike").unwrap_or_else(|e| panic!("{e}")),
            value: Value::Bool(true),
        };
        (
            CommandEnvelope {
                device: DeviceId::new("plc").unwrap_or_else(|e| panic!("{e}")),
                request,
                requested_by: "x".into(),
                deadline,
                reply,
            },
            answer,
        )
    }

    #[tokio::test]
    async fn a_command_expires_when_its_requester_leaves_or_its_deadline_passes() {
        let later = tokio::time::Instant::now() + Duration::from_secs(60);
        let (waiting, _answer) = envelope(later);
        assert!(!waiting.expired());
        let (abandoned, answer) = envelope(later);
        drop(answer);
        assert!(abandoned.expired());
        let (late, _answer) = envelope(tokio::time::Instant::now());
        assert!(late.expired());
    }

    #[test]
    fn deadband_filters_small_moves_but_not_quality_changes() {
        let last = (Some(Value::Float(20.0)), Quality::Good);
        let good = Quality::Good;
        assert!(!changed(0.5, Some(&last), Some(&Value::Float(20.4)), &good));
        assert!(changed(0.5, Some(&last), Some(&Value::Float(20.5)), &good));
        assert!(changed(0.5, Some(&last), Some(&Value::Float(19.5)), &good));
        assert!(changed(0.5, Some(&last), None, &Quality::bad("exception")));
        assert!(changed(0.5, None, Some(&Value::Float(20.0)), &good));
        assert!(changed(0.0, Some(&last), Some(&Value::Float(20.01)), &good));
        assert!(!changed(0.0, Some(&last), Some(&Value::Float(20.0)), &good));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        let bases = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base / 2 && *delay <= base,
                "{delay:?} vs {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}

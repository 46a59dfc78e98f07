//! The rules engine's outside world. The engine runs inside the journal writer (see
//! [`crate::journal::rules`]); these tasks do what it cannot do there:
//! - [`dispatch`] hands rule commands to the adapters once their batch is committed, and
//!   journals a command that cannot reach its device as failed;
//! - [`wake`] sends the writer a tick when the engine's next deadline comes (an entry delay
//!   running out, a door held too long, a schedule boundary);
//! - [`watch_config`] reloads zones, schedules and rules when the config file changes, keeping
//!   timers, modes and open incidents; a config with problems is refused with every problem's
//!   file:line and the running rules stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_protocol::{CommandOutcome, CommandRequest, EventBody};
use gatehouse_rules::engine::Command;
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::adapters::{CommandEnvelope, CommandRouter};
use crate::config::Config;
use crate::journal::JournalHandle;
use crate::metrics::{Metrics, OutcomeLabels};

/// The longest the wake-up task sleeps without looking at the clock again: a wall clock set
/// forward (NTP after a long outage) is noticed within this.
const WAKE_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// How often the config file is looked at.
pub const CONFIG_POLL: Duration = Duration::from_secs(2);

/// Hands rule commands to the adapters. A command nobody can carry out (its device is busy or
/// gone) is journaled as failed; otherwise the adapter journals its outcome, as for any
/// command.
pub async fn dispatch(
    mut commands: mpsc::UnboundedReceiver<Command>,
    router: CommandRouter,
    journal: JournalHandle,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            () = shutdown.cancelled() => return,
            command = commands.recv() => match command {
                Some(command) => command,
                None => return,
            },
        };
        let (reply, outcome) = oneshot::channel();
        let requested_by = format!("rule:{}", command.rule);
        let envelope = CommandEnvelope {
            device: command.device.clone(),
            request: CommandRequest {
                point: command.point.clone(),
                value: command.value.clone(),
            },
            requested_by: requested_by.clone(),
            deadline: tokio::time::Instant::now() + timeout,
            reply,
        };
        match router.send(&command.device, envelope) {
            // The adapter journals the outcome; waiting here keeps the command alive (an
            // envelope whose reply is dropped counts as abandoned).
            Ok(()) => {
                tokio::spawn(async move {
                    if let Ok((outcome, _)) = outcome.await {
                        tracing::info!(rule = %command.rule, point = %command.point,
                            ?outcome, "rule command carried out");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(rule = %command.rule, point = %command.point, %error,
                    "rule command could not reach its device");
                let failed = EventBody::Command {
                    device: command.device,
                    point: command.point,
                    value: command.value,
                    outcome: CommandOutcome::Failed {
                        reason: error.to_string(),
                    },
                    requested_by,
                };
                if journal.append(failed).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Ticks the writer when the engine's next deadline has come.
pub async fn wake(
    mut deadline: watch::Receiver<Option<Timestamp>>,
    journal: JournalHandle,
    shutdown: CancellationToken,
) {
    loop {
        let next = *deadline.borrow_and_update();
        let sleep = match next {
            Some(at) => {
                let left = at.duration_since(Timestamp::now());
                if left.is_negative() || left.is_zero() {
                    if journal.tick().await.is_err() {
                        return;
                    }
                    // The writer moves the deadline on; wait for it (or a second) before
                    // looking again, so a deadline that cannot run does not spin.
                    WAKE_AT_LEAST_EVERY
                } else {
                    left.unsigned_abs().min(WAKE_AT_LEAST_EVERY)
                }
            }
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = deadline.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// What identifies a version of the config file.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reloads the rules when the config file changes.
pub async fn watch_config(
    path: PathBuf,
    running: Config,
    journal: JournalHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut seen = stamp(&path);
    let mut running = running;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CONFIG_POLL) => {}
        }
        let now = stamp(&path);
        if now == seen || now.is_none() {
            continue;
        }
        seen = now;
        let outcome = match reload(&path, &running, &journal).await {
            Ok(Some(config)) => {
                running = config;
                "applied"
            }
            Ok(None) => "unchanged",
            Err(()) => "refused",
        };
        metrics
            .rules_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// Loads the changed file and hands its rules to the writer. `Ok(None)` when the rules did
/// not change; `Err` when the file has problems (logged).
async fn reload(
    path: &Path,
    running: &Config,
    journal: &JournalHandle,
) -> Result<Option<Config>, ()> {
    let config = Config::load(path).map_err(|error| {
        tracing::error!("the changed config is refused; the running rules stay:\n{error}");
    })?;
    if !config.restart_needed_for(running).is_empty() {
        tracing::warn!(sections = ?config.restart_needed_for(running),
            "the config changed outside zones, schedules and rules; that part takes effect at the next restart");
    }
    if !config.rules_differ(running) {
        return Ok(None);
    }
    let engine = config.checked_engine().map_err(|error| {
        tracing::error!(%error, "the changed config's rules do not compile; the running rules stay");
    })?;
    journal.reload_rules(engine).await.map_err(|_| ())?;
    tracing::info!(path = %path.display(), rules = config.rules.len(),
        zones = config.zones.len(), "config changed: rules reloaded");
    Ok(Some(config))
}

//! The rules engine inside the journal writer.
//!
//! The engine (crate `gatehouse-rules`) is pure; this module is its loop (see the engine's
//! module note): every event the writer journals is shown to it in seq order, and what it asks
//! for is carried out **in the same transaction**:
//! - a raise opens an incident, or adds its evidence to the open one it names;
//! - an escalation step raises the incident's severity and records that it escalated;
//! - a mode change is a `zone_mode` event; a command the interlock refused is a failed
//!   `command` event;
//! - each of those events goes back to the engine (that is how it learns incident ids).
//!
//! Device commands leave only after COMMIT (a rolled-back batch sends nothing), through the
//! channel the agent's dispatcher reads. The engine's state is saved with the batch that
//! changed it (table `rule_state`), so timers, modes and entry delays survive a restart; a
//! batch that fails to commit rebuilds the state from the last saved one, and the batch is then
//! evaluated again.

use std::collections::VecDeque;
use std::sync::Arc;

use gatehouse_protocol::incident::{Incident, IncidentChange, IncidentState};
use gatehouse_protocol::{CommandOutcome, Event, EventBody, PointId};
use gatehouse_rules::engine::{Command, ModeChange, Raise};
use gatehouse_rules::{Engine, Output, Snapshot};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction};
use tokio::sync::{mpsc, watch};

use super::clips::{self, ClipRequest};
use super::writer::{insert_event, load_incident, store_incident};
use super::{JournalError, query};
use crate::live::{Live, RulesView, ZoneView};
use crate::metrics::Metrics;

/// An incident keeps its first evidence and at most this many in all; later triggers replace
/// the oldest but the first, so a door that flaps all night does not grow one row without end.
pub const MAX_EVIDENCE: usize = 100;

/// Where the writer's rules send what must happen outside the journal.
pub struct RuleLinks {
    /// Device commands from rules, after commit.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Clips for the video service, after commit.
    pub clips: mpsc::UnboundedSender<ClipRequest>,
    /// The next instant the engine must be woken at.
    pub deadline: watch::Sender<Option<Timestamp>>,
}

/// The other ends of [`RuleLinks`], for the agent's dispatcher and wake-up tasks.
pub struct RuleOutlets {
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub clips: mpsc::UnboundedReceiver<ClipRequest>,
    pub deadline: watch::Receiver<Option<Timestamp>>,
}

/// A connected pair of links and outlets.
pub fn links() -> (RuleLinks, RuleOutlets) {
    let (commands, commands_out) = mpsc::unbounded_channel();
    let (clips, clips_out) = mpsc::unbounded_channel();
    let (deadline, deadline_out) = watch::channel(None);
    (
        RuleLinks {
            commands,
            clips,
            deadline,
        },
        RuleOutlets {
            commands: commands_out,
            clips: clips_out,
            deadline: deadline_out,
        },
    )
}

/// The engine and its bookkeeping, owned by the writer thread.
pub struct RuleDriver {
    engine: Engine,
    /// The state as committed last (what a failed batch goes back to).
    committed: Option<Snapshot>,
    /// The state computed in the batch being committed.
    pending: Option<Snapshot>,
    /// Commands of the batch being committed.
    commands: Vec<Command>,
    /// Clips of the batch being committed.
    clips: Vec<ClipRequest>,
    /// Whether the engine's start is committed (a rolled-back start is started again).
    started: bool,
    /// Whether the batch being committed starts it.
    starting: bool,
    links: RuleLinks,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
}

impl RuleDriver {
    pub fn new(engine: Engine, links: RuleLinks, live: Arc<Live>, metrics: Arc<Metrics>) -> Self {
        RuleDriver {
            engine,
            committed: None,
            pending: None,
            commands: Vec::new(),
            clips: Vec::new(),
            started: false,
            starting: false,
            links,
            live,
            metrics,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Starts the engine from the saved state and the points' last good values; what the
    /// restart requires (an entry delay that ran out meanwhile) is carried out in `tx`.
    pub fn start(
        &mut self,
        tx: &Transaction,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<(), JournalError> {
        let snapshot = load_snapshot(tx)?;
        let points: Vec<PointId> = self.engine.points().cloned().collect();
        let latest = query::latest_good_observations(tx, &points)?;
        let outputs = self.engine.start(&latest, snapshot.as_ref(), now);
        self.committed = snapshot;
        self.starting = true;
        tracing::info!(
            rules = self.engine.rule_count(),
            restored = self.committed.is_some(),
            "rules engine started"
        );
        self.apply(tx, now, outputs, events)
    }

    /// Shows a journaled event to the engine and carries out what follows from it.
    pub fn feed(
        &mut self,
        tx: &Transaction,
        event: Event,
        events: &mut Vec<Event>,
    ) -> Result<(), JournalError> {
        let outputs = self.engine.on_event(&event);
        let at = event.recorded_at;
        events.push(event);
        self.apply(tx, at, outputs, events)
    }

    /// Carries out the engine's outputs, and those of the events they journal, in order.
    pub fn apply(
        &mut self,
        tx: &Transaction,
        at: Timestamp,
        outputs: Vec<Output>,
        events: &mut Vec<Event>,
    ) -> Result<(), JournalError> {
        let mut pending = VecDeque::new();
        self.queue(tx, at, outputs, &mut pending)?;
        while let Some(output) = pending.pop_front() {
            let body = match output {
                Output::Raise(raise) => Some(self.raise(tx, at, &raise)?),
                Output::Escalate {
                    incident, severity, ..
                } => escalate(tx, incident, severity)?,
                Output::Command(command) => {
                    tracing::info!(rule = %command.rule, device = %command.device,
                        point = %command.point, value = %command.value, "rule commands a device");
                    // Journaled as sent in this transaction; it leaves after COMMIT, and the
                    // device's answer is journaled by its adapter.
                    let sent = EventBody::Command {
                        device: command.device.clone(),
                        point: command.point.clone(),
                        value: command.value.clone(),
                        outcome: CommandOutcome::Sent,
                        requested_by: format!("rule:{}", command.rule),
                    };
                    self.commands.push(command);
                    Some(sent)
                }
                Output::CommandRefused { command, reason } => {
                    tracing::warn!(rule = %command.rule, point = %command.point, %reason,
                        "rule's command refused");
                    self.metrics.rules_commands_refused.inc();
                    Some(EventBody::Command {
                        device: command.device,
                        point: command.point,
                        value: command.value,
                        outcome: CommandOutcome::Failed { reason },
                        requested_by: format!("rule:{}", command.rule),
                    })
                }
                // Recorded by `queue` before the other outputs.
                Output::Clip { .. } => None,
                Output::Mode(change) => Some(mode_event(change)),
                Output::EntryDelay { rule, zone, until } => {
                    tracing::info!(%rule, %zone, %until, "entry delay started");
                    None
                }
                Output::Interlock { active } => {
                    if active {
                        tracing::warn!(
                            "life-safety interlock active: egress doors released, locking refused"
                        );
                    } else {
                        tracing::warn!("life-safety interlock ended: egress doors may lock again");
                    }
                    None
                }
                Output::LoopSuppressed {
                    rule,
                    max_firings,
                    window,
                } => {
                    tracing::warn!(%rule, max_firings, window = %window,
                        "rule fires too often (a loop?): held back until its window has room");
                    self.metrics.rules_loops_suppressed.inc();
                    None
                }
            };
            if let Some(body) = body {
                let event = insert_event(tx, at, body)?;
                let outputs = self.engine.on_event(&event);
                self.queue(tx, at, outputs, &mut pending)?;
                events.push(event);
            }
        }
        Ok(())
    }

    /// Queues outputs to carry out; clip requests are recorded at once, so that a raise of
    /// the same trigger finds them whatever the order of the rule's actions.
    fn queue(
        &mut self,
        tx: &Transaction,
        now: Timestamp,
        outputs: Vec<Output>,
        pending: &mut VecDeque<Output>,
    ) -> Result<(), JournalError> {
        for output in outputs {
            if let Output::Clip {
                rule,
                camera,
                at,
                from,
                to,
            } = &output
            {
                let request = clips::insert(tx, rule.as_str(), camera, (*at, *from, *to), now)?;
                tracing::info!(%rule, %camera, clip = request.id, %from, %to, "rule asks for a clip");
                self.metrics.rules_clips_requested.inc();
                self.clips.push(request);
            }
            pending.push_back(output);
        }
        Ok(())
    }

    /// Opens the incident of a raise, or adds the evidence to the one it names; returns the
    /// incident's event.
    fn raise(
        &mut self,
        tx: &Transaction,
        at: Timestamp,
        raise: &Raise,
    ) -> Result<EventBody, JournalError> {
        let open = match raise.attach_to {
            Some(id) => load_incident(tx, id)?.filter(|i| i.state != IncidentState::Resolved),
            None => None,
        };
        let (incident, change) = match open {
            Some(mut incident) => {
                for evidence in raise.evidence() {
                    super::push_keeping_first(&mut incident.evidence, evidence, MAX_EVIDENCE);
                }
                attach_clips(tx, &mut incident, raise)?;
                store_incident(tx, &incident)?;
                (incident, IncidentChange::EvidenceAdded)
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO incidents (state, opened_at, body) VALUES ('open', ?1, '{}')",
                )?
                .execute([super::to_micros(at)])?;
                let mut incident = raise.incident(tx.last_insert_rowid() as u64, at);
                attach_clips(tx, &mut incident, raise)?;
                store_incident(tx, &incident)?;
                tracing::warn!(incident = incident.id, rule = %incident.rule,
                    severity = incident.severity.as_str(), title = %incident.title,
                    "incident opened");
                self.metrics.incidents_opened.inc();
                (incident, IncidentChange::Opened)
            }
        };
        Ok(incident_body(change, incident))
    }

    /// Saves the engine's state with the batch when it changed.
    pub fn save(&mut self, tx: &Transaction, now: Timestamp) -> Result<(), JournalError> {
        let mut snapshot = self.engine.snapshot(now);
        let unchanged = self.committed.as_ref().is_some_and(|committed| {
            snapshot.taken_at = committed.taken_at;
            *committed == snapshot
        });
        snapshot.taken_at = now;
        if !unchanged {
            tx.prepare_cached(
                "INSERT INTO rule_state (id, saved_at, body) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET saved_at = excluded.saved_at, body = excluded.body",
            )?
            .execute(rusqlite::params![
                super::to_micros(now),
                serde_json::to_string(&snapshot)?
            ])?;
        }
        self.pending = Some(snapshot);
        Ok(())
    }

    /// The batch is committed: its commands go out, its state is the one to return to, and
    /// the live view and the wake-up time follow.
    pub fn committed(&mut self) {
        self.started |= self.starting;
        self.starting = false;
        if let Some(snapshot) = self.pending.take() {
            self.live.set_rules(RulesView {
                rules: self.engine.rule_count(),
                zones: snapshot
                    .zones
                    .iter()
                    .map(|zone| ZoneView {
                        id: zone.id.clone(),
                        mode: zone.mode,
                        effective_at: zone.effective_at,
                    })
                    .collect(),
                bypassed: snapshot.bypassed.clone(),
                interlock: self.engine.interlock_active(),
            });
            self.committed = Some(snapshot);
        }
        for command in self.commands.drain(..) {
            // The dispatcher is gone only when the agent stops.
            let _ = self.links.commands.send(command);
        }
        for clip in self.clips.drain(..) {
            // Without cameras nobody takes them: the rows say they wait (see video::service).
            let _ = self.links.clips.send(clip);
        }
        let next = self.engine.next_deadline();
        self.links.deadline.send_if_modified(|deadline| {
            let changed = *deadline != next;
            *deadline = next;
            changed
        });
    }

    /// The batch was rolled back: the engine goes back to the state last committed, rebuilt
    /// from the saved state and the points' committed values.
    pub fn rolled_back(&mut self, connection: &Connection) -> Result<(), JournalError> {
        self.pending = None;
        self.commands.clear();
        self.clips.clear();
        self.starting = false;
        if !self.started {
            // The start itself was rolled back: the batch starts a fresh engine again.
            self.engine = self.engine.fresh();
            self.committed = None;
            return Ok(());
        }
        let mut engine = self.engine.fresh();
        let points: Vec<PointId> = engine.points().cloned().collect();
        let latest = query::latest_good_observations(connection, &points)?;
        let at = self
            .committed
            .as_ref()
            .map_or_else(Timestamp::now, |snapshot| snapshot.taken_at);
        // What a restart at that instant would do was done when it was committed.
        let _ = engine.start(&latest, self.committed.as_ref(), at);
        self.engine = engine;
        Ok(())
    }

    /// Replaces the compiled site (a changed config), keeping the state.
    pub fn reload(
        &mut self,
        tx: &Transaction,
        next: &Engine,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<(), JournalError> {
        let (engine, outputs) = self.engine.reload(next.fresh(), now);
        self.engine = engine;
        tracing::info!(rules = self.engine.rule_count(), "rules reloaded");
        self.apply(tx, now, outputs, events)
    }
}

/// Runs an escalation step on an incident still unacknowledged; its event, or `None` when it
/// was acknowledged or resolved meanwhile.
fn escalate(
    tx: &Transaction,
    id: u64,
    severity: Option<gatehouse_protocol::Severity>,
) -> Result<Option<EventBody>, JournalError> {
    let Some(mut incident) = load_incident(tx, id)?.filter(|i| i.state == IncidentState::Open)
    else {
        return Ok(None);
    };
    incident.escalate(severity);
    store_incident(tx, &incident)?;
    tracing::warn!(
        incident = id,
        severity = incident.severity.as_str(),
        step = incident.escalations,
        "incident escalated: still unacknowledged"
    );
    Ok(Some(incident_body(IncidentChange::Escalated, incident)))
}

/// Links the clips the rule asked for at each of the raise's triggers to `incident`.
fn attach_clips(
    tx: &Transaction,
    incident: &mut Incident,
    raise: &Raise,
) -> Result<(), JournalError> {
    for hit in raise.hits() {
        clips::attach(tx, incident, hit.at)?;
    }
    Ok(())
}

fn incident_body(change: IncidentChange, incident: Incident) -> EventBody {
    EventBody::Incident {
        change,
        incident: Box::new(incident),
    }
}

fn mode_event(change: ModeChange) -> EventBody {
    tracing::info!(zone = %change.zone, mode = change.mode.as_str(), by = %change.by,
        effective_at = %change.effective_at, "zone mode changed");
    EventBody::ZoneMode {
        zone: change.zone,
        mode: change.mode,
        effective_at: change.effective_at,
        by: change.by,
    }
}

/// The saved engine state, if any.
fn load_snapshot(connection: &Connection) -> Result<Option<Snapshot>, JournalError> {
    let body: Option<String> = connection
        .query_row("SELECT body FROM rule_state WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()?;
    match body {
        None => Ok(None),
        Some(body) => match serde_json::from_str(&body) {
            Ok(snapshot) => Ok(Some(snapshot)),
            Err(error) => {
                // A state this agent cannot read (written by a newer one): start from the
                // config, loudly, rather than not at all.
                tracing::error!(%error, "the saved rule state is unreadable; starting without it");
                Ok(None)
            }
        },
    }
}

#[cfg(test)]
mod tests;

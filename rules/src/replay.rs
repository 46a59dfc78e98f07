//! Replaying events through an engine with no journal and no devices: what `rules test` and
//! the engine's own tests do.
//!
//! The replay plays the journal's part in the engine's loop (see [`crate::engine`]): it numbers
//! the events, runs every deadline at its own time, opens an incident for each new
//! [`Raise`](crate::engine::Raise) (ids 1, 2, ...) and adds the evidence of a raise that names
//! one, and feeds each incident's event back to the engine. Commands, clips and modes are only
//! reported. Incident events in the input are skipped: the replay makes its own; so are zone
//! mode changes made by rules and schedules. A zone mode change or a bypass a person made is
//! replayed as that person's request.

use std::collections::BTreeMap;

use gatehouse_protocol::incident::{Incident, IncidentChange, IncidentState};
use gatehouse_protocol::{Event, EventBody};
use jiff::Timestamp;

use crate::engine::{Engine, Output, Snapshot};

/// An output of the engine, when it came and what the replay made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub at: Timestamp,
    pub output: Output,
    /// For a raise: the incident it opened or added evidence to.
    pub incident: Option<u64>,
}

/// An engine on a replayed clock.
#[derive(Debug)]
pub struct Replay {
    engine: Engine,
    now: Timestamp,
    seq: u64,
    incidents: BTreeMap<u64, Incident>,
}

impl Replay {
    /// Starts `engine` at `at`, from the points' `latest` values and a `snapshot`, if any.
    pub fn start(
        mut engine: Engine,
        latest: &[Event],
        snapshot: Option<&Snapshot>,
        at: Timestamp,
    ) -> (Replay, Vec<Outcome>) {
        let outputs = engine.start(latest, snapshot, at);
        let mut replay = Replay {
            engine,
            now: at,
            seq: 0,
            incidents: BTreeMap::new(),
        };
        let outcomes = replay.apply(outputs);
        (replay, outcomes)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// For operator actions (`set_mode`, `bypass`); pass their outputs to [`Replay::apply`].
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The incidents the replay opened, by id, as they stand.
    pub fn incidents(&self) -> &BTreeMap<u64, Incident> {
        &self.incidents
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Runs every deadline due by `until`, each at its own time, and moves the clock there.
    pub fn advance(&mut self, until: Timestamp) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        while let Some(next) = self.engine.next_deadline().filter(|next| *next <= until) {
            self.now = self.now.max(next);
            let outputs = self.engine.advance(next);
            outcomes.extend(self.apply(outputs));
        }
        self.now = self.now.max(until);
        outcomes
    }

    /// Replays an event at `at` (the deadlines before it first). An incident event, and a
    /// mode change a rule or a schedule made, are skipped: the replay makes its own.
    pub fn event(&mut self, body: EventBody, at: Timestamp) -> Vec<Outcome> {
        match &body {
            EventBody::Incident { .. } => Vec::new(),
            EventBody::ZoneMode { by, .. }
                if by.starts_with("rule:") || by.starts_with("schedule:") =>
            {
                Vec::new()
            }
            EventBody::ZoneMode { zone, mode, by, .. } => {
                let mut outcomes = self.advance(at);
                // A zone this site no longer has: nothing to replay.
                if let Ok(outputs) = self.engine.set_mode(zone, *mode, by, self.now) {
                    outcomes.extend(self.apply(outputs));
                }
                outcomes
            }
            EventBody::Bypass {
                point, bypassed, ..
            } => {
                let outcomes = self.advance(at);
                // A point this site no longer has: nothing to replay.
                let _ = self.engine.bypass(point, *bypassed);
                outcomes
            }
            _ => {
                let mut outcomes = self.advance(at);
                let outputs = self.journal(body);
                outcomes.extend(self.apply(outputs));
                outcomes
            }
        }
    }

    /// Moves to a newly compiled site at `at`, keeping the state (see [`Engine::reload`]).
    pub fn reload(&mut self, next: Engine, at: Timestamp) -> Vec<Outcome> {
        let mut outcomes = self.advance(at);
        let (engine, outputs) = self.engine.reload(next, self.now);
        self.engine = engine;
        outcomes.extend(self.apply(outputs));
        outcomes
    }

    /// An operator acknowledges or resolves an incident of the replay at `at`.
    pub fn step_incident(&mut self, id: u64, state: IncidentState, at: Timestamp) -> Vec<Outcome> {
        let mut outcomes = self.advance(at);
        let Some(incident) = self.incidents.get_mut(&id) else {
            return outcomes;
        };
        incident.state = state;
        let change = match state {
            IncidentState::Open => IncidentChange::Opened,
            IncidentState::Acknowledged => IncidentChange::Acknowledged,
            IncidentState::Resolved => IncidentChange::Resolved,
        };
        let body = EventBody::Incident {
            change,
            incident: Box::new(incident.clone()),
        };
        let outputs = self.journal(body);
        outcomes.extend(self.apply(outputs));
        outcomes
    }

    /// Carries out outputs the engine gave outside [`Replay::event`] (an operator's action).
    pub fn apply(&mut self, outputs: Vec<Output>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for output in outputs {
            let raised = match &output {
                Output::Raise(raise) => Some(self.raise(raise)),
                Output::Escalate {
                    incident, severity, ..
                } => {
                    if let Some(incident) = self.incidents.get_mut(incident) {
                        incident.escalate(*severity);
                    }
                    None
                }
                _ => None,
            };
            outcomes.push(Outcome {
                at: self.now,
                output,
                incident: raised.map(|(id, _)| id),
            });
            // A new incident's event goes back to the engine, as the journal's would.
            if let Some((id, true)) = raised
                && let Some(opened) = self.incidents.get(&id)
            {
                let body = EventBody::Incident {
                    change: IncidentChange::Opened,
                    incident: Box::new(opened.clone()),
                };
                let more = self.journal(body);
                outcomes.extend(self.apply(more));
            }
        }
        outcomes
    }

    /// Opens an incident for a raise, or adds its evidence to the one it names. Says which,
    /// and whether it is new.
    fn raise(&mut self, raise: &crate::engine::Raise) -> (u64, bool) {
        if let Some(id) = raise.attach_to
            && let Some(incident) = self.incidents.get_mut(&id)
        {
            incident.evidence.extend(raise.evidence());
            return (id, false);
        }
        let id = self.incidents.len() as u64 + 1;
        self.incidents.insert(id, raise.incident(id, self.now));
        (id, true)
    }

    /// Numbers an event as the journal would and shows it to the engine.
    fn journal(&mut self, body: EventBody) -> Vec<Output> {
        self.seq += 1;
        self.engine.on_event(&Event {
            seq: self.seq,
            recorded_at: self.now,
            body,
        })
    }
}

//! The engine: a compiled site plus the state its rules keep between events.
//!
//! # Driving it
//!
//! The caller owns time and I/O. It
//! 1. compiles the site ([`Engine::compile`]) and starts it ([`Engine::start`]) with the
//!    last snapshot, if any, and the points' last known values;
//! 2. feeds it every journaled event in order ([`Engine::on_event`]; "now" is the event's
//!    `recorded_at`), **including the incident events it writes for a [`Raise`]**: that is
//!    how the engine learns an incident's id, so that the next trigger of the same rule and
//!    zone adds evidence to it instead of opening another, and how it starts and stops
//!    escalation;
//! 3. calls [`Engine::advance`] when [`Engine::next_deadline`] comes (entry and exit delays,
//!    held doors, silences, escalations, schedules);
//! 4. carries out the [`Output`]s: opens or updates incidents, sends commands (after
//!    [`Engine::check_command`] for its own commands too), records mode changes;
//! 5. saves [`Engine::snapshot`] with the batch that changed it, and on a config change
//!    compiles the new site and starts it from the old engine's snapshot
//!    ([`Engine::reload`]): zone modes, pending timers and open incidents survive.
//!
//! # Semantics
//!
//! - **Edges.** An observation pattern with a `value` predicate matches when the predicate
//!   *becomes* true for a point (a door that stays open is one trigger); without a predicate,
//!   every good observation matches. Status and command-result patterns match every event.
//!   Observations of bad or stale quality never match and leave the edge as it was.
//! - **Zones.** A rule's zone is its `zone`, else the zone of the point that triggered it.
//!   Arming a zone with an exit delay puts it in *arming* until the delay ends: `if.modes` and
//!   `armed("…")` see it as armed only then. A `raise` with `delay = "entry"` in an armed
//!   zone with an entry delay waits that long and is dropped if the zone is disarmed
//!   meanwhile; the rule's further triggers in that zone while it waits join it as evidence
//!   ([`Raise::joined`]) instead of starting delays of their own. Disarming clears the zone's
//!   bypasses and pending entry delays.
//! - **Bypass.** A bypassed point triggers no rule except life-safety ones, until its zone is
//!   next disarmed.
//! - **Correlation.** A `raise` while the same rule has an unresolved incident in the same
//!   zone adds evidence to it ([`Raise::attach_to`]).
//! - **Escalation.** An incident's `escalate` steps run at `opened_at + after` unless it was
//!   acknowledged or resolved before.
//! - **Loops.** A rule that fires more than `max_firings` times within [`LOOP_WINDOW`]
//!   (default [`DEFAULT_MAX_FIRINGS`]) is held back until the window has room again: an
//!   action whose result re-triggers its own rule cannot run away. The first held-back firing
//!   of a spell is reported ([`Output::LoopSuppressed`]).
//! - **Life-safety interlock.** While a `life_safety` rule's condition holds (its predicate is
//!   true for some point, e.g. the fire panel's alarm output), every egress lock is commanded
//!   to unlock, and [`Engine::check_command`] refuses any command that would lock one — from
//!   a rule, an operator or an integrator. It ends when the condition clears for every point
//!   (the fire panel is reset), which is the human reset step.

mod compile;
mod run;
mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use gatehouse_protocol::incident::{Evidence, Incident, IncidentState};
use gatehouse_protocol::{DeviceId, PointId, RuleId, Severity, Value, ZoneId};
use jiff::{SignedDuration, Timestamp};

pub use compile::{DEFAULT_MAX_FIRINGS, LOOP_WINDOW, Problem, Site};
pub use snapshot::Snapshot;

use crate::config::Mode;
use compile::Program;

/// Something the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Raise(Raise),
    /// An unacknowledged incident reached an escalation step.
    Escalate {
        incident: u64,
        rule: RuleId,
        /// 0 for the first step.
        step: usize,
        severity: Option<Severity>,
    },
    Command(Command),
    /// A rule's command the interlock refused (it would lock an egress door).
    CommandRefused {
        command: Command,
        reason: String,
    },
    /// A clip around the trigger, for the video pipeline.
    Clip {
        rule: RuleId,
        camera: DeviceId,
        /// The trigger: when the rule's condition was met.
        at: Timestamp,
        from: Timestamp,
        to: Timestamp,
    },
    /// A zone's mode changed, or its exit delay ended.
    Mode(ModeChange),
    /// A `raise` waits for the zone's entry delay.
    EntryDelay {
        rule: RuleId,
        zone: ZoneId,
        until: Timestamp,
    },
    /// The life-safety interlock started or ended.
    Interlock {
        active: bool,
    },
    /// A rule fired too often and is held back (see the module note).
    LoopSuppressed {
        rule: RuleId,
        max_firings: u32,
        window: SignedDuration,
    },
}

/// Open an incident, or add evidence to one.
#[derive(Debug, Clone, PartialEq)]
pub struct Raise {
    pub rule: RuleId,
    pub zone: Option<ZoneId>,
    pub severity: Severity,
    pub title: String,
    pub evidence: Hit,
    /// Later triggers of the same rule and zone that came while its entry delay ran: the
    /// same intrusion, so the incident takes them as evidence too (at most
    /// [`MAX_JOINED`], the first kept).
    pub joined: Vec<Hit>,
    /// The unresolved incident of the same rule and zone to add the evidence to.
    pub attach_to: Option<u64>,
}

/// How many later triggers a pending entry delay keeps as evidence.
pub const MAX_JOINED: usize = 32;

impl Raise {
    /// The triggers this raise stands for, the first first.
    pub fn hits(&self) -> impl Iterator<Item = &Hit> {
        std::iter::once(&self.evidence).chain(&self.joined)
    }

    /// The evidence this raise carries, one per trigger.
    pub fn evidence(&self) -> impl Iterator<Item = Evidence> {
        self.hits().map(|hit| Evidence {
            seq: hit.seq,
            point: hit.point.clone(),
            value: hit.value.clone(),
            at: hit.at,
        })
    }

    /// The incident this raise opens, numbered `id`, at `at`.
    pub fn incident(&self, id: u64, at: Timestamp) -> Incident {
        Incident {
            id,
            rule: self.rule.clone(),
            title: self.title.clone(),
            severity: self.severity,
            zone: self.zone.clone(),
            state: IncidentState::Open,
            opened_at: at,
            evidence: self.evidence().collect(),
            escalations: 0,
            acknowledged: None,
            resolved: None,
            clips: Vec::new(),
        }
    }
}

/// A command to a device point.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub rule: RuleId,
    pub device: DeviceId,
    pub point: PointId,
    pub value: Value,
}

/// A zone's mode, and whether it is in effect yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeChange {
    pub zone: ZoneId,
    pub mode: Mode,
    /// When an armed mode takes effect (the end of the exit delay); `at` when it is now.
    pub effective_at: Timestamp,
    pub at: Timestamp,
    /// Who or what: an operator's name, `rule:<id>`, `schedule:<id>`.
    pub by: String,
}

/// What set a rule off: the event (or the timer standing for one).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The journal sequence of the event; 0 for a silence (no event caused it).
    pub seq: u64,
    pub device: Option<DeviceId>,
    pub point: Option<PointId>,
    pub value: Option<Value>,
    pub at: Timestamp,
}

/// Why the engine refuses a command or a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "point `{0}` locks an egress door and the life-safety interlock is active: doors stay released until the fire panel is reset"
    )]
    Interlock(PointId),
    #[error("unknown zone `{0}`")]
    UnknownZone(String),
    #[error("unknown point `{0}`")]
    UnknownPoint(String),
}

/// A compiled site and its rules' state.
#[derive(Debug)]
pub struct Engine {
    program: Arc<Program>,
    state: State,
}

/// Everything that changes.
#[derive(Debug, Default)]
struct State {
    /// The last good value of each point.
    values: Vec<Option<Value>>,
    zones: Vec<ZoneState>,
    bypassed: Vec<bool>,
    schedules: Vec<bool>,
    rules: Vec<RuleState>,
    timers: BTreeMap<TimerKey, Timer>,
    next_timer: u64,
    /// Pending entry delays by (rule, zone).
    entries: HashMap<(u32, u32), TimerKey>,
    /// Unresolved incidents the engine's rules raised.
    incidents: HashMap<u64, TrackedIncident>,
    /// (rule, zone) → its unresolved incident.
    open: HashMap<(u32, Option<u32>), u64>,
    /// Life-safety (rule, local) pairs whose condition holds.
    interlock: Vec<(u32, u32)>,
}

/// When a timer is due, its [`TimerOrder`], and a sequence number.
type TimerKey = (Timestamp, TimerOrder, u64);

/// Timers due at the same instant run in this order, whatever order they were set in (a
/// reload or a restart sets them again in another): zone modes first (schedules, then exit
/// delays ending), then the rules' timers, then escalations; among timers of one kind, by slot
/// or incident.
type TimerOrder = (u8, u64, u64);

impl Timer {
    fn order(&self) -> TimerOrder {
        match self {
            Timer::Schedule { schedule } => (0, u64::from(*schedule), 0),
            Timer::Exit { zone } => (1, u64::from(*zone), 0),
            Timer::Entry { rule, zone, .. } => (2, u64::from(*rule), u64::from(*zone)),
            Timer::Held { rule, local, .. } => (3, u64::from(*rule), u64::from(*local)),
            Timer::Silent { rule, local } => (4, u64::from(*rule), u64::from(*local)),
            Timer::Escalate { incident } => (5, *incident, 0),
        }
    }
}

#[derive(Debug, Clone)]
struct ZoneState {
    mode: Mode,
    effective_at: Timestamp,
    exit_timer: Option<TimerKey>,
}

#[derive(Debug, Default)]
struct RuleState {
    /// Per local: whether the predicate held at the last good value; for a silence, that it
    /// was raised and waits for its subject to report again.
    active: Vec<bool>,
    /// Per local: the pending held or silent timer.
    due: Vec<Option<TimerKey>>,
    /// Sequence: per step, the start of the earliest chain that reached it.
    progress: Vec<Option<Timestamp>>,
    /// Count: the matches within the window.
    matches: VecDeque<Timestamp>,
    /// Loop limiter: recent firings, and whether the current spell was reported.
    firings: VecDeque<Timestamp>,
    held_back: bool,
}

#[derive(Debug, Clone)]
struct TrackedIncident {
    rule: u32,
    zone: Option<u32>,
    opened_at: Timestamp,
    acknowledged: bool,
    /// The next escalation step and its timer.
    next_step: usize,
    timer: Option<TimerKey>,
}

/// A pending deadline.
#[derive(Debug, Clone)]
enum Timer {
    Entry {
        rule: u32,
        zone: u32,
        hit: SlotHit,
        /// Triggers of the same rule and zone while the delay runs.
        joined: Vec<SlotHit>,
    },
    Exit {
        zone: u32,
    },
    Held {
        rule: u32,
        local: u32,
        hit: SlotHit,
    },
    Silent {
        rule: u32,
        local: u32,
    },
    Escalate {
        incident: u64,
    },
    Schedule {
        schedule: u32,
    },
}

/// A [`Hit`] with slots instead of ids.
#[derive(Debug, Clone)]
struct SlotHit {
    seq: u64,
    device: Option<u32>,
    point: Option<u32>,
    value: Option<Value>,
    at: Timestamp,
}

impl Engine {
    /// Compiles a site's zones, schedules and rules against its catalog.
    pub fn compile(site: &Site<'_>) -> Result<Engine, Vec<Problem>> {
        let program = Program::compile(site)?;
        let state = State::new(&program);
        Ok(Engine {
            program: Arc::new(program),
            state,
        })
    }

    /// Starts the engine at `now`: the last values of points (from the journal), then the
    /// saved state, if any; then schedules and silences are set going. Returns what the
    /// restart itself requires (entry delays that ran out while the appliance was down, a
    /// schedule boundary passed meanwhile, the interlock's unlock commands again).
    pub fn start(
        &mut self,
        latest: &[gatehouse_protocol::Event],
        snapshot: Option<&Snapshot>,
        now: Timestamp,
    ) -> Vec<Output> {
        for event in latest {
            self.prime(event);
        }
        let mut out = Vec::new();
        let restored_schedules = match snapshot {
            Some(snapshot) => self.restore(snapshot, now),
            None => Vec::new(),
        };
        if let Some(&(rule, _)) = self.state.interlock.first() {
            // Fail safe: after any restart during an alarm the doors are released again.
            out.push(Output::Interlock { active: true });
            let rule = self.program.rules[rule as usize].id.clone();
            self.unlock_egress(&rule, &mut out);
        }
        self.start_schedules(now, &restored_schedules, &mut out);
        self.start_silences(now);
        out.extend(self.advance(now));
        out
    }

    /// A site without points, zones or rules: an engine that never does anything.
    pub fn empty() -> Engine {
        let program = Program::default();
        let state = State::new(&program);
        Engine {
            program: Arc::new(program),
            state,
        }
    }

    /// The same compiled site with its state as at first start: to rebuild the state from a
    /// snapshot after a batch that was never committed.
    pub fn fresh(&self) -> Engine {
        Engine {
            program: self.program.clone(),
            state: State::new(&self.program),
        }
    }

    /// The points the site's rules know, in catalog order.
    pub fn points(&self) -> impl Iterator<Item = &PointId> {
        self.program.points.iter().map(|point| &point.id)
    }

    /// Moves this engine's state onto `next` (the site compiled again from a changed config)
    /// at `now`. What no longer exists (a removed rule's timers, a removed zone's mode) is
    /// dropped.
    pub fn reload(&self, mut next: Engine, now: Timestamp) -> (Engine, Vec<Output>) {
        let latest = self.current_values();
        let snapshot = self.snapshot(now);
        let out = next.start(&latest, Some(&snapshot), now);
        (next, out)
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.state.timers.keys().next().map(|(at, _, _)| *at)
    }

    /// Whether a command may be sent: refused when it would lock an egress door while the
    /// interlock is active.
    pub fn check_command(&self, point: &PointId, value: &Value) -> Result<(), Refusal> {
        let slot = self
            .program
            .point_slots
            .get(point)
            .ok_or_else(|| Refusal::UnknownPoint(point.to_string()))?;
        if self.locks_egress(*slot, value) {
            return Err(Refusal::Interlock(point.clone()));
        }
        Ok(())
    }

    /// Whether the life-safety interlock is active.
    pub fn interlock_active(&self) -> bool {
        !self.state.interlock.is_empty()
    }

    /// A zone's mode and when it takes (or took) effect.
    pub fn zone_mode(&self, zone: &ZoneId) -> Option<(Mode, Timestamp)> {
        let slot = *self.program.zone_slots.get(zone)?;
        let state = &self.state.zones[slot as usize];
        Some((state.mode, state.effective_at))
    }

    /// Sets a zone's mode on an operator's request (`by` names them).
    pub fn set_mode(
        &mut self,
        zone: &ZoneId,
        mode: Mode,
        by: &str,
        now: Timestamp,
    ) -> Result<Vec<Output>, Refusal> {
        let slot = *self
            .program
            .zone_slots
            .get(zone)
            .ok_or_else(|| Refusal::UnknownZone(zone.to_string()))?;
        let mut out = Vec::new();
        self.change_mode(slot, mode, by, now, &mut out);
        Ok(out)
    }

    /// Bypasses a point (or ends its bypass).
    pub fn bypass(&mut self, point: &PointId, on: bool) -> Result<(), Refusal> {
        let slot = *self
            .program
            .point_slots
            .get(point)
            .ok_or_else(|| Refusal::UnknownPoint(point.to_string()))?;
        self.state.bypassed[slot as usize] = on;
        Ok(())
    }

    /// The points currently bypassed.
    pub fn bypassed(&self) -> Vec<PointId> {
        self.state
            .bypassed
            .iter()
            .enumerate()
            .filter(|(_, bypassed)| **bypassed)
            .map(|(slot, _)| self.program.points[slot].id.clone())
            .collect()
    }

    /// How many rules the site has.
    pub fn rule_count(&self) -> usize {
        self.program.rules.len()
    }

    fn locks_egress(&self, point: u32, value: &Value) -> bool {
        self.interlock_active()
            && self.program.points[point as usize]
                .egress_locked
                .as_ref()
                .is_some_and(|locked| locked == value)
    }
}

impl State {
    fn new(program: &Program) -> State {
        State {
            values: vec![None; program.points.len()],
            zones: program
                .zones
                .iter()
                .map(|zone| ZoneState {
                    mode: zone.initial,
                    effective_at: Timestamp::UNIX_EPOCH,
                    exit_timer: None,
                })
                .collect(),
            bypassed: vec![false; program.points.len()],
            schedules: vec![false; program.schedules.len()],
            rules: program
                .rules
                .iter()
                .map(|rule| RuleState {
                    active: vec![false; rule.locals.len()],
                    due: vec![None; rule.locals.len()],
                    progress: match &rule.trigger {
                        compile::CompiledTrigger::Sequence { steps, .. } => vec![None; steps.len()],
                        _ => Vec::new(),
                    },
                    ..RuleState::default()
                })
                .collect(),
            ..State::default()
        }
    }

    fn add_timer(&mut self, at: Timestamp, timer: Timer) -> TimerKey {
        self.next_timer += 1;
        let key = (at, timer.order(), self.next_timer);
        self.timers.insert(key, timer);
        key
    }

    fn cancel(&mut self, key: Option<TimerKey>) {
        if let Some(key) = key {
            self.timers.remove(&key);
        }
    }
}

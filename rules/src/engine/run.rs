//! Evaluation: events and deadlines in, outputs out.

use gatehouse_protocol::incident::IncidentState;
use gatehouse_protocol::{CommandOutcome, DeviceStatus, Event, EventBody, Value};
use jiff::Timestamp;

use super::compile::{CompiledAction, CompiledTrigger, Hook, Rule, Step, TitlePart};
use super::{
    Command, Engine, Hit, MAX_JOINED, ModeChange, Output, Raise, SlotHit, Timer, TrackedIncident,
    ZoneState,
};
use crate::config::{Delay, EventKind, Mode};
use crate::engine::compile::LOOP_WINDOW;
use crate::expr::{Context, Slot};

/// What a predicate sees.
struct View<'a> {
    engine: &'a Engine,
    value: Option<&'a Value>,
    now: Timestamp,
}

impl Context for View<'_> {
    fn value(&self) -> Option<&Value> {
        self.value
    }

    fn point(&self, point: Slot) -> Option<&Value> {
        self.engine.state.values.get(point.0 as usize)?.as_ref()
    }

    fn armed(&self, zone: Slot) -> bool {
        self.engine.effective_mode(zone.0, self.now).is_armed()
    }

    fn mode(&self, zone: Slot) -> &str {
        self.engine.effective_mode(zone.0, self.now).as_str()
    }

    fn scheduled(&self, schedule: Slot) -> bool {
        self.engine
            .state
            .schedules
            .get(schedule.0 as usize)
            .copied()
            .unwrap_or(false)
    }
}

/// The event a hook looks at, reduced to what rules use.
struct Seen<'a> {
    seq: u64,
    device: u32,
    point: Option<u32>,
    value: Option<&'a Value>,
    at: Timestamp,
}

impl Seen<'_> {
    fn hit(&self) -> SlotHit {
        SlotHit {
            seq: self.seq,
            device: Some(self.device),
            point: self.point,
            value: self.value.cloned(),
            at: self.at,
        }
    }
}

impl Engine {
    /// Evaluates one journaled event at its `recorded_at`.
    pub fn on_event(&mut self, event: &Event) -> Vec<Output> {
        let now = event.recorded_at;
        let mut out = self.advance(now);
        match &event.body {
            EventBody::Observation {
                point,
                value,
                quality,
                ..
            } => {
                let Some(&slot) = self.program.point_slots.get(point) else {
                    return out;
                };
                let good = quality.is_good();
                self.state.values[slot as usize] = if good { value.clone() } else { None };
                if !matches!(quality, gatehouse_protocol::Quality::Stale { .. }) {
                    self.restart_silences(slot, now);
                }
                if good && let Some(value) = value {
                    let seen = Seen {
                        seq: event.seq,
                        device: self.program.point_device[slot as usize],
                        point: Some(slot),
                        value: Some(value),
                        at: now,
                    };
                    let program = self.program.clone();
                    for hook in &program.on_observation[slot as usize] {
                        self.look(*hook, &seen, true, &mut out);
                    }
                }
            }
            EventBody::DeviceStatus { device, status, .. } => {
                let Some(&slot) = self.program.device_slots.get(device) else {
                    return out;
                };
                self.restart_device_silences(slot, now);
                let value = Value::Text(
                    match status {
                        DeviceStatus::Online => "online",
                        DeviceStatus::Degraded => "degraded",
                        DeviceStatus::Offline => "offline",
                    }
                    .to_owned(),
                );
                let seen = Seen {
                    seq: event.seq,
                    device: slot,
                    point: None,
                    value: Some(&value),
                    at: now,
                };
                let program = self.program.clone();
                for hook in &program.on_status[slot as usize] {
                    self.look(*hook, &seen, false, &mut out);
                }
            }
            EventBody::Command { point, outcome, .. } => {
                let Some(&slot) = self.program.point_slots.get(point) else {
                    return out;
                };
                let value = Value::Text(
                    match outcome {
                        CommandOutcome::Sent => "sent",
                        CommandOutcome::Done => "done",
                        CommandOutcome::Failed { .. } => "failed",
                        CommandOutcome::Unconfirmed { .. } => "unconfirmed",
                    }
                    .to_owned(),
                );
                let seen = Seen {
                    seq: event.seq,
                    device: self.program.point_device[slot as usize],
                    point: Some(slot),
                    value: Some(&value),
                    at: now,
                };
                let program = self.program.clone();
                for hook in &program.on_command[slot as usize] {
                    self.look(*hook, &seen, false, &mut out);
                }
            }
            EventBody::Incident { incident, .. } => {
                self.track_incident(incident);
            }
            // The engine made the change itself.
            EventBody::ZoneMode { .. } | EventBody::Bypass { .. } => {}
        }
        out
    }

    /// Runs every deadline up to `now`, in order.
    pub fn advance(&mut self, now: Timestamp) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(entry) = self.state.timers.first_entry() {
            let at = entry.key().0;
            if at > now {
                break;
            }
            let timer = entry.remove();
            self.run_timer(timer, at, &mut out);
        }
        out
    }

    /// Takes a point's last known value without firing anything (a restart).
    pub(super) fn prime(&mut self, event: &Event) {
        let EventBody::Observation {
            point,
            value: Some(value),
            quality,
            ..
        } = &event.body
        else {
            return;
        };
        let Some(&slot) = self.program.point_slots.get(point) else {
            return;
        };
        if !quality.is_good() {
            return;
        }
        self.state.values[slot as usize] = Some(value.clone());
        let program = self.program.clone();
        for hook in &program.on_observation[slot as usize] {
            let rule = &program.rules[hook.rule as usize];
            if let Some(step) = edge_step(rule) {
                let holds = self.step_matches(step, Some(value), event.recorded_at);
                self.state.rules[hook.rule as usize].active[hook.local as usize] = holds;
                if holds && rule.life_safety {
                    self.state.interlock.push((hook.rule, hook.local));
                }
            }
        }
    }

    /// The last good value of every point, as events (for a reload).
    pub(super) fn current_values(&self) -> Vec<Event> {
        self.state
            .values
            .iter()
            .enumerate()
            .filter_map(|(slot, value)| {
                let spec = &self.program.points[slot];
                Some(Event {
                    seq: 0,
                    recorded_at: Timestamp::UNIX_EPOCH,
                    body: EventBody::Observation {
                        device: spec.device.clone(),
                        point: spec.id.clone(),
                        zone: spec.zone.clone(),
                        value: Some(value.clone()?),
                        quality: gatehouse_protocol::Quality::Good,
                        observed_at: Timestamp::UNIX_EPOCH,
                    },
                })
            })
            .collect()
    }

    /// A hook's rule looks at an event.
    fn look(&mut self, hook: Hook, seen: &Seen<'_>, edges: bool, out: &mut Vec<Output>) {
        let program = self.program.clone();
        let rule = &program.rules[hook.rule as usize];
        let now = seen.at;
        match &rule.trigger {
            CompiledTrigger::Event(step) => match self.edge(hook, step, seen, edges) {
                Some(true) => self.fire(hook.rule, seen.hit(), now, out),
                Some(false) if rule.life_safety => self.release_interlock(hook, out),
                _ => {}
            },
            CompiledTrigger::Held { step, duration } => match self.edge(hook, step, seen, edges) {
                Some(true) => {
                    let at = now.saturating_add(*duration).unwrap_or(Timestamp::MAX);
                    let key = self.state.add_timer(
                        at,
                        Timer::Held {
                            rule: hook.rule,
                            local: hook.local,
                            hit: seen.hit(),
                        },
                    );
                    self.state.rules[hook.rule as usize].due[hook.local as usize] = Some(key);
                }
                Some(false) => {
                    let due = self.state.rules[hook.rule as usize].due[hook.local as usize].take();
                    self.state.cancel(due);
                    if rule.life_safety {
                        self.release_interlock(hook, out);
                    }
                }
                None => {}
            },
            CompiledTrigger::Count {
                step,
                times,
                within,
            } => {
                if !self.step_matches(step, seen.value, now) {
                    return;
                }
                let matches = &mut self.state.rules[hook.rule as usize].matches;
                matches.push_back(now);
                while matches
                    .front()
                    .is_some_and(|first| now.duration_since(*first) > *within)
                {
                    matches.pop_front();
                }
                if matches.len() >= *times as usize {
                    matches.clear();
                    self.fire(hook.rule, seen.hit(), now, out);
                }
            }
            CompiledTrigger::Sequence { steps, within } => {
                let index = hook.step as usize;
                if !self.step_matches(&steps[index], seen.value, now) {
                    return;
                }
                let progress = &mut self.state.rules[hook.rule as usize].progress;
                let start = if index == 0 {
                    Some(now)
                } else {
                    progress[index - 1].filter(|start| now.duration_since(*start) <= *within)
                };
                let Some(start) = start else {
                    return;
                };
                if index + 1 == steps.len() {
                    progress.iter_mut().for_each(|step| *step = None);
                    self.fire(hook.rule, seen.hit(), now, out);
                } else {
                    // The latest start that reached a step has the most time left.
                    progress[index] = Some(progress[index].map_or(start, |old| old.max(start)));
                }
            }
            CompiledTrigger::Silent { .. } => {}
        }
    }

    /// For an edge-triggered step: `Some(true)` when the predicate becomes true,
    /// `Some(false)` when it stops holding, `None` when nothing changed.
    fn edge(&mut self, hook: Hook, step: &Step, seen: &Seen<'_>, edges: bool) -> Option<bool> {
        let holds = self.step_matches(step, seen.value, seen.at);
        if !edges || step.value.is_none() {
            return holds.then_some(true);
        }
        let active = &mut self.state.rules[hook.rule as usize].active[hook.local as usize];
        let was = std::mem::replace(active, holds);
        (holds != was).then_some(holds)
    }

    fn step_matches(&self, step: &Step, value: Option<&Value>, now: Timestamp) -> bool {
        match &step.value {
            None => true,
            Some(predicate) => predicate.eval(&View {
                engine: self,
                value,
                now,
            }),
        }
    }

    /// A rule's trigger completed: checks bypass, modes, condition and the loop limiter,
    /// then runs the actions.
    fn fire(&mut self, rule_slot: u32, hit: SlotHit, now: Timestamp, out: &mut Vec<Output>) {
        let program = self.program.clone();
        let rule = &program.rules[rule_slot as usize];
        if !rule.life_safety
            && hit
                .point
                .is_some_and(|point| self.state.bypassed[point as usize])
        {
            return;
        }
        let zone = rule.zone.or_else(|| {
            hit.point
                .and_then(|point| program.point_zone[point as usize])
        });
        if let Some(modes) = &rule.modes {
            let Some(zone) = zone else { return };
            if !modes.contains(&self.effective_mode(zone, now)) {
                return;
            }
        }
        if let Some(condition) = &rule.condition {
            let view = View {
                engine: self,
                value: None,
                now,
            };
            if !condition.eval(&view) {
                return;
            }
        }
        if !self.within_loop_limit(rule_slot, rule, now, out) {
            return;
        }
        if rule.life_safety {
            self.engage_interlock(rule_slot, &hit, out);
        }
        for action in &rule.actions {
            self.act(rule_slot, action, zone, &hit, now, out);
        }
    }

    fn within_loop_limit(
        &mut self,
        rule_slot: u32,
        rule: &Rule,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) -> bool {
        let state = &mut self.state.rules[rule_slot as usize];
        while state
            .firings
            .front()
            .is_some_and(|first| now.duration_since(*first) >= LOOP_WINDOW)
        {
            state.firings.pop_front();
        }
        if state.firings.len() >= rule.max_firings as usize {
            if !state.held_back {
                state.held_back = true;
                out.push(Output::LoopSuppressed {
                    rule: rule.id.clone(),
                    max_firings: rule.max_firings,
                    window: LOOP_WINDOW,
                });
            }
            return false;
        }
        state.held_back = false;
        state.firings.push_back(now);
        true
    }

    fn act(
        &mut self,
        rule_slot: u32,
        action: &CompiledAction,
        zone: Option<u32>,
        hit: &SlotHit,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let program = self.program.clone();
        let rule = &program.rules[rule_slot as usize];
        match action {
            CompiledAction::Raise {
                severity,
                title,
                delay,
            } => {
                let entry = zone.and_then(|zone| {
                    let delay_for = program.zones[zone as usize].entry_delay?;
                    (*delay == Delay::Entry && self.effective_mode(zone, now).is_armed())
                        .then_some((zone, delay_for))
                });
                match entry {
                    Some((zone, delay_for)) => {
                        if let Some(key) = self.state.entries.get(&(rule_slot, zone)) {
                            // The same intrusion: its evidence (and clips) go with the
                            // raise the running delay ends in.
                            if let Some(Timer::Entry { joined, .. }) =
                                self.state.timers.get_mut(key)
                                && joined.len() < MAX_JOINED
                            {
                                joined.push(hit.clone());
                            }
                            return;
                        }
                        let until = now.saturating_add(delay_for).unwrap_or(Timestamp::MAX);
                        let key = self.state.add_timer(
                            until,
                            Timer::Entry {
                                rule: rule_slot,
                                zone,
                                hit: hit.clone(),
                                joined: Vec::new(),
                            },
                        );
                        self.state.entries.insert((rule_slot, zone), key);
                        out.push(Output::EntryDelay {
                            rule: rule.id.clone(),
                            zone: program.zones[zone as usize].id.clone(),
                            until,
                        });
                    }
                    None => out.push(self.raise(rule_slot, *severity, title, zone, hit, &[])),
                }
            }
            CompiledAction::Command { point, value } => {
                let command = Command {
                    rule: rule.id.clone(),
                    device: program.points[*point as usize].device.clone(),
                    point: program.points[*point as usize].id.clone(),
                    value: value.clone(),
                };
                if self.locks_egress(*point, value) {
                    out.push(Output::CommandRefused {
                        reason: super::Refusal::Interlock(command.point.clone()).to_string(),
                        command,
                    });
                } else {
                    out.push(Output::Command(command));
                }
            }
            CompiledAction::Clip {
                camera,
                before,
                after,
            } => out.push(Output::Clip {
                rule: rule.id.clone(),
                camera: camera.clone(),
                at: hit.at,
                from: hit.at.saturating_sub(*before).unwrap_or(Timestamp::MIN),
                to: hit.at.saturating_add(*after).unwrap_or(Timestamp::MAX),
            }),
            CompiledAction::SetMode { zone, mode } => {
                let by = format!("rule:{}", rule.id);
                self.change_mode(*zone, *mode, &by, now, out);
            }
        }
    }

    fn raise(
        &self,
        rule_slot: u32,
        severity: gatehouse_protocol::Severity,
        title: &[TitlePart],
        zone: Option<u32>,
        hit: &SlotHit,
        joined: &[SlotHit],
    ) -> Output {
        let program = &self.program;
        let rule = &program.rules[rule_slot as usize];
        let hit = self.hit(hit);
        let zone_id = zone.map(|zone| program.zones[zone as usize].id.clone());
        let mut text = String::new();
        for part in title {
            match part {
                TitlePart::Text(piece) => text.push_str(piece),
                TitlePart::Rule => text.push_str(rule.id.as_str()),
                TitlePart::Zone => text.push_str(zone_id.as_ref().map_or("-", |z| z.as_str())),
                TitlePart::Device => text.push_str(hit.device.as_ref().map_or("-", |d| d.as_str())),
                TitlePart::Point => text.push_str(hit.point.as_ref().map_or("-", |p| p.as_str())),
                TitlePart::Value => match &hit.value {
                    Some(value) => text.push_str(&value.to_string()),
                    None => text.push('-'),
                },
            }
        }
        Output::Raise(Raise {
            rule: rule.id.clone(),
            zone: zone_id,
            severity,
            title: text,
            attach_to: self.state.open.get(&(rule_slot, zone)).copied(),
            evidence: hit,
            joined: joined.iter().map(|hit| self.hit(hit)).collect(),
        })
    }

    pub(super) fn hit(&self, hit: &SlotHit) -> Hit {
        Hit {
            seq: hit.seq,
            device: hit
                .device
                .map(|device| self.program.devices[device as usize].clone()),
            point: hit
                .point
                .map(|point| self.program.points[point as usize].id.clone()),
            value: hit.value.clone(),
            at: hit.at,
        }
    }

    fn run_timer(&mut self, timer: Timer, at: Timestamp, out: &mut Vec<Output>) {
        let program = self.program.clone();
        match timer {
            Timer::Entry {
                rule,
                zone,
                hit,
                joined,
            } => {
                self.state.entries.remove(&(rule, zone));
                if !self.state.zones[zone as usize].mode.is_armed() {
                    return;
                }
                for action in &program.rules[rule as usize].actions {
                    if let CompiledAction::Raise {
                        severity, title, ..
                    } = action
                    {
                        out.push(self.raise(rule, *severity, title, Some(zone), &hit, &joined));
                    }
                }
            }
            Timer::Exit { zone } => {
                let state = &mut self.state.zones[zone as usize];
                state.exit_timer = None;
                out.push(Output::Mode(ModeChange {
                    zone: program.zones[zone as usize].id.clone(),
                    mode: state.mode,
                    effective_at: state.effective_at,
                    at,
                    by: "exit delay".to_owned(),
                }));
            }
            Timer::Held { rule, local, hit } => {
                self.state.rules[rule as usize].due[local as usize] = None;
                self.fire(rule, hit, at, out);
            }
            Timer::Silent { rule, local } => {
                // Raised: quiet until the subject reports again (`active` marks that).
                self.state.rules[rule as usize].due[local as usize] = None;
                self.state.rules[rule as usize].active[local as usize] = true;
                let compiled = &program.rules[rule as usize];
                let subject = compiled.locals[local as usize];
                let per_device = compiled.trigger.per_device();
                let hit = SlotHit {
                    seq: 0,
                    device: Some(if per_device {
                        subject
                    } else {
                        program.point_device[subject as usize]
                    }),
                    point: (!per_device).then_some(subject),
                    value: None,
                    at,
                };
                self.fire(rule, hit, at, out);
            }
            Timer::Escalate { incident } => self.escalate(incident, at, out),
            Timer::Schedule { schedule } => self.schedule_changed(schedule, at, out),
        }
    }

    /// Sets a zone's mode: arming goes through the exit delay; disarming drops pending
    /// entry delays and the zone's bypasses.
    pub(super) fn change_mode(
        &mut self,
        zone: u32,
        mode: Mode,
        by: &str,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let program = self.program.clone();
        let config = &program.zones[zone as usize];
        let exit = self.state.zones[zone as usize].exit_timer.take();
        self.state.cancel(exit);
        let effective_at = match config.exit_delay {
            Some(delay) if mode.is_armed() => now.saturating_add(delay).unwrap_or(Timestamp::MAX),
            _ => now,
        };
        let exit_timer =
            (effective_at > now).then(|| self.state.add_timer(effective_at, Timer::Exit { zone }));
        self.state.zones[zone as usize] = ZoneState {
            mode,
            effective_at,
            exit_timer,
        };
        if !mode.is_armed() {
            let pending: Vec<(u32, u32)> = self
                .state
                .entries
                .keys()
                .filter(|(_, entry_zone)| *entry_zone == zone)
                .copied()
                .collect();
            for key in pending {
                let timer = self.state.entries.remove(&key);
                self.state.cancel(timer);
            }
            for (slot, point_zone) in program.point_zone.iter().enumerate() {
                if *point_zone == Some(zone) {
                    self.state.bypassed[slot] = false;
                }
            }
        }
        out.push(Output::Mode(ModeChange {
            zone: config.id.clone(),
            mode,
            effective_at,
            at: now,
            by: by.to_owned(),
        }));
    }

    /// A zone's mode as rules see it: armed modes count only once their exit delay is over.
    pub(super) fn effective_mode(&self, zone: u32, now: Timestamp) -> Mode {
        let state = &self.state.zones[zone as usize];
        if state.mode.is_armed() && state.effective_at > now {
            Mode::Disarmed
        } else {
            state.mode
        }
    }

    fn engage_interlock(&mut self, rule_slot: u32, hit: &SlotHit, out: &mut Vec<Output>) {
        let program = self.program.clone();
        let rule = &program.rules[rule_slot as usize];
        let local = hit
            .point
            .and_then(|point| rule.locals.iter().position(|&subject| subject == point))
            .unwrap_or(0) as u32;
        let was_active = self.interlock_active();
        if !self.state.interlock.contains(&(rule_slot, local)) {
            self.state.interlock.push((rule_slot, local));
        }
        if !was_active {
            out.push(Output::Interlock { active: true });
            self.unlock_egress(&rule.id, out);
        }
    }

    /// Commands every egress lock open.
    pub(super) fn unlock_egress(&self, rule: &gatehouse_protocol::RuleId, out: &mut Vec<Output>) {
        for &point in &self.program.egress_locks {
            let spec = &self.program.points[point as usize];
            let unlocked = match &spec.egress_locked {
                Some(Value::Bool(locked)) => Value::Bool(!locked),
                Some(Value::Int(locked)) => Value::Int(i64::from(*locked == 0)),
                _ => continue,
            };
            out.push(Output::Command(Command {
                rule: rule.clone(),
                device: spec.device.clone(),
                point: spec.id.clone(),
                value: unlocked,
            }));
        }
    }

    /// A life-safety condition cleared for one point; the interlock ends with the last.
    fn release_interlock(&mut self, hook: Hook, out: &mut Vec<Output>) {
        let before = self.state.interlock.len();
        self.state
            .interlock
            .retain(|&(rule, local)| (rule, local) != (hook.rule, hook.local));
        if before > 0 && self.state.interlock.is_empty() {
            out.push(Output::Interlock { active: false });
        }
    }

    /// Learns about an incident from its journal event: correlation and escalation.
    fn track_incident(&mut self, incident: &gatehouse_protocol::incident::Incident) {
        let Some(&rule) = self.program.rule_slots.get(&incident.rule) else {
            return;
        };
        let zone = incident
            .zone
            .as_ref()
            .and_then(|zone| self.program.zone_slots.get(zone).copied());
        match incident.state {
            IncidentState::Resolved => {
                if let Some(tracked) = self.state.incidents.remove(&incident.id) {
                    self.state.cancel(tracked.timer);
                }
                if self.state.open.get(&(rule, zone)) == Some(&incident.id) {
                    self.state.open.remove(&(rule, zone));
                }
            }
            IncidentState::Acknowledged => {
                if let Some(tracked) = self.state.incidents.get_mut(&incident.id) {
                    tracked.acknowledged = true;
                    let timer = tracked.timer.take();
                    self.state.cancel(timer);
                }
            }
            IncidentState::Open => {
                if self.state.incidents.contains_key(&incident.id) {
                    return;
                }
                self.state.open.insert((rule, zone), incident.id);
                let tracked = TrackedIncident {
                    rule,
                    zone,
                    opened_at: incident.opened_at,
                    acknowledged: false,
                    next_step: 0,
                    timer: None,
                };
                self.state.incidents.insert(incident.id, tracked);
                self.schedule_escalation(incident.id);
            }
        }
    }

    /// Sets the timer of an unacknowledged incident's next escalation step.
    pub(super) fn schedule_escalation(&mut self, incident: u64) {
        let program = self.program.clone();
        let Some(tracked) = self.state.incidents.get(&incident) else {
            return;
        };
        if tracked.acknowledged {
            return;
        }
        let Some(step) = program.rules[tracked.rule as usize]
            .escalate
            .get(tracked.next_step)
        else {
            return;
        };
        let at = tracked
            .opened_at
            .saturating_add(step.after)
            .unwrap_or(Timestamp::MAX);
        let key = self.state.add_timer(at, Timer::Escalate { incident });
        if let Some(tracked) = self.state.incidents.get_mut(&incident) {
            tracked.timer = Some(key);
        }
    }

    fn escalate(&mut self, incident: u64, at: Timestamp, out: &mut Vec<Output>) {
        let program = self.program.clone();
        let Some(tracked) = self.state.incidents.get_mut(&incident) else {
            return;
        };
        tracked.timer = None;
        let step_index = tracked.next_step;
        tracked.next_step += 1;
        let (rule_slot, zone) = (tracked.rule, tracked.zone);
        let rule = &program.rules[rule_slot as usize];
        let Some(step) = rule.escalate.get(step_index) else {
            return;
        };
        out.push(Output::Escalate {
            incident,
            rule: rule.id.clone(),
            step: step_index,
            severity: step.severity,
        });
        let hit = SlotHit {
            seq: 0,
            device: None,
            point: None,
            value: None,
            at,
        };
        for action in &step.actions {
            self.act(rule_slot, action, zone, &hit, at, out);
        }
        self.schedule_escalation(incident);
    }

    /// Sets the schedules' flags at `now` and their next boundaries; a zone following a
    /// schedule whose flag differs from `before` (a boundary passed while the engine was
    /// down) takes the mode the schedule now asks for.
    pub(super) fn start_schedules(
        &mut self,
        now: Timestamp,
        before: &[(u32, bool)],
        out: &mut Vec<Output>,
    ) {
        let program = self.program.clone();
        for (slot, schedule) in program.schedules.iter().enumerate() {
            let active = schedule.is_active(now);
            self.state.schedules[slot] = active;
            if before
                .iter()
                .any(|&(restored, was)| restored == slot as u32 && was != active)
            {
                self.apply_schedule(slot as u32, active, now, out);
            }
            if let Some(next) = schedule.next_change(now) {
                self.state.add_timer(
                    next,
                    Timer::Schedule {
                        schedule: slot as u32,
                    },
                );
            }
        }
    }

    fn schedule_changed(&mut self, schedule: u32, at: Timestamp, out: &mut Vec<Output>) {
        let program = self.program.clone();
        let compiled = &program.schedules[schedule as usize];
        let active = compiled.is_active(at);
        self.state.schedules[schedule as usize] = active;
        self.apply_schedule(schedule, active, at, out);
        if let Some(next) = compiled.next_change(at) {
            self.state.add_timer(next, Timer::Schedule { schedule });
        }
    }

    fn apply_schedule(
        &mut self,
        schedule: u32,
        active: bool,
        at: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let program = self.program.clone();
        for (zone, config) in program.zones.iter().enumerate() {
            if let Some((followed, when_active, when_inactive)) = config.schedule
                && followed == schedule
            {
                let mode = if active { when_active } else { when_inactive };
                if self.state.zones[zone].mode != mode {
                    let by = format!("schedule:{}", program.schedules[schedule as usize].id());
                    self.change_mode(zone as u32, mode, &by, at, out);
                }
            }
        }
    }

    /// Starts every silence not restored from a snapshot: a point that never reports
    /// raises its silence too.
    pub(super) fn start_silences(&mut self, now: Timestamp) {
        let program = self.program.clone();
        for (rule_slot, rule) in program.rules.iter().enumerate() {
            let CompiledTrigger::Silent { duration, .. } = rule.trigger else {
                continue;
            };
            for local in 0..rule.locals.len() {
                let state = &self.state.rules[rule_slot];
                if state.due[local].is_none() && !state.active[local] {
                    let at = now.saturating_add(duration).unwrap_or(Timestamp::MAX);
                    let key = self.state.add_timer(
                        at,
                        Timer::Silent {
                            rule: rule_slot as u32,
                            local: local as u32,
                        },
                    );
                    self.state.rules[rule_slot].due[local] = Some(key);
                }
            }
        }
    }

    fn restart_silences(&mut self, point: u32, now: Timestamp) {
        let program = self.program.clone();
        self.restart_hooks(&program.silent_points[point as usize], now);
        self.restart_hooks(
            &program.silent_devices[program.point_device[point as usize] as usize],
            now,
        );
    }

    fn restart_device_silences(&mut self, device: u32, now: Timestamp) {
        let program = self.program.clone();
        self.restart_hooks(&program.silent_devices[device as usize], now);
    }

    fn restart_hooks(&mut self, hooks: &[Hook], now: Timestamp) {
        for hook in hooks {
            let CompiledTrigger::Silent { duration, .. } =
                self.program.rules[hook.rule as usize].trigger
            else {
                continue;
            };
            let old = self.state.rules[hook.rule as usize].due[hook.local as usize].take();
            self.state.cancel(old);
            self.state.rules[hook.rule as usize].active[hook.local as usize] = false;
            let at = now.saturating_add(duration).unwrap_or(Timestamp::MAX);
            let key = self.state.add_timer(
                at,
                Timer::Silent {
                    rule: hook.rule,
                    local: hook.local,
                },
            );
            self.state.rules[hook.rule as usize].due[hook.local as usize] = Some(key);
        }
    }
}

/// The step whose edge a rule tracks per point, if it tracks one.
fn edge_step(rule: &Rule) -> Option<&Step> {
    match &rule.trigger {
        CompiledTrigger::Event(step) | CompiledTrigger::Held { step, .. }
            if step.kind == EventKind::Observation && step.value.is_some() =>
        {
            Some(step)
        }
        _ => None,
    }
}

//! The engine's state by name, to save with the journal and to carry across a reload.
//!
//! Slots change when a config changes; names do not. A snapshot names every zone, rule and
//! point, and restoring it onto a (possibly different) site keeps what still exists and drops
//! the rest: a removed rule's timers, a removed zone's mode. Per-point edges are not saved:
//! they follow from the points' last values, which the journal holds.

use gatehouse_protocol::{DeviceId, PointId, RuleId, Value, ZoneId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::compile::CompiledTrigger;
use super::{Engine, Hit, SlotHit, Timer, TrackedIncident, ZoneState};
use crate::config::Mode;

/// Saved rule state. Serialised as JSON by the caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at: Timestamp,
    pub zones: Vec<SavedZone>,
    pub bypassed: Vec<PointId>,
    /// Each schedule's flag when the snapshot was taken.
    pub schedules: Vec<(String, bool)>,
    pub entries: Vec<SavedEntry>,
    pub held: Vec<SavedHeld>,
    pub silent: Vec<SavedSilence>,
    pub sequences: Vec<SavedSequence>,
    pub counts: Vec<SavedCount>,
    pub incidents: Vec<SavedIncident>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedZone {
    pub id: ZoneId,
    pub mode: Mode,
    pub effective_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedEntry {
    pub rule: RuleId,
    pub zone: ZoneId,
    pub due: Timestamp,
    pub hit: SavedHit,
    /// Later triggers while the delay runs (absent in snapshots from before they were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<SavedHit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHeld {
    pub rule: RuleId,
    pub point: PointId,
    pub due: Timestamp,
    pub hit: SavedHit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSilence {
    pub rule: RuleId,
    /// The point, or the device of a per-device silence.
    pub subject: String,
    /// When it is raised; `None`: raised already, quiet until the subject reports again.
    pub due: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSequence {
    pub rule: RuleId,
    pub progress: Vec<Option<Timestamp>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCount {
    pub rule: RuleId,
    pub matches: Vec<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedIncident {
    pub id: u64,
    pub rule: RuleId,
    pub zone: Option<ZoneId>,
    pub opened_at: Timestamp,
    pub acknowledged: bool,
    pub next_step: usize,
}

/// A [`Hit`] as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHit {
    pub seq: u64,
    pub device: Option<DeviceId>,
    pub point: Option<PointId>,
    pub value: Option<Value>,
    pub at: Timestamp,
}

impl From<Hit> for SavedHit {
    fn from(hit: Hit) -> Self {
        SavedHit {
            seq: hit.seq,
            device: hit.device,
            point: hit.point,
            value: hit.value,
            at: hit.at,
        }
    }
}

impl Engine {
    /// The state to save, by name.
    pub fn snapshot(&self, now: Timestamp) -> Snapshot {
        let program = &self.program;
        let state = &self.state;
        let mut snapshot = Snapshot {
            taken_at: now,
            zones: program
                .zones
                .iter()
                .zip(&state.zones)
                .map(|(zone, saved)| SavedZone {
                    id: zone.id.clone(),
                    mode: saved.mode,
                    effective_at: saved.effective_at,
                })
                .collect(),
            bypassed: self.bypassed(),
            schedules: program
                .schedules
                .iter()
                .zip(&state.schedules)
                .map(|(schedule, active)| (schedule.id().to_owned(), *active))
                .collect(),
            incidents: state
                .incidents
                .iter()
                .map(|(id, tracked)| SavedIncident {
                    id: *id,
                    rule: program.rules[tracked.rule as usize].id.clone(),
                    zone: tracked
                        .zone
                        .map(|zone| program.zones[zone as usize].id.clone()),
                    opened_at: tracked.opened_at,
                    acknowledged: tracked.acknowledged,
                    next_step: tracked.next_step,
                })
                .collect(),
            ..Snapshot::default()
        };
        for ((due, _, _), timer) in &state.timers {
            match timer {
                Timer::Entry {
                    rule,
                    zone,
                    hit,
                    joined,
                } => snapshot.entries.push(SavedEntry {
                    rule: program.rules[*rule as usize].id.clone(),
                    zone: program.zones[*zone as usize].id.clone(),
                    due: *due,
                    hit: self.hit(hit).into(),
                    joined: joined.iter().map(|hit| self.hit(hit).into()).collect(),
                }),
                Timer::Held { rule, local, hit } => {
                    let point = program.rules[*rule as usize].locals[*local as usize];
                    snapshot.held.push(SavedHeld {
                        rule: program.rules[*rule as usize].id.clone(),
                        point: program.points[point as usize].id.clone(),
                        due: *due,
                        hit: self.hit(hit).into(),
                    });
                }
                Timer::Silent { rule, local } => snapshot.silent.push(SavedSilence {
                    rule: program.rules[*rule as usize].id.clone(),
                    subject: self.silence_subject(*rule, *local),
                    due: Some(*due),
                }),
                // Recomputed at start: exit ends from the zones, escalations from the
                // incidents, schedule boundaries from the schedules.
                Timer::Exit { .. } | Timer::Escalate { .. } | Timer::Schedule { .. } => {}
            }
        }
        for (slot, (rule, saved)) in program.rules.iter().zip(&state.rules).enumerate() {
            if matches!(rule.trigger, CompiledTrigger::Silent { .. }) {
                let raised = saved
                    .active
                    .iter()
                    .enumerate()
                    .filter(|(_, raised)| **raised);
                for (local, _) in raised {
                    snapshot.silent.push(SavedSilence {
                        rule: rule.id.clone(),
                        subject: self.silence_subject(slot as u32, local as u32),
                        due: None,
                    });
                }
            }
            if saved.progress.iter().any(Option::is_some) {
                snapshot.sequences.push(SavedSequence {
                    rule: rule.id.clone(),
                    progress: saved.progress.clone(),
                });
            }
            if !saved.matches.is_empty() {
                snapshot.counts.push(SavedCount {
                    rule: rule.id.clone(),
                    matches: saved.matches.iter().copied().collect(),
                });
            }
        }
        snapshot
    }

    /// Takes over what of `snapshot` still exists. Returns the schedules' saved flags by
    /// slot, for [`Engine::start_schedules`].
    pub(super) fn restore(&mut self, snapshot: &Snapshot, now: Timestamp) -> Vec<(u32, bool)> {
        let program = self.program.clone();
        for saved in &snapshot.zones {
            if let Some(&zone) = program.zone_slots.get(&saved.id) {
                let exit_timer = (saved.mode.is_armed() && saved.effective_at > now).then(|| {
                    self.state
                        .add_timer(saved.effective_at, Timer::Exit { zone })
                });
                self.state.zones[zone as usize] = ZoneState {
                    mode: saved.mode,
                    effective_at: saved.effective_at,
                    exit_timer,
                };
            }
        }
        for point in &snapshot.bypassed {
            if let Some(&slot) = program.point_slots.get(point) {
                self.state.bypassed[slot as usize] = true;
            }
        }
        for entry in &snapshot.entries {
            let (Some(&rule), Some(&zone)) = (
                program.rule_slots.get(&entry.rule),
                program.zone_slots.get(&entry.zone),
            ) else {
                continue;
            };
            let timer = Timer::Entry {
                rule,
                zone,
                hit: self.slot_hit(&entry.hit),
                joined: entry.joined.iter().map(|hit| self.slot_hit(hit)).collect(),
            };
            let key = self.state.add_timer(entry.due, timer);
            self.state.entries.insert((rule, zone), key);
        }
        for held in &snapshot.held {
            let Some((rule, local)) = self.local_of(&held.rule, held.point.as_str(), false) else {
                continue;
            };
            if !self.state.rules[rule as usize].active[local as usize] {
                // The point no longer holds (its last value says so): the hold ended.
                continue;
            }
            let hit = self.slot_hit(&held.hit);
            let key = self
                .state
                .add_timer(held.due, Timer::Held { rule, local, hit });
            self.state.rules[rule as usize].due[local as usize] = Some(key);
        }
        for silence in &snapshot.silent {
            let Some(&rule) = program.rule_slots.get(&silence.rule) else {
                continue;
            };
            let device = program.rules[rule as usize].trigger.per_device();
            let Some((rule, local)) = self.local_of(&silence.rule, &silence.subject, device) else {
                continue;
            };
            match silence.due {
                Some(due) => {
                    let key = self.state.add_timer(due, Timer::Silent { rule, local });
                    self.state.rules[rule as usize].due[local as usize] = Some(key);
                }
                None => self.state.rules[rule as usize].active[local as usize] = true,
            }
        }
        for sequence in &snapshot.sequences {
            if let Some(&rule) = program.rule_slots.get(&sequence.rule) {
                let progress = &mut self.state.rules[rule as usize].progress;
                if progress.len() == sequence.progress.len() {
                    progress.clone_from(&sequence.progress);
                }
            }
        }
        for count in &snapshot.counts {
            if let Some(&rule) = program.rule_slots.get(&count.rule) {
                self.state.rules[rule as usize].matches = count.matches.iter().copied().collect();
            }
        }
        for saved in &snapshot.incidents {
            let Some(&rule) = program.rule_slots.get(&saved.rule) else {
                continue;
            };
            let zone = saved
                .zone
                .as_ref()
                .and_then(|zone| program.zone_slots.get(zone).copied());
            self.state.open.insert((rule, zone), saved.id);
            self.state.incidents.insert(
                saved.id,
                TrackedIncident {
                    rule,
                    zone,
                    opened_at: saved.opened_at,
                    acknowledged: saved.acknowledged,
                    next_step: saved.next_step,
                    timer: None,
                },
            );
            self.schedule_escalation(saved.id);
        }
        snapshot
            .schedules
            .iter()
            .filter_map(|(id, active)| program.schedule_slots.get(id).map(|&slot| (slot, *active)))
            .collect()
    }

    /// The name of a silence's subject: its point, or its device.
    fn silence_subject(&self, rule: u32, local: u32) -> String {
        let program = &self.program;
        let compiled = &program.rules[rule as usize];
        let subject = compiled.locals[local as usize] as usize;
        if compiled.trigger.per_device() {
            program.devices[subject].to_string()
        } else {
            program.points[subject].id.to_string()
        }
    }

    /// The (rule, local) of a rule's subject named `subject` (a point, or a device).
    fn local_of(&self, rule: &RuleId, subject: &str, device: bool) -> Option<(u32, u32)> {
        let program = &self.program;
        let rule_slot = *program.rule_slots.get(rule)?;
        let subject_slot = if device {
            *program.device_slots.get(&DeviceId::new(subject).ok()?)?
        } else {
            *program.point_slots.get(&PointId::new(subject).ok()?)?
        };
        let local = program.rules[rule_slot as usize]
            .locals
            .iter()
            .position(|&slot| slot == subject_slot)?;
        Some((rule_slot, local as u32))
    }

    fn slot_hit(&self, hit: &SavedHit) -> SlotHit {
        SlotHit {
            seq: hit.seq,
            device: hit
                .device
                .as_ref()
                .and_then(|device| self.program.device_slots.get(device).copied()),
            point: hit
                .point
                .as_ref()
                .and_then(|point| self.program.point_slots.get(point).copied()),
            value: hit.value.clone(),
            at: hit.at,
        }
    }
}

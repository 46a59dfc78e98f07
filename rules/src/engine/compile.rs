//! From the config's zones, schedules and rules to a [`Program`]: every reference resolved to
//! a slot, every predicate type-checked, and every problem reported with its span.

use std::collections::HashMap;
use std::ops::Range;

use gatehouse_protocol::{DeviceId, PointId, RuleId, Severity, Value, ZoneId};
use jiff::SignedDuration;
use jiff::tz::TimeZone;
use toml::Spanned;

use crate::catalog::{Catalog, PointSpec, glob_matches};
use crate::config::{
    Action, Condition, Delay, EventKind, Mode, Pattern, RuleConfig, ScheduleConfig, Trigger,
    ZoneConfig,
};
use crate::expr::{Predicate, Scope, Slot, Type};
use crate::schedule::Schedule;

/// One problem in the rules' config, at a byte span of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Range<usize>,
    pub message: String,
}

/// How often a rule may fire per [`LOOP_WINDOW`] unless it says otherwise.
pub const DEFAULT_MAX_FIRINGS: u32 = 30;

/// The window of the loop limiter.
pub const LOOP_WINDOW: SignedDuration = SignedDuration::from_secs(60);

/// The compiled site: immutable, shared by an engine and its reloads' comparisons.
#[derive(Debug, Default)]
pub(super) struct Program {
    pub points: Vec<PointSpec>,
    pub point_slots: HashMap<PointId, u32>,
    /// Each point's device slot.
    pub point_device: Vec<u32>,
    /// Each point's zone slot.
    pub point_zone: Vec<Option<u32>>,
    pub devices: Vec<DeviceId>,
    pub device_slots: HashMap<DeviceId, u32>,
    pub zones: Vec<Zone>,
    pub zone_slots: HashMap<ZoneId, u32>,
    pub schedules: Vec<Schedule>,
    pub schedule_slots: HashMap<String, u32>,
    pub rules: Vec<Rule>,
    pub rule_slots: HashMap<RuleId, u32>,
    /// Rules to look at, per point, for observations and for command results.
    pub on_observation: Vec<Vec<Hook>>,
    pub on_command: Vec<Vec<Hook>>,
    /// Rules to look at, per device, for status events.
    pub on_status: Vec<Vec<Hook>>,
    /// Silent rules an event of a point (or device) restarts.
    pub silent_points: Vec<Vec<Hook>>,
    pub silent_devices: Vec<Vec<Hook>>,
    /// Points that lock an egress door.
    pub egress_locks: Vec<u32>,
}

#[derive(Debug)]
pub(super) struct Zone {
    pub id: ZoneId,
    pub initial: Mode,
    pub entry_delay: Option<SignedDuration>,
    pub exit_delay: Option<SignedDuration>,
    /// The schedule the zone follows: its slot, the mode while active and while inactive.
    pub schedule: Option<(u32, Mode, Mode)>,
}

/// A rule looks at an event: which rule, which step of its trigger, and which of the rule's
/// per-subject states (a point's edge, a held or silent timer) the event concerns.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hook {
    pub rule: u32,
    pub step: u16,
    pub local: u32,
}

#[derive(Debug)]
pub(super) struct Rule {
    pub id: RuleId,
    pub zone: Option<u32>,
    pub trigger: CompiledTrigger,
    /// The subject of each local state: a point slot, or a device slot for a device's
    /// silence.
    pub locals: Vec<u32>,
    pub modes: Option<Vec<Mode>>,
    pub condition: Option<Predicate>,
    pub actions: Vec<CompiledAction>,
    pub escalate: Vec<CompiledEscalation>,
    pub life_safety: bool,
    pub max_firings: u32,
}

#[derive(Debug)]
pub(super) enum CompiledTrigger {
    Event(Step),
    Sequence {
        steps: Vec<Step>,
        within: SignedDuration,
    },
    Count {
        step: Step,
        times: u32,
        within: SignedDuration,
    },
    Held {
        step: Step,
        duration: SignedDuration,
    },
    Silent {
        /// Per device (any event of the device restarts it) rather than per point.
        per_device: bool,
        duration: SignedDuration,
    },
}

impl CompiledTrigger {
    /// A silence per device rather than per point.
    pub fn per_device(&self) -> bool {
        matches!(
            self,
            CompiledTrigger::Silent {
                per_device: true,
                ..
            }
        )
    }
}

/// One pattern of a trigger; which points or devices it matches is in the hooks.
#[derive(Debug)]
pub(super) struct Step {
    pub kind: EventKind,
    pub value: Option<Predicate>,
}

#[derive(Debug)]
pub(super) enum CompiledAction {
    Raise {
        severity: Severity,
        title: Vec<TitlePart>,
        delay: Delay,
    },
    Command {
        point: u32,
        value: Value,
    },
    Clip {
        camera: DeviceId,
        before: SignedDuration,
        after: SignedDuration,
    },
    SetMode {
        zone: u32,
        mode: Mode,
    },
}

#[derive(Debug)]
pub(super) struct CompiledEscalation {
    pub after: SignedDuration,
    pub severity: Option<Severity>,
    pub actions: Vec<CompiledAction>,
}

/// A piece of an incident title.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TitlePart {
    Text(String),
    Rule,
    Zone,
    Device,
    Point,
    Value,
}

/// Collects problems while compiling.
struct Problems<'a> {
    found: Vec<Problem>,
    /// The config's text, to place a mistake inside an expression.
    source: &'a str,
}

impl Problems<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.found.push(Problem {
            span: spanned.span(),
            message: message.into(),
        });
    }

    fn span(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.found.push(Problem {
            span,
            message: message.into(),
        });
    }

    /// A mistake at `offset` in an expression: placed there when the file holds the
    /// expression as written (a literal string, or a basic one without escapes), else at
    /// the string's start.
    fn in_expression(&mut self, text: &Spanned<String>, offset: usize, message: String) {
        let span = text.span();
        let raw = self.source.get(span.start + 1..span.end.saturating_sub(1));
        let start = if raw == Some(text.get_ref().as_str()) {
            span.start + 1 + offset
        } else {
            span.start
        };
        self.span(start..start + 1, message);
    }
}

/// What [`Engine::compile`](super::Engine::compile) compiles: a site's zones, schedules and rules, and what they may name.
pub struct Site<'a> {
    pub zones: &'a [ZoneConfig],
    pub schedules: &'a [ScheduleConfig],
    pub rules: &'a [RuleConfig],
    pub catalog: &'a Catalog,
    /// The time zone of schedules that name none.
    pub time_zone: &'a TimeZone,
    /// The config's text, which the spans of the configs above point into.
    pub source: &'a str,
}

impl Program {
    pub(super) fn compile(site: &Site<'_>) -> Result<Program, Vec<Problem>> {
        let mut problems = Problems {
            found: Vec::new(),
            source: site.source,
        };
        let mut program = Program::catalog(site.catalog);
        program.compile_schedules(site, &mut problems);
        program.compile_zones(site.zones, &mut problems);
        for rule in site.rules {
            if program.rule_slots.contains_key(rule.id.get_ref()) {
                problems.at(
                    &rule.id,
                    format!("rule `{}` is defined twice", rule.id.get_ref()),
                );
                continue;
            }
            if let Some(compiled) = program.compile_rule(rule, site.catalog, &mut problems) {
                let slot = program.rules.len() as u32;
                program.rule_slots.insert(compiled.id.clone(), slot);
                program.rules.push(compiled);
            }
        }
        if problems.found.is_empty() {
            Ok(program)
        } else {
            Err(problems.found)
        }
    }

    fn catalog(catalog: &Catalog) -> Program {
        let mut devices: Vec<DeviceId> = catalog.devices.clone();
        for point in &catalog.points {
            if !devices.contains(&point.device) {
                devices.push(point.device.clone());
            }
        }
        let device_slots: HashMap<DeviceId, u32> = devices
            .iter()
            .enumerate()
            .map(|(slot, id)| (id.clone(), slot as u32))
            .collect();
        let point_device = catalog
            .points
            .iter()
            .map(|point| device_slots.get(&point.device).copied().unwrap_or(0))
            .collect();
        let egress_locks = (0..catalog.points.len() as u32)
            .filter(|&slot| catalog.points[slot as usize].egress_locked.is_some())
            .collect();
        Program {
            point_slots: catalog
                .points
                .iter()
                .enumerate()
                .map(|(slot, point)| (point.id.clone(), slot as u32))
                .collect(),
            points: catalog.points.clone(),
            point_device,
            point_zone: Vec::new(),
            on_observation: vec![Vec::new(); catalog.points.len()],
            on_command: vec![Vec::new(); catalog.points.len()],
            silent_points: vec![Vec::new(); catalog.points.len()],
            on_status: vec![Vec::new(); devices.len()],
            silent_devices: vec![Vec::new(); devices.len()],
            devices,
            device_slots,
            zones: Vec::new(),
            zone_slots: HashMap::new(),
            schedules: Vec::new(),
            schedule_slots: HashMap::new(),
            rules: Vec::new(),
            rule_slots: HashMap::new(),
            egress_locks,
        }
    }

    fn compile_schedules(&mut self, site: &Site<'_>, problems: &mut Problems<'_>) {
        for config in site.schedules {
            match Schedule::compile(config, site.time_zone) {
                Ok(schedule) => {
                    let id = schedule.id().to_owned();
                    if self.schedule_slots.contains_key(&id) {
                        problems.at(&config.id, format!("schedule `{id}` is defined twice"));
                        continue;
                    }
                    self.schedule_slots.insert(id, self.schedules.len() as u32);
                    self.schedules.push(schedule);
                }
                Err(found) => {
                    for problem in found {
                        problems.span(problem.span.clone(), problem.to_string());
                    }
                }
            }
        }
    }

    fn compile_zones(&mut self, zones: &[ZoneConfig], problems: &mut Problems<'_>) {
        for zone in zones {
            let id = zone.id.get_ref();
            if self.zone_slots.contains_key(id) {
                problems.at(&zone.id, format!("zone `{id}` is defined twice"));
                continue;
            }
            let entry_delay = zone
                .entry_delay
                .as_ref()
                .and_then(|delay| positive(delay, "entry_delay", problems));
            let exit_delay = zone
                .exit_delay
                .as_ref()
                .and_then(|delay| positive(delay, "exit_delay", problems));
            let schedule = zone.schedule.as_ref().and_then(|follow| {
                match self.schedule_slots.get(follow.id.get_ref()) {
                    Some(&slot) => Some((slot, follow.active, follow.inactive)),
                    None => {
                        problems.at(
                            &follow.id,
                            format!(
                                "schedule `{}` is not defined in [[schedules]]",
                                follow.id.get_ref()
                            ),
                        );
                        None
                    }
                }
            });
            self.zone_slots.insert(id.clone(), self.zones.len() as u32);
            self.zones.push(Zone {
                id: id.clone(),
                initial: zone.mode,
                entry_delay,
                exit_delay,
                schedule,
            });
        }
        self.point_zone = self
            .points
            .iter()
            .map(|point| {
                point
                    .zone
                    .as_ref()
                    .and_then(|zone| self.zone_slots.get(zone).copied())
            })
            .collect();
    }

    fn compile_rule(
        &mut self,
        config: &RuleConfig,
        catalog: &Catalog,
        problems: &mut Problems<'_>,
    ) -> Option<Rule> {
        let before = problems.found.len();
        let rule_slot = self.rules.len() as u32;
        let zone = config
            .zone
            .as_ref()
            .and_then(|zone| self.zone_slot(zone, problems));
        let mut locals = Vec::new();
        let mut hooks: Vec<(HookList, u32, Hook)> = Vec::new();
        let trigger =
            self.compile_trigger(&config.when, rule_slot, &mut locals, &mut hooks, problems);
        let modes = config
            .condition
            .as_ref()
            .and_then(|condition| condition.modes.as_ref());
        if let Some(modes) = modes {
            let per_device = trigger.as_ref().is_some_and(CompiledTrigger::per_device);
            let zoneless = locals
                .iter()
                .any(|&local| per_device || self.point_zone[local as usize].is_none());
            if zone.is_none() && (zoneless || locals.is_empty()) {
                problems.at(
                    modes,
                    "`if.modes` needs a zone: give the rule `zone = \"...\"` or put its points in zones",
                );
            }
        }
        let condition = config
            .condition
            .as_ref()
            .and_then(|condition| self.compile_condition(condition, problems));
        let actions = self.compile_actions(config.then.get_ref(), catalog, problems);
        if config.then.get_ref().is_empty() {
            problems.at(&config.then, "a rule needs at least one action in `then`");
        }
        let mut escalate = Vec::new();
        let raises = actions
            .iter()
            .any(|action| matches!(action, CompiledAction::Raise { .. }));
        for step in &config.escalate {
            if !raises {
                problems.at(
                    step,
                    "`escalate` needs a `raise` action: only incidents escalate",
                );
            }
            let after = positive(&step.get_ref().after, "after", problems);
            let actions = self.compile_actions(&step.get_ref().then, catalog, problems);
            if let Some(after) = after {
                escalate.push(CompiledEscalation {
                    after,
                    severity: step.get_ref().severity,
                    actions,
                });
            }
        }
        if config.life_safety
            && !matches!(
                trigger,
                Some(CompiledTrigger::Event(_) | CompiledTrigger::Held { .. })
            )
        {
            problems.at(
                &config.when,
                "a life_safety rule needs an `event` or `held` trigger: the interlock lasts while its condition holds",
            );
        }
        if config.max_firings == Some(0) {
            problems.at(&config.id, "max_firings must be at least 1");
        }
        if problems.found.len() > before {
            return None;
        }
        for (list, subject, hook) in hooks {
            let lists = match list {
                HookList::Observation => &mut self.on_observation,
                HookList::Command => &mut self.on_command,
                HookList::Status => &mut self.on_status,
                HookList::SilentPoint => &mut self.silent_points,
                HookList::SilentDevice => &mut self.silent_devices,
            };
            lists[subject as usize].push(hook);
        }
        Some(Rule {
            id: config.id.get_ref().clone(),
            zone,
            trigger: trigger?,
            locals,
            modes: modes.map(|modes| modes.get_ref().clone()),
            condition,
            actions,
            escalate,
            life_safety: config.life_safety,
            max_firings: config.max_firings.unwrap_or(DEFAULT_MAX_FIRINGS),
        })
    }

    fn compile_trigger(
        &self,
        when: &Spanned<Trigger>,
        rule: u32,
        locals: &mut Vec<u32>,
        hooks: &mut Vec<(HookList, u32, Hook)>,
        problems: &mut Problems<'_>,
    ) -> Option<CompiledTrigger> {
        let mut step = |index: u16, pattern: &Pattern, problems: &mut Problems| {
            self.compile_step(pattern, rule, index, locals, hooks, problems)
        };
        match when.get_ref() {
            Trigger::Event(pattern) => Some(CompiledTrigger::Event(step(0, pattern, problems)?)),
            Trigger::Sequence { steps, within } => {
                if steps.len() < 2 {
                    problems.at(when, "a sequence needs at least two steps");
                }
                let within = positive(within, "within", problems);
                let mut compiled = Vec::new();
                for (index, pattern) in steps.iter().enumerate() {
                    compiled.push(step(index as u16, pattern.get_ref(), problems));
                }
                let steps = compiled.into_iter().collect::<Option<Vec<_>>>()?;
                Some(CompiledTrigger::Sequence {
                    steps,
                    within: within?,
                })
            }
            Trigger::Count {
                event,
                times,
                within,
            } => {
                if *times.get_ref() < 2 {
                    problems.at(times, "`times` must be at least 2 (use `event` for one)");
                }
                let within = positive(within, "within", problems);
                Some(CompiledTrigger::Count {
                    step: step(0, event, problems)?,
                    times: *times.get_ref(),
                    within: within?,
                })
            }
            Trigger::Held { event, duration } => {
                if event.kind != EventKind::Observation || event.value.is_none() {
                    problems.at(
                        when,
                        "a `held` trigger needs an observation pattern with a `value` predicate (what must hold)",
                    );
                }
                let duration = positive(duration, "for", problems);
                Some(CompiledTrigger::Held {
                    step: step(0, event, problems)?,
                    duration: duration?,
                })
            }
            Trigger::Silent {
                device,
                point,
                duration,
            } => {
                let duration = positive(duration, "for", problems);
                let per_device = point.is_none();
                let subjects = match (device, point) {
                    (None, None) => {
                        problems.at(when, "a `silent` trigger needs a `point` or a `device`");
                        return None;
                    }
                    (_, Some(point)) => self.match_points(point, device.as_ref(), None, problems),
                    (Some(device), None) => self.match_devices(device, problems),
                };
                for subject in subjects {
                    let local = locals.len() as u32;
                    locals.push(subject);
                    let list = if per_device {
                        HookList::SilentDevice
                    } else {
                        HookList::SilentPoint
                    };
                    hooks.push((
                        list,
                        subject,
                        Hook {
                            rule,
                            step: 0,
                            local,
                        },
                    ));
                }
                Some(CompiledTrigger::Silent {
                    per_device,
                    duration: duration?,
                })
            }
        }
    }

    fn compile_step(
        &self,
        pattern: &Pattern,
        rule: u32,
        step: u16,
        locals: &mut Vec<u32>,
        hooks: &mut Vec<(HookList, u32, Hook)>,
        problems: &mut Problems<'_>,
    ) -> Option<Step> {
        let zone = pattern
            .zone
            .as_ref()
            .and_then(|zone| self.zone_slot(zone, problems));
        if pattern.zone.is_some() && zone.is_none() {
            return None;
        }
        let (list, subjects, value_types): (HookList, Vec<u32>, Vec<Type>) = match pattern.kind {
            EventKind::Observation | EventKind::Command => {
                let Some(point) = &pattern.point else {
                    problems.span(
                        pattern.device.as_ref().map_or(0..0, |device| device.span()),
                        "an observation or command pattern needs a `point`",
                    );
                    return None;
                };
                let points = self.match_points(point, pattern.device.as_ref(), zone, problems);
                let types = points
                    .iter()
                    .map(|&slot| {
                        if pattern.kind == EventKind::Command {
                            Type::Text
                        } else {
                            self.points[slot as usize].value_type
                        }
                    })
                    .collect();
                let list = if pattern.kind == EventKind::Command {
                    HookList::Command
                } else {
                    HookList::Observation
                };
                (list, points, types)
            }
            EventKind::DeviceStatus => {
                if let Some(point) = &pattern.point {
                    problems.at(point, "a device_status pattern names a device, not a point");
                    return None;
                }
                let Some(device) = &pattern.device else {
                    problems.span(0..0, "a device_status pattern needs a `device`");
                    return None;
                };
                let devices = self.match_devices(device, problems);
                let types = vec![Type::Text; devices.len()];
                (HookList::Status, devices, types)
            }
        };
        if subjects.is_empty() {
            return None;
        }
        let value = match &pattern.value {
            Some(source) => {
                // Every matched point must accept the predicate; they usually share a type.
                let mut compiled = None;
                let mut seen = Vec::new();
                for value_type in value_types {
                    if seen.contains(&value_type) {
                        continue;
                    }
                    seen.push(value_type);
                    let scope = RuleScope {
                        program: self,
                        value: Ok(value_type),
                    };
                    match Predicate::compile(source.get_ref(), &scope) {
                        Ok(predicate) => compiled = Some(predicate),
                        Err(error) => {
                            problems.in_expression(
                                source,
                                error.offset,
                                format!("in `value`: {}", error.message),
                            );
                            return None;
                        }
                    }
                }
                compiled
            }
            None => None,
        };
        for subject in subjects {
            let local = locals.len() as u32;
            locals.push(subject);
            hooks.push((list, subject, Hook { rule, step, local }));
        }
        Some(Step {
            kind: pattern.kind,
            value,
        })
    }

    /// A zone's slot; an undefined zone is a problem.
    fn zone_slot(&self, zone: &Spanned<ZoneId>, problems: &mut Problems<'_>) -> Option<u32> {
        let slot = self.zone_slots.get(zone.get_ref()).copied();
        if slot.is_none() {
            problems.at(
                zone,
                format!("zone `{}` is not defined in [[zones]]", zone.get_ref()),
            );
        }
        slot
    }

    /// The points a pattern names (optionally only those of matching devices and a zone);
    /// none is a problem.
    fn match_points(
        &self,
        point: &Spanned<String>,
        device: Option<&Spanned<String>>,
        zone: Option<u32>,
        problems: &mut Problems<'_>,
    ) -> Vec<u32> {
        let matched: Vec<u32> = (0..self.points.len() as u32)
            .filter(|&slot| {
                let spec = &self.points[slot as usize];
                glob_matches(point.get_ref(), spec.id.as_str())
                    && device
                        .is_none_or(|device| glob_matches(device.get_ref(), spec.device.as_str()))
                    && zone.is_none_or(|zone| self.point_zone[slot as usize] == Some(zone))
            })
            .collect();
        if matched.is_empty() {
            problems.at(
                point,
                format!(
                    "`{}` matches no configured point{}",
                    point.get_ref(),
                    if device.is_some() || zone.is_some() {
                        " of the given device and zone"
                    } else {
                        ""
                    }
                ),
            );
        }
        matched
    }

    fn match_devices(&self, device: &Spanned<String>, problems: &mut Problems<'_>) -> Vec<u32> {
        let matched: Vec<u32> = (0..self.devices.len() as u32)
            .filter(|&slot| glob_matches(device.get_ref(), self.devices[slot as usize].as_str()))
            .collect();
        if matched.is_empty() {
            problems.at(
                device,
                format!("`{}` matches no configured device", device.get_ref()),
            );
        }
        matched
    }

    fn compile_condition(
        &self,
        condition: &Condition,
        problems: &mut Problems<'_>,
    ) -> Option<Predicate> {
        let source = condition.expr.as_ref()?;
        let scope = RuleScope {
            program: self,
            value: Err(
                "`if.expr` looks at the site's state, not at the event: put conditions on the event's value in the trigger's `value`"
                    .to_owned(),
            ),
        };
        match Predicate::compile(source.get_ref(), &scope) {
            Ok(predicate) => Some(predicate),
            Err(error) => {
                problems.in_expression(
                    source,
                    error.offset,
                    format!("in `if.expr`: {}", error.message),
                );
                None
            }
        }
    }

    fn compile_actions(
        &self,
        actions: &[Spanned<Action>],
        catalog: &Catalog,
        problems: &mut Problems<'_>,
    ) -> Vec<CompiledAction> {
        actions
            .iter()
            .filter_map(|action| self.compile_action(action, catalog, problems))
            .collect()
    }

    fn compile_action(
        &self,
        action: &Spanned<Action>,
        catalog: &Catalog,
        problems: &mut Problems<'_>,
    ) -> Option<CompiledAction> {
        match action.get_ref() {
            Action::Raise {
                severity,
                title,
                delay,
            } => Some(CompiledAction::Raise {
                severity: *severity,
                title: parse_title(title, problems)?,
                delay: *delay,
            }),
            Action::Command { point, value } => {
                let Some(&slot) = self.point_slots.get(point.get_ref()) else {
                    problems.at(point, format!("unknown point `{}`", point.get_ref()));
                    return None;
                };
                let spec = &self.points[slot as usize];
                if !spec.writable {
                    problems.at(
                        point,
                        format!("point `{}` cannot be written", point.get_ref()),
                    );
                    return None;
                }
                match spec.value_type.value_of(value.get_ref()) {
                    Ok(value) => Some(CompiledAction::Command { point: slot, value }),
                    Err(message) => {
                        problems.at(value, format!("point `{}`: {message}", point.get_ref()));
                        None
                    }
                }
            }
            Action::Clip {
                camera,
                before,
                after,
            } => {
                if !catalog.cameras.contains(camera.get_ref()) {
                    problems.at(
                        camera,
                        format!("`{}` is not a configured camera", camera.get_ref()),
                    );
                }
                let before = non_negative(before, "before", problems);
                let after = non_negative(after, "after", problems);
                Some(CompiledAction::Clip {
                    camera: camera.get_ref().clone(),
                    before: before?,
                    after: after?,
                })
            }
            Action::SetMode { zone, mode } => Some(CompiledAction::SetMode {
                zone: self.zone_slot(zone, problems)?,
                mode: *mode,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum HookList {
    Observation,
    Command,
    Status,
    SilentPoint,
    SilentDevice,
}

/// What an expression of a rule may name.
struct RuleScope<'a> {
    program: &'a Program,
    value: Result<Type, String>,
}

impl Scope for RuleScope<'_> {
    fn value_type(&self) -> Result<Type, String> {
        self.value.clone()
    }

    fn point(&self, id: &str) -> Option<(Slot, Type)> {
        let id = PointId::new(id).ok()?;
        let slot = *self.program.point_slots.get(&id)?;
        Some((Slot(slot), self.program.points[slot as usize].value_type))
    }

    fn zone(&self, id: &str) -> Option<Slot> {
        let id = ZoneId::new(id).ok()?;
        self.program.zone_slots.get(&id).map(|&slot| Slot(slot))
    }

    fn schedule(&self, id: &str) -> Option<Slot> {
        self.program.schedule_slots.get(id).map(|&slot| Slot(slot))
    }
}

fn positive(
    duration: &Spanned<SignedDuration>,
    field: &str,
    problems: &mut Problems<'_>,
) -> Option<SignedDuration> {
    let value = *duration.get_ref();
    if value.is_positive() {
        Some(value)
    } else {
        problems.at(duration, format!("`{field}` must be longer than zero"));
        None
    }
}

fn non_negative(
    duration: &Spanned<SignedDuration>,
    field: &str,
    problems: &mut Problems<'_>,
) -> Option<SignedDuration> {
    let value = *duration.get_ref();
    if value.is_negative() {
        problems.at(duration, format!("`{field}` cannot be negative"));
        None
    } else {
        Some(value)
    }
}

/// Splits a title template into text and placeholders; an unknown placeholder is a problem.
fn parse_title(title: &Spanned<String>, problems: &mut Problems<'_>) -> Option<Vec<TitlePart>> {
    let mut parts = Vec::new();
    let mut rest = title.get_ref().as_str();
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TitlePart::Text(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            problems.at(title, "unclosed `{` in the title");
            return None;
        };
        let name = &rest[open + 1..open + close];
        parts.push(match name {
            "rule" => TitlePart::Rule,
            "zone" => TitlePart::Zone,
            "device" => TitlePart::Device,
            "point" => TitlePart::Point,
            "value" => TitlePart::Value,
            other => {
                problems.at(
                    title,
                    format!(
                        "unknown placeholder `{{{other}}}` in the title: use {{rule}}, {{zone}}, {{device}}, {{point}} or {{value}}"
                    ),
                );
                return None;
            }
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TitlePart::Text(rest.to_owned()));
    }
    if parts.is_empty() {
        problems.at(title, "the title is empty");
        return None;
    }
    Some(parts)
}

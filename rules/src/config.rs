//! The rules' part of a site's TOML config: zones, schedules and rules.
//!
//! This module is the *shape* (serde, `deny_unknown_fields`, spans kept where a later check
//! must point at a line); [`crate::engine::Engine::compile`] checks the *meaning* (every
//! reference resolved, every predicate type-checked) and reports every problem with its span.
//!
//! ```toml
//! [[zones]]
//! id = "lobby"
//! name = "Lobby"
//! mode = "armed_away"            # the mode at first start; later the last mode is kept
//! entry_delay = "30s"            # a `raise` with `delay = "entry"` waits this long for a disarm
//! exit_delay = "45s"             # after arming, the zone counts as armed only after this
//! schedule = { id = "business-hours", active = "disarmed", inactive = "armed_away" }
//!
//! [[rules]]
//! id = "lobby-intrusion"
//! when.event = { point = "lobby.door", value = "value == true" }
//! if = { modes = ["armed_away", "armed_night"] }
//! then = [
//!   { raise = { severity = "high", title = "Intrusion: {point} opened", delay = "entry" } },
//!   { command = { point = "lobby.siren", value = true } },
//!   { clip = { camera = "cam.lobby", before = "10s", after = "20s" } },
//! ]
//! escalate = [{ after = "2m", severity = "critical" }]
//! ```

use gatehouse_protocol::{DeviceId, PointId, RuleId, Severity, ZoneId};
use jiff::SignedDuration;
use serde::Deserialize;
use toml::Spanned;

pub use crate::schedule::ScheduleConfig;

/// A zone's arming mode (shared with the journal's `zone_mode` events).
pub use gatehouse_protocol::ZoneMode as Mode;

/// A zone: an area armed and disarmed as one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub id: Spanned<ZoneId>,
    pub name: String,
    /// The mode at first start; after that the engine keeps the last mode across restarts.
    #[serde(default)]
    pub mode: Mode,
    /// How long a `raise` with `delay = "entry"` waits for the zone to be disarmed.
    #[serde(default)]
    pub entry_delay: Option<Spanned<SignedDuration>>,
    /// After arming, how long until the zone counts as armed (time to leave).
    #[serde(default)]
    pub exit_delay: Option<Spanned<SignedDuration>>,
    /// Arms and disarms the zone automatically.
    #[serde(default)]
    pub schedule: Option<ZoneSchedule>,
}

/// A zone follows a schedule: one mode while it is active, another while it is not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSchedule {
    pub id: Spanned<String>,
    pub active: Mode,
    pub inactive: Mode,
}

/// One rule: when something happens, if the situation allows, then do something.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub id: Spanned<RuleId>,
    /// The zone whose mode `if.modes` and entry delays look at, and which incidents name;
    /// defaults to the zone of the trigger's points when they all share one.
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    pub when: Spanned<Trigger>,
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
    pub then: Spanned<Vec<Spanned<Action>>>,
    /// Steps taken while the rule's incident stays unacknowledged.
    #[serde(default)]
    pub escalate: Vec<Spanned<Escalation>>,
    /// A fire or smoke rule: while its trigger holds, egress doors are released and nothing
    /// can lock them (see [`crate::engine`]'s interlock).
    #[serde(default)]
    pub life_safety: bool,
    /// How often the rule may fire within `loop_window` before it is held back as a loop.
    #[serde(default)]
    pub max_firings: Option<u32>,
}

/// What sets a rule off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Trigger {
    /// An event matches (for observations: the predicate *becomes* true for a point).
    Event(Pattern),
    /// Events matching each step, in order, the last within `within` of the first.
    Sequence {
        steps: Vec<Spanned<Pattern>>,
        within: Spanned<SignedDuration>,
    },
    /// `times` matching events within `within`.
    Count {
        event: Pattern,
        times: Spanned<u32>,
        within: Spanned<SignedDuration>,
    },
    /// A point's predicate stays true for `for` (a door held open).
    Held {
        event: Pattern,
        #[serde(rename = "for")]
        duration: Spanned<SignedDuration>,
    },
    /// A point (or every point of a device) reports nothing for `for`.
    Silent {
        #[serde(default)]
        device: Option<Spanned<String>>,
        #[serde(default)]
        point: Option<Spanned<String>>,
        #[serde(rename = "for")]
        duration: Spanned<SignedDuration>,
    },
}

/// Which events a trigger looks at. Patterns are ids where `*` stands for any run of
/// characters (`lobby.*`, `*.contact`); a pattern must match at least one configured point
/// or device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    #[serde(default)]
    pub device: Option<Spanned<String>>,
    #[serde(default)]
    pub point: Option<Spanned<String>>,
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    #[serde(default)]
    pub kind: EventKind,
    /// A predicate over `value` (see [`crate::expr`]); absent: any good value.
    #[serde(default)]
    pub value: Option<Spanned<String>>,
}

/// The events a pattern matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A point's value (good quality only).
    #[default]
    Observation,
    /// A device going online or offline: `value` is `"online"` or `"offline"`.
    DeviceStatus,
    /// A command's record: `value` is `"sent"` (a rule's command left), then `"done"`,
    /// `"failed"` or `"unconfirmed"`.
    Command,
}

/// What must hold when the trigger fires.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The rule's zone is in one of these modes (and past its exit delay).
    #[serde(default)]
    pub modes: Option<Spanned<Vec<Mode>>>,
    /// A predicate over the current state (`state("…")`, `armed("…")`, `scheduled("…")`).
    #[serde(default)]
    pub expr: Option<Spanned<String>>,
}

/// What a rule does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Action {
    /// Open an incident, or add evidence to the rule's open incident in the same zone.
    Raise {
        severity: Severity,
        /// `{rule}`, `{zone}`, `{device}`, `{point}`, `{value}` are filled in.
        title: Spanned<String>,
        #[serde(default)]
        delay: Delay,
    },
    /// Set a device point (lock, unlock, siren, light).
    Command {
        point: Spanned<PointId>,
        value: Spanned<toml::Value>,
    },
    /// Ask the video pipeline for a clip around the trigger.
    Clip {
        camera: Spanned<DeviceId>,
        #[serde(default = "default_clip_before")]
        before: Spanned<SignedDuration>,
        #[serde(default = "default_clip_after")]
        after: Spanned<SignedDuration>,
    },
    /// Change a zone's mode (through its exit delay when arming).
    SetMode { zone: Spanned<ZoneId>, mode: Mode },
}

fn default_clip_before() -> Spanned<SignedDuration> {
    Spanned::new(0..0, SignedDuration::from_secs(10))
}

fn default_clip_after() -> Spanned<SignedDuration> {
    Spanned::new(0..0, SignedDuration::from_secs(20))
}

/// When a `raise` takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delay {
    /// At once.
    #[default]
    None,
    /// After the zone's entry delay, unless the zone is disarmed before it ends.
    Entry,
}

/// One step of escalation: `after` the incident opened, if nobody acknowledged it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub after: Spanned<SignedDuration>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub then: Vec<Spanned<Action>>,
}

//! Scenario tests: a site, a script of events and waits on a fake clock, and the outputs as
//! one line each, compared whole. The harness plays the journal's part: it numbers events,
//! opens an incident for each new `raise` and feeds the incident's event back.

use gatehouse_protocol::incident::IncidentState;
use gatehouse_protocol::{Event, EventBody, PointId, Quality, RuleId, Value, ZoneId};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::{Engine, Output, Problem, Site, Snapshot};
use crate::catalog::{Catalog, PointSpec};
use crate::config::{Mode, RuleConfig, ScheduleConfig, ZoneConfig};
use crate::expr::Type;
use crate::replay::{Outcome, Replay};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSite {
    #[serde(default)]
    zones: Vec<ZoneConfig>,
    #[serde(default)]
    schedules: Vec<ScheduleConfig>,
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

fn point(id_: &str, device: &str, zone: Option<&str>, value_type: Type) -> PointSpec {
    PointSpec {
        id: id(id_),
        device: id(device),
        zone: zone.map(id),
        value_type,
        writable: false,
        egress_locked: None,
    }
}

/// The test building: a lobby with a door, motion, a lock on the egress door and a siren; an
/// office; a fire panel; a badge reader; a temperature.
fn catalog() -> Catalog {
    let mut lock = point("lobby.lock", "lock-ctl", Some("lobby"), Type::Bool);
    lock.writable = true;
    lock.egress_locked = Some(Value::Bool(true));
    let mut siren = point("lobby.siren", "panel", None, Type::Bool);
    siren.writable = true;
    let mut light = point("lobby.light", "panel", Some("lobby"), Type::Bool);
    light.writable = true;
    Catalog {
        points: vec![
            point("lobby.door", "panel", Some("lobby"), Type::Bool),
            point("lobby.motion", "panel", Some("lobby"), Type::Bool),
            point("lobby.tamper", "panel", Some("lobby"), Type::Bool),
            lock,
            siren,
            light,
            point("office.door", "panel", Some("office"), Type::Bool),
            point("fire.alarm", "fire-panel", None, Type::Bool),
            point("badge.result", "reader", Some("lobby"), Type::Text),
            point("temp", "hvac", None, Type::Float),
        ],
        devices: vec![
            id("panel"),
            id("lock-ctl"),
            id("fire-panel"),
            id("reader"),
            id("hvac"),
        ],
        cameras: vec![id("cam.lobby")],
    }
}

const ZONES: &str = r#"
[[zones]]
id = "lobby"
name = "Lobby"
entry_delay = "30s"
exit_delay = "45s"
[[zones]]
id = "office"
name = "Office"
"#;

/// Compiles a whole config (zones included).
fn compile(source: &str) -> Result<Engine, Vec<Problem>> {
    let site: TestSite = toml::from_str(source).unwrap_or_else(|e| panic!("{e}"));
    Engine::compile(&Site {
        zones: &site.zones,
        schedules: &site.schedules,
        rules: &site.rules,
        catalog: &catalog(),
        time_zone: &TimeZone::UTC,
        source,
    })
}

/// Compiles rules with the test building's zones.
fn engine(rules: &str) -> Engine {
    compiled(&format!("{ZONES}{rules}"))
}

fn compiled(source: &str) -> Engine {
    compile(source).unwrap_or_else(|problems| panic!("{problems:#?}"))
}

/// 2026-11-26 10:00:00 UTC, a Thursday.
fn t0() -> Timestamp {
    id("2026-11-26T10:00:00Z")
}

/// A script on a fake clock, through a [`Replay`]; `log` holds the outputs, one line each,
/// `+seconds` from t0.
struct Run {
    replay: Replay,
    log: Vec<String>,
}

impl Run {
    fn new(engine: Engine) -> Run {
        Run::started(engine, &[], None, t0())
    }

    fn started(
        engine: Engine,
        latest: &[Event],
        snapshot: Option<&Snapshot>,
        now: Timestamp,
    ) -> Run {
        let (replay, outcomes) = Replay::start(engine, latest, snapshot, now);
        let mut run = Run {
            replay,
            log: Vec::new(),
        };
        run.record(outcomes);
        run
    }

    fn engine(&self) -> &Engine {
        self.replay.engine()
    }

    fn now(&self) -> Timestamp {
        self.replay.now()
    }

    fn at(&self, seconds: f64) -> Timestamp {
        t0().saturating_add(SignedDuration::from_secs_f64(seconds))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs the timers due by `seconds`, each at its own time, as the agent's timer loop
    /// does.
    fn wait(&mut self, seconds: f64) -> &mut Self {
        let outcomes = self.replay.advance(self.at(seconds));
        self.record(outcomes);
        self
    }

    fn event(&mut self, seconds: f64, body: EventBody) -> &mut Self {
        let outcomes = self.replay.event(body, self.at(seconds));
        self.record(outcomes);
        self
    }

    fn observe(&mut self, seconds: f64, point: &str, value: Value) -> &mut Self {
        self.observe_with(seconds, point, Some(value), Quality::Good)
    }

    fn observe_with(
        &mut self,
        seconds: f64,
        point_id: &str,
        value: Option<Value>,
        quality: Quality,
    ) -> &mut Self {
        let spec = catalog()
            .points
            .into_iter()
            .find(|spec| spec.id.as_str() == point_id)
            .unwrap_or_else(|| panic!("no point {point_id}"));
        let at = self.at(seconds);
        self.event(
            seconds,
            EventBody::Observation {
                device: spec.device,
                point: spec.id,
                zone: spec.zone,
                value,
                quality,
                observed_at: at,
            },
        )
    }

    fn set_mode(&mut self, seconds: f64, zone: &str, mode: Mode) -> &mut Self {
        self.wait(seconds);
        let now = self.now();
        let outputs = self
            .replay
            .engine_mut()
            .set_mode(&id(zone), mode, "guard", now)
            .unwrap_or_else(|e| panic!("{e}"));
        let outcomes = self.replay.apply(outputs);
        self.record(outcomes);
        self
    }

    /// An operator steps incident `number`.
    fn step(&mut self, seconds: f64, number: u64, state: IncidentState) -> &mut Self {
        assert!(
            self.replay.incidents().contains_key(&number),
            "no incident #{number}"
        );
        let outcomes = self.replay.step_incident(number, state, self.at(seconds));
        self.record(outcomes);
        self
    }

    fn record(&mut self, outcomes: Vec<Outcome>) {
        for outcome in outcomes {
            let line = self.line(&outcome);
            self.log.push(line);
        }
    }

    fn offset(&self, at: Timestamp) -> String {
        let seconds = at.duration_since(t0()).as_secs_f64();
        format!("+{seconds}s")
    }

    fn line(&self, outcome: &Outcome) -> String {
        let now = self.offset(outcome.at);
        match &outcome.output {
            Output::Raise(raise) => format!(
                "{now} {} #{} {} {} {:?} zone={} point={} seq={}{}",
                if raise.attach_to.is_some() {
                    "attach"
                } else {
                    "open"
                },
                outcome.incident.unwrap_or_default(),
                raise.rule,
                raise.severity.as_str(),
                raise.title,
                raise.zone.as_ref().map_or("-", |z| z.as_str()),
                raise.evidence.point.as_ref().map_or("-", |p| p.as_str()),
                raise.evidence.seq,
                if raise.joined.is_empty() {
                    String::new()
                } else {
                    let seqs: Vec<_> = raise.joined.iter().map(|hit| hit.seq).collect();
                    format!(" joined={seqs:?}")
                },
            ),
            Output::Escalate {
                incident,
                step,
                severity,
                ..
            } => format!(
                "{now} escalate #{incident} step {step} {}",
                severity.map_or("-", |s| s.as_str())
            ),
            Output::Command(command) => {
                format!("{now} command {}={}", command.point, command.value)
            }
            Output::CommandRefused { command, .. } => {
                format!("{now} refused {}={}", command.point, command.value)
            }
            Output::Clip {
                camera, from, to, ..
            } => format!(
                "{now} clip {camera} {}..{}",
                self.offset(*from),
                self.offset(*to)
            ),
            Output::Mode(change) => format!(
                "{now} mode {} {} effective {} by {}",
                change.zone,
                change.mode.as_str(),
                self.offset(change.effective_at),
                change.by
            ),
            Output::EntryDelay { rule, zone, until } => {
                format!("{now} entry {rule} {zone} until {}", self.offset(*until))
            }
            Output::Interlock { active } => {
                format!("{now} interlock {}", if *active { "on" } else { "off" })
            }
            Output::LoopSuppressed { rule, .. } => format!("{now} loop {rule}"),
        }
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }
}

const INTRUSION: &str = r#"
[[rules]]
id = "intrusion"
when.event = { point = "lobby.door", value = "value == true" }
if = { modes = ["armed_away", "armed_night"] }
then = [{ raise = { severity = "high", title = "Intrusion: {point} in {zone}", delay = "entry" } }]
[[rules]]
id = "motion"
when.event = { point = "lobby.motion", value = "value" }
if = { modes = ["armed_away"] }
then = [{ raise = { severity = "high", title = "Motion in {zone}" } }]
"#;

#[test]
fn exit_delay_lets_the_last_person_out() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .observe(10.0, "lobby.door", Value::Bool(true))
        .observe(12.0, "lobby.door", Value::Bool(false))
        .wait(45.0)
        .observe(50.0, "lobby.door", Value::Bool(true))
        .wait(80.0);
    assert_eq!(
        run.take(),
        [
            "+0s mode lobby armed_away effective +45s by guard",
            "+45s mode lobby armed_away effective +45s by exit delay",
            "+50s entry intrusion lobby until +80s",
            "+80s open #1 intrusion high \"Intrusion: lobby.door in lobby\" zone=lobby point=lobby.door seq=3",
        ]
    );
}

#[test]
fn entry_delay_disarmed_in_time_raises_nothing() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .observe(100.0, "lobby.door", Value::Bool(true))
        .set_mode(129.0, "lobby", Mode::Disarmed)
        .wait(200.0);
    assert_eq!(
        run.take(),
        [
            "+0s mode lobby armed_away effective +45s by guard",
            "+45s mode lobby armed_away effective +45s by exit delay",
            "+100s entry intrusion lobby until +130s",
            "+129s mode lobby disarmed effective +129s by guard",
        ]
    );
}

#[test]
fn entry_delay_disarmed_too_late_raises() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .observe(100.0, "lobby.door", Value::Bool(true))
        .wait(130.0)
        .set_mode(131.0, "lobby", Mode::Disarmed);
    let log = run.take();
    assert_eq!(log[2], "+100s entry intrusion lobby until +130s");
    assert_eq!(
        log[3],
        "+130s open #1 intrusion high \"Intrusion: lobby.door in lobby\" zone=lobby point=lobby.door seq=1"
    );
    assert_eq!(log.len(), 5);
}

#[test]
fn triggers_during_an_entry_delay_join_the_incident_it_ends_in() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .wait(45.0)
        .observe(100.0, "lobby.door", Value::Bool(true))
        .observe(105.0, "lobby.door", Value::Bool(false))
        .observe(110.0, "lobby.door", Value::Bool(true))
        .observe(115.0, "lobby.door", Value::Bool(false))
        .observe(120.0, "lobby.door", Value::Bool(true))
        .wait(130.0)
        // After the delay, a new trigger waits again and then adds to the open incident.
        .observe(135.0, "lobby.door", Value::Bool(false))
        .observe(140.0, "lobby.door", Value::Bool(true))
        .wait(170.0);
    assert_eq!(
        run.take()[2..],
        [
            "+100s entry intrusion lobby until +130s",
            "+130s open #1 intrusion high \"Intrusion: lobby.door in lobby\" zone=lobby point=lobby.door seq=1 joined=[3, 5]",
            "+140s entry intrusion lobby until +170s",
            "+170s attach #1 intrusion high \"Intrusion: lobby.door in lobby\" zone=lobby point=lobby.door seq=8",
        ]
    );
    let seqs: Vec<u64> = run
        .replay
        .incidents()
        .get(&1)
        .map(|incident| incident.evidence.iter().map(|e| e.seq).collect())
        .unwrap_or_default();
    assert_eq!(seqs, [1, 3, 5, 8]);
}

#[test]
fn triggers_that_joined_an_entry_delay_survive_a_restart() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .wait(45.0)
        .observe(100.0, "lobby.door", Value::Bool(true))
        .observe(105.0, "lobby.door", Value::Bool(false))
        .observe(110.0, "lobby.door", Value::Bool(true));
    let json =
        serde_json::to_string(&run.engine().snapshot(run.now())).unwrap_or_else(|e| panic!("{e}"));
    let snapshot: Snapshot = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    let outputs = engine(INTRUSION).start(&[], Some(&snapshot), run.at(500.0));
    let joined = match outputs.as_slice() {
        [Output::Raise(raise)] => raise.joined.iter().map(|hit| (hit.seq, hit.at)).collect(),
        _ => Vec::new(),
    };
    assert_eq!(joined, [(3, run.at(110.0))], "{outputs:?}");
}

#[test]
fn a_disarmed_zone_and_a_mode_not_listed_raise_nothing() {
    let mut run = Run::new(engine(INTRUSION));
    run.observe(1.0, "lobby.motion", Value::Bool(true))
        .observe(2.0, "lobby.motion", Value::Bool(false))
        .set_mode(3.0, "lobby", Mode::ArmedStay)
        .wait(60.0)
        .observe(61.0, "lobby.motion", Value::Bool(true));
    let log = run.take();
    assert!(log.iter().all(|line| !line.contains("open")), "{log:#?}");
}

#[test]
fn a_bypassed_sensor_is_ignored_until_the_zone_is_disarmed() {
    let mut run = Run::new(engine(INTRUSION));
    run.replay
        .engine_mut()
        .bypass(&id("lobby.door"), true)
        .unwrap_or_else(|e| panic!("{e}"));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .wait(45.0)
        .observe(50.0, "lobby.door", Value::Bool(true))
        .observe(51.0, "lobby.motion", Value::Bool(true));
    let log = run.take();
    assert_eq!(
        log[2],
        "+51s open #1 motion high \"Motion in lobby\" zone=lobby point=lobby.motion seq=2"
    );
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(run.engine().bypassed(), [id::<PointId>("lobby.door")]);
    run.set_mode(60.0, "lobby", Mode::Disarmed);
    assert!(run.engine().bypassed().is_empty());
}

#[test]
fn door_forced_open_while_the_lock_reports_locked() {
    let rules = r#"
[[rules]]
id = "door-forced"
when.event = { point = "lobby.door", value = "value" }
if = { expr = 'state("lobby.lock") == true' }
then = [
  { raise = { severity = "critical", title = "Door forced: {point}" } },
  { clip = { camera = "cam.lobby", before = "10s", after = "20s" } },
  { command = { point = "lobby.siren", value = true } },
]
"#;
    let mut run = Run::new(engine(rules));
    run.observe(0.0, "lobby.lock", Value::Bool(false))
        .observe(1.0, "lobby.door", Value::Bool(true))
        .observe(5.0, "lobby.door", Value::Bool(false))
        .observe(6.0, "lobby.lock", Value::Bool(true))
        .observe(20.0, "lobby.door", Value::Bool(true));
    assert_eq!(
        run.take(),
        [
            "+20s open #1 door-forced critical \"Door forced: lobby.door\" zone=lobby point=lobby.door seq=5",
            "+20s clip cam.lobby +10s..+40s",
            "+20s command lobby.siren=true",
        ]
    );
}

const HELD: &str = r#"
[[rules]]
id = "door-held"
when.held = { event = { point = "lobby.door", value = "value == true" }, for = "30s" }
then = [{ raise = { severity = "medium", title = "Door held open: {point}" } }]
"#;

#[test]
fn door_held_open_longer_than_allowed() {
    let mut run = Run::new(engine(HELD));
    run.observe(0.0, "lobby.door", Value::Bool(true))
        .observe(29.0, "lobby.door", Value::Bool(false))
        .wait(100.0)
        .observe(100.0, "lobby.door", Value::Bool(true))
        // A bad read is neither open nor closed: the hold goes on.
        .observe_with(110.0, "lobby.door", None, Quality::bad("timeout"))
        .wait(129.9);
    assert!(run.take().is_empty());
    run.wait(130.0);
    assert_eq!(
        run.take(),
        [
            "+130s open #1 door-held medium \"Door held open: lobby.door\" zone=lobby point=lobby.door seq=3"
        ]
    );
    assert_eq!(run.engine().next_deadline(), None);
}

#[test]
fn motion_after_hours_in_an_armed_zone() {
    let rules = r#"
[[schedules]]
id = "business-hours"
timezone = "UTC"
[[schedules.windows]]
days = ["mon", "tue", "wed", "thu", "fri"]
from = "08:00"
to = "18:00"
[[rules]]
id = "after-hours-motion"
when.event = { point = "lobby.motion", value = "value" }
if = { expr = '!scheduled("business-hours") && armed("lobby")' }
then = [{ raise = { severity = "high", title = "Motion after hours" } }]
"#;
    let mut run = Run::new(engine(rules));
    run.set_mode(0.0, "lobby", Mode::ArmedNight)
        .wait(60.0)
        .observe(100.0, "lobby.motion", Value::Bool(true))
        .observe(101.0, "lobby.motion", Value::Bool(false));
    // Thursday 10:00 UTC: business hours.
    assert!(run.take().iter().all(|line| !line.contains("open")));
    // 19:00: after hours (the schedule's boundary at 18:00 passed on the way).
    run.wait(9.0 * 3600.0)
        .observe(9.0 * 3600.0, "lobby.motion", Value::Bool(true));
    assert_eq!(
        run.take(),
        [
            "+32400s open #1 after-hours-motion high \"Motion after hours\" zone=lobby point=lobby.motion seq=3"
        ]
    );
}

#[test]
fn tamper_raises_in_any_mode() {
    let rules = r#"
[[rules]]
id = "tamper"
when.event = { point = "*.tamper", value = "value" }
then = [{ raise = { severity = "high", title = "Tamper: {device}/{point}" } }]
"#;
    let mut run = Run::new(engine(rules));
    run.observe(1.0, "lobby.tamper", Value::Bool(true));
    assert_eq!(
        run.take(),
        [
            "+1s open #1 tamper high \"Tamper: panel/lobby.tamper\" zone=lobby point=lobby.tamper seq=1"
        ]
    );
}

#[test]
fn sequence_window_is_inclusive_at_its_edge() {
    let rules = r#"
[[rules]]
id = "tailgate"
when.sequence = { steps = [
  { point = "badge.result", value = 'value == "granted"' },
  { point = "lobby.door", value = "value" },
  { point = "lobby.motion", value = "value" },
], within = "30s" }
then = [{ raise = { severity = "low", title = "Badge, door, motion" } }]
"#;
    let mut run = Run::new(engine(rules));
    let granted = || Value::Text("granted".to_owned());
    // Exactly 30 s from badge to motion: fires.
    run.observe(0.0, "badge.result", granted())
        .observe(10.0, "lobby.door", Value::Bool(true))
        .observe(30.0, "lobby.motion", Value::Bool(true));
    assert_eq!(run.take().len(), 1);
    // 30.001 s: does not.
    run.observe(100.0, "lobby.door", Value::Bool(false))
        .observe(101.0, "lobby.motion", Value::Bool(false))
        .observe(200.0, "badge.result", Value::Text("denied".to_owned()))
        .observe(200.5, "badge.result", granted())
        .observe(210.0, "lobby.door", Value::Bool(true))
        .observe(230.501, "lobby.motion", Value::Bool(true));
    assert!(run.take().is_empty());
    // Out of order (door before badge): no sequence.
    run.observe(300.0, "lobby.door", Value::Bool(false))
        .observe(300.5, "lobby.motion", Value::Bool(false))
        .observe(301.0, "lobby.door", Value::Bool(true))
        .observe(302.0, "badge.result", Value::Text("denied".to_owned()))
        .observe(303.0, "badge.result", granted())
        .observe(304.0, "lobby.motion", Value::Bool(true));
    assert!(run.take().is_empty());
}

#[test]
fn count_window_is_inclusive_at_its_edge() {
    let rules = r#"
[[rules]]
id = "badge-denied"
when.count = { event = { point = "badge.result", value = 'value == "denied"' }, times = 3, within = "60s" }
then = [{ raise = { severity = "medium", title = "Three denied badges" } }]
"#;
    let mut run = Run::new(engine(rules));
    let denied = || Value::Text("denied".to_owned());
    let other = || Value::Text("granted".to_owned());
    // The predicate has no edge for text observations of a reader: every denied read counts,
    // but a reader reports a change, so alternate.
    run.observe(0.0, "badge.result", denied())
        .observe(1.0, "badge.result", other())
        .observe(30.0, "badge.result", denied())
        .observe(31.0, "badge.result", other())
        .observe(60.0, "badge.result", denied());
    assert_eq!(run.take().len(), 1, "3 within exactly 60 s");
    run.observe(100.0, "badge.result", denied())
        .observe(101.0, "badge.result", other())
        .observe(130.0, "badge.result", denied())
        .observe(131.0, "badge.result", other())
        .observe(160.001, "badge.result", denied());
    assert!(run.take().is_empty(), "the first fell out of the window");
    run.observe(161.0, "badge.result", other())
        .observe(162.0, "badge.result", denied());
    assert_eq!(run.take().len(), 1, "130, 160.001 and 162");
}

#[test]
fn repeated_triggers_attach_to_the_open_incident_until_it_is_resolved() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway).wait(45.0);
    for i in 0..3 {
        let t = 50.0 + f64::from(i) * 10.0;
        run.observe(t, "lobby.motion", Value::Bool(true)).observe(
            t + 1.0,
            "lobby.motion",
            Value::Bool(false),
        );
    }
    run.step(90.0, 1, IncidentState::Acknowledged)
        .observe(91.0, "lobby.motion", Value::Bool(true))
        .observe(92.0, "lobby.motion", Value::Bool(false))
        .step(93.0, 1, IncidentState::Resolved)
        .observe(94.0, "lobby.motion", Value::Bool(true));
    let raises: Vec<String> = run
        .take()
        .into_iter()
        .filter(|line| line.contains("motion high"))
        .map(|line| line.split(" motion ").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        raises,
        [
            "+50s open #1",
            "+60s attach #1",
            "+70s attach #1",
            "+91s attach #1",
            "+94s open #2"
        ]
    );
}

const ESCALATING: &str = r#"
[[rules]]
id = "tamper"
when.event = { point = "lobby.tamper", value = "value" }
then = [{ raise = { severity = "high", title = "Tamper" } }]
escalate = [
  { after = "2m", severity = "critical" },
  { after = "5m", then = [{ command = { point = "lobby.siren", value = true } }] },
]
"#;

#[test]
fn unacknowledged_incidents_escalate_until_acknowledged() {
    let mut run = Run::new(engine(ESCALATING));
    run.observe(0.0, "lobby.tamper", Value::Bool(true))
        .wait(119.0);
    assert_eq!(run.take().len(), 1);
    run.wait(300.0);
    assert_eq!(
        run.take(),
        [
            "+120s escalate #1 step 0 critical",
            "+300s escalate #1 step 1 -",
            "+300s command lobby.siren=true",
        ]
    );
    // A second incident acknowledged in time never escalates.
    run.step(301.0, 1, IncidentState::Resolved)
        .observe(302.0, "lobby.tamper", Value::Bool(false))
        .observe(303.0, "lobby.tamper", Value::Bool(true))
        .step(400.0, 2, IncidentState::Acknowledged)
        .wait(10_000.0);
    assert_eq!(run.take().len(), 1, "only the raise of #2");
    assert_eq!(run.engine().next_deadline(), None);
}

const FIRE: &str = r#"
[[rules]]
id = "fire"
life_safety = true
when.event = { point = "fire.alarm", value = "value" }
then = [{ raise = { severity = "critical", title = "Fire alarm" } }]
[[rules]]
id = "lock-at-night"
when.event = { point = "lobby.light", value = "value == false" }
then = [{ command = { point = "lobby.lock", value = true } }]
"#;

#[test]
fn fire_releases_egress_doors_and_nothing_locks_them_while_active() {
    let mut run = Run::new(engine(FIRE));
    let lock = id::<PointId>("lobby.lock");
    assert_eq!(
        run.engine().check_command(&lock, &Value::Bool(true)),
        Ok(())
    );
    run.observe(0.0, "fire.alarm", Value::Bool(true));
    assert_eq!(
        run.take(),
        [
            "+0s interlock on",
            "+0s command lobby.lock=false",
            "+0s open #1 fire critical \"Fire alarm\" zone=- point=fire.alarm seq=1",
        ]
    );
    assert!(
        run.engine()
            .check_command(&lock, &Value::Bool(true))
            .is_err()
    );
    assert_eq!(
        run.engine().check_command(&lock, &Value::Bool(false)),
        Ok(())
    );
    // A rule's lock command is refused too.
    run.observe(5.0, "lobby.light", Value::Bool(false));
    assert_eq!(run.take(), ["+5s refused lobby.lock=true"]);
    // The fire panel is reset: the interlock ends and locking works again.
    run.observe(60.0, "fire.alarm", Value::Bool(false))
        .observe(61.0, "lobby.light", Value::Bool(true))
        .observe(62.0, "lobby.light", Value::Bool(false));
    assert_eq!(
        run.take(),
        ["+60s interlock off", "+62s command lobby.lock=true"]
    );
    assert_eq!(
        run.engine().check_command(&lock, &Value::Bool(true)),
        Ok(())
    );
}

#[test]
fn the_interlock_is_restored_after_a_restart_during_a_fire() {
    let mut run = Run::new(engine(FIRE));
    run.observe(0.0, "fire.alarm", Value::Bool(true));
    let snapshot = run.engine().snapshot(run.now());
    // Restarted with the fire panel's last value from the journal.
    let latest = [Event {
        seq: 1,
        recorded_at: t0(),
        body: EventBody::Observation {
            device: id("fire-panel"),
            point: id("fire.alarm"),
            zone: None,
            value: Some(Value::Bool(true)),
            quality: Quality::Good,
            observed_at: t0(),
        },
    }];
    let mut restarted = engine(FIRE);
    let outputs = restarted.start(&latest, Some(&snapshot), run.at(30.0));
    assert_eq!(
        outputs,
        [
            Output::Interlock { active: true },
            Output::Command(super::Command {
                rule: id("fire"),
                device: id("lock-ctl"),
                point: id("lobby.lock"),
                value: Value::Bool(false),
            }),
        ]
    );
    assert!(
        restarted
            .check_command(&id("lobby.lock"), &Value::Bool(true))
            .is_err()
    );
}

#[test]
fn a_rule_that_retriggers_itself_is_held_back() {
    // Turning the light off turns it on, which turns it off...: a loop through the device.
    let rules = r#"
[[rules]]
id = "flip"
max_firings = 5
when.event = { point = "lobby.light" }
then = [{ command = { point = "lobby.light", value = true } }]
"#;
    let mut run = Run::new(engine(rules));
    for i in 0..20 {
        run.observe(f64::from(i), "lobby.light", Value::Bool(i % 2 == 0));
    }
    let log = run.take();
    assert_eq!(log.iter().filter(|l| l.contains("command")).count(), 5);
    assert_eq!(log.iter().filter(|l| l.contains("loop flip")).count(), 1);
    assert_eq!(log[5], "+5s loop flip");
    // A minute after the first firing, the window has room again.
    run.observe(60.0, "lobby.light", Value::Bool(true));
    assert_eq!(run.take(), ["+60s command lobby.light=true"]);
}

#[test]
fn a_silent_point_raises_once_until_it_reports_again() {
    let rules = r#"
[[rules]]
id = "hvac-silent"
when.silent = { device = "hvac", for = "5m" }
then = [{ raise = { severity = "low", title = "{device} silent" } }]
"#;
    let mut run = Run::new(engine(rules));
    run.observe(200.0, "temp", Value::Float(20.5)).wait(499.0);
    assert!(run.take().is_empty());
    run.wait(10_000.0);
    assert_eq!(
        run.take(),
        ["+500s open #1 hvac-silent low \"hvac silent\" zone=- point=- seq=0"]
    );
    run.observe(10_001.0, "temp", Value::Float(20.0))
        .wait(10_301.0);
    assert_eq!(
        run.take(),
        ["+10301s attach #1 hvac-silent low \"hvac silent\" zone=- point=- seq=0"]
    );
}

#[test]
fn a_restart_mid_timer_keeps_entry_delays_modes_and_holds() {
    let rules = format!("{INTRUSION}{HELD}");
    let mut run = Run::new(engine(&rules));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .wait(45.0)
        .observe(100.0, "lobby.door", Value::Bool(true));
    let snapshot = run.engine().snapshot(run.now());
    // Through JSON, as the agent saves it.
    let json = serde_json::to_string(&snapshot).unwrap_or_else(|e| panic!("{e}"));
    let snapshot: Snapshot = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    let latest = [Event {
        seq: 1,
        recorded_at: run.at(100.0),
        body: EventBody::Observation {
            device: id("panel"),
            point: id("lobby.door"),
            zone: Some(id("lobby")),
            value: Some(Value::Bool(true)),
            quality: Quality::Good,
            observed_at: run.at(100.0),
        },
    }];
    // Down from +100 s to +110 s.
    let restart = run.at(110.0);
    let mut run = Run::started(engine(&rules), &latest, Some(&snapshot), restart);
    assert!(run.take().is_empty());
    assert_eq!(
        run.engine().zone_mode(&id("lobby")),
        Some((Mode::ArmedAway, run.at(45.0)))
    );
    run.wait(130.0);
    assert_eq!(
        run.take(),
        [
            "+130s open #1 intrusion high \"Intrusion: lobby.door in lobby\" zone=lobby point=lobby.door seq=1",
            "+130s open #2 door-held medium \"Door held open: lobby.door\" zone=lobby point=lobby.door seq=1",
        ]
    );
}

#[test]
fn a_restart_after_the_entry_delay_ran_out_raises_at_once() {
    let mut run = Run::new(engine(INTRUSION));
    run.set_mode(0.0, "lobby", Mode::ArmedAway)
        .wait(45.0)
        .observe(100.0, "lobby.door", Value::Bool(true));
    let snapshot = run.engine().snapshot(run.now());
    let mut restarted = engine(INTRUSION);
    let outputs = restarted.start(&[], Some(&snapshot), run.at(500.0));
    assert!(
        matches!(outputs.as_slice(), [Output::Raise(raise)] if raise.rule.as_str() == "intrusion"),
        "{outputs:?}"
    );
}

#[test]
fn a_reload_mid_timer_keeps_timers_modes_and_incidents() {
    let mut run = Run::new(engine(&format!("{HELD}{ESCALATING}")));
    run.set_mode(0.0, "office", Mode::ArmedStay)
        .observe(10.0, "lobby.door", Value::Bool(true))
        .observe(11.0, "lobby.tamper", Value::Bool(true));
    run.take();
    // The new config drops nothing of those and adds a rule.
    let next = engine(&format!(
        "{HELD}{ESCALATING}{}",
        r#"
[[rules]]
id = "hot"
when.event = { point = "temp", value = "value > 30.0" }
then = [{ raise = { severity = "low", title = "Hot: {value}" } }]
"#
    ));
    let at = run.at(20.0);
    let outcomes = run.replay.reload(next, at);
    assert!(outcomes.is_empty(), "{outcomes:?}");
    assert_eq!(run.engine().rule_count(), 3);
    assert_eq!(
        run.engine().zone_mode(&id("office")).map(|(mode, _)| mode),
        Some(Mode::ArmedStay)
    );
    run.wait(40.0)
        .observe(41.0, "temp", Value::Float(31.5))
        .observe(42.0, "lobby.tamper", Value::Bool(false))
        .observe(43.0, "lobby.tamper", Value::Bool(true))
        .wait(131.0);
    assert_eq!(
        run.take(),
        [
            "+40s open #2 door-held medium \"Door held open: lobby.door\" zone=lobby point=lobby.door seq=1",
            "+41s open #3 hot low \"Hot: 31.5\" zone=- point=temp seq=5",
            "+43s attach #1 tamper high \"Tamper\" zone=lobby point=lobby.tamper seq=8",
            "+131s escalate #1 step 0 critical",
        ]
    );
}

#[test]
fn a_reload_drops_the_state_of_removed_rules() {
    let mut run = Run::new(engine(HELD));
    run.observe(0.0, "lobby.door", Value::Bool(true));
    assert!(run.engine().next_deadline().is_some());
    let (reloaded, outputs) = run.engine().reload(engine(INTRUSION), run.at(1.0));
    assert!(outputs.is_empty());
    assert_eq!(reloaded.next_deadline(), None);
}

/// A store armed every night, 22:00 to 06:00 in `timezone`.
fn night_store(timezone: &str) -> String {
    format!(
        r#"
[[schedules]]
id = "night"
timezone = "{timezone}"
[[schedules.windows]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "22:00"
to = "06:00"
[[zones]]
id = "store"
name = "Store"
schedule = {{ id = "night", active = "armed_away", inactive = "disarmed" }}
"#
    )
}

#[test]
fn schedules_arm_and_disarm_zones_across_a_dst_change() {
    // Europe/Berlin leaves summer time on Sunday 2026-10-25 at 03:00 (back to 02:00).
    let mut engine = compiled(&night_store("Europe/Berlin"));
    let start: Timestamp = id("2026-10-24T12:00:00Z");
    assert!(engine.start(&[], None, start).is_empty());
    let mut changes = Vec::new();
    while let Some(next) = engine.next_deadline() {
        if next > id::<Timestamp>("2026-10-26T12:00:00Z") {
            break;
        }
        for output in engine.advance(next) {
            if let Output::Mode(change) = output {
                changes.push(format!("{} {}", change.at, change.mode.as_str()));
            }
        }
    }
    assert_eq!(
        changes,
        [
            // 22:00 CEST (UTC+2), 06:00 CET (UTC+1): a 9-hour night.
            "2026-10-24T20:00:00Z armed_away",
            "2026-10-25T05:00:00Z disarmed",
            "2026-10-25T21:00:00Z armed_away",
            "2026-10-26T05:00:00Z disarmed",
        ]
    );
}

#[test]
fn a_schedule_boundary_passed_while_down_is_applied_at_start() {
    let rules = night_store("UTC");
    let compile = || compiled(&rules);
    let mut engine = compile();
    let evening: Timestamp = id("2026-11-26T21:00:00Z");
    assert!(engine.start(&[], None, evening).is_empty());
    let snapshot = engine.snapshot(evening);
    // Down from 21:00 to 23:00: the 22:00 arming happened while down.
    let mut restarted = compile();
    let outputs = restarted.start(&[], Some(&snapshot), id("2026-11-26T23:00:00Z"));
    assert!(
        matches!(outputs.as_slice(), [Output::Mode(change)] if change.mode == Mode::ArmedAway),
        "{outputs:?}"
    );
    // A manual disarm at night is kept (the schedule acts at its boundaries only).
    let restarted_zone = id::<ZoneId>("store");
    restarted
        .set_mode(
            &restarted_zone,
            Mode::Disarmed,
            "guard",
            id("2026-11-26T23:30:00Z"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(restarted.advance(id("2026-11-27T05:00:00Z")).is_empty());
    assert_eq!(
        restarted.zone_mode(&restarted_zone).map(|(mode, _)| mode),
        Some(Mode::Disarmed)
    );
}

/// The problems of a config, as `line:column message`.
fn problems(rules: &str) -> Vec<String> {
    let source = format!("{ZONES}{rules}");
    let problems = match compile(&source) {
        Ok(_) => panic!("compiled"),
        Err(problems) => problems,
    };
    problems
        .iter()
        .map(|problem| {
            let before = &source[..problem.span.start];
            let line = before.matches('\n').count() + 1;
            let column = problem.span.start - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("{line}:{column} {}", problem.message)
        })
        .collect()
}

#[test]
fn unknown_references_and_type_errors_are_refused_with_their_place() {
    let found = problems(
        r#"
[[rules]]
id = "a"
when.event = { point = "lobby.dor", value = "value" }
then = [{ raise = { severity = "high", title = "x" } }]
[[rules]]
id = "b"
when.event = { point = "lobby.door", value = "value > 3" }
then = [{ raise = { severity = "high", title = "x" } }]
[[rules]]
id = "c"
when.event = { point = "temp", value = "value > 3" }
if = { modes = ["armed_away"], expr = 'state("nope") == 1' }
then = [{ command = { point = "lobby.door", value = true } }, { raise = { severity = "low", title = "{what}" } }]
[[rules]]
id = "d"
life_safety = true
when.count = { event = { point = "fire.alarm" }, times = 2, within = "0s" }
then = [{ set_mode = { zone = "attic", mode = "disarmed" } }]
"#,
    );
    assert_eq!(
        found,
        [
            "13:24 `lobby.dor` matches no configured point",
            "17:47 in `value`: `>` compares numbers or texts, not conditions: `value` is a condition (true or false)",
            "22:16 `if.modes` needs a zone: give the rule `zone = \"...\"` or put its points in zones",
            "22:46 in `if.expr`: unknown point `nope`",
            "23:31 point `lobby.door` cannot be written",
            "23:101 unknown placeholder `{what}` in the title: use {rule}, {zone}, {device}, {point} or {value}",
            "27:70 `within` must be longer than zero",
            "28:31 zone `attic` is not defined in [[zones]]",
            "27:1 a life_safety rule needs an `event` or `held` trigger: the interlock lasts while its condition holds",
        ]
    );
}

#[test]
fn a_mistake_in_an_expression_is_placed_in_the_file_unless_escapes_move_it() {
    // Literal string: the expression is in the file as written.
    let literal = problems(
        r#"
[[rules]]
id = "a"
when.event = { point = "badge.result", value = 'value == "ok" && value' }
then = [{ raise = { severity = "high", title = "x" } }]
"#,
    );
    assert_eq!(literal.len(), 1);
    assert!(literal[0].starts_with("13:66 "), "{literal:?}");
    // Escaped quotes: offsets in the value are not offsets in the file: the expression's start.
    let escaped = problems(
        r#"
[[rules]]
id = "a"
when.event = { point = "badge.result", value = "value == \"ok\" && value" }
then = [{ raise = { severity = "high", title = "x" } }]
"#,
    );
    assert_eq!(escaped.len(), 1);
    assert!(escaped[0].starts_with("13:48 "), "{escaped:?}");
}

#[test]
fn a_rule_defined_twice_is_refused() {
    let rule = r#"
[[rules]]
id = "tamper"
when.event = { point = "lobby.tamper", value = "value" }
then = [{ raise = { severity = "high", title = "Tamper" } }]
"#;
    let found = problems(&format!("{rule}{rule}"));
    assert_eq!(found, ["17:6 rule `tamper` is defined twice"]);
}

#[test]
fn incident_evidence_names_the_rule_and_seq() {
    // The ids in outputs are the config's, whatever the slots.
    let mut run = Run::new(engine(ESCALATING));
    run.observe(0.0, "lobby.tamper", Value::Bool(true));
    let incident = run
        .replay
        .incidents()
        .get(&1)
        .cloned()
        .unwrap_or_else(|| panic!("no #1"));
    assert_eq!(incident.rule, id::<RuleId>("tamper"));
    assert_eq!(incident.zone, Some(id::<ZoneId>("lobby")));
    assert_eq!(incident.evidence[0].seq, 1);
    assert_eq!(
        incident.evidence[0].point,
        Some(id::<PointId>("lobby.tamper"))
    );
}

#[test]
fn a_replay_skips_recorded_incident_events_and_makes_its_own() {
    let mut run = Run::new(engine(ESCALATING));
    let recorded = gatehouse_protocol::incident::Incident {
        id: 99,
        rule: id("tamper"),
        title: "Tamper".to_owned(),
        severity: gatehouse_protocol::Severity::High,
        zone: Some(id("lobby")),
        state: IncidentState::Open,
        opened_at: t0(),
        evidence: Vec::new(),
        escalations: 0,
        acknowledged: None,
        resolved: None,
        clips: Vec::new(),
    };
    run.event(
        0.0,
        EventBody::Incident {
            change: gatehouse_protocol::incident::IncidentChange::Opened,
            incident: Box::new(recorded),
        },
    )
    .observe(1.0, "lobby.tamper", Value::Bool(true))
    .wait(200.0);
    assert_eq!(
        run.take(),
        [
            "+1s open #1 tamper high \"Tamper\" zone=lobby point=lobby.tamper seq=1",
            "+121s escalate #1 step 0 critical",
        ]
    );
}

/// Every kind of state the engine keeps: modes and exit/entry delays, edges, held and silent
/// timers, a sequence, a count, incidents with escalation, the interlock.
fn everything() -> String {
    format!(
        "{INTRUSION}{HELD}{ESCALATING}{FIRE}{}",
        r#"
[[rules]]
id = "tailgate"
when.sequence = { steps = [
  { point = "badge.result", value = 'value == "granted"' },
  { point = "lobby.door", value = "value" },
], within = "30s" }
then = [{ raise = { severity = "low", title = "Tailgate" } }]
[[rules]]
id = "denied"
when.count = { event = { point = "badge.result", value = 'value == "denied"' }, times = 2, within = "1m" }
then = [{ raise = { severity = "medium", title = "Denied twice" } }]
[[rules]]
id = "hvac-silent"
when.silent = { device = "hvac", for = "2m" }
then = [{ raise = { severity = "low", title = "{device} silent" } }]
"#
    )
}

/// One step of a random script.
#[derive(Debug, Clone)]
enum Step {
    Observe(&'static str, Value),
    Arm(Mode),
    Acknowledge(u64),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let flag = |point: &'static str| {
        any::<bool>().prop_map(move |on| Step::Observe(point, Value::Bool(on)))
    };
    prop_oneof![
        flag("lobby.door"),
        flag("lobby.motion"),
        flag("lobby.tamper"),
        flag("lobby.light"),
        flag("fire.alarm"),
        prop_oneof![Just("granted"), Just("denied")]
            .prop_map(|text| Step::Observe("badge.result", Value::Text(text.to_owned()))),
        (0.0f64..50.0).prop_map(|t| Step::Observe("temp", Value::Float(t))),
        prop_oneof![
            Just(Mode::Disarmed),
            Just(Mode::ArmedAway),
            Just(Mode::ArmedNight)
        ]
        .prop_map(Step::Arm),
        (1u64..4).prop_map(Step::Acknowledge),
    ]
}

/// Plays `script` (one step every `gap` seconds), reloading the site onto a fresh engine
/// after step `restart_at` if given; returns the log from then on.
fn play(script: &[Step], gap: f64, restart_at: Option<usize>) -> Vec<String> {
    let mut run = Run::new(engine(&everything()));
    let mut kept = Vec::new();
    for (index, step) in script.iter().enumerate() {
        let t = (index as f64 + 1.0) * gap;
        run.wait(t);
        match step {
            Step::Observe(point, value) => {
                run.observe(t, point, value.clone());
            }
            Step::Arm(mode) => {
                run.set_mode(t, "lobby", *mode);
            }
            Step::Acknowledge(number) => {
                if run
                    .replay
                    .incidents()
                    .get(number)
                    .is_some_and(|incident| incident.state == IncidentState::Open)
                {
                    run.step(t, *number, IncidentState::Acknowledged);
                }
            }
        }
        if restart_at == Some(index) {
            let at = run.at(t);
            let outcomes = run.replay.reload(engine(&everything()), at);
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o.output, Output::Interlock { .. } | Output::Command(_))),
                "{outcomes:?}"
            );
            run.take();
        }
        if restart_at.is_none_or(|restart| index > restart) {
            kept.extend(run.take());
        } else {
            run.take();
        }
    }
    run.wait((script.len() as f64 + 1.0) * gap + 600.0);
    kept.extend(run.take());
    kept
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// A reload at any point of any script (state carried by snapshot onto a freshly compiled
    /// engine, edges re-primed from the last values) changes nothing that follows.
    #[test]
    fn a_reload_anywhere_changes_nothing_that_follows(
        script in proptest::collection::vec(step(), 1..40),
        restart in 0usize..40,
        gap in proptest::prelude::prop_oneof![proptest::prelude::Just(3.0f64), proptest::prelude::Just(11.0), proptest::prelude::Just(37.0)],
    ) {
        let restart = restart % script.len();
        let uninterrupted: Vec<String> = play(&script, gap, None);
        let reloaded = play(&script, gap, Some(restart));
        // Both logs from the step after the reload on.
        let cut = ((restart + 1) as f64 + 1.0) * gap;
        let after = |log: Vec<String>| -> Vec<String> {
            log.into_iter()
                .filter(|line| {
                    let seconds: f64 =
                        line[1..line.find('s').unwrap_or(1)].parse().unwrap_or(0.0);
                    seconds >= cut
                })
                .collect()
        };
        let (after, reloaded_after) = (after(uninterrupted), after(reloaded));
        proptest::prop_assert_eq!(after, reloaded_after);
    }
}

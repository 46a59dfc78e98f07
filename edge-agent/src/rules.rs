//! Minimal incident rules: a condition on one point, optionally only while its zone is armed.
//!
//! Evaluation is pure: no I/O, no clock. The journal writer calls [`Rules::evaluate`] for each
//! event inside the event's transaction and opens an incident for each [`Firing`]. A rule fires
//! when its condition *becomes* true (a rising edge), so a door that stays open raises one
//! incident, not one per poll. The full engine (sequences, timers, modes) replaces this later
//! behind the same seam.

use std::collections::HashMap;

use gatehouse_protocol::incident::Evidence;
use gatehouse_protocol::{Event, EventBody, PointId, RuleId, Severity, Value, ZoneId};

use crate::config::{Condition, Config};

/// A rule asks for an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule: RuleId,
    pub title: String,
    pub severity: Severity,
    pub zone: Option<ZoneId>,
    pub evidence: Evidence,
}

#[derive(Debug, Clone)]
struct Rule {
    id: RuleId,
    title: String,
    severity: Severity,
    condition: Condition,
    zone: Option<ZoneId>,
    armed_only: bool,
    /// Whether the condition held at the last good value.
    active: bool,
}

/// The rules of a site and the state they keep between events.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    by_point: HashMap<PointId, Vec<usize>>,
    armed: HashMap<ZoneId, bool>,
}

impl Rules {
    /// Builds the rules of a validated config.
    pub fn from_config(config: &Config) -> Self {
        let mut rules = Rules {
            armed: config
                .zones
                .iter()
                .map(|zone| (zone.id.get_ref().clone(), zone.armed))
                .collect(),
            ..Rules::default()
        };
        for rule in &config.rules {
            let index = rules.rules.len();
            rules.rules.push(Rule {
                id: rule.id.get_ref().clone(),
                title: rule.title.clone(),
                severity: rule.severity,
                condition: rule.when.get_ref().clone(),
                zone: config.rule_zone(rule),
                armed_only: rule.armed_only,
                active: false,
            });
            rules
                .by_point
                .entry(rule.point.get_ref().clone())
                .or_default()
                .push(index);
        }
        rules
    }

    /// The points the rules watch.
    pub fn points(&self) -> Vec<PointId> {
        self.by_point.keys().cloned().collect()
    }

    /// Takes the last good values (from the journal) as the starting point, so a restart
    /// does not raise again what was already raised.
    pub fn prime(&mut self, latest: &[Event]) {
        for event in latest {
            self.evaluate(event);
        }
    }

    /// Evaluates one committed event; returns the incidents to open.
    pub fn evaluate(&mut self, event: &Event) -> Vec<Firing> {
        let EventBody::Observation {
            point,
            value: Some(value),
            quality,
            ..
        } = &event.body
        else {
            return Vec::new();
        };
        if !quality.is_good() {
            return Vec::new();
        }
        let Some(indices) = self.by_point.get(point) else {
            return Vec::new();
        };
        let mut firings = Vec::new();
        for &index in indices {
            let rule = &mut self.rules[index];
            let now = matches(&rule.condition, value);
            let rising = now && !rule.active;
            rule.active = now;
            let armed = rule
                .zone
                .as_ref()
                .is_some_and(|zone| self.armed.get(zone).copied().unwrap_or(false));
            if rising && (!rule.armed_only || armed) {
                firings.push(Firing {
                    rule: rule.id.clone(),
                    title: rule.title.clone(),
                    severity: rule.severity,
                    zone: rule.zone.clone(),
                    evidence: Evidence {
                        seq: event.seq,
                        point: Some(point.clone()),
                        value: Some(value.clone()),
                        at: event.recorded_at,
                    },
                });
            }
        }
        firings
    }
}

/// Whether `value` satisfies `condition`.
fn matches(condition: &Condition, value: &Value) -> bool {
    match condition {
        Condition::Above(limit) => value.as_f64().is_some_and(|v| v > *limit),
        Condition::Below(limit) => value.as_f64().is_some_and(|v| v < *limit),
        Condition::Equals(expected) => match (expected, value) {
            (toml::Value::Boolean(b), _) => value.as_bool() == Some(*b),
            (toml::Value::Integer(i), _) => value.as_f64() == Some(*i as f64),
            (toml::Value::Float(f), _) => value.as_f64() == Some(*f),
            (toml::Value::String(s), Value::Text(t)) => s == t,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_protocol::{DeviceId, Quality};
    use jiff::Timestamp;

    const CONFIG: &str = r#"
[site]
id = "s"
name = "S"
[api]
listen = "127.0.0.1:0"
[[zones]]
id = "lobby"
name = "Lobby"
armed = true
[[zones]]
id = "office"
name = "Office"
[[modbus.devices]]
id = "plc"
address = "127.0.0.1:502"
[[modbus.devices.points]]
id = "door"
table = "discrete_input"
address = 0
zone = "lobby"
[[modbus.devices.points]]
id = "office.door"
table = "discrete_input"
address = 1
zone = "office"
[[modbus.devices.points]]
id = "temp"
table = "input_register"
address = 0
[[rules]]
id = "door-open"
title = "Lobby door opened"
severity = "high"
point = "door"
when = { equals = true }
armed_only = true
[[rules]]
id = "office-door"
title = "Office door opened"
severity = "low"
point = "office.door"
when = { equals = true }
armed_only = true
[[rules]]
id = "hot"
title = "Too hot"
severity = "medium"
point = "temp"
when = { above = 30.0 }
"#;

    fn rules() -> Rules {
        let config = Config::parse(CONFIG).unwrap_or_else(|p| panic!("{p:?}"));
        Rules::from_config(&config)
    }

    fn observe(seq: u64, point: &str, value: Value, quality: Quality) -> Event {
        Event {
            seq,
            recorded_at: Timestamp::UNIX_EPOCH,
            body: EventBody::Observation {
                device: DeviceId::new("plc").unwrap_or_else(|e| panic!("{e}")),
                point: PointId::new(point).unwrap_or_else(|e| panic!("{e}")),
                zone: None,
                value: Some(value),
                quality,
                observed_at: Timestamp::UNIX_EPOCH,
            },
        }
    }

    fn fired(rules: &mut Rules, script: &[(&str, Value)]) -> Vec<String> {
        script
            .iter()
            .enumerate()
            .flat_map(|(i, (point, value))| {
                rules.evaluate(&observe(i as u64 + 1, point, value.clone(), Quality::Good))
            })
            .map(|f| format!("{}@{}", f.rule, f.evidence.seq))
            .collect()
    }

    #[test]
    fn fires_once_per_rising_edge_in_an_armed_zone() {
        let mut rules = rules();
        let script = [
            ("door", Value::Bool(false)),
            ("door", Value::Bool(true)),
            ("door", Value::Bool(true)),
            ("door", Value::Bool(false)),
            ("door", Value::Bool(true)),
        ];
        assert_eq!(fired(&mut rules, &script), ["door-open@2", "door-open@5"]);
    }

    #[test]
    fn a_disarmed_zone_does_not_fire() {
        let mut rules = rules();
        let script = [("office.door", Value::Bool(true))];
        assert!(fired(&mut rules, &script).is_empty());
    }

    #[test]
    fn thresholds_fire_when_crossed() {
        let mut rules = rules();
        let script = [
            ("temp", Value::Int(25)),
            ("temp", Value::Int(31)),
            ("temp", Value::Float(30.5)),
            ("temp", Value::Int(30)),
            ("temp", Value::Int(35)),
        ];
        assert_eq!(fired(&mut rules, &script), ["hot@2", "hot@5"]);
    }

    #[test]
    fn bad_quality_is_neither_alarm_nor_all_clear() {
        let mut rules = rules();
        assert_eq!(fired(&mut rules, &[("door", Value::Bool(true))]).len(), 1);
        let bad = observe(9, "door", Value::Bool(false), Quality::bad("exception"));
        assert!(rules.evaluate(&bad).is_empty());
        // Still active: the same state after a bad read raises nothing new.
        assert!(fired(&mut rules, &[("door", Value::Bool(true))]).is_empty());
    }

    #[test]
    fn priming_with_the_last_known_state_prevents_a_repeat_after_restart() {
        let mut rules = rules();
        rules.prime(&[observe(1, "door", Value::Bool(true), Quality::Good)]);
        assert!(fired(&mut rules, &[("door", Value::Bool(true))]).is_empty());
    }
}

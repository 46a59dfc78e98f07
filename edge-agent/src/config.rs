//! The agent's one configuration file (TOML).
//!
//! Loading happens in two passes, and every error names the file, line and column:
//! 1. *Syntax and shape*: `toml` + serde with `deny_unknown_fields` everywhere; a misspelt key
//!    or a wrong type stops here with the position of the offending item.
//! 2. *Meaning*: ids unique, references to zones and points resolved, values in range. This pass
//!    collects **every** problem before failing, so an installer fixes a file in one round.
//!
//! The schema lives beside its owner: adapters keep theirs in `adapters/<protocol>/config.rs`,
//! this module assembles them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use gatehouse_protocol::{DeviceId, PointId, RuleId, Severity, SiteId, ZoneId};
use serde::Deserialize;
use toml::Spanned;

use crate::adapters::modbus::config::ModbusConfig;
use crate::api::auth::Role;
use crate::uplink::UplinkConfig;

/// The whole configuration of one appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: SiteConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    pub api: ApiConfig,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub modbus: ModbusConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Present when the appliance reports to a relay.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: SiteId,
    pub name: String,
}

/// How the journal stores events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The SQLite file; relative paths are resolved against the config file's folder.
    #[serde(default = "JournalConfig::default_path")]
    pub path: PathBuf,
    /// `full` survives power loss; `normal` survives a crash of the agent but may lose the
    /// last transactions on power loss. Both are safe against kill -9.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Most events committed in one transaction.
    #[serde(default = "JournalConfig::default_batch_max_events")]
    pub batch_max_events: usize,
    /// Events older than this are deleted (0 keeps them forever).
    #[serde(default = "JournalConfig::default_retention_max_age_days")]
    pub retention_max_age_days: u32,
    /// The journal is trimmed, oldest first, to stay under this size (0 for no limit).
    #[serde(default = "JournalConfig::default_retention_max_megabytes")]
    pub retention_max_megabytes: u64,
}

impl JournalConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("journal.db")
    }
    fn default_batch_max_events() -> usize {
        1024
    }
    fn default_retention_max_age_days() -> u32 {
        90
    }
    fn default_retention_max_megabytes() -> u64 {
        1024
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: Self::default_path(),
            synchronous: Synchronous::default(),
            batch_max_events: Self::default_batch_max_events(),
            retention_max_age_days: Self::default_retention_max_age_days(),
            retention_max_megabytes: Self::default_retention_max_megabytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

/// The local REST API and WebSocket stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// How long a command waits for its device to confirm (1,000 to 120,000).
    #[serde(default = "ApiConfig::default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

impl ApiConfig {
    fn default_command_timeout_ms() -> u64 {
        10_000
    }
}

/// An API user: a bearer token (stored as its SHA-256) with a role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: Spanned<String>,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token; `gatehouse-edge token` makes a pair.
    pub token_sha256: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub id: Spanned<ZoneId>,
    pub name: String,
    /// Whether the zone starts armed.
    #[serde(default)]
    pub armed: bool,
}

/// A minimal incident rule: a condition on one point, optionally only while its zone is armed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub id: Spanned<RuleId>,
    pub title: String,
    pub severity: Severity,
    pub point: Spanned<PointId>,
    pub when: Spanned<Condition>,
    /// The zone whose arming matters; defaults to the point's zone.
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    /// Fire only while the zone is armed.
    #[serde(default)]
    pub armed_only: bool,
}

/// When a rule's point is in alarm. The rule fires when the condition becomes true.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Condition {
    /// The value equals this state (`true`, `3`, `"open"`).
    Equals(toml::Value),
    /// The value is strictly above this number.
    Above(f64),
    /// The value is strictly below this number.
    Below(f64),
}

/// Whether a condition can ever hold for a point of `kind`; a rule that cannot fire is a
/// silent hole in a site's security, so it is refused.
fn check_condition(condition: &Condition, kind: ValueKind) -> Result<(), String> {
    let point_is = kind.describe();
    match condition {
        Condition::Above(limit) | Condition::Below(limit) => {
            if !limit.is_finite() {
                Err(format!("the threshold {limit} is not a finite number"))
            } else if kind == ValueKind::Bool {
                Err(format!(
                    "the point is {point_is}; use `equals = true` or `equals = false`"
                ))
            } else {
                Ok(())
            }
        }
        Condition::Equals(value) => match (value, kind) {
            (toml::Value::Boolean(_), ValueKind::Bool)
            | (toml::Value::Integer(_), ValueKind::Integer | ValueKind::Number) => Ok(()),
            (toml::Value::Float(x), ValueKind::Number) if x.is_finite() => Ok(()),
            (toml::Value::Float(x), ValueKind::Integer) if x.fract() == 0.0 => Ok(()),
            (other, _) => Err(format!(
                "`equals = {other}` can never match: the point is {point_is}"
            )),
        },
    }
}

/// Every problem found in a config file, each with its position.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when the position is known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "{} has {count} problem{}:",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            match problem.position {
                Some((line, column)) => writeln!(
                    f,
                    "  {}:{line}:{column}: {}",
                    self.file.display(),
                    problem.message
                )?,
                None => writeln!(f, "  {}: {}", self.file.display(), problem.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Turns a byte span of the source into a 1-based (line, column).
fn line_column(source: &str, span: &Range<usize>) -> (usize, usize) {
    let start = span.start.min(source.len());
    let before = &source[..start];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(start, |newline| start - newline - 1)
        + 1;
    (line, column)
}

/// Collects problems during the meaning pass.
pub(crate) struct Problems<'a> {
    source: &'a str,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    fn new(source: &'a str) -> Self {
        Problems {
            source,
            found: Vec::new(),
        }
    }

    /// Records a problem at `span` of the source.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.found.push(Problem {
            position: Some(line_column(self.source, &span)),
            message: message.into(),
        });
    }

    /// Records a problem without a position (a missing section).
    pub(crate) fn global(&mut self, message: impl Into<String>) {
        self.found.push(Problem {
            position: None,
            message: message.into(),
        });
    }
}

/// Where each point lives, built while validating.
#[derive(Debug, Clone)]
pub struct PointInfo {
    pub device: DeviceId,
    pub zone: Option<ZoneId>,
    pub writable: bool,
    pub kind: ValueKind,
}

/// What kind of value a point yields, for checking rules against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    Integer,
    Number,
}

impl ValueKind {
    fn describe(self) -> &'static str {
        match self {
            ValueKind::Bool => "a boolean",
            ValueKind::Integer => "an integer",
            ValueKind::Number => "a number",
        }
    }
}

impl Config {
    /// Reads and validates `path`. Relative paths inside are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                position: None,
                message: format!("cannot read the file: {error}"),
            }],
        })?;
        let mut config = Config::parse(&source).map_err(|problems| ConfigError {
            file: path.to_owned(),
            problems,
        })?;
        if config.journal.path.is_relative()
            && let Some(folder) = path.parent()
        {
            config.journal.path = folder.join(&config.journal.path);
        }
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(source: &str) -> Result<Config, Vec<Problem>> {
        let config: Config = toml::from_str(source).map_err(|error| {
            vec![Problem {
                position: error.span().map(|span| line_column(source, &span)),
                message: error.message().trim().to_owned(),
            }]
        })?;
        let mut problems = Problems::new(source);
        config.validate(&mut problems);
        if problems.found.is_empty() {
            Ok(config)
        } else {
            Err(problems.found)
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        let zones = self.validate_zones(problems);
        let points = self
            .modbus
            .validate(&zones, self.api.command_timeout_ms, problems);
        self.validate_users(problems);
        self.validate_rules(&zones, &points, problems);
        let journal = &self.journal;
        if !(1..=100_000).contains(&journal.batch_max_events) {
            problems.global("journal.batch_max_events must be between 1 and 100000");
        }
        if journal.retention_max_age_days > 36_500 {
            problems.global(
                "journal.retention_max_age_days must be at most 36500 (0 keeps events forever)",
            );
        }
        if journal.retention_max_megabytes > 1_048_576 {
            problems
                .global("journal.retention_max_megabytes must be at most 1048576 (0 for no limit)");
        }
        if let Some(uplink) = &self.uplink {
            uplink.validate(problems);
        }
        if !(1_000..=120_000).contains(&self.api.command_timeout_ms) {
            problems.global("api.command_timeout_ms must be between 1000 and 120000");
        }
    }

    fn validate_zones(&self, problems: &mut Problems<'_>) -> HashSet<ZoneId> {
        let mut zones = HashSet::new();
        for zone in &self.zones {
            if !zones.insert(zone.id.get_ref().clone()) {
                problems.at(
                    zone.id.span(),
                    format!("zone `{}` is defined twice", zone.id.get_ref()),
                );
            }
        }
        zones
    }

    fn validate_users(&self, problems: &mut Problems<'_>) {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for user in &self.api.users {
            if !names.insert(user.name.get_ref().as_str()) {
                problems.at(
                    user.name.span(),
                    format!("user `{}` is defined twice", user.name.get_ref()),
                );
            }
            let hash = user.token_sha256.get_ref();
            let valid = hash.len() == 64
                && hash
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            if !valid {
                problems.at(
                    user.token_sha256.span(),
                    "token_sha256 must be 64 lowercase hex characters (run `gatehouse-edge token` to make one)",
                );
            } else if !hashes.insert(hash.as_str()) {
                problems.at(
                    user.token_sha256.span(),
                    "two users share this token hash; give each user its own token",
                );
            }
        }
    }

    fn validate_rules(
        &self,
        zones: &HashSet<ZoneId>,
        points: &HashMap<PointId, PointInfo>,
        problems: &mut Problems<'_>,
    ) {
        let mut ids = HashSet::new();
        for rule in &self.rules {
            if !ids.insert(rule.id.get_ref().clone()) {
                problems.at(
                    rule.id.span(),
                    format!("rule `{}` is defined twice", rule.id.get_ref()),
                );
            }
            let point = points.get(rule.point.get_ref());
            if point.is_none() {
                problems.at(
                    rule.point.span(),
                    format!(
                        "rule `{}` watches point `{}`, which no device defines",
                        rule.id.get_ref(),
                        rule.point.get_ref()
                    ),
                );
            }
            if let Some(point) = point
                && let Err(message) = check_condition(rule.when.get_ref(), point.kind)
            {
                problems.at(
                    rule.when.span(),
                    format!("rule `{}`: {message}", rule.id.get_ref()),
                );
            }
            if let Some(zone) = &rule.zone
                && !zones.contains(zone.get_ref())
            {
                problems.at(
                    zone.span(),
                    format!("zone `{}` is not defined in [[zones]]", zone.get_ref()),
                );
            }
            let has_zone = rule.zone.is_some() || point.is_some_and(|p| p.zone.is_some());
            if rule.armed_only && point.is_some() && !has_zone {
                problems.at(
                    rule.id.span(),
                    format!(
                        "rule `{}` is armed_only but neither the rule nor point `{}` names a zone",
                        rule.id.get_ref(),
                        rule.point.get_ref()
                    ),
                );
            }
        }
    }

    /// Every point with its device and zone, keyed by point id.
    pub fn points(&self) -> HashMap<PointId, PointInfo> {
        self.modbus.point_infos()
    }

    /// The zone a rule watches: its own, else its point's.
    pub fn rule_zone(&self, rule: &RuleConfig) -> Option<ZoneId> {
        rule.zone.as_ref().map(|z| z.get_ref().clone()).or_else(|| {
            self.points()
                .get(rule.point.get_ref())
                .and_then(|p| p.zone.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
[site]
id = "test-site"
name = "Test"

[api]
listen = "127.0.0.1:0"
"#;

    /// The 1-based line of the first line of `source` containing `needle`.
    fn line_of(source: &str, needle: &str) -> usize {
        source
            .lines()
            .position(|line| line.contains(needle))
            .map_or(0, |index| index + 1)
    }

    fn problems(source: &str) -> Vec<Problem> {
        match Config::parse(source) {
            Ok(_) => panic!("expected the config to be rejected"),
            Err(problems) => problems,
        }
    }

    #[test]
    fn the_minimal_config_parses_with_defaults() {
        let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(config.journal.synchronous, Synchronous::Full);
        assert_eq!(config.journal.batch_max_events, 1024);
        assert!(config.modbus.devices.is_empty());
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_expected_keys() {
        let source = format!("{MINIMAL}\n[journal]\npaht = \"x.db\"\n");
        let found = problems(&source);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].position, Some((line_of(&source, "paht"), 1)));
        assert!(
            found[0].message.contains("unknown field `paht`"),
            "{found:?}"
        );
        assert!(found[0].message.contains("path"), "{found:?}");
    }

    #[test]
    fn a_wrong_type_names_its_line() {
        let source = MINIMAL.replace("\"127.0.0.1:0\"", "8080");
        let found = problems(&source);
        assert_eq!(
            found[0].position.map(|p| p.0),
            Some(line_of(&source, "listen")),
            "{found:?}"
        );
    }

    #[test]
    fn every_meaning_problem_is_reported_at_once() {
        let source = format!(
            "{MINIMAL}
[[zones]]
id = \"lobby\"
name = \"Lobby\"

[[zones]]
id = \"lobby\"
name = \"Lobby again\"

[[api.users]]
name = \"guard\"
role = \"guard\"
token_sha256 = \"not-a-hash\"

[[rules]]
id = \"r1\"
title = \"x\"
severity = \"high\"
point = \"no.such.point\"
when = {{ equals = true }}
"
        );
        let found = problems(&source);
        let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(found.len(), 3, "{messages:?}");
        assert!(messages[0].contains("zone `lobby` is defined twice"));
        let second_lobby = line_of(&source, "Lobby again") - 1;
        assert_eq!(found[0].position, Some((second_lobby, 6)));
        assert!(messages[1].contains("token_sha256 must be 64"));
        assert!(messages[2].contains("no.such.point"));
        assert_eq!(
            found[2].position.map(|p| p.0),
            Some(line_of(&source, "no.such.point"))
        );
    }

    #[test]
    fn rules_that_could_never_fire_are_refused() {
        let device = r#"
[[modbus.devices]]
id = "plc"
address = "127.0.0.1:502"
[[modbus.devices.points]]
id = "door"
table = "discrete_input"
address = 0
[[modbus.devices.points]]
id = "temp"
table = "holding_register"
address = 1
type = "f32"
[[modbus.devices.points]]
id = "count"
table = "input_register"
address = 3
"#;
        let rule = |point: &str, when: &str| {
            format!(
                "[[rules]]\nid = \"r\"\ntitle = \"R\"\nseverity = \"low\"\npoint = \"{point}\"\nwhen = {when}\n"
            )
        };
        let refused = [
            ("door", "{ above = 1.0 }", "use `equals = true`"),
            ("door", "{ equals = \"open\" }", "can never match"),
            ("temp", "{ equals = true }", "can never match"),
            ("temp", "{ above = nan }", "not a finite number"),
            ("count", "{ equals = 2.5 }", "can never match"),
            ("count", "{ equals = [1] }", "can never match"),
        ];
        for (point, when, expected) in refused {
            let source = format!("{MINIMAL}{device}{}", rule(point, when));
            let found = problems(&source);
            assert_eq!(found.len(), 1, "{point} {when}: {found:?}");
            assert!(
                found[0].message.contains(expected),
                "{point} {when}: {found:?}"
            );
            assert_eq!(
                found[0].position.map(|p| p.0),
                Some(line_of(&source, "when ="))
            );
        }
        let accepted = [
            ("door", "{ equals = false }"),
            ("temp", "{ below = -5 }"),
            ("temp", "{ equals = 21 }"),
            ("count", "{ equals = 3 }"),
            ("count", "{ above = 2.5 }"),
        ];
        for (point, when) in accepted {
            let source = format!("{MINIMAL}{device}{}", rule(point, when));
            assert!(Config::parse(&source).is_ok(), "{point} {when}");
        }
    }

    #[test]
    fn values_that_would_break_at_runtime_are_refused() {
        let cases = [
            ("[journal]\nbatch_max_events = 0\n", "batch_max_events"),
            (
                "[journal]\nbatch_max_events = 1000000\n",
                "batch_max_events",
            ),
            (
                "[journal]\nretention_max_age_days = 100000000\n",
                "retention_max_age_days",
            ),
            (
                "[journal]\nretention_max_megabytes = 99999999999\n",
                "retention_max_megabytes",
            ),
        ];
        for (section, expected) in cases {
            let found = problems(&format!("{MINIMAL}{section}"));
            assert!(
                found.iter().any(|p| p.message.contains(expected)),
                "{section}: {found:?}"
            );
        }
        let device = |settings: &str| {
            format!(
                "{MINIMAL}[[modbus.devices]]\nid = \"d\"\naddress = \"127.0.0.1:502\"\n{settings}\n[[modbus.devices.points]]\nid = \"p\"\ntable = \"coil\"\naddress = 0\n"
            )
        };
        let devices = [
            ("unit_id = 0", "broadcast"),
            ("timeout_ms = 10000", "below api.command_timeout_ms"),
            ("poll_interval_ms = 5", "poll_interval_ms"),
            ("reconnect_initial_ms = 1", "reconnect_initial_ms"),
        ];
        for (settings, expected) in devices {
            let found = problems(&device(settings));
            assert!(
                found.iter().any(|p| p.message.contains(expected)),
                "{settings}: {found:?}"
            );
        }
        let port_zero = device("").replace("127.0.0.1:502", "127.0.0.1:0");
        assert!(problems(&port_zero)[0].message.contains("port 0"));
    }

    #[test]
    fn the_error_display_lists_file_line_and_column() {
        let error = ConfigError {
            file: PathBuf::from("site.toml"),
            problems: vec![Problem {
                position: Some((3, 5)),
                message: "bad".into(),
            }],
        };
        assert_eq!(
            error.to_string(),
            "site.toml has 1 problem:\n  site.toml:3:5: bad\n"
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.modbus.devices.is_empty());
        assert!(!config.rules.is_empty());
        assert!(!config.api.users.is_empty());
        assert!(config.journal.path.is_absolute());
    }
}

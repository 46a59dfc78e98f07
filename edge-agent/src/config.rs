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

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use gatehouse_protocol::{DeviceId, PointId, SiteId, Value, ZoneId};
use gatehouse_rules::config::{RuleConfig, ScheduleConfig, ZoneConfig};
use gatehouse_rules::expr::Type;
use gatehouse_rules::{Catalog, Engine, Site};
use jiff::tz::TimeZone;
use serde::Deserialize;
use toml::Spanned;

use crate::adapters::bacnet::config::BacnetConfig;
use crate::adapters::modbus::config::ModbusConfig;
use crate::adapters::zigbee::config::ZigbeeConfig;
use crate::api::auth::Role;
use crate::uplink::UplinkConfig;
use crate::video::config::VideoConfig;

/// The whole configuration of one appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: SiteConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    pub api: ApiConfig,
    /// Zones, schedules and rules: see docs/rules.md.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    #[serde(default)]
    pub modbus: ModbusConfig,
    /// Zigbee devices through zigbee2mqtt: see docs/zigbee.md.
    #[serde(default)]
    pub zigbee: ZigbeeConfig,
    /// BACnet/IP devices: see docs/bacnet.md.
    #[serde(default)]
    pub bacnet: BacnetConfig,
    /// Cameras, clips and live view: see docs/video.md.
    #[serde(default)]
    pub video: VideoConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Present when the appliance reports to a relay.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    /// The text the config was parsed from: the rules' spans point into it.
    #[serde(skip)]
    source: String,
    /// The file it was loaded from, if any.
    #[serde(skip)]
    file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: SiteId,
    pub name: String,
    /// The IANA time zone of the site (`Europe/Berlin`), in which schedules run; UTC when
    /// absent.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
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

/// The parts of the config a running agent takes over without a restart.
const RELOADABLE: [&str; 4] = ["zones", "schedules", "rules", "site.timezone"];

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

/// Checks that `zone` names a zone of [[zones]].
pub(crate) fn check_zone(
    zone: Option<&Spanned<ZoneId>>,
    zones: &HashSet<ZoneId>,
    problems: &mut Problems,
) {
    if let Some(zone) = zone
        && !zones.contains(zone.get_ref())
    {
        problems.at(
            zone.span(),
            format!("zone `{}` is not defined in [[zones]]", zone.get_ref()),
        );
    }
}

/// A point's configured egress lock value (`egress_lock_value`) as a value of its type.
pub(crate) fn egress_lock(
    value_type: Type,
    configured: Option<&Spanned<toml::Value>>,
) -> Option<Result<Value, String>> {
    let configured = configured?.get_ref();
    // The interlock releases a lock by writing the other state: a lock has two.
    if !matches!(value_type, Type::Bool | Type::Int) {
        return Some(Err(
            "an egress lock must be a true/false or unscaled integer point (locked and released)"
                .into(),
        ));
    }
    Some(value_type.value_of(configured))
}

/// Records a device's id, which must be new to the site, and checks that it has points.
pub(crate) fn check_device_id(
    id: &Spanned<DeviceId>,
    point_count: usize,
    devices: &mut HashSet<DeviceId>,
    problems: &mut Problems,
) {
    let device = id.get_ref();
    if !devices.insert(device.clone()) {
        problems.at(id.span(), format!("device `{device}` is defined twice"));
    }
    if point_count == 0 {
        problems.at(id.span(), format!("device `{device}` has no points"));
    }
}

/// Records a point's id, which must be new to the site.
pub(crate) fn check_point_id(
    id: &Spanned<PointId>,
    points: &mut HashSet<PointId>,
    problems: &mut Problems,
) {
    if !points.insert(id.get_ref().clone()) {
        problems.at(
            id.span(),
            format!(
                "point `{}` is defined twice; point ids are unique across the site",
                id.get_ref()
            ),
        );
    }
}

/// The password in a `password_file`: the file's text without its final line break.
pub(crate) fn read_password_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Whether reconnect backoff settings are sane: 50 ≤ initial ≤ max ≤ 3600000 ms.
pub(crate) fn check_reconnect(initial_ms: u64, max_ms: u64) -> bool {
    (50..=3_600_000).contains(&initial_ms) && initial_ms <= max_ms && max_ms <= 3_600_000
}

/// Checks a point's deadband: a number, 0 or more.
pub(crate) fn check_deadband(
    id: &PointId,
    deadband: f64,
    span: Range<usize>,
    problems: &mut Problems,
) {
    if !deadband.is_finite() || deadband < 0.0 {
        problems.at(span, format!("point `{id}`: deadband must be 0 or more"));
    }
}

/// Checks a point's egress lock: writable, and a value of the point's type (`lock`, from
/// [`egress_lock`]).
pub(crate) fn check_egress_lock(
    id: &PointId,
    writable: bool,
    configured: Option<&Spanned<toml::Value>>,
    lock: Option<Result<Value, String>>,
    problems: &mut Problems,
) {
    let Some(span) = configured.map(Spanned::span) else {
        return;
    };
    if !writable {
        problems.at(
            span.clone(),
            format!("point `{id}`: an egress lock must be writable, so the fire interlock can release it"),
        );
    }
    if let Some(Err(message)) = lock {
        problems.at(span, format!("point `{id}`: {message}"));
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
        if let Some(folder) = path.parent() {
            if config.journal.path.is_relative() {
                config.journal.path = folder.join(&config.journal.path);
            }
            if config.video.storage.is_relative() {
                config.video.storage = folder.join(&config.video.storage);
            }
        }
        config.file = Some(path.to_owned());
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(source: &str) -> Result<Config, Vec<Problem>> {
        let mut config: Config = toml::from_str(source).map_err(|error| {
            vec![Problem {
                position: error.span().map(|span| line_column(source, &span)),
                message: error.message().trim().to_owned(),
            }]
        })?;
        config.source = source.to_owned();
        let mut problems = Problems::new(source);
        config.validate(&mut problems);
        // In file order, so an installer fixes them top to bottom; those without a line last.
        problems
            .found
            .sort_by_key(|problem| problem.position.unwrap_or((usize::MAX, 0)));
        if problems.found.is_empty() {
            Ok(config)
        } else {
            Err(problems.found)
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        let zones: HashSet<ZoneId> = self.zones.iter().map(|z| z.id.get_ref().clone()).collect();
        let (mut devices, mut points) = (HashSet::new(), HashSet::new());
        self.modbus.validate(
            &zones,
            self.api.command_timeout_ms,
            &mut devices,
            &mut points,
            problems,
        );
        self.zigbee
            .validate(&zones, &mut devices, &mut points, problems);
        self.bacnet
            .validate(&zones, &mut devices, &mut points, problems);
        self.video
            .validate(&zones, &mut devices, &mut points, problems);
        self.validate_users(problems);
        if let Err(found) = self.engine() {
            for problem in found {
                problems.at(problem.span, problem.message);
            }
        }
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

    /// The file the config was loaded from (`None` when parsed from text).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The site's time zone; UTC when the config names none.
    pub fn time_zone(&self) -> Result<TimeZone, gatehouse_rules::Problem> {
        let Some(name) = &self.site.timezone else {
            return Ok(TimeZone::UTC);
        };
        TimeZone::get(name.get_ref()).map_err(|_| gatehouse_rules::Problem {
            span: name.span(),
            message: format!(
                "site.timezone: `{}` is not a known time zone: use an IANA name such as `Europe/Berlin` or `UTC`",
                name.get_ref()
            ),
        })
    }

    /// What the rules can name: the adapters' points and devices.
    pub fn rule_catalog(&self) -> Catalog {
        Catalog {
            points: self
                .modbus
                .rule_points()
                .into_iter()
                .chain(self.zigbee.rule_points())
                .chain(self.bacnet.rule_points())
                .chain(self.video.rule_points())
                .collect(),
            devices: self
                .modbus
                .devices
                .iter()
                .map(|device| device.id.get_ref().clone())
                .chain(
                    self.zigbee
                        .devices
                        .iter()
                        .map(|device| device.id.get_ref().clone()),
                )
                .chain(
                    self.bacnet
                        .devices
                        .iter()
                        .map(|device| device.id.get_ref().clone()),
                )
                .collect(),
            cameras: self.video.camera_ids().cloned().collect(),
        }
    }

    /// The config's sections as plain TOML (no spans), to compare two versions of the file.
    fn sections(&self) -> toml::Table {
        let mut table: toml::Table = toml::from_str(&self.source).unwrap_or_default();
        // The site's time zone belongs to the rules (schedules run in it).
        let timezone = table
            .get_mut("site")
            .and_then(toml::Value::as_table_mut)
            .and_then(|site| site.remove("timezone"));
        if let Some(timezone) = timezone {
            table.insert("site.timezone".into(), timezone);
        }
        table
    }

    /// Whether the rules' part (zones, schedules, rules, the site's time zone) differs.
    pub fn rules_differ(&self, other: &Config) -> bool {
        let (mine, theirs) = (self.sections(), other.sections());
        RELOADABLE
            .iter()
            .any(|key| mine.get(*key) != theirs.get(*key))
    }

    /// The sections outside the rules' part that differ: they take effect at a restart.
    pub fn restart_needed_for(&self, other: &Config) -> Vec<String> {
        let (mine, theirs) = (self.sections(), other.sections());
        let mut keys: Vec<&String> = mine.keys().chain(theirs.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|key| !RELOADABLE.contains(&key.as_str()) && mine.get(*key) != theirs.get(*key))
            .cloned()
            .collect()
    }

    /// [`Config::engine`] for a config already checked (a problem then means the time zone
    /// database changed since): the problems as one message, each with its line and column.
    pub fn checked_engine(&self) -> Result<Engine, String> {
        self.engine().map_err(|problems| {
            problems
                .into_iter()
                .map(|problem| {
                    let (line, column) = line_column(&self.source, &problem.span);
                    format!("{line}:{column}: {}", problem.message)
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Compiles the zones, schedules and rules; every problem carries its span.
    pub fn engine(&self) -> Result<Engine, Vec<gatehouse_rules::Problem>> {
        let time_zone = self.time_zone().map_err(|problem| vec![problem])?;
        let catalog = self.rule_catalog();
        Engine::compile(&Site {
            zones: &self.zones,
            schedules: &self.schedules,
            rules: &self.rules,
            catalog: &catalog,
            time_zone: &time_zone,
            source: &self.source,
        })
    }
}

/// For the tests of the adapters' sections: a minimal site (zone `lobby`) to append a section
/// to, and what the config then says of it.
#[cfg(test)]
pub(crate) mod section_tests {
    use super::Config;

    pub(crate) const BASE: &str = r#"
[site]
id = "s"
name = "S"
[api]
listen = "127.0.0.1:0"
[[zones]]
id = "lobby"
name = "Lobby"
"#;

    /// Each problem of [`BASE`] followed by `section`, as "line: message".
    pub(crate) fn messages(section: &str) -> Vec<String> {
        match Config::parse(&format!("{BASE}{section}")) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .map(|p| format!("{}: {}", p.position.map_or(0, |p| p.0), p.message))
                .collect(),
        }
    }

    /// Checks that `found` (from [`messages`]) is `expected`: each problem's line and a part
    /// of its message, in order.
    pub(crate) fn assert_problems(found: &[String], expected: &[(usize, &str)]) {
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, (line, text)) in found.iter().zip(expected) {
            assert!(
                found.starts_with(&format!("{line}: ")) && found.contains(text),
                "{found} (expected line {line}: {text})"
            );
        }
    }

    /// The first ```toml block of a docs page.
    pub(crate) fn toml_example(page: &str) -> &str {
        page.split("```toml")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_default()
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
when.event = {{ point = \"no.such.point\" }}
then = [{{ raise = {{ severity = \"high\", title = \"x\" }} }}]
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
    fn rule_mistakes_are_refused_at_their_line() {
        let device = r#"
[[zones]]
id = "lobby"
name = "Lobby"
[[modbus.devices]]
id = "plc"
address = "127.0.0.1:502"
zone = "lobby"
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
id = "siren"
table = "coil"
address = 0
writable = true
"#;
        let rule = |when: &str, then: &str| {
            format!("[[rules]]\nid = \"r\"\nwhen.event = {when}\nthen = [{then}]\n")
        };
        let raise = "{ raise = { severity = \"low\", title = \"R\" } }";
        let refused = [
            (
                "{ point = \"door\", value = \"value > 1\" }",
                raise,
                "when.event",
                "",
            ),
            (
                "{ point = \"temp\", value = \"value == true\" }",
                raise,
                "when.event",
                "",
            ),
            ("{ point = \"nowhere\" }", raise, "when.event", "nowhere"),
            (
                "{ point = \"door\" }",
                "{ command = { point = \"door\", value = true } }",
                "then =",
                "door",
            ),
            (
                "{ point = \"door\" }",
                "{ command = { point = \"siren\", value = 3 } }",
                "then =",
                "siren",
            ),
        ];
        for (when, then, line_with, expected) in refused {
            let source = format!("{MINIMAL}{device}{}", rule(when, then));
            let found = problems(&source);
            assert_eq!(found.len(), 1, "{when} {then}: {found:?}");
            assert!(
                found[0].message.contains(expected),
                "{when} {then}: {found:?}"
            );
            assert_eq!(
                found[0].position.map(|p| p.0),
                Some(line_of(&source, line_with)),
                "{when} {then}: {found:?}"
            );
        }
        let accepted = [
            "{ point = \"door\", value = \"value == false\" }",
            "{ point = \"temp\", value = \"value < -5\" }",
            "{ point = \"temp\", value = \"value > 30 && armed(\\\"lobby\\\")\" }",
        ];
        for when in accepted {
            let source = format!("{MINIMAL}{device}{}", rule(when, raise));
            assert!(
                Config::parse(&source).is_ok(),
                "{when}: {:?}",
                Config::parse(&source).err()
            );
        }
    }

    #[test]
    fn a_wrong_time_zone_or_egress_lock_is_refused_at_its_line() {
        let source = MINIMAL.replace(
            "name = \"Test\"",
            "name = \"Test\"\ntimezone = \"Mars/Olympus\"",
        );
        let found = problems(&source);
        assert!(found[0].message.contains("Mars/Olympus"), "{found:?}");
        assert_eq!(
            found[0].position.map(|p| p.0),
            Some(line_of(&source, "timezone"))
        );

        let lock = |settings: &str| {
            format!(
                "{MINIMAL}[[modbus.devices]]\nid = \"d\"\naddress = \"127.0.0.1:502\"\n\
                 [[modbus.devices.points]]\nid = \"lock\"\ntable = \"coil\"\naddress = 0\n{settings}\n"
            )
        };
        let cases = [
            ("egress_lock_value = true", "must be writable"),
            (
                "writable = true\negress_lock_value = 1",
                "holds true or false",
            ),
        ];
        for (settings, expected) in cases {
            let source = lock(settings);
            let found = problems(&source);
            assert!(
                found.iter().any(|p| p.message.contains(expected)),
                "{settings}: {found:?}"
            );
            assert_eq!(
                found[0].position.map(|p| p.0),
                Some(line_of(&source, "egress_lock_value")),
                "{settings}: {found:?}"
            );
        }
        assert!(Config::parse(&lock("writable = true\negress_lock_value = true")).is_ok());
        let analog = lock("writable = true\negress_lock_value = 1.0").replace(
            "table = \"coil\"",
            "table = \"holding_register\"\ntype = \"f32\"",
        );
        let found = problems(&analog);
        assert!(
            found[0].message.contains("true/false or unscaled integer"),
            "{found:?}"
        );
    }

    #[test]
    fn only_a_change_of_zones_schedules_rules_or_time_zone_reloads() {
        let base = format!("{MINIMAL}[[zones]]\nid = \"lobby\"\nname = \"Lobby\"\n");
        let parse = |source: &str| Config::parse(source).unwrap_or_else(|p| panic!("{p:?}"));
        let running = parse(&base);
        // Moved lines and comments change nothing.
        let moved = parse(&format!("# a comment\n\n{base}"));
        assert!(!moved.rules_differ(&running));
        assert!(moved.restart_needed_for(&running).is_empty());
        let renamed = parse(&base.replace("name = \"Lobby\"", "name = \"Hall\""));
        assert!(renamed.rules_differ(&running));
        assert!(renamed.restart_needed_for(&running).is_empty());
        let zoned = parse(&base.replace(
            "name = \"Test\"",
            "name = \"Test\"\ntimezone = \"Europe/Berlin\"",
        ));
        assert!(zoned.rules_differ(&running));
        assert!(zoned.restart_needed_for(&running).is_empty());
        let listen = parse(&base.replace("127.0.0.1:0", "127.0.0.1:8081"));
        assert!(!listen.rules_differ(&running));
        assert_eq!(listen.restart_needed_for(&running), ["api"]);
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
    fn device_and_point_ids_are_unique_across_modbus_zigbee_and_bacnet() {
        let found = section_tests::messages(
            r#"
[[modbus.devices]]
id = "plc"
address = "127.0.0.1:502"
[[modbus.devices.points]]
id = "door"
table = "coil"
address = 0
[[zigbee.bridges]]
id = "z2m"
broker = "mqtt://127.0.0.1"
[[zigbee.devices]]
id = "plc"
friendly_name = "door"
[[zigbee.devices.points]]
id = "door"
property = "contact"
[[bacnet.devices]]
id = "plc"
device_instance = 1
[[bacnet.devices.points]]
id = "door"
object = "binary-input:1"
"#,
        );
        section_tests::assert_problems(
            &found,
            &[
                (22, "device `plc` is defined twice"),
                (25, "point `door` is defined twice"),
                (28, "device `plc` is defined twice"),
                (31, "point `door` is defined twice"),
            ],
        );
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
        assert!(!config.schedules.is_empty());
        assert_eq!(config.file(), Some(path.as_path()));
        assert!(!config.api.users.is_empty());
        assert!(config.journal.path.is_absolute());
    }

    #[test]
    fn the_shipped_modbus_rtu_example_and_its_documentation_are_valid() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = folder.join("examples/modbus-rtu.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.modbus.buses.len(), 1);
        assert_eq!(config.modbus.devices.len(), 2);
        assert!(config.modbus.devices.iter().all(|d| d.bus.is_some()));
        // The example an installer copies from the RTU page parses as it stands.
        let page = std::fs::read_to_string(folder.join("../docs/modbus-rtu.md"))
            .unwrap_or_else(|e| panic!("{e}"));
        let example = page
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("docs/modbus-rtu.md has no toml example"));
        let config =
            Config::parse(&format!("{MINIMAL}{example}")).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(config.modbus.buses.len(), 1);
        assert_eq!(config.modbus.devices.len(), 2);
    }
}

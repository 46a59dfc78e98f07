//! The relay's one configuration file (TOML); `relay/examples/relay.toml` is a commented
//! example.
//!
//! Loading happens in two passes, and every error names the file, line and column:
//! 1. *Syntax and shape*: `toml` + serde with `deny_unknown_fields` everywhere; a misspelt key
//!    or a wrong type stops here with the position of the offending item.
//! 2. *Meaning* ([`Config::parse`], then the files [`Config::load`] checks): URLs, identities,
//!    host names, ranges, and that every file named exists. This pass collects **every**
//!    problem before failing, so an operator fixes a file in one round.
//!
//! The meaning pass also refuses what would be insecure rather than merely wrong: an API in
//! plain HTTP on a non-loopback address without `behind_tls_proxy`, and a PostgreSQL server
//! on another host reached without a verified TLS connection. Secrets in the configuration
//! (the database password, the share group) never appear in its `Debug`.
//!
//! Relative paths (and a relative SQLite database) are resolved against the folder of the
//! configuration file, so the relay does not depend on the directory it is started from.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use gatehouse_protocol::ids::validate_id;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use toml::Spanned;

use crate::store::Backend;

/// The prefix of every relay replica's MQTT client id. Appliance ids never contain `:`, and
/// on their listener the broker forces an appliance's client id to its certificate's CN, so
/// a relay's client id can never be taken by an appliance, nor the other way round.
pub const RELAY_CLIENT_ID_PREFIX: &str = "relay:";

/// The shortest share group name accepted: long enough that an appliance cannot guess it.
pub const MIN_SHARE_GROUP_CHARS: usize = 16;

/// The whole configuration of one relay replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub broker: BrokerConfig,
    /// Present when this relay answers claims (it holds the fleet CA's key).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// The database.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host/db?sslmode=verify-full` (a server on another host must
    /// be reached with `sslmode=verify-full` or `verify-ca`; other modes are for a loopback
    /// address or a Unix socket), `sqlite://relay.db?mode=rwc` (the default; a relative path
    /// is resolved against the config file's folder) or `sqlite::memory:`.
    #[serde(default = "StoreConfig::default_url")]
    pub url: Spanned<String>,
}

impl StoreConfig {
    fn default_url() -> Spanned<String> {
        Spanned::new(0..0, "sqlite://relay.db?mode=rwc".to_owned())
    }

    /// The URL with any password replaced by `***`, for logs and `Debug`.
    pub fn redacted_url(&self) -> String {
        redact_password(self.url.get_ref())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: Self::default_url(),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold the database password.
        f.debug_struct("StoreConfig")
            .field("url", &self.redacted_url())
            .finish()
    }
}

/// The operators' REST API and WebSocket, and the appliances' claim endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: Spanned<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS; with `tls_key`. Without both the API is plain HTTP,
    /// which is accepted only on a loopback address or with `behind_tls_proxy`.
    #[serde(default)]
    pub tls_cert: Option<Spanned<PathBuf>>,
    /// The private key (PEM) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<Spanned<PathBuf>>,
    /// A TLS-terminating proxy forwards every request to the API (so plain HTTP on any address
    /// is accepted). The proxy must set `X-Forwarded-For`: the last address in it is taken as
    /// the client's, for the limit on refused claims.
    #[serde(default)]
    pub behind_tls_proxy: bool,
    /// SHA-256 (hex) of the token that may read `/metrics`. Without it `/metrics` is refused.
    /// No tenant's API token can read it: metrics are the platform's, not a tenant's.
    #[serde(default)]
    pub metrics_token_sha256: Option<Spanned<String>>,
}

impl ApiConfig {
    /// The certificate and key files when HTTPS is configured.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.get_ref(), key.get_ref())),
            _ => None,
        }
    }

    /// `metrics_token_sha256` in lowercase, as the API compares it.
    pub fn metrics_token_sha256(&self) -> Option<String> {
        self.metrics_token_sha256
            .as_ref()
            .map(|hash| hash.get_ref().to_ascii_lowercase())
    }
}

/// How this replica reaches the broker: the relay listener, with a certificate of the relay
/// CA (see `relay/deploy/README.md`). Its `Debug` leaves the share group out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub host: Spanned<String>,
    /// The broker's relay listener.
    #[serde(default = "BrokerConfig::default_port")]
    pub port: Spanned<u16>,
    /// The CA that signed the broker's server certificate (the fleet CA).
    pub ca_file: Spanned<PathBuf>,
    /// This relay's client certificate, from the relay CA.
    pub cert_file: Spanned<PathBuf>,
    pub key_file: Spanned<PathBuf>,
    /// `relay:` and a name unique to this replica (two replicas with one id would keep
    /// disconnecting each other).
    pub client_id: Spanned<String>,
    /// The MQTT v5 share group of the replicas. Anyone who knows it can join it and make the
    /// relay miss messages, so it is a secret; by default it is derived from `key_file`, which
    /// only the relay holds, so replicas sharing the relay certificate agree on it.
    #[serde(default)]
    pub share_group: Option<Spanned<String>>,
}

impl BrokerConfig {
    fn default_port() -> Spanned<u16> {
        Spanned::new(0..0, 8884)
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The share group is a secret (see the field).
        let share_group = self.share_group.as_ref().map(|_| "***");
        f.debug_struct("BrokerConfig")
            .field("host", self.host.get_ref())
            .field("port", self.port.get_ref())
            .field("ca_file", self.ca_file.get_ref())
            .field("cert_file", self.cert_file.get_ref())
            .field("key_file", self.key_file.get_ref())
            .field("client_id", self.client_id.get_ref())
            .field("share_group", &share_group)
            .finish()
    }
}

/// The fleet CA, to sign appliances' certificates when they are claimed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub ca_cert: Spanned<PathBuf>,
    pub ca_key: Spanned<PathBuf>,
    /// What claimed appliances are told to connect to: a name in the broker's certificate.
    pub broker_host: Spanned<String>,
    /// The broker's appliance listener.
    #[serde(default = "FleetConfig::default_broker_port")]
    pub broker_port: Spanned<u16>,
    /// How long an appliance's certificate is valid (1 to 3650 days).
    #[serde(default = "FleetConfig::default_cert_validity_days")]
    pub cert_validity_days: Spanned<u32>,
}

impl FleetConfig {
    fn default_broker_port() -> Spanned<u16> {
        Spanned::new(0..0, 8883)
    }
    fn default_cert_validity_days() -> Spanned<u32> {
        Spanned::new(0..0, 365)
    }

    pub fn cert_validity(&self) -> Duration {
        Duration::from_secs(u64::from(*self.cert_validity_days.get_ref()) * 24 * 3600)
    }
}

/// The relay's own alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// An appliance silent or offline for this long gets an alert. Appliances report every 30
    /// seconds, so at least 35.
    #[serde(default = "AlertsConfig::default_offline_after_s")]
    pub offline_after_s: Spanned<u64>,
}

impl AlertsConfig {
    const MIN_OFFLINE_AFTER_S: u64 = 35;
    const MAX_OFFLINE_AFTER_S: u64 = 7 * 24 * 3600;

    fn default_offline_after_s() -> Spanned<u64> {
        Spanned::new(0..0, 60)
    }

    pub fn offline_after(&self) -> Duration {
        Duration::from_secs(*self.offline_after_s.get_ref())
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            offline_after_s: Self::default_offline_after_s(),
        }
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
        let plural = if count == 1 { "" } else { "s" };
        writeln!(f, "{} has {count} problem{plural}:", self.file.display())?;
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

/// Collects problems during the meaning pass.
struct Problems<'a> {
    source: &'a str,
    found: Vec<Problem>,
}

impl Problems<'_> {
    /// Records a problem at `span` of the source; an empty span (a default value) has no
    /// position.
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let position = (!span.is_empty()).then(|| line_column(self.source, &span));
        self.found.push(Problem {
            position,
            message: message.into(),
        });
    }
}

/// Turns a byte span of the source into a 1-based (line, column).
fn line_column(source: &str, span: &Range<usize>) -> (usize, usize) {
    let start = span.start.min(source.len());
    let before = source.get(..start).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(start, |newline| start - newline - 1)
        + 1;
    (line, column)
}

impl Config {
    /// Reads and validates `path`: relative paths inside are resolved against its folder, and
    /// every file it names must exist.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: path.to_owned(),
            problems,
        };
        let source = std::fs::read_to_string(path).map_err(|error| {
            fail(vec![Problem {
                position: None,
                message: format!("cannot read the file: {error}"),
            }])
        })?;
        let mut config = Config::parse(&source).map_err(fail)?;
        let folder = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(folder);
        let mut problems = Problems {
            source: &source,
            found: Vec::new(),
        };
        for file in config.files() {
            if let Err(error) = std::fs::File::open(file.get_ref()) {
                problems.at(
                    file.span(),
                    format!("cannot read `{}`: {error}", file.get_ref().display()),
                );
            }
        }
        if problems.found.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems.found))
        }
    }

    /// Parses and validates config text (files are not looked at).
    pub fn parse(source: &str) -> Result<Config, Vec<Problem>> {
        let config: Config = toml::from_str(source).map_err(|error| {
            vec![Problem {
                position: error.span().map(|span| line_column(source, &span)),
                message: error.message().trim().to_owned(),
            }]
        })?;
        let mut problems = Problems {
            source,
            found: Vec::new(),
        };
        config.validate(&mut problems);
        if problems.found.is_empty() {
            Ok(config)
        } else {
            Err(problems.found)
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        let url = &self.store.url;
        match Backend::of_url(url.get_ref()) {
            Err(error) => problems.at(url.span(), format!("store.url: {error}")),
            Ok(Backend::Postgres) => {
                if let Err(problem) = check_postgres_url(url.get_ref()) {
                    problems.at(url.span(), format!("store.url: {problem}"));
                }
            }
            Ok(Backend::Sqlite) => {}
        }

        let api = &self.api;
        match (&api.tls_cert, &api.tls_key) {
            (Some(cert), None) => problems.at(cert.span(), "api.tls_cert needs api.tls_key"),
            (None, Some(key)) => problems.at(key.span(), "api.tls_key needs api.tls_cert"),
            (None, None) if !api.behind_tls_proxy && !api.listen.get_ref().ip().is_loopback() => {
                problems.at(
                    api.listen.span(),
                    format!(
                        "api.listen is {}, not a loopback address, and the API has no TLS: \
                         set api.tls_cert and api.tls_key, or, when a TLS-terminating proxy \
                         forwards to it, api.behind_tls_proxy = true (tokens and claim codes \
                         must never cross a network in clear)",
                        api.listen.get_ref()
                    ),
                );
            }
            _ => {}
        }
        if let Some(hash) = &api.metrics_token_sha256 {
            let text = hash.get_ref();
            if text.len() != 64 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                problems.at(
                    hash.span(),
                    "api.metrics_token_sha256 must be 64 hex digits, the SHA-256 of the \
                     metrics token (`printf %s \"$TOKEN\" | sha256sum`)",
                );
            }
        }

        let broker = &self.broker;
        check_host(problems, "broker.host", &broker.host);
        check_port(problems, "broker.port", &broker.port);
        let client_id = broker.client_id.get_ref();
        let replica = client_id.strip_prefix(RELAY_CLIENT_ID_PREFIX);
        if replica.is_none_or(|name| validate_id(name).is_err()) {
            problems.at(
                broker.client_id.span(),
                format!(
                    "broker.client_id must be `{RELAY_CLIENT_ID_PREFIX}` followed by this \
                     replica's name (lowercase letters, digits, `-`, `_`, `.`), e.g. \
                     `relay:eu-1`; got `{client_id}`"
                ),
            );
        }
        if let Some(group) = &broker.share_group {
            let name = group.get_ref();
            if validate_id(name).is_err() || name.chars().count() < MIN_SHARE_GROUP_CHARS {
                problems.at(
                    group.span(),
                    format!(
                        "broker.share_group must be at least {MIN_SHARE_GROUP_CHARS} lowercase \
                         letters, digits, `-`, `_` or `.` that appliances cannot guess (leave it \
                         out to derive one from broker.key_file)"
                    ),
                );
            }
        }

        if let Some(fleet) = &self.fleet {
            check_host(problems, "fleet.broker_host", &fleet.broker_host);
            check_port(problems, "fleet.broker_port", &fleet.broker_port);
            if !(1..=3650).contains(fleet.cert_validity_days.get_ref()) {
                problems.at(
                    fleet.cert_validity_days.span(),
                    "fleet.cert_validity_days must be between 1 and 3650",
                );
            }
        }

        let offline_after = &self.alerts.offline_after_s;
        let range = AlertsConfig::MIN_OFFLINE_AFTER_S..=AlertsConfig::MAX_OFFLINE_AFTER_S;
        if !range.contains(offline_after.get_ref()) {
            problems.at(
                offline_after.span(),
                format!(
                    "alerts.offline_after_s must be between {} and {} (appliances report every \
                     30 seconds)",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// Every file the configuration names.
    fn files(&self) -> Vec<&Spanned<PathBuf>> {
        let mut files = vec![
            &self.broker.ca_file,
            &self.broker.cert_file,
            &self.broker.key_file,
        ];
        files.extend(self.api.tls_cert.iter().chain(&self.api.tls_key));
        if let Some(fleet) = &self.fleet {
            files.extend([&fleet.ca_cert, &fleet.ca_key]);
        }
        files
    }

    fn resolve_paths(&mut self, folder: &Path) {
        let resolve = |file: &mut Spanned<PathBuf>| {
            if file.get_ref().is_relative() {
                *file.get_mut() = folder.join(file.get_ref());
            }
        };
        resolve(&mut self.broker.ca_file);
        resolve(&mut self.broker.cert_file);
        resolve(&mut self.broker.key_file);
        self.api.tls_cert.iter_mut().for_each(resolve);
        self.api.tls_key.iter_mut().for_each(resolve);
        if let Some(fleet) = &mut self.fleet {
            resolve(&mut fleet.ca_cert);
            resolve(&mut fleet.ca_key);
        }
        let url = self.store.url.get_mut();
        *url = resolve_sqlite_url(url, folder);
    }
}

/// A broker host must be a DNS name or an IP address that a TLS client can check the
/// broker's certificate against, and one the appliance accepts when it is claimed
/// (`gatehouse-edge claim` allows ASCII letters, digits, `-`, `.`, `_` and `:`, at most 253):
/// the appliance would refuse any other after its code is spent.
fn check_host(problems: &mut Problems<'_>, name: &str, host: &Spanned<String>) {
    let text = host.get_ref();
    let appliance_accepts = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !appliance_accepts || ServerName::try_from(text.as_str()).is_err() {
        problems.at(
            host.span(),
            format!(
                "{name} must be a DNS name or an IP address (letters, digits, `-`, `.`, `_`, \
                 `:`), got {text:?}"
            ),
        );
    }
}

/// Why a PostgreSQL URL may not be used: a server on another host must be reached over TLS
/// with its certificate verified (`sslmode=verify-full`, or `verify-ca`); only a loopback
/// host or a Unix socket may go without. The URL is read by sqlx's own parser, so what is
/// checked is what will connect (`PGHOST`, `PGSSLMODE` and the like included).
fn check_postgres_url(url: &str) -> Result<(), String> {
    // sqlx ignores `sslpassword` and logs the value of parameters it ignores.
    let has_query_parameter = |name: &str| {
        url.split_once('?').is_some_and(|(_, query)| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(name))
        })
    };
    if has_query_parameter("sslpassword") {
        return Err(
            "sslpassword is not supported (and would be logged): give an unencrypted sslkey \
             readable by the relay only"
                .to_owned(),
        );
    }
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| format!("not a PostgreSQL URL: {error}"))?;
    let host = options.get_host();
    let unquoted = host.trim_start_matches('[').trim_end_matches(']');
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || unquoted.eq_ignore_ascii_case("localhost")
        || unquoted
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    let verified = matches!(
        options.get_ssl_mode(),
        PgSslMode::VerifyFull | PgSslMode::VerifyCa
    );
    if local || verified {
        return Ok(());
    }
    Err(format!(
        "the PostgreSQL server `{host}` is not on this machine, so the connection must be TLS \
         with a verified certificate: add `sslmode=verify-full` to the URL (with \
         `sslrootcert=/path/to/ca.pem` for a private CA); `disable`, `prefer` and `require` are \
         for a loopback address or a Unix socket only"
    ))
}

fn check_port(problems: &mut Problems<'_>, name: &str, port: &Spanned<u16>) {
    if *port.get_ref() == 0 {
        problems.at(port.span(), format!("{name} must not be 0"));
    }
}

/// A SQLite URL whose file is relative, made relative to `folder` instead of the working
/// directory; any other URL unchanged.
fn resolve_sqlite_url(url: &str, folder: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_owned();
    };
    let file = rest.strip_prefix("//").unwrap_or(rest);
    if file.is_empty() || file.starts_with(':') || file.starts_with('/') {
        return url.to_owned();
    }
    format!("sqlite://{}", folder.join(file).display())
}

/// The URL with every password replaced by `***`: the one in the authority
/// (`scheme://user:password@host`) and the `password` and `sslpassword` query parameters.
fn redact_password(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((credentials, host)) => match credentials.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => base.to_owned(),
                },
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    let Some(query) = query else {
        return base;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if matches!(name, "password" | "sslpassword") => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[api]
listen = "127.0.0.1:0"

[broker]
host = "mqtt.example.com"
ca_file = "fleet-ca.pem"
cert_file = "relay.pem"
key_file = "relay.key"
client_id = "relay:eu-1"
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
        assert_eq!(config.store.url.get_ref(), "sqlite://relay.db?mode=rwc");
        assert_eq!(*config.broker.port.get_ref(), 8884);
        assert_eq!(config.alerts.offline_after(), Duration::from_secs(60));
        assert!(config.fleet.is_none());
        assert!(config.api.tls().is_none());
        assert!(config.broker.share_group.is_none());
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_expected_keys() {
        let source = format!("{MINIMAL}\n[alerts]\noffline_afer_s = 90\n");
        let found = problems(&source);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].position,
            Some((line_of(&source, "offline_afer_s"), 1))
        );
        assert!(
            found[0].message.contains("unknown field `offline_afer_s`"),
            "{found:?}"
        );
        assert!(found[0].message.contains("offline_after_s"), "{found:?}");
    }

    #[test]
    fn a_missing_section_and_a_wrong_type_are_named() {
        let found = problems("[api]\nlisten = \"127.0.0.1:0\"\n");
        assert!(
            found[0].message.contains("missing field `broker`"),
            "{found:?}"
        );
        let source = MINIMAL.replace("\"127.0.0.1:0\"", "8080");
        let found = problems(&source);
        assert_eq!(
            found[0].position.map(|p| p.0),
            Some(line_of(&source, "listen")),
            "{found:?}"
        );
    }

    #[test]
    fn every_meaning_problem_is_reported_at_once_with_its_line() {
        let source = format!(
            "{}\n[store]\nurl = \"mysql://db/relay\"\n\n[fleet]\nca_cert = \"ca.pem\"\nca_key = \
             \"ca.key\"\nbroker_host = \"\"\ncert_validity_days = 0\n\n[alerts]\noffline_after_s \
             = 10\n",
            MINIMAL
                .replace("relay:eu-1", "app-1")
                .replace(
                    "listen = \"127.0.0.1:0\"",
                    "listen = \"127.0.0.1:0\"\ntls_cert = \"x.pem\""
                )
                .replace("client_id", "share_group = \"relay\"\nclient_id")
        );
        let found = problems(&source);
        let expected = [
            ("mysql://", "unsupported database URL (scheme `mysql`)"),
            ("tls_cert", "api.tls_cert needs api.tls_key"),
            ("client_id", "broker.client_id must be `relay:`"),
            ("share_group", "broker.share_group must be at least 16"),
            (
                "broker_host",
                "fleet.broker_host must be a DNS name or an IP address",
            ),
            (
                "cert_validity_days",
                "fleet.cert_validity_days must be between",
            ),
            (
                "offline_after_s",
                "alerts.offline_after_s must be between 35",
            ),
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for ((needle, message), problem) in expected.iter().zip(&found) {
            assert!(problem.message.contains(message), "{problem:?}");
            assert_eq!(
                problem.position.map(|p| p.0),
                Some(line_of(&source, needle)),
                "{problem:?}"
            );
        }
    }

    #[test]
    fn relative_paths_and_sqlite_files_follow_the_config_file() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        for file in ["fleet-ca.pem", "relay.pem", "relay.key"] {
            std::fs::write(folder.path().join(file), "x")?;
        }
        let path = folder.path().join("relay.toml");
        std::fs::write(&path, MINIMAL)?;
        let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(
            config.broker.key_file.get_ref(),
            &folder.path().join("relay.key")
        );
        assert_eq!(
            config.store.url.get_ref(),
            &format!("sqlite://{}/relay.db?mode=rwc", folder.path().display())
        );
        for (url, expected) in [
            ("sqlite:///var/lib/relay.db", "sqlite:///var/lib/relay.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite:data/r.db", "sqlite:///etc/gh/data/r.db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ] {
            assert_eq!(resolve_sqlite_url(url, Path::new("/etc/gh")), expected);
        }
        Ok(())
    }

    #[test]
    fn missing_files_are_all_named_with_their_lines() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        std::fs::write(folder.path().join("relay.pem"), "x")?;
        let path = folder.path().join("relay.toml");
        std::fs::write(&path, MINIMAL)?;
        let error = Config::load(&path)
            .err()
            .ok_or_else(|| anyhow::anyhow!("missing files were accepted"))?;
        let text = error.to_string();
        assert!(text.contains("has 2 problems"), "{text}");
        let ca_line = line_of(MINIMAL, "ca_file");
        assert!(
            text.contains(&format!(
                "relay.toml:{ca_line}:11: cannot read `{}`",
                folder.path().join("fleet-ca.pem").display()
            )),
            "{text}"
        );
        assert!(text.contains("relay.key`: No such file"), "{text}");
        Ok(())
    }

    #[test]
    fn database_passwords_and_the_share_group_are_never_printed() {
        let source = MINIMAL
            .replace(
                "[api]",
                "[store]\nurl = \"postgres://relay:s3cret@db:5432/relay?sslmode=verify-full\"\n[api]",
            )
            .replace(
                "client_id",
                "share_group = \"hushhush-hushhush-1\"\nclient_id",
            );
        let config = Config::parse(&source).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(
            config.store.redacted_url(),
            "postgres://relay:***@db:5432/relay?sslmode=verify-full"
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!printed.contains("hushhush"), "{printed}");
        assert!(printed.contains("relay:eu-1"), "{printed}");
        for (url, redacted) in [
            ("postgres://relay@db/x", "postgres://relay@db/x"),
            (
                "postgres://db/x?user=relay&password=s3cret&sslmode=verify-full",
                "postgres://db/x?user=relay&password=***&sslmode=verify-full",
            ),
            (
                "postgres://u:p@db/x?sslkey=k.pem&sslpassword=s3cret",
                "postgres://u:***@db/x?sslkey=k.pem&sslpassword=***",
            ),
            ("sqlite://relay.db?mode=rwc", "sqlite://relay.db?mode=rwc"),
        ] {
            assert_eq!(redact_password(url), redacted);
        }
    }

    #[test]
    fn plain_http_is_for_loopback_or_behind_a_tls_proxy() {
        let on = |listen: &str, extra: &str| {
            MINIMAL.replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{listen}\"\n{extra}"),
            )
        };
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            assert!(Config::parse(&on(listen, "")).is_ok(), "{listen}");
        }
        let source = on("0.0.0.0:8080", "");
        let found = problems(&source);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].position, Some((line_of(&source, "listen"), 10)));
        assert!(
            found[0].message.contains(
                "api.listen is 0.0.0.0:8080, not a loopback address, and the API has no TLS"
            ),
            "{found:?}"
        );
        let behind = Config::parse(&on("0.0.0.0:8080", "behind_tls_proxy = true"))
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert!(behind.api.behind_tls_proxy);
        let https = on("0.0.0.0:8443", "tls_cert = \"a.pem\"\ntls_key = \"a.key\"");
        assert!(Config::parse(&https).is_ok());
    }

    #[test]
    fn postgres_on_another_host_needs_a_verified_tls_connection() {
        let with_url =
            |url: &str| MINIMAL.replace("[api]", &format!("[store]\nurl = \"{url}\"\n[api]"));
        for accepted in [
            "postgres://relay@127.0.0.1/relay",
            "postgres://relay@localhost:5433/relay?sslmode=disable",
            "postgres://relay@[::1]/relay",
            "postgres:///relay?host=/var/run/postgresql",
            "postgres://relay@db.example.com/relay?sslmode=verify-full",
            "postgresql://relay@10.0.0.5/relay?sslmode=verify-ca&sslrootcert=ca.pem",
        ] {
            let parsed = Config::parse(&with_url(accepted));
            assert!(parsed.is_ok(), "{accepted}: {:?}", parsed.err());
        }
        for (refused, says) in [
            (
                "postgres://relay@db.example.com/relay",
                "the PostgreSQL server `db.example.com` is not on this machine",
            ),
            (
                "postgres://relay@10.0.0.5/relay?sslmode=require",
                "add `sslmode=verify-full`",
            ),
            (
                "postgres://relay@db.example.com/relay?sslmode=disable",
                "for a loopback address or a Unix socket only",
            ),
            (
                "postgres://relay@127.0.0.1/relay?sslkey=k.pem&sslpassword=s3cret",
                "sslpassword is not supported",
            ),
        ] {
            let found = problems(&with_url(refused));
            assert_eq!(found.len(), 1, "{refused}: {found:?}");
            assert!(found[0].message.contains(says), "{refused}: {found:?}");
            assert!(!found[0].message.contains("s3cret"), "{found:?}");
        }
    }

    #[test]
    fn broker_hosts_are_names_or_addresses_the_appliance_accepts() {
        for good in [
            "mqtt.example.com",
            "localhost",
            "10.0.0.7",
            "::1",
            "broker_1.lan",
        ] {
            let source = MINIMAL.replace("mqtt.example.com", good);
            assert!(Config::parse(&source).is_ok(), "{good}");
        }
        for bad in [
            "",
            "mqtt example.com",
            "[::1]",
            "mqtt.example.com/x",
            "mqtt:8883:x?",
        ] {
            let source = format!(
                "{MINIMAL}\n[fleet]\nca_cert = \"ca.pem\"\nca_key = \"ca.key\"\nbroker_host = {bad:?}\n"
            )
            .replace("host = \"mqtt.example.com\"", &format!("host = {bad:?}"));
            let found = problems(&source);
            let names: Vec<&str> = found
                .iter()
                .map(|problem| problem.message.split(' ').next().unwrap_or_default())
                .collect();
            assert_eq!(
                names,
                ["broker.host", "fleet.broker_host"],
                "{bad:?}: {found:?}"
            );
        }
    }

    #[test]
    fn the_metrics_token_is_given_as_its_sha256() {
        let with = |hash: &str| {
            MINIMAL.replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:0\"\nmetrics_token_sha256 = \"{hash}\""),
            )
        };
        let upper = "AB".repeat(32);
        let config = Config::parse(&with(&upper)).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(config.api.metrics_token_sha256(), Some("ab".repeat(32)));
        for bad in [
            "ab".repeat(31),
            "zz".repeat(32),
            "the token itself".to_owned(),
        ] {
            let found = problems(&with(&bad));
            assert!(
                found[0].message.contains("must be 64 hex digits"),
                "{bad}: {found:?}"
            );
        }
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/relay.toml");
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let config = Config::parse(&source).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(config.fleet.is_some());
        assert!(config.api.tls().is_some());
        assert!(Backend::of_url(config.store.url.get_ref()).is_ok());
    }
}

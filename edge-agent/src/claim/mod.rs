//! `gatehouse-edge claim`: how an appliance gets its identity from the relay.
//!
//! An installer gets a one-time claim code from HQ and runs the claim on the appliance:
//!
//! ```text
//!  appliance                                          relay
//!  key pair ──► DIR/appliance.key.new (0600, created new)
//!  CSR + claim code ───── POST {relay}/api/v1/claim ───►  spends the code, signs the CSR's
//!                                                         public key with CN = the id it assigns
//!  check the answer ◄── appliance_id, certificate, fleet CA, broker ──┘
//!  stage the CA and certificate, move key, CA, certificate into place; the `[uplink]` section
//! ```
//!
//! The pieces: `relay` (URL policy, TLS, the request and what each answer means),
//! `identity` (the key, the checks on the answer, the files), `site_config` (the `[uplink]`
//! section and appending it to the site config).
//!
//! # Invariants
//!
//! - **The private key never leaves the appliance**: only the CSR travels. It is written
//!   before the request, so a disk that cannot hold it fails the claim before the one-time code
//!   is spent.
//! - **An identity is never replaced silently, nor lost to a failed claim.** A claim stages
//!   its files beside the live ones (`*.new`) and moves them into place only after the answer
//!   checked out, `appliance.pem` last, so its presence means a complete identity; a claim
//!   into a folder that holds one is refused unless `--force`, and with `--force` the old
//!   identity keeps working until the new one is in place. A staged key alone is what an
//!   unfinished claim left (refused code, relay unreachable): it is reused, never overwritten
//!   (`create_new`). See `identity` for the order of the files and crash recovery.
//! - **Nothing is written from an answer that does not check out**: the certificate must be
//!   for our key, its CN must be the appliance id, and it must be accepted as a client
//!   certificate by a verifier that trusts only the fleet CA of the answer, as the broker will.
//! - **The claim code travels only in the request body**, over TLS 1.3 (the policy of
//!   `gatehouse_transport`), or over plain http to a loopback address for tests, and never
//!   through a proxy (`HTTP_PROXY` and the like are ignored). It is in no log, error or `Debug`
//!   output ([`ClaimCode`]); neither is the key. [`CodeArg`] lets it come from standard input
//!   or the environment rather than the command line, which every local user can read.

mod identity;
mod relay;
mod site_config;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use gatehouse_protocol::ApplianceId;

use crate::config::ConfigError;

pub use identity::{CA_FILE, CERT_FILE, KEY_FILE};

/// A one-time claim code. It is a secret until spent: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimCode(String);

impl ClaimCode {
    /// The code, for the request body only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ClaimCode {
    type Err = String;

    fn from_str(code: &str) -> Result<Self, String> {
        let code = code.trim();
        if code.is_empty() {
            return Err("the claim code must not be empty".to_owned());
        }
        Ok(ClaimCode(code.to_owned()))
    }
}

impl fmt::Debug for ClaimCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClaimCode(..)")
    }
}

/// The longest line read as a claim code from standard input; codes are far shorter.
const MAX_CODE_LINE_BYTES: u64 = 1024;

/// Where `gatehouse-edge claim --code` takes the code from: the argument itself (visible to
/// every local user in `/proc/*/cmdline` and kept in the shell's history), or, for `-`, the
/// first line of standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeArg {
    Given(ClaimCode),
    Stdin,
}

impl std::str::FromStr for CodeArg {
    type Err = String;

    fn from_str(argument: &str) -> Result<Self, String> {
        match argument.trim() {
            "-" => Ok(CodeArg::Stdin),
            code => code.parse().map(CodeArg::Given),
        }
    }
}

impl CodeArg {
    /// The code: the one given, or the first line of `input` for `-`.
    pub fn read(self, input: impl BufRead) -> Result<ClaimCode, ClaimError> {
        match self {
            CodeArg::Given(code) => Ok(code),
            CodeArg::Stdin => {
                let mut line = String::new();
                input
                    .take(MAX_CODE_LINE_BYTES)
                    .read_line(&mut line)
                    .map_err(|source| ClaimError::CodeInput(source.to_string()))?;
                line.parse().map_err(|_| {
                    ClaimError::CodeInput(
                        "no claim code on the first line of standard input".into(),
                    )
                })
            }
        }
    }
}

/// What `gatehouse-edge claim` was asked to do.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// The relay's base URL (`https://relay.example.com`).
    pub relay: String,
    pub code: ClaimCode,
    /// Where the key, certificate and fleet CA go; made (0700) if missing.
    pub dir: PathBuf,
    /// The CA (PEM) that signed the relay's HTTPS certificate; the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// A site config to append the `[uplink]` section to.
    pub config: Option<PathBuf>,
    /// Replace an identity already in `dir` with a new key and certificate.
    pub force: bool,
}

/// A successful claim.
#[derive(Debug)]
pub struct Claimed {
    pub appliance_id: ApplianceId,
    /// The identity folder, absolute.
    pub dir: PathBuf,
    /// The `[uplink]` section for the site config (TOML, ending with a newline).
    pub uplink_section: String,
    pub site_config: SiteConfigUpdate,
}

/// What became of `--config`.
#[derive(Debug)]
pub enum SiteConfigUpdate {
    /// No `--config` was given: the installer pastes the section.
    NotRequested,
    /// The section was appended and the whole file is valid.
    Appended(PathBuf),
    /// The section was appended, but the file has problems (listed, with their lines).
    AppendedWithProblems(ConfigError),
    /// The file already has an `[uplink]` section; it was left untouched.
    AlreadyHasUplink(PathBuf),
    /// The file could not be read or appended to after the claim (it was checked before).
    AppendFailed(ClaimError),
}

/// Why a claim failed. Every message says what to do; none holds the code or the key.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("`{url}` is not a usable relay URL: {reason}")]
    BadRelayUrl { url: String, reason: String },
    #[error(
        "refusing to send the claim code in clear to `{host}`: use an https:// relay URL \
         (plain http:// is allowed to a loopback address only, for tests)"
    )]
    InsecureRelay { host: String },
    #[error("--ca-file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "no trusted CA certificates found on this system; pass the CA that signed the relay's \
         HTTPS certificate with --ca-file"
    )]
    NoSystemRoots,
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    #[error(
        "{dir} already holds an appliance identity ({CERT_FILE}); pass --force to replace it \
         with a new key and certificate"
    )]
    IdentityExists { dir: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is left from an unfinished claim but is not usable: {reason}; run with --force to make a new key"
    )]
    UnusableKey { path: PathBuf, reason: String },
    #[error("cannot make the key pair or the certificate signing request: {0}")]
    KeyGeneration(gatehouse_transport::TransportError),
    #[error("--code -: {0}")]
    CodeInput(String),
    #[error(
        "the relay at {endpoint} refused the connection: is the relay running and the URL right?"
    )]
    ConnectionRefused { endpoint: String },
    #[error("the TLS handshake with {endpoint} failed: {reason}{hint}")]
    TlsHandshake {
        endpoint: String,
        reason: String,
        /// What to do about it, `; `-prefixed, or empty.
        hint: &'static str,
    },
    #[error(
        "the relay at {endpoint} did not answer in time ({connect:?} to connect, {total:?} in \
         all): is the URL right and the network up?"
    )]
    Timeout {
        endpoint: String,
        connect: std::time::Duration,
        total: std::time::Duration,
    },
    #[error("cannot reach the relay at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error(
        "the relay refused the claim code: it is invalid, already used or expired; ask HQ for \
         a new code"
    )]
    CodeRefused,
    #[error("the relay refused the request: {0}")]
    RequestRefused(String),
    #[error("the relay cannot sign certificates right now ({0}); try again later")]
    RelayCannotSign(String),
    #[error("the relay answered HTTP {status}: {message}")]
    UnexpectedStatus { status: u16, message: String },
    #[error("the relay's answer is not a claim answer: {0}")]
    MalformedReply(String),
    #[error("the relay's answer does not check out: {0}; no certificate was written")]
    BadReply(String),
    #[error("--config {path}: {reason}")]
    SiteConfig { path: PathBuf, reason: String },
}

impl ClaimError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> ClaimError {
        ClaimError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Claims this appliance: makes (or reuses) its key, sends the CSR and the code to the relay,
/// checks the answer, writes the identity files and, with `--config`, the `[uplink]` section.
///
/// Everything that can be checked before the code is spent (the URL, `--ca-file`, the site
/// config, the identity folder) is checked first.
pub async fn claim(options: &ClaimOptions) -> Result<Claimed, ClaimError> {
    let relay = relay::RelayClient::new(&options.relay, options.ca_file.as_deref())?;
    if let Some(path) = &options.config {
        site_config::check_appendable(path)?;
    }
    let (dir, key) = identity::IdentityDir::open(&options.dir, options.force)?;
    let paths = site_config::UplinkPaths::new(&dir)?;
    let csr_pem = identity::csr_pem(&key)?;
    tracing::info!(
        relay = %relay.endpoint(),
        dir = %dir.path().display(),
        "claiming this appliance"
    );
    let reply = relay.claim(&options.code, &csr_pem).await?;
    let verified = identity::verify(&reply, &key, rustls::pki_types::UnixTime::now())?;
    dir.install(&verified)?;
    tracing::info!(appliance = %verified.appliance_id, "claimed");
    let uplink_section = site_config::uplink_section(&verified, &paths);
    let site_config = match &options.config {
        // The code is spent and the identity written: a failure here must not hide them.
        Some(path) => site_config::append_uplink(path, &uplink_section)
            .unwrap_or_else(SiteConfigUpdate::AppendFailed),
        None => SiteConfigUpdate::NotRequested,
    };
    Ok(Claimed {
        appliance_id: verified.appliance_id,
        dir: dir.path().to_owned(),
        uplink_section,
        site_config,
    })
}

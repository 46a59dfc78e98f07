//! The request to the relay: which URLs may carry a claim code, how it gets there (TLS 1.3
//! as `gatehouse_transport` sets it, no proxy, no redirect), and what each answer means.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{ClaimCode, ClaimError};

/// How long connecting may take; a relay that does not accept in this time is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the whole exchange may take (signing is quick; this covers slow cellular links).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read: a certificate, a CA and a few names fit many times over.
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// The most of a relay's error message shown to the installer.
const MAX_MESSAGE_CHARS: usize = 300;

/// The body of `POST /api/v1/claim`. No `Debug`: it holds the code.
#[derive(Serialize)]
struct ClaimRequest<'a> {
    code: &'a str,
    csr_pem: &'a str,
}

/// The relay's answer to a claim that it accepted. Unknown fields are ignored, so the relay
/// may add some.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ClaimReply {
    pub appliance_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub broker: BrokerAddress,
}

/// Where the appliance's uplink connects (MQTT over TLS).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

/// An HTTP client for one relay's claim endpoint.
pub(super) struct RelayClient {
    http: reqwest::Client,
    endpoint: Url,
    timeouts: Timeouts,
}

/// How long connecting, and the whole exchange, may take.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    total: Duration,
}

impl RelayClient {
    /// A client for `relay` (its base URL), trusting `ca_file` for its HTTPS certificate, or the
    /// system's roots without one.
    pub(super) fn new(relay: &str, ca_file: Option<&Path>) -> Result<RelayClient, ClaimError> {
        let timeouts = Timeouts {
            connect: CONNECT_TIMEOUT,
            total: REQUEST_TIMEOUT,
        };
        RelayClient::with_timeouts(relay, ca_file, timeouts)
    }

    fn with_timeouts(
        relay: &str,
        ca_file: Option<&Path>,
        timeouts: Timeouts,
    ) -> Result<RelayClient, ClaimError> {
        let endpoint = claim_endpoint(relay)?;
        let secure = endpoint.scheme() == "https";
        let roots = match ca_file {
            Some(path) => roots_from_file(path)?,
            None if secure => system_roots()?,
            // Plain http to loopback: TLS is never used.
            None => rustls::RootCertStore::empty(),
        };
        let tls = gatehouse_transport::tls13_client_config(roots, None)
            .map_err(|error| ClaimError::TlsSetup(error.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(secure)
            // A proxy from the environment (HTTP_PROXY, ALL_PROXY) would get the code: in clear
            // on the loopback http path, and it is a party the installer never named.
            .no_proxy()
            // A redirect would resend the code somewhere this policy did not check.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .build()
            .map_err(|error| ClaimError::TlsSetup(error_chain(&error)))?;
        Ok(RelayClient {
            http,
            endpoint,
            timeouts,
        })
    }

    pub(super) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Sends the claim and reads the relay's answer.
    pub(super) async fn claim(
        &self,
        code: &ClaimCode,
        csr_pem: &str,
    ) -> Result<ClaimReply, ClaimError> {
        let request = ClaimRequest {
            code: code.expose(),
            csr_pem,
        };
        let mut response = self
            .http
            .post(self.endpoint.clone())
            .json(&request)
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.transport_error(&error))?
        {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(ClaimError::MalformedReply(format!(
                    "it is longer than {MAX_REPLY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        interpret(status, &body)
    }

    /// Says which of the failures an installer can act on this is: refused, TLS, timeout.
    fn transport_error(&self, error: &reqwest::Error) -> ClaimError {
        let endpoint = self.endpoint.to_string();
        if error.is_timeout() {
            return ClaimError::Timeout {
                endpoint,
                connect: self.timeouts.connect,
                total: self.timeouts.total,
            };
        }
        for cause in causes(error) {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return ClaimError::TlsHandshake {
                    endpoint,
                    reason: tls.to_string(),
                    hint: tls_hint(tls),
                };
            }
            if cause
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
            {
                return ClaimError::ConnectionRefused { endpoint };
            }
        }
        ClaimError::Unreachable {
            endpoint,
            reason: error_chain(error),
        }
    }
}

/// What an installer can do about a failed handshake.
fn tls_hint(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::InvalidCertificate(_) => {
            "; if the relay's HTTPS certificate comes from a private CA, pass that CA with \
             --ca-file"
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
        | rustls::Error::PeerIncompatible(_) => "; the relay must offer TLS 1.3",
        _ => "",
    }
}

/// What the relay's status and body mean (the contract of `POST /api/v1/claim`).
fn interpret(status: StatusCode, body: &[u8]) -> Result<ClaimReply, ClaimError> {
    match status {
        StatusCode::OK => serde_json::from_slice(body)
            .map_err(|error| ClaimError::MalformedReply(error.to_string())),
        StatusCode::FORBIDDEN => Err(ClaimError::CodeRefused),
        StatusCode::BAD_REQUEST => Err(ClaimError::RequestRefused(relay_message(body))),
        StatusCode::SERVICE_UNAVAILABLE => Err(ClaimError::RelayCannotSign(relay_message(body))),
        other => Err(ClaimError::UnexpectedStatus {
            status: other.as_u16(),
            message: relay_message(body),
        }),
    }
}

/// The relay's `{"error": "..."}` message, or the start of whatever it sent, fit for a
/// terminal (no control characters, bounded).
fn relay_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut message: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    message = message.trim().to_owned();
    if message.is_empty() {
        "(no message)".to_owned()
    } else {
        message
    }
}

/// `{relay}/api/v1/claim`, if `relay` may carry a claim code: https anywhere, http only to a
/// loopback address (with a warning).
fn claim_endpoint(relay: &str) -> Result<Url, ClaimError> {
    let bad = |reason: &str| ClaimError::BadRelayUrl {
        url: relay.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(relay).map_err(|error| bad(&error.to_string()))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a relay URL has no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("a relay URL has no user name or password"));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or_default().to_owned();
            if !is_loopback(&host) {
                return Err(ClaimError::InsecureRelay { host });
            }
            tracing::warn!(
                relay = relay,
                "plain http: the claim code travels in clear (acceptable on this machine only)"
            );
        }
        _ => return Err(bad("use an https:// URL")),
    }
    url.path_segments_mut()
        .map_err(|()| bad("it cannot have a path"))?
        .pop_if_empty()
        .extend(["api", "v1", "claim"]);
    Ok(url)
}

/// `localhost`, `127.0.0.0/8` or `[::1]`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The certificates of `--ca-file`, each a root.
fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, ClaimError> {
    let bad = |reason: String| ClaimError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| bad(error.to_string()))?;
    gatehouse_transport::certificates_from_pem(&pem)
        .and_then(gatehouse_transport::root_store)
        .map_err(|error| bad(error.to_string()))
}

/// The system's trusted roots (for a relay whose HTTPS certificate comes from a public CA).
fn system_roots() -> Result<rustls::RootCertStore, ClaimError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system CA certificate could not be loaded");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ClaimError::NoSystemRoots);
    }
    Ok(roots)
}

/// `error` and its causes, outermost first. An `io::Error` wrapping another error is followed
/// into it: its `source` skips the wrapped error (where rustls's errors hide).
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |current| {
        match current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        }
    })
}

/// An error and its causes, `: `-separated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut texts: Vec<String> = causes(error).map(ToString::to_string).collect();
    // An io::Error shows what it wraps: the same text twice.
    texts.dedup();
    texts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(relay: &str) -> Result<String, String> {
        claim_endpoint(relay)
            .map(|url| url.to_string())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn https_anywhere_and_http_only_to_loopback() {
        assert_eq!(
            endpoint("https://relay.example.com").as_deref(),
            Ok("https://relay.example.com/api/v1/claim")
        );
        assert_eq!(
            endpoint("https://example.com/gatehouse/").as_deref(),
            Ok("https://example.com/gatehouse/api/v1/claim")
        );
        for loopback in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1/",
            "http://localhost:1",
            "http://[::1]:8080",
        ] {
            assert!(endpoint(loopback).is_ok(), "{loopback}");
        }
        for remote in [
            "http://192.0.2.1",
            "http://relay.example.com",
            "http://[2001:db8::1]",
            "http://localhost.example.com",
        ] {
            let error = endpoint(remote).err().unwrap_or_default();
            assert!(
                error.starts_with("refusing to send the claim code in clear"),
                "{remote}: {error}"
            );
        }
        for (bad, expected) in [
            ("ftp://relay.example.com", "use an https:// URL"),
            ("relay.example.com", "relative URL without a base"),
            ("https://relay.example.com/?x=1", "no query or fragment"),
            (
                "https://user:pw@relay.example.com/",
                "no user name or password",
            ),
        ] {
            let error = endpoint(bad).err().unwrap_or_default();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn each_status_says_what_to_do() {
        let error = |status: u16, body: &str| {
            StatusCode::from_u16(status)
                .map_err(|e| e.to_string())
                .and_then(|status| {
                    interpret(status, body.as_bytes())
                        .map(|_| String::new())
                        .map_err(|error| error.to_string())
                })
                .err()
                .unwrap_or_default()
        };
        assert_eq!(
            error(
                403,
                r#"{"error": "claim code is invalid, used or expired"}"#
            ),
            "the relay refused the claim code: it is invalid, already used or expired; ask HQ \
             for a new code"
        );
        assert_eq!(
            error(400, r#"{"error": "the CSR is not\nvalid"}"#),
            "the relay refused the request: the CSR is not valid"
        );
        assert_eq!(
            error(503, ""),
            "the relay cannot sign certificates right now ((no message)); try again later"
        );
        assert_eq!(
            error(502, "<html>Bad gateway</html>"),
            "the relay answered HTTP 502: <html>Bad gateway</html>"
        );
        assert!(
            error(200, "{\"appliance_id\": 3}")
                .starts_with("the relay's answer is not a claim answer")
        );
        let long = "x".repeat(10_000);
        assert_eq!(
            error(400, &long).len(),
            "the relay refused the request: ".len() + MAX_MESSAGE_CHARS
        );
    }

    #[tokio::test]
    async fn a_relay_that_accepts_but_never_answers_times_out() -> anyhow::Result<()> {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", silent.local_addr()?);
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_millis(300),
        };
        let client = RelayClient::with_timeouts(&url, None, timeouts)?;
        let code = "claim-SECRET-timeout".parse().map_err(anyhow::Error::msg)?;
        let error = client
            .claim(&code, "csr")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            format!(
                "the relay at {url}/api/v1/claim did not answer in time (1s to connect, 300ms in \
                 all): is the URL right and the network up?"
            )
        );
        Ok(())
    }

    #[test]
    fn a_bad_ca_file_is_refused_before_anything_is_sent() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        let missing = folder.path().join("missing.pem");
        let error = RelayClient::new("https://relay.example.com", Some(&missing))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(&format!("--ca-file {}: ", missing.display())),
            "{error}"
        );
        let empty = folder.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate")?;
        let error = RelayClient::new("https://relay.example.com", Some(&empty))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            format!("--ca-file {}: no PEM certificate found", empty.display())
        );
        Ok(())
    }
}

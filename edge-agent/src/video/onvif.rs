//! ONVIF for the agent's cameras: find a camera's media profiles and RTSP stream addresses from
//! its ONVIF device address, and read its own events (motion, tamper, line crossing) through a
//! PullPoint subscription.
//!
//! ```text
//!  OnvifClient::connect(device address, credentials)
//!    GetSystemDateAndTime (no credentials) ──► clock offset for the UsernameToken's Created
//!    GetServices, else GetCapabilities ──────► media and events service addresses
//!  client.profiles()        GetProfiles      ──► MediaProfile { token, name, video encoder }
//!  client.stream_uri(token) GetStreamUri     ──► rtsp://... (RTP unicast over RTSP)
//!  client.pull_point(opts)  CreatePullPointSubscription ──► PullPoint (subscription address)
//!    pull_point.pull()      [Renew when the termination time is near] PullMessages (long poll)
//!                           ──► Vec<CameraEvent> ──► point_values(): motion, tamper, line_crossed
//!    pull_point.unsubscribe()
//! ```
//!
//! Layout: [`soap`] (envelopes, WS-Security digest, faults, XML helpers), [`messages`] (each
//! call's request and answer parser) and [`events`] (notification messages to
//! [`CameraEvent`]s and points) are pure and unit-tested on answers shaped as the ONVIF specs
//! write them; this file holds the HTTP side and the errors.
//!
//! Covered: the Profile S/T subset a recorder needs to find streams and read events: device
//! service (`GetSystemDateAndTime`, `GetServices`, `GetCapabilities`), media service version 1
//! (`GetProfiles`, `GetStreamUri`, `GetSnapshotUri`), events service PullPoint
//! (`CreatePullPointSubscription`, `PullMessages`, `Renew`, `Unsubscribe`), SOAP 1.2 over plain
//! HTTP with a WS-Security UsernameToken (PasswordDigest), WS-Addressing headers and reference
//! parameters for subscriptions.
//!
//! Not covered: WS-Discovery (installers give the address), HTTPS, HTTP digest authentication
//! (cameras that refuse WS-Security and want HTTP digest answer 401: reported as wrong
//! credentials), media service version 2 (`ver20`, so H.265 profiles that only Media2 lists
//! are not seen), PTZ, imaging, recording and replay, basic notification (push) subscriptions,
//! event filters, and rewriting service addresses a camera behind NAT reports with its
//! internal IP.

pub mod events;
pub mod messages;
pub mod soap;

use std::{
    fmt,
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};

pub use events::{CameraEvent, CameraEventKind, PropertyOperation};
pub use messages::{MediaProfile, MediaUri, Services, VideoEncoder};
pub use soap::{AnswerError, SoapFault};

use messages::Request;
use soap::{Addressing, ReferenceParameter, UsernameToken};

/// The longest answer read; a camera's biggest (GetProfiles) is a few tens of kilobytes.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// How long a subscription is asked to live, and how it is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullPointOptions {
    /// Requested at creation and at every renewal.
    pub termination: Duration,
    /// How long the camera may hold a PullMessages before answering with no message.
    pub pull_timeout: Duration,
    /// The most messages one PullMessages returns.
    pub message_limit: u32,
}

impl Default for PullPointOptions {
    fn default() -> Self {
        Self {
            termination: Duration::from_secs(60),
            pull_timeout: Duration::from_secs(10),
            message_limit: 64,
        }
    }
}

/// A user and password for the device's WS-Security UsernameToken.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// What went wrong talking to an ONVIF device: which call, which address, and what.
#[derive(Debug, thiserror::Error)]
pub enum OnvifError {
    #[error("{address:?} is not an ONVIF device address: {problem}")]
    BadAddress { address: String, problem: String },
    #[error("could not reach the ONVIF device at {address} for {call}: {detail}")]
    Unreachable {
        call: &'static str,
        address: String,
        detail: String,
    },
    #[error("the ONVIF device at {address} did not answer {call} within {after:?}")]
    Timeout {
        call: &'static str,
        address: String,
        after: Duration,
    },
    #[error("wrong user or password for the ONVIF device at {address} ({call} refused: {reason})")]
    NotAuthorized {
        call: &'static str,
        address: String,
        reason: String,
    },
    #[error("the ONVIF device at {address} refused {call} with the SOAP fault {fault}")]
    Fault {
        call: &'static str,
        address: String,
        fault: SoapFault,
    },
    #[error(
        "the ONVIF device at {address} answered {call} with HTTP status {status} and no SOAP fault"
    )]
    HttpStatus {
        call: &'static str,
        address: String,
        status: u16,
    },
    #[error("the ONVIF device at {address} answered {call} with more than {limit} bytes")]
    TooLarge {
        call: &'static str,
        address: String,
        limit: usize,
    },
    #[error("the ONVIF device at {address} answered {call} with {source}")]
    Answer {
        call: &'static str,
        address: String,
        #[source]
        source: AnswerError,
    },
    #[error(
        "the ONVIF device at {address} offers no {service} service (GetServices and GetCapabilities list none)"
    )]
    NoService {
        address: String,
        service: &'static str,
    },
}

impl OnvifError {
    /// The call went through but the device refused or garbled it (as opposed to the device
    /// being unreachable or silent).
    pub fn device_answered(&self) -> bool {
        !matches!(
            self,
            OnvifError::BadAddress { .. }
                | OnvifError::Unreachable { .. }
                | OnvifError::Timeout { .. }
        )
    }
}

/// The device service's URL from what an installer typed: a full `http://` URL is used as it
/// is; `host` or `host:port` become `http://host[:port]/onvif/device_service`, the path every
/// ONVIF device serves.
pub fn device_service_url(address: &str) -> Result<String, OnvifError> {
    let address = address.trim();
    let bad = |problem: &str| OnvifError::BadAddress {
        address: address.to_owned(),
        problem: problem.to_owned(),
    };
    if address.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some((scheme, rest)) = address.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            "http" if !rest.is_empty() && !rest.starts_with('/') => match rest.split_once('/') {
                Some((_, path)) if !path.is_empty() => Ok(address.to_owned()),
                _ => Ok(format!(
                    "{}/onvif/device_service",
                    address.trim_end_matches('/')
                )),
            },
            "http" => Err(bad("it has no host")),
            "https" => Err(bad("only plain http:// is supported")),
            _ => Err(bad("it is neither http://... nor host[:port]")),
        };
    }
    if address.contains(['/', ' ', '?', '#', '@']) {
        return Err(bad("it is neither http://... nor host[:port]"));
    }
    Ok(format!("http://{address}/onvif/device_service"))
}

/// When to renew: once less than the pull timeout plus this margin is left, so a long poll
/// never runs past the subscription's end.
pub const RENEW_MARGIN: Duration = Duration::from_secs(2);

/// Whether a subscription with `left` before its termination must be renewed before a pull.
pub fn renew_due(left: Duration, pull_timeout: Duration) -> bool {
    left <= pull_timeout + RENEW_MARGIN
}

/// How long a subscription has left, from the device's own clock (`current`) and its
/// termination time, so clock differences between agent and camera do not matter.
pub fn time_left(current: Timestamp, termination: Timestamp) -> Duration {
    Duration::try_from(termination.duration_since(current)).unwrap_or(Duration::ZERO)
}

/// The HTTP and SOAP side shared by the client and its subscriptions.
#[derive(Debug, Clone)]
struct Transport {
    http: reqwest::Client,
    credentials: Option<Credentials>,
    /// The device's clock minus ours, for the UsernameToken's `Created`.
    clock_offset: SignedDuration,
    timeout: Duration,
}

impl Transport {
    /// Sends `request` to `address` and returns the answer's text once it is not a fault.
    async fn call(
        &self,
        request: &Request,
        address: &str,
        addressing: Option<&Addressing<'_>>,
        timeout: Duration,
        authenticate: bool,
    ) -> Result<String, OnvifError> {
        let call = request.call;
        let nonce: [u8; 16] = rand::random();
        let created = Timestamp::now()
            .checked_add(self.clock_offset)
            .unwrap_or_else(|_| Timestamp::now());
        let token = self
            .credentials
            .as_ref()
            .filter(|_| authenticate)
            .map(|credentials| UsernameToken {
                user: &credentials.user,
                password: &credentials.password,
                nonce: &nonce,
                created,
            });
        let envelope = soap::envelope(token.as_ref(), addressing, &request.body);
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                OnvifError::Timeout {
                    call,
                    address: address.to_owned(),
                    after: timeout,
                }
            } else {
                OnvifError::Unreachable {
                    call,
                    address: address.to_owned(),
                    detail: error_chain(&error),
                }
            }
        };
        let mut response = self
            .http
            .post(address)
            .timeout(timeout)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!(
                    "application/soap+xml; charset=utf-8; action=\"{}\"",
                    request.action
                ),
            )
            .body(envelope)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(OnvifError::TooLarge {
                    call,
                    address: address.to_owned(),
                    limit: MAX_ANSWER_BYTES,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes).map_err(|_| OnvifError::Answer {
            call,
            address: address.to_owned(),
            source: AnswerError::NotXml("it is not UTF-8".to_owned()),
        })?;
        if status.is_success() {
            // The call's parser reports a fault sent with 200 itself.
            return Ok(text);
        }
        if let Some(fault) = soap::fault_in(&text) {
            return Err(answer_error(call, address, AnswerError::Fault(fault)));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(OnvifError::NotAuthorized {
                call,
                address: address.to_owned(),
                reason: "HTTP 401 (the device may want HTTP digest authentication, which is not supported)".to_owned(),
            });
        }
        Err(OnvifError::HttpStatus {
            call,
            address: address.to_owned(),
            status: status.as_u16(),
        })
    }
}

/// A parser's error with the call and address around it; `ter:NotAuthorized` becomes
/// [`OnvifError::NotAuthorized`].
fn answer_error(call: &'static str, address: &str, error: AnswerError) -> OnvifError {
    match error {
        AnswerError::Fault(fault) if fault.is_not_authorized() => OnvifError::NotAuthorized {
            call,
            address: address.to_owned(),
            reason: fault.to_string(),
        },
        AnswerError::Fault(fault) => OnvifError::Fault {
            call,
            address: address.to_owned(),
            fault,
        },
        source => OnvifError::Answer {
            call,
            address: address.to_owned(),
            source,
        },
    }
}

/// `error: cause: cause`, since reqwest's own message leaves out why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A connection to one ONVIF device: its services' addresses and credentials.
#[derive(Debug, Clone)]
pub struct OnvifClient {
    transport: Transport,
    device_address: String,
    services: Services,
}

impl OnvifClient {
    /// Reads the device's clock and finds its services. `address` is `host[:port]` or the
    /// device service's `http://` URL; `timeout` bounds each call (PullMessages gets its own
    /// long-poll time on top).
    pub async fn connect(
        address: &str,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self, OnvifError> {
        let device_address = device_service_url(address)?;
        let setup_failed = |detail: String| OnvifError::Unreachable {
            call: "connect",
            address: device_address.clone(),
            detail,
        };
        // Plain HTTP only, but reqwest's rustls backend needs a provider even so: the one TLS
        // policy of the agent, with no trust anchors (and `https://` refused above).
        let tls = gatehouse_transport::tls13_client_config(rustls::RootCertStore::empty(), None)
            .map_err(|error| setup_failed(error.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // Cameras are on the site's network: a proxy from the environment would not reach
            // them, and would see the traffic.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .build()
            .map_err(|error| setup_failed(error_chain(&error)))?;
        let mut transport = Transport {
            http,
            credentials,
            clock_offset: SignedDuration::ZERO,
            timeout,
        };

        // The UsernameToken's Created must be on the device's clock (ONVIF Core 5.12.2):
        // GetSystemDateAndTime needs no credentials. A device that garbles it still gets a
        // chance with our own clock.
        let request = messages::get_system_date_and_time();
        match transport
            .call(&request, &device_address, None, timeout, false)
            .await
            .and_then(|text| {
                messages::parse_system_date_and_time(&text)
                    .map_err(|error| answer_error(request.call, &device_address, error))
            }) {
            Ok(device_time) => {
                transport.clock_offset = device_time.duration_since(Timestamp::now());
            }
            Err(error) if !error.device_answered() => return Err(error),
            Err(error) => {
                tracing::debug!(device = %device_address, %error, "no device time; using ours");
            }
        }

        let services = match Self::services_of(&transport, &device_address).await {
            Ok(services) if services.media.is_some() => services,
            // Some devices list only Media2 there; GetCapabilities still names Media1.
            Ok(_) => Self::capabilities_of(&transport, &device_address).await?,
            Err(error @ OnvifError::NotAuthorized { .. }) => return Err(error),
            Err(error) if !error.device_answered() => return Err(error),
            // Profile S devices before ONVIF 2.1 have no GetServices.
            Err(error) => {
                tracing::debug!(device = %device_address, %error, "no GetServices; trying GetCapabilities");
                Self::capabilities_of(&transport, &device_address).await?
            }
        };
        Ok(Self {
            transport,
            device_address,
            services,
        })
    }

    async fn capabilities_of(transport: &Transport, device: &str) -> Result<Services, OnvifError> {
        let request = messages::get_capabilities();
        let text = transport
            .call(&request, device, None, transport.timeout, true)
            .await?;
        messages::parse_capabilities(&text)
            .map_err(|error| answer_error(request.call, device, error))
    }

    async fn services_of(transport: &Transport, device: &str) -> Result<Services, OnvifError> {
        let request = messages::get_services();
        let text = transport
            .call(&request, device, None, transport.timeout, true)
            .await?;
        messages::parse_services(&text).map_err(|error| answer_error(request.call, device, error))
    }

    /// The device service's URL.
    pub fn device_address(&self) -> &str {
        &self.device_address
    }

    /// The services found at connection.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The device's clock minus the agent's, as measured at connection.
    pub fn clock_offset(&self) -> SignedDuration {
        self.transport.clock_offset
    }

    fn media_address(&self) -> Result<&str, OnvifError> {
        self.services
            .media
            .as_deref()
            .ok_or_else(|| OnvifError::NoService {
                address: self.device_address.clone(),
                service: "media",
            })
    }

    /// Sends `request` to `address` and parses the answer with `parse`.
    async fn exchange<T>(
        &self,
        request: Request,
        address: &str,
        parse: impl FnOnce(&str) -> Result<T, AnswerError>,
    ) -> Result<T, OnvifError> {
        let text = self
            .transport
            .call(&request, address, None, self.transport.timeout, true)
            .await?;
        parse(&text).map_err(|error| answer_error(request.call, address, error))
    }

    /// The media profiles (`GetProfiles`).
    pub async fn profiles(&self) -> Result<Vec<MediaProfile>, OnvifError> {
        let media = self.media_address()?;
        self.exchange(messages::get_profiles(), media, messages::parse_profiles)
            .await
    }

    /// The RTSP address of a profile's stream, RTP unicast (`GetStreamUri`). It carries no
    /// credentials: RTSP asks for them itself, usually the same as ONVIF's.
    pub async fn stream_uri(&self, profile_token: &str) -> Result<MediaUri, OnvifError> {
        let media = self.media_address()?;
        self.exchange(messages::get_stream_uri(profile_token), media, |text| {
            messages::parse_media_uri(text, "GetStreamUriResponse")
        })
        .await
    }

    /// The HTTP address of a profile's JPEG snapshot (`GetSnapshotUri`).
    pub async fn snapshot_uri(&self, profile_token: &str) -> Result<MediaUri, OnvifError> {
        let media = self.media_address()?;
        self.exchange(messages::get_snapshot_uri(profile_token), media, |text| {
            messages::parse_media_uri(text, "GetSnapshotUriResponse")
        })
        .await
    }

    /// Subscribes to all the device's events (`CreatePullPointSubscription`).
    pub async fn pull_point(&self, options: PullPointOptions) -> Result<PullPoint, OnvifError> {
        let events = self
            .services
            .events
            .as_deref()
            .ok_or_else(|| OnvifError::NoService {
                address: self.device_address.clone(),
                service: "events",
            })?;
        let request = messages::create_pull_point_subscription(options.termination);
        let addressing = Addressing {
            action: &request.action,
            to: events,
            reference_parameters: &[],
        };
        let text = self
            .transport
            .call(
                &request,
                events,
                Some(&addressing),
                self.transport.timeout,
                true,
            )
            .await?;
        let subscription = messages::parse_subscription(&text)
            .map_err(|error| answer_error(request.call, events, error))?;
        Ok(PullPoint {
            transport: self.transport.clone(),
            address: subscription.address,
            reference_parameters: subscription.reference_parameters,
            options,
            ends: Instant::now()
                + time_left(subscription.current_time, subscription.termination_time),
            renewals: 0,
        })
    }
}

/// A PullPoint subscription: long-polls the camera's events and keeps the subscription alive.
/// Dropping it without [`PullPoint::unsubscribe`] leaves it to expire on the camera.
#[derive(Debug)]
pub struct PullPoint {
    transport: Transport,
    address: String,
    reference_parameters: Vec<ReferenceParameter>,
    options: PullPointOptions,
    /// When the device will end the subscription unless renewed (on our clock).
    ends: Instant,
    renewals: u64,
}

impl PullPoint {
    /// The subscription's address, from the CreatePullPointSubscription answer.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// How long before the device ends the subscription, as last told.
    pub fn time_left(&self) -> Duration {
        self.ends.saturating_duration_since(Instant::now())
    }

    /// How many times the subscription was renewed.
    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    async fn call(&self, request: &Request, timeout: Duration) -> Result<String, OnvifError> {
        let addressing = Addressing {
            action: &request.action,
            to: &self.address,
            reference_parameters: &self.reference_parameters,
        };
        self.transport
            .call(request, &self.address, Some(&addressing), timeout, true)
            .await
    }

    /// Waits up to the pull timeout for events and returns them in the camera's order (empty
    /// when none came). Renews the subscription first when its end is near. An error here
    /// (a fault for an unknown subscription after the camera restarted, say) means the
    /// caller should make a new subscription.
    pub async fn pull(&mut self) -> Result<Vec<CameraEvent>, OnvifError> {
        if renew_due(self.time_left(), self.options.pull_timeout) {
            self.renew().await?;
        }
        let request =
            messages::pull_messages(self.options.pull_timeout, self.options.message_limit);
        let sent = Instant::now();
        let text = self
            .call(&request, self.options.pull_timeout + self.transport.timeout)
            .await?;
        let pulled = messages::parse_pull_messages(&text)
            .map_err(|error| answer_error(request.call, &self.address, error))?;
        self.ends = sent + time_left(pulled.current_time, pulled.termination_time);
        Ok(pulled.events)
    }

    /// Extends the subscription by the options' termination time (`Renew`).
    pub async fn renew(&mut self) -> Result<(), OnvifError> {
        let request = messages::renew(self.options.termination);
        let sent = Instant::now();
        let text = self.call(&request, self.transport.timeout).await?;
        let renewed = messages::parse_renew(&text)
            .map_err(|error| answer_error(request.call, &self.address, error))?;
        let left = match renewed.current_time {
            Some(current) => time_left(current, renewed.termination_time),
            // Without the device's time, trust only what we asked for.
            None => self.options.termination,
        };
        self.ends = sent + left;
        self.renewals += 1;
        Ok(())
    }

    /// Ends the subscription on the camera (`Unsubscribe`).
    pub async fn unsubscribe(self) -> Result<(), OnvifError> {
        let request = messages::unsubscribe();
        let text = self.call(&request, self.transport.timeout).await?;
        messages::parse_unsubscribe(&text)
            .map_err(|error| answer_error(request.call, &self.address, error))
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn device_addresses() -> anyhow::Result<()> {
        assert_eq!(
            device_service_url("192.168.1.20")?,
            "http://192.168.1.20/onvif/device_service"
        );
        assert_eq!(
            device_service_url(" cam-3.lan:8080 ")?,
            "http://cam-3.lan:8080/onvif/device_service"
        );
        assert_eq!(
            device_service_url("http://10.0.0.9:8000")?,
            "http://10.0.0.9:8000/onvif/device_service"
        );
        assert_eq!(
            device_service_url("http://10.0.0.9/")?,
            "http://10.0.0.9/onvif/device_service"
        );
        assert_eq!(
            device_service_url("[fd00::9]:8080")?,
            "http://[fd00::9]:8080/onvif/device_service"
        );
        assert_eq!(
            device_service_url("http://10.0.0.9/onvif/device_service")?,
            "http://10.0.0.9/onvif/device_service"
        );
        for bad in [
            "",
            "https://10.0.0.9",
            "rtsp://10.0.0.9/cam",
            "http://",
            "a b",
            "user@host",
        ] {
            let error = device_service_url(bad).err().context("expected an error")?;
            assert!(
                matches!(error, OnvifError::BadAddress { .. }),
                "{bad:?}: {error}"
            );
        }
        Ok(())
    }

    #[test]
    fn renewal_timing() -> anyhow::Result<()> {
        let pull = Duration::from_secs(10);
        assert!(!renew_due(Duration::from_secs(60), pull));
        assert!(!renew_due(Duration::from_secs(13), pull));
        assert!(renew_due(Duration::from_secs(12), pull));
        assert!(renew_due(Duration::ZERO, pull));
        let current: Timestamp = "2026-11-26T13:00:00Z".parse()?;
        let termination: Timestamp = "2026-11-26T13:01:00Z".parse()?;
        assert_eq!(time_left(current, termination), Duration::from_secs(60));
        assert_eq!(time_left(termination, current), Duration::ZERO);
        Ok(())
    }

    #[test]
    fn errors_say_what_and_where() -> anyhow::Result<()> {
        let fault = SoapFault {
            code: "env:Sender".into(),
            subcodes: vec!["ter:NotAuthorized".into()],
            reason: "Sender not Authorized".into(),
        };
        let error = answer_error(
            "GetProfiles",
            "http://10.0.0.9/onvif/media_service",
            AnswerError::Fault(fault),
        );
        assert_eq!(
            error.to_string(),
            "wrong user or password for the ONVIF device at http://10.0.0.9/onvif/media_service \
             (GetProfiles refused: env:Sender/ter:NotAuthorized (Sender not Authorized))"
        );
        let error = answer_error(
            "GetStreamUri",
            "http://10.0.0.9/onvif/media_service",
            AnswerError::Missing {
                element: "MediaUri/Uri",
            },
        );
        assert_eq!(
            error.to_string(),
            "the ONVIF device at http://10.0.0.9/onvif/media_service answered GetStreamUri with no MediaUri/Uri element"
        );
        let credentials = Credentials {
            user: "admin".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
        Ok(())
    }
}

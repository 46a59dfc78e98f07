//! A simulated ONVIF camera: an HTTP server on 127.0.0.1 answering exactly the calls
//! `gatehouse_edge::video::onvif` makes, checking WS-Security digests, with events queued by
//! the test and faults to inject.
//!
//! - Device service `/onvif/device_service`: `GetSystemDateAndTime` (no credentials, the
//!   simulator's clock with [`OnvifSimOptions::clock_skew`]), `GetServices` (or the
//!   `ter:ActionNotSupported` fault of an old device, [`OnvifSimOptions::without_get_services`]),
//!   `GetCapabilities`.
//! - Media service `/onvif/media_service`: `GetProfiles` (two H.264 profiles and an audio one),
//!   `GetStreamUri` (the configured RTSP URL), `GetSnapshotUri`; unknown tokens are
//!   `ter:InvalidArgVal/ter:NoProfile`.
//! - Events service `/onvif/events_service`: `CreatePullPointSubscription`, then at
//!   `/onvif/subscription/N`: `PullMessages` (waits up to its timeout for queued messages),
//!   `Renew`, `Unsubscribe`. An expired or ended subscription is a fault.
//!
//! Every call but `GetSystemDateAndTime` needs a UsernameToken whose PasswordDigest checks
//! (computed here independently of the client) and whose `Created` is within
//! [`CREATED_TOLERANCE`] of the simulator's clock; otherwise HTTP 400 with the SOAP fault
//! `env:Sender/ter:NotAuthorized`, as ONVIF Core requires. [`SimMode`] makes it answer
//! garbage or stop answering.

use std::{
    collections::{HashMap, VecDeque},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use jiff::{SignedDuration, Timestamp};
use roxmltree::{Document, Node};
use sha1::{Digest as _, Sha1};
use tokio::task::JoinHandle;

/// How far a UsernameToken's `Created` may be from the simulator's clock.
pub const CREATED_TOLERANCE: Duration = Duration::from_secs(30);

/// How the simulator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMode {
    Normal,
    /// HTTP 200 with bytes that are not XML.
    Garbage,
    /// Accepts the request and never answers (for 60 s).
    Silent,
}

#[derive(Debug, Clone)]
pub struct OnvifSimOptions {
    pub user: String,
    pub password: String,
    /// What `GetStreamUri` returns, for every profile.
    pub stream_uri: String,
    /// The simulator's clock minus the real one.
    pub clock_skew: SignedDuration,
    /// Answer `GetServices` with `ter:ActionNotSupported`, as devices before ONVIF 2.1 do.
    pub without_get_services: bool,
}

impl Default for OnvifSimOptions {
    fn default() -> Self {
        Self {
            user: "admin".to_owned(),
            password: "camera-pass".to_owned(),
            stream_uri: "rtsp://127.0.0.1:554/cam".to_owned(),
            clock_skew: SignedDuration::ZERO,
            without_get_services: false,
        }
    }
}

#[derive(Debug, Default)]
struct Subscription {
    ends: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    mode: SimMode,
    queue: VecDeque<String>,
    subscriptions: HashMap<u32, Subscription>,
    next_subscription: u32,
    renewals: u32,
    pulls: u32,
    unsubscribes: u32,
    refused_logins: u32,
}

#[derive(Debug)]
struct Shared {
    options: OnvifSimOptions,
    addr: SocketAddr,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.options.clock_skew)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// A running simulated camera; stops serving on drop.
#[derive(Debug)]
pub struct OnvifSim {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for OnvifSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OnvifSim {
    /// Starts serving on a free port of 127.0.0.1 (inside a tokio runtime).
    pub async fn start(options: OnvifSimOptions) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            addr,
            inner: Mutex::new(Inner {
                mode: SimMode::Normal,
                queue: VecDeque::new(),
                subscriptions: HashMap::new(),
                next_subscription: 1,
                renewals: 0,
                pulls: 0,
                unsubscribes: 0,
                refused_logins: 0,
            }),
        });
        let router = Router::new()
            .route("/{*path}", post(handle))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "the ONVIF simulator stopped");
            }
        });
        Ok(Self { shared, server })
    }

    /// `127.0.0.1:PORT`, what an installer would type.
    pub fn address(&self) -> String {
        self.shared.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/onvif/device_service`.
    pub fn device_url(&self) -> String {
        format!("http://{}/onvif/device_service", self.shared.addr)
    }

    pub fn set_mode(&self, mode: SimMode) {
        self.shared.lock().mode = mode;
    }

    /// Queues a cell motion detector message (`IsMotion`).
    pub fn push_motion(&self, on: bool) {
        self.push_event(
            "tns1:RuleEngine/CellMotionDetector/Motion",
            "<tt:SimpleItem Name=\"VideoSourceConfigurationToken\" Value=\"VideoSourceConfig_1\"/>\
             <tt:SimpleItem Name=\"VideoAnalyticsConfigurationToken\" Value=\"VideoAnalyticsConfig_1\"/>\
             <tt:SimpleItem Name=\"Rule\" Value=\"MyMotionDetectorRule\"/>",
            &format!("<tt:SimpleItem Name=\"IsMotion\" Value=\"{on}\"/>"),
        );
    }

    /// Queues a global scene change (tamper) message of the imaging service (`State`).
    pub fn push_tamper(&self, on: bool) {
        self.push_event(
            "tns1:VideoSource/GlobalSceneChange/ImagingService",
            "<tt:SimpleItem Name=\"Source\" Value=\"VideoSource_1\"/>",
            &format!("<tt:SimpleItem Name=\"State\" Value=\"{on}\"/>"),
        );
    }

    /// Queues a line detector crossing.
    pub fn push_line_crossing(&self, object_id: u32) {
        self.push_event(
            "tns1:RuleEngine/LineDetector/Crossed",
            "<tt:SimpleItem Name=\"VideoSourceConfigurationToken\" Value=\"VideoSourceConfig_1\"/>\
             <tt:SimpleItem Name=\"VideoAnalyticsConfigurationToken\" Value=\"VideoAnalyticsConfig_1\"/>\
             <tt:SimpleItem Name=\"Rule\" Value=\"Entrance line\"/>",
            &format!("<tt:SimpleItem Name=\"ObjectId\" Value=\"{object_id}\"/>"),
        );
    }

    /// Queues one `wsnt:NotificationMessage` element as it is (prefixes `wsnt`, `tt`, `tns1`
    /// are declared on the envelope).
    pub fn push_raw(&self, notification_message: &str) {
        self.shared
            .lock()
            .queue
            .push_back(notification_message.to_owned());
    }

    /// Queues a message of `topic` with `source` and `data` simple items.
    pub fn push_event(&self, topic: &str, source: &str, data: &str) {
        let at = self.shared.now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.push_raw(&format!(
            concat!(
                "<wsnt:NotificationMessage>",
                "<wsnt:Topic Dialect=\"http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet\">{topic}</wsnt:Topic>",
                "<wsnt:Message><tt:Message UtcTime=\"{at}\" PropertyOperation=\"Changed\">",
                "<tt:Source>{source}</tt:Source><tt:Data>{data}</tt:Data>",
                "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"
            ),
            topic = topic,
            at = at,
            source = source,
            data = data,
        ));
    }

    pub fn renewals(&self) -> u32 {
        self.shared.lock().renewals
    }

    pub fn pulls(&self) -> u32 {
        self.shared.lock().pulls
    }

    pub fn unsubscribes(&self) -> u32 {
        self.shared.lock().unsubscribes
    }

    /// Forgets every subscription, as a camera does when it restarts.
    pub fn forget_subscriptions(&self) {
        self.shared.lock().subscriptions.clear();
    }

    /// Subscriptions neither ended nor expired.
    pub fn live_subscriptions(&self) -> usize {
        let now = Instant::now();
        self.shared
            .lock()
            .subscriptions
            .values()
            .filter(|subscription| subscription.ends.is_some_and(|ends| ends > now))
            .count()
    }

    /// Requests refused for a wrong user, digest or time.
    pub fn refused_logins(&self) -> u32 {
        self.shared.lock().refused_logins
    }
}

/// An answer: HTTP status and the Body's content.
type Answer = (StatusCode, String);

fn envelope(body: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" ",
            "xmlns:ter=\"http://www.onvif.org/ver10/error\" ",
            "xmlns:tds=\"http://www.onvif.org/ver10/device/wsdl\" ",
            "xmlns:trt=\"http://www.onvif.org/ver10/media/wsdl\" ",
            "xmlns:tev=\"http://www.onvif.org/ver10/events/wsdl\" ",
            "xmlns:tt=\"http://www.onvif.org/ver10/schema\" ",
            "xmlns:wsnt=\"http://docs.oasis-open.org/wsn/b-2\" ",
            "xmlns:wsa5=\"http://www.w3.org/2005/08/addressing\" ",
            "xmlns:tns1=\"http://www.onvif.org/ver10/topics\">",
            "<env:Header/><env:Body>{}</env:Body></env:Envelope>"
        ),
        body
    )
}

fn fault(status: StatusCode, subcodes: &[&str], reason: &str) -> Answer {
    let code = if status.is_server_error() {
        "env:Receiver"
    } else {
        "env:Sender"
    };
    let mut nested = String::new();
    for subcode in subcodes {
        nested.push_str(&format!("<env:Subcode><env:Value>{subcode}</env:Value>"));
    }
    for _ in subcodes {
        nested.push_str("</env:Subcode>");
    }
    (
        status,
        format!(
            "<env:Fault><env:Code><env:Value>{code}</env:Value>{nested}</env:Code>\
             <env:Reason><env:Text xml:lang=\"en\">{reason}</env:Text></env:Reason></env:Fault>"
        ),
    )
}

fn child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|child| child.is_element() && child.tag_name().name() == local)
}

fn text<'a>(node: Option<Node<'a, '_>>) -> &'a str {
    node.and_then(|node| node.text()).unwrap_or_default().trim()
}

/// `PT10S`, `PT1M`, `PT1M30S` (hours, minutes, seconds; enough for the client).
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim().strip_prefix("PT")?;
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let number: f64 = rest[..end].parse().ok()?;
        seconds += number
            * match &rest[end..=end] {
                "H" => 3600.0,
                "M" => 60.0,
                "S" => 1.0,
                _ => return None,
            };
        rest = &rest[end + 1..];
    }
    Some(Duration::from_secs_f64(seconds))
}

/// The UsernameToken checks: user, PasswordDigest = Base64(SHA-1(nonce + created +
/// password)), and `Created` near the simulator's clock.
fn check_token(shared: &Shared, header: Option<Node<'_, '_>>) -> Result<(), &'static str> {
    let token = header
        .and_then(|header| child(header, "Security"))
        .and_then(|security| child(security, "UsernameToken"))
        .ok_or("no UsernameToken")?;
    if text(child(token, "Username")) != shared.options.user {
        return Err("unknown user");
    }
    let password = child(token, "Password").ok_or("no Password")?;
    if !password
        .attribute("Type")
        .is_some_and(|kind| kind.ends_with("#PasswordDigest"))
    {
        return Err("not a PasswordDigest");
    }
    let nonce = BASE64
        .decode(text(child(token, "Nonce")))
        .map_err(|_| "Nonce is not Base64")?;
    let created = text(child(token, "Created"));
    let mut sha1 = Sha1::new();
    sha1.update(&nonce);
    sha1.update(created.as_bytes());
    sha1.update(shared.options.password.as_bytes());
    if BASE64.encode(sha1.finalize()) != text(Some(password)) {
        return Err("wrong digest");
    }
    let created: Timestamp = created.parse().map_err(|_| "Created is not a time")?;
    let apart = created.duration_since(shared.now()).unsigned_abs();
    if apart > CREATED_TOLERANCE {
        return Err("Created is too far from the device's clock");
    }
    Ok(())
}

async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, body: String) -> Response {
    let mode = shared.lock().mode;
    match mode {
        SimMode::Normal => {}
        SimMode::Garbage => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/soap+xml")],
                "\u{1}\u{2}<<garbage>> not a SOAP answer &&",
            )
                .into_response();
        }
        SimMode::Silent => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let (status, answer) = answer(&shared, uri.path(), &body).await;
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
        envelope(&answer),
    )
        .into_response()
}

async fn answer(shared: &Shared, path: &str, body: &str) -> Answer {
    let Ok(document) = Document::parse(body) else {
        return fault(StatusCode::BAD_REQUEST, &["ter:WellFormed"], "not XML");
    };
    let envelope = document.root_element();
    let Some(operation) = child(envelope, "Body").and_then(|body| body.first_element_child())
    else {
        return fault(StatusCode::BAD_REQUEST, &["ter:WellFormed"], "no Body");
    };
    let name = operation.tag_name().name();
    if name != "GetSystemDateAndTime"
        && let Err(why) = check_token(shared, child(envelope, "Header"))
    {
        shared.lock().refused_logins += 1;
        tracing::debug!(why, "ONVIF simulator refuses the UsernameToken");
        return fault(
            StatusCode::BAD_REQUEST,
            &["ter:NotAuthorized"],
            "Sender not Authorized",
        );
    }
    match (path, name) {
        ("/onvif/device_service", "GetSystemDateAndTime") => ok(system_date_and_time(shared.now())),
        ("/onvif/device_service", "GetServices") if shared.options.without_get_services => fault(
            StatusCode::BAD_REQUEST,
            &["ter:ActionNotSupported"],
            "GetServices is not supported",
        ),
        ("/onvif/device_service", "GetServices") => ok(services(shared.addr)),
        ("/onvif/device_service", "GetCapabilities") => ok(capabilities(shared.addr)),
        ("/onvif/media_service", "GetProfiles") => ok(PROFILES.to_owned()),
        ("/onvif/media_service", "GetStreamUri" | "GetSnapshotUri") => {
            let token = text(child(operation, "ProfileToken"));
            if token != "Profile_1" && token != "Profile_2" {
                return fault(
                    StatusCode::BAD_REQUEST,
                    &["ter:InvalidArgVal", "ter:NoProfile"],
                    "The requested profile token does not exist",
                );
            }
            let uri = if name == "GetStreamUri" {
                shared.options.stream_uri.clone()
            } else {
                format!("http://{}/snapshot/{token}.jpg", shared.addr)
            };
            ok(format!(
                "<trt:{name}Response><trt:MediaUri><tt:Uri>{}</tt:Uri>\
                 <tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>\
                 <tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>\
                 <tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:{name}Response>",
                escape(&uri)
            ))
        }
        ("/onvif/events_service", "CreatePullPointSubscription") => {
            let lifetime = parse_duration(text(child(operation, "InitialTerminationTime")))
                .unwrap_or(Duration::from_secs(60));
            let id = {
                let mut inner = shared.lock();
                let id = inner.next_subscription;
                inner.next_subscription += 1;
                inner.subscriptions.insert(
                    id,
                    Subscription {
                        ends: Some(Instant::now() + lifetime),
                    },
                );
                id
            };
            let now = shared.now();
            ok(format!(
                "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>\
                 <wsa5:Address>http://{}/onvif/subscription/{id}</wsa5:Address>\
                 </tev:SubscriptionReference>\
                 <wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime>\
                 </tev:CreatePullPointSubscriptionResponse>",
                shared.addr,
                xs_time(now),
                xs_time(now + signed(lifetime)),
            ))
        }
        (path, _) if path.starts_with("/onvif/subscription/") => {
            let id = path
                .trim_start_matches("/onvif/subscription/")
                .parse::<u32>()
                .unwrap_or(0);
            subscription_call(shared, id, name, operation).await
        }
        _ => fault(
            StatusCode::BAD_REQUEST,
            &["ter:ActionNotSupported"],
            "not supported by this simulator",
        ),
    }
}

async fn subscription_call(
    shared: &Shared,
    id: u32,
    name: &str,
    operation: Node<'_, '_>,
) -> Answer {
    let left = |inner: &Inner| {
        inner
            .subscriptions
            .get(&id)
            .and_then(|subscription| subscription.ends)
            .and_then(|ends| ends.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    };
    let unknown = || {
        fault(
            StatusCode::BAD_REQUEST,
            &["ter:InvalidArgVal"],
            "unknown or expired subscription",
        )
    };
    match name {
        "PullMessages" => {
            let timeout = parse_duration(text(child(operation, "Timeout")))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(30));
            let limit = text(child(operation, "MessageLimit"))
                .parse::<usize>()
                .unwrap_or(1)
                .max(1);
            let deadline = Instant::now() + timeout;
            let messages: Vec<String> = loop {
                {
                    let mut inner = shared.lock();
                    if left(&inner).is_none() {
                        return unknown();
                    }
                    if !inner.queue.is_empty() || Instant::now() >= deadline {
                        inner.pulls += 1;
                        let count = limit.min(inner.queue.len());
                        break inner.queue.drain(..count).collect();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let Some(left) = left(&shared.lock()) else {
                return unknown();
            };
            let now = shared.now();
            ok(format!(
                "<tev:PullMessagesResponse><tev:CurrentTime>{}</tev:CurrentTime>\
                 <tev:TerminationTime>{}</tev:TerminationTime>{}</tev:PullMessagesResponse>",
                xs_time(now),
                xs_time(now + signed(left)),
                messages.concat(),
            ))
        }
        "Renew" => {
            let lifetime = parse_duration(text(child(operation, "TerminationTime")))
                .unwrap_or(Duration::from_secs(60));
            let mut inner = shared.lock();
            if left(&inner).is_none() {
                return unknown();
            }
            inner.renewals += 1;
            if let Some(subscription) = inner.subscriptions.get_mut(&id) {
                subscription.ends = Some(Instant::now() + lifetime);
            }
            let now = shared.now();
            ok(format!(
                "<wsnt:RenewResponse><wsnt:TerminationTime>{}</wsnt:TerminationTime>\
                 <wsnt:CurrentTime>{}</wsnt:CurrentTime></wsnt:RenewResponse>",
                xs_time(now + signed(lifetime)),
                xs_time(now),
            ))
        }
        "Unsubscribe" => {
            let mut inner = shared.lock();
            if left(&inner).is_none() {
                return unknown();
            }
            inner.unsubscribes += 1;
            inner.subscriptions.remove(&id);
            ok("<wsnt:UnsubscribeResponse/>".to_owned())
        }
        _ => fault(
            StatusCode::BAD_REQUEST,
            &["ter:ActionNotSupported"],
            "not a subscription call",
        ),
    }
}

fn ok(body: String) -> Answer {
    (StatusCode::OK, body)
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::ZERO)
}

fn xs_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn system_date_and_time(now: Timestamp) -> String {
    let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>\
         <tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>\
         <tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>\
         <tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time>\
         <tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime>\
         </tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.year(),
        utc.month(),
        utc.day()
    )
}

fn services(addr: SocketAddr) -> String {
    let service = |namespace: &str, path: &str| {
        format!(
            "<tds:Service><tds:Namespace>{namespace}</tds:Namespace>\
             <tds:XAddr>http://{addr}/onvif/{path}</tds:XAddr>\
             <tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
        )
    };
    format!(
        "<tds:GetServicesResponse>{}{}{}</tds:GetServicesResponse>",
        service("http://www.onvif.org/ver10/device/wsdl", "device_service"),
        service("http://www.onvif.org/ver10/media/wsdl", "media_service"),
        service("http://www.onvif.org/ver10/events/wsdl", "events_service"),
    )
}

fn capabilities(addr: SocketAddr) -> String {
    format!(
        "<tds:GetCapabilitiesResponse><tds:Capabilities>\
         <tt:Device><tt:XAddr>http://{addr}/onvif/device_service</tt:XAddr></tt:Device>\
         <tt:Events><tt:XAddr>http://{addr}/onvif/events_service</tt:XAddr>\
         <tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>\
         <tt:WSPullPointSupport>true</tt:WSPullPointSupport>\
         <tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>\
         <tt:Media><tt:XAddr>http://{addr}/onvif/media_service</tt:XAddr>\
         <tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>\
         <tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>\
         </tds:Capabilities></tds:GetCapabilitiesResponse>"
    )
}

/// The test camera's two H.264 streams (as `gatehouse-test-camera` defaults) and an audio-only
/// profile.
const PROFILES: &str = "<trt:GetProfilesResponse>\
<trt:Profiles token=\"Profile_1\" fixed=\"true\"><tt:Name>mainStream</tt:Name>\
<tt:VideoSourceConfiguration token=\"VideoSourceConfig_1\"><tt:Name>VideoSourceConfig_1</tt:Name><tt:UseCount>2</tt:UseCount>\
<tt:SourceToken>VideoSource_1</tt:SourceToken><tt:Bounds x=\"0\" y=\"0\" width=\"320\" height=\"240\"/></tt:VideoSourceConfiguration>\
<tt:VideoEncoderConfiguration token=\"VideoEncoder_1\"><tt:Name>VideoEncoder_1</tt:Name><tt:UseCount>1</tt:UseCount>\
<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>320</tt:Width><tt:Height>240</tt:Height></tt:Resolution>\
<tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>15</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>\
<tt:BitrateLimit>500</tt:BitrateLimit></tt:RateControl><tt:H264><tt:GovLength>30</tt:GovLength><tt:H264Profile>Baseline</tt:H264Profile></tt:H264>\
<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration></trt:Profiles>\
<trt:Profiles token=\"Profile_2\" fixed=\"true\"><tt:Name>subStream</tt:Name>\
<tt:VideoEncoderConfiguration token=\"VideoEncoder_2\"><tt:Name>VideoEncoder_2</tt:Name><tt:UseCount>1</tt:UseCount>\
<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>160</tt:Width><tt:Height>120</tt:Height></tt:Resolution>\
<tt:Quality>3</tt:Quality><tt:RateControl><tt:FrameRateLimit>5</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>\
<tt:BitrateLimit>128</tt:BitrateLimit></tt:RateControl></tt:VideoEncoderConfiguration></trt:Profiles>\
<trt:Profiles token=\"Profile_Audio\"><tt:Name>audioOnly</tt:Name></trt:Profiles>\
</trt:GetProfilesResponse>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("PT1M30S"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("PTxS"), None);
    }
}

//! The ONVIF requests the client makes and the parsers of their answers. Pure: each request is
//! a SOAP action and a body, each parser takes the answer's text.
//!
//! - Device service (`tds`): `GetSystemDateAndTime`, `GetServices`, `GetCapabilities`.
//! - Media service, version 1 (`trt`): `GetProfiles`, `GetStreamUri`, `GetSnapshotUri`.
//! - Events service (`tev`, WS-BaseNotification `wsnt`): `CreatePullPointSubscription`,
//!   `PullMessages`, `Renew`, `Unsubscribe`.

use std::time::Duration;

use jiff::Timestamp;
use roxmltree::Node;

use super::events::{CameraEvent, parse_notification};
use super::soap::{
    self, AnswerError, ReferenceParameter, attribute, child, children, escape, optional_time, path,
    required_text, required_time, text_of, xs_duration,
};

pub const DEVICE_NS: &str = "http://www.onvif.org/ver10/device/wsdl";
pub const MEDIA_NS: &str = "http://www.onvif.org/ver10/media/wsdl";
pub const EVENTS_NS: &str = "http://www.onvif.org/ver10/events/wsdl";
pub const SCHEMA_NS: &str = "http://www.onvif.org/ver10/schema";
pub const WSNT_NS: &str = "http://docs.oasis-open.org/wsn/b-2";

pub const ACTION_CREATE_PULL_POINT: &str =
    "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
pub const ACTION_PULL_MESSAGES: &str =
    "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";
pub const ACTION_RENEW: &str =
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest";
pub const ACTION_UNSUBSCRIBE: &str =
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest";

/// One request: the SOAP action (also sent in the Content-Type) and the Body's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The operation's name, for errors and logs (`GetProfiles`).
    pub call: &'static str,
    pub action: String,
    pub body: String,
}

/// Where a device's services are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    pub media: Option<String>,
    pub events: Option<String>,
}

/// One media profile: a token for the other calls, and what its video encoder sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaProfile {
    pub token: String,
    pub name: String,
    /// `None` for a profile without a video encoder (audio or metadata only).
    pub video: Option<VideoEncoder>,
}

/// A profile's `VideoEncoderConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoEncoder {
    /// As the camera says it: `H264`, `H265`, `JPEG`, `MPEG4`.
    pub encoding: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate_limit: Option<u32>,
    pub bitrate_limit_kbps: Option<u32>,
}

/// A stream or snapshot address (`MediaUri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaUri {
    pub uri: String,
    pub invalid_after_connect: bool,
    pub invalid_after_reboot: bool,
}

/// A new PullPoint subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The subscription's own address, where PullMessages, Renew and Unsubscribe go.
    pub address: String,
    pub reference_parameters: Vec<ReferenceParameter>,
    /// The device's clock when it answered.
    pub current_time: Timestamp,
    pub termination_time: Timestamp,
}

/// What a PullMessages answer holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledMessages {
    pub current_time: Timestamp,
    pub termination_time: Timestamp,
    pub events: Vec<CameraEvent>,
}

/// What a Renew answer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub current_time: Option<Timestamp>,
    pub termination_time: Timestamp,
}

fn request(call: &'static str, namespace: &str, prefix: &str, inner: &str) -> Request {
    let body = if inner.is_empty() {
        format!(r#"<{prefix}:{call} xmlns:{prefix}="{namespace}"/>"#)
    } else {
        format!(
            r#"<{prefix}:{call} xmlns:{prefix}="{namespace}" xmlns:tt="{SCHEMA_NS}">{inner}</{prefix}:{call}>"#
        )
    };
    Request {
        call,
        action: format!("{namespace}/{call}"),
        body,
    }
}

/// The answer's element named `response` inside the Body, after fault checks.
fn response<'a, 'i>(
    document: &'a roxmltree::Document<'i>,
    response: &'static str,
) -> Result<Node<'a, 'i>, AnswerError> {
    let body = soap::body(document)?;
    child(body, response).ok_or(AnswerError::Missing { element: response })
}

// ---- device service ----

pub fn get_system_date_and_time() -> Request {
    request("GetSystemDateAndTime", DEVICE_NS, "tds", "")
}

/// The device's clock (`SystemDateAndTime/UTCDateTime`), for the UsernameToken's `Created`.
pub fn parse_system_date_and_time(text: &str) -> Result<Timestamp, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "GetSystemDateAndTimeResponse")?;
    let utc = path(answer, &["SystemDateAndTime", "UTCDateTime"]).ok_or(AnswerError::Missing {
        element: "SystemDateAndTime/UTCDateTime",
    })?;
    let number = |parent: &str, local: &str, element: &'static str| -> Result<i64, AnswerError> {
        let text = child(utc, parent)
            .and_then(|node| child(node, local))
            .and_then(text_of)
            .ok_or(AnswerError::Missing { element })?;
        text.parse().map_err(|_| AnswerError::Invalid {
            element,
            value: text.to_owned(),
            expected: "a number",
        })
    };
    let year = number("Date", "Year", "UTCDateTime/Date/Year")?;
    let month = number("Date", "Month", "UTCDateTime/Date/Month")?;
    let day = number("Date", "Day", "UTCDateTime/Date/Day")?;
    let hour = number("Time", "Hour", "UTCDateTime/Time/Hour")?;
    let minute = number("Time", "Minute", "UTCDateTime/Time/Minute")?;
    let second = number("Time", "Second", "UTCDateTime/Time/Second")?;
    let invalid = || AnswerError::Invalid {
        element: "SystemDateAndTime/UTCDateTime",
        value: format!("{year}-{month}-{day} {hour}:{minute}:{second}"),
        expected: "a date and time",
    };
    let narrow = |n: i64| i8::try_from(n).map_err(|_| invalid());
    let civil = jiff::civil::DateTime::new(
        i16::try_from(year).map_err(|_| invalid())?,
        narrow(month)?,
        narrow(day)?,
        narrow(hour)?,
        narrow(minute)?,
        narrow(second)?,
        0,
    )
    .map_err(|_| invalid())?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|zoned| zoned.timestamp())
        .map_err(|_| invalid())
}

pub fn get_services() -> Request {
    request(
        "GetServices",
        DEVICE_NS,
        "tds",
        "<tds:IncludeCapability>false</tds:IncludeCapability>",
    )
}

/// The media (version 1) and events services' addresses from `GetServicesResponse/Service`.
pub fn parse_services(text: &str) -> Result<Services, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "GetServicesResponse")?;
    let mut services = Services::default();
    for service in children(answer, "Service") {
        let (Some(namespace), Some(address)) = (
            child(service, "Namespace").and_then(text_of),
            child(service, "XAddr").and_then(text_of),
        ) else {
            continue;
        };
        let slot = match namespace {
            MEDIA_NS => &mut services.media,
            EVENTS_NS => &mut services.events,
            _ => continue,
        };
        slot.get_or_insert_with(|| address.to_owned());
    }
    Ok(services)
}

pub fn get_capabilities() -> Request {
    request(
        "GetCapabilities",
        DEVICE_NS,
        "tds",
        "<tds:Category>All</tds:Category>",
    )
}

/// `Capabilities/Media/XAddr` and `Capabilities/Events/XAddr`, for devices without GetServices.
pub fn parse_capabilities(text: &str) -> Result<Services, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "GetCapabilitiesResponse")?;
    let capabilities = child(answer, "Capabilities").ok_or(AnswerError::Missing {
        element: "GetCapabilitiesResponse/Capabilities",
    })?;
    let address = |service: &str| {
        path(capabilities, &[service, "XAddr"])
            .and_then(text_of)
            .map(str::to_owned)
    };
    Ok(Services {
        media: address("Media"),
        events: address("Events"),
    })
}

// ---- media service ----

pub fn get_profiles() -> Request {
    request("GetProfiles", MEDIA_NS, "trt", "")
}

pub fn parse_profiles(text: &str) -> Result<Vec<MediaProfile>, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "GetProfilesResponse")?;
    children(answer, "Profiles")
        .map(|profile| {
            let token = attribute(profile, "token").ok_or(AnswerError::Missing {
                element: "Profiles/@token",
            })?;
            let name = child(profile, "Name")
                .and_then(text_of)
                .unwrap_or(token)
                .to_owned();
            let video = child(profile, "VideoEncoderConfiguration")
                .map(parse_video_encoder)
                .transpose()?;
            Ok(MediaProfile {
                token: token.to_owned(),
                name,
                video,
            })
        })
        .collect()
}

fn parse_video_encoder(encoder: Node<'_, '_>) -> Result<VideoEncoder, AnswerError> {
    let encoding = required_text(encoder, "Encoding", "VideoEncoderConfiguration/Encoding")?;
    let resolution = child(encoder, "Resolution").ok_or(AnswerError::Missing {
        element: "VideoEncoderConfiguration/Resolution",
    })?;
    let number = |node: Node<'_, '_>, local: &str, element: &'static str| {
        let text = required_text(node, local, element)?;
        text.parse::<u32>().map_err(|_| AnswerError::Invalid {
            element,
            value: text.to_owned(),
            expected: "a whole number",
        })
    };
    let rate = child(encoder, "RateControl");
    let optional = |local: &str, element: &'static str| {
        rate.filter(|rate| child(*rate, local).is_some())
            .map(|rate| number(rate, local, element))
            .transpose()
    };
    Ok(VideoEncoder {
        encoding: encoding.to_owned(),
        width: number(
            resolution,
            "Width",
            "VideoEncoderConfiguration/Resolution/Width",
        )?,
        height: number(
            resolution,
            "Height",
            "VideoEncoderConfiguration/Resolution/Height",
        )?,
        frame_rate_limit: optional("FrameRateLimit", "RateControl/FrameRateLimit")?,
        bitrate_limit_kbps: optional("BitrateLimit", "RateControl/BitrateLimit")?,
    })
}

/// `GetStreamUri` for RTP unicast over RTSP (Profile S's must-have).
pub fn get_stream_uri(profile_token: &str) -> Request {
    request(
        "GetStreamUri",
        MEDIA_NS,
        "trt",
        &format!(
            concat!(
                "<trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>",
                "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>",
                "<trt:ProfileToken>{}</trt:ProfileToken>"
            ),
            escape(profile_token)
        ),
    )
}

pub fn get_snapshot_uri(profile_token: &str) -> Request {
    request(
        "GetSnapshotUri",
        MEDIA_NS,
        "trt",
        &format!(
            "<trt:ProfileToken>{}</trt:ProfileToken>",
            escape(profile_token)
        ),
    )
}

/// `GetStreamUriResponse/MediaUri` or `GetSnapshotUriResponse/MediaUri`.
pub fn parse_media_uri(text: &str, response_name: &'static str) -> Result<MediaUri, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, response_name)?;
    let media_uri = child(answer, "MediaUri").ok_or(AnswerError::Missing {
        element: "MediaUri",
    })?;
    let flag = |local: &str| {
        child(media_uri, local)
            .and_then(text_of)
            .is_some_and(|text| text == "true" || text == "1")
    };
    Ok(MediaUri {
        uri: required_text(media_uri, "Uri", "MediaUri/Uri")?.to_owned(),
        invalid_after_connect: flag("InvalidAfterConnect"),
        invalid_after_reboot: flag("InvalidAfterReboot"),
    })
}

// ---- events service ----

/// Subscribes to every topic (no filter: cameras differ in which filters they accept).
pub fn create_pull_point_subscription(initial_termination: Duration) -> Request {
    Request {
        action: ACTION_CREATE_PULL_POINT.to_owned(),
        ..request(
            "CreatePullPointSubscription",
            EVENTS_NS,
            "tev",
            &format!(
                "<tev:InitialTerminationTime>{}</tev:InitialTerminationTime>",
                xs_duration(initial_termination)
            ),
        )
    }
}

pub fn parse_subscription(text: &str) -> Result<Subscription, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "CreatePullPointSubscriptionResponse")?;
    let reference = child(answer, "SubscriptionReference").ok_or(AnswerError::Missing {
        element: "SubscriptionReference",
    })?;
    let address = required_text(reference, "Address", "SubscriptionReference/Address")?;
    let reference_parameters = child(reference, "ReferenceParameters")
        .map(|parameters| {
            parameters
                .children()
                .filter(|node| node.is_element())
                .map(|node| ReferenceParameter {
                    namespace: node.tag_name().namespace().map(str::to_owned),
                    name: node.tag_name().name().to_owned(),
                    value: node.text().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Subscription {
        address: address.to_owned(),
        reference_parameters,
        current_time: required_time(answer, "CurrentTime", "CurrentTime")?,
        termination_time: required_time(answer, "TerminationTime", "TerminationTime")?,
    })
}

pub fn pull_messages(timeout: Duration, message_limit: u32) -> Request {
    Request {
        action: ACTION_PULL_MESSAGES.to_owned(),
        ..request(
            "PullMessages",
            EVENTS_NS,
            "tev",
            &format!(
                "<tev:Timeout>{}</tev:Timeout><tev:MessageLimit>{}</tev:MessageLimit>",
                xs_duration(timeout),
                message_limit.max(1)
            ),
        )
    }
}

/// The messages in order; an unknown or unreadable message becomes a
/// [`super::CameraEventKind::Other`] or [`super::CameraEventKind::Invalid`] event, never an
/// error for the whole answer.
pub fn parse_pull_messages(text: &str) -> Result<PulledMessages, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "PullMessagesResponse")?;
    let current_time = required_time(answer, "CurrentTime", "PullMessagesResponse/CurrentTime")?;
    Ok(PulledMessages {
        current_time,
        termination_time: required_time(
            answer,
            "TerminationTime",
            "PullMessagesResponse/TerminationTime",
        )?,
        events: children(answer, "NotificationMessage")
            .map(|message| parse_notification(message, current_time))
            .collect(),
    })
}

pub fn renew(termination: Duration) -> Request {
    Request {
        action: ACTION_RENEW.to_owned(),
        ..request(
            "Renew",
            WSNT_NS,
            "wsnt",
            &format!(
                "<wsnt:TerminationTime>{}</wsnt:TerminationTime>",
                xs_duration(termination)
            ),
        )
    }
}

pub fn parse_renew(text: &str) -> Result<Renewed, AnswerError> {
    let document = soap::parse(text)?;
    let answer = response(&document, "RenewResponse")?;
    Ok(Renewed {
        current_time: optional_time(answer, "CurrentTime", "RenewResponse/CurrentTime")?,
        termination_time: required_time(
            answer,
            "TerminationTime",
            "RenewResponse/TerminationTime",
        )?,
    })
}

pub fn unsubscribe() -> Request {
    Request {
        action: ACTION_UNSUBSCRIBE.to_owned(),
        ..request("Unsubscribe", WSNT_NS, "wsnt", "")
    }
}

pub fn parse_unsubscribe(text: &str) -> Result<(), AnswerError> {
    let document = soap::parse(text)?;
    response(&document, "UnsubscribeResponse").map(drop)
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;
    use crate::video::onvif::events::CameraEventKind;

    fn envelope(body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"
  xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"
  xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"
  xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:wsa5="http://www.w3.org/2005/08/addressing"
  xmlns:tns1="http://www.onvif.org/ver10/topics">
<SOAP-ENV:Header/>
<SOAP-ENV:Body>{body}</SOAP-ENV:Body>
</SOAP-ENV:Envelope>"#
        )
    }

    fn at(text: &str) -> anyhow::Result<Timestamp> {
        Ok(text.parse()?)
    }

    #[test]
    fn requests_are_well_formed_soap() -> anyhow::Result<()> {
        for request in [
            get_system_date_and_time(),
            get_services(),
            get_capabilities(),
            get_profiles(),
            get_stream_uri("Profile<1>"),
            get_snapshot_uri("Profile_1"),
            create_pull_point_subscription(Duration::from_secs(60)),
            pull_messages(Duration::from_secs(10), 0),
            renew(Duration::from_secs(60)),
            unsubscribe(),
        ] {
            let xml = soap::envelope(None, None, &request.body);
            let document = soap::parse(&xml)?;
            let body = soap::body(&document)?;
            let operation = body.first_element_child().context("no operation")?;
            assert_eq!(
                operation.tag_name().name(),
                request.call,
                "{}",
                request.body
            );
        }
        let stream = get_stream_uri("Profile<1>");
        assert_eq!(
            stream.action,
            "http://www.onvif.org/ver10/media/wsdl/GetStreamUri"
        );
        assert!(
            stream
                .body
                .contains("<trt:ProfileToken>Profile&lt;1&gt;</trt:ProfileToken>")
        );
        assert!(stream.body.contains("<tt:Stream>RTP-Unicast</tt:Stream>"));
        assert!(stream.body.contains("<tt:Protocol>RTSP</tt:Protocol>"));
        let pull = pull_messages(Duration::from_secs(10), 0);
        assert!(
            pull.body
                .contains("<tev:Timeout>PT10S</tev:Timeout><tev:MessageLimit>1</tev:MessageLimit>")
        );
        assert_eq!(pull.action, ACTION_PULL_MESSAGES);
        Ok(())
    }

    #[test]
    fn system_date_and_time() -> anyhow::Result<()> {
        let xml = envelope(
            r#"<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>
  <tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>
  <tt:TimeZone><tt:TZ>CET-1CEST,M3.5.0,M10.5.0/3</tt:TZ></tt:TimeZone>
  <tt:UTCDateTime><tt:Time><tt:Hour>13</tt:Hour><tt:Minute>5</tt:Minute><tt:Second>9</tt:Second></tt:Time>
    <tt:Date><tt:Year>2026</tt:Year><tt:Month>11</tt:Month><tt:Day>26</tt:Day></tt:Date></tt:UTCDateTime>
  <tt:LocalDateTime><tt:Time><tt:Hour>14</tt:Hour><tt:Minute>5</tt:Minute><tt:Second>9</tt:Second></tt:Time>
    <tt:Date><tt:Year>2026</tt:Year><tt:Month>11</tt:Month><tt:Day>26</tt:Day></tt:Date></tt:LocalDateTime>
</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"#,
        );
        assert_eq!(
            parse_system_date_and_time(&xml),
            Ok(at("2026-11-26T13:05:09Z")?)
        );
        let bad = xml.replace("<tt:Month>11</tt:Month>", "<tt:Month>13</tt:Month>");
        assert!(matches!(
            parse_system_date_and_time(&bad),
            Err(AnswerError::Invalid { .. })
        ));
        let missing = xml.replace("<tt:Hour>13</tt:Hour>", "");
        assert_eq!(
            parse_system_date_and_time(&missing),
            Err(AnswerError::Missing {
                element: "UTCDateTime/Time/Hour"
            })
        );
        Ok(())
    }

    #[test]
    fn services_and_capabilities() -> anyhow::Result<()> {
        let services = envelope(
            r#"<tds:GetServicesResponse>
  <tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace>
    <tds:XAddr>http://10.0.0.9/onvif/device_service</tds:XAddr>
    <tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>
  <tds:Service><tds:Namespace>http://www.onvif.org/ver20/media/wsdl</tds:Namespace>
    <tds:XAddr>http://10.0.0.9/onvif/media2_service</tds:XAddr>
    <tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>
  <tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace>
    <tds:XAddr>http://10.0.0.9/onvif/media_service</tds:XAddr>
    <tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>
  <tds:Service><tds:Namespace>http://www.onvif.org/ver10/events/wsdl</tds:Namespace>
    <tds:XAddr>http://10.0.0.9/onvif/event_service</tds:XAddr>
    <tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>
</tds:GetServicesResponse>"#,
        );
        let expected = Services {
            media: Some("http://10.0.0.9/onvif/media_service".into()),
            events: Some("http://10.0.0.9/onvif/event_service".into()),
        };
        assert_eq!(parse_services(&services), Ok(expected.clone()));

        let capabilities = envelope(
            r#"<tds:GetCapabilitiesResponse><tds:Capabilities>
  <tt:Device><tt:XAddr>http://10.0.0.9/onvif/device_service</tt:XAddr></tt:Device>
  <tt:Events><tt:XAddr>http://10.0.0.9/onvif/event_service</tt:XAddr>
    <tt:WSSubscriptionPolicySupport>true</tt:WSSubscriptionPolicySupport>
    <tt:WSPullPointSupport>true</tt:WSPullPointSupport>
    <tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>
  <tt:Media><tt:XAddr>http://10.0.0.9/onvif/media_service</tt:XAddr>
    <tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>
</tds:Capabilities></tds:GetCapabilitiesResponse>"#,
        );
        assert_eq!(parse_capabilities(&capabilities), Ok(expected));
        let no_events = capabilities
            .replace("<tt:Events>", "<tt:Other>")
            .replace("</tt:Events>", "</tt:Other>");
        assert_eq!(parse_capabilities(&no_events)?.events, None);
        assert_eq!(
            parse_capabilities(&envelope("<tds:GetCapabilitiesResponse/>")),
            Err(AnswerError::Missing {
                element: "GetCapabilitiesResponse/Capabilities"
            })
        );
        Ok(())
    }

    const PROFILES: &str = r#"<trt:GetProfilesResponse>
  <trt:Profiles token="Profile_1" fixed="true">
    <tt:Name>mainStream</tt:Name>
    <tt:VideoSourceConfiguration token="VideoSourceConfig_1"><tt:Name>VideoSource_1</tt:Name><tt:UseCount>2</tt:UseCount>
      <tt:SourceToken>VideoSource_1</tt:SourceToken><tt:Bounds x="0" y="0" width="1920" height="1080"/></tt:VideoSourceConfiguration>
    <tt:VideoEncoderConfiguration token="VideoEncoder_1"><tt:Name>VideoEncoder_1</tt:Name><tt:UseCount>1</tt:UseCount>
      <tt:Encoding>H264</tt:Encoding>
      <tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution>
      <tt:Quality>5</tt:Quality>
      <tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl>
      <tt:H264><tt:GovLength>50</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>
      <tt:SessionTimeout>PT60S</tt:SessionTimeout>
    </tt:VideoEncoderConfiguration>
  </trt:Profiles>
  <trt:Profiles token="Profile_2" fixed="true">
    <tt:Name>subStream</tt:Name>
    <tt:VideoEncoderConfiguration token="VideoEncoder_2"><tt:Name>VideoEncoder_2</tt:Name><tt:UseCount>1</tt:UseCount>
      <tt:Encoding>JPEG</tt:Encoding>
      <tt:Resolution><tt:Width>640</tt:Width><tt:Height>360</tt:Height></tt:Resolution>
    </tt:VideoEncoderConfiguration>
  </trt:Profiles>
  <trt:Profiles token="Profile_Audio"><tt:Name>audio</tt:Name></trt:Profiles>
</trt:GetProfilesResponse>"#;

    #[test]
    fn profiles() -> anyhow::Result<()> {
        let profiles = parse_profiles(&envelope(PROFILES))?;
        assert_eq!(
            profiles,
            [
                MediaProfile {
                    token: "Profile_1".into(),
                    name: "mainStream".into(),
                    video: Some(VideoEncoder {
                        encoding: "H264".into(),
                        width: 1920,
                        height: 1080,
                        frame_rate_limit: Some(25),
                        bitrate_limit_kbps: Some(4096),
                    }),
                },
                MediaProfile {
                    token: "Profile_2".into(),
                    name: "subStream".into(),
                    video: Some(VideoEncoder {
                        encoding: "JPEG".into(),
                        width: 640,
                        height: 360,
                        frame_rate_limit: None,
                        bitrate_limit_kbps: None,
                    }),
                },
                MediaProfile {
                    token: "Profile_Audio".into(),
                    name: "audio".into(),
                    video: None,
                },
            ]
        );
        assert_eq!(
            parse_profiles(&envelope("<trt:GetProfilesResponse/>")),
            Ok(vec![])
        );
        Ok(())
    }

    #[test]
    fn profiles_with_missing_or_bad_elements() -> anyhow::Result<()> {
        let no_token = envelope(&PROFILES.replace(r#" token="Profile_2""#, ""));
        assert_eq!(
            parse_profiles(&no_token),
            Err(AnswerError::Missing {
                element: "Profiles/@token"
            })
        );
        let bad_width =
            envelope(&PROFILES.replace("<tt:Width>640</tt:Width>", "<tt:Width>wide</tt:Width>"));
        assert_eq!(
            parse_profiles(&bad_width),
            Err(AnswerError::Invalid {
                element: "VideoEncoderConfiguration/Resolution/Width",
                value: "wide".into(),
                expected: "a whole number",
            })
        );
        let no_encoding = envelope(&PROFILES.replace("<tt:Encoding>JPEG</tt:Encoding>", ""));
        assert_eq!(
            parse_profiles(&no_encoding),
            Err(AnswerError::Missing {
                element: "VideoEncoderConfiguration/Encoding"
            })
        );
        assert_eq!(
            parse_profiles(&envelope("<trt:GetStreamUriResponse/>")),
            Err(AnswerError::Missing {
                element: "GetProfilesResponse"
            })
        );
        let truncated = &envelope(PROFILES)[..400];
        assert!(matches!(
            parse_profiles(truncated),
            Err(AnswerError::NotXml(_))
        ));
        Ok(())
    }

    #[test]
    fn stream_and_snapshot_uris() -> anyhow::Result<()> {
        let stream = envelope(
            r#"<trt:GetStreamUriResponse><trt:MediaUri>
  <tt:Uri>rtsp://10.0.0.9:554/Streaming/Channels/101?transportmode=unicast&amp;profile=Profile_1</tt:Uri>
  <tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>true</tt:InvalidAfterReboot>
  <tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"#,
        );
        assert_eq!(
            parse_media_uri(&stream, "GetStreamUriResponse"),
            Ok(MediaUri {
                uri: "rtsp://10.0.0.9:554/Streaming/Channels/101?transportmode=unicast&profile=Profile_1"
                    .into(),
                invalid_after_connect: false,
                invalid_after_reboot: true,
            })
        );
        let snapshot = envelope(
            r#"<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>http://10.0.0.9/snap.jpg</tt:Uri></trt:MediaUri></trt:GetSnapshotUriResponse>"#,
        );
        assert_eq!(
            parse_media_uri(&snapshot, "GetSnapshotUriResponse")?.uri,
            "http://10.0.0.9/snap.jpg"
        );
        let empty = envelope(
            "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri> </tt:Uri></trt:MediaUri></trt:GetStreamUriResponse>",
        );
        assert_eq!(
            parse_media_uri(&empty, "GetStreamUriResponse"),
            Err(AnswerError::Missing {
                element: "MediaUri/Uri"
            })
        );
        Ok(())
    }

    #[test]
    fn a_fault_instead_of_an_answer() -> anyhow::Result<()> {
        let fault = envelope(
            r#"<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value>
  <SOAP-ENV:Subcode><SOAP-ENV:Value>ter:NotAuthorized</SOAP-ENV:Value></SOAP-ENV:Subcode></SOAP-ENV:Code>
  <SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">Sender not Authorized</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>"#,
        );
        let Err(AnswerError::Fault(fault)) = parse_profiles(&fault) else {
            anyhow::bail!("not a fault")
        };
        assert!(fault.is_not_authorized());
        assert_eq!(fault.reason, "Sender not Authorized");
        Ok(())
    }

    const SUBSCRIPTION: &str = r#"<tev:CreatePullPointSubscriptionResponse>
  <tev:SubscriptionReference>
    <wsa5:Address>http://10.0.0.9/onvif/Events/PullSubManager_2026-11-26T13:00:00Z_0</wsa5:Address>
    <wsa5:ReferenceParameters><dom0:SubscriptionId xmlns:dom0="http://www.axis.com/2009/event">12</dom0:SubscriptionId></wsa5:ReferenceParameters>
  </tev:SubscriptionReference>
  <wsnt:CurrentTime>2026-11-26T13:00:00Z</wsnt:CurrentTime>
  <wsnt:TerminationTime>2026-11-26T13:01:00Z</wsnt:TerminationTime>
</tev:CreatePullPointSubscriptionResponse>"#;

    #[test]
    fn subscription() -> anyhow::Result<()> {
        assert_eq!(
            parse_subscription(&envelope(SUBSCRIPTION)),
            Ok(Subscription {
                address: "http://10.0.0.9/onvif/Events/PullSubManager_2026-11-26T13:00:00Z_0"
                    .into(),
                reference_parameters: vec![ReferenceParameter {
                    namespace: Some("http://www.axis.com/2009/event".into()),
                    name: "SubscriptionId".into(),
                    value: "12".into(),
                }],
                current_time: at("2026-11-26T13:00:00Z")?,
                termination_time: at("2026-11-26T13:01:00Z")?,
            })
        );
        let no_address = envelope(&SUBSCRIPTION.replace("wsa5:Address", "wsa5:Where"));
        assert_eq!(
            parse_subscription(&no_address),
            Err(AnswerError::Missing {
                element: "SubscriptionReference/Address"
            })
        );
        let bad_time = envelope(&SUBSCRIPTION.replace("2026-11-26T13:01:00Z", "soon"));
        assert_eq!(
            parse_subscription(&bad_time),
            Err(AnswerError::Invalid {
                element: "TerminationTime",
                value: "soon".into(),
                expected: "an xs:dateTime",
            })
        );
        Ok(())
    }

    #[test]
    fn pull_messages_in_order_with_unknown_and_broken_ones_kept() -> anyhow::Result<()> {
        let xml = envelope(
            r#"<tev:PullMessagesResponse>
  <tev:CurrentTime>2026-11-26T13:00:10Z</tev:CurrentTime>
  <tev:TerminationTime>2026-11-26T13:01:10Z</tev:TerminationTime>
  <wsnt:NotificationMessage>
    <wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic>
    <wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:05Z" PropertyOperation="Changed">
      <tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="VideoSourceConfig_1"/>
        <tt:SimpleItem Name="VideoAnalyticsConfigurationToken" Value="VideoAnalyticsConfig_1"/>
        <tt:SimpleItem Name="Rule" Value="MyMotionDetectorRule"/></tt:Source>
      <tt:Data><tt:SimpleItem Name="IsMotion" Value="true"/></tt:Data>
    </tt:Message></wsnt:Message>
  </wsnt:NotificationMessage>
  <wsnt:NotificationMessage>
    <wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:Device/Trigger/DigitalInput</wsnt:Topic>
    <wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:06Z" PropertyOperation="Changed">
      <tt:Source><tt:SimpleItem Name="InputToken" Value="DI_1"/></tt:Source>
      <tt:Data><tt:SimpleItem Name="LogicalState" Value="true"/></tt:Data>
    </tt:Message></wsnt:Message>
  </wsnt:NotificationMessage>
  <wsnt:NotificationMessage>
    <wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/TamperDetector/Tamper</wsnt:Topic>
    <wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:07Z" PropertyOperation="Changed">
      <tt:Data><tt:SimpleItem Name="IsTamper" Value="maybe"/></tt:Data>
    </tt:Message></wsnt:Message>
  </wsnt:NotificationMessage>
</tev:PullMessagesResponse>"#,
        );
        let pulled = parse_pull_messages(&xml)?;
        assert_eq!(pulled.current_time, at("2026-11-26T13:00:10Z")?);
        assert_eq!(pulled.termination_time, at("2026-11-26T13:01:10Z")?);
        let kinds: Vec<_> = pulled.events.iter().map(|event| &event.kind).collect();
        assert_eq!(
            kinds,
            [
                &CameraEventKind::Motion(true),
                &CameraEventKind::Other {
                    topic: "tns1:Device/Trigger/DigitalInput".into(),
                    data: vec![("LogicalState".into(), "true".into())],
                },
                &CameraEventKind::Invalid {
                    topic: "tns1:RuleEngine/TamperDetector/Tamper".into(),
                    problem: "Data/SimpleItem IsTamper = \"maybe\", not a boolean".into(),
                },
            ]
        );
        let empty = envelope(
            "<tev:PullMessagesResponse><tev:CurrentTime>2026-11-26T13:00:10Z</tev:CurrentTime><tev:TerminationTime>2026-11-26T13:01:10Z</tev:TerminationTime></tev:PullMessagesResponse>",
        );
        assert!(parse_pull_messages(&empty)?.events.is_empty());
        let no_time = envelope("<tev:PullMessagesResponse/>");
        assert_eq!(
            parse_pull_messages(&no_time),
            Err(AnswerError::Missing {
                element: "PullMessagesResponse/CurrentTime"
            })
        );
        Ok(())
    }

    #[test]
    fn renew_and_unsubscribe() -> anyhow::Result<()> {
        let renewed = envelope(
            "<wsnt:RenewResponse><wsnt:TerminationTime>2026-11-26T13:02:00Z</wsnt:TerminationTime><wsnt:CurrentTime>2026-11-26T13:01:00Z</wsnt:CurrentTime></wsnt:RenewResponse>",
        );
        assert_eq!(
            parse_renew(&renewed),
            Ok(Renewed {
                current_time: Some(at("2026-11-26T13:01:00Z")?),
                termination_time: at("2026-11-26T13:02:00Z")?,
            })
        );
        let without_current = envelope(
            "<wsnt:RenewResponse><wsnt:TerminationTime>2026-11-26T13:02:00Z</wsnt:TerminationTime></wsnt:RenewResponse>",
        );
        assert_eq!(parse_renew(&without_current)?.current_time, None);
        assert_eq!(
            parse_unsubscribe(&envelope("<wsnt:UnsubscribeResponse/>")),
            Ok(())
        );
        assert_eq!(
            parse_unsubscribe(&envelope("<wsnt:RenewResponse/>")),
            Err(AnswerError::Missing {
                element: "UnsubscribeResponse"
            })
        );
        Ok(())
    }

    #[test]
    fn every_parser_survives_junk() -> anyhow::Result<()> {
        let junk = [
            "",
            "\u{feff}",
            "HTTP/1.1 200 OK",
            "<Envelope><Body><GetProfilesResponse><Profiles token=\"a\"><VideoEncoderConfiguration/></Profiles></GetProfilesResponse></Body></Envelope>",
            "<Envelope><Body><PullMessagesResponse><CurrentTime>x</CurrentTime></PullMessagesResponse></Body></Envelope>",
            "<Envelope><Body><Fault/></Body></Envelope>",
            "<a><b><c></a>",
        ];
        for text in junk {
            assert!(parse_system_date_and_time(text).is_err());
            assert!(parse_services(text).is_err());
            assert!(parse_capabilities(text).is_err());
            assert!(parse_profiles(text).is_err());
            assert!(parse_media_uri(text, "GetStreamUriResponse").is_err());
            assert!(parse_subscription(text).is_err());
            assert!(parse_pull_messages(text).is_err());
            assert!(parse_renew(text).is_err());
            assert!(parse_unsubscribe(text).is_err());
        }
        Ok(())
    }

    const PULLED: &str = r#"<tev:PullMessagesResponse><tev:CurrentTime>2026-11-26T13:00:10Z</tev:CurrentTime>
<tev:TerminationTime>2026-11-26T13:01:10Z</tev:TerminationTime>
<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/LineDetector/Crossed</wsnt:Topic>
<wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:05Z" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="Rule" Value="Door"/></tt:Source>
<tt:Data><tt:SimpleItem Name="ObjectId" Value="3"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
</tev:PullMessagesResponse>"#;

    /// Feeds `text` to every parser; none may panic.
    fn parse_with_all(text: &str) {
        let _ = parse_system_date_and_time(text);
        let _ = parse_services(text);
        let _ = parse_capabilities(text);
        let _ = parse_profiles(text);
        let _ = parse_media_uri(text, "GetStreamUriResponse");
        let _ = parse_subscription(text);
        let _ = parse_pull_messages(text);
        let _ = parse_renew(text);
        let _ = parse_unsubscribe(text);
        let _ = soap::fault_in(text);
    }

    #[test]
    fn deep_nesting_is_an_error_or_an_answer_not_a_stack_overflow() {
        let depth = 100_000;
        let nested = format!(
            "{}{}",
            "<tt:Message>".repeat(depth),
            "</tt:Message>".repeat(depth)
        );
        let xml = envelope(&format!(
            "<tev:PullMessagesResponse><tev:CurrentTime>2026-11-26T13:00:10Z</tev:CurrentTime>\
             <tev:TerminationTime>2026-11-26T13:01:10Z</tev:TerminationTime>\
             <wsnt:NotificationMessage><wsnt:Message>{nested}</wsnt:Message></wsnt:NotificationMessage>\
             </tev:PullMessagesResponse>"
        ));
        parse_with_all(&xml);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            parse_with_all(&text);
        }

        #[test]
        fn mutated_answers_never_panic(
            which in 0_usize..3,
            cut in 0_usize..4000,
            at in 0_usize..4000,
            insert in "[<>/=\"&a-zA-Z:0-9 ]{0,12}",
        ) {
            let mut text = envelope([PROFILES, SUBSCRIPTION, PULLED][which]);
            // The samples are ASCII: every index is a char boundary.
            text.truncate(cut.max(1).min(text.len()));
            let at = at.min(text.len());
            text.insert_str(at, &insert);
            parse_with_all(&text);
        }
    }
}

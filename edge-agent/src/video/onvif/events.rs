//! A camera's own events (ONVIF Core §9, WS-BaseNotification `NotificationMessage`) as
//! [`CameraEvent`]s, and the points the rules see for them. Pure.
//!
//! Topics understood, under ONVIF's topic namespace (`http://www.onvif.org/ver10/topics`,
//! whatever prefix the camera binds it to), compared without regard to case:
//!
//! | topic | data item | event | point |
//! | --- | --- | --- | --- |
//! | `RuleEngine/CellMotionDetector/Motion` | `IsMotion` | `Motion` | `motion` |
//! | `RuleEngine/MotionRegionDetector/Motion` | `State` | `Motion` | `motion` |
//! | `VideoSource/MotionAlarm` | `State` | `Motion` | `motion` |
//! | `RuleEngine/TamperDetector/Tamper` | `IsTamper` | `Tamper` | `tamper` |
//! | `VideoSource/GlobalSceneChange/*` (`ImagingService`, `AnalyticsService`, ...) | `State` | `Tamper` | `tamper` |
//! | `RuleEngine/LineDetector/Crossed` | (`ObjectId`, ignored) | `LineCrossed` | `line_crossed` |
//!
//! Anything else is [`CameraEventKind::Other`], which the caller counts or logs. A known topic
//! whose data is missing or not a boolean is [`CameraEventKind::Invalid`], so one bad message
//! never loses the others of the same answer.
//!
//! **Line crossings are pulses.** A crossing has no "off" message, so [`CameraEvent::point_values`]
//! gives `line_crossed = true` then `line_crossed = false` at the same instant: every crossing
//! is a rising edge for the rules, even to a consumer that only records changes, and the point
//! rests at `false`. Rules react to `line_crossed` becoming true.
//!
//! `PropertyOperation="Initialized"` messages (the state when the subscription starts) give
//! points like `Changed` ones do. `Deleted` means the property no longer exists (the rule was
//! removed): such events give no point value.

use gatehouse_protocol::Value;
use jiff::Timestamp;
use roxmltree::Node;

use super::soap::{
    attribute, child, children, descendant, local_part, parse_xs_date_time, text_of,
};

/// ONVIF's topic namespace, usually bound to the prefix `tns1`.
pub const TOPICS_NS: &str = "http://www.onvif.org/ver10/topics";

/// Point suffix for motion (bool).
pub const POINT_MOTION: &str = "motion";
/// Point suffix for tampering: covered, moved, defocused, blinded (bool).
pub const POINT_TAMPER: &str = "tamper";
/// Point suffix for line crossings: a pulse, `true` then `false`, per crossing.
pub const POINT_LINE_CROSSED: &str = "line_crossed";

/// One event of a camera.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraEvent {
    pub kind: CameraEventKind,
    /// The message's `UtcTime` (the camera's clock); the answer's `CurrentTime` when missing.
    pub at: Timestamp,
    /// The `Source` SimpleItems as `Name=Value`, comma-separated in the camera's order
    /// (`VideoSourceConfigurationToken=VSC_1,Rule=Door line`); `None` without any.
    pub source: Option<String>,
    /// `None` when the message has no `PropertyOperation` (a plain event, not a property).
    pub operation: Option<PropertyOperation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraEventKind {
    /// Motion started (`true`) or stopped.
    Motion(bool),
    /// Tampering (scene change) began (`true`) or ended.
    Tamper(bool),
    /// Something crossed a line.
    LineCrossed,
    /// A topic not mapped here, with its normalised topic and its `Data` SimpleItems.
    Other {
        topic: String,
        data: Vec<(String, String)>,
    },
    /// A known topic whose message could not be read, and why.
    Invalid { topic: String, problem: String },
}

/// `PropertyOperation` of a property event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyOperation {
    Initialized,
    Changed,
    Deleted,
}

impl CameraEvent {
    /// The point values the rules see for this event, as (point suffix, value), in order.
    /// Empty for `Other`, `Invalid` and `Deleted` events.
    pub fn point_values(&self) -> Vec<(&'static str, Value)> {
        if self.operation == Some(PropertyOperation::Deleted) {
            return Vec::new();
        }
        match self.kind {
            CameraEventKind::Motion(on) => vec![(POINT_MOTION, Value::Bool(on))],
            CameraEventKind::Tamper(on) => vec![(POINT_TAMPER, Value::Bool(on))],
            CameraEventKind::LineCrossed => vec![
                (POINT_LINE_CROSSED, Value::Bool(true)),
                (POINT_LINE_CROSSED, Value::Bool(false)),
            ],
            CameraEventKind::Other { .. } | CameraEventKind::Invalid { .. } => Vec::new(),
        }
    }
}

/// What a known topic is, and which data item holds its state.
enum Known {
    Motion(&'static str),
    Tamper(&'static str),
    LineCrossed,
}

fn known_topic(path: &str) -> Option<Known> {
    let is = |expected: &str| path.eq_ignore_ascii_case(expected);
    let lower = path.to_ascii_lowercase();
    if is("RuleEngine/CellMotionDetector/Motion") {
        Some(Known::Motion("IsMotion"))
    } else if is("RuleEngine/MotionRegionDetector/Motion") || is("VideoSource/MotionAlarm") {
        Some(Known::Motion("State"))
    } else if is("RuleEngine/TamperDetector/Tamper") {
        Some(Known::Tamper("IsTamper"))
    } else if lower.starts_with("videosource/globalscenechange/") {
        Some(Known::Tamper("State"))
    } else if is("RuleEngine/LineDetector/Crossed") {
        Some(Known::LineCrossed)
    } else {
        None
    }
}

/// The topic with ONVIF's namespace written as `tns1:` whatever prefix the camera used, and the
/// path after it when it is ONVIF's (`None` for vendor topics).
fn normalise_topic(topic: Node<'_, '_>) -> (String, Option<String>) {
    let text = text_of(topic).unwrap_or_default();
    // A ConcreteSet expression may hold alternatives; a message's topic is one concrete topic.
    let text = text.split('|').next().unwrap_or_default().trim();
    match text.split_once(':') {
        Some((prefix, path)) => {
            let namespace = topic.lookup_namespace_uri(Some(prefix));
            let onvif = namespace == Some(TOPICS_NS) || (namespace.is_none() && prefix == "tns1");
            if onvif {
                (format!("tns1:{path}"), Some(path.to_owned()))
            } else {
                (text.to_owned(), None)
            }
        }
        None => (text.to_owned(), None),
    }
}

/// The SimpleItems of `Source` or `Data` as (Name, Value).
fn simple_items(message: Option<Node<'_, '_>>, part: &str) -> Vec<(String, String)> {
    message
        .and_then(|message| child(message, part))
        .map(|items| {
            children(items, "SimpleItem")
                .filter_map(|item| {
                    Some((
                        attribute(item, "Name")?.to_owned(),
                        attribute(item, "Value").unwrap_or_default().to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "active" => Some(true),
        "false" | "0" | "off" | "inactive" => Some(false),
        _ => None,
    }
}

/// One `wsnt:NotificationMessage`; `fallback_time` stands for a missing or unreadable `UtcTime`.
pub fn parse_notification(notification: Node<'_, '_>, fallback_time: Timestamp) -> CameraEvent {
    let (topic, onvif_path) = child(notification, "Topic")
        .map(normalise_topic)
        .unwrap_or_default();
    // wsnt:Message wraps tt:Message; some cameras leave the wrapper out.
    let message = child(notification, "Message").map(|wrapper| {
        child(wrapper, "Message")
            .or_else(|| descendant(wrapper, "Message"))
            .unwrap_or(wrapper)
    });
    // Missing: use the answer's time. Present but unreadable: the same, and the event is
    // Invalid (below), since its place in time is a guess.
    let utc_time = message
        .and_then(|message| attribute(message, "UtcTime"))
        .map(parse_xs_date_time);
    let unreadable_time = matches!(utc_time, Some(None));
    let at = utc_time.flatten().unwrap_or(fallback_time);
    let operation = message
        .and_then(|message| attribute(message, "PropertyOperation"))
        .and_then(|operation| match local_part(operation) {
            "Initialized" => Some(PropertyOperation::Initialized),
            "Changed" => Some(PropertyOperation::Changed),
            "Deleted" => Some(PropertyOperation::Deleted),
            _ => None,
        });
    let source = simple_items(message, "Source");
    let source = (!source.is_empty()).then(|| {
        source
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let data = simple_items(message, "Data");
    let kind = classify(
        &topic,
        onvif_path.as_deref(),
        data,
        operation,
        unreadable_time,
    );
    CameraEvent {
        kind,
        at,
        source,
        operation,
    }
}

fn classify(
    topic: &str,
    onvif_path: Option<&str>,
    data: Vec<(String, String)>,
    operation: Option<PropertyOperation>,
    unreadable_time: bool,
) -> CameraEventKind {
    let Some(known) = onvif_path.and_then(known_topic) else {
        return CameraEventKind::Other {
            topic: topic.to_owned(),
            data,
        };
    };
    let invalid = |problem: String| CameraEventKind::Invalid {
        topic: topic.to_owned(),
        problem,
    };
    if unreadable_time {
        return invalid("Message/@UtcTime is not an xs:dateTime".to_owned());
    }
    let state = |item: &str| -> Result<Option<bool>, String> {
        match data
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(item))
        {
            None => Ok(None),
            Some((_, value)) => parse_bool(value)
                .map(Some)
                .ok_or_else(|| format!("Data/SimpleItem {item} = {value:?}, not a boolean")),
        }
    };
    let read = |item: &'static str, make: fn(bool) -> CameraEventKind| match state(item) {
        Ok(Some(on)) => make(on),
        // A deleted property may come without its state.
        Ok(None) if operation == Some(PropertyOperation::Deleted) => CameraEventKind::Other {
            topic: topic.to_owned(),
            data: data.clone(),
        },
        Ok(None) => invalid(format!("no Data/SimpleItem {item}")),
        Err(problem) => invalid(problem),
    };
    match known {
        Known::Motion(item) => read(item, CameraEventKind::Motion),
        Known::Tamper(item) => read(item, CameraEventKind::Tamper),
        Known::LineCrossed => CameraEventKind::LineCrossed,
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    const FALLBACK: &str = "2026-11-26T13:00:59Z";

    /// Parses the one NotificationMessage in `xml` (namespaces declared around it).
    fn event(xml: &str) -> anyhow::Result<CameraEvent> {
        let wrapped = format!(
            r#"<wsnt:Notify xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tns1="http://www.onvif.org/ver10/topics">{xml}</wsnt:Notify>"#
        );
        let document = roxmltree::Document::parse(&wrapped)?;
        let notification =
            child(document.root_element(), "NotificationMessage").context("missing")?;
        Ok(parse_notification(notification, FALLBACK.parse()?))
    }

    fn message(topic: &str, operation: &str, source: &str, data: &str) -> String {
        format!(
            r#"<wsnt:NotificationMessage>
  <wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{topic}</wsnt:Topic>
  <wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:05.250Z"{operation}>
    <tt:Source>{source}</tt:Source><tt:Data>{data}</tt:Data>
  </tt:Message></wsnt:Message>
</wsnt:NotificationMessage>"#
        )
    }

    fn item(name: &str, value: &str) -> String {
        format!(r#"<tt:SimpleItem Name="{name}" Value="{value}"/>"#)
    }

    #[test]
    fn cell_motion_with_source_time_and_operation() -> anyhow::Result<()> {
        let source =
            item("VideoSourceConfigurationToken", "VSC_1") + &item("Rule", "MyMotionDetectorRule");
        let parsed = event(&message(
            "tns1:RuleEngine/CellMotionDetector/Motion",
            r#" PropertyOperation="Changed""#,
            &source,
            &item("IsMotion", "true"),
        ))?;
        assert_eq!(
            parsed,
            CameraEvent {
                kind: CameraEventKind::Motion(true),
                at: "2026-11-26T13:00:05.25Z".parse()?,
                source: Some(
                    "VideoSourceConfigurationToken=VSC_1,Rule=MyMotionDetectorRule".into()
                ),
                operation: Some(PropertyOperation::Changed),
            }
        );
        assert_eq!(parsed.point_values(), [(POINT_MOTION, Value::Bool(true))]);
        Ok(())
    }

    #[test]
    fn every_known_topic() -> anyhow::Result<()> {
        let cases = [
            (
                "tns1:RuleEngine/CellMotionDetector/Motion",
                "IsMotion",
                "false",
                CameraEventKind::Motion(false),
            ),
            (
                "tns1:VideoSource/MotionAlarm",
                "State",
                "true",
                CameraEventKind::Motion(true),
            ),
            (
                "tns1:RuleEngine/MotionRegionDetector/Motion",
                "State",
                "1",
                CameraEventKind::Motion(true),
            ),
            (
                "tns1:VideoSource/GlobalSceneChange/ImagingService",
                "State",
                "true",
                CameraEventKind::Tamper(true),
            ),
            (
                "tns1:VideoSource/GlobalSceneChange/AnalyticsService",
                "State",
                "false",
                CameraEventKind::Tamper(false),
            ),
            (
                "tns1:RuleEngine/TamperDetector/Tamper",
                "IsTamper",
                "true",
                CameraEventKind::Tamper(true),
            ),
            (
                "tns1:RuleEngine/LineDetector/Crossed",
                "ObjectId",
                "42",
                CameraEventKind::LineCrossed,
            ),
        ];
        for (topic, name, value, kind) in cases {
            let parsed = event(&message(
                topic,
                r#" PropertyOperation="Changed""#,
                "",
                &item(name, value),
            ))?;
            assert_eq!(parsed.kind, kind, "{topic}");
            assert_eq!(parsed.source, None);
        }
        Ok(())
    }

    #[test]
    fn topics_under_other_prefixes_and_cases() -> anyhow::Result<()> {
        let xml = r#"<wsnt:NotificationMessage>
  <wsnt:Topic xmlns:ons="http://www.onvif.org/ver10/topics" Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">ons:VideoSource/MotionAlarm</wsnt:Topic>
  <wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:05Z"><tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data></tt:Message></wsnt:Message>
</wsnt:NotificationMessage>"#;
        let parsed = event(xml)?;
        assert_eq!(parsed.kind, CameraEventKind::Motion(true));
        assert_eq!(parsed.operation, None);
        let lower = event(&message(
            "tns1:ruleengine/celLMotionDetector/motion",
            "",
            "",
            &item("IsMotion", "TRUE"),
        ))?;
        assert_eq!(lower.kind, CameraEventKind::Motion(true));
        // The same path in a vendor's namespace is not ONVIF's.
        let vendor = r#"<wsnt:NotificationMessage>
  <wsnt:Topic xmlns:tnsvendor="http://vendor.example/topics">tnsvendor:VideoSource/MotionAlarm</wsnt:Topic>
  <wsnt:Message><tt:Message UtcTime="2026-11-26T13:00:05Z"><tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data></tt:Message></wsnt:Message>
</wsnt:NotificationMessage>"#;
        assert_eq!(
            event(vendor)?.kind,
            CameraEventKind::Other {
                topic: "tnsvendor:VideoSource/MotionAlarm".into(),
                data: vec![("State".into(), "true".into())],
            }
        );
        Ok(())
    }

    #[test]
    fn line_crossing_is_a_pulse() -> anyhow::Result<()> {
        let parsed = event(&message(
            "tns1:RuleEngine/LineDetector/Crossed",
            "",
            &item("Rule", "Door line"),
            &item("ObjectId", "7"),
        ))?;
        assert_eq!(parsed.kind, CameraEventKind::LineCrossed);
        assert_eq!(parsed.source.as_deref(), Some("Rule=Door line"));
        assert_eq!(
            parsed.point_values(),
            [
                (POINT_LINE_CROSSED, Value::Bool(true)),
                (POINT_LINE_CROSSED, Value::Bool(false))
            ]
        );
        Ok(())
    }

    #[test]
    fn initialized_gives_points_deleted_does_not() -> anyhow::Result<()> {
        let initialized = event(&message(
            "tns1:RuleEngine/TamperDetector/Tamper",
            r#" PropertyOperation="Initialized""#,
            "",
            &item("IsTamper", "false"),
        ))?;
        assert_eq!(initialized.operation, Some(PropertyOperation::Initialized));
        assert_eq!(
            initialized.point_values(),
            [(POINT_TAMPER, Value::Bool(false))]
        );
        let deleted = event(&message(
            "tns1:RuleEngine/TamperDetector/Tamper",
            r#" PropertyOperation="Deleted""#,
            "",
            "",
        ))?;
        assert_eq!(deleted.operation, Some(PropertyOperation::Deleted));
        assert!(matches!(deleted.kind, CameraEventKind::Other { .. }));
        assert!(deleted.point_values().is_empty());
        let deleted_with_state = event(&message(
            "tns1:RuleEngine/TamperDetector/Tamper",
            r#" PropertyOperation="Deleted""#,
            "",
            &item("IsTamper", "true"),
        ))?;
        assert!(deleted_with_state.point_values().is_empty());
        Ok(())
    }

    #[test]
    fn broken_messages_become_invalid_or_other_events() -> anyhow::Result<()> {
        let no_data = event(&message(
            "tns1:RuleEngine/CellMotionDetector/Motion",
            "",
            "",
            "",
        ))?;
        assert_eq!(
            no_data.kind,
            CameraEventKind::Invalid {
                topic: "tns1:RuleEngine/CellMotionDetector/Motion".into(),
                problem: "no Data/SimpleItem IsMotion".into(),
            }
        );
        assert!(no_data.point_values().is_empty());
        let bad_time = event(
            &message(
                "tns1:VideoSource/MotionAlarm",
                "",
                "",
                &item("State", "true"),
            )
            .replace("2026-11-26T13:00:05.250Z", "noon"),
        )?;
        assert_eq!(bad_time.at, FALLBACK.parse::<Timestamp>()?);
        assert!(matches!(bad_time.kind, CameraEventKind::Invalid { .. }));
        let no_topic =
            event("<wsnt:NotificationMessage><wsnt:Message/></wsnt:NotificationMessage>")?;
        assert_eq!(
            no_topic.kind,
            CameraEventKind::Other {
                topic: String::new(),
                data: vec![]
            }
        );
        assert_eq!(no_topic.at, FALLBACK.parse::<Timestamp>()?);
        let empty = event("<wsnt:NotificationMessage/>")?;
        assert!(matches!(empty.kind, CameraEventKind::Other { .. }));
        Ok(())
    }

    #[test]
    fn message_without_the_tt_wrapper() -> anyhow::Result<()> {
        let xml = r#"<wsnt:NotificationMessage><wsnt:Topic>tns1:VideoSource/MotionAlarm</wsnt:Topic>
  <wsnt:Message UtcTime="2026-11-26T13:00:05Z"><tt:Data><tt:SimpleItem Name="State" Value="false"/></tt:Data></wsnt:Message>
</wsnt:NotificationMessage>"#;
        assert_eq!(event(xml)?.kind, CameraEventKind::Motion(false));
        Ok(())
    }
}

use proptest::prelude::*;

use super::*;
use crate::ids::{DeviceId, PointId, RuleId, ZoneId};

fn arb_id<T: TryFrom<String, Error = IdError> + std::fmt::Debug>() -> impl Strategy<Value = T> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_filter_map("valid id", |text| T::try_from(text).ok())
}

fn arb_time() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800_000_000)
        .prop_filter_map("valid time", |us| Timestamp::from_microsecond(us).ok())
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        ".{0,20}".prop_map(Value::Text),
    ]
}

fn arb_quality() -> impl Strategy<Value = Quality> {
    prop_oneof![
        Just(Quality::Good),
        ".{0,20}".prop_map(|reason| Quality::Bad { reason }),
        ".{0,20}".prop_map(|reason| Quality::Stale { reason }),
    ]
}

fn arb_transition() -> impl Strategy<Value = Transition> {
    (".{0,10}", arb_time(), proptest::option::of(".{0,20}"))
        .prop_map(|(by, at, comment)| Transition { by, at, comment })
}

fn arb_incident() -> impl Strategy<Value = Incident> {
    (
        any::<u64>(),
        arb_id::<RuleId>(),
        ".{0,20}",
        prop_oneof![
            Just(Severity::Info),
            Just(Severity::Low),
            Just(Severity::Medium),
            Just(Severity::High),
            Just(Severity::Critical)
        ],
        proptest::option::of(arb_id::<ZoneId>()),
        prop_oneof![
            Just(IncidentState::Open),
            Just(IncidentState::Acknowledged),
            Just(IncidentState::Resolved)
        ],
        arb_time(),
        proptest::collection::vec(
            (
                any::<u64>(),
                proptest::option::of(arb_id::<PointId>()),
                proptest::option::of(arb_value()),
                arb_time(),
            )
                .prop_map(|(seq, point, value, at)| Evidence {
                    seq,
                    point,
                    value,
                    at,
                }),
            0..3,
        ),
        proptest::option::of(arb_transition()),
        proptest::option::of(arb_transition()),
        any::<u32>(),
        proptest::collection::vec(arb_clip(), 0..3),
    )
        .prop_map(
            |(
                id,
                rule,
                title,
                severity,
                zone,
                state,
                opened_at,
                evidence,
                acknowledged,
                resolved,
                escalations,
                clips,
            )| Incident {
                id,
                rule,
                title,
                severity,
                zone,
                state,
                opened_at,
                evidence,
                escalations,
                acknowledged,
                resolved,
                clips,
            },
        )
}

fn arb_clip() -> impl Strategy<Value = ClipRef> {
    (
        any::<u64>(),
        arb_id::<DeviceId>(),
        arb_time(),
        arb_time(),
        prop_oneof![
            Just(ClipState::Recording),
            Just(ClipState::Ready),
            Just(ClipState::Failed)
        ],
        proptest::option::of("[a-z ]{0,20}"),
    )
        .prop_map(|(id, camera, from, to, state, reason)| ClipRef {
            id,
            camera,
            from,
            to,
            state,
            reason,
        })
}

fn arb_body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        (
            arb_id::<DeviceId>(),
            arb_id::<PointId>(),
            proptest::option::of(arb_id::<ZoneId>()),
            proptest::option::of(arb_value()),
            arb_quality(),
            arb_time()
        )
            .prop_map(|(device, point, zone, value, quality, observed_at)| {
                EventBody::Observation {
                    device,
                    point,
                    zone,
                    value,
                    quality,
                    observed_at,
                }
            }),
        (
            arb_id::<DeviceId>(),
            prop_oneof![
                Just(DeviceStatus::Online),
                Just(DeviceStatus::Degraded),
                Just(DeviceStatus::Offline)
            ],
            proptest::option::of(".{0,20}")
        )
            .prop_map(|(device, status, reason)| EventBody::DeviceStatus {
                device,
                status,
                reason
            }),
        (
            arb_id::<DeviceId>(),
            arb_id::<PointId>(),
            arb_value(),
            prop_oneof![
                Just(CommandOutcome::Sent),
                Just(CommandOutcome::Done),
                ".{0,10}".prop_map(|reason| CommandOutcome::Failed { reason }),
                ".{0,10}".prop_map(|reason| CommandOutcome::Unconfirmed { reason }),
            ],
            ".{0,10}"
        )
            .prop_map(
                |(device, point, value, outcome, requested_by)| EventBody::Command {
                    device,
                    point,
                    value,
                    outcome,
                    requested_by
                }
            ),
        (
            prop_oneof![
                Just(IncidentChange::Opened),
                Just(IncidentChange::EvidenceAdded),
                Just(IncidentChange::Escalated),
                Just(IncidentChange::Acknowledged),
                Just(IncidentChange::Resolved)
            ],
            arb_incident()
        )
            .prop_map(|(change, incident)| EventBody::Incident {
                change,
                incident: Box::new(incident)
            }),
        (
            arb_id::<ZoneId>(),
            proptest::sample::select(ZoneMode::ALL.to_vec()),
            arb_time(),
            ".{0,10}"
        )
            .prop_map(|(zone, mode, effective_at, by)| EventBody::ZoneMode {
                zone,
                mode,
                effective_at,
                by
            }),
        (arb_id::<PointId>(), any::<bool>(), ".{0,10}").prop_map(|(point, bypassed, by)| {
            EventBody::Bypass {
                point,
                bypassed,
                by,
            }
        }),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    (any::<u64>(), arb_time(), arb_body()).prop_map(|(seq, recorded_at, body)| Event {
        seq,
        recorded_at,
        body,
    })
}

proptest! {
    /// Every event survives the wire unchanged, through bytes.
    #[test]
    fn events_round_trip_through_the_wire(event in arb_event(), outbox_seq in 1u64..) {
        let bytes = encode(pb::envelope::Body::Batch(pb::Batch {
            records: vec![pb::Record {
                seq: outbox_seq,
                content: Some(pb::record::Content::Event((&event).into())),
            }],
        }));
        let Ok(pb::envelope::Body::Batch(batch)) = decode(&bytes) else {
            return Err(TestCaseError::fail("not a batch"));
        };
        prop_assert_eq!(batch.records[0].seq, outbox_seq);
        let Some(pb::record::Content::Event(wire_event)) = batch.records[0].content.clone() else {
            return Err(TestCaseError::fail("not an event"));
        };
        prop_assert_eq!(Event::try_from(wire_event).ok(), Some(event));
    }

    /// Garbage never panics the decoder.
    #[test]
    fn arbitrary_bytes_are_refused_or_decoded_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(pb::envelope::Body::Batch(batch)) = decode(&bytes) {
            for record in batch.records {
                if let Some(pb::record::Content::Event(event)) = record.content {
                    let _ = Event::try_from(event);
                }
            }
        }
    }
}

#[test]
fn an_unknown_version_is_refused_with_its_number() {
    let bytes = pb::Envelope {
        version: 2,
        body: Some(pb::envelope::Body::Ack(pb::Ack { up_to_seq: 1 })),
    }
    .encode_to_vec();
    let error = decode(&bytes)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("version 2 is not supported"), "{error}");
}

#[test]
fn invalid_content_is_refused_with_the_field() {
    let mut event = pb::Event::from(&Event {
        seq: 1,
        recorded_at: Timestamp::UNIX_EPOCH,
        body: EventBody::DeviceStatus {
            device: DeviceId::new("plc").unwrap_or_else(|e| panic!("{e}")),
            status: DeviceStatus::Online,
            reason: None,
        },
    });
    if let Some(pb::event::Body::DeviceStatus(status)) = &mut event.body {
        status.device = "Not An Id".into();
    }
    let error = Event::try_from(event)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.starts_with("device_status.device:"), "{error}");
    let empty = Event::try_from(pb::Event::default())
        .err()
        .map(|e| e.to_string());
    assert_eq!(empty.as_deref(), Some("event body is missing"));
    let bad_enum = pb::Quality {
        status: 9,
        reason: String::new(),
    };
    let error = Quality::try_from(bad_enum).err().map(|e| e.to_string());
    assert_eq!(error.as_deref(), Some("quality.status: unknown value 9"));
    assert!(decode(&[0xff, 0xff]).is_err());
}

#[test]
fn topics_are_built_and_parsed_for_valid_appliances_only() {
    use topics::{Channel, parse, topic};
    let appliance = ApplianceId::new("app-1").unwrap_or_else(|e| panic!("{e}"));
    for channel in [
        Channel::UpRecords,
        Channel::UpStatus,
        Channel::DownAck,
        Channel::DownCommands,
    ] {
        let text = topic(&appliance, channel);
        assert_eq!(parse(&text), Some((appliance.clone(), channel)), "{text}");
    }
    assert_eq!(
        topic(&appliance, Channel::UpRecords),
        "gatehouse/v1/app-1/up/records"
    );
    assert_eq!(parse("gatehouse/v1/APP/up/records"), None);
    assert_eq!(parse("gatehouse/v1/app-1/up/other"), None);
    assert_eq!(parse("gatehouse/v2/app-1/up/records"), None);
}

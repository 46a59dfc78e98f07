//! Proptest strategies for every message this crate encodes: each produces only values the
//! encoder accepts (fields within their ranges, no NaN, `Other` only for service choices
//! without a variant of their own).

#![allow(dead_code)] // each test file uses part of this module

use std::net::{Ipv4Addr, SocketAddrV4};

use gatehouse_bacnet::{
    AbortReason, Apdu, ApplicationValue, BitString, Bvlc, BvlcResultCode, ComplexAck,
    ConfirmedRequest, ConfirmedRequestHeader, ConfirmedServiceChoice, Date, Destination,
    ErrorClass, ErrorClassAndCode, ErrorCode, MaxApdu, MaxSegments, NetworkAddress, NetworkMessage,
    NetworkPriority, Npdu, NpduHeader, NpduPayload, ObjectIdentifier, ObjectType,
    PropertyIdentifier, RejectReason, Segmentation, Time, UnconfirmedRequest,
    UnconfirmedServiceChoice, Value,
    services::{
        CovNotification, CovSubscription, DeviceRange, IAm, PropertyReference, PropertyResult,
        PropertyValue, ReadAccessResult, ReadAccessSpecification, ReadProperty, ReadPropertyAck,
        ReadPropertyMultiple, ReadPropertyMultipleAck, ReadResult, SubscribeCov, WhoIs,
        WriteProperty,
    },
};
use proptest::{collection::vec, option, prelude::*, sample::select};

pub fn object_identifier() -> impl Strategy<Value = ObjectIdentifier> {
    (
        0..=ObjectIdentifier::MAX_TYPE,
        0..=ObjectIdentifier::MAX_INSTANCE,
    )
        .prop_map(|(object_type, instance)| {
            ObjectIdentifier::new(ObjectType(object_type), instance)
        })
}

fn property() -> impl Strategy<Value = PropertyIdentifier> {
    any::<u32>().prop_map(PropertyIdentifier)
}

fn priority() -> impl Strategy<Value = Option<u8>> {
    option::of(1..=16u8)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

pub fn application_value() -> impl Strategy<Value = ApplicationValue> {
    prop_oneof![
        Just(ApplicationValue::Null),
        any::<bool>().prop_map(ApplicationValue::Boolean),
        any::<u64>().prop_map(ApplicationValue::Unsigned),
        any::<i64>().prop_map(ApplicationValue::Signed),
        any::<f32>()
            .prop_filter("NaN is not equal to itself", |v| !v.is_nan())
            .prop_map(ApplicationValue::Real),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |v| !v.is_nan())
            .prop_map(ApplicationValue::Double),
        bytes(300).prop_map(ApplicationValue::OctetString),
        ".{0,12}".prop_map(ApplicationValue::CharacterString),
        vec(any::<bool>(), 0..40).prop_map(|bits| ApplicationValue::BitString(BitString { bits })),
        any::<u32>().prop_map(ApplicationValue::Enumerated),
        any::<[u8; 4]>().prop_map(
            |[year_since_1900, month, day, weekday]| ApplicationValue::Date(Date {
                year_since_1900,
                month,
                day,
                weekday
            })
        ),
        any::<[u8; 4]>().prop_map(|[hour, minute, second, hundredths]| ApplicationValue::Time(
            Time {
                hour,
                minute,
                second,
                hundredths
            }
        )),
        object_identifier().prop_map(ApplicationValue::ObjectIdentifier),
    ]
}

pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        application_value().prop_map(Value::Application),
        (0..=254u8, bytes(8)).prop_map(|(tag, content)| Value::Context { tag, content }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        (0..=254u8, vec(inner, 0..4)).prop_map(|(tag, values)| Value::Constructed { tag, values })
    })
}

pub fn property_value() -> impl Strategy<Value = Vec<Value>> {
    vec(value(), 0..4)
}

fn error_class_and_code() -> impl Strategy<Value = ErrorClassAndCode> {
    (any::<u32>(), any::<u32>()).prop_map(|(class, code)| ErrorClassAndCode {
        class: ErrorClass(class),
        code: ErrorCode(code),
    })
}

fn who_is() -> impl Strategy<Value = WhoIs> {
    let instance = 0..=ObjectIdentifier::MAX_INSTANCE;
    option::of((instance.clone(), instance).prop_map(|(low, high)| DeviceRange { low, high }))
        .prop_map(|range| WhoIs { range })
}

fn i_am() -> impl Strategy<Value = IAm> {
    (
        object_identifier(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
    )
        .prop_map(
            |(device, max_apdu_length_accepted, segmentation, vendor_id)| IAm {
                device,
                max_apdu_length_accepted,
                segmentation: Segmentation(segmentation),
                vendor_id,
            },
        )
}

fn read_property() -> impl Strategy<Value = ReadProperty> {
    (object_identifier(), property(), option::of(any::<u32>())).prop_map(
        |(object, property, array_index)| ReadProperty {
            object,
            property,
            array_index,
        },
    )
}

fn read_property_ack() -> impl Strategy<Value = ReadPropertyAck> {
    (read_property(), property_value()).prop_map(|(request, value)| ReadPropertyAck {
        object: request.object,
        property: request.property,
        array_index: request.array_index,
        value,
    })
}

fn read_property_multiple() -> impl Strategy<Value = ReadPropertyMultiple> {
    let reference = (property(), option::of(any::<u32>())).prop_map(|(property, array_index)| {
        PropertyReference {
            property,
            array_index,
        }
    });
    let specification = (object_identifier(), vec(reference, 0..4))
        .prop_map(|(object, properties)| ReadAccessSpecification { object, properties });
    vec(specification, 0..4).prop_map(|specifications| ReadPropertyMultiple { specifications })
}

fn read_property_multiple_ack() -> impl Strategy<Value = ReadPropertyMultipleAck> {
    let result = prop_oneof![
        property_value().prop_map(ReadResult::Value),
        error_class_and_code().prop_map(ReadResult::Error),
    ];
    let property_result = (property(), option::of(any::<u32>()), result).prop_map(
        |(property, array_index, result)| PropertyResult {
            property,
            array_index,
            result,
        },
    );
    let object_result = (object_identifier(), vec(property_result, 0..4))
        .prop_map(|(object, results)| ReadAccessResult { object, results });
    vec(object_result, 0..3).prop_map(|results| ReadPropertyMultipleAck { results })
}

fn write_property() -> impl Strategy<Value = WriteProperty> {
    (read_property(), property_value(), priority()).prop_map(|(target, value, priority)| {
        WriteProperty {
            object: target.object,
            property: target.property,
            array_index: target.array_index,
            value,
            priority,
        }
    })
}

fn subscribe_cov() -> impl Strategy<Value = SubscribeCov> {
    let terms =
        (any::<bool>(), option::of(any::<u32>())).prop_map(|(confirmed, lifetime_seconds)| {
            CovSubscription {
                confirmed,
                lifetime_seconds,
            }
        });
    (any::<u32>(), object_identifier(), option::of(terms)).prop_map(
        |(subscriber_process_id, object, subscription)| SubscribeCov {
            subscriber_process_id,
            object,
            subscription,
        },
    )
}

fn cov_notification() -> impl Strategy<Value = CovNotification> {
    let value = (
        property(),
        option::of(any::<u32>()),
        property_value(),
        priority(),
    )
        .prop_map(|(property, array_index, value, priority)| PropertyValue {
            property,
            array_index,
            value,
            priority,
        });
    (
        any::<u32>(),
        object_identifier(),
        object_identifier(),
        any::<u32>(),
        vec(value, 0..4),
    )
        .prop_map(
            |(
                subscriber_process_id,
                initiating_device,
                monitored_object,
                time_remaining_seconds,
                values,
            )| {
                CovNotification {
                    subscriber_process_id,
                    initiating_device,
                    monitored_object,
                    time_remaining_seconds,
                    values,
                }
            },
        )
}

/// A service choice with no variant of its own, for `Other`.
fn other_service(known: &'static [u8]) -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("has its own variant", move |service| {
        !known.contains(service)
    })
}

fn confirmed_request() -> impl Strategy<Value = ConfirmedRequest> {
    prop_oneof![
        read_property().prop_map(ConfirmedRequest::ReadProperty),
        read_property_multiple().prop_map(ConfirmedRequest::ReadPropertyMultiple),
        write_property().prop_map(ConfirmedRequest::WriteProperty),
        subscribe_cov().prop_map(ConfirmedRequest::SubscribeCov),
        cov_notification().prop_map(ConfirmedRequest::CovNotification),
        (other_service(&[1, 5, 12, 14, 15]), bytes(16)).prop_map(|(service, data)| {
            ConfirmedRequest::Other {
                service: ConfirmedServiceChoice(service),
                data,
            }
        }),
    ]
}

fn unconfirmed_request() -> impl Strategy<Value = UnconfirmedRequest> {
    prop_oneof![
        who_is().prop_map(UnconfirmedRequest::WhoIs),
        i_am().prop_map(UnconfirmedRequest::IAm),
        cov_notification().prop_map(UnconfirmedRequest::CovNotification),
        (other_service(&[0, 2, 8]), bytes(16)).prop_map(|(service, data)| {
            UnconfirmedRequest::Other {
                service: UnconfirmedServiceChoice(service),
                data,
            }
        }),
    ]
}

fn complex_ack() -> impl Strategy<Value = ComplexAck> {
    prop_oneof![
        read_property_ack().prop_map(ComplexAck::ReadProperty),
        read_property_multiple_ack().prop_map(ComplexAck::ReadPropertyMultiple),
        (other_service(&[12, 14]), bytes(16)).prop_map(|(service, data)| ComplexAck::Other {
            service: ConfirmedServiceChoice(service),
            data
        }),
    ]
}

fn confirmed_request_header() -> impl Strategy<Value = ConfirmedRequestHeader> {
    (
        any::<u8>(),
        select(MaxApdu::ALL.to_vec()),
        select(MaxSegments::ALL.to_vec()),
        any::<bool>(),
    )
        .prop_map(
            |(invoke_id, max_apdu, max_segments, segmented_response_accepted)| {
                ConfirmedRequestHeader {
                    invoke_id,
                    max_apdu,
                    max_segments,
                    segmented_response_accepted,
                }
            },
        )
}

pub fn apdu() -> impl Strategy<Value = Apdu> {
    let service = any::<u8>().prop_map(ConfirmedServiceChoice);
    prop_oneof![
        (confirmed_request_header(), confirmed_request())
            .prop_map(|(header, request)| Apdu::ConfirmedRequest { header, request }),
        unconfirmed_request().prop_map(Apdu::UnconfirmedRequest),
        (any::<u8>(), service.clone())
            .prop_map(|(invoke_id, service)| Apdu::SimpleAck { invoke_id, service }),
        (any::<u8>(), complex_ack())
            .prop_map(|(invoke_id, ack)| Apdu::ComplexAck { invoke_id, ack }),
        (any::<u8>(), service, error_class_and_code()).prop_map(|(invoke_id, service, error)| {
            Apdu::Error {
                invoke_id,
                service,
                error,
            }
        }),
        (any::<u8>(), any::<u8>()).prop_map(|(invoke_id, reason)| Apdu::Reject {
            invoke_id,
            reason: RejectReason(reason)
        }),
        (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(invoke_id, from_server, reason)| {
            Apdu::Abort {
                invoke_id,
                from_server,
                reason: AbortReason(reason),
            }
        }),
    ]
}

fn npdu_header() -> impl Strategy<Value = NpduHeader> {
    let destination =
        (any::<u16>(), bytes(7), any::<u8>()).prop_map(|(network, mac, hop_count)| Destination {
            address: NetworkAddress { network, mac },
            hop_count,
        });
    let source = (0..=0xFFFEu16, vec(any::<u8>(), 1..=7))
        .prop_map(|(network, mac)| NetworkAddress { network, mac });
    (
        any::<bool>(),
        select(NetworkPriority::ALL.to_vec()),
        option::of(destination),
        option::of(source),
    )
        .prop_map(
            |(expecting_reply, priority, destination, source)| NpduHeader {
                expecting_reply,
                priority,
                destination,
                source,
            },
        )
}

fn network_message() -> impl Strategy<Value = NetworkMessage> {
    (any::<u8>(), any::<u16>(), bytes(16)).prop_map(|(message_type, vendor, data)| NetworkMessage {
        message_type,
        vendor_id: (message_type >= 0x80).then_some(vendor),
        data,
    })
}

pub fn npdu() -> impl Strategy<Value = Npdu> {
    let payload = prop_oneof![
        4 => apdu().prop_map(NpduPayload::Apdu),
        1 => network_message().prop_map(NpduPayload::NetworkMessage),
    ];
    (npdu_header(), payload).prop_map(|(header, payload)| Npdu { header, payload })
}

pub fn bvlc() -> impl Strategy<Value = Bvlc> {
    prop_oneof![
        any::<u16>().prop_map(|code| Bvlc::Result(BvlcResultCode(code))),
        any::<u16>().prop_map(|time_to_live_seconds| Bvlc::RegisterForeignDevice {
            time_to_live_seconds
        }),
        npdu().prop_map(Bvlc::OriginalUnicast),
        npdu().prop_map(Bvlc::OriginalBroadcast),
        npdu().prop_map(Bvlc::DistributeBroadcastToNetwork),
        (any::<[u8; 4]>(), any::<u16>(), npdu()).prop_map(|(ip, port, npdu)| Bvlc::Forwarded {
            origin: SocketAddrV4::new(Ipv4Addr::from(ip), port),
            npdu
        }),
    ]
}

/// Runs `test` on `cases` values of the strategy that `strategy()` makes, on a thread with a
/// 32 MiB stack: generating deeply nested messages takes more than the default 2 MiB in debug
/// builds (the strategies' recursion, not the decoder's, which `never_panics.rs` checks in
/// 128 KiB).
pub fn check<S>(
    cases: u32,
    strategy: impl FnOnce() -> S + Send + 'static,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError> + Send + 'static,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let runner = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
            runner
                .run(&strategy(), test)
                .map_err(|error| error.to_string())
        });
    match runner.map(std::thread::JoinHandle::join) {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(failure))) => panic!("{failure}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(error) => panic!("cannot start the proptest thread: {error}"),
    }
}

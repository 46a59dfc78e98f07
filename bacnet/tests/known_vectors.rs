//! Byte-exact vectors, assembled by hand from the encoding rules and examples of ASHRAE 135
//! (clause 20, Annex F examples of ReadProperty, ReadPropertyMultiple, SubscribeCOV and COV
//! notifications, Annex J for BVLC) and from how common captures of a global Who-Is look.
//! Each vector is decoded to the expected message and that message is encoded back to the
//! same bytes; malformed ones must fail at the stated offset.

use std::net::{Ipv4Addr, SocketAddrV4};

use gatehouse_bacnet::{
    AbortReason, Apdu, ApplicationValue, Bvlc, BvlcResultCode, ComplexAck, ConfirmedRequest,
    ConfirmedRequestHeader, ConfirmedServiceChoice, Destination, ErrorClass, ErrorClassAndCode,
    ErrorCode, MaxApdu, MaxSegments, NetworkAddress, NetworkMessage, NetworkPriority, Npdu,
    NpduHeader, NpduPayload, ObjectIdentifier, ObjectType, Problem, PropertyIdentifier,
    RejectReason, Segmentation, StatusFlags, UnconfirmedRequest, Value,
    services::{
        CovNotification, CovSubscription, DeviceRange, IAm, PropertyReference, PropertyResult,
        PropertyValue, ReadAccessResult, ReadAccessSpecification, ReadProperty, ReadPropertyAck,
        ReadPropertyMultiple, ReadPropertyMultipleAck, ReadResult, SubscribeCov, WhoIs,
        WriteProperty,
    },
};

/// Hex with spaces between octets, as in the standard's examples.
fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|octet| {
            u8::from_str_radix(octet, 16)
                .unwrap_or_else(|_| panic!("bad octet {octet:?} in the vector"))
        })
        .collect()
}

/// `hex` decodes to `expected`, and `expected` encodes to `hex`.
#[track_caller]
fn check(hex: &str, expected: Bvlc) {
    let wire = bytes(hex);
    assert_eq!(Bvlc::decode(&wire), Ok(expected.clone()), "decoding {hex}");
    assert_eq!(expected.to_bytes(), Ok(wire), "encoding {expected:?}");
}

/// An Original-Unicast-NPDU on the local network.
fn unicast(apdu: Apdu) -> Bvlc {
    Bvlc::OriginalUnicast(Npdu::local(apdu))
}

fn object(object_type: ObjectType, instance: u32) -> ObjectIdentifier {
    ObjectIdentifier::new(object_type, instance)
}

fn confirmed(invoke_id: u8, max_apdu: MaxApdu, request: ConfirmedRequest) -> Apdu {
    Apdu::ConfirmedRequest {
        header: ConfirmedRequestHeader {
            invoke_id,
            max_apdu,
            max_segments: MaxSegments::Unspecified,
            segmented_response_accepted: false,
        },
        request,
    }
}

fn real(value: f32) -> Vec<Value> {
    vec![ApplicationValue::Real(value).into()]
}

#[test]
fn global_who_is_broadcast() {
    check(
        "81 0b 00 0c 01 20 ff ff 00 ff 10 08",
        Bvlc::OriginalBroadcast(Npdu {
            header: NpduHeader {
                destination: Some(Destination {
                    address: NetworkAddress {
                        network: 0xFFFF,
                        mac: vec![],
                    },
                    hop_count: 255,
                }),
                ..NpduHeader::default()
            },
            payload: NpduPayload::Apdu(Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(
                WhoIs::default(),
            ))),
        }),
    );
}

#[test]
fn who_is_with_a_range_and_i_am() {
    check(
        "81 0a 00 0e 01 00 10 08 0a 03 e8 1a 07 d0",
        unicast(Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(WhoIs {
            range: Some(DeviceRange {
                low: 1000,
                high: 2000,
            }),
        }))),
    );
    check(
        "81 0a 00 14 01 00 10 00 c4 02 00 04 d2 22 05 c4 91 03 21 0f",
        unicast(Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(IAm {
            device: object(ObjectType::DEVICE, 1234),
            max_apdu_length_accepted: 1476,
            segmentation: Segmentation::NONE,
            vendor_id: 15,
        }))),
    );
}

#[test]
fn read_property_and_its_ack() {
    let analog_input = object(ObjectType::ANALOG_INPUT, 1);
    check(
        "81 0a 00 11 01 04 00 05 01 0c 0c 00 00 00 01 19 55",
        unicast(confirmed(
            1,
            MaxApdu::Up1476,
            ConfirmedRequest::ReadProperty(ReadProperty {
                object: analog_input,
                property: PropertyIdentifier::PRESENT_VALUE,
                array_index: None,
            }),
        )),
    );
    check(
        "81 0a 00 17 01 00 30 01 0c 0c 00 00 00 01 19 55 3e 44 42 90 99 9a 3f",
        unicast(Apdu::ComplexAck {
            invoke_id: 1,
            ack: ComplexAck::ReadProperty(ReadPropertyAck {
                object: analog_input,
                property: PropertyIdentifier::PRESENT_VALUE,
                array_index: None,
                value: real(72.3),
            }),
        }),
    );
    // object-list, element 0 (the array's length).
    check(
        "81 0a 00 13 01 04 00 05 02 0c 0c 02 00 04 d2 19 4c 29 00",
        unicast(confirmed(
            2,
            MaxApdu::Up1476,
            ConfirmedRequest::ReadProperty(ReadProperty {
                object: object(ObjectType::DEVICE, 1234),
                property: PropertyIdentifier::OBJECT_LIST,
                array_index: Some(0),
            }),
        )),
    );
}

#[test]
fn read_property_multiple_and_an_ack_with_a_property_error() {
    // Annex F: present-value and reliability of analog-input 16, invoke id 241, max-APDU 1024.
    let analog_input = object(ObjectType::ANALOG_INPUT, 16);
    let reliability = PropertyIdentifier(103);
    check(
        "81 0a 00 15 01 04 00 04 f1 0e 0c 00 00 00 10 1e 09 55 09 67 1f",
        unicast(confirmed(
            241,
            MaxApdu::Up1024,
            ConfirmedRequest::ReadPropertyMultiple(ReadPropertyMultiple {
                specifications: vec![ReadAccessSpecification {
                    object: analog_input,
                    properties: vec![
                        PropertyReference::new(PropertyIdentifier::PRESENT_VALUE),
                        PropertyReference::new(reliability),
                    ],
                }],
            }),
        )),
    );
    check(
        "81 0a 00 21 01 00 30 f1 0e 0c 00 00 00 10 1e 29 55 4e 44 42 90 99 9a 4f 29 67 5e 91 02 91 20 5f 1f",
        unicast(Apdu::ComplexAck {
            invoke_id: 241,
            ack: ComplexAck::ReadPropertyMultiple(ReadPropertyMultipleAck {
                results: vec![ReadAccessResult {
                    object: analog_input,
                    results: vec![
                        PropertyResult {
                            property: PropertyIdentifier::PRESENT_VALUE,
                            array_index: None,
                            result: ReadResult::Value(real(72.3)),
                        },
                        PropertyResult {
                            property: reliability,
                            array_index: None,
                            result: ReadResult::Error(ErrorClassAndCode {
                                class: ErrorClass::PROPERTY,
                                code: ErrorCode::UNKNOWN_PROPERTY,
                            }),
                        },
                    ],
                }],
            }),
        }),
    );
}

#[test]
fn write_property_at_priority_8_and_relinquish() {
    let binary_output = object(ObjectType::BINARY_OUTPUT, 1);
    check(
        "81 0a 00 17 01 04 00 05 02 0f 0c 01 00 00 01 19 55 3e 91 01 3f 49 08",
        unicast(confirmed(
            2,
            MaxApdu::Up1476,
            ConfirmedRequest::WriteProperty(WriteProperty::present_value(
                binary_output,
                ApplicationValue::Enumerated(1),
                8,
            )),
        )),
    );
    let relinquish = WriteProperty::relinquish(binary_output, 8);
    assert!(relinquish.is_relinquish());
    check(
        "81 0a 00 16 01 04 00 05 03 0f 0c 01 00 00 01 19 55 3e 00 3f 49 08",
        unicast(confirmed(
            3,
            MaxApdu::Up1476,
            ConfirmedRequest::WriteProperty(relinquish),
        )),
    );
    check(
        "81 0a 00 09 01 00 20 03 0f",
        unicast(Apdu::SimpleAck {
            invoke_id: 3,
            service: ConfirmedServiceChoice::WRITE_PROPERTY,
        }),
    );
}

#[test]
fn subscribe_cov_and_its_cancellation() {
    // Annex F: process 18, analog-input 10, confirmed notifications, lifetime 0 (indefinite).
    let analog_input = object(ObjectType::ANALOG_INPUT, 10);
    check(
        "81 0a 00 15 01 04 00 02 0f 05 09 12 1c 00 00 00 0a 29 01 39 00",
        unicast(confirmed(
            15,
            MaxApdu::Up206,
            ConfirmedRequest::SubscribeCov(SubscribeCov {
                subscriber_process_id: 18,
                object: analog_input,
                subscription: Some(CovSubscription {
                    confirmed: true,
                    lifetime_seconds: Some(0),
                }),
            }),
        )),
    );
    check(
        "81 0a 00 11 01 04 00 02 10 05 09 12 1c 00 00 00 0a",
        unicast(confirmed(
            16,
            MaxApdu::Up206,
            ConfirmedRequest::SubscribeCov(SubscribeCov {
                subscriber_process_id: 18,
                object: analog_input,
                subscription: None,
            }),
        )),
    );
}

#[test]
fn cov_notifications_unconfirmed_and_confirmed() {
    let notification = CovNotification {
        subscriber_process_id: 18,
        initiating_device: object(ObjectType::DEVICE, 4),
        monitored_object: object(ObjectType::ANALOG_INPUT, 10),
        time_remaining_seconds: 0,
        values: vec![
            PropertyValue {
                property: PropertyIdentifier::PRESENT_VALUE,
                array_index: None,
                value: real(65.0),
                priority: None,
            },
            PropertyValue {
                property: PropertyIdentifier::STATUS_FLAGS,
                array_index: None,
                value: vec![
                    ApplicationValue::BitString(StatusFlags::default().to_bit_string()).into(),
                ],
                priority: None,
            },
        ],
    };
    let service_data = "09 12 1c 02 00 00 04 2c 00 00 00 0a 39 00 4e 09 55 2e 44 42 82 00 00 2f 09 6f 2e 82 04 00 2f 4f";
    check(
        &format!("81 0a 00 28 01 00 10 02 {service_data}"),
        unicast(Apdu::UnconfirmedRequest(
            UnconfirmedRequest::CovNotification(notification.clone()),
        )),
    );
    check(
        &format!("81 0a 00 2a 01 04 00 05 11 01 {service_data}"),
        unicast(confirmed(
            17,
            MaxApdu::Up1476,
            ConfirmedRequest::CovNotification(notification),
        )),
    );
}

#[test]
fn error_reject_and_abort() {
    check(
        "81 0a 00 0d 01 00 50 01 0c 91 01 91 1f",
        unicast(Apdu::Error {
            invoke_id: 1,
            service: ConfirmedServiceChoice::READ_PROPERTY,
            error: ErrorClassAndCode {
                class: ErrorClass::OBJECT,
                code: ErrorCode::UNKNOWN_OBJECT,
            },
        }),
    );
    check(
        "81 0a 00 09 01 00 60 01 09",
        unicast(Apdu::Reject {
            invoke_id: 1,
            reason: RejectReason::UNRECOGNIZED_SERVICE,
        }),
    );
    check(
        "81 0a 00 09 01 00 71 07 04",
        unicast(Apdu::Abort {
            invoke_id: 7,
            from_server: true,
            reason: AbortReason::SEGMENTATION_NOT_SUPPORTED,
        }),
    );
}

#[test]
fn foreign_device_registration_and_bbmd_messages() {
    check(
        "81 05 00 06 00 3c",
        Bvlc::RegisterForeignDevice {
            time_to_live_seconds: 60,
        },
    );
    check(
        "81 00 00 06 00 00",
        Bvlc::Result(BvlcResultCode::SUCCESSFUL_COMPLETION),
    );
    check(
        "81 00 00 06 00 30",
        Bvlc::Result(BvlcResultCode::REGISTER_FOREIGN_DEVICE_NAK),
    );
    let who_is = Npdu::local(Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(
        WhoIs::default(),
    )));
    check(
        "81 09 00 08 01 00 10 08",
        Bvlc::DistributeBroadcastToNetwork(who_is.clone()),
    );
    check(
        "81 04 00 0e c0 a8 01 0a ba c0 01 00 10 08",
        Bvlc::Forwarded {
            origin: SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 47808),
            npdu: who_is,
        },
    );
}

#[test]
fn routed_npdus_and_network_layer_messages() {
    // From a device behind a router: SNET 5, SADR 0x0A, normal priority.
    check(
        "81 0a 00 0c 01 08 00 05 01 0a 10 08",
        Bvlc::OriginalUnicast(Npdu {
            header: NpduHeader {
                source: Some(NetworkAddress {
                    network: 5,
                    mac: vec![0x0A],
                }),
                ..NpduHeader::default()
            },
            payload: NpduPayload::Apdu(Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(
                WhoIs::default(),
            ))),
        }),
    );
    // To a device behind a router: DNET 5, DADR 0x0A, hop count 255, expecting a reply,
    // life-safety priority.
    check(
        "81 0a 00 0e 01 27 00 05 01 0a ff 20 01 0c",
        Bvlc::OriginalUnicast(Npdu {
            header: NpduHeader {
                expecting_reply: true,
                priority: NetworkPriority::LifeSafety,
                destination: Some(Destination {
                    address: NetworkAddress {
                        network: 5,
                        mac: vec![0x0A],
                    },
                    hop_count: 255,
                }),
                source: None,
            },
            payload: NpduPayload::Apdu(Apdu::SimpleAck {
                invoke_id: 1,
                service: ConfirmedServiceChoice::READ_PROPERTY,
            }),
        }),
    );
    // Who-Is-Router-To-Network (message type 0), kept raw.
    check(
        "81 0b 00 07 01 80 00",
        Bvlc::OriginalBroadcast(Npdu {
            header: NpduHeader::default(),
            payload: NpduPayload::NetworkMessage(NetworkMessage {
                message_type: 0,
                vendor_id: None,
                data: vec![],
            }),
        }),
    );
}

/// `hex` fails to decode, naming `what` at `offset` with `problem`.
#[track_caller]
fn refused(hex: &str, what: &str, offset: usize, problem: Problem) {
    let error = Bvlc::decode(&bytes(hex)).map(|bvlc| format!("{bvlc:?}"));
    let error = error.err().unwrap_or_else(|| panic!("{hex} decoded"));
    assert_eq!(
        (error.what, error.offset, error.problem),
        (what, offset, problem),
        "{hex}"
    );
}

#[test]
fn malformed_datagrams_are_refused_where_they_go_wrong() {
    refused(
        "81 0a 00 09 01 00 10 08",
        "BVLC length",
        2,
        Problem::Invalid("the BVLC length is not the datagram's length"),
    );
    refused(
        "82 0a 00 06 01 00",
        "BVLC type",
        0,
        Problem::Unsupported("BVLC type other than 0x81 (BACnet/IP)"),
    );
    refused(
        "81 0a 00 06 02 00",
        "NPDU version",
        4,
        Problem::Unsupported("NPDU version other than 1"),
    );
    // A ComplexACK with the segmented-message bit.
    refused(
        "81 0a 00 0a 01 00 38 01 00 04",
        "ComplexACK",
        6,
        Problem::Segmented,
    );
    refused(
        "81 0a 00 0b 01 04 08 05 01 00 04",
        "Confirmed-Request",
        6,
        Problem::Segmented,
    );
    // An object identifier claiming 2^32-1 octets: refused before any allocation.
    refused(
        "81 0a 00 10 01 00 30 01 0c 0d ff ff ff ff ff 00",
        "ReadProperty-ACK",
        15,
        Problem::Truncated {
            needed: u64::from(u32::MAX),
            remaining: 1,
        },
    );
    // An I-Am whose device identifier is a context tag.
    refused(
        "81 0a 00 0c 01 00 10 00 0c 02 00 04",
        "I-Am device identifier",
        8,
        Problem::UnexpectedTag {
            expected: gatehouse_bacnet::Expected::Text("an application ObjectIdentifier"),
            found: 0x0C,
        },
    );
    // A ReadProperty-ACK whose value is a character string in UCS-2 (set 4).
    refused(
        "81 0a 00 15 01 00 30 01 0c 0c 00 00 00 01 19 4d 3e 73 04 00 3f",
        "ReadProperty-ACK property value",
        18,
        Problem::UnsupportedCharacterSet(4),
    );
    // Trailing garbage after a SimpleACK.
    refused(
        "81 0a 00 0a 01 00 20 01 0c ff",
        "APDU",
        9,
        Problem::TrailingBytes { count: 1 },
    );
}

#[test]
fn half_ranges_and_out_of_range_fields_are_refused() {
    // Who-Is with a low limit only.
    refused(
        "81 0a 00 0a 01 00 10 08 09 05",
        "Who-Is range",
        10,
        Problem::Invalid("a Who-Is range needs both limits or neither"),
    );
    // Who-Is limit above 4194303.
    refused(
        "81 0a 00 10 01 00 10 08 0b 40 00 00 1b 40 00 00",
        "Who-Is low limit",
        9,
        Problem::OutOfRange {
            value: 0x40_0000,
            range: "0..=4194303",
        },
    );
    // SubscribeCOV with a lifetime but no issue-confirmed-notifications.
    refused(
        "81 0a 00 13 01 04 00 05 01 05 09 12 1c 00 00 00 0a 39 3c",
        "SubscribeCOV lifetime",
        17,
        Problem::Invalid("a lifetime without issue-confirmed-notifications"),
    );
    // WriteProperty at priority 17.
    refused(
        "81 0a 00 17 01 04 00 05 02 0f 0c 01 00 00 01 19 55 3e 91 01 3f 49 11",
        "WriteProperty priority",
        22,
        Problem::OutOfRange {
            value: 17,
            range: "1..=16",
        },
    );
    // A Confirmed-Request with reserved max-APDU code 6.
    refused(
        "81 0a 00 11 01 04 00 06 01 0c 0c 00 00 00 01 19 55",
        "Confirmed-Request max-APDU",
        7,
        Problem::Invalid("reserved max-APDU code (6 to 15)"),
    );
    // A source address that is a broadcast (SLEN 0).
    refused(
        "81 0a 00 0b 01 08 00 05 00 10 08",
        "NPDU SNET/SLEN/SADR",
        6,
        Problem::Invalid("a source cannot be a broadcast (SNET 0xFFFF or SLEN 0)"),
    );
}

#[test]
fn fields_out_of_range_are_not_encoded() {
    let binary_output = object(ObjectType::BINARY_OUTPUT, 1);
    for priority in [0, 17] {
        let write = WriteProperty::relinquish(binary_output, priority);
        let apdu = confirmed(1, MaxApdu::Up1476, ConfirmedRequest::WriteProperty(write));
        assert_eq!(
            apdu.to_bytes().map_err(|error| (error.what, error.value)),
            Err(("write priority", u64::from(priority)))
        );
    }
    let too_big = object(ObjectType::DEVICE, ObjectIdentifier::MAX_INSTANCE + 1);
    let read = ConfirmedRequest::ReadProperty(ReadProperty {
        object: too_big,
        property: PropertyIdentifier::OBJECT_NAME,
        array_index: None,
    });
    assert!(confirmed(1, MaxApdu::Up1476, read).to_bytes().is_err());
    let broadcast_source = Npdu {
        header: NpduHeader {
            source: Some(NetworkAddress {
                network: 0xFFFF,
                mac: vec![1],
            }),
            ..NpduHeader::default()
        },
        payload: NpduPayload::Apdu(Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(
            WhoIs::default(),
        ))),
    };
    assert!(broadcast_source.to_bytes().is_err());
}

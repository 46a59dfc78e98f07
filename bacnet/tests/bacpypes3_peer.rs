//! The codec against a BACnet stack that is not ours: a BACpypes3 0.0.110 device
//! (`hil-tests/peers/bacnet_device.py`) on 127.0.0.1, driven over a std `UdpSocket` with
//! nothing but this crate. Needs the virtualenv of `scripts/setup-test-deps.sh`.
//!
//! Seen of BACpypes3 while writing these: it drops confirmed requests it cannot parse
//! (truncated tags, a missing required parameter) without any answer; it answers a value of
//! the wrong datatype with Reject invalid-tag, an unimplemented service with Reject
//! unrecognized-service, and an answer larger than the client accepts (unsegmented) with Abort
//! segmentation-not-supported. It sends a first COV notification as soon as a subscription is
//! made.

mod support;

use std::time::Instant;

use anyhow::{bail, ensure};
use gatehouse_bacnet::{
    AbortReason, Apdu, ApplicationValue, Bvlc, BvlcResultCode, ComplexAck, ConfirmedRequest,
    ConfirmedRequestHeader, ConfirmedServiceChoice, ErrorClass, ErrorClassAndCode, ErrorCode,
    MaxApdu, Npdu, ObjectIdentifier, ObjectType, PropertyIdentifier, RejectReason, StatusFlags,
    UnconfirmedRequest, Value,
    services::{
        CovNotification, CovSubscription, DeviceRange, PropertyReference, ReadAccessSpecification,
        ReadProperty, ReadPropertyAck, ReadPropertyMultiple, ReadResult, SubscribeCov, WhoIs,
        WriteProperty,
    },
};
use support::{
    ANALOG_INPUT, ANSWER_TIMEOUT, BINARY_INPUT, BINARY_OUTPUT, Bacpypes3Device, Client, DEVICE,
    DEVICE_INSTANCE, MULTI_STATE_VALUE,
};

/// BinaryPV values.
const INACTIVE: ApplicationValue = ApplicationValue::Enumerated(0);
const ACTIVE: ApplicationValue = ApplicationValue::Enumerated(1);

fn read_request(
    object: ObjectIdentifier,
    property: PropertyIdentifier,
    array_index: Option<u32>,
) -> ConfirmedRequest {
    ConfirmedRequest::ReadProperty(ReadProperty {
        object,
        property,
        array_index,
    })
}

/// ReadProperty, expecting a ReadProperty-ACK for what was asked.
fn read(
    client: &mut Client,
    object: ObjectIdentifier,
    property: PropertyIdentifier,
    array_index: Option<u32>,
) -> anyhow::Result<Vec<Value>> {
    match client.request(read_request(object, property, array_index))? {
        Apdu::ComplexAck {
            ack:
                ComplexAck::ReadProperty(ReadPropertyAck {
                    object: o,
                    property: p,
                    value,
                    ..
                }),
            ..
        } if o == object && p == property => Ok(value),
        other => bail!("reading {object} {property}: expected its ReadProperty-ACK, got {other:?}"),
    }
}

/// A confirmed request expecting a SimpleACK.
fn expect_simple_ack(client: &mut Client, request: ConfirmedRequest) -> anyhow::Result<()> {
    let service = request.service();
    match client.request(request)? {
        Apdu::SimpleAck { service: acked, .. } if acked == service => Ok(()),
        other => bail!("expected a SimpleACK for {service}, got {other:?}"),
    }
}

fn who_is(
    client: &mut Client,
    range: Option<DeviceRange>,
) -> anyhow::Result<gatehouse_bacnet::services::IAm> {
    client.send(Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(WhoIs {
        range,
    })))?;
    match client.next_unsolicited(|apdu| {
        matches!(apdu, Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(_)))
    })? {
        Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(i_am)) => Ok(i_am),
        other => bail!("expected I-Am, got {other:?}"),
    }
}

#[test]
fn who_is_is_answered_by_i_am() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;

    let i_am = who_is(
        &mut client,
        Some(DeviceRange {
            low: 1000,
            high: 2000,
        }),
    )?;

    assert_eq!(i_am.device, DEVICE);
    assert_eq!(i_am.vendor_id, 999, "BACpypes' vendor id");
    assert!(i_am.max_apdu_length_accepted >= 480, "{i_am:?}");
    Ok(())
}

#[test]
fn the_object_list_names_every_object() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;

    let list = read(&mut client, DEVICE, PropertyIdentifier::OBJECT_LIST, None)?;

    let objects: Vec<ObjectIdentifier> = list
        .iter()
        .filter_map(|value| match value {
            Value::Application(ApplicationValue::ObjectIdentifier(object)) => Some(*object),
            _ => None,
        })
        .collect();
    assert_eq!(
        objects.len(),
        list.len(),
        "only object identifiers: {list:?}"
    );
    for object in [
        DEVICE,
        ANALOG_INPUT,
        BINARY_INPUT,
        BINARY_OUTPUT,
        MULTI_STATE_VALUE,
    ] {
        assert!(
            objects.contains(&object),
            "{object} missing from {objects:?}"
        );
    }
    Ok(())
}

#[test]
fn present_value_and_status_flags_come_in_one_read_property_multiple() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;
    let points = [ANALOG_INPUT, BINARY_INPUT, BINARY_OUTPUT, MULTI_STATE_VALUE];
    let mut specifications: Vec<ReadAccessSpecification> = points
        .iter()
        .map(|object| ReadAccessSpecification {
            object: *object,
            properties: vec![
                PropertyReference::new(PropertyIdentifier::PRESENT_VALUE),
                PropertyReference::new(PropertyIdentifier::STATUS_FLAGS),
            ],
        })
        .collect();
    // An input has no priority array: that one property fails, the rest of the answer stands.
    specifications[0]
        .properties
        .push(PropertyReference::new(PropertyIdentifier::PRIORITY_ARRAY));

    let answer = client.request(ConfirmedRequest::ReadPropertyMultiple(
        ReadPropertyMultiple { specifications },
    ))?;

    let Apdu::ComplexAck {
        ack: ComplexAck::ReadPropertyMultiple(ack),
        ..
    } = answer
    else {
        bail!("expected a ReadPropertyMultiple-ACK, got {answer:?}");
    };
    let objects: Vec<_> = ack.results.iter().map(|result| result.object).collect();
    assert_eq!(objects, points);
    let present_values: Vec<_> = ack
        .results
        .iter()
        .map(|object| &object.results[0])
        .map(|result| (result.property, &result.result))
        .collect();
    assert_eq!(
        present_values,
        [
            (
                PropertyIdentifier::PRESENT_VALUE,
                &ReadResult::Value(vec![ApplicationValue::Real(21.5).into()])
            ),
            (
                PropertyIdentifier::PRESENT_VALUE,
                &ReadResult::Value(vec![INACTIVE.into()])
            ),
            (
                PropertyIdentifier::PRESENT_VALUE,
                &ReadResult::Value(vec![INACTIVE.into()])
            ),
            (
                PropertyIdentifier::PRESENT_VALUE,
                &ReadResult::Value(vec![ApplicationValue::Unsigned(1).into()])
            ),
        ]
    );
    for object in &ack.results {
        let status = &object.results[1];
        assert_eq!(status.property, PropertyIdentifier::STATUS_FLAGS);
        let ReadResult::Value(value) = &status.result else {
            bail!("status-flags of {}: {:?}", object.object, status.result);
        };
        let [Value::Application(ApplicationValue::BitString(bits))] = value.as_slice() else {
            bail!(
                "status-flags of {} is not one bit string: {value:?}",
                object.object
            );
        };
        assert_eq!(
            StatusFlags::from_bit_string(bits),
            Some(StatusFlags::default())
        );
    }
    assert_eq!(
        ack.results[0].results[2].result,
        ReadResult::Error(ErrorClassAndCode {
            class: ErrorClass::PROPERTY,
            code: ErrorCode::UNKNOWN_PROPERTY
        })
    );
    Ok(())
}

#[test]
fn a_write_at_priority_8_commands_the_output_until_relinquished() -> anyhow::Result<()> {
    let mut device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;
    let present_value = |client: &mut Client| {
        read(
            client,
            BINARY_OUTPUT,
            PropertyIdentifier::PRESENT_VALUE,
            None,
        )
    };

    expect_simple_ack(
        &mut client,
        ConfirmedRequest::WriteProperty(WriteProperty::present_value(BINARY_OUTPUT, ACTIVE, 8)),
    )?;
    assert_eq!(present_value(&mut client)?, [ACTIVE.into()]);
    assert_eq!(device.command("get_bo_priority 8")?, "active");
    assert_eq!(
        read(
            &mut client,
            BINARY_OUTPUT,
            PropertyIdentifier::PRIORITY_ARRAY,
            Some(8)
        )?,
        [ACTIVE.into()],
        "slot 8 of the priority array"
    );

    expect_simple_ack(
        &mut client,
        ConfirmedRequest::WriteProperty(WriteProperty::relinquish(BINARY_OUTPUT, 8)),
    )?;
    assert_eq!(
        present_value(&mut client)?,
        [INACTIVE.into()],
        "back to relinquish-default"
    );
    assert_eq!(device.command("get_bo_priority 8")?, "null");
    let priority_array = read(
        &mut client,
        BINARY_OUTPUT,
        PropertyIdentifier::PRIORITY_ARRAY,
        None,
    )?;
    assert_eq!(
        priority_array,
        vec![Value::Application(ApplicationValue::Null); 16]
    );
    Ok(())
}

/// Waits for a COV notification of `object` whose present-value is `expected`.
fn notification_with(
    client: &mut Client,
    object: ObjectIdentifier,
    expected: &ApplicationValue,
) -> anyhow::Result<Apdu> {
    client.next_unsolicited(|apdu| {
        notification(apdu).is_some_and(|notification| {
            notification.monitored_object == object
                && notification.value_of(PropertyIdentifier::PRESENT_VALUE)
                    == Some(&[Value::Application(expected.clone())])
        })
    })
}

fn notification(apdu: &Apdu) -> Option<&CovNotification> {
    match apdu {
        Apdu::UnconfirmedRequest(UnconfirmedRequest::CovNotification(notification))
        | Apdu::ConfirmedRequest {
            request: ConfirmedRequest::CovNotification(notification),
            ..
        } => Some(notification),
        _ => None,
    }
}

#[test]
fn cov_subscriptions_notify_changes_until_cancelled() -> anyhow::Result<()> {
    let mut device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;
    let subscribe = |process: u32, object, subscription| {
        ConfirmedRequest::SubscribeCov(SubscribeCov {
            subscriber_process_id: process,
            object,
            subscription,
        })
    };

    // Unconfirmed notifications of the analog input.
    let terms = Some(CovSubscription {
        confirmed: false,
        lifetime_seconds: Some(60),
    });
    expect_simple_ack(&mut client, subscribe(7, ANALOG_INPUT, terms))?;
    device.command("set_ai 30")?;
    let apdu = notification_with(&mut client, ANALOG_INPUT, &ApplicationValue::Real(30.0))?;
    let Some(changed) = notification(&apdu) else {
        bail!("not a notification: {apdu:?}")
    };
    ensure!(
        matches!(apdu, Apdu::UnconfirmedRequest(_)),
        "asked for unconfirmed: {apdu:?}"
    );
    assert_eq!(changed.subscriber_process_id, 7);
    assert_eq!(changed.initiating_device, DEVICE);
    assert!(changed.time_remaining_seconds <= 60);
    assert!(
        changed.value_of(PropertyIdentifier::STATUS_FLAGS).is_some(),
        "{changed:?}"
    );

    // Renewal: the same subscriber and object again, with a new lifetime.
    expect_simple_ack(
        &mut client,
        subscribe(
            7,
            ANALOG_INPUT,
            Some(CovSubscription {
                confirmed: false,
                lifetime_seconds: Some(120),
            }),
        ),
    )?;

    // Confirmed notifications of the binary input, acknowledged by the client.
    expect_simple_ack(
        &mut client,
        subscribe(
            8,
            BINARY_INPUT,
            Some(CovSubscription {
                confirmed: true,
                lifetime_seconds: Some(60),
            }),
        ),
    )?;
    device.command("set_bi active")?;
    let apdu = notification_with(&mut client, BINARY_INPUT, &ACTIVE)?;
    let Apdu::ConfirmedRequest {
        header,
        request: ConfirmedRequest::CovNotification(changed),
    } = apdu
    else {
        bail!("asked for confirmed notifications, got {apdu:?}");
    };
    assert_eq!(changed.subscriber_process_id, 8);
    client.send(Apdu::SimpleAck {
        invoke_id: header.invoke_id,
        service: ConfirmedServiceChoice::CONFIRMED_COV_NOTIFICATION,
    })?;

    // Cancellation of both.
    expect_simple_ack(&mut client, subscribe(7, ANALOG_INPUT, None))?;
    expect_simple_ack(&mut client, subscribe(8, BINARY_INPUT, None))?;
    Ok(())
}

#[test]
fn an_unknown_object_is_an_error_pdu() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;
    let missing = ObjectIdentifier::new(ObjectType::ANALOG_INPUT, 99);

    let answer = client.request(read_request(
        missing,
        PropertyIdentifier::PRESENT_VALUE,
        None,
    ))?;

    let Apdu::Error { service, error, .. } = answer else {
        bail!("expected an Error PDU, got {answer:?}");
    };
    assert_eq!(service, ConfirmedServiceChoice::READ_PROPERTY);
    assert_eq!(
        error,
        ErrorClassAndCode {
            class: ErrorClass::OBJECT,
            code: ErrorCode::UNKNOWN_OBJECT
        }
    );
    Ok(())
}

#[test]
fn malformed_and_unsupported_requests_are_rejected_or_aborted() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let mut client = Client::new(device.addr)?;

    // A character string where binary-output's present-value (an enumeration) belongs.
    let wrong_type = WriteProperty::present_value(
        BINARY_OUTPUT,
        ApplicationValue::CharacterString("open".into()),
        8,
    );
    let answer = client.request(ConfirmedRequest::WriteProperty(wrong_type))?;
    assert!(
        matches!(
            answer,
            Apdu::Reject {
                reason: RejectReason::INVALID_TAG,
                ..
            }
        ),
        "{answer:?}"
    );

    // DeviceCommunicationControl (17), which BACpypes3 does not implement.
    let unsupported = ConfirmedRequest::Other {
        service: ConfirmedServiceChoice(17),
        data: vec![0x19, 0x01],
    };
    let answer = client.request(unsupported)?;
    assert!(
        matches!(
            answer,
            Apdu::Reject {
                reason: RejectReason::UNRECOGNIZED_SERVICE,
                ..
            }
        ),
        "{answer:?}"
    );

    // Every property of the device does not fit in 50 octets, and this client takes no segments.
    let invoke_id = client.invoke_id();
    client.send(Apdu::ConfirmedRequest {
        header: ConfirmedRequestHeader {
            max_apdu: MaxApdu::Up50,
            ..ConfirmedRequestHeader::unsegmented(invoke_id)
        },
        request: ConfirmedRequest::ReadPropertyMultiple(ReadPropertyMultiple {
            specifications: vec![ReadAccessSpecification {
                object: DEVICE,
                properties: vec![PropertyReference::new(PropertyIdentifier::ALL)],
            }],
        }),
    })?;
    let answer = client.answer_to(invoke_id)?;
    assert_eq!(
        answer,
        Apdu::Abort {
            invoke_id,
            from_server: true,
            reason: AbortReason::SEGMENTATION_NOT_SUPPORTED
        }
    );
    Ok(())
}

#[test]
fn a_restarted_device_announces_itself_again_with_its_commands_cleared() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let port = device.addr.port();
    let mut client = Client::new(device.addr)?;
    expect_simple_ack(
        &mut client,
        ConfirmedRequest::WriteProperty(WriteProperty::present_value(BINARY_OUTPUT, ACTIVE, 8)),
    )?;

    drop(device);
    let restarted = Bacpypes3Device::start_on(port)?;

    assert_eq!(who_is(&mut client, None)?.device.instance, DEVICE_INSTANCE);
    assert_eq!(
        read(
            &mut client,
            BINARY_OUTPUT,
            PropertyIdentifier::PRESENT_VALUE,
            None
        )?,
        [INACTIVE.into()],
        "a simulated device keeps no state across restarts"
    );
    drop(restarted);
    Ok(())
}

#[test]
fn a_foreign_device_registers_with_a_bbmd_and_distributes_a_broadcast() -> anyhow::Result<()> {
    let bbmd = Bacpypes3Device::start_bbmd()?;
    let mut client = Client::new(bbmd.addr)?;

    client.send_bvlc(&Bvlc::RegisterForeignDevice {
        time_to_live_seconds: 60,
    })?;
    let answer = client.receive_bvlc(Instant::now() + ANSWER_TIMEOUT)?;
    assert_eq!(answer, Bvlc::Result(BvlcResultCode::SUCCESSFUL_COMPLETION));

    // A foreign device's Who-Is goes to its BBMD for distribution; the device behind it answers.
    let who_is = Apdu::UnconfirmedRequest(UnconfirmedRequest::WhoIs(WhoIs::default()));
    client.send_bvlc(&Bvlc::DistributeBroadcastToNetwork(Npdu::local(who_is)))?;
    let i_am = client.next_unsolicited(|apdu| {
        matches!(apdu, Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(_)))
    })?;
    assert!(
        matches!(&i_am, Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(i_am)) if i_am.device == DEVICE),
        "{i_am:?}"
    );
    Ok(())
}

#[test]
fn a_device_that_is_no_bbmd_refuses_foreign_device_registration() -> anyhow::Result<()> {
    let device = Bacpypes3Device::start()?;
    let client = Client::new(device.addr)?;

    client.send_bvlc(&Bvlc::RegisterForeignDevice {
        time_to_live_seconds: 60,
    })?;

    let answer = client.receive_bvlc(Instant::now() + ANSWER_TIMEOUT)?;
    assert_eq!(
        answer,
        Bvlc::Result(BvlcResultCode::REGISTER_FOREIGN_DEVICE_NAK)
    );
    Ok(())
}

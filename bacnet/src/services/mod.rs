//! The services the adapter uses, one file each: what goes after the APDU header.
//!
//! Each service type encodes itself into the bytes after the service choice and decodes from
//! them; the APDU layer ([`crate::apdu`]) picks the type from the service choice and checks
//! that the service consumed every byte.

mod cov_notification;
mod i_am;
mod read_property;
mod read_property_multiple;
mod subscribe_cov;
mod who_is;
mod write_property;

pub use cov_notification::{CovNotification, PropertyValue};
pub use i_am::IAm;
pub use read_property::{ReadProperty, ReadPropertyAck};
pub use read_property_multiple::{
    PropertyReference, PropertyResult, ReadAccessResult, ReadAccessSpecification,
    ReadPropertyMultiple, ReadPropertyMultipleAck, ReadResult,
};
pub use subscribe_cov::{CovSubscription, SubscribeCov};
pub use who_is::{DeviceRange, WhoIs};
pub use write_property::WriteProperty;

use crate::{
    error::{DecodeError, EncodeError, Expected, Problem, check_max},
    object::{ErrorClass, ErrorCode, ObjectIdentifier, PropertyIdentifier},
    reader::Reader,
    tag::{self, application},
    value::{ApplicationValue, read_application_value},
};

/// The error class and code of an Error PDU or of one property in a ReadPropertyMultiple-ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorClassAndCode {
    pub class: ErrorClass,
    pub code: ErrorCode,
}

impl std::fmt::Display for ErrorClassAndCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.code)
    }
}

impl ErrorClassAndCode {
    /// Two application-tagged enumerations (the Error production).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        ApplicationValue::Enumerated(self.class.0).encode(out)?;
        ApplicationValue::Enumerated(self.code.0).encode(out)
    }

    pub(crate) fn decode(reader: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let class = read_enumerated(reader, what)?;
        let code = read_enumerated(reader, what)?;
        Ok(Self {
            class: ErrorClass(class),
            code: ErrorCode(code),
        })
    }
}

fn read_enumerated(reader: &mut Reader<'_>, what: &'static str) -> Result<u32, DecodeError> {
    let expected = Expected::Text("an application Enumerated");
    tag::read_application(reader, application::ENUMERATED, what, expected)?.unsigned32(what)
}

/// Reads an application-tagged Unsigned no larger than `max`.
fn read_application_unsigned(
    reader: &mut Reader<'_>,
    max: u64,
    range: &'static str,
    what: &'static str,
) -> Result<u64, DecodeError> {
    let start = reader.offset();
    match read_application_value(reader, what)? {
        ApplicationValue::Unsigned(value) if value <= max => Ok(value),
        ApplicationValue::Unsigned(value) => {
            Err(reader.error_at(start, what, Problem::OutOfRange { value, range }))
        }
        _ => Err(tag::unexpected_tag(
            reader,
            start,
            what,
            Expected::Text("an application Unsigned"),
        )),
    }
}

/// Reads context-tagged Unsigned `[number]` no larger than `max`.
fn read_unsigned(
    reader: &mut Reader<'_>,
    number: u8,
    max: u64,
    range: &'static str,
    what: &'static str,
) -> Result<u64, DecodeError> {
    let content = tag::read_context(reader, number, what)?;
    in_range(content.unsigned(what)?, max, range, content.offset, what)
}

/// Reads context-tagged Unsigned `[number]` no larger than `max`, if it is there.
fn read_optional_unsigned(
    reader: &mut Reader<'_>,
    number: u8,
    max: u64,
    range: &'static str,
    what: &'static str,
) -> Result<Option<u64>, DecodeError> {
    match tag::read_optional_context(reader, number, what)? {
        Some(content) => {
            in_range(content.unsigned(what)?, max, range, content.offset, what).map(Some)
        }
        None => Ok(None),
    }
}

fn in_range(
    value: u64,
    max: u64,
    range: &'static str,
    offset: usize,
    what: &'static str,
) -> Result<u64, DecodeError> {
    if value <= max {
        Ok(value)
    } else {
        Err(DecodeError {
            what,
            offset,
            problem: Problem::OutOfRange { value, range },
        })
    }
}

const U32_RANGE: &str = "0..=2^32-1";

fn read_u32(reader: &mut Reader<'_>, number: u8, what: &'static str) -> Result<u32, DecodeError> {
    read_unsigned(reader, number, u32::MAX.into(), U32_RANGE, what).map(|value| value as u32)
}

fn read_optional_u32(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<Option<u32>, DecodeError> {
    Ok(
        read_optional_unsigned(reader, number, u32::MAX.into(), U32_RANGE, what)?
            .map(|value| value as u32),
    )
}

fn write_optional_unsigned(
    out: &mut Vec<u8>,
    number: u8,
    value: Option<u32>,
) -> Result<(), EncodeError> {
    match value {
        Some(value) => tag::write_context_unsigned(out, number, value.into()),
        None => Ok(()),
    }
}

fn read_object(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<ObjectIdentifier, DecodeError> {
    tag::read_context(reader, number, what)?.object_identifier(what)
}

fn read_property(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<PropertyIdentifier, DecodeError> {
    tag::read_context(reader, number, what)?
        .unsigned32(what)
        .map(PropertyIdentifier)
}

fn write_property(
    out: &mut Vec<u8>,
    number: u8,
    property: PropertyIdentifier,
) -> Result<(), EncodeError> {
    tag::write_context_unsigned(out, number, property.0.into())
}

/// A write priority, 1 (highest) to 16.
const PRIORITY_RANGE: &str = "1..=16";

fn read_optional_priority(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<Option<u8>, DecodeError> {
    let Some(content) = tag::read_optional_context(reader, number, what)? else {
        return Ok(None);
    };
    match content.unsigned(what)? {
        value @ 1..=16 => Ok(Some(value as u8)),
        value => Err(DecodeError {
            what,
            offset: content.offset,
            problem: Problem::OutOfRange {
                value,
                range: PRIORITY_RANGE,
            },
        }),
    }
}

fn write_optional_priority(
    out: &mut Vec<u8>,
    number: u8,
    priority: Option<u8>,
) -> Result<(), EncodeError> {
    let Some(priority) = priority else {
        return Ok(());
    };
    if priority == 0 {
        return Err(EncodeError {
            what: "write priority",
            value: 0,
            range: PRIORITY_RANGE,
        });
    }
    check_max("write priority", priority.into(), 16, PRIORITY_RANGE)?;
    tag::write_context_unsigned(out, number, priority.into())
}

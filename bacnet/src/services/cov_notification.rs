//! Confirmed- and UnconfirmedCOVNotification (clauses 13.6, 13.7): the same parameters, sent
//! as a confirmed request (to be answered by a SimpleACK) or an unconfirmed one.

use super::{
    read_object, read_optional_priority, read_optional_u32, read_property, read_u32,
    write_optional_priority, write_optional_unsigned, write_property,
};
use crate::{
    error::{DecodeError, EncodeError},
    object::{ObjectIdentifier, PropertyIdentifier},
    reader::Reader,
    tag,
    value::{Value, read_property_value, write_property_value},
};

/// COVNotification-Request.
#[derive(Debug, Clone, PartialEq)]
pub struct CovNotification {
    pub subscriber_process_id: u32,
    pub initiating_device: ObjectIdentifier,
    pub monitored_object: ObjectIdentifier,
    pub time_remaining_seconds: u32,
    /// Typically present-value and status-flags.
    pub values: Vec<PropertyValue>,
}

/// BACnetPropertyValue.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyValue {
    pub property: PropertyIdentifier,
    pub array_index: Option<u32>,
    pub value: Vec<Value>,
    pub priority: Option<u8>,
}

impl CovNotification {
    /// The value of `property` in this notification, if it carries it.
    pub fn value_of(&self, property: PropertyIdentifier) -> Option<&[Value]> {
        self.values
            .iter()
            .find(|value| value.property == property)
            .map(|value| value.value.as_slice())
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        tag::write_context_unsigned(out, 0, self.subscriber_process_id.into())?;
        tag::write_context_object_id(out, 1, self.initiating_device)?;
        tag::write_context_object_id(out, 2, self.monitored_object)?;
        tag::write_context_unsigned(out, 3, self.time_remaining_seconds.into())?;
        tag::write_opening(out, 4)?;
        for value in &self.values {
            write_property(out, 0, value.property)?;
            write_optional_unsigned(out, 1, value.array_index)?;
            write_property_value(out, 2, &value.value)?;
            write_optional_priority(out, 3, value.priority)?;
        }
        tag::write_closing(out, 4)
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = "COVNotification";
        let subscriber_process_id = read_u32(reader, 0, "COVNotification subscriber process id")?;
        let initiating_device = read_object(reader, 1, "COVNotification initiating device")?;
        let monitored_object = read_object(reader, 2, "COVNotification monitored object")?;
        let time_remaining_seconds = read_u32(reader, 3, "COVNotification time remaining")?;
        tag::expect_opening(reader, 4, what)?;
        let mut values = Vec::new();
        while !tag::at_closing(reader, 4, what)? {
            let property = read_property(reader, 0, "COVNotification property")?;
            let array_index = read_optional_u32(reader, 1, "COVNotification array index")?;
            let value = read_property_value(reader, 2, "COVNotification value")?;
            let priority = read_optional_priority(reader, 3, "COVNotification priority")?;
            values.push(PropertyValue {
                property,
                array_index,
                value,
                priority,
            });
        }
        tag::expect_closing(reader, 4, what)?;
        Ok(Self {
            subscriber_process_id,
            initiating_device,
            monitored_object,
            time_remaining_seconds,
            values,
        })
    }
}

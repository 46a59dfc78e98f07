//! WriteProperty (clause 15.9): one property of one object, at a priority for commandable
//! properties; writing Null relinquishes the priority's slot in the priority array.

use super::{
    read_optional_priority,
    read_property::{decode_object_property, encode_object_property},
    write_optional_priority,
};
use crate::{
    error::{DecodeError, EncodeError},
    object::{ObjectIdentifier, PropertyIdentifier},
    reader::Reader,
    value::{ApplicationValue, Value, read_property_value, write_property_value},
};

/// WriteProperty-Request; answered by a SimpleACK or an Error PDU.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteProperty {
    pub object: ObjectIdentifier,
    pub property: PropertyIdentifier,
    pub array_index: Option<u32>,
    pub value: Vec<Value>,
    /// 1 (highest) to 16; `None` lets the device use its default (16).
    pub priority: Option<u8>,
}

impl WriteProperty {
    /// Writes `value` to the present-value of `object` at `priority`.
    pub fn present_value(object: ObjectIdentifier, value: ApplicationValue, priority: u8) -> Self {
        Self {
            object,
            property: PropertyIdentifier::PRESENT_VALUE,
            array_index: None,
            value: vec![Value::Application(value)],
            priority: Some(priority),
        }
    }

    /// Relinquishes `priority` on the present-value of `object` (writes Null there).
    pub fn relinquish(object: ObjectIdentifier, priority: u8) -> Self {
        Self::present_value(object, ApplicationValue::Null, priority)
    }

    /// Whether this write is a relinquish (its value is a single Null).
    pub fn is_relinquish(&self) -> bool {
        matches!(
            self.value.as_slice(),
            [Value::Application(ApplicationValue::Null)]
        )
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_object_property(out, self.object, self.property, self.array_index)?;
        write_property_value(out, 3, &self.value)?;
        write_optional_priority(out, 4, self.priority)
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (object, property, array_index) = decode_object_property(reader, "WriteProperty")?;
        let value = read_property_value(reader, 3, "WriteProperty property value")?;
        let priority = read_optional_priority(reader, 4, "WriteProperty priority")?;
        Ok(Self {
            object,
            property,
            array_index,
            value,
            priority,
        })
    }
}

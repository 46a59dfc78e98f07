//! ReadProperty (clause 15.5): one property of one object, and its ACK.

use super::{
    read_object, read_optional_u32, read_property, write_optional_unsigned, write_property,
};
use crate::{
    error::{DecodeError, EncodeError},
    object::{ObjectIdentifier, PropertyIdentifier},
    reader::Reader,
    tag,
    value::{Value, read_property_value, write_property_value},
};

/// ReadProperty-Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadProperty {
    pub object: ObjectIdentifier,
    pub property: PropertyIdentifier,
    /// An element of an array property; 0 reads the array's length.
    pub array_index: Option<u32>,
}

/// ReadProperty-ACK.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPropertyAck {
    pub object: ObjectIdentifier,
    pub property: PropertyIdentifier,
    pub array_index: Option<u32>,
    pub value: Vec<Value>,
}

impl ReadProperty {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_object_property(out, self.object, self.property, self.array_index)
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (object, property, array_index) = decode_object_property(reader, "ReadProperty")?;
        Ok(Self {
            object,
            property,
            array_index,
        })
    }
}

impl ReadPropertyAck {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_object_property(out, self.object, self.property, self.array_index)?;
        write_property_value(out, 3, &self.value)
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (object, property, array_index) = decode_object_property(reader, "ReadProperty-ACK")?;
        let value = read_property_value(reader, 3, "ReadProperty-ACK property value")?;
        Ok(Self {
            object,
            property,
            array_index,
            value,
        })
    }
}

/// `[0] object, [1] property, [2] array index OPTIONAL`: how ReadProperty, its ACK and
/// WriteProperty start.
pub(super) fn encode_object_property(
    out: &mut Vec<u8>,
    object: ObjectIdentifier,
    property: PropertyIdentifier,
    array_index: Option<u32>,
) -> Result<(), EncodeError> {
    tag::write_context_object_id(out, 0, object)?;
    write_property(out, 1, property)?;
    write_optional_unsigned(out, 2, array_index)
}

pub(super) fn decode_object_property(
    reader: &mut Reader<'_>,
    what: &'static str,
) -> Result<(ObjectIdentifier, PropertyIdentifier, Option<u32>), DecodeError> {
    let object = read_object(reader, 0, what)?;
    let property = read_property(reader, 1, what)?;
    let array_index = read_optional_u32(reader, 2, what)?;
    Ok((object, property, array_index))
}

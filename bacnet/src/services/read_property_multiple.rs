//! ReadPropertyMultiple (clause 15.7): several properties of several objects in one request;
//! the ACK carries, per property, either its value or why it could not be read.

use super::{
    ErrorClassAndCode, read_object, read_optional_u32, read_property, write_optional_unsigned,
    write_property,
};
use crate::{
    error::{DecodeError, EncodeError, Expected},
    object::{ObjectIdentifier, PropertyIdentifier},
    reader::Reader,
    tag::{self, Tag},
    value::{Value, read_property_value, write_property_value},
};

/// ReadPropertyMultiple-Request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPropertyMultiple {
    pub specifications: Vec<ReadAccessSpecification>,
}

/// The properties to read of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAccessSpecification {
    pub object: ObjectIdentifier,
    pub properties: Vec<PropertyReference>,
}

/// BACnetPropertyReference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyReference {
    pub property: PropertyIdentifier,
    pub array_index: Option<u32>,
}

impl PropertyReference {
    pub const fn new(property: PropertyIdentifier) -> Self {
        Self {
            property,
            array_index: None,
        }
    }
}

/// ReadPropertyMultiple-ACK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadPropertyMultipleAck {
    pub results: Vec<ReadAccessResult>,
}

/// What was read of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadAccessResult {
    pub object: ObjectIdentifier,
    pub results: Vec<PropertyResult>,
}

/// What was read of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyResult {
    pub property: PropertyIdentifier,
    pub array_index: Option<u32>,
    pub result: ReadResult,
}

/// A property's value, or the error that the device gave for it alone.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadResult {
    Value(Vec<Value>),
    Error(ErrorClassAndCode),
}

impl ReadPropertyMultiple {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for specification in &self.specifications {
            tag::write_context_object_id(out, 0, specification.object)?;
            tag::write_opening(out, 1)?;
            for reference in &specification.properties {
                write_property(out, 0, reference.property)?;
                write_optional_unsigned(out, 1, reference.array_index)?;
            }
            tag::write_closing(out, 1)?;
        }
        Ok(())
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = "ReadPropertyMultiple read access specification";
        let mut specifications = Vec::new();
        while !reader.is_empty() {
            let object = read_object(reader, 0, what)?;
            tag::expect_opening(reader, 1, what)?;
            let mut properties = Vec::new();
            while !tag::at_closing(reader, 1, what)? {
                let property = read_property(reader, 0, "ReadPropertyMultiple property reference")?;
                let array_index = read_optional_u32(reader, 1, "ReadPropertyMultiple array index")?;
                properties.push(PropertyReference {
                    property,
                    array_index,
                });
            }
            tag::expect_closing(reader, 1, what)?;
            specifications.push(ReadAccessSpecification { object, properties });
        }
        Ok(Self { specifications })
    }
}

impl ReadPropertyMultipleAck {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for object in &self.results {
            tag::write_context_object_id(out, 0, object.object)?;
            tag::write_opening(out, 1)?;
            for result in &object.results {
                write_property(out, 2, result.property)?;
                write_optional_unsigned(out, 3, result.array_index)?;
                match &result.result {
                    ReadResult::Value(value) => write_property_value(out, 4, value)?,
                    ReadResult::Error(error) => {
                        tag::write_opening(out, 5)?;
                        error.encode(out)?;
                        tag::write_closing(out, 5)?;
                    }
                }
            }
            tag::write_closing(out, 1)?;
        }
        Ok(())
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = "ReadPropertyMultiple-ACK read access result";
        let mut results = Vec::new();
        while !reader.is_empty() {
            let object = read_object(reader, 0, what)?;
            let mut properties = Vec::new();
            // listOfResults is OPTIONAL in the ASN.1; when absent the object had nothing.
            if tag::at_opening(reader, 1, what)? {
                tag::expect_opening(reader, 1, what)?;
                while !tag::at_closing(reader, 1, what)? {
                    properties.push(decode_property_result(reader)?);
                }
                tag::expect_closing(reader, 1, what)?;
            }
            results.push(ReadAccessResult {
                object,
                results: properties,
            });
        }
        Ok(Self { results })
    }
}

fn decode_property_result(reader: &mut Reader<'_>) -> Result<PropertyResult, DecodeError> {
    let what = "ReadPropertyMultiple-ACK property result";
    let property = read_property(reader, 2, what)?;
    let array_index = read_optional_u32(reader, 3, what)?;
    let start = reader.offset();
    let result = match tag::peek_tag(reader, what)? {
        Some(Tag::Opening(4)) => ReadResult::Value(read_property_value(
            reader,
            4,
            "ReadPropertyMultiple-ACK property value",
        )?),
        Some(Tag::Opening(5)) => {
            let what = "ReadPropertyMultiple-ACK property access error";
            tag::expect_opening(reader, 5, what)?;
            let error = ErrorClassAndCode::decode(reader, what)?;
            tag::expect_closing(reader, 5, what)?;
            ReadResult::Error(error)
        }
        _ => {
            return Err(tag::unexpected_tag(
                reader,
                start,
                what,
                Expected::Text("opening tag [4] (value) or [5] (error)"),
            ));
        }
    };
    Ok(PropertyResult {
        property,
        array_index,
        result,
    })
}

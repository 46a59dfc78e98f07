//! Tags (ASHRAE 135 clause 20.2.1): the initial octet, extended tag numbers, extended lengths,
//! opening and closing tags; and the primitive contents (unsigned, signed, enumerated, object
//! identifier) that services read out of context-tagged fields.

use crate::{
    error::{DecodeError, EncodeError, Expected, Problem, check_max},
    object::ObjectIdentifier,
    reader::Reader,
};

/// Application tag numbers (clause 20.2.1.4).
pub(crate) mod application {
    pub const NULL: u8 = 0;
    pub const BOOLEAN: u8 = 1;
    pub const UNSIGNED: u8 = 2;
    pub const SIGNED: u8 = 3;
    pub const REAL: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const OCTET_STRING: u8 = 6;
    pub const CHARACTER_STRING: u8 = 7;
    pub const BIT_STRING: u8 = 8;
    pub const ENUMERATED: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const OBJECT_IDENTIFIER: u8 = 12;
}

/// Deepest nesting of opening/closing tags a decoder follows, so that hostile input cannot
/// exhaust the stack.
pub const MAX_NESTING: usize = 32;

/// A decoded tag header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// An application tag; for Boolean, `length` is the value itself (no content octets).
    Application {
        number: u8,
        length: u32,
    },
    Context {
        number: u8,
        length: u32,
    },
    Opening(u8),
    Closing(u8),
}

/// Reads a tag header; the content (if any) is left for the caller.
pub(crate) fn read_tag(reader: &mut Reader<'_>, what: &'static str) -> Result<Tag, DecodeError> {
    let start = reader.offset();
    let first = reader.u8(what)?;
    let context = first & 0x08 != 0;
    let lvt = first & 0x07;
    let mut number = first >> 4;
    if number == 0x0F {
        number = reader.u8(what)?;
        if number == 0xFF {
            return Err(reader.error_at(
                start,
                what,
                Problem::Invalid("tag number 255 is reserved"),
            ));
        }
    }
    match (context, lvt) {
        (true, 6) => return Ok(Tag::Opening(number)),
        (true, 7) => return Ok(Tag::Closing(number)),
        (false, 6 | 7) => {
            return Err(reader.error_at(
                start,
                what,
                Problem::UnexpectedTag {
                    expected: Expected::Text("an application tag with a length"),
                    found: first,
                },
            ));
        }
        _ => {}
    }
    let length = match lvt {
        5 => match reader.u8(what)? {
            254 => u32::from(reader.u16(what)?),
            255 => reader.u32(what)?,
            short => u32::from(short),
        },
        direct => u32::from(direct),
    };
    Ok(if context {
        Tag::Context { number, length }
    } else {
        Tag::Application { number, length }
    })
}

/// The next tag, without consuming it; `None` at the end of the bytes.
pub(crate) fn peek_tag(
    reader: &Reader<'_>,
    what: &'static str,
) -> Result<Option<Tag>, DecodeError> {
    if reader.is_empty() {
        return Ok(None);
    }
    read_tag(&mut reader.clone(), what).map(Some)
}

/// Writes a tag header. `length` is the content length, or for an application Boolean its
/// value; opening and closing tags have their own functions.
pub(crate) fn write_tag(
    out: &mut Vec<u8>,
    number: u8,
    context: bool,
    length: usize,
) -> Result<(), EncodeError> {
    check_max("tag number", number.into(), 254, "0..=254")?;
    check_max("tag length", length as u64, u32::MAX.into(), "0..=2^32-1")?;
    let class = if context { 0x08 } else { 0x00 };
    let lvt = if length < 5 { length as u8 } else { 5 };
    write_initial_octet(out, number, class | lvt);
    if length >= 5 {
        if length <= 253 {
            out.push(length as u8);
        } else if let Ok(short) = u16::try_from(length) {
            out.push(254);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(255);
            out.extend_from_slice(&(length as u32).to_be_bytes());
        }
    }
    Ok(())
}

pub(crate) fn write_opening(out: &mut Vec<u8>, number: u8) -> Result<(), EncodeError> {
    check_max("opening tag number", number.into(), 254, "0..=254")?;
    write_initial_octet(out, number, 0x0E);
    Ok(())
}

pub(crate) fn write_closing(out: &mut Vec<u8>, number: u8) -> Result<(), EncodeError> {
    check_max("closing tag number", number.into(), 254, "0..=254")?;
    write_initial_octet(out, number, 0x0F);
    Ok(())
}

/// The initial octet with `low_bits` (class and length/value/type), and the extended tag
/// number octet when `number` is 15 or more.
fn write_initial_octet(out: &mut Vec<u8>, number: u8, low_bits: u8) {
    if number < 15 {
        out.push(number << 4 | low_bits);
    } else {
        out.push(0xF0 | low_bits);
        out.push(number);
    }
}

/// Primitive content and where it started, for error offsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Content<'a> {
    pub bytes: &'a [u8],
    pub offset: usize,
}

impl Content<'_> {
    pub(crate) fn error(&self, what: &'static str, problem: Problem) -> DecodeError {
        DecodeError {
            what,
            offset: self.offset,
            problem,
        }
    }

    /// Big-endian unsigned integer of 1 to 8 octets.
    pub(crate) fn unsigned(&self, what: &'static str) -> Result<u64, DecodeError> {
        match self.bytes.len() {
            1..=8 => Ok(self.bytes.iter().fold(0, |acc, b| acc << 8 | u64::from(*b))),
            0 => Err(self.error(
                what,
                Problem::Invalid("an integer needs at least one octet"),
            )),
            _ => Err(self.error(what, Problem::Unsupported("integers longer than 8 octets"))),
        }
    }

    /// An unsigned that must fit in 32 bits (Unsigned32, enumerations).
    pub(crate) fn unsigned32(&self, what: &'static str) -> Result<u32, DecodeError> {
        let value = self.unsigned(what)?;
        u32::try_from(value).map_err(|_| {
            self.error(
                what,
                Problem::OutOfRange {
                    value,
                    range: "0..=2^32-1",
                },
            )
        })
    }

    /// Two's complement integer of 1 to 8 octets.
    pub(crate) fn signed(&self, what: &'static str) -> Result<i64, DecodeError> {
        let unsigned = self.unsigned(what)?;
        let bits = 8 * self.bytes.len() as u32;
        // Sign-extend from `bits` to 64.
        let shift = 64 - bits;
        Ok(((unsigned << shift) as i64) >> shift)
    }

    pub(crate) fn object_identifier(
        &self,
        what: &'static str,
    ) -> Result<ObjectIdentifier, DecodeError> {
        let bytes = self.array(what, "an object identifier is 4 octets")?;
        Ok(ObjectIdentifier::from_u32(u32::from_be_bytes(bytes)))
    }

    /// Content of exactly `N` octets; `message` says so when it is not.
    pub(crate) fn array<const N: usize>(
        &self,
        what: &'static str,
        message: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        <[u8; N]>::try_from(self.bytes).map_err(|_| self.error(what, Problem::Invalid(message)))
    }
}

/// Reads a context-tagged primitive field `[number]` and returns its content.
pub(crate) fn read_context<'a>(
    reader: &mut Reader<'a>,
    number: u8,
    what: &'static str,
) -> Result<Content<'a>, DecodeError> {
    let start = reader.offset();
    match read_tag(reader, what)? {
        Tag::Context {
            number: found,
            length,
        } if found == number => {
            let offset = reader.offset();
            let bytes = reader.take(length.into(), what)?;
            Ok(Content { bytes, offset })
        }
        _ => Err(unexpected_tag(
            reader,
            start,
            what,
            Expected::Context(number),
        )),
    }
}

/// Reads `[number]` if it is the next tag; `None` when another tag (or nothing) follows.
pub(crate) fn read_optional_context<'a>(
    reader: &mut Reader<'a>,
    number: u8,
    what: &'static str,
) -> Result<Option<Content<'a>>, DecodeError> {
    match peek_tag(reader, what)? {
        Some(Tag::Context { number: found, .. }) if found == number => {
            read_context(reader, number, what).map(Some)
        }
        _ => Ok(None),
    }
}

/// Reads an application-tagged primitive of type `number` and returns its content.
pub(crate) fn read_application<'a>(
    reader: &mut Reader<'a>,
    number: u8,
    what: &'static str,
    expected: Expected,
) -> Result<Content<'a>, DecodeError> {
    let start = reader.offset();
    match read_tag(reader, what)? {
        Tag::Application {
            number: found,
            length,
        } if found == number => {
            let offset = reader.offset();
            let bytes = reader.take(length.into(), what)?;
            Ok(Content { bytes, offset })
        }
        _ => Err(unexpected_tag(reader, start, what, expected)),
    }
}

pub(crate) fn expect_opening(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<(), DecodeError> {
    expect_tag(
        reader,
        Tag::Opening(number),
        Expected::Opening(number),
        what,
    )
}

pub(crate) fn expect_closing(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<(), DecodeError> {
    expect_tag(
        reader,
        Tag::Closing(number),
        Expected::Closing(number),
        what,
    )
}

/// Reads the next tag, which must be `wanted`.
fn expect_tag(
    reader: &mut Reader<'_>,
    wanted: Tag,
    expected: Expected,
    what: &'static str,
) -> Result<(), DecodeError> {
    let start = reader.offset();
    if read_tag(reader, what)? == wanted {
        Ok(())
    } else {
        Err(unexpected_tag(reader, start, what, expected))
    }
}

/// Whether the next tag is the closing tag `number` (not consumed).
pub(crate) fn at_closing(
    reader: &Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<bool, DecodeError> {
    Ok(peek_tag(reader, what)? == Some(Tag::Closing(number)))
}

/// Whether the next tag is the opening tag `number` (not consumed).
pub(crate) fn at_opening(
    reader: &Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<bool, DecodeError> {
    Ok(peek_tag(reader, what)? == Some(Tag::Opening(number)))
}

pub(crate) fn unexpected_tag(
    reader: &Reader<'_>,
    start: usize,
    what: &'static str,
    expected: Expected,
) -> DecodeError {
    let problem = match reader_byte_at(reader, start) {
        Some(found) => Problem::UnexpectedTag { expected, found },
        None => Problem::Truncated {
            needed: 1,
            remaining: 0,
        },
    };
    reader.error_at(start, what, problem)
}

fn reader_byte_at(reader: &Reader<'_>, offset: usize) -> Option<u8> {
    let mut copy = *reader;
    copy.rewind_to(offset);
    copy.peek_u8()
}

/// Minimal big-endian octets of an unsigned integer (at least one).
pub(crate) fn unsigned_octets(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8).min(7) as usize;
    bytes.get(skip..).unwrap_or_default().to_vec()
}

/// Minimal two's complement octets of a signed integer (at least one).
pub(crate) fn signed_octets(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let redundant = if value < 0 {
        value.leading_ones()
    } else {
        value.leading_zeros()
    };
    // Keep one sign bit: drop whole octets whose bits, and the next octet's top bit, repeat the sign.
    let skip = (redundant.saturating_sub(1) / 8).min(7) as usize;
    bytes.get(skip..).unwrap_or_default().to_vec()
}

pub(crate) fn write_context_unsigned(
    out: &mut Vec<u8>,
    number: u8,
    value: u64,
) -> Result<(), EncodeError> {
    write_context_bytes(out, number, &unsigned_octets(value))
}

pub(crate) fn write_context_object_id(
    out: &mut Vec<u8>,
    number: u8,
    object: ObjectIdentifier,
) -> Result<(), EncodeError> {
    write_context_bytes(out, number, &object.to_u32()?.to_be_bytes())
}

pub(crate) fn write_context_boolean(
    out: &mut Vec<u8>,
    number: u8,
    value: bool,
) -> Result<(), EncodeError> {
    write_context_bytes(out, number, &[u8::from(value)])
}

pub(crate) fn write_context_bytes(
    out: &mut Vec<u8>,
    number: u8,
    content: &[u8],
) -> Result<(), EncodeError> {
    write_tag(out, number, true, content.len())?;
    out.extend_from_slice(content);
    Ok(())
}

pub(crate) fn write_application_bytes(
    out: &mut Vec<u8>,
    number: u8,
    content: &[u8],
) -> Result<(), EncodeError> {
    write_tag(out, number, false, content.len())?;
    out.extend_from_slice(content);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal() {
        assert_eq!(unsigned_octets(0), [0]);
        assert_eq!(unsigned_octets(255), [255]);
        assert_eq!(unsigned_octets(256), [1, 0]);
        assert_eq!(unsigned_octets(u64::MAX), [0xFF; 8]);
        assert_eq!(signed_octets(0), [0]);
        assert_eq!(signed_octets(-1), [0xFF]);
        assert_eq!(signed_octets(127), [0x7F]);
        assert_eq!(signed_octets(128), [0x00, 0x80]);
        assert_eq!(signed_octets(-128), [0x80]);
        assert_eq!(signed_octets(-129), [0xFF, 0x7F]);
        assert_eq!(signed_octets(i64::MIN).len(), 8);
    }

    #[test]
    fn extended_lengths_and_tag_numbers() -> Result<(), EncodeError> {
        let mut out = Vec::new();
        write_tag(&mut out, 2, true, 4)?;
        write_tag(&mut out, 6, false, 5)?;
        write_tag(&mut out, 6, false, 254)?;
        write_tag(&mut out, 6, false, 70_000)?;
        write_tag(&mut out, 20, true, 1)?;
        write_opening(&mut out, 30)?;
        assert_eq!(
            out,
            [
                0x2C, //
                0x65, 5, //
                0x65, 254, 0x00, 0xFE, //
                0x65, 255, 0x00, 0x01, 0x11, 0x70, //
                0xF9, 20, //
                0xFE, 30,
            ]
        );
        let mut reader = Reader::new(&out);
        let mut tags = Vec::new();
        while !reader.is_empty() {
            tags.push(read_tag(&mut reader, "test").map_err(|_| EncodeError {
                what: "test",
                value: 0,
                range: "",
            })?);
        }
        assert_eq!(
            tags,
            [
                Tag::Context {
                    number: 2,
                    length: 4
                },
                Tag::Application {
                    number: 6,
                    length: 5
                },
                Tag::Application {
                    number: 6,
                    length: 254
                },
                Tag::Application {
                    number: 6,
                    length: 70_000
                },
                Tag::Context {
                    number: 20,
                    length: 1
                },
                Tag::Opening(30),
            ]
        );
        Ok(())
    }

    #[test]
    fn tag_number_255_is_refused() {
        assert_eq!(
            read_tag(&mut Reader::new(&[0xF9, 0xFF]), "test").map_err(|e| e.problem),
            Err(Problem::Invalid("tag number 255 is reserved"))
        );
        assert!(write_tag(&mut Vec::new(), 255, true, 0).is_err());
    }
}

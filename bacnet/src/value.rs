//! Property values: application-tagged primitives (clause 20.2.2 to 20.2.14), and the
//! context-tagged and constructed values that an ABSTRACT-SYNTAX.&Type field (a property
//! value in ReadProperty-ACK, WriteProperty, COV notifications) may hold.

use crate::{
    error::{DecodeError, EncodeError, Expected, Problem},
    object::ObjectIdentifier,
    reader::Reader,
    tag::{
        self, Content, MAX_NESTING, Tag, application, signed_octets, unsigned_octets,
        write_application_bytes,
    },
};

/// An application-tagged value: the datatype travels with it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplicationValue {
    Null,
    Boolean(bool),
    Unsigned(u64),
    Signed(i64),
    Real(f32),
    Double(f64),
    OctetString(Vec<u8>),
    /// Character set 0 (UTF-8); strings in other character sets are a decoding error
    /// ([`Problem::UnsupportedCharacterSet`]).
    CharacterString(String),
    BitString(BitString),
    Enumerated(u32),
    Date(Date),
    Time(Time),
    ObjectIdentifier(ObjectIdentifier),
}

/// One element of a property value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Application(ApplicationValue),
    /// A context-tagged primitive, kept as its content octets: only the property's
    /// definition says what type it is.
    Context {
        tag: u8,
        content: Vec<u8>,
    },
    /// The values between opening and closing tag `tag` (at most [`MAX_NESTING`] deep).
    Constructed {
        tag: u8,
        values: Vec<Value>,
    },
}

/// A BACnet bit string; bit 0 is the first (most significant) bit on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitString {
    pub bits: Vec<bool>,
}

/// A BACnet date; 255 in a field means "unspecified". `weekday` is 1 (Monday) to 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year_since_1900: u8,
    pub month: u8,
    pub day: u8,
    pub weekday: u8,
}

/// A BACnet time of day; 255 in a field means "unspecified".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub hundredths: u8,
}

/// The status-flags property (BACnetStatusFlags): the first four bits of a bit string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFlags {
    pub in_alarm: bool,
    pub fault: bool,
    pub overridden: bool,
    pub out_of_service: bool,
}

impl StatusFlags {
    /// `None` when the bit string has fewer than four bits.
    pub fn from_bit_string(bits: &BitString) -> Option<Self> {
        match bits.bits.as_slice() {
            [in_alarm, fault, overridden, out_of_service, ..] => Some(Self {
                in_alarm: *in_alarm,
                fault: *fault,
                overridden: *overridden,
                out_of_service: *out_of_service,
            }),
            _ => None,
        }
    }

    pub fn to_bit_string(self) -> BitString {
        BitString {
            bits: vec![
                self.in_alarm,
                self.fault,
                self.overridden,
                self.out_of_service,
            ],
        }
    }
}

impl ApplicationValue {
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Null => tag::write_tag(out, application::NULL, false, 0),
            // An application Boolean's value is its length/value/type field: no content.
            Self::Boolean(value) => {
                tag::write_tag(out, application::BOOLEAN, false, usize::from(*value))
            }
            Self::Unsigned(value) => {
                write_application_bytes(out, application::UNSIGNED, &unsigned_octets(*value))
            }
            Self::Signed(value) => {
                write_application_bytes(out, application::SIGNED, &signed_octets(*value))
            }
            Self::Real(value) => {
                write_application_bytes(out, application::REAL, &value.to_be_bytes())
            }
            Self::Double(value) => {
                write_application_bytes(out, application::DOUBLE, &value.to_be_bytes())
            }
            Self::OctetString(bytes) => {
                write_application_bytes(out, application::OCTET_STRING, bytes)
            }
            Self::CharacterString(text) => {
                let mut content = Vec::with_capacity(text.len() + 1);
                content.push(0); // character set 0: UTF-8
                content.extend_from_slice(text.as_bytes());
                write_application_bytes(out, application::CHARACTER_STRING, &content)
            }
            Self::BitString(bits) => {
                write_application_bytes(out, application::BIT_STRING, &bits.to_content())
            }
            Self::Enumerated(value) => write_application_bytes(
                out,
                application::ENUMERATED,
                &unsigned_octets((*value).into()),
            ),
            Self::Date(date) => write_application_bytes(
                out,
                application::DATE,
                &[date.year_since_1900, date.month, date.day, date.weekday],
            ),
            Self::Time(time) => write_application_bytes(
                out,
                application::TIME,
                &[time.hour, time.minute, time.second, time.hundredths],
            ),
            Self::ObjectIdentifier(object) => write_application_bytes(
                out,
                application::OBJECT_IDENTIFIER,
                &object.to_u32()?.to_be_bytes(),
            ),
        }
    }

    /// Decodes one application-tagged value from the start of `bytes`; returns it and the
    /// number of bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = read_application_value(&mut reader, "application-tagged value")?;
        Ok((value, reader.offset()))
    }

    /// The value as a number, for the analog and multi-state types (Real, Double, Unsigned,
    /// Signed, Enumerated).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Real(value) => Some(value.into()),
            Self::Double(value) => Some(value),
            Self::Unsigned(value) => Some(value as f64),
            Self::Signed(value) => Some(value as f64),
            Self::Enumerated(value) => Some(value.into()),
            _ => None,
        }
    }
}

impl BitString {
    /// Content octets: the count of unused bits in the last octet, then the bits, first bit
    /// in the most significant position.
    fn to_content(&self) -> Vec<u8> {
        let unused = (8 - self.bits.len() % 8) % 8;
        let mut content = vec![unused as u8];
        for chunk in self.bits.chunks(8) {
            let octet = chunk
                .iter()
                .enumerate()
                .fold(0u8, |octet, (i, bit)| octet | u8::from(*bit) << (7 - i));
            content.push(octet);
        }
        content
    }

    fn from_content(content: Content<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let invalid = |problem| content.error(what, problem);
        let Some((&unused, octets)) = content.bytes.split_first() else {
            return Err(invalid(Problem::Invalid(
                "a bit string needs its unused-bits octet",
            )));
        };
        if unused > 7 || (octets.is_empty() && unused != 0) {
            return Err(invalid(Problem::Invalid(
                "bit string unused-bits count out of range",
            )));
        }
        let length = octets.len() * 8 - usize::from(unused);
        let bits = (0..length)
            .map(|i| {
                octets
                    .get(i / 8)
                    .is_some_and(|octet| octet & (0x80 >> (i % 8)) != 0)
            })
            .collect();
        Ok(Self { bits })
    }
}

impl Value {
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Application(value) => value.encode(out),
            Self::Context { tag, content } => tag::write_context_bytes(out, *tag, content),
            Self::Constructed { tag, values } => {
                tag::write_opening(out, *tag)?;
                encode_values(out, values)?;
                tag::write_closing(out, *tag)
            }
        }
    }

    /// Decodes a sequence of values filling `bytes` (a property value without its enclosing
    /// opening and closing tags).
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>, DecodeError> {
        let mut reader = Reader::new(bytes);
        let mut values = Vec::new();
        while !reader.is_empty() {
            values.push(read_value(&mut reader, 0, "property value")?);
        }
        Ok(values)
    }

    pub fn as_application(&self) -> Option<&ApplicationValue> {
        match self {
            Self::Application(value) => Some(value),
            _ => None,
        }
    }
}

impl From<ApplicationValue> for Value {
    fn from(value: ApplicationValue) -> Self {
        Self::Application(value)
    }
}

pub(crate) fn encode_values(out: &mut Vec<u8>, values: &[Value]) -> Result<(), EncodeError> {
    values.iter().try_for_each(|value| value.encode(out))
}

/// Writes `values` as the property value field `[number]`: opening tag, values, closing tag.
pub(crate) fn write_property_value(
    out: &mut Vec<u8>,
    number: u8,
    values: &[Value],
) -> Result<(), EncodeError> {
    tag::write_opening(out, number)?;
    encode_values(out, values)?;
    tag::write_closing(out, number)
}

/// Reads the property value field `[number]`: opening tag, values, closing tag.
pub(crate) fn read_property_value(
    reader: &mut Reader<'_>,
    number: u8,
    what: &'static str,
) -> Result<Vec<Value>, DecodeError> {
    tag::expect_opening(reader, number, what)?;
    read_values_until_closing(reader, number, 1, what)
}

/// Reads values up to and including closing tag `number`.
fn read_values_until_closing(
    reader: &mut Reader<'_>,
    number: u8,
    depth: usize,
    what: &'static str,
) -> Result<Vec<Value>, DecodeError> {
    if depth > MAX_NESTING {
        return Err(reader.error(what, Problem::TooDeep(MAX_NESTING)));
    }
    let mut values = Vec::new();
    loop {
        if tag::peek_tag(reader, what)? == Some(Tag::Closing(number)) {
            tag::expect_closing(reader, number, what)?;
            return Ok(values);
        }
        if reader.is_empty() {
            return Err(reader.error(
                what,
                Problem::Truncated {
                    needed: 1,
                    remaining: 0,
                },
            ));
        }
        values.push(read_value(reader, depth, what)?);
    }
}

fn read_value(
    reader: &mut Reader<'_>,
    depth: usize,
    what: &'static str,
) -> Result<Value, DecodeError> {
    let start = reader.offset();
    let mut probe = *reader;
    match tag::read_tag(&mut probe, what)? {
        Tag::Application { .. } => read_application_value(reader, what).map(Value::Application),
        Tag::Context { number, length } => {
            *reader = probe;
            let content = reader.take(length.into(), what)?;
            Ok(Value::Context {
                tag: number,
                content: content.to_vec(),
            })
        }
        Tag::Opening(number) => {
            *reader = probe;
            let values = read_values_until_closing(reader, number, depth + 1, what)?;
            Ok(Value::Constructed {
                tag: number,
                values,
            })
        }
        Tag::Closing(_) => Err(tag::unexpected_tag(
            reader,
            start,
            what,
            Expected::Text("a value or the closing tag that opened it"),
        )),
    }
}

/// Reads one application-tagged value.
pub(crate) fn read_application_value(
    reader: &mut Reader<'_>,
    what: &'static str,
) -> Result<ApplicationValue, DecodeError> {
    let start = reader.offset();
    let (number, length) = match tag::read_tag(reader, what)? {
        Tag::Application { number, length } => (number, length),
        _ => {
            return Err(tag::unexpected_tag(
                reader,
                start,
                what,
                Expected::Text("an application-tagged value"),
            ));
        }
    };
    if number == application::BOOLEAN {
        return match length {
            0 => Ok(ApplicationValue::Boolean(false)),
            1 => Ok(ApplicationValue::Boolean(true)),
            _ => Err(reader.error_at(
                start,
                what,
                Problem::Invalid("an application Boolean is 0 or 1"),
            )),
        };
    }
    let content = Content {
        offset: reader.offset(),
        bytes: reader.take(length.into(), what)?,
    };
    Ok(match number {
        application::NULL => {
            content.array::<0>(what, "Null has no content")?;
            ApplicationValue::Null
        }
        application::UNSIGNED => ApplicationValue::Unsigned(content.unsigned(what)?),
        application::SIGNED => ApplicationValue::Signed(content.signed(what)?),
        application::REAL => ApplicationValue::Real(f32::from_be_bytes(
            content.array(what, "a Real is 4 octets")?,
        )),
        application::DOUBLE => ApplicationValue::Double(f64::from_be_bytes(
            content.array(what, "a Double is 8 octets")?,
        )),
        application::OCTET_STRING => ApplicationValue::OctetString(content.bytes.to_vec()),
        application::CHARACTER_STRING => {
            ApplicationValue::CharacterString(character_string(content, what)?)
        }
        application::BIT_STRING => {
            ApplicationValue::BitString(BitString::from_content(content, what)?)
        }
        application::ENUMERATED => ApplicationValue::Enumerated(content.unsigned32(what)?),
        application::DATE => {
            let [year_since_1900, month, day, weekday] =
                content.array(what, "a Date is 4 octets")?;
            ApplicationValue::Date(Date {
                year_since_1900,
                month,
                day,
                weekday,
            })
        }
        application::TIME => {
            let [hour, minute, second, hundredths] = content.array(what, "a Time is 4 octets")?;
            ApplicationValue::Time(Time {
                hour,
                minute,
                second,
                hundredths,
            })
        }
        application::OBJECT_IDENTIFIER => {
            ApplicationValue::ObjectIdentifier(content.object_identifier(what)?)
        }
        _ => {
            return Err(reader.error_at(
                start,
                what,
                Problem::Unsupported("reserved application tag (13 to 15)"),
            ));
        }
    })
}

fn character_string(content: Content<'_>, what: &'static str) -> Result<String, DecodeError> {
    let error = |problem| content.error(what, problem);
    match content.bytes.split_first() {
        Some((0, text)) => String::from_utf8(text.to_vec()).map_err(|_| {
            error(Problem::Invalid(
                "a character string in set 0 is not valid UTF-8",
            ))
        }),
        Some((&set, _)) => Err(error(Problem::UnsupportedCharacterSet(set))),
        None => Err(error(Problem::Invalid(
            "a character string needs its character-set octet",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &ApplicationValue) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(value.encode(&mut out), Ok(()));
        out
    }

    #[test]
    fn application_values_byte_exact() {
        // Examples in the style of ASHRAE 135 clause 20.2: tag octet, then content.
        let cases: [(ApplicationValue, &[u8]); 10] = [
            (ApplicationValue::Null, &[0x00]),
            (ApplicationValue::Boolean(true), &[0x11]),
            (ApplicationValue::Unsigned(72), &[0x21, 0x48]),
            (ApplicationValue::Signed(-72), &[0x31, 0xB8]),
            (
                ApplicationValue::Real(72.0),
                &[0x44, 0x42, 0x90, 0x00, 0x00],
            ),
            (
                ApplicationValue::CharacterString("Gate".into()),
                &[0x75, 0x05, 0x00, b'G', b'a', b't', b'e'],
            ),
            (
                ApplicationValue::BitString(
                    StatusFlags {
                        fault: true,
                        ..StatusFlags::default()
                    }
                    .to_bit_string(),
                ),
                &[0x82, 0x04, 0x40],
            ),
            (ApplicationValue::Enumerated(0), &[0x91, 0x00]),
            (
                ApplicationValue::Date(Date {
                    year_since_1900: 91,
                    month: 1,
                    day: 24,
                    weekday: 4,
                }),
                &[0xA4, 0x5B, 0x01, 0x18, 0x04],
            ),
            (
                ApplicationValue::ObjectIdentifier(ObjectIdentifier::new(
                    crate::ObjectType::ANALOG_INPUT,
                    15,
                )),
                &[0xC4, 0x00, 0x00, 0x00, 0x0F],
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(encoded(&value), bytes, "{value:?}");
            assert_eq!(ApplicationValue::decode(bytes), Ok((value, bytes.len())));
        }
    }

    #[test]
    fn other_character_sets_are_reported() {
        let latin1 = [0x74, 0x05, b'a', b'b', b'c'];
        assert_eq!(
            ApplicationValue::decode(&latin1).map_err(|e| (e.offset, e.problem)),
            Err((1, Problem::UnsupportedCharacterSet(5)))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let bytes: Vec<u8> = std::iter::repeat_n(0x0E, 1000).collect();
        assert_eq!(
            Value::decode_all(&bytes).map_err(|e| e.problem),
            Err(Problem::TooDeep(MAX_NESTING))
        );
    }
}

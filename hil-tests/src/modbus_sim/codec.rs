//! The Modbus TCP wire format the simulator speaks, free of I/O.
//!
//! An ADU is a 7-byte MBAP header followed by a PDU (Modbus Application Protocol v1.1b3 and
//! Modbus Messaging on TCP/IP v1.0b), all numbers big-endian:
//!
//! ```text
//! | transaction id u16 | protocol id u16 (0) | length u16 (unit id + PDU) | unit id u8 | PDU |
//! ```
//!
//! The PDU is a function code and its data. Of the function codes, this codec knows the eight
//! that read and write the four tables; any other answers exception 0x01 (Illegal Function).
//! Validation follows the spec's order: quantity and byte count (0x03 Illegal Data Value)
//! before address range (0x02 Illegal Data Address). Bit tables (coils, discrete inputs) are
//! packed eight to a byte, lowest address in the least significant bit; register tables are
//! sent as big-endian words. Internally every table holds `u16`, a bit being 0 or 1.

use std::ops::RangeInclusive;

use rand::Rng;
use tokio_modbus::ExceptionCode;

/// Bytes in an MBAP header, unit id included.
pub(crate) const HEADER_LEN: usize = 7;

/// The largest PDU the spec allows (an ADU of 260 bytes over TCP).
const MAX_PDU_LEN: usize = 253;

/// One of the four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Read-write bits (function codes 1, 5, 15).
    Coils,
    /// Read-only bits (function code 2).
    DiscreteInputs,
    /// Read-write 16-bit registers (function codes 3, 6, 16).
    HoldingRegisters,
    /// Read-only 16-bit registers (function code 4).
    InputRegisters,
}

impl Table {
    /// Whether the table holds bits rather than 16-bit registers.
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coils | Self::DiscreteInputs)
    }

    /// Most addresses one read request may ask for.
    const fn max_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    /// Most addresses one write-multiple request may carry.
    const fn max_write(self) -> u16 {
        if self.is_bits() { 1968 } else { 123 }
    }
}

/// A decoded MBAP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) transaction_id: u16,
    /// 0 for Modbus; a frame with any other value is not for us.
    pub(crate) protocol_id: u16,
    pub(crate) unit_id: u8,
    /// Bytes of PDU that follow the header.
    pub(crate) pdu_len: usize,
}

impl Header {
    /// Parses a header, or `None` when its length field cannot describe a PDU of 1 to 253 bytes;
    /// the byte stream then cannot be re-synchronised and the connection must be closed.
    pub(crate) fn parse(bytes: [u8; HEADER_LEN]) -> Option<Self> {
        let [t0, t1, p0, p1, l0, l1, unit_id] = bytes;
        let pdu_len = usize::from(u16::from_be_bytes([l0, l1])).checked_sub(1)?;
        (1..=MAX_PDU_LEN).contains(&pdu_len).then_some(Self {
            transaction_id: u16::from_be_bytes([t0, t1]),
            protocol_id: u16::from_be_bytes([p0, p1]),
            unit_id,
            pdu_len,
        })
    }
}

/// Frames a response PDU (at most 253 bytes) into an ADU.
pub(crate) fn encode_adu(transaction_id: u16, unit_id: u8, pdu: &[u8]) -> Vec<u8> {
    let mut adu = Vec::with_capacity(HEADER_LEN + pdu.len());
    adu.extend(transaction_id.to_be_bytes());
    adu.extend(0u16.to_be_bytes());
    // The PDUs built here are at most 2 + 250 bytes, so the length always fits.
    adu.extend((pdu.len() as u16 + 1).to_be_bytes());
    adu.push(unit_id);
    adu.extend(pdu);
    adu
}

/// The PDU of an exception response.
pub(crate) fn encode_exception(function_code: u8, code: ExceptionCode) -> Vec<u8> {
    vec![function_code | 0x80, code.into()]
}

/// A well-delimited frame that no Modbus client may accept: a random transaction id, a random
/// non-zero protocol id, a length that matches and 1 to 16 random PDU bytes. A client reads it
/// whole and rejects it, instead of waiting for bytes that never come.
pub(crate) fn garbage_frame(rng: &mut impl Rng) -> Vec<u8> {
    let pdu_len: u16 = rng.random_range(1..=16);
    let mut frame = vec![0; HEADER_LEN + usize::from(pdu_len)];
    rng.fill(&mut frame[..]);
    frame[2..4].copy_from_slice(&rng.random_range(1..=u16::MAX).to_be_bytes());
    frame[4..6].copy_from_slice(&(pdu_len + 1).to_be_bytes());
    frame
}

/// A request PDU of one of the eight supported function codes, validated per the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Function codes 1 to 4: `count` addresses from `start`.
    Read {
        table: Table,
        start: u16,
        count: u16,
    },
    /// Function codes 5 and 6 (`single`) or 15 and 16: `values` from `start`.
    Write {
        table: Table,
        start: u16,
        values: Vec<u16>,
        single: bool,
    },
}

impl Request {
    /// Decodes a request PDU, or answers the exception the spec prescribes for it.
    pub(crate) fn decode(pdu: &[u8]) -> Result<Self, ExceptionCode> {
        use ExceptionCode::{IllegalDataAddress, IllegalDataValue, IllegalFunction};
        let (&function, body) = pdu.split_first().ok_or(IllegalDataValue)?;
        let table = match function {
            1 | 5 | 15 => Table::Coils,
            2 => Table::DiscreteInputs,
            3 | 6 | 16 => Table::HoldingRegisters,
            4 => Table::InputRegisters,
            _ => return Err(IllegalFunction),
        };
        let word = |at: usize| {
            body.get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(IllegalDataValue)
        };
        let (start, second) = (word(0)?, word(2)?);
        // Address `start + count - 1` must exist; `count` is at least 1 wherever this is used.
        let in_range = |count: u16| {
            if u32::from(start) + u32::from(count) <= 0x1_0000 {
                Ok(())
            } else {
                Err(IllegalDataAddress)
            }
        };
        match function {
            1..=4 => {
                let count = second;
                if !(1..=table.max_read()).contains(&count) || body.len() != 4 {
                    return Err(IllegalDataValue);
                }
                in_range(count)?;
                Ok(Self::Read {
                    table,
                    start,
                    count,
                })
            }
            5 | 6 => {
                let value = match (table.is_bits(), second) {
                    (false, value) | (true, value @ 0) => value,
                    (true, 0xFF00) => 1,
                    (true, _) => return Err(IllegalDataValue),
                };
                if body.len() != 4 {
                    return Err(IllegalDataValue);
                }
                let values = vec![value];
                Ok(Self::Write {
                    table,
                    start,
                    values,
                    single: true,
                })
            }
            _ => {
                let count = second;
                let data = body.get(5..).unwrap_or_default();
                let byte_count = usize::from(body.get(4).copied().unwrap_or_default());
                if !(1..=table.max_write()).contains(&count)
                    || byte_count != encoded_len(table, count)
                    || data.len() != byte_count
                {
                    return Err(IllegalDataValue);
                }
                in_range(count)?;
                let values = decode_values(table, data, count);
                Ok(Self::Write {
                    table,
                    start,
                    values,
                    single: false,
                })
            }
        }
    }

    /// The function code of the request.
    pub(crate) fn function_code(&self) -> u8 {
        match *self {
            Self::Read { table, .. } => match table {
                Table::Coils => 1,
                Table::DiscreteInputs => 2,
                Table::HoldingRegisters => 3,
                Table::InputRegisters => 4,
            },
            Self::Write { table, single, .. } => match (table.is_bits(), single) {
                (true, true) => 5,
                (false, true) => 6,
                (true, false) => 15,
                (false, false) => 16,
            },
        }
    }

    /// The table the request reads or writes.
    pub(crate) fn table(&self) -> Table {
        match *self {
            Self::Read { table, .. } | Self::Write { table, .. } => table,
        }
    }

    /// The addresses the request touches; never empty, never past 65535 (checked by `decode`).
    pub(crate) fn addresses(&self) -> RangeInclusive<u16> {
        let (start, count) = match self {
            Self::Read { start, count, .. } => (*start, *count),
            Self::Write { start, values, .. } => (*start, values.len() as u16),
        };
        start..=start + (count - 1)
    }

    /// The normal response PDU, given the values a read fetched (ignored for writes).
    pub(crate) fn encode_response(&self, read_values: &[u16]) -> Vec<u8> {
        let mut pdu = vec![self.function_code()];
        match self {
            Self::Read { table, .. } => {
                let data = encode_values(*table, read_values);
                // At most 250 bytes: 125 registers or 2000 bits.
                pdu.push(data.len() as u8);
                pdu.extend(data);
            }
            // A single write answers with an echo of its request.
            Self::Write {
                table,
                start,
                values,
                single: true,
            } => {
                let value = values.first().copied().unwrap_or_default();
                let wire_value = if table.is_bits() && value != 0 {
                    0xFF00
                } else {
                    value
                };
                pdu.extend(start.to_be_bytes());
                pdu.extend(wire_value.to_be_bytes());
            }
            Self::Write {
                start,
                values,
                single: false,
                ..
            } => {
                pdu.extend(start.to_be_bytes());
                pdu.extend((values.len() as u16).to_be_bytes());
            }
        }
        pdu
    }
}

/// Bytes that `count` values of `table` take on the wire.
fn encoded_len(table: Table, count: u16) -> usize {
    let count = usize::from(count);
    if table.is_bits() {
        count.div_ceil(8)
    } else {
        count * 2
    }
}

/// Values of `table` as sent on the wire: bits packed LSB first, registers big-endian.
fn encode_values(table: Table, values: &[u16]) -> Vec<u8> {
    if table.is_bits() {
        values
            .chunks(8)
            .map(|bits| {
                (0..)
                    .zip(bits)
                    .fold(0u8, |byte, (i, &bit)| byte | (u8::from(bit != 0) << i))
            })
            .collect()
    } else {
        values
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect()
    }
}

/// The inverse of [`encode_values`] for `count` values (`data` has the right length).
fn decode_values(table: Table, data: &[u8], count: u16) -> Vec<u16> {
    if table.is_bits() {
        (0..usize::from(count))
            .map(|i| u16::from((data[i / 8] >> (i % 8)) & 1))
            .collect()
    } else {
        data.chunks_exact(2)
            .map(|word| u16::from_be_bytes([word[0], word[1]]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    // Request and response bytes below are the examples of the Modbus Application Protocol
    // specification v1.1b3, section 6.

    #[test]
    fn decodes_and_answers_the_spec_examples() -> anyhow::Result<()> {
        use Table::{Coils, HoldingRegisters};
        // Coils 20..38 (1-based) of the read-coils example hold CD 6B 05: addresses 19..=37.
        let coils_19_to_37: Vec<u16> = [0xCDu8, 0x6B, 0x05]
            .iter()
            .flat_map(|byte| (0..8).map(move |i| u16::from((byte >> i) & 1)))
            .take(19)
            .collect();
        let write = |table, start, values: &[u16], single| Request::Write {
            table,
            start,
            values: values.to_vec(),
            single,
        };
        // Request PDU, what it decodes to, the values a read fetched, the response PDU.
        type Example<'a> = (&'a [u8], Request, &'a [u16], &'a [u8]);
        let cases: [Example; 6] = [
            (
                &[0x01, 0x00, 0x13, 0x00, 0x13],
                Request::Read {
                    table: Coils,
                    start: 19,
                    count: 19,
                },
                &coils_19_to_37,
                &[0x01, 0x03, 0xCD, 0x6B, 0x05],
            ),
            (
                &[0x03, 0x00, 0x6B, 0x00, 0x03],
                Request::Read {
                    table: HoldingRegisters,
                    start: 107,
                    count: 3,
                },
                &[0x022B, 0x0000, 0x0064],
                &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64],
            ),
            (
                &[0x05, 0x00, 0xAC, 0xFF, 0x00],
                write(Coils, 172, &[1], true),
                &[],
                &[0x05, 0x00, 0xAC, 0xFF, 0x00],
            ),
            (
                &[0x06, 0x00, 0x01, 0x00, 0x03],
                write(HoldingRegisters, 1, &[3], true),
                &[],
                &[0x06, 0x00, 0x01, 0x00, 0x03],
            ),
            (
                &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01],
                write(Coils, 19, &[1, 0, 1, 1, 0, 0, 1, 1, 1, 0], false),
                &[],
                &[0x0F, 0x00, 0x13, 0x00, 0x0A],
            ),
            (
                &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
                write(HoldingRegisters, 1, &[0x000A, 0x0102], false),
                &[],
                &[0x10, 0x00, 0x01, 0x00, 0x02],
            ),
        ];
        for (pdu, expected, read_values, response) in cases {
            let request = Request::decode(pdu)?;
            assert_eq!(request, expected);
            assert_eq!(request.function_code(), pdu[0]);
            assert_eq!(
                request.encode_response(read_values),
                response,
                "answer to {pdu:02X?}"
            );
        }
        Ok(())
    }

    #[test]
    fn rejects_malformed_requests_with_the_prescribed_exception() {
        use ExceptionCode::{IllegalDataAddress, IllegalDataValue, IllegalFunction};
        let cases: [(&str, &[u8], ExceptionCode); 11] = [
            (
                "unsupported function",
                &[0x2B, 0x0E, 0x01, 0x00],
                IllegalFunction,
            ),
            ("zero registers", &[0x03, 0, 0, 0, 0], IllegalDataValue),
            (
                "126 > 125 registers",
                &[0x03, 0, 0, 0, 0x7E],
                IllegalDataValue,
            ),
            (
                "2001 > 2000 coils",
                &[0x01, 0, 0, 0x07, 0xD1],
                IllegalDataValue,
            ),
            ("truncated", &[0x03, 0, 0, 0], IllegalDataValue),
            ("trailing byte", &[0x03, 0, 0, 0, 1, 0], IllegalDataValue),
            (
                "65535 + 2 > 65536",
                &[0x04, 0xFF, 0xFF, 0, 2],
                IllegalDataAddress,
            ),
            (
                "coil neither FF00 nor 0000",
                &[0x05, 0, 1, 0x12, 0x34],
                IllegalDataValue,
            ),
            (
                "9 coils in 1 byte",
                &[0x0F, 0, 0, 0, 9, 1, 0xFF],
                IllegalDataValue,
            ),
            (
                "data too short",
                &[0x10, 0, 0, 0, 2, 4, 0, 1],
                IllegalDataValue,
            ),
            (
                "past 65535",
                &[0x10, 0xFF, 0xFF, 0, 2, 4, 0, 1, 0, 2],
                IllegalDataAddress,
            ),
        ];
        for (what, pdu, code) in cases {
            assert_eq!(Request::decode(pdu), Err(code), "{what}: {pdu:02X?}");
        }
        assert!(
            Request::decode(&[0x03, 0xFF, 0xFF, 0, 1]).is_ok(),
            "the last address"
        );
        assert_eq!(encode_exception(0x03, IllegalDataAddress), [0x83, 0x02]);
    }

    #[test]
    fn frames_and_parses_mbap_headers() -> anyhow::Result<()> {
        let adu = encode_adu(0x1234, 7, &[0x03, 0x02, 0x00, 0x2A]);
        assert_eq!(adu, [0x12, 0x34, 0, 0, 0, 5, 7, 0x03, 0x02, 0x00, 0x2A]);
        let header = Header::parse(adu[..HEADER_LEN].try_into()?);
        let expected = Header {
            transaction_id: 0x1234,
            protocol_id: 0,
            unit_id: 7,
            pdu_len: 4,
        };
        assert_eq!(header, Some(expected));
        for bad_length in [0u16, 1, 255, 0xFFFF] {
            let [l0, l1] = bad_length.to_be_bytes();
            let header = Header::parse([0, 1, 0, 0, l0, l1, 1]);
            assert_eq!(header, None, "length {bad_length}");
        }
        Ok(())
    }

    #[test]
    fn garbage_is_a_complete_frame_with_a_foreign_protocol_id() -> anyhow::Result<()> {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let frame = garbage_frame(&mut rng);
            let header = Header::parse(frame[..HEADER_LEN].try_into()?);
            let header = header.with_context(|| format!("unframeable: {frame:02X?}"))?;
            assert_ne!(header.protocol_id, 0);
            assert_eq!(frame.len(), HEADER_LEN + header.pdu_len);
        }
        Ok(())
    }

    #[test]
    fn values_survive_the_wire_in_both_table_kinds() {
        for table in [Table::Coils, Table::HoldingRegisters] {
            for count in [1u16, 7, 8, 9, 123] {
                let values: Vec<u16> = (0..count)
                    .map(|i| {
                        if table.is_bits() {
                            (i * 7 % 3 == 0).into()
                        } else {
                            i.wrapping_mul(40_503)
                        }
                    })
                    .collect();
                let data = encode_values(table, &values);
                assert_eq!(data.len(), encoded_len(table, count));
                assert_eq!(
                    decode_values(table, &data, count),
                    values,
                    "{table:?} x {count}"
                );
            }
        }
    }
}

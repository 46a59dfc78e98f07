//! Pure Modbus point mapping: which blocks to read, how to decode them into values, how to
//! encode a command into a write. No I/O here.

use gatehouse_protocol::Value;

use super::config::{DataType, ModbusPointConfig, Table, WordOrder};

/// Longest read of registers and of bits allowed by the protocol (function codes 3/4 and 1/2).
const MAX_REGISTERS: u16 = 125;
const MAX_BITS: u16 = 2000;
/// Unused addresses a block may span to merge two points into one request.
const MAX_GAP: u16 = 8;

/// One read request covering several points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indices into the device's point list.
    pub points: Vec<usize>,
}

/// Groups points into as few read requests as the protocol limits allow.
pub fn plan_reads(points: &[ModbusPointConfig]) -> Vec<Block> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address));
    let mut blocks: Vec<Block> = Vec::new();
    for index in order {
        let point = &points[index];
        let width = if point.table.is_bits() {
            1
        } else {
            point.data_type().words()
        };
        let limit = if point.table.is_bits() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        };
        let end = u32::from(point.address) + u32::from(width);
        if let Some(block) = blocks.last_mut() {
            let block_end = u32::from(block.start) + u32::from(block.count);
            let fits = block.table == point.table
                && u32::from(point.address) <= block_end + u32::from(MAX_GAP)
                && end - u32::from(block.start) <= u32::from(limit);
            if fits {
                block.count =
                    u16::try_from(end.max(block_end) - u32::from(block.start)).unwrap_or(limit);
                block.points.push(index);
                continue;
            }
        }
        blocks.push(Block {
            table: point.table,
            start: point.address,
            count: width,
            points: vec![index],
        });
    }
    blocks
}

/// Why raw data could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("the device returned {got} items where {expected} were asked for")]
    ShortResponse { expected: usize, got: usize },
    #[error("the value is not a finite number")]
    NotFinite,
    #[error("point expects {expected}, got `{got}`")]
    WrongValueType { expected: &'static str, got: String },
    #[error("{value} is outside the range of a {data_type:?} register after scaling")]
    OutOfRange { value: f64, data_type: DataType },
}

/// The raw content of one block as the device returned it.
pub enum Raw<'a> {
    Bits(&'a [bool]),
    Words(&'a [u16]),
}

/// Decodes the value of `point` out of the block it belongs to.
pub fn decode(point: &ModbusPointConfig, block_start: u16, raw: &Raw) -> Result<Value, CodecError> {
    let offset = usize::from(point.address - block_start);
    match raw {
        Raw::Bits(bits) => {
            bits.get(offset)
                .map(|bit| Value::Bool(*bit))
                .ok_or(CodecError::ShortResponse {
                    expected: offset + 1,
                    got: bits.len(),
                })
        }
        Raw::Words(words) => {
            let width = usize::from(point.data_type().words());
            let slice = words
                .get(offset..offset + width)
                .ok_or(CodecError::ShortResponse {
                    expected: offset + width,
                    got: words.len(),
                })?;
            decode_words(point, slice)
        }
    }
}

fn join(words: &[u16], order: WordOrder) -> u32 {
    let (high, low) = match order {
        WordOrder::Big => (words[0], words[1]),
        WordOrder::Little => (words[1], words[0]),
    };
    (u32::from(high) << 16) | u32::from(low)
}

fn split(value: u32, order: WordOrder) -> Vec<u16> {
    let high = (value >> 16) as u16;
    let low = (value & 0xffff) as u16;
    match order {
        WordOrder::Big => vec![high, low],
        WordOrder::Little => vec![low, high],
    }
}

fn decode_words(point: &ModbusPointConfig, words: &[u16]) -> Result<Value, CodecError> {
    let raw: f64 = match point.data_type() {
        DataType::Bool => return Ok(Value::Bool(words[0] != 0)),
        DataType::U16 => f64::from(words[0]),
        DataType::I16 => f64::from(words[0] as i16),
        DataType::U32 => f64::from(join(words, point.word_order)),
        DataType::I32 => f64::from(join(words, point.word_order) as i32),
        // Widen through the shortest decimal form, so 21.3f32 reads 21.3, not 21.2999992370.
        DataType::F32 => {
            let single = f32::from_bits(join(words, point.word_order));
            single.to_string().parse().unwrap_or(f64::from(single))
        }
    };
    let scaled = raw * point.scale + point.offset;
    if !scaled.is_finite() {
        return Err(CodecError::NotFinite);
    }
    let integral = point.is_unscaled() && point.data_type() != DataType::F32;
    Ok(if integral {
        Value::Int(scaled as i64)
    } else {
        Value::Float(scaled)
    })
}

/// What to write for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Coil(bool),
    Registers(Vec<u16>),
}

/// Encodes a commanded value for `point`, undoing scale and offset.
pub fn encode(point: &ModbusPointConfig, value: &Value) -> Result<Write, CodecError> {
    let data_type = point.data_type();
    if point.table == Table::Coil || data_type == DataType::Bool {
        let bit = value.as_bool().ok_or_else(|| CodecError::WrongValueType {
            expected: "a boolean",
            got: value.to_string(),
        })?;
        return Ok(if point.table == Table::Coil {
            Write::Coil(bit)
        } else {
            Write::Registers(vec![u16::from(bit)])
        });
    }
    let number = value.as_f64().ok_or_else(|| CodecError::WrongValueType {
        expected: "a number",
        got: value.to_string(),
    })?;
    let raw = (number - point.offset) / point.scale;
    if !raw.is_finite() {
        return Err(CodecError::NotFinite);
    }
    let out_of_range = CodecError::OutOfRange {
        value: number,
        data_type,
    };
    let integer = |low: f64, high: f64| {
        let rounded = raw.round();
        if rounded < low || rounded > high {
            Err(out_of_range.clone())
        } else {
            Ok(rounded)
        }
    };
    let words = match data_type {
        DataType::Bool => vec![u16::from(raw != 0.0)],
        DataType::U16 => vec![integer(0.0, f64::from(u16::MAX))? as u16],
        DataType::I16 => vec![integer(f64::from(i16::MIN), f64::from(i16::MAX))? as i16 as u16],
        DataType::U32 => split(integer(0.0, f64::from(u32::MAX))? as u32, point.word_order),
        DataType::I32 => split(
            integer(f64::from(i32::MIN), f64::from(i32::MAX))? as i32 as u32,
            point.word_order,
        ),
        DataType::F32 => {
            if raw.abs() > f64::from(f32::MAX) {
                return Err(out_of_range);
            }
            split((raw as f32).to_bits(), point.word_order)
        }
    };
    Ok(Write::Registers(words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_protocol::PointId;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use toml::Spanned;

    fn point(table: Table, address: u16, data_type: DataType) -> ModbusPointConfig {
        ModbusPointConfig {
            id: Spanned::new(
                0..0,
                PointId::new(format!("p{address}")).unwrap_or_else(|e| panic!("{e}")),
            ),
            table,
            address,
            data_type: Some(Spanned::new(0..0, data_type)),
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            deadband: 0.0,
            writable: false,
            zone: None,
            egress_lock_value: None,
        }
    }

    #[test]
    fn nearby_points_share_one_read_and_tables_never_mix() {
        let points = vec![
            point(Table::HoldingRegister, 8, DataType::F32),
            point(Table::HoldingRegister, 0, DataType::U16),
            point(Table::InputRegister, 1, DataType::U16),
            point(Table::HoldingRegister, 300, DataType::U16),
            point(Table::DiscreteInput, 5, DataType::Bool),
            point(Table::DiscreteInput, 0, DataType::Bool),
        ];
        let blocks = plan_reads(&points);
        let summary: Vec<(Table, u16, u16, Vec<usize>)> = blocks
            .into_iter()
            .map(|b| (b.table, b.start, b.count, b.points))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Table::DiscreteInput, 0, 6, vec![5, 4]),
                (Table::HoldingRegister, 0, 10, vec![1, 0]),
                (Table::HoldingRegister, 300, 1, vec![3]),
                (Table::InputRegister, 1, 1, vec![2]),
            ]
        );
    }

    #[test]
    fn blocks_respect_the_protocol_limit() {
        let points: Vec<_> = (0..200)
            .map(|i| point(Table::InputRegister, i, DataType::U16))
            .collect();
        let blocks = plan_reads(&points);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].count, 125);
        assert_eq!(blocks[1].start, 125);
    }

    #[test]
    fn decodes_every_type_and_word_order() {
        let mut p = point(Table::HoldingRegister, 2, DataType::I16);
        let words = [0, 0, 0xfffe, 0x4148, 0x0000];
        assert_eq!(decode(&p, 0, &Raw::Words(&words)), Ok(Value::Int(-2)));
        p.address = 3;
        p.data_type = Some(Spanned::new(0..0, DataType::F32));
        assert_eq!(decode(&p, 0, &Raw::Words(&words)), Ok(Value::Float(12.5)));
        p.word_order = WordOrder::Little;
        p.address = 2;
        p.data_type = Some(Spanned::new(0..0, DataType::U32));
        assert_eq!(
            decode(&p, 0, &Raw::Words(&words)),
            Ok(Value::Int(0x4148_fffe))
        );
        p.address = 4;
        assert_eq!(
            decode(&p, 0, &Raw::Words(&words)),
            Err(CodecError::ShortResponse {
                expected: 6,
                got: 5
            })
        );
    }

    #[test]
    fn scale_and_offset_make_floats() {
        let mut p = point(Table::InputRegister, 0, DataType::U16);
        p.scale = 0.1;
        p.offset = -40.0;
        assert_eq!(decode(&p, 0, &Raw::Words(&[615])), Ok(Value::Float(21.5)));
    }

    #[test]
    fn a_float_register_reads_as_its_shortest_decimal() {
        let p = point(Table::HoldingRegister, 0, DataType::F32);
        let bits = 21.3f32.to_bits();
        let words = [(bits >> 16) as u16, bits as u16];
        assert_eq!(decode(&p, 0, &Raw::Words(&words)), Ok(Value::Float(21.3)));
    }

    #[test]
    fn a_nan_register_is_an_error_not_a_value() {
        let p = point(Table::HoldingRegister, 0, DataType::F32);
        let nan = f32::NAN.to_bits();
        let words = [(nan >> 16) as u16, nan as u16];
        assert_eq!(
            decode(&p, 0, &Raw::Words(&words)),
            Err(CodecError::NotFinite)
        );
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        let p = point(Table::HoldingRegister, 0, DataType::U16);
        assert!(matches!(
            encode(&p, &Value::Int(70_000)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&p, &Value::Text("on".into())),
            Err(CodecError::WrongValueType { .. })
        ));
        let coil = point(Table::Coil, 0, DataType::Bool);
        assert_eq!(encode(&coil, &Value::Bool(true)), Ok(Write::Coil(true)));
        assert!(encode(&coil, &Value::Float(0.5)).is_err());
    }

    fn arb_type() -> impl Strategy<Value = DataType> {
        prop_oneof![
            Just(DataType::U16),
            Just(DataType::I16),
            Just(DataType::U32),
            Just(DataType::I32),
            Just(DataType::F32),
        ]
    }

    proptest! {
        /// Encoding a decoded register value gives back the same registers.
        #[test]
        fn encode_inverts_decode(
            data_type in arb_type(),
            little in any::<bool>(),
            scale in prop_oneof![Just(1.0), Just(0.5), Just(10.0)],
            words in proptest::collection::vec(any::<u16>(), 2),
        ) {
            let mut p = point(Table::HoldingRegister, 0, data_type);
            p.scale = scale;
            if little { p.word_order = WordOrder::Little; }
            let width = usize::from(data_type.words());
            let words = &words[..width];
            if let Ok(value) = decode(&p, 0, &Raw::Words(words)) {
                let encoded = encode(&p, &value);
                if data_type == DataType::F32 {
                    // -0.0 and 0.0 encode alike; compare the values instead.
                    let Ok(Write::Registers(back)) = encoded else {
                        return Err(TestCaseError::fail(format!("{value:?} did not encode: {encoded:?}")));
                    };
                    prop_assert_eq!(decode(&p, 0, &Raw::Words(&back)), Ok(value));
                } else {
                    prop_assert_eq!(encoded, Ok(Write::Registers(words.to_vec())));
                }
            }
        }

        /// Every point is in exactly one block, and each block covers its points within limits.
        #[test]
        fn plans_cover_every_point_once(addresses in proptest::collection::vec((0u16..4, 0u16..2000), 1..60)) {
            let tables = [Table::Coil, Table::DiscreteInput, Table::HoldingRegister, Table::InputRegister];
            let points: Vec<_> = addresses.iter().map(|(t, a)| {
                let table = tables[usize::from(*t)];
                let data_type = if table.is_bits() { DataType::Bool } else { DataType::U32 };
                point(table, *a, data_type)
            }).collect();
            let blocks = plan_reads(&points);
            let mut seen = vec![0; points.len()];
            for block in &blocks {
                let limit = if block.table.is_bits() { MAX_BITS } else { MAX_REGISTERS };
                prop_assert!(block.count <= limit);
                for &i in &block.points {
                    seen[i] += 1;
                    let p = &points[i];
                    let width = if p.table.is_bits() { 1 } else { 2 };
                    prop_assert_eq!(p.table, block.table);
                    prop_assert!(p.address >= block.start);
                    prop_assert!(u32::from(p.address) + width <= u32::from(block.start) + u32::from(block.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}

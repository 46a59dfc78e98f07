//! Who-Is (clause 16.10): which devices should answer with I-Am.

use super::read_optional_unsigned;
use crate::{
    error::{DecodeError, EncodeError, Problem, check_max},
    object::ObjectIdentifier,
    reader::Reader,
    tag,
};

/// Who-Is-Request; `range: None` asks every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhoIs {
    pub range: Option<DeviceRange>,
}

/// Device instances `low..=high` (each at most 4194303).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRange {
    pub low: u32,
    pub high: u32,
}

const RANGE: &str = "0..=4194303";

impl WhoIs {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let Some(range) = self.range else {
            return Ok(());
        };
        let max = ObjectIdentifier::MAX_INSTANCE.into();
        check_max("Who-Is low limit", range.low.into(), max, RANGE)?;
        check_max("Who-Is high limit", range.high.into(), max, RANGE)?;
        tag::write_context_unsigned(out, 0, range.low.into())?;
        tag::write_context_unsigned(out, 1, range.high.into())
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let max = ObjectIdentifier::MAX_INSTANCE.into();
        let low = read_optional_unsigned(reader, 0, max, RANGE, "Who-Is low limit")?;
        let start = reader.offset();
        let high = read_optional_unsigned(reader, 1, max, RANGE, "Who-Is high limit")?;
        let range = match (low, high) {
            (Some(low), Some(high)) => Some(DeviceRange {
                low: low as u32,
                high: high as u32,
            }),
            (None, None) => None,
            _ => {
                return Err(reader.error_at(
                    start,
                    "Who-Is range",
                    Problem::Invalid("a Who-Is range needs both limits or neither"),
                ));
            }
        };
        Ok(Self { range })
    }
}

//! The codec's two error types: what could not be decoded (and where), what cannot be encoded.

use thiserror::Error;

/// A datagram (or part of one) that could not be decoded.
///
/// `what` names the field or structure being decoded ("ReadProperty-ACK property-value",
/// "NPDU DADR"); `offset` is the byte offset of the problem from the start of the bytes given
/// to the public `decode` function that failed (for [`crate::Bvlc::decode`], the start of the
/// UDP payload).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed BACnet {what} at byte {offset}: {problem}")]
pub struct DecodeError {
    pub what: &'static str,
    pub offset: usize,
    pub problem: Problem,
}

impl DecodeError {
    /// The same error, its offset counted from `by` bytes earlier (for a layer inside another).
    #[must_use]
    pub(crate) fn shifted(mut self, by: usize) -> Self {
        self.offset = self.offset.saturating_add(by);
        self
    }
}

/// What was wrong, in [`DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("needs {needed} byte(s), only {remaining} left")]
    Truncated { needed: u64, remaining: usize },
    #[error("expected {expected}, found tag octet 0x{found:02X}")]
    UnexpectedTag { expected: Expected, found: u8 },
    #[error("value {value} is out of range ({range})")]
    OutOfRange { value: u64, range: &'static str },
    #[error("{0}")]
    Invalid(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("character set {0} is not supported (only 0, UTF-8)")]
    UnsupportedCharacterSet(u8),
    #[error("segmented messages are not supported")]
    Segmented,
    #[error("{count} byte(s) left over after the end")]
    TrailingBytes { count: usize },
    #[error("constructed values nested deeper than {0} levels")]
    TooDeep(usize),
}

/// What a decoder expected where it found another tag, in [`Problem::UnexpectedTag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Context(u8),
    Opening(u8),
    Closing(u8),
    Text(&'static str),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Context(number) => write!(f, "context tag [{number}]"),
            Self::Opening(number) => write!(f, "opening tag [{number}]"),
            Self::Closing(number) => write!(f, "closing tag [{number}]"),
            Self::Text(text) => f.write_str(text),
        }
    }
}

/// A value that has no BACnet encoding (a field out of its range).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot encode BACnet {what}: value {value} is out of range ({range})")]
pub struct EncodeError {
    pub what: &'static str,
    pub value: u64,
    pub range: &'static str,
}

/// Checks that `value` is at most `max`, for encoding `what`.
pub(crate) fn check_max(
    what: &'static str,
    value: u64,
    max: u64,
    range: &'static str,
) -> Result<(), EncodeError> {
    if value <= max {
        Ok(())
    } else {
        Err(EncodeError { what, value, range })
    }
}

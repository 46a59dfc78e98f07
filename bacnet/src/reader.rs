//! A cursor over received bytes that never reads past the end and never panics: every read
//! checks what is left first and fails with a [`DecodeError`] naming the offset.

use crate::error::{DecodeError, Problem};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Offset of the next byte from the start of the bytes this reader was made with.
    pub(crate) fn offset(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn peek_u8(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    /// An error about `what`, at the current offset.
    pub(crate) fn error(&self, what: &'static str, problem: Problem) -> DecodeError {
        self.error_at(self.position, what, problem)
    }

    pub(crate) fn error_at(
        &self,
        offset: usize,
        what: &'static str,
        problem: Problem,
    ) -> DecodeError {
        DecodeError {
            what,
            offset,
            problem,
        }
    }

    /// The next `length` bytes. `length` comes from the wire, so it is checked against what is
    /// left before anything is sliced or allocated.
    pub(crate) fn take(
        &mut self,
        length: u64,
        what: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        let Some(length) = usize::try_from(length).ok().filter(|l| *l <= remaining) else {
            return Err(self.error(
                what,
                Problem::Truncated {
                    needed: length,
                    remaining,
                },
            ));
        };
        let start = self.position;
        self.position += length;
        self.bytes
            .get(start..self.position)
            .ok_or_else(|| self.error_at(start, what, Problem::Invalid("slice out of bounds")))
    }

    /// Moves back (or forward, within the bytes) to `offset`.
    pub(crate) fn rewind_to(&mut self, offset: usize) {
        self.position = offset.min(self.bytes.len());
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.bytes.get(self.position..).unwrap_or_default();
        self.position = self.bytes.len();
        rest
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let [byte] = self.array::<1>(what)?;
        Ok(byte)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let start = self.position;
        let bytes = self.take(N as u64, what)?;
        bytes
            .try_into()
            .map_err(|_| self.error_at(start, what, Problem::Invalid("wrong slice length")))
    }

    /// Fails when anything is left: a structure whose end was reached must end the bytes.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(what, Problem::TrailingBytes { count })),
        }
    }
}

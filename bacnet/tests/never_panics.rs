//! Decoding never panics, whatever the bytes: arbitrary ones, and valid datagrams with bytes
//! changed, cut off or inserted (which reach much deeper into the decoders). What decodes
//! re-encodes, and decodes again to the same message.

mod strategies;

use gatehouse_bacnet::{Apdu, ApplicationValue, Bvlc, MAX_NESTING, Npdu, Problem, Value};
use proptest::{collection::vec, prelude::*};
use strategies::check;

/// Whatever decodes is encodable, and its encoding decodes and re-encodes to the same bytes
/// (bytes, not messages: a decoded Real may be NaN, which is not equal to itself).
fn stable(bvlc: &Bvlc) -> Result<(), TestCaseError> {
    let encode = |bvlc: &Bvlc| {
        bvlc.to_bytes()
            .map_err(|error| TestCaseError::fail(format!("{error} for {bvlc:?}")))
    };
    let bytes = encode(bvlc)?;
    let decoded = Bvlc::decode(&bytes)
        .map_err(|error| TestCaseError::fail(format!("{error} re-decoding {bvlc:?}")))?;
    prop_assert_eq!(encode(&decoded)?, bytes);
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Set { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { to: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let length = bytes.len().max(1);
    match *mutation {
        Mutation::Set { at, byte } => {
            if let Some(slot) = bytes.get_mut(at % length) {
                *slot = byte;
            }
        }
        Mutation::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
        Mutation::Remove { at } => {
            if !bytes.is_empty() {
                bytes.remove(at % length);
            }
        }
        Mutation::Truncate { to } => bytes.truncate(to % length),
    }
}

/// Keeps the BVLC length octets true to the datagram, so mutations get past that check.
fn fix_bvlc_length(bytes: &mut [u8]) {
    let length = u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(field) = bytes.get_mut(2..4) {
        field.copy_from_slice(&length);
    }
}

const CASES: u32 = 5000;

#[test]
fn arbitrary_bytes_never_panic() {
    check(
        CASES,
        || vec(any::<u8>(), 0..96),
        |bytes| {
            let _ = Apdu::decode(&bytes);
            let _ = Npdu::decode(&bytes);
            let _ = Value::decode_all(&bytes);
            let _ = ApplicationValue::decode(&bytes);
            match Bvlc::decode(&bytes) {
                Ok(bvlc) => stable(&bvlc),
                Err(_) => Ok(()),
            }
        },
    );
}

#[test]
fn arbitrary_bytes_behind_a_valid_header_never_panic() {
    check(
        CASES,
        || (vec(any::<u8>(), 0..96), 0u8..16),
        |(body, function)| {
            // BVLC header and NPDU version 1 with an empty control octet: the APDU decoders see the rest.
            let mut bytes = vec![0x81, function, 0, 0, 0x01, 0x00];
            bytes.extend_from_slice(&body);
            fix_bvlc_length(&mut bytes);
            match Bvlc::decode(&bytes) {
                Ok(bvlc) => stable(&bvlc),
                Err(_) => Ok(()),
            }
        },
    );
}

#[test]
fn mutated_datagrams_never_panic() {
    check(
        CASES,
        || (strategies::bvlc(), vec(mutation(), 1..4)),
        |(bvlc, mutations)| {
            let mut bytes = bvlc.to_bytes()?;
            for mutation in &mutations {
                mutate(&mut bytes, mutation);
            }
            fix_bvlc_length(&mut bytes);
            match Bvlc::decode(&bytes) {
                Ok(decoded) => stable(&decoded),
                Err(_) => Ok(()),
            }
        },
    );
}

/// The deepest nesting the decoder follows, inside an RPM-ACK inside a datagram, decoded on a
/// 128 KiB stack (a debug build; tokio's worker threads have 2 MiB).
#[test]
fn the_deepest_nesting_fits_a_small_stack() {
    let decoder = std::thread::Builder::new().stack_size(128 << 10).spawn(|| {
        let mut datagram = vec![0x81, 0x0A, 0, 0, 0x01, 0x00];
        datagram.extend_from_slice(&[0x30, 0x01, 0x0E, 0x0C, 0, 0, 0, 1, 0x1E, 0x29, 0x55, 0x4E]);
        datagram.extend(std::iter::repeat_n(0x0E, MAX_NESTING + 8));
        fix_bvlc_length(&mut datagram);
        Bvlc::decode(&datagram).map_err(|error| error.problem)
    });
    let result = decoder.map(std::thread::JoinHandle::join);
    assert!(
        matches!(result, Ok(Ok(Err(Problem::TooDeep(MAX_NESTING))))),
        "{result:?}"
    );
}

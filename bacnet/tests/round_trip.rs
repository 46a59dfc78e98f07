//! Encoding then decoding gives back what was encoded, for every message type (through the
//! strategies of `strategies/`, which reach every variant of every type).

mod strategies;

use gatehouse_bacnet::{Apdu, Bvlc, Npdu, Value};
use proptest::prelude::*;
use strategies::check;

const CASES: u32 = 2000;

#[test]
fn property_values_round_trip() {
    check(CASES, strategies::property_value, |values| {
        let mut bytes = Vec::new();
        for value in &values {
            value.encode(&mut bytes)?;
        }
        prop_assert_eq!(Value::decode_all(&bytes), Ok(values));
        Ok(())
    });
}

#[test]
fn apdus_round_trip() {
    check(CASES, strategies::apdu, |apdu| {
        let bytes = apdu.to_bytes()?;
        prop_assert_eq!(Apdu::decode(&bytes), Ok(apdu));
        Ok(())
    });
}

#[test]
fn npdus_round_trip() {
    check(CASES, strategies::npdu, |npdu| {
        let bytes = npdu.to_bytes()?;
        prop_assert_eq!(Npdu::decode(&bytes), Ok(npdu));
        Ok(())
    });
}

#[test]
fn datagrams_round_trip() {
    check(CASES, strategies::bvlc, |bvlc| {
        let bytes = bvlc.to_bytes()?;
        prop_assert_eq!(Bvlc::decode(&bytes), Ok(bvlc));
        Ok(())
    });
}

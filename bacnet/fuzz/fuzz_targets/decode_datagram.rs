//! Any UDP payload into the whole decoder (BVLC, NPDU, APDU, services, values). It must not
//! panic, and what decodes must re-encode to bytes that decode and re-encode to the same bytes
//! (compared as bytes, not messages: a Real may be NaN, which is not equal to itself).

#![no_main]

use gatehouse_bacnet::Bvlc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    let Ok(bvlc) = Bvlc::decode(datagram) else {
        return;
    };
    let encoded = match bvlc.to_bytes() {
        Ok(encoded) => encoded,
        Err(error) => panic!("{bvlc:?} decoded but does not encode: {error}"),
    };
    let again = Bvlc::decode(&encoded).map(|decoded| decoded.to_bytes());
    assert_eq!(again, Ok(Ok(encoded)), "{bvlc:?}");
});

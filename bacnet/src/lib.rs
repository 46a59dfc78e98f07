//! BACnet/IP codec for Gatehouse's BACnet adapter: bytes in, typed values out, and back.
//! No I/O: the caller owns the UDP socket, the timers and the invoke ids.
//!
//! What it covers (ASHRAE 135):
//! - BVLC (Annex J): Original-Unicast-NPDU, Original-Broadcast-NPDU, Forwarded-NPDU,
//!   Register-Foreign-Device, BVLC-Result, Distribute-Broadcast-To-Network ([`Bvlc`]);
//! - NPDU (clause 6): control octet, DNET/DLEN/DADR, SNET/SLEN/SADR, hop count, expecting
//!   reply, priority; network layer messages kept raw ([`Npdu`]);
//! - APDU (clause 20.1): Confirmed-Request, Unconfirmed-Request, SimpleACK, ComplexACK,
//!   Error, Reject, Abort ([`Apdu`]), without segmentation: segmented PDUs are refused with
//!   [`Problem::Segmented`];
//! - services: Who-Is, I-Am, ReadProperty(-ACK), ReadPropertyMultiple(-ACK, with per-property
//!   errors), WriteProperty (priority; Null relinquishes), SubscribeCOV (and cancellation),
//!   Confirmed- and UnconfirmedCOVNotification ([`services`]);
//! - values: every application-tagged primitive, context-tagged and constructed values
//!   ([`Value`]), tag numbers and lengths in their extended forms.
//!
//! Invariants:
//! - decoding never panics and never allocates more than a small multiple of its input: every
//!   length read from the wire is checked against the bytes left before anything is sliced or
//!   allocated, and nesting of constructed values is bounded by [`MAX_NESTING`];
//! - a decoding error names what was being decoded and the byte offset
//!   ([`DecodeError`]); offsets count from the start of the bytes given to the `decode` that
//!   failed ([`Bvlc::decode`]: the UDP payload);
//! - for every value `m` this crate can encode, `decode(encode(m)) == m` (property-tested in
//!   `tests/round_trip.rs`; NaN aside, which is not equal to itself); decoding is strict (trailing bytes are an error) except where the
//!   docs of a type say otherwise.
//!
//! Layout: `tag.rs` (tags, primitive contents), [`value`], [`object`] (identifiers,
//! enumerations), [`services`] (one file per service), [`apdu`], [`npdu`], [`bvlc`]; `reader.rs`
//! is the bounds-checked cursor every decoder reads through.
//!
//! Character strings: only character set 0 (UTF-8) is decoded; any other set is a
//! [`Problem::UnsupportedCharacterSet`] error, which fails the whole APDU that carries it.
//!
//! # Why not bacnet-rs
//!
//! bacnet-rs 0.3.2 was judged first (design decision: "bacnet-rs where it holds up"). It
//! decoded hand-made vectors of I-Am, a ReadPropertyMultiple-ACK with a per-property error,
//! an Error PDU and a Confirmed-Request correctly, and 200,000 random inputs to each of ten of
//! its decoders (APDU, NPDU, BVLC, Who-Is, I-Am, ReadProperty, its ACK, WriteProperty, RPM-ACK,
//! COV notification) caused no panic. It falls short here on: no SubscribeCOV decoder (encode
//! only); decoding errors without position or context (`EncodingError::InvalidTag`);
//! segmented PDUs parsed instead of refused; property values decoded only as flat lists of
//! application values (no constructed values in RPM-ACKs); service data left as raw bytes
//! beside an untyped service choice; its default features pull in tokio, and even without them
//! `std` brings socket2, if-addrs, chrono and thiserror 1. Its README calls it not
//! production-ready. So the codec is written here, I/O-free, against the standard.
//!
//! # Tests
//!
//! `cargo test -p gatehouse-bacnet` runs, besides unit tests:
//! - `tests/known_vectors.rs`: byte-exact datagrams of every message type, both ways, and
//!   malformed ones that must fail at a given offset;
//! - `tests/round_trip.rs` and `tests/never_panics.rs`: property tests (every message type
//!   round-trips; arbitrary and mutated bytes never panic, and what decodes re-encodes
//!   stably);
//! - `tests/bacpypes3_peer.rs`: interop with a BACpypes3 0.0.110 device
//!   (`hil-tests/peers/bacnet_device.py`) over UDP on 127.0.0.1. It needs the virtualenv that
//!   `scripts/setup-test-deps.sh` makes at `<repo>/.venv` (or `GATEHOUSE_VENV`), and fails
//!   saying so without it.
//!
//! # Fuzzing
//!
//! A cargo-fuzz target feeds arbitrary datagrams to [`Bvlc::decode`] and checks that what
//! decodes re-encodes stably (as bytes: a decoded Real may be NaN):
//! `cd bacnet/fuzz && cargo +nightly fuzz run decode_datagram -- -max_total_time=60`
//! (needs `cargo install cargo-fuzz` and a nightly toolchain). `bacnet/fuzz` is its own
//! workspace, excluded from Gatehouse's.

#![forbid(unsafe_code)]

pub mod apdu;
pub mod bvlc;
mod error;
pub mod npdu;
pub mod object;
mod reader;
pub mod services;
mod tag;
pub mod value;

pub use apdu::{
    Apdu, ComplexAck, ConfirmedRequest, ConfirmedRequestHeader, MaxApdu, MaxSegments,
    UnconfirmedRequest,
};
pub use bvlc::{Bvlc, BvlcResultCode};
pub use error::{DecodeError, EncodeError, Expected, Problem};
pub use npdu::{
    Destination, NetworkAddress, NetworkMessage, NetworkPriority, Npdu, NpduHeader, NpduPayload,
};
pub use object::{
    AbortReason, ConfirmedServiceChoice, ErrorClass, ErrorCode, ObjectIdentifier, ObjectType,
    PropertyIdentifier, RejectReason, Segmentation, UnconfirmedServiceChoice,
};
pub use services::ErrorClassAndCode;
pub use tag::MAX_NESTING;
pub use value::{ApplicationValue, BitString, Date, StatusFlags, Time, Value};

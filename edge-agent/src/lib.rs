//! The Gatehouse edge agent as a library; `gatehouse-edge` is a thin binary around it.
//!
//! ```text
//! adapters ──EventBody──► journal writer ──commit──► live state + bus ──► API / stream
//!    ▲                      │  (rules, incidents,                           │
//!    └──── commands ◄───────┼── same transaction)                           │
//!                           └───────────────────────────── ack / resolve ◄──┘
//! ```
//!
//! - [`config`]: the TOML schema, with file:line errors.
//! - [`adapters`]: the adapter trait and supervisor; [`adapters::modbus`] is Modbus TCP.
//! - [`journal`]: SQLite storage, the single writer and queries.
//! - [`rules`]: what the rules engine (crate `gatehouse-rules`, run inside the journal
//!   writer) needs outside it: device commands, wake-ups for its timers, reloads on a config
//!   change.
//! - [`replay`]: `rules test`, recorded events through a site's rules.
//! - [`live`]: latest point values and device status, and the bus to the stream.
//! - [`api`]: REST, WebSocket stream, OpenAPI, metrics, authentication.
//! - [`uplink`]: the outbox of what must reach the relay.
//! - [`video`]: cameras, clips around incidents, live view; [`video::onvif`] finds their
//!   streams and reads their events; [`video::restream`] serves them to the LAN over RTSP.
//! - [`agent`]: wires it all from a config.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod agent;
pub mod api;
pub mod claim;
pub mod config;
pub mod journal;
pub mod live;
pub mod metrics;
pub mod replay;
pub mod rules;
pub mod uplink;
pub mod video;

#[cfg(test)]
mod test_helpers;

//! The Gatehouse relay: appliances in over MQTT v5 with mutual TLS, records stored
//! idempotently in PostgreSQL or SQLite, HQ operators served over REST and WebSocket.
//!
//! Work in progress (issue 3): storage and broker configuration land first.

#![forbid(unsafe_code)]

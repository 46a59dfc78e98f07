//! The Gatehouse relay: appliances in over MQTT v5 with mutual TLS, records stored
//! idempotently in PostgreSQL or SQLite, HQ operators served over REST and WebSocket.
//!
//! Work in progress (issue 3): storage and broker configuration land first.
//!
//! Layout:
//! - [`store`]: the data layer (PostgreSQL or SQLite through one set of SQL and migrations in
//!   `migrations/`); tenant scoping, idempotent ingestion and the contiguous ack live there.
//! - [`pki`]: the fleet CA that signs appliance (claim), relay and broker certificates; the
//!   broker configuration that trusts it is in `deploy/`.

#![forbid(unsafe_code)]

pub mod ingest;
pub mod pki;
pub mod store;

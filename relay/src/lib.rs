//! The Gatehouse relay: appliances in over MQTT v5 with mutual TLS, records stored
//! idempotently in PostgreSQL or SQLite, HQ operators served over REST and WebSocket, and
//! their incident steps carried back to the appliances.
//!
//! The binary (`main.rs`) is only the command line; everything else is here, so tests drive
//! it in-process. Layout:
//! - [`config`]: the one TOML configuration file, checked in two passes (shape, then meaning)
//!   with every error's line and column.
//! - [`service`]: one running replica, wired from a [`config::Config`]: ingestion, the
//!   downlink publisher, the API, the offline-alert watcher, and the order they stop in.
//! - [`ingest`]: the MQTT side. The shared-subscription consumer (decode record by record,
//!   store, ack back, then ack the broker; statuses and live updates), its persistent
//!   session, and the sending of HQ's commands down to appliances.
//! - [`store`]: the data layer (PostgreSQL or SQLite through one set of SQL and migrations in
//!   `migrations/`); tenant scoping, idempotent ingestion and the contiguous ack, incidents,
//!   the relay's alerts and the queue of commands for appliances live there.
//! - [`api`]: the operators' REST API and WebSocket stream (tokens of one tenant, roles), and
//!   the public claim endpoint through which an appliance gets its certificate.
//! - [`hub`]: in-process channels: live updates per tenant for the streams, and
//!   [`hub::Downlink`], an HQ command on its way to an appliance's topic.
//! - [`pki`]: the fleet CA that signs appliance (claim), relay and broker certificates; the
//!   broker configuration that trusts it is in `deploy/`.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod hub;
pub mod ingest;
pub mod pki;
pub mod service;
pub mod store;

//! The appliance's rules engine: what turns events into incidents and actions.
//!
//! Pure by construction: this crate depends on no I/O crate. The caller feeds it events and
//! the current time; it returns what should happen (incidents, device commands, clips, zone
//! modes) and the next instant it needs to be woken at. Tests fast-forward time by passing a
//! later instant.
//!
//! Layout:
//! - [`config`]: the rules' part of a site's TOML (zones, rules; schedules in [`schedule`]);
//! - [`catalog`]: the points, devices and cameras the rules may name;
//! - [`expr`]: the predicate language (`value > 30 && armed("lobby")`), parsed and
//!   type-checked once at load, evaluated without allocating;
//! - [`schedule`]: weekly schedules in a time zone, DST-safe;
//! - [`engine`]: compiling a site, evaluating events and deadlines, the state to save;
//! - [`replay`]: an engine on a replayed clock, the journal simulated (`rules test`).

pub mod catalog;
pub mod config;
pub mod engine;
pub mod expr;
pub mod replay;
pub mod schedule;

pub use catalog::{Catalog, PointSpec};
pub use engine::{Engine, Output, Problem, Site, Snapshot};

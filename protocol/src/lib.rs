//! The shared schema of Gatehouse.
//!
//! Everything that crosses a boundary between the edge agent, its integrators and (later) the
//! relay is defined here: identifiers, point values and their quality, the events the journal
//! records and the incidents the rules raise. The crate is free of I/O and knows nothing about
//! Modbus, SQLite or HTTP.
//!
//! Layout:
//! - [`ids`]: validated identifiers (`DeviceId`, `PointId`, `ZoneId`, ...).
//! - [`value`]: [`Value`] and [`Quality`] of a point.
//! - [`event`]: [`Event`], the unit the journal stores and the stream delivers.
//! - [`incident`]: [`Incident`], its [`Severity`] and lifecycle.
//! - [`command`]: a write to a device point requested through the API.
//! - [`zone`]: a zone's arming [`ZoneMode`].
//! - [`wire`]: the Protocol Buffers contract between appliance and relay (`proto/`), its
//!   MQTT topics and the conversions to and from the types above.

#![forbid(unsafe_code)]

pub mod command;
pub mod event;
pub mod ids;
pub mod incident;
pub mod value;
pub mod wire;
pub mod zone;

pub use command::{CommandOutcome, CommandRequest};
pub use event::{DeviceStatus, Event, EventBody, EventKind};
pub use ids::{ApplianceId, DeviceId, IdError, PointId, RuleId, SiteId, ZoneId};
pub use incident::{
    ClipRef, ClipState, Evidence, Incident, IncidentChange, IncidentState, LifecycleError,
    Severity, Transition,
};
pub use value::{Quality, Value};
pub use zone::ZoneMode;

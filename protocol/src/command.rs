//! Commands: writes to device points.

use serde::{Deserialize, Serialize};

use crate::ids::PointId;
use crate::value::Value;

/// A request to write `value` to a writable point of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub point: PointId,
    pub value: Value,
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// A rule's command left for its device; the device's answer follows as another record
    /// (`done`, `failed` or `unconfirmed`).
    Sent,
    /// The device confirmed the write.
    Done,
    /// The write was not carried out; `reason` says why (exception, device offline, expired).
    Failed { reason: String },
    /// The request went out but the device did not confirm (timeout, broken link): the write
    /// may or may not have taken effect. Read the point to know.
    Unconfirmed { reason: String },
}

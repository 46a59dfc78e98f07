//! Zones' arming modes: what the rules engine keeps per zone and the journal records.

use serde::{Deserialize, Serialize};

/// A zone's arming mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ZoneMode {
    #[default]
    Disarmed,
    /// Nobody inside: every sensor of the zone counts.
    ArmedAway,
    /// People inside: perimeter sensors count, interior ones usually do not.
    ArmedStay,
    /// Night: like stay, with the rules a site picks for the night.
    ArmedNight,
}

impl ZoneMode {
    pub const ALL: [ZoneMode; 4] = [
        ZoneMode::Disarmed,
        ZoneMode::ArmedAway,
        ZoneMode::ArmedStay,
        ZoneMode::ArmedNight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ZoneMode::Disarmed => "disarmed",
            ZoneMode::ArmedAway => "armed_away",
            ZoneMode::ArmedStay => "armed_stay",
            ZoneMode::ArmedNight => "armed_night",
        }
    }

    pub fn is_armed(self) -> bool {
        self != ZoneMode::Disarmed
    }
}

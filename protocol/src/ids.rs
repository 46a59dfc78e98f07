//! Validated identifiers.
//!
//! An identifier is 1 to 64 characters of lowercase ASCII letters, digits, `-`, `_` and `.`,
//! starting with a letter or digit. The same rule everywhere keeps ids safe to use in URLs,
//! MQTT topics, SQL and file names without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most 64 characters, `{0}` has {1}")]
    TooLong(String, usize),
    #[error(
        "`{0}` is not a valid id: use lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit"
    )]
    BadCharacter(String),
}

/// Checks the identifier rule shared by every id type.
pub fn validate_id(text: &str) -> Result<(), IdError> {
    let length = text.chars().count();
    if length == 0 {
        return Err(IdError::Empty);
    }
    if length > 64 {
        return Err(IdError::TooLong(text.to_owned(), length));
    }
    let mut chars = text.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(IdError::BadCharacter(text.to_owned()))
    }
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `text`.
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                validate_id(&text)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                Self::new(text)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::new(text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A site: one building or campus served by one appliance.
    SiteId
);
id_type!(
    /// A device the appliance talks to (a Modbus slave, a BACnet device, a camera).
    DeviceId
);
id_type!(
    /// A point: one readable or writable value of a device, unique within a site
    /// (`door.lobby.contact`).
    PointId
);
id_type!(
    /// A zone of the site (lobby, server room, perimeter).
    ZoneId
);
id_type!(
    /// A rule that raises incidents.
    RuleId
);
id_type!(
    /// An appliance: one edge agent, known to the relay by the CN of its certificate.
    ApplianceId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for good in ["a", "door.lobby.contact", "plc-1", "zone_2", "9th-floor"] {
            assert!(PointId::new(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn rejects_bad_ids_with_a_reason() {
        assert_eq!(PointId::new(""), Err(IdError::Empty));
        assert!(matches!(
            PointId::new("Door"),
            Err(IdError::BadCharacter(_))
        ));
        assert!(matches!(
            PointId::new(".hidden"),
            Err(IdError::BadCharacter(_))
        ));
        assert!(matches!(PointId::new("a/b"), Err(IdError::BadCharacter(_))));
        assert!(matches!(
            PointId::new("x".repeat(65)),
            Err(IdError::TooLong(_, 65))
        ));
    }

    #[test]
    fn deserialization_validates() {
        let ok: Result<DeviceId, _> = serde_json::from_str("\"plc-1\"");
        assert!(ok.is_ok());
        let bad: Result<DeviceId, _> = serde_json::from_str("\"PLC 1\"");
        let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("not a valid id"), "{message}");
    }
}

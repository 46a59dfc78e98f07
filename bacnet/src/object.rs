//! Object identifiers and the standard's open enumerations (object types, properties, error
//! classes and codes, reject and abort reasons, service choices).
//!
//! Enumerations are newtypes over their wire integer with named constants, not Rust enums:
//! BACnet enumerations are extensible (vendor ranges), and a value this crate has no name for
//! must still decode, re-encode unchanged and print as its number.

use crate::error::{EncodeError, check_max};

/// Defines an open enumeration: a newtype with named constants and their standard names.
macro_rules! open_enumeration {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty) {
            $($constant:ident = $value:literal => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $(pub const $constant: Self = Self($value);)*

            /// The standard's name for this value, when this crate knows it.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}", self.0),
                }
            }
        }
    };
}
pub(crate) use open_enumeration;

open_enumeration! {
    /// BACnetObjectType (10 bits in an object identifier).
    ObjectType(u16) {
        ANALOG_INPUT = 0 => "analog-input",
        ANALOG_OUTPUT = 1 => "analog-output",
        ANALOG_VALUE = 2 => "analog-value",
        BINARY_INPUT = 3 => "binary-input",
        BINARY_OUTPUT = 4 => "binary-output",
        BINARY_VALUE = 5 => "binary-value",
        DEVICE = 8 => "device",
        MULTI_STATE_INPUT = 13 => "multi-state-input",
        MULTI_STATE_OUTPUT = 14 => "multi-state-output",
        MULTI_STATE_VALUE = 19 => "multi-state-value",
    }
}

open_enumeration! {
    /// BACnetPropertyIdentifier.
    PropertyIdentifier(u32) {
        ALL = 8 => "all",
        DESCRIPTION = 28 => "description",
        EVENT_STATE = 36 => "event-state",
        MAX_APDU_LENGTH_ACCEPTED = 62 => "max-apdu-length-accepted",
        NUMBER_OF_STATES = 74 => "number-of-states",
        OBJECT_IDENTIFIER = 75 => "object-identifier",
        OBJECT_LIST = 76 => "object-list",
        OBJECT_NAME = 77 => "object-name",
        OBJECT_TYPE = 79 => "object-type",
        OUT_OF_SERVICE = 81 => "out-of-service",
        POLARITY = 84 => "polarity",
        PRESENT_VALUE = 85 => "present-value",
        PRIORITY_ARRAY = 87 => "priority-array",
        RELINQUISH_DEFAULT = 104 => "relinquish-default",
        SEGMENTATION_SUPPORTED = 107 => "segmentation-supported",
        STATUS_FLAGS = 111 => "status-flags",
        UNITS = 117 => "units",
        VENDOR_IDENTIFIER = 120 => "vendor-identifier",
        VENDOR_NAME = 121 => "vendor-name",
    }
}

open_enumeration! {
    /// Error class of an Error PDU or a property access error.
    ErrorClass(u32) {
        DEVICE = 0 => "device",
        OBJECT = 1 => "object",
        PROPERTY = 2 => "property",
        RESOURCES = 3 => "resources",
        SECURITY = 4 => "security",
        SERVICES = 5 => "services",
        VT = 6 => "vt",
        COMMUNICATION = 7 => "communication",
    }
}

open_enumeration! {
    /// Error code of an Error PDU or a property access error.
    ErrorCode(u32) {
        OTHER = 0 => "other",
        INVALID_DATA_TYPE = 9 => "invalid-data-type",
        UNKNOWN_OBJECT = 31 => "unknown-object",
        UNKNOWN_PROPERTY = 32 => "unknown-property",
        VALUE_OUT_OF_RANGE = 37 => "value-out-of-range",
        WRITE_ACCESS_DENIED = 40 => "write-access-denied",
        INVALID_ARRAY_INDEX = 42 => "invalid-array-index",
        OPTIONAL_FUNCTIONALITY_NOT_SUPPORTED = 45 => "optional-functionality-not-supported",
    }
}

open_enumeration! {
    /// BACnetRejectReason.
    RejectReason(u8) {
        OTHER = 0 => "other",
        BUFFER_OVERFLOW = 1 => "buffer-overflow",
        INCONSISTENT_PARAMETERS = 2 => "inconsistent-parameters",
        INVALID_PARAMETER_DATA_TYPE = 3 => "invalid-parameter-data-type",
        INVALID_TAG = 4 => "invalid-tag",
        MISSING_REQUIRED_PARAMETER = 5 => "missing-required-parameter",
        PARAMETER_OUT_OF_RANGE = 6 => "parameter-out-of-range",
        TOO_MANY_ARGUMENTS = 7 => "too-many-arguments",
        UNDEFINED_ENUMERATION = 8 => "undefined-enumeration",
        UNRECOGNIZED_SERVICE = 9 => "unrecognized-service",
    }
}

open_enumeration! {
    /// BACnetAbortReason.
    AbortReason(u8) {
        OTHER = 0 => "other",
        BUFFER_OVERFLOW = 1 => "buffer-overflow",
        INVALID_APDU_IN_THIS_STATE = 2 => "invalid-apdu-in-this-state",
        PREEMPTED_BY_HIGHER_PRIORITY_TASK = 3 => "preempted-by-higher-priority-task",
        SEGMENTATION_NOT_SUPPORTED = 4 => "segmentation-not-supported",
    }
}

open_enumeration! {
    /// BACnetSegmentation, as announced in I-Am.
    Segmentation(u32) {
        BOTH = 0 => "segmented-both",
        TRANSMIT = 1 => "segmented-transmit",
        RECEIVE = 2 => "segmented-receive",
        NONE = 3 => "no-segmentation",
    }
}

open_enumeration! {
    /// BACnetConfirmedServiceChoice.
    ConfirmedServiceChoice(u8) {
        CONFIRMED_COV_NOTIFICATION = 1 => "confirmedCOVNotification",
        SUBSCRIBE_COV = 5 => "subscribeCOV",
        READ_PROPERTY = 12 => "readProperty",
        READ_PROPERTY_MULTIPLE = 14 => "readPropertyMultiple",
        WRITE_PROPERTY = 15 => "writeProperty",
        REINITIALIZE_DEVICE = 20 => "reinitializeDevice",
    }
}

open_enumeration! {
    /// BACnetUnconfirmedServiceChoice.
    UnconfirmedServiceChoice(u8) {
        I_AM = 0 => "i-Am",
        I_HAVE = 1 => "i-Have",
        UNCONFIRMED_COV_NOTIFICATION = 2 => "unconfirmedCOVNotification",
        TIME_SYNCHRONIZATION = 6 => "timeSynchronization",
        WHO_HAS = 7 => "who-Has",
        WHO_IS = 8 => "who-Is",
    }
}

/// BACnetObjectIdentifier: a 10-bit object type and a 22-bit instance number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectIdentifier {
    pub object_type: ObjectType,
    pub instance: u32,
}

impl ObjectIdentifier {
    /// Highest object type an identifier can carry.
    pub const MAX_TYPE: u16 = 0x3FF;
    /// Highest instance number; 4194303 itself means "unconfigured" / wildcard.
    pub const MAX_INSTANCE: u32 = 0x3F_FFFF;

    pub const fn new(object_type: ObjectType, instance: u32) -> Self {
        Self {
            object_type,
            instance,
        }
    }

    /// The identifier in its 32-bit wire form; fails when a field is out of range.
    pub fn to_u32(self) -> Result<u32, EncodeError> {
        check_max(
            "object type",
            self.object_type.0.into(),
            Self::MAX_TYPE.into(),
            "0..=1023",
        )?;
        check_max(
            "object instance",
            self.instance.into(),
            Self::MAX_INSTANCE.into(),
            "0..=4194303",
        )?;
        Ok(u32::from(self.object_type.0) << 22 | self.instance)
    }

    /// Every 32-bit value is a valid identifier.
    pub fn from_u32(value: u32) -> Self {
        Self {
            object_type: ObjectType((value >> 22) as u16),
            instance: value & Self::MAX_INSTANCE,
        }
    }
}

impl std::fmt::Display for ObjectIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.object_type, self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_identifier_wire_form() {
        let device = ObjectIdentifier::new(ObjectType::DEVICE, 1234);
        assert_eq!(device.to_u32(), Ok(0x0200_04D2));
        assert_eq!(ObjectIdentifier::from_u32(0x0200_04D2), device);
        assert!(ObjectIdentifier::new(ObjectType(1024), 0).to_u32().is_err());
        assert!(
            ObjectIdentifier::new(ObjectType::DEVICE, 1 << 22)
                .to_u32()
                .is_err()
        );
        assert_eq!(device.to_string(), "device,1234");
        assert_eq!(ObjectType(300).to_string(), "300");
    }
}

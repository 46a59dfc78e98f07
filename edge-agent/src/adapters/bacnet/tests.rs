//! The adapter against a BACpypes3 device.

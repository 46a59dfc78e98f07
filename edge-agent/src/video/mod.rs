//! Video: cameras' streams and events; [`onvif`] finds a camera's streams and reads its events.

pub mod onvif;

//! Video: cameras' streams and their own events; [`onvif`] finds a camera's streams and reads its events.

pub mod onvif;

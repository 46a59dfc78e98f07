//! Video: the site's cameras, their pre-event buffers, clips around incidents, snapshots, live
//! view (Low-Latency HLS packaged in memory, [`llhls`]), ONVIF ([`onvif`] finds a camera's streams and reads its events) and re-streaming to
//! other LAN clients over RTSP ([`restream`]).
//!
//! See `docs/video.md` for the installer's view and ARCHITECTURE.md for where it sits.

pub mod buffer;
pub mod config;
pub mod feed;
pub mod fmp4;
pub mod llhls;
pub mod media;
pub mod onvif;
pub mod restream;
pub mod service;
pub mod signing;

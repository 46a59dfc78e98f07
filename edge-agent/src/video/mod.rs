//! Video: the site's cameras, their pre-event buffers, clips around incidents, snapshots and
//! live view.
//!
//! See `docs/video.md` for the installer's view and ARCHITECTURE.md for where it sits.

pub mod buffer;
pub mod config;
pub mod feed;
pub mod media;
pub mod service;
pub mod signing;

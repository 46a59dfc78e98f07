//! Video: the site's cameras, re-streamed over RTSP to other LAN clients ([`restream`]).

pub mod restream;

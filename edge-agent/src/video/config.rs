//! The `[video]` section: where media is kept, how much of it, and the cameras.
//!
//! ```toml
//! [video]
//! storage = "video"              # clips, snapshots and live segments; relative to the config
//! disk_budget_megabytes = 20480  # clips are deleted oldest first to stay under it
//! clip_max_age_days = 30
//! pre_event = "10s"              # video kept in memory before any trigger
//! media_url_ttl = "5m"           # how long a signed media URL stays valid
//!
//! [[video.cameras]]
//! id = "cam.lobby"
//! zone = "lobby"
//! url = "rtsp://10.0.0.20:554/stream1"
//! username = "gatehouse"
//! password_file = "/etc/gatehouse/cam-lobby.password"
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use gatehouse_protocol::{DeviceId, PointId, ZoneId};
use gatehouse_rules::PointSpec;
use gatehouse_rules::expr::Type;
use jiff::SignedDuration;
use serde::Deserialize;
use toml::Spanned;

use super::onvif::events::{POINT_LINE_CROSSED, POINT_MOTION, POINT_TAMPER};
use crate::config::{Problems, check_point_id, check_reconnect, check_zone};

/// The video part of the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// The folder for clips, snapshots and live segments; relative paths are resolved against
    /// the config file's folder.
    #[serde(default = "default_storage")]
    pub storage: PathBuf,
    /// Clips and snapshots are deleted, oldest first, to stay under this (MiB).
    #[serde(default = "default_disk_budget_megabytes")]
    pub disk_budget_megabytes: u64,
    /// Clips older than this are deleted (0 keeps them until the budget needs the space).
    #[serde(default = "default_clip_max_age_days")]
    pub clip_max_age_days: u32,
    /// Recording stops, with an alarm event, while the storage's file system has less free
    /// space than this (MiB): the journal on the same disk must keep working.
    #[serde(default = "default_min_free_megabytes")]
    pub min_free_megabytes: u64,
    /// How much video each camera keeps in memory before a trigger: the longest `before` a
    /// clip can have.
    #[serde(default = "default_pre_event")]
    pub pre_event: Spanned<SignedDuration>,
    /// How long a signed media URL (live view, snapshot, clip) stays valid.
    #[serde(default = "default_media_url_ttl")]
    pub media_url_ttl: Spanned<SignedDuration>,
    /// Re-streaming to other LAN clients (an NVR, VLC) over RTSP; off when absent.
    #[serde(default)]
    pub restream: Option<RestreamConfig>,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

/// The agent's RTSP server for other LAN clients: `rtsp://LISTEN/CAMERA-ID`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestreamConfig {
    pub listen: SocketAddr,
    /// The user clients authenticate as (an NVR keeps it in its own config, so it is stable,
    /// unlike the API's signed URLs).
    pub username: String,
    /// A file holding that user's password (never logged).
    pub password_file: Spanned<PathBuf>,
    /// How clients prove the password: `digest` (the default; it never crosses the LAN) or
    /// `basic` (in clear, for a client that knows nothing else).
    #[serde(default)]
    pub auth: RtspAuth,
    /// Cameras with `restream = "transcode"` are served as H.264 of this height...
    #[serde(default = "default_transcode_height")]
    pub transcode_height: u32,
    /// ...at this bitrate.
    #[serde(default = "default_transcode_bitrate_kbps")]
    pub transcode_bitrate_kbps: u32,
}

/// The RTSP authentication scheme the re-streaming server asks clients for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspAuth {
    /// RFC 2617 Digest: the client proves the password with a hash of it and a nonce.
    #[default]
    Digest,
    /// Basic: the password in base64, readable by anyone on the LAN.
    Basic,
}

/// How a camera is re-streamed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restream {
    /// As the camera sends it.
    #[default]
    Passthrough,
    /// Decoded, scaled and encoded again as H.264 (for a thin uplink).
    Transcode,
    Off,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            storage: default_storage(),
            disk_budget_megabytes: default_disk_budget_megabytes(),
            clip_max_age_days: default_clip_max_age_days(),
            min_free_megabytes: default_min_free_megabytes(),
            pre_event: default_pre_event(),
            media_url_ttl: default_media_url_ttl(),
            restream: None,
            cameras: Vec::new(),
        }
    }
}

/// One camera on the site's network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// The camera's device id: rules name it in `clip = { camera = ... }`.
    pub id: Spanned<DeviceId>,
    #[serde(default)]
    pub zone: Option<Spanned<ZoneId>>,
    /// The RTSP URL of the stream (`rtsp://host:554/path`), without credentials; or give
    /// `onvif` instead.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The camera's ONVIF device service (`http://10.0.0.20/onvif/device_service`, or
    /// `host[:port]`): the agent reads its profiles and stream URL, and its events.
    #[serde(default)]
    pub onvif: Option<Spanned<String>>,
    /// The ONVIF profile to record (its token); the first H.264 or H.265 profile otherwise.
    #[serde(default)]
    pub profile: Option<String>,
    /// Whether an ONVIF camera's own events (motion, tamper, line crossing) become points
    /// `ID.motion`, `ID.tamper` and `ID.line_crossed`.
    #[serde(default = "default_events")]
    pub events: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the camera's password (never logged).
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    /// RTP over the RTSP connection (`tcp`, the default: no UDP ports to open, no loss on a
    /// busy LAN) or over UDP.
    #[serde(default)]
    pub transport: RtspTransport,
    /// No frame for this long counts as a stalled camera: it is reconnected.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: Spanned<SignedDuration>,
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// How `[video.restream]` serves it (an ONVIF camera from the stream URL it gives).
    #[serde(default)]
    pub restream: Restream,
}

/// How RTP travels from the camera.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

fn default_transcode_height() -> u32 {
    480
}
fn default_transcode_bitrate_kbps() -> u32 {
    800
}
fn default_events() -> bool {
    true
}
fn default_storage() -> PathBuf {
    PathBuf::from("video")
}
fn default_disk_budget_megabytes() -> u64 {
    20 * 1024
}
fn default_clip_max_age_days() -> u32 {
    30
}
fn default_min_free_megabytes() -> u64 {
    512
}
fn default_pre_event() -> Spanned<SignedDuration> {
    Spanned::new(0..0, SignedDuration::from_secs(10))
}
fn default_media_url_ttl() -> Spanned<SignedDuration> {
    Spanned::new(0..0, SignedDuration::from_mins(5))
}
fn default_stall_timeout() -> Spanned<SignedDuration> {
    Spanned::new(0..0, SignedDuration::from_secs(5))
}
fn default_reconnect_initial_ms() -> u64 {
    1_000
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// Whether `duration` lies in `min..=max`; a problem at its span otherwise.
fn check_duration(
    what: &str,
    duration: &Spanned<SignedDuration>,
    (min, max): (SignedDuration, SignedDuration),
    problems: &mut Problems,
) {
    if !(min..=max).contains(duration.get_ref()) {
        problems.at(
            duration.span(),
            format!("{what} must be between {min:#} and {max:#}"),
        );
    }
}

impl VideoConfig {
    /// Checks the section; camera ids join the site's device ids.
    pub(crate) fn validate(
        &self,
        zones: &HashSet<ZoneId>,
        devices: &mut HashSet<DeviceId>,
        points: &mut HashSet<PointId>,
        problems: &mut Problems,
    ) {
        check_duration(
            "video.pre_event",
            &self.pre_event,
            (SignedDuration::ZERO, SignedDuration::from_mins(5)),
            problems,
        );
        check_duration(
            "video.media_url_ttl",
            &self.media_url_ttl,
            (
                SignedDuration::from_secs(10),
                SignedDuration::from_hours(24),
            ),
            problems,
        );
        if !(64..=16 * 1024 * 1024).contains(&self.disk_budget_megabytes) {
            problems.global("video.disk_budget_megabytes must be between 64 and 16777216");
        }
        if let Some(restream) = &self.restream {
            if !(144..=2160).contains(&restream.transcode_height) {
                problems.global("video.restream.transcode_height must be between 144 and 2160");
            }
            if !(100..=20_000).contains(&restream.transcode_bitrate_kbps) {
                problems
                    .global("video.restream.transcode_bitrate_kbps must be between 100 and 20000");
            }
        }
        if self.clip_max_age_days > 36_500 {
            problems.global(
                "video.clip_max_age_days must be at most 36500 (0 keeps clips until the budget needs the space)",
            );
        }
        for camera in &self.cameras {
            let id = camera.id.get_ref();
            if !devices.insert(id.clone()) {
                problems.at(camera.id.span(), format!("device `{id}` is defined twice"));
            }
            check_zone(camera.zone.as_ref(), zones, problems);
            check_url(camera, problems);
            for point in camera.event_points() {
                check_point_id(&Spanned::new(camera.id.span(), point), points, problems);
            }
            if camera.password_file.is_some() && camera.username.is_none() {
                problems.at(
                    camera.id.span(),
                    format!("camera `{id}`: a password_file needs a username"),
                );
            }
            check_duration(
                &format!("camera `{id}`: stall_timeout"),
                &camera.stall_timeout,
                (SignedDuration::from_secs(1), SignedDuration::from_mins(5)),
                problems,
            );
            if !check_reconnect(camera.reconnect_initial_ms, camera.reconnect_max_ms) {
                problems.at(
                    camera.id.span(),
                    format!(
                        "camera `{id}`: need 50 ≤ reconnect_initial_ms ≤ reconnect_max_ms ≤ 3600000"
                    ),
                );
            }
        }
    }

    /// The camera ids, for the rules' catalog.
    pub fn camera_ids(&self) -> impl Iterator<Item = &DeviceId> {
        self.cameras.iter().map(|camera| camera.id.get_ref())
    }

    /// The points of the cameras' ONVIF events, for the rules' catalog.
    pub fn rule_points(&self) -> Vec<PointSpec> {
        self.cameras
            .iter()
            .flat_map(|camera| {
                camera.event_points().into_iter().map(|id| PointSpec {
                    id,
                    device: camera.id.get_ref().clone(),
                    zone: camera.zone.as_ref().map(|zone| zone.get_ref().clone()),
                    value_type: Type::Bool,
                    writable: false,
                    egress_locked: None,
                })
            })
            .collect()
    }
}

impl CameraConfig {
    /// The points its ONVIF events feed: none without `onvif` or with `events = false`.
    pub fn event_points(&self) -> Vec<PointId> {
        if self.onvif.is_none() || !self.events {
            return Vec::new();
        }
        [POINT_MOTION, POINT_TAMPER, POINT_LINE_CROSSED]
            .into_iter()
            .filter_map(|suffix| PointId::new(format!("{}.{suffix}", self.id.get_ref())).ok())
            .collect()
    }
}

/// Exactly one of `url` and `onvif`; an RTSP URL without credentials in it (they belong in
/// username and password_file, so the config can be shared and the password never shows).
fn check_url(camera: &CameraConfig, problems: &mut Problems) {
    let id = camera.id.get_ref();
    let url = match (&camera.url, &camera.onvif) {
        (Some(url), None) => url,
        (None, Some(onvif)) => {
            if let Err(error) = super::onvif::device_service_url(onvif.get_ref()) {
                problems.at(onvif.span(), format!("camera `{id}`: {error}"));
            }
            return;
        }
        (Some(url), Some(_)) => {
            problems.at(
                url.span(),
                format!("camera `{id}`: give either url or onvif, not both"),
            );
            return;
        }
        (None, None) => {
            problems.at(
                camera.id.span(),
                format!("camera `{id}`: needs a url (RTSP) or an onvif address"),
            );
            return;
        }
    };
    let span = url.span();
    let url = url.get_ref();
    let Some(rest) = url
        .strip_prefix("rtsp://")
        .or_else(|| url.strip_prefix("rtsps://"))
    else {
        problems.at(
            span,
            format!("camera `{id}`: url must start with rtsp:// or rtsps://"),
        );
        return;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        problems.at(
            span.clone(),
            format!(
                "camera `{id}`: put the user in `username` and the password in `password_file`, not in the url"
            ),
        );
    } else if authority.is_empty() {
        problems.at(span, format!("camera `{id}`: url has no host"));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::section_tests::{BASE, assert_problems, messages};

    #[test]
    fn a_full_video_section_parses() -> anyhow::Result<()> {
        let config = Config::parse(&format!(
            "{BASE}
[video]
storage = \"/var/lib/gatehouse/video\"
pre_event = \"15s\"
[[video.cameras]]
id = \"cam.lobby\"
zone = \"lobby\"
url = \"rtsp://10.0.0.20:554/stream1\"
username = \"viewer\"
password_file = \"/etc/gatehouse/cam.password\"
transport = \"udp\"
"
        ))
        .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
        let camera = &config.video.cameras[0];
        assert_eq!(camera.id.get_ref().as_str(), "cam.lobby");
        assert_eq!(camera.transport, super::RtspTransport::Udp);
        assert_eq!(config.video.pre_event.get_ref().as_secs(), 15);
        assert_eq!(
            config.rule_catalog().cameras,
            vec![camera.id.get_ref().clone()]
        );
        Ok(())
    }

    #[test]
    fn bad_cameras_are_reported_at_their_lines() {
        // BASE is 9 lines: the section starts at line 10.
        let found = messages(
            "[video]
pre_event = \"10m\"
[[video.cameras]]
id = \"cam.a\"
url = \"http://10.0.0.20/stream\"
[[video.cameras]]
id = \"cam.a\"
url = \"rtsp://admin:secret@10.0.0.21/stream\"
zone = \"nowhere\"
stall_timeout = \"0s\"
[[video.cameras]]
id = \"cam.c\"
url = \"rtsp:///stream\"
password_file = \"/p\"
",
        );
        assert_problems(
            &found,
            &[
                (11, "video.pre_event must be between 0s and 5m"),
                (
                    14,
                    "camera `cam.a`: url must start with rtsp:// or rtsps://",
                ),
                (16, "device `cam.a` is defined twice"),
                (17, "camera `cam.a`: put the user in `username`"),
                (18, "zone `nowhere` is not defined"),
                (
                    19,
                    "camera `cam.a`: stall_timeout must be between 1s and 5m",
                ),
                (21, "camera `cam.c`: a password_file needs a username"),
                (22, "camera `cam.c`: url has no host"),
            ],
        );
    }
}

#[cfg(test)]
mod source_tests {
    use crate::config::Config;
    use crate::config::section_tests::{BASE, assert_problems, messages, toml_example};

    #[test]
    fn the_example_in_the_docs_is_a_valid_config() -> anyhow::Result<()> {
        let example = toml_example(include_str!("../../../docs/video.md"));
        let config =
            Config::parse(&format!("{BASE}{example}")).map_err(|p| anyhow::anyhow!("{p:?}"))?;
        assert_eq!(config.video.cameras.len(), 2);
        assert!(config.video.restream.is_some());
        assert_eq!(config.video.rule_points().len(), 3);
        Ok(())
    }

    #[test]
    fn restream_auth_is_digest_unless_basic_is_asked_for_and_nothing_else() -> anyhow::Result<()> {
        let restream = "[video.restream]\nlisten = \"0.0.0.0:8554\"\nusername = \"nvr\"\npassword_file = \"/p\"\n";
        let auth = |extra: &str| -> anyhow::Result<_> {
            let config = Config::parse(&format!("{BASE}{restream}{extra}"))
                .map_err(|p| anyhow::anyhow!("{p:?}"))?;
            Ok(config.video.restream.map(|r| r.auth))
        };
        assert_eq!(auth("")?, Some(super::RtspAuth::Digest));
        assert_eq!(auth("auth = \"basic\"\n")?, Some(super::RtspAuth::Basic));
        // BASE is 9 lines: `auth` is line 14.
        let found = messages(&format!("{restream}auth = \"ntlm\"\n"));
        assert_problems(
            &found,
            &[(14, "unknown variant `ntlm`, expected `digest` or `basic`")],
        );
        Ok(())
    }

    #[test]
    fn a_camera_needs_exactly_one_of_url_and_onvif() {
        // BASE is 9 lines: the section starts at line 10.
        let found = messages(
            "[video.restream]
listen = \"0.0.0.0:8554\"
username = \"nvr\"
password_file = \"/p\"
transcode_height = 10
[[video.cameras]]
id = \"cam.a\"
[[video.cameras]]
id = \"cam.b\"
url = \"rtsp://10.0.0.2/s\"
onvif = \"10.0.0.2\"
[[video.cameras]]
id = \"cam.c\"
onvif = \"10.0.0.3\"
restream = \"transcode\"
",
        );
        assert_problems(
            &found,
            &[
                (16, "camera `cam.a`: needs a url (RTSP) or an onvif address"),
                (19, "camera `cam.b`: give either url or onvif, not both"),
                (
                    0,
                    "video.restream.transcode_height must be between 144 and 2160",
                ),
            ],
        );
    }

    #[test]
    fn an_onvif_cameras_events_are_points_for_the_rules() -> anyhow::Result<()> {
        let config = Config::parse(&format!(
            "{}[[video.cameras]]\nid = \"cam.door\"\nzone = \"lobby\"\nonvif = \"http://10.0.0.4/onvif/device_service\"\n",
            BASE
        ))
        .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
        let points: Vec<String> = config
            .rule_catalog()
            .points
            .iter()
            .map(|p| p.id.to_string())
            .collect();
        assert_eq!(
            points,
            [
                "cam.door.motion",
                "cam.door.tamper",
                "cam.door.line_crossed"
            ]
        );
        Ok(())
    }
}

//! Checks on the agent's video outputs with tools that are not the agent's:
//! `gst-discoverer-1.0` for a file's or stream's codec, size and duration, and a GStreamer
//! decode of an MP4's frames to see what they show.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// What gst-discoverer says of a file or URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    /// The video codec's description, e.g. `H.264 (Constrained Baseline Profile)`.
    pub video: String,
    pub width: u32,
    pub height: u32,
    pub duration: Option<Duration>,
    /// The container, e.g. `Quicktime` for MP4.
    pub container: Option<String>,
}

/// Runs `gst-discoverer-1.0` on `uri` (a path or a URL) and reads its report.
pub fn discover(uri: &str) -> anyhow::Result<Discovered> {
    let uri = if uri.contains("://") {
        uri.to_owned()
    } else {
        format!(
            "file://{}",
            std::fs::canonicalize(uri)
                .with_context(|| format!("{uri} does not exist"))?
                .display()
        )
    };
    let output = Command::new("gst-discoverer-1.0")
        .args(["-t", "20", &uri])
        .output()
        .context("running gst-discoverer-1.0 (package gstreamer1.0-plugins-base-apps)")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let field = |name: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
    };
    let video = text
        .lines()
        .map(str::trim)
        .find_map(|line| {
            line.split_once("video #")
                .and_then(|(_, rest)| rest.split_once(": "))
        })
        .map(|(_, codec)| codec.to_owned());
    let Some(video) = video else {
        bail!("gst-discoverer found no video in {uri}:\n{text}");
    };
    let duration = field("Duration:").and_then(|d| parse_duration(&d));
    let container = text
        .lines()
        .map(str::trim)
        .find_map(|line| {
            line.strip_prefix("container #0: ")
                .or_else(|| line.strip_prefix("container: "))
        })
        .map(str::to_owned);
    Ok(Discovered {
        video,
        width: field("Width:").and_then(|w| w.parse().ok()).unwrap_or(0),
        height: field("Height:").and_then(|h| h.parse().ok()).unwrap_or(0),
        duration,
        container,
    })
}

/// `0:00:05.123456789` as a duration; gst-discoverer's "99:99:99.999999999" (live) is None.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut parts = text.split(':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    if minutes >= 60 {
        return None;
    }
    Some(Duration::from_secs(hours * 3600 + minutes * 60) + Duration::from_secs_f64(seconds))
}

/// The mean brightness (0–255) of every frame of a video file (MP4 or MPEG-TS), decoded by
/// GStreamer's own demuxers and decoders.
pub fn frame_brightness(path: &Path) -> anyhow::Result<Vec<f64>> {
    gst::init()?;
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false",
        path.display()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|sink| sink.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let mut means = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().context("a sample without a buffer")?;
        let map = buffer.map_readable()?;
        let bytes = map.as_slice();
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        means.push(sum as f64 / bytes.len().max(1) as f64);
    }
    let bus = pipeline.bus().context("no bus")?;
    let error = bus
        .pop_filtered(&[gst::MessageType::Error])
        .map(|message| format!("{message:?}"));
    pipeline.set_state(gst::State::Null)?;
    if let Some(error) = error {
        bail!("decoding {}: {error}", path.display());
    }
    Ok(means)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_gst_discoverer_prints_them() {
        assert_eq!(
            parse_duration("0:00:05.500000000"),
            Some(Duration::from_millis(5_500))
        );
        assert_eq!(parse_duration("99:99:99.999999999"), None);
    }
}

//! Writing buffered frames out: an MP4 clip (no re-encoding: the camera's H.264 or H.265
//! frames go into the MP4 as they are) and a JPEG snapshot (the one place frames are decoded).
//!
//! Both are short GStreamer pipelines fed from an `appsrc`, run on a blocking thread. A clip
//! is written to `NAME.part`, synced, then renamed, so a crash or a full disk never leaves a
//! truncated file under the final name.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::feed::{Codec, FeedError, Sample, bus_error};

/// Why a clip or snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no video: the camera sent no frames for this time")]
    NoFrames,
    #[error("writing {what}: {source}")]
    Pipeline {
        what: &'static str,
        #[source]
        source: FeedError,
    },
    #[error("writing {what} timed out")]
    TimedOut { what: &'static str },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long writing one clip or snapshot may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `frames` (from a key frame on) to an MP4 at `path`; returns its length in time.
pub fn write_mp4(codec: Codec, frames: &[Sample], path: &Path) -> Result<Duration, MediaError> {
    let first = frames.first().ok_or(MediaError::NoFrames)?;
    let what = "the clip";
    let partial = path.with_extension("mp4.part");
    let pipeline = gst::Pipeline::new();
    let build = || -> Result<gst_app::AppSrc, gst::glib::BoolError> {
        let source = appsrc(first)?;
        let parse = gst::ElementFactory::make(codec.parser()).build()?;
        let mux = gst::ElementFactory::make("mp4mux")
            .property("faststart", true)
            .build()?;
        let sink = gst::ElementFactory::make("filesink")
            .property("location", partial.to_string_lossy().to_string())
            .build()?;
        let elements = [source.upcast_ref(), &parse, &mux, &sink];
        pipeline.add_many(elements)?;
        gst::Element::link_many(elements)?;
        Ok(source)
    };
    let source = build().map_err(|error| pipeline_error(what, error))?;
    let duration = run(&pipeline, &source, frames, what)?;
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| file_error(path, source))?;
    Ok(duration)
}

fn file_error(path: &Path, source: std::io::Error) -> MediaError {
    MediaError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Decodes `frames` (a key frame and what follows) and encodes the last picture as a JPEG.
pub fn snapshot_jpeg(codec: Codec, frames: &[Sample]) -> Result<Vec<u8>, MediaError> {
    let first = frames.first().ok_or(MediaError::NoFrames)?;
    let what = "the snapshot";
    let pipeline = gst::Pipeline::new();
    // The newest picture, kept by the sink's callback (an appsink holding samples nobody
    // pulls would never finish its stream).
    let newest: Arc<Mutex<Option<gst::Sample>>> = Arc::default();
    let keep = Arc::clone(&newest);
    let build = || -> Result<gst_app::AppSrc, gst::glib::BoolError> {
        let source = appsrc(first)?;
        let parse = gst::ElementFactory::make(codec.parser()).build()?;
        let decode = gst::ElementFactory::make(codec.decoder()).build()?;
        let convert = gst::ElementFactory::make("videoconvert").build()?;
        let jpeg = gst::ElementFactory::make("jpegenc")
            .property("quality", 85)
            .build()?;
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        *keep.lock().unwrap_or_else(PoisonError::into_inner) = Some(sample);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build();
        let elements = [
            source.upcast_ref(),
            &parse,
            &decode,
            &convert,
            &jpeg,
            sink.upcast_ref(),
        ];
        pipeline.add_many(elements)?;
        gst::Element::link_many(elements)?;
        Ok(source)
    };
    let source = build().map_err(|error| pipeline_error(what, error))?;
    let _ = run(&pipeline, &source, frames, what)?;
    let last = newest.lock().unwrap_or_else(PoisonError::into_inner).take();
    let buffer = last
        .as_ref()
        .and_then(|sample| sample.buffer())
        .ok_or(MediaError::NoFrames)?;
    let map = buffer
        .map_readable()
        .map_err(|error| pipeline_error(what, error))?;
    Ok(map.as_slice().to_vec())
}

/// Writes a snapshot to `path` (through a `.part` file, as clips).
pub fn write_jpeg(jpeg: &[u8], path: &Path) -> Result<(), MediaError> {
    let partial = path.with_extension("jpg.part");
    std::fs::File::create(&partial)
        .and_then(|mut file| {
            file.write_all(jpeg)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| file_error(path, source))
}

fn appsrc(first: &Sample) -> Result<gst_app::AppSrc, gst::glib::BoolError> {
    let caps = first
        .caps_owned()
        .ok_or_else(|| gst::glib::bool_error!("the frames carry no caps"))?;
    Ok(gst_app::AppSrc::builder()
        .format(gst::Format::Time)
        .is_live(false)
        .block(true)
        .max_bytes(64 * 1024 * 1024)
        .caps(&caps)
        .build())
}

/// Pushes the frames with timestamps starting at zero, ends the stream and waits for the
/// pipeline to finish; returns the time the frames span.
fn run(
    pipeline: &gst::Pipeline,
    source: &gst_app::AppSrc,
    frames: &[Sample],
    what: &'static str,
) -> Result<Duration, MediaError> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|error| pipeline_error(what, error))?;
    let origin = frames
        .iter()
        .filter_map(|sample| {
            let buffer = sample.buffer()?;
            buffer.dts().into_iter().chain(buffer.pts()).min()
        })
        .min()
        .unwrap_or(gst::ClockTime::ZERO);
    let mut end = gst::ClockTime::ZERO;
    for sample in frames {
        let Some(buffer) = sample.buffer_owned() else {
            continue;
        };
        let mut buffer = buffer.copy();
        {
            let buffer = buffer.make_mut();
            let pts = buffer.pts().map(|pts| pts.saturating_sub(origin));
            let dts = buffer.dts().map(|dts| dts.saturating_sub(origin));
            buffer.set_pts(pts);
            buffer.set_dts(dts);
            if let Some(pts) = pts {
                end = end.max(pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO));
            }
        }
        if source.push_buffer(buffer).is_err() {
            // The pipeline failed: its bus says why, below.
            break;
        }
    }
    let _ = source.end_of_stream();
    let result = wait(pipeline, what);
    let _ = pipeline.set_state(gst::State::Null);
    result.map(|()| Duration::from_nanos(end.nseconds()))
}

fn wait(pipeline: &gst::Pipeline, what: &'static str) -> Result<(), MediaError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| pipeline_error(what, "the pipeline has no bus"))?;
    let timeout = gst::ClockTime::from_nseconds(WRITE_TIMEOUT.as_nanos() as u64);
    match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        None => Err(MediaError::TimedOut { what }),
        Some(message) => match bus_error(&message) {
            Some(FeedError::EndOfStream) | None => Ok(()),
            Some(source) => Err(MediaError::Pipeline { what, source }),
        },
    }
}

fn pipeline_error(what: &'static str, error: impl std::fmt::Display) -> MediaError {
    MediaError::Pipeline {
        what,
        source: FeedError::Build(error.to_string()),
    }
}

//! One camera's feed: the GStreamer pipeline that pulls its RTSP stream, fills its
//! [pre-event buffer](super::buffer) and, while someone watches, its
//! [live view](super::llhls).
//!
//! ```text
//! rtspsrc ─► rtph26Xdepay ─► h26Xparse ─► (avc/hvc1, whole frames) ─► queue ─► appsink ─┬─► PreEventBuffer
//!    │                                                                                   └─► LiveStream (if watched)
//!    └─ audio and other pads ─► fakesink
//! ```
//!
//! Nothing is decoded or re-encoded: frames are kept as the camera sent them (H.264 or H.265).
//! [`CameraFeed::play`] runs one connection and returns why it ended (the element and the
//! reason from GStreamer's bus, or "no frames for N s" from the stall watchdog); the camera's
//! supervisor reconnects with backoff. Clips and snapshots are written from the buffered
//! frames by [`super::media`], on blocking threads, never in the feed's streaming thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;

use super::buffer::{Collected, Frame, PreEventBuffer};
use super::config::RtspTransport;
use super::llhls::{LiveFrame, LiveStream};

/// Where and how to reach a camera.
#[derive(Clone)]
pub struct Source {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub transport: RtspTransport,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log.
        f.debug_struct("Source")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// The video codecs the agent records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    fn from_encoding(name: &str) -> Option<Self> {
        match name {
            "H264" => Some(Self::H264),
            "H265" => Some(Self::H265),
            _ => None,
        }
    }

    /// The element that makes whole frames with their parameters in the caps.
    pub fn parser(self) -> &'static str {
        match self {
            Self::H264 => "h264parse",
            Self::H265 => "h265parse",
        }
    }

    /// The software decoder (snapshots).
    pub fn decoder(self) -> &'static str {
        match self {
            Self::H264 => "avdec_h264",
            Self::H265 => "avdec_h265",
        }
    }

    fn depayloader(self) -> &'static str {
        match self {
            Self::H264 => "rtph264depay",
            Self::H265 => "rtph265depay",
        }
    }

    /// Caps of whole frames in the MP4 form (length-prefixed, parameters in codec_data).
    fn mp4_caps(self) -> gst::Caps {
        match self {
            Self::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
            Self::H265 => gst::Caps::builder("video/x-h265")
                .field("stream-format", "hvc1")
                .field("alignment", "au")
                .build(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::H264 => "H.264",
            Self::H265 => "H.265",
        }
    }
}

/// Why a connection to a camera ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FeedError {
    /// An element posted an error: which one, what, and GStreamer's details.
    #[error("{element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Pipeline {
        element: String,
        message: String,
        debug: Option<String>,
    },
    #[error("no frames for {0:#}: the camera stalled")]
    Stalled(SignedDuration),
    #[error("the camera ended its stream")]
    EndOfStream,
    #[error("the camera sends {0}; Gatehouse records H.264 and H.265 only")]
    UnsupportedCodec(String),
    #[error("cannot build the pipeline: {0}")]
    Build(String),
}

impl From<gst::glib::BoolError> for FeedError {
    fn from(error: gst::glib::BoolError) -> Self {
        Self::Build(error.to_string())
    }
}

/// A frame of the buffer: the encoded picture with its caps.
pub type Sample = gst::Sample;

/// What the feed shares with its streaming thread and with clip writers.
struct Shared {
    buffer: Mutex<PreEventBuffer<Sample>>,
    /// The current connection's number, and frames received in it.
    run: AtomicU64,
    frames: AtomicU64,
    codec: Mutex<Option<Codec>>,
    /// Clips completed by a frame (sent to whoever writes them).
    finished: mpsc::UnboundedSender<Collected<Sample>>,
}

/// One camera's buffer and pipeline.
#[derive(Clone)]
pub struct CameraFeed {
    name: String,
    shared: Arc<Shared>,
}

impl CameraFeed {
    /// A feed keeping `keep` of video (at most `max_bytes`); completed clips come out of the
    /// returned receiver.
    pub fn new(
        name: &str,
        keep: SignedDuration,
        max_bytes: usize,
    ) -> (Self, mpsc::UnboundedReceiver<Collected<Sample>>) {
        let (finished, clips) = mpsc::unbounded_channel();
        let feed = Self {
            name: name.to_owned(),
            shared: Arc::new(Shared {
                buffer: Mutex::new(PreEventBuffer::new(keep, max_bytes)),
                run: AtomicU64::new(0),
                frames: AtomicU64::new(0),
                codec: Mutex::new(None),
                finished,
            }),
        };
        (feed, clips)
    }

    /// Starts gathering clip `id` of `from..=to`; it comes out of the clip receiver.
    pub fn collect(&self, id: u64, from: Timestamp, to: Timestamp) {
        self.buffer().collect(id, from, to);
    }

    /// Ends clips whose camera sent nothing for `grace` past their end.
    pub fn expire(&self, now: Timestamp, grace: SignedDuration) {
        for clip in self.buffer().expire(now, grace) {
            let _ = self.shared.finished.send(clip);
        }
    }

    /// The frames from the newest key frame on, for a snapshot.
    pub fn latest_group(&self) -> Vec<Sample> {
        self.buffer().latest_group()
    }

    /// The codec of the current (or last) connection.
    pub fn codec(&self) -> Option<Codec> {
        *self
            .shared
            .codec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames received in the current connection.
    pub fn frames(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, PreEventBuffer<Sample>> {
        self.shared
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one connection until it fails; `online` is called once at the first frame.
    pub async fn play(
        &self,
        source: &Source,
        live: Option<&Arc<LiveStream>>,
        stall_timeout: SignedDuration,
        online: impl FnOnce(Codec),
    ) -> FeedError {
        let run = self.shared.run.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.frames.store(0, Ordering::Relaxed);
        let pipeline = match self.build(source, live, run) {
            Ok(pipeline) => pipeline,
            Err(error) => return error,
        };
        let pipeline = Stopping(pipeline);
        let error = self.watch(&pipeline.0, stall_timeout, online).await;
        // Stopping a pipeline blocks until its threads are done: off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(pipeline)).await;
        error
    }

    async fn watch(
        &self,
        pipeline: &gst::Pipeline,
        stall_timeout: SignedDuration,
        online: impl FnOnce(Codec),
    ) -> FeedError {
        let Some(bus) = pipeline.bus() else {
            return FeedError::Build("the pipeline has no bus".into());
        };
        let mut messages = bus.stream();
        if let Err(error) = pipeline.set_state(gst::State::Playing) {
            return FeedError::Build(format!("cannot start the pipeline: {error}"));
        }
        let stall = Duration::try_from(stall_timeout).unwrap_or(Duration::from_secs(5));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut online = Some(online);
        let (mut seen, mut last_progress) = (0, tokio::time::Instant::now());
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        if let Some(error) = bus_error(&message) {
                            return error;
                        }
                    }
                    None => return FeedError::EndOfStream,
                },
                _ = tick.tick() => {
                    let frames = self.frames();
                    if frames != seen {
                        seen = frames;
                        last_progress = tokio::time::Instant::now();
                        if let (Some(online), Some(codec)) = (online.take_if(|_| frames > 0), self.codec()) {
                            online(codec);
                        }
                    } else if last_progress.elapsed() >= stall {
                        return FeedError::Stalled(stall_timeout);
                    }
                }
            }
        }
    }

    fn build(
        &self,
        source: &Source,
        live: Option<&Arc<LiveStream>>,
        run: u64,
    ) -> Result<gst::Pipeline, FeedError> {
        let pipeline = gst::Pipeline::with_name(&format!("camera-{}", self.name));
        let rtspsrc = gst::ElementFactory::make("rtspsrc")
            .name("rtspsrc")
            .property("location", &source.url)
            .property("latency", 200_u32)
            .build()?;
        rtspsrc.set_property_from_str(
            "protocols",
            match source.transport {
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
            },
        );
        if let Some(user) = &source.username {
            rtspsrc.set_property("user-id", user);
        }
        if let Some(password) = &source.password {
            rtspsrc.set_property("user-pw", password);
        }
        pipeline.add(&rtspsrc)?;
        let feed = self.clone();
        let live = live.cloned();
        let weak = pipeline.downgrade();
        rtspsrc.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if let Err(error) = feed.link_pad(&pipeline, pad, live.as_ref(), run) {
                // Reported on the bus, so the supervisor sees it with the others.
                let message =
                    gst::message::Error::builder(gst::CoreError::Negotiation, &error.to_string())
                        .src(&pipeline)
                        .build();
                let _ = pipeline.post_message(message);
            }
        });
        Ok(pipeline)
    }

    /// Links one of rtspsrc's pads: the video to the buffer (and live view), anything else
    /// to a fakesink.
    fn link_pad(
        &self,
        pipeline: &gst::Pipeline,
        pad: &gst::Pad,
        live: Option<&Arc<LiveStream>>,
        run: u64,
    ) -> Result<(), FeedError> {
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let structure = caps
            .as_ref()
            .and_then(|caps| caps.structure(0).map(ToOwned::to_owned));
        let media = structure
            .as_ref()
            .and_then(|s| s.get::<&str>("media").ok())
            .unwrap_or_default()
            .to_owned();
        let encoding = structure
            .as_ref()
            .and_then(|s| s.get::<&str>("encoding-name").ok())
            .unwrap_or_default()
            .to_owned();
        if media != "video" || self.codec_already_linked(pipeline) {
            let sink = gst::ElementFactory::make("fakesink")
                .property("async", false)
                .build()?;
            pipeline.add(&sink)?;
            sink.sync_state_with_parent()?;
            pad.link(
                &sink
                    .static_pad("sink")
                    .ok_or_else(|| FeedError::Build("fakesink has no sink pad".into()))?,
            )
            .map_err(|error| {
                FeedError::Build(format!("linking {media} to a fakesink: {error:?}"))
            })?;
            return Ok(());
        }
        let codec = Codec::from_encoding(&encoding)
            .ok_or_else(|| FeedError::UnsupportedCodec(encoding.clone()))?;
        *self
            .shared
            .codec
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(codec);

        let depay = gst::ElementFactory::make(codec.depayloader()).build()?;
        let parse = gst::ElementFactory::make(codec.parser()).build()?;
        let mp4 = gst::ElementFactory::make("capsfilter")
            .property("caps", codec.mp4_caps())
            .build()?;
        let queue = gst::ElementFactory::make("queue").name("video").build()?;
        let sink = self.appsink(run, codec, live.cloned());
        let chain = [depay, parse, mp4, queue, sink.upcast()];
        pipeline.add_many(&chain)?;
        gst::Element::link_many(&chain)?;
        for element in &chain {
            element.sync_state_with_parent()?;
        }
        let depay_sink = chain[0]
            .static_pad("sink")
            .ok_or_else(|| FeedError::Build("the depayloader has no sink pad".into()))?;
        pad.link(&depay_sink).map_err(|error| {
            FeedError::Build(format!("linking the {} stream: {error:?}", codec.name()))
        })?;
        Ok(())
    }

    /// Whether a video pad was linked already (a second video stream is not recorded).
    fn codec_already_linked(&self, pipeline: &gst::Pipeline) -> bool {
        pipeline.by_name("video").is_some()
    }

    /// The frames' end: the pre-event buffer, and the live view while someone watches.
    fn appsink(&self, run: u64, codec: Codec, live: Option<Arc<LiveStream>>) -> gst_app::AppSink {
        let shared = Arc::clone(&self.shared);
        gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(200)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let (keyframe, bytes) = match sample.buffer() {
                            Some(buffer) => (
                                !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                                buffer.size(),
                            ),
                            None => return Ok(gst::FlowSuccess::Ok),
                        };
                        if let Some(live) = &live {
                            let frame = LiveFrame {
                                sample: &sample,
                                codec,
                                keyframe,
                            };
                            live.offer(&frame, run);
                        }
                        let frame = Frame {
                            at: Timestamp::now(),
                            keyframe,
                            bytes,
                            run,
                            data: sample,
                        };
                        let finished = shared
                            .buffer
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(frame);
                        shared.frames.fetch_add(1, Ordering::Relaxed);
                        for clip in finished {
                            let _ = shared.finished.send(clip);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build()
    }
}

/// A pipeline that is stopped when dropped, also when the task playing it is cancelled: a
/// pipeline disposed of while playing aborts the process.
struct Stopping(gst::Pipeline);

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// The error a bus message reports, if it is one: element, message and details.
pub fn bus_error(message: &gst::Message) -> Option<FeedError> {
    match message.view() {
        gst::MessageView::Error(error) => Some(FeedError::Pipeline {
            element: error
                .src()
                .map_or_else(|| "pipeline".to_owned(), |src| src.name().to_string()),
            message: error.error().to_string(),
            debug: error.debug().map(|debug| debug.to_string()),
        }),
        gst::MessageView::Eos(_) => Some(FeedError::EndOfStream),
        _ => None,
    }
}

//! Live view as Low-Latency HLS (RFC 8216bis), packaged in memory from the frames the camera's
//! feed already has.
//!
//! While someone watches ([`LiveStream::touch`]), each frame goes into a partial segment of
//! about [`PART_TARGET`]; a partial segment is a fragmented-MP4 fragment ([`super::fmp4`]) a
//! browser can play as soon as it is listed. Segments start at key frames, at least
//! [`SEGMENT_MIN`] apart. A few segments are kept, in memory only: live view never writes to
//! the appliance's flash, and a camera costs at most [`MAX_BYTES`] while watched, nothing
//! otherwise.
//!
//! Clients block on the playlist (`_HLS_msn`, `_HLS_part`) and on the hinted next part
//! ([`LiveStream::wait_for`]) instead of polling, so a new part reaches them the moment it is
//! cut: glass-to-browser latency is the camera's, plus one part, plus the player's hold-back.
//!
//! When nobody asked for [`LINGER`], frames are dropped before packaging and the segments are
//! let go; the next viewer starts at the next key frame. A new connection to the camera (its
//! codec or size may change) starts a new initialisation segment, with a discontinuity.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::feed::Codec;
use super::fmp4::{self, FrameData, TIMESCALE, Track};

/// The longest partial segment, in ticks of [`TIMESCALE`] (200 ms).
pub const PART_TARGET: u64 = TIMESCALE as u64 / 5;
/// Segments are cut at the first key frame this long after their start.
pub const SEGMENT_MIN: u64 = TIMESCALE as u64;
/// Segments kept (the newest may still be growing).
const SEGMENTS_KEPT: usize = 4;
/// Most bytes of segments kept per camera; the oldest go first (one always stays).
pub const MAX_BYTES: usize = 24 * 1024 * 1024;
/// How long live view is packaged after the last request.
pub const LINGER: SignedDuration = SignedDuration::from_secs(30);
/// Frame duration used when a frame has no successor's time to go by (30 frames/s).
const FALLBACK_DURATION: u64 = TIMESCALE as u64 / 30;

/// A frame as the feed hands it over.
pub struct LiveFrame<'a> {
    pub sample: &'a gst::Sample,
    pub codec: Codec,
    pub keyframe: bool,
}

/// One camera's live view: packaged frames and who waits for them.
pub struct LiveStream {
    state: Mutex<State>,
    /// Bumped at each new part (or reset); requests wait on it.
    changed: watch::Sender<u64>,
}

/// A request's answer that is not there yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    #[error("no live video yet: the camera sent no key frame in time (it may be offline)")]
    NotReady,
    #[error("media sequence {0} is too far ahead of the live edge")]
    TooFarAhead(u64),
    #[error("no such part of the live view (it is older than the playlist)")]
    Gone,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Any playlist (at least one part).
    Playlist,
    /// The playlist once it holds part `part` of segment `msn` (or later); a whole segment
    /// when `part` is `None`.
    Blocking {
        msn: u64,
        part: Option<usize>,
    },
    Init(u64),
    Part {
        msn: u64,
        part: usize,
    },
    Segment(u64),
}

#[derive(Default)]
struct State {
    /// Until when frames are packaged (Unix milliseconds).
    demanded_until_ms: i64,
    track: Option<TrackState>,
    /// The newest frame, kept until the next one tells its duration.
    pending: Option<Pending>,
    /// Frames of the part being cut, with their durations.
    part: Vec<(Pending, u64)>,
    segments: VecDeque<Segment>,
    /// Media sequence number of the next segment.
    next_msn: u64,
    /// Initialisation segments made so far (the current one's version).
    init_version: u64,
    /// Discontinuities dropped off the front of the playlist.
    discontinuity_sequence: u64,
    /// Whether the next segment starts a new initialisation segment after others.
    discontinuity: bool,
    fragment_sequence: u32,
    longest_segment: u64,
}

struct TrackState {
    track: Track,
    codecs: String,
    init: Bytes,
    version: u64,
    /// The first frame's decoding time (the timeline starts there).
    origin: u64,
    run: u64,
}

struct Pending {
    dts: u64,
    pts: u64,
    keyframe: bool,
    /// When the agent received it.
    at: Timestamp,
    data: gst::MappedBuffer<gst::buffer::Readable>,
}

struct Segment {
    msn: u64,
    init_version: u64,
    /// Whether a new initialisation segment starts here.
    discontinuity: bool,
    started_at: Timestamp,
    parts: Vec<Part>,
    /// Ticks, summed over its parts.
    duration: u64,
    complete: bool,
}

#[derive(Clone)]
struct Part {
    bytes: Bytes,
    duration: u64,
    independent: bool,
}

impl Default for LiveStream {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl LiveStream {
    /// A viewer asked: package frames for [`LINGER`] from now.
    pub fn touch(&self) {
        let until = Timestamp::now().as_millisecond() + LINGER.as_millis() as i64;
        self.state().demanded_until_ms = until;
    }

    /// A frame of connection `run` (from the feed's streaming thread). Cheap when nobody
    /// watches.
    pub fn offer(&self, frame: &LiveFrame<'_>, run: u64) {
        let mut state = self.state();
        if state.demanded_until_ms < Timestamp::now().as_millisecond() {
            if state.track.is_some() || !state.segments.is_empty() {
                state.let_go();
                drop(state);
                self.changed.send_modify(|n| *n += 1);
            }
            return;
        }
        if state.push(frame, run) {
            drop(state);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Waits (at most `timeout`) until `wanted` can be answered, then answers it with
    /// `answer`; the playlist is rendered with `query` appended to each URI.
    pub async fn wait_for<T>(
        &self,
        wanted: Wanted,
        timeout: Duration,
        answer: impl Fn(&Ready<'_>) -> T,
    ) -> Result<T, LiveError> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let state = self.state();
                if let Some(ready) = state.ready(wanted)? {
                    return Ok(answer(&ready));
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(LiveError::NotReady);
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An answer, borrowed from the stream while its lock is held.
pub enum Ready<'a> {
    Playlist(Playlist<'a>),
    Bytes(Bytes),
}

/// The playlists of the current state.
pub struct Playlist<'a> {
    state: &'a State,
}

impl Playlist<'_> {
    /// The multivariant playlist: the one media playlist, with its codec and size.
    pub fn multivariant(&self, media_uri: &str) -> String {
        let Some(track) = &self.state.track else {
            return String::new();
        };
        let bits: u64 = self
            .state
            .segments
            .iter()
            .flat_map(|segment| &segment.parts)
            .map(|part| part.bytes.len() as u64 * 8)
            .sum();
        let seconds = self
            .state
            .segments
            .iter()
            .map(|segment| segment.duration)
            .sum::<u64>()
            .max(1) as f64
            / f64::from(TIMESCALE);
        format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\",RESOLUTION={}x{}\n{media_uri}\n",
            (bits as f64 / seconds).round() as u64,
            track.codecs,
            track.track.width,
            track.track.height,
        )
    }

    /// The media playlist; `query` (the URL's signature) is appended to every URI.
    pub fn media(&self, query: &str) -> String {
        let state = self.state;
        let target = state.longest_segment.div_ceil(u64::from(TIMESCALE)).max(1);
        let part_target = PART_TARGET as f64 / f64::from(TIMESCALE);
        let first = state.segments.front();
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
             #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n\
             #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            part_target * 3.0,
            first.map_or(state.next_msn, |segment| segment.msn),
            state.discontinuity_sequence,
        );
        let mut map = None;
        for segment in &state.segments {
            if segment.discontinuity && map.is_some() {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(segment.init_version) {
                map = Some(segment.init_version);
                let _ = writeln!(
                    out,
                    "#EXT-X-MAP:URI=\"init-{}.mp4?{query}\"",
                    segment.init_version
                );
            }
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                segment.started_at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            );
            for (index, part) in segment.parts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"part-{}-{index}.mp4?{query}\"{}",
                    part.duration as f64 / f64::from(TIMESCALE),
                    segment.msn,
                    if part.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    }
                );
            }
            if segment.complete {
                let _ = write!(
                    out,
                    "#EXTINF:{:.5},\nsegment-{}.mp4?{query}\n",
                    segment.duration as f64 / f64::from(TIMESCALE),
                    segment.msn
                );
            }
        }
        let (msn, part) = state.next_part();
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{msn}-{part}.mp4?{query}\""
        );
        out
    }
}

impl State {
    /// Adds a frame; returns whether a part was cut (or the stream reset).
    fn push(&mut self, frame: &LiveFrame<'_>, run: u64) -> bool {
        let Some(buffer) = frame.sample.buffer() else {
            return false;
        };
        let Some(dts) = buffer.dts_or_pts().map(|t| to_ticks(t.nseconds())) else {
            return false;
        };
        let pts = buffer.pts().map_or(dts, |t| to_ticks(t.nseconds()));
        let mut changed = false;
        let same_track = self
            .track
            .as_ref()
            .is_some_and(|track| track.run == run && track.track.codec == frame.codec);
        if !same_track {
            // The first frame, or a new connection: start over at a key frame.
            if !frame.keyframe {
                return false;
            }
            let Some(track) = track_of(frame) else {
                return false;
            };
            changed = self.start(track, dts, run);
        }
        let Ok(data) = buffer.copy().into_mapped_buffer_readable() else {
            return changed;
        };
        let next = Pending {
            dts,
            pts,
            keyframe: frame.keyframe,
            at: Timestamp::now(),
            data,
        };
        if let Some(previous) = self.pending.replace(next) {
            let duration = dts
                .checked_sub(previous.dts)
                .filter(|d| (1..=u64::from(TIMESCALE)).contains(d))
                .unwrap_or(FALLBACK_DURATION);
            changed |= self.add(previous, duration);
        }
        changed
    }

    /// A new track (first frame, or a new connection): a new initialisation segment.
    fn start(&mut self, track: Track, origin: u64, run: u64) -> bool {
        let had_segments = !self.segments.is_empty();
        self.finish_segment();
        self.pending = None;
        self.part.clear();
        self.init_version += 1;
        self.discontinuity = had_segments;
        self.track = Some(TrackState {
            init: Bytes::from(fmp4::init_segment(&track)),
            codecs: track.codecs().unwrap_or_default(),
            track,
            version: self.init_version,
            origin,
            run,
        });
        had_segments
    }

    /// Adds a frame whose duration is now known; cuts parts and segments around it.
    /// Timestamps rounded to ticks fall a tick short now and then: half a frame is the
    /// slack when a length is reached.
    fn add(&mut self, frame: Pending, duration: u64) -> bool {
        let mut cut = false;
        if frame.keyframe {
            cut |= self.cut_part();
            if self.open_duration() + duration / 2 >= SEGMENT_MIN {
                self.finish_segment();
            }
        } else if self.part_duration() + duration > PART_TARGET {
            cut |= self.cut_part();
        }
        self.part.push((frame, duration));
        if self.part_duration() + duration / 2 >= PART_TARGET {
            cut |= self.cut_part();
        }
        cut
    }

    fn part_duration(&self) -> u64 {
        self.part.iter().map(|(_, duration)| duration).sum()
    }

    /// Ticks in the segment still growing (0 if none).
    fn open_duration(&self) -> u64 {
        self.segments
            .back()
            .filter(|segment| !segment.complete)
            .map_or(0, |segment| segment.duration)
    }

    /// Turns the frames gathered into a part of the growing segment (opening one if needed).
    fn cut_part(&mut self) -> bool {
        let Some(track) = &self.track else {
            return false;
        };
        let Some(((first, _), _)) = self.part.split_first() else {
            return false;
        };
        let decode_time = first.dts.saturating_sub(track.origin);
        let (independent, first_at) = (first.keyframe, first.at);
        let frames: Vec<FrameData<'_>> = self
            .part
            .iter()
            .map(|(frame, duration)| FrameData {
                duration: u32::try_from(*duration).unwrap_or(u32::MAX),
                composition_offset: i32::try_from(frame.pts as i64 - frame.dts as i64).unwrap_or(0),
                keyframe: frame.keyframe,
                data: frame.data.as_slice(),
            })
            .collect();
        self.fragment_sequence = self.fragment_sequence.wrapping_add(1);
        let part = Part {
            bytes: Bytes::from(fmp4::fragment(self.fragment_sequence, decode_time, &frames)),
            duration: self.part_duration(),
            independent,
        };
        self.part.clear();
        if self.segments.back().is_none_or(|segment| segment.complete) {
            let version = track.version;
            self.segments.push_back(Segment {
                msn: self.next_msn,
                init_version: version,
                discontinuity: std::mem::take(&mut self.discontinuity),
                started_at: first_at,
                parts: Vec::new(),
                duration: 0,
                complete: false,
            });
            self.next_msn += 1;
        }
        if let Some(segment) = self.segments.back_mut() {
            segment.duration += part.duration;
            segment.parts.push(part);
        }
        self.trim();
        true
    }

    /// Completes the growing segment, if any.
    fn finish_segment(&mut self) {
        if let Some(segment) = self.segments.back_mut().filter(|s| !s.complete) {
            segment.complete = true;
            self.longest_segment = self.longest_segment.max(segment.duration);
        }
    }

    /// Drops the oldest segments beyond [`SEGMENTS_KEPT`] or [`MAX_BYTES`].
    fn trim(&mut self) {
        let bytes = |segments: &VecDeque<Segment>| -> usize {
            segments
                .iter()
                .flat_map(|segment| &segment.parts)
                .map(|part| part.bytes.len())
                .sum()
        };
        while self.segments.len() > 1
            && (self.segments.len() > SEGMENTS_KEPT || bytes(&self.segments) > MAX_BYTES)
        {
            self.segments.pop_front();
            // The new first segment's discontinuity is no longer listed: count it instead.
            if self.segments.front().is_some_and(|s| s.discontinuity) {
                self.discontinuity_sequence += 1;
            }
        }
    }

    /// Nobody watches: let go of everything (numbering goes on).
    fn let_go(&mut self) {
        self.track = None;
        self.pending = None;
        self.part.clear();
        self.segments.clear();
        self.discontinuity = false;
    }

    /// The part after the newest: (segment, index).
    fn next_part(&self) -> (u64, usize) {
        match self.segments.back() {
            Some(segment) if !segment.complete => (segment.msn, segment.parts.len()),
            _ => (self.next_msn, 0),
        }
    }

    /// The answer to `wanted` if it is there; `Ok(None)` to wait for it.
    fn ready(&self, wanted: Wanted) -> Result<Option<Ready<'_>>, LiveError> {
        let (Some(track), Some(newest)) = (&self.track, self.segments.back()) else {
            return Ok(None);
        };
        let oldest = self.segments.front().map_or(newest.msn, |s| s.msn);
        let find = |msn: u64| -> Result<Option<&Segment>, LiveError> {
            if msn < oldest {
                return Err(LiveError::Gone);
            }
            if msn > newest.msn + 2 {
                return Err(LiveError::TooFarAhead(msn));
            }
            Ok(self.segments.iter().find(|s| s.msn == msn))
        };
        let playlist = || Some(Ready::Playlist(Playlist { state: self }));
        Ok(match wanted {
            Wanted::Playlist => playlist(),
            Wanted::Blocking { msn, part } => {
                if msn < oldest || newest.msn > msn {
                    return Ok(playlist());
                }
                let there = find(msn)?.is_some_and(|segment| match part {
                    Some(part) => segment.parts.len() > part || segment.complete,
                    None => segment.complete,
                });
                if there { playlist() } else { None }
            }
            Wanted::Init(version) if version == track.version => {
                Some(Ready::Bytes(track.init.clone()))
            }
            Wanted::Init(_) => return Err(LiveError::Gone),
            Wanted::Part { msn, part } => match find(msn)? {
                Some(segment) => match segment.parts.get(part) {
                    Some(part) => Some(Ready::Bytes(part.bytes.clone())),
                    None if segment.complete => return Err(LiveError::Gone),
                    None => None,
                },
                None => None,
            },
            Wanted::Segment(msn) => match find(msn)? {
                Some(segment) if segment.complete => {
                    let bytes: Vec<u8> = segment
                        .parts
                        .iter()
                        .flat_map(|part| part.bytes.iter().copied())
                        .collect();
                    Some(Ready::Bytes(Bytes::from(bytes)))
                }
                _ => None,
            },
        })
    }
}

/// Ticks of [`TIMESCALE`] in `nanoseconds`.
fn to_ticks(nanoseconds: u64) -> u64 {
    (u128::from(nanoseconds) * u128::from(TIMESCALE) / 1_000_000_000) as u64
}

/// The track a key frame's caps describe.
fn track_of(frame: &LiveFrame<'_>) -> Option<Track> {
    let caps = frame.sample.caps()?;
    let structure = caps.structure(0)?;
    let codec_data = structure.get::<gst::Buffer>("codec_data").ok()?;
    let codec_data = codec_data.map_readable().ok()?.as_slice().to_vec();
    Some(Track {
        codec: frame.codec,
        codec_data,
        width: u16::try_from(structure.get::<i32>("width").ok()?).ok()?,
        height: u16::try_from(structure.get::<i32>("height").ok()?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    const FRAME: u64 = 33_333_333; // nanoseconds at 30 frames/s

    /// A frame `n` of a 30 frames/s camera with a key frame every `gop` frames.
    fn sample(n: u64, gop: u64, width: i32) -> gst::Sample {
        let mut buffer = gst::Buffer::from_slice(vec![n as u8; 100]);
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_dts(gst::ClockTime::from_nseconds(n * FRAME));
            buffer.set_pts(gst::ClockTime::from_nseconds(n * FRAME));
            if !n.is_multiple_of(gop) {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        let caps = gst::Caps::builder("video/x-h264")
            .field("width", width)
            .field("height", 720_i32)
            .field(
                "codec_data",
                gst::Buffer::from_slice(vec![1_u8, 0x64, 0, 0x1f, 0xff, 0xe1]),
            )
            .build();
        gst::Sample::builder().buffer(&buffer).caps(&caps).build()
    }

    fn offer(live: &LiveStream, frames: std::ops::Range<u64>, gop: u64, run: u64) {
        for n in frames {
            let sample = sample(n, gop, 1280);
            live.offer(
                &LiveFrame {
                    sample: &sample,
                    codec: Codec::H264,
                    keyframe: n.is_multiple_of(gop),
                },
                run,
            );
        }
    }

    async fn playlist(live: &LiveStream, wanted: Wanted) -> Result<String, LiveError> {
        live.wait_for(wanted, Duration::from_millis(200), |ready| match ready {
            Ready::Playlist(playlist) => playlist.media("sig=1"),
            Ready::Bytes(_) => String::new(),
        })
        .await
    }

    async fn bytes(live: &LiveStream, wanted: Wanted) -> Result<Bytes, LiveError> {
        live.wait_for(wanted, Duration::from_millis(200), |ready| match ready {
            Ready::Bytes(bytes) => bytes.clone(),
            Ready::Playlist(_) => Bytes::new(),
        })
        .await
    }

    #[tokio::test]
    async fn nothing_is_packaged_while_nobody_watches() -> anyhow::Result<()> {
        gst::init()?;
        let live = LiveStream::default();
        offer(&live, 0..60, 30, 1);
        assert_eq!(
            playlist(&live, Wanted::Playlist).await,
            Err(LiveError::NotReady)
        );
        assert!(live.state().segments.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn segments_start_at_key_frames_and_parts_stay_under_the_target() -> anyhow::Result<()> {
        gst::init()?;
        let live = LiveStream::default();
        live.touch();
        // Frames before the first key frame cannot be decoded: they are dropped.
        offer(&live, 25..100, 30, 1);
        let text = playlist(&live, Wanted::Playlist).await?;
        assert!(
            text.contains("#EXT-X-MAP:URI=\"init-1.mp4?sig=1\""),
            "{text}"
        );
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200"), "{text}");
        assert!(
            text.contains("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"),
            "{text}"
        );
        // Key frames at 30, 60 and 90: two whole segments of 30 frames, one growing.
        {
            let state = live.state();
            let segments: Vec<(u64, bool, usize)> = state
                .segments
                .iter()
                .map(|s| (s.msn, s.complete, s.parts.len()))
                .collect();
            assert_eq!(segments, [(0, true, 5), (1, true, 5), (2, false, 1)]);
            for segment in &state.segments {
                assert!(segment.parts[0].independent);
                assert!(segment.parts[1..].iter().all(|p| !p.independent));
                assert!(segment.parts.iter().all(|p| p.duration <= PART_TARGET));
            }
            assert!(
                text.contains("#EXTINF:1.00000,\nsegment-1.mp4?sig=1\n"),
                "{text}"
            );
            assert!(
                text.contains("URI=\"part-2-0.mp4?sig=1\",INDEPENDENT=YES"),
                "{text}"
            );
            assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-2-1.mp4?sig=1\"\n"));
        }
        // A whole segment is its parts, one after another.
        let whole = bytes(&live, Wanted::Segment(1)).await?;
        let mut parts = Vec::new();
        for index in 0..5 {
            let part = bytes(
                &live,
                Wanted::Part {
                    msn: 1,
                    part: index,
                },
            )
            .await?;
            parts.extend_from_slice(&part);
        }
        assert_eq!(whole.as_ref(), parts.as_slice());
        let init = bytes(&live, Wanted::Init(1)).await?;
        assert_eq!(&init[4..8], b"ftyp");
        Ok(())
    }

    #[tokio::test]
    async fn a_blocking_request_is_answered_when_its_part_is_cut() -> anyhow::Result<()> {
        gst::init()?;
        let live = std::sync::Arc::new(LiveStream::default());
        live.touch();
        offer(&live, 0..10, 30, 1);
        // Part 0 of segment 0 is cut (6 frames); part 1 is not.
        assert_eq!(
            bytes(&live, Wanted::Part { msn: 0, part: 1 }).await,
            Err(LiveError::NotReady)
        );
        let waiting = {
            let live = live.clone();
            tokio::spawn(async move {
                live.wait_for(
                    Wanted::Blocking {
                        msn: 0,
                        part: Some(1),
                    },
                    Duration::from_secs(5),
                    |ready| match ready {
                        Ready::Playlist(playlist) => playlist.media(""),
                        Ready::Bytes(_) => String::new(),
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        offer(&live, 10..14, 30, 1);
        let text = waiting.await??;
        assert!(text.contains("part-0-1.mp4"), "{text}");
        assert!(bytes(&live, Wanted::Part { msn: 0, part: 1 }).await.is_ok());
        // Far beyond the live edge is refused at once, not waited for.
        assert_eq!(
            playlist(&live, Wanted::Blocking { msn: 9, part: None }).await,
            Err(LiveError::TooFarAhead(9))
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_new_connection_starts_a_new_init_segment_after_a_discontinuity() -> anyhow::Result<()>
    {
        gst::init()?;
        let live = LiveStream::default();
        live.touch();
        offer(&live, 0..40, 30, 1);
        // The camera reconnects: its timestamps start again, its size changed.
        for n in 0..40 {
            let sample = sample(n, 30, 640);
            live.offer(
                &LiveFrame {
                    sample: &sample,
                    codec: Codec::H264,
                    keyframe: n.is_multiple_of(30),
                },
                2,
            );
        }
        let text = playlist(&live, Wanted::Playlist).await?;
        let first_map = text.find("init-1.mp4").context("no first map")?;
        let discontinuity = text
            .find("#EXT-X-DISCONTINUITY\n")
            .context("no discontinuity")?;
        let second_map = text.find("init-2.mp4").context("no second map")?;
        assert!(
            first_map < discontinuity && discontinuity < second_map,
            "{text}"
        );
        // Only the current initialisation segment is served.
        assert_eq!(bytes(&live, Wanted::Init(1)).await, Err(LiveError::Gone));
        let init = bytes(&live, Wanted::Init(2)).await?;
        let tkhd = init
            .windows(4)
            .position(|w| w == b"tkhd")
            .context("no tkhd")?;
        let width = u32::from_be_bytes(init[tkhd + 80..tkhd + 84].try_into()?);
        assert_eq!(width >> 16, 640);
        Ok(())
    }

    #[tokio::test]
    async fn old_segments_are_let_go_and_so_is_everything_when_nobody_watches() -> anyhow::Result<()>
    {
        gst::init()?;
        let live = LiveStream::default();
        live.touch();
        offer(&live, 0..300, 30, 1);
        {
            let state = live.state();
            assert_eq!(state.segments.len(), SEGMENTS_KEPT);
            assert_eq!(state.segments.front().map(|s| s.msn), Some(6));
        }
        assert_eq!(
            bytes(&live, Wanted::Part { msn: 2, part: 0 }).await,
            Err(LiveError::Gone)
        );
        // The viewer left LINGER ago: the next frame lets everything go.
        live.state().demanded_until_ms = 0;
        offer(&live, 300..301, 30, 1);
        assert!(live.state().segments.is_empty() && live.state().track.is_none());
        // The next viewer starts at the next key frame, numbering goes on.
        live.touch();
        offer(&live, 301..340, 30, 1);
        assert_eq!(live.state().segments.front().map(|s| s.msn), Some(10));
        assert_eq!(
            live.state().segments.front().map(|s| s.init_version),
            Some(2)
        );
        Ok(())
    }
}

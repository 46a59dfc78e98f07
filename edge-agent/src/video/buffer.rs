//! The pre-event buffer: each camera's last seconds of encoded video, in memory, so a clip can
//! start before the moment that triggered it.
//!
//! Frames are kept as the camera sent them (no decoding), grouped by key frame: the buffer
//! always starts at a key frame, and drops whole groups of pictures from the front once the
//! next group starts at least `keep` before the newest frame (so at least `keep` of video is
//! always there once the camera has sent that much), or once it holds more than `max_bytes`.
//!
//! A clip is a [`Collector`]: it starts with the buffered frames from the last key frame at or
//! before its `from` and takes every new frame until one comes after its `to`. Collectors hold
//! their own frames, so a clip longer than the buffer loses nothing. A camera that reconnects
//! starts a new *run* (its timestamps restart); a clip ends where its run ends.
//!
//! Generic over the frame payload (`gst::Buffer` in the agent, integers in tests): no I/O.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct Frame<T> {
    /// When the agent received it.
    pub at: Timestamp,
    /// A key frame (IDR): decoding can start here.
    pub keyframe: bool,
    pub bytes: usize,
    /// Which connection to the camera it came from: timestamps are comparable within a run.
    pub run: u64,
    pub data: T,
}

/// A clip being gathered.
#[derive(Debug)]
pub struct Collector<T> {
    pub id: u64,
    pub from: Timestamp,
    pub to: Timestamp,
    pub frames: Vec<Frame<T>>,
}

/// Why a clip stopped gathering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A frame after `to` arrived: the clip is complete.
    Complete,
    /// The camera reconnected: the clip ends where the old connection did.
    CameraDropped,
    /// No frame came for a while past `to` (a stalled or lost camera).
    TimedOut,
}

/// A finished collector, ready to be written.
#[derive(Debug)]
pub struct Collected<T> {
    pub collector: Collector<T>,
    pub ended: Ended,
}

/// One camera's buffer and its clips in progress.
#[derive(Debug)]
pub struct PreEventBuffer<T> {
    frames: VecDeque<Frame<T>>,
    bytes: usize,
    keep: SignedDuration,
    max_bytes: usize,
    collectors: Vec<Collector<T>>,
}

impl<T: Clone> PreEventBuffer<T> {
    pub fn new(keep: SignedDuration, max_bytes: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            keep,
            max_bytes,
            collectors: Vec::new(),
        }
    }

    /// Adds a frame; returns the clips it completed (or cut short, at a new run).
    pub fn push(&mut self, frame: Frame<T>) -> Vec<Collected<T>> {
        let mut finished = Vec::new();
        let mut index = 0;
        while index < self.collectors.len() {
            let collector = &mut self.collectors[index];
            let ended = if collector
                .frames
                .last()
                .is_some_and(|last| last.run != frame.run)
            {
                Some(Ended::CameraDropped)
            } else if frame.at > collector.to {
                Some(Ended::Complete)
            } else {
                if !collector.frames.is_empty() || frame.keyframe {
                    collector.frames.push(frame.clone());
                }
                None
            };
            match ended {
                Some(ended) => finished.push(Collected {
                    collector: self.collectors.swap_remove(index),
                    ended,
                }),
                None => index += 1,
            }
        }
        if self.frames.back().is_some_and(|last| last.run != frame.run) {
            self.frames.clear();
            self.bytes = 0;
        }
        if !self.frames.is_empty() || frame.keyframe {
            self.bytes += frame.bytes;
            self.frames.push_back(frame);
            self.prune();
        }
        finished
    }

    /// Drops whole groups of pictures from the front while the rest still covers `keep`, or
    /// while over `max_bytes` (keeping the newest group).
    fn prune(&mut self) {
        let Some(newest) = self.frames.back().map(|frame| frame.at) else {
            return;
        };
        let horizon = newest.checked_sub(self.keep).unwrap_or(Timestamp::MIN);
        loop {
            let Some(next_group) = self.frames.iter().skip(1).position(|f| f.keyframe) else {
                return;
            };
            let next_group = next_group + 1;
            let covers = self.frames[next_group].at <= horizon;
            if !(covers || self.bytes > self.max_bytes) {
                return;
            }
            for frame in self.frames.drain(..next_group) {
                self.bytes -= frame.bytes;
            }
        }
    }

    /// Starts gathering a clip of `from..=to` from the buffered frames on.
    pub fn collect(&mut self, id: u64, from: Timestamp, to: Timestamp) {
        let start = self
            .frames
            .iter()
            .rposition(|frame| frame.keyframe && frame.at <= from)
            .unwrap_or(0);
        self.collectors.push(Collector {
            id,
            from,
            to,
            frames: self.frames.iter().skip(start).cloned().collect(),
        });
    }

    /// Ends the clips whose `to` is more than `grace` before `now` (their camera sends
    /// nothing).
    pub fn expire(&mut self, now: Timestamp, grace: SignedDuration) -> Vec<Collected<T>> {
        let (expired, kept) = std::mem::take(&mut self.collectors).into_iter().partition(
            |collector: &Collector<T>| {
                collector
                    .to
                    .checked_add(grace)
                    .is_ok_and(|deadline| deadline < now)
            },
        );
        self.collectors = kept;
        expired
            .into_iter()
            .map(|collector| Collected {
                collector,
                ended: Ended::TimedOut,
            })
            .collect()
    }

    /// The frames from the newest key frame on: what a snapshot decodes.
    pub fn latest_group(&self) -> Vec<T> {
        let start = self
            .frames
            .iter()
            .rposition(|frame| frame.keyframe)
            .unwrap_or(0);
        self.frames
            .iter()
            .skip(start)
            .map(|frame| frame.data.clone())
            .collect()
    }

    /// The time span held: from the first frame to the newest.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        Some((self.frames.front()?.at, self.frames.back()?.at))
    }

    /// Bytes held in the buffer (not counting clips being gathered).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_millis(ms)
    }

    /// A 10 fps camera with a key frame every `gop` frames: frame `n` at n·100 ms.
    fn frame(n: u64, gop: u64, run: u64) -> Frame<u64> {
        Frame {
            at: at(n as i64 * 100),
            keyframe: n.is_multiple_of(gop),
            bytes: 1_000,
            run,
            data: n,
        }
    }

    fn fill(buffer: &mut PreEventBuffer<u64>, frames: std::ops::Range<u64>, gop: u64) {
        for n in frames {
            assert!(buffer.push(frame(n, gop, 1)).is_empty());
        }
    }

    #[test]
    fn the_buffer_starts_at_a_key_frame_and_covers_keep() {
        let mut buffer = PreEventBuffer::new(SignedDuration::from_secs(2), usize::MAX);
        // Frames before the first key frame cannot be decoded: not kept.
        assert!(buffer.push(frame(7, 10, 1)).is_empty());
        assert_eq!(buffer.span(), None);
        fill(&mut buffer, 10..75, 10);
        // Newest 7.4 s; keep 2 s → horizon 5.4 s: the group at 5.0 s is the first to keep.
        assert_eq!(buffer.span(), Some((at(5_000), at(7_400))));
        assert_eq!(buffer.latest_group(), (70..75).collect::<Vec<_>>());
    }

    #[test]
    fn the_byte_cap_drops_groups_but_keeps_the_newest() {
        let mut buffer = PreEventBuffer::new(SignedDuration::from_secs(60), 25_000);
        fill(&mut buffer, 0..45, 10);
        assert_eq!(buffer.span(), Some((at(2_000), at(4_400))));
        assert!(buffer.bytes() <= 25_000);
    }

    #[test]
    fn a_clip_starts_at_the_key_frame_before_from_and_ends_after_to() {
        let mut buffer = PreEventBuffer::new(SignedDuration::from_secs(3), usize::MAX);
        fill(&mut buffer, 0..50, 10);
        // Trigger at 4.9 s, 1.5 s before and 2 s after.
        buffer.collect(7, at(3_400), at(6_900));
        fill(&mut buffer, 50..70, 10);
        let done = buffer.push(frame(70, 10, 1));
        assert_eq!(done.len(), 1);
        let clip = &done[0];
        assert_eq!(clip.ended, Ended::Complete);
        assert_eq!(clip.collector.id, 7);
        let numbers: Vec<u64> = clip.collector.frames.iter().map(|f| f.data).collect();
        assert_eq!(numbers, (30..70).collect::<Vec<_>>());
    }

    #[test]
    fn a_clip_longer_than_the_buffer_loses_nothing() {
        let mut buffer = PreEventBuffer::new(SignedDuration::from_secs(1), usize::MAX);
        fill(&mut buffer, 0..20, 5);
        buffer.collect(1, at(1_000), at(10_000));
        fill(&mut buffer, 20..101, 5);
        let done = buffer.push(frame(101, 5, 1));
        let numbers: Vec<u64> = done[0].collector.frames.iter().map(|f| f.data).collect();
        assert_eq!(numbers, (10..101).collect::<Vec<_>>());
    }

    #[test]
    fn a_reconnect_ends_the_clip_and_empties_the_buffer() {
        let mut buffer = PreEventBuffer::new(SignedDuration::from_secs(5), usize::MAX);
        fill(&mut buffer, 0..20, 10);
        buffer.collect(1, at(500), at(9_000));
        let done = buffer.push(frame(30, 10, 2));
        assert_eq!(done[0].ended, Ended::CameraDropped);
        assert_eq!(done[0].collector.frames.len(), 20);
        assert_eq!(buffer.span(), Some((at(3_000), at(3_000))));
    }

    #[test]
    fn a_silent_camera_times_its_clips_out() {
        let mut buffer = PreEventBuffer::new(SignedDuration::from_secs(5), usize::MAX);
        fill(&mut buffer, 0..20, 10);
        buffer.collect(1, at(0), at(2_500));
        let grace = SignedDuration::from_secs(5);
        assert!(buffer.expire(at(7_000), grace).is_empty());
        let done = buffer.expire(at(7_600), grace);
        assert_eq!(done[0].ended, Ended::TimedOut);
        assert_eq!(done[0].collector.frames.len(), 20);
    }

    proptest! {
        /// Whatever the key frame spacing and sizes: the buffer starts at a key frame; it is
        /// over the byte cap only when it holds a single group; and while the byte cap never
        /// had to act, it covers `keep` or holds everything since the first key frame.
        #[test]
        fn the_buffer_keeps_its_invariants(
            keys in proptest::collection::vec(any::<bool>(), 1..400),
            keep_ms in 0_i64..5_000,
            sizes in proptest::collection::vec(1_usize..5_000, 400),
        ) {
            let max_bytes = 60_000;
            let mut buffer = PreEventBuffer::new(SignedDuration::from_millis(keep_ms), max_bytes);
            let mut pushed: Vec<Frame<u64>> = Vec::new();
            for (n, keyframe) in keys.iter().enumerate() {
                let f = Frame { at: at(n as i64 * 40), keyframe: *keyframe, bytes: sizes[n], run: 1, data: n as u64 };
                pushed.push(f.clone());
                buffer.push(f);
                let Some((first, newest)) = buffer.span() else { continue };
                let start = pushed.iter().position(|f| f.at == first).unwrap_or_default();
                let single_group = pushed[start..].iter().skip(1).all(|f| !f.keyframe);
                prop_assert!(pushed[start].keyframe);
                prop_assert!(buffer.bytes() <= max_bytes || single_group);
                let first_key = pushed.iter().position(|f| f.keyframe).unwrap_or_default();
                let all_bytes: usize = pushed[first_key..].iter().map(|f| f.bytes).sum();
                if all_bytes <= max_bytes {
                    prop_assert!(
                        newest.duration_since(first) >= SignedDuration::from_millis(keep_ms)
                            || start == first_key
                    );
                }
            }
        }
    }
}

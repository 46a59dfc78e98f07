//! The video service: each camera's supervised feed, the clips the rules ask for, snapshots,
//! and the storage's budget.
//!
//! - **Cameras** are adapters ([`CameraAdapter`]): one task per camera plays its feed,
//!   reports `online` at the first frame and `offline` with GStreamer's reason (element and
//!   message) or the stall watchdog's, and reconnects with backoff. One camera never waits
//!   for another, nor does the journal wait for any camera.
//! - **Clips**: the journal hands over each clip request after the trigger's transaction
//!   committed ([`ClipRequest`]); the camera's feed gathers it from its pre-event buffer on,
//!   and a task per camera writes the MP4 and its snapshot (at the trigger) on a blocking
//!   thread, then records the outcome in the journal ([`JournalHandle::finish_clip`]), which
//!   updates the incident. A clip whose camera sends nothing fails with that reason.
//! - **Live view** is packaged in memory while someone watches ([`LiveStream`]).
//! - **Storage**: `clips/` holds `ID.mp4` and `ID.jpg`. Every minute retention deletes
//!   clips past their age, then the oldest until under the budget. While the file system has
//!   less free space than `min_free_megabytes`, no clip is written: each camera reports
//!   `degraded` with the reason (an event the rules and the console see), and clips asked for
//!   meanwhile fail saying so. The journal, on the same disk, keeps its space.
//! - After a restart, clips still marked recording fail: their pre-event video was in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use gatehouse_protocol::{DeviceId, DeviceStatus, EventBody, PointId, Quality, ZoneId};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use super::buffer::{Collected, Ended};
use super::config::{CameraConfig, Restream, VideoConfig};
use super::feed::{CameraFeed, Codec, Sample, Source};
use super::llhls::LiveStream;
use super::media::{self, MediaError};
use super::onvif::{CameraEventKind, Credentials, MediaProfile, OnvifClient, PullPointOptions};
use super::restream::{
    DiscoveredUrl, RestreamMode, RestreamSettings, RestreamSource, Restreamer, StreamUrl,
};
use super::signing::MediaSigner;
use crate::adapters::{Adapter, AdapterContext, Backoff};
use crate::journal::clips::{self, ClipOutcome, ClipRequest};
use crate::journal::{JournalHandle, Reader};
use crate::metrics::DeviceLabels;

/// Most bytes a camera's pre-event buffer holds (a 8 Mbit/s camera fills it in 64 s).
const BUFFER_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How often retention and the free-space check run.
const STORAGE_EVERY: Duration = Duration::from_secs(60);
/// Why no clip is written while the storage is short of space (clips' and cameras' reason).
const DISK_LOW: &str = "recording stopped: the video storage is short of free space";
/// How often clips whose camera went silent are ended.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Why the video service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("GStreamer: {0}")]
    GStreamer(String),
    #[error("video storage {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{owner}: cannot read password_file {path}: {source}")]
    Password {
        owner: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One camera: its config and feed.
pub struct CameraUnit {
    pub id: DeviceId,
    pub zone: Option<ZoneId>,
    pub feed: CameraFeed,
    /// Where the stream is: an RTSP URL, or found through ONVIF.
    source: Source,
    onvif: Option<OnvifLink>,
    /// The stream URL ONVIF gave last, for re-streaming.
    discovered: Arc<DiscoveredUrl>,
    live: Arc<LiveStream>,
    stall_timeout: SignedDuration,
    backoff: (Duration, Duration),
}

/// A camera reached through ONVIF.
struct OnvifLink {
    address: String,
    profile: Option<String>,
    /// The points its events feed (empty: events are not read).
    points: Vec<PointId>,
}

/// How long one ONVIF call may take.
const ONVIF_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API and the tasks share.
pub struct Video {
    storage: PathBuf,
    pub signer: MediaSigner,
    pub url_ttl: SignedDuration,
    min_free_bytes: u64,
    budget_bytes: u64,
    max_age: Option<SignedDuration>,
    cameras: HashMap<DeviceId, Arc<CameraUnit>>,
    /// Whether the storage is short of space (recording stopped).
    disk_low: AtomicBool,
    disk_changed: tokio::sync::Notify,
}

/// The feeds' finished clips, per camera, for [`Video::run`].
pub struct ClipOutlets(Vec<(Arc<CameraUnit>, mpsc::UnboundedReceiver<Collected<Sample>>)>);

impl Video {
    /// Sets up storage and cameras from the config (nothing connects yet).
    pub fn new(config: &VideoConfig) -> Result<(Arc<Self>, ClipOutlets), VideoError> {
        gstreamer::init().map_err(|error| VideoError::GStreamer(error.to_string()))?;
        let storage = config.storage.clone();
        let storage_error = |source| VideoError::Storage {
            path: storage.display().to_string(),
            source,
        };
        std::fs::create_dir_all(storage.join("clips")).map_err(storage_error)?;
        let signer =
            MediaSigner::load_or_create(&storage.join("media.key")).map_err(storage_error)?;
        let mut cameras = HashMap::new();
        let mut outlets = Vec::new();
        for camera in &config.cameras {
            let (unit, clips) = camera_unit(camera, config)?;
            let unit = Arc::new(unit);
            cameras.insert(unit.id.clone(), unit.clone());
            outlets.push((unit, clips));
        }
        let video = Arc::new(Self {
            storage,
            signer,
            url_ttl: *config.media_url_ttl.get_ref(),
            min_free_bytes: config.min_free_megabytes * 1024 * 1024,
            budget_bytes: config.disk_budget_megabytes * 1024 * 1024,
            max_age: (config.clip_max_age_days > 0)
                .then(|| SignedDuration::from_hours(24 * i64::from(config.clip_max_age_days))),
            cameras,
            disk_low: AtomicBool::new(false),
            disk_changed: tokio::sync::Notify::new(),
        });
        Ok((video, ClipOutlets(outlets)))
    }

    pub fn camera(&self, id: &DeviceId) -> Option<&Arc<CameraUnit>> {
        self.cameras.get(id)
    }

    /// The cameras, sorted by id.
    pub fn cameras(&self) -> Vec<&Arc<CameraUnit>> {
        let mut cameras: Vec<_> = self.cameras.values().collect();
        cameras.sort_by(|a, b| a.id.cmp(&b.id));
        cameras
    }

    /// The adapters that run the cameras.
    pub fn adapters(self: &Arc<Self>) -> Vec<Arc<dyn Adapter>> {
        self.cameras()
            .into_iter()
            .map(|unit| {
                Arc::new(CameraAdapter {
                    unit: unit.clone(),
                    video: self.clone(),
                    devices: vec![unit.id.clone()],
                }) as Arc<dyn Adapter>
            })
            .collect()
    }

    /// A file of the clips folder (`ID.mp4`, `ID.jpg`).
    pub fn clip_file(&self, name: &str) -> PathBuf {
        self.storage.join("clips").join(name)
    }

    /// A camera's live view.
    pub fn live(&self, camera: &DeviceId) -> Option<&LiveStream> {
        self.cameras.get(camera).map(|unit| unit.live.as_ref())
    }

    /// A JPEG of the camera's newest picture.
    pub async fn snapshot(&self, camera: &DeviceId) -> Result<Vec<u8>, MediaError> {
        let unit = self.cameras.get(camera).ok_or(MediaError::NoFrames)?;
        let codec = unit.feed.codec().ok_or(MediaError::NoFrames)?;
        let frames = unit.feed.latest_group();
        tokio::task::spawn_blocking(move || media::snapshot_jpeg(codec, &frames))
            .await
            .unwrap_or(Err(MediaError::NoFrames))
    }

    fn disk_low(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed)
    }

    /// Runs clip requests, clip writing, expiry and storage upkeep until shutdown.
    pub async fn run(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<ClipRequest>,
        outlets: ClipOutlets,
        journal: JournalHandle,
        reader: Reader,
        shutdown: CancellationToken,
    ) {
        self.fail_interrupted(&journal, &reader).await;
        let mut tasks = tokio::task::JoinSet::new();
        for (unit, clips) in outlets.0 {
            tasks.spawn(write_clips(unit, clips, self.clone(), journal.clone()));
        }
        tasks.spawn(
            self.clone()
                .keep_storage(journal.clone(), reader, shutdown.clone()),
        );
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                request = requests.recv() => match request {
                    Some(request) => self.start_clip(request, &journal).await,
                    None => break,
                },
                _ = expire.tick() => {
                    for unit in self.cameras.values() {
                        let grace = unit.stall_timeout + SignedDuration::from_secs(2);
                        unit.feed.expire(Timestamp::now(), grace);
                    }
                }
            }
        }
        tasks.abort_all();
    }

    async fn start_clip(&self, request: ClipRequest, journal: &JournalHandle) {
        // Checked at each request too: a disk can fill between two periodic checks.
        self.check_free_space();
        let refused = match self.cameras.get(&request.camera) {
            None => Some(format!("camera `{}` is not configured", request.camera)),
            Some(_) if self.disk_low() => Some(DISK_LOW.to_owned()),
            Some(unit) => {
                unit.feed.collect(request.id, request.from, request.to);
                None
            }
        };
        if let Some(reason) = refused {
            tracing::warn!(clip = request.id, camera = %request.camera, %reason, "clip refused");
            let _ = journal
                .finish_clip(request.id, ClipOutcome::Failed { reason })
                .await;
        }
    }

    /// Fails the clips a previous run left recording.
    async fn fail_interrupted(&self, journal: &JournalHandle, reader: &Reader) {
        let Ok(stale) = reader.run(clips::recording).await else {
            return;
        };
        for clip in stale {
            let reason =
                "the agent restarted while this clip was recording; its video was in memory";
            let _ = journal
                .finish_clip(
                    clip.id,
                    ClipOutcome::Failed {
                        reason: reason.into(),
                    },
                )
                .await;
        }
    }

    /// Retention and the free-space watch.
    async fn keep_storage(
        self: Arc<Self>,
        journal: JournalHandle,
        reader: Reader,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(STORAGE_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.apply_retention(&journal, &reader).await {
                tracing::warn!(%error, "video retention failed");
            }
            self.check_free_space();
        }
    }

    /// Checks the storage's free space; wakes the cameras when it crossed the floor.
    pub fn check_free_space(&self) -> Option<u64> {
        let free = free_bytes(&self.storage)?;
        let low = free < self.min_free_bytes;
        if self.disk_low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(
                    free_mib = free / (1024 * 1024),
                    "video storage short of space: recording stopped"
                );
            } else {
                tracing::info!(
                    free_mib = free / (1024 * 1024),
                    "video storage has space again: recording resumes"
                );
            }
            self.disk_changed.notify_waiters();
        }
        Some(free)
    }

    /// Deletes clips past their age, then the oldest until the clips fit the budget.
    pub async fn apply_retention(
        &self,
        journal: &JournalHandle,
        reader: &Reader,
    ) -> Result<usize, crate::journal::JournalError> {
        self.apply_retention_at(journal, reader, Timestamp::now())
            .await
    }

    /// [`Video::apply_retention`] as if it were `now`.
    async fn apply_retention_at(
        &self,
        journal: &JournalHandle,
        reader: &Reader,
        now: Timestamp,
    ) -> Result<usize, crate::journal::JournalError> {
        let done = reader.run(clips::finished_oldest_first).await?;
        let mut total: u64 = done
            .iter()
            .map(|clip| self.clip_bytes(clip.file.as_deref(), clip.snapshot.as_deref()))
            .sum();
        let mut forget = Vec::new();
        for clip in &done {
            let too_old = self
                .max_age
                .is_some_and(|age| clip.created_at.checked_add(age).is_ok_and(|end| end < now));
            if !(too_old || total > self.budget_bytes) {
                continue;
            }
            let bytes = self.clip_bytes(clip.file.as_deref(), clip.snapshot.as_deref());
            for name in [clip.file.as_deref(), clip.snapshot.as_deref()]
                .into_iter()
                .flatten()
            {
                let path = self.clip_file(name);
                if let Err(error) = std::fs::remove_file(&path)
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(%error, path = %path.display(), "cannot delete a clip");
                }
            }
            total = total.saturating_sub(bytes);
            forget.push(clip.id);
        }
        let count = forget.len();
        if count > 0 {
            tracing::info!(clips = count, "video retention deleted clips");
            journal.forget_clips(forget).await?;
        }
        Ok(count)
    }

    fn clip_bytes(&self, file: Option<&str>, snapshot: Option<&str>) -> u64 {
        [file, snapshot]
            .into_iter()
            .flatten()
            .filter_map(|name| std::fs::metadata(self.clip_file(name)).ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}

/// Starts the RTSP re-streaming server of `[video.restream]`, if configured.
/// ONVIF cameras are served from the stream URL their supervisor found (`video`'s).
pub fn start_restream(
    config: &VideoConfig,
    video: Option<&Video>,
) -> Result<Option<Restreamer>, VideoError> {
    let Some(restream) = &config.restream else {
        return Ok(None);
    };
    let password = read_password(&restream.password_file, "video.restream")?;
    let mut sources = Vec::new();
    for camera in &config.cameras {
        let url = match (
            &camera.url,
            video.and_then(|v| v.cameras.get(camera.id.get_ref())),
        ) {
            (Some(url), _) => StreamUrl::Fixed(url.get_ref().clone()),
            (None, Some(unit)) => StreamUrl::Discovered(Arc::clone(&unit.discovered)),
            (None, None) => continue,
        };
        let mode = match camera.restream {
            Restream::Off => continue,
            Restream::Passthrough => RestreamMode::Passthrough,
            Restream::Transcode => RestreamMode::Transcode {
                height: restream.transcode_height,
                bitrate_kbps: restream.transcode_bitrate_kbps,
            },
        };
        let camera_password = camera
            .password_file
            .as_ref()
            .map(|file| read_password(file, camera.id.get_ref().as_str()))
            .transpose()?;
        sources.push(RestreamSource {
            camera: camera.id.get_ref().clone(),
            url,
            camera_user: camera.username.clone(),
            camera_password,
            mode,
        });
    }
    let settings = RestreamSettings {
        listen: restream.listen,
        user: restream.username.clone(),
        password,
        auth: restream.auth,
    };
    let restreamer = Restreamer::start(&settings, &sources)
        .map_err(|error| VideoError::GStreamer(error.to_string()))?;
    tracing::info!(listen = %restream.listen, cameras = sources.len(),
        encoder = restreamer.encoder().unwrap_or("none"), "re-streaming cameras over RTSP");
    Ok(Some(restreamer))
}

/// A password file's text without its final newline.
fn read_password(file: &Spanned<PathBuf>, owner: &str) -> Result<String, VideoError> {
    crate::config::read_password_file(file.get_ref()).map_err(|source| VideoError::Password {
        owner: owner.to_owned(),
        path: file.get_ref().display().to_string(),
        source,
    })
}

fn camera_unit(
    camera: &CameraConfig,
    config: &VideoConfig,
) -> Result<(CameraUnit, mpsc::UnboundedReceiver<Collected<Sample>>), VideoError> {
    let id = camera.id.get_ref().clone();
    let password = camera
        .password_file
        .as_ref()
        .map(|file| read_password(file, id.as_str()))
        .transpose()?;
    let keep = *config.pre_event.get_ref();
    let (feed, clips) = CameraFeed::new(id.as_str(), keep, BUFFER_MAX_BYTES);
    let unit = CameraUnit {
        zone: camera.zone.as_ref().map(|zone| zone.get_ref().clone()),
        feed,
        source: Source {
            url: camera
                .url
                .as_ref()
                .map(|url| url.get_ref().clone())
                .unwrap_or_default(),
            username: camera.username.clone(),
            password,
            transport: camera.transport,
        },
        onvif: camera.onvif.as_ref().map(|address| OnvifLink {
            address: address.get_ref().clone(),
            profile: camera.profile.clone(),
            points: camera.event_points(),
        }),
        discovered: Arc::default(),
        live: Arc::default(),
        stall_timeout: *camera.stall_timeout.get_ref(),
        backoff: (
            Duration::from_millis(camera.reconnect_initial_ms),
            Duration::from_millis(camera.reconnect_max_ms),
        ),
        id,
    };
    Ok((unit, clips))
}

/// Writes each clip the camera's feed finished, one after the other.
async fn write_clips(
    unit: Arc<CameraUnit>,
    mut clips: mpsc::UnboundedReceiver<Collected<Sample>>,
    video: Arc<Video>,
    journal: JournalHandle,
) {
    while let Some(clip) = clips.recv().await {
        let id = clip.collector.id;
        video.check_free_space();
        let outcome = if video.disk_low() {
            ClipOutcome::Failed {
                reason: DISK_LOW.into(),
            }
        } else {
            write_clip(&unit, clip, &video).await
        };
        match &outcome {
            ClipOutcome::Ready {
                bytes, duration_ms, ..
            } => {
                tracing::info!(clip = id, camera = %unit.id, bytes, duration_ms, "clip written");
            }
            ClipOutcome::Failed { reason } => {
                tracing::warn!(clip = id, camera = %unit.id, %reason, "clip failed");
            }
        }
        if journal.finish_clip(id, outcome).await.is_err() {
            return;
        }
    }
}

async fn write_clip(unit: &CameraUnit, clip: Collected<Sample>, video: &Video) -> ClipOutcome {
    let Some(codec) = unit.feed.codec() else {
        return ClipOutcome::Failed {
            reason: "no video: the camera has not sent a frame since the agent started".into(),
        };
    };
    let id = clip.collector.id;
    let ended = clip.ended;
    let frames = clip.collector.frames;
    if frames.is_empty() {
        return ClipOutcome::Failed {
            reason: format!("no video: {}", ended_reason(ended, &unit.id)),
        };
    }
    let trigger = clip.collector.from;
    let file = format!("{id}.mp4");
    let snapshot = format!("{id}.jpg");
    let (mp4_path, jpg_path) = (video.clip_file(&file), video.clip_file(&snapshot));
    let written = tokio::task::spawn_blocking(move || {
        let samples: Vec<Sample> = frames.iter().map(|frame| frame.data.clone()).collect();
        let duration = media::write_mp4(codec, &samples, &mp4_path)?;
        // The snapshot shows the trigger's moment: the group of pictures holding it.
        let start = frames
            .iter()
            .rposition(|frame| frame.keyframe && frame.at <= trigger)
            .unwrap_or(0);
        let end = frames
            .iter()
            .position(|frame| frame.at > trigger)
            .unwrap_or(frames.len())
            .max(start + 1);
        let jpeg = media::snapshot_jpeg(codec, &samples[start..end])
            .and_then(|jpeg| media::write_jpeg(&jpeg, &jpg_path));
        let bytes = std::fs::metadata(&mp4_path).map(|m| m.len()).unwrap_or(0);
        Ok::<_, MediaError>((duration, bytes, jpeg.is_ok()))
    })
    .await;
    match written {
        Ok(Ok((duration, bytes, has_snapshot))) => ClipOutcome::Ready {
            file,
            snapshot: has_snapshot.then_some(snapshot),
            bytes,
            duration_ms: duration.as_millis() as u64,
        },
        Ok(Err(error)) => ClipOutcome::Failed {
            reason: error.to_string(),
        },
        Err(error) => ClipOutcome::Failed {
            reason: format!("the clip writer crashed: {error}"),
        },
    }
}

fn ended_reason(ended: Ended, camera: &DeviceId) -> String {
    match ended {
        Ended::Complete => format!("camera `{camera}` sent no frame in the clip's time"),
        Ended::CameraDropped => format!("camera `{camera}` dropped before the clip's time"),
        Ended::TimedOut => format!("camera `{camera}` sent nothing during the clip's time"),
    }
}

/// Free bytes for unprivileged writers on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// A camera as an adapter: plays its feed, reports its status, reconnects with backoff.
pub struct CameraAdapter {
    unit: Arc<CameraUnit>,
    video: Arc<Video>,
    devices: Vec<DeviceId>,
}

impl Adapter for CameraAdapter {
    fn name(&self) -> &str {
        self.unit.id.as_str()
    }

    fn devices(&self) -> &[DeviceId] {
        &self.devices
    }

    fn run<'a>(&'a self, context: &'a AdapterContext) -> BoxFuture<'a, ()> {
        async move {
            tokio::join!(self.supervise(context), self.onvif_events(context));
        }
        .boxed()
    }
}

impl CameraAdapter {
    /// The stream to play: the configured URL, or the one the ONVIF camera gives for its
    /// profile.
    async fn source(&self) -> Result<Source, String> {
        let unit = &self.unit;
        let Some(onvif) = &unit.onvif else {
            return Ok(unit.source.clone());
        };
        let client = self.onvif_client(onvif).await?;
        let profiles = client.profiles().await.map_err(|e| e.to_string())?;
        let recordable = |profile: &&MediaProfile| {
            profile.video.as_ref().is_some_and(|video| {
                matches!(
                    video.encoding.to_ascii_uppercase().as_str(),
                    "H264" | "H265"
                )
            })
        };
        let profile = match &onvif.profile {
            Some(token) => profiles.iter().find(|p| &p.token == token).ok_or_else(|| {
                let tokens: Vec<&str> = profiles.iter().map(|p| p.token.as_str()).collect();
                format!(
                    "ONVIF: the camera has no profile `{token}` (it has: {})",
                    tokens.join(", ")
                )
            })?,
            None => profiles
                .iter()
                .find(recordable)
                .ok_or("ONVIF: the camera has no H.264 or H.265 profile")?,
        };
        let uri = client
            .stream_uri(&profile.token)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(camera = %unit.id, profile = %profile.token, "ONVIF stream found");
        unit.discovered.set(uri.uri.clone());
        Ok(Source {
            url: uri.uri,
            ..unit.source.clone()
        })
    }

    async fn onvif_client(&self, onvif: &OnvifLink) -> Result<OnvifClient, String> {
        let source = &self.unit.source;
        let credentials = source.username.as_ref().map(|user| Credentials {
            user: user.clone(),
            password: source.password.clone().unwrap_or_default(),
        });
        OnvifClient::connect(&onvif.address, credentials, ONVIF_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads the ONVIF camera's events into its points, subscribing again with backoff.
    async fn onvif_events(&self, context: &AdapterContext) {
        let unit = &self.unit;
        let Some(onvif) = unit.onvif.as_ref().filter(|onvif| !onvif.points.is_empty()) else {
            return;
        };
        let mut backoff = Backoff::new(unit.backoff.0, unit.backoff.1);
        loop {
            let error = tokio::select! {
                () = context.shutdown.cancelled() => return,
                error = self.pull_events(onvif, context, &mut backoff) => error,
            };
            tracing::warn!(camera = %unit.id, %error, "ONVIF events interrupted; subscribing again");
            tokio::select! {
                () = context.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One subscription: pulls until it fails; returns why.
    async fn pull_events(
        &self,
        onvif: &OnvifLink,
        context: &AdapterContext,
        backoff: &mut Backoff,
    ) -> String {
        let unit = &self.unit;
        let client = match self.onvif_client(onvif).await {
            Ok(client) => client,
            Err(error) => return error,
        };
        let mut pull_point = match client.pull_point(PullPointOptions::default()).await {
            Ok(pull_point) => pull_point,
            Err(error) => return error.to_string(),
        };
        backoff.reset();
        loop {
            let events = match pull_point.pull().await {
                Ok(events) => events,
                Err(error) => return error.to_string(),
            };
            for event in events {
                if let CameraEventKind::Other { topic, .. }
                | CameraEventKind::Invalid { topic, .. } = &event.kind
                {
                    tracing::debug!(camera = %unit.id, %topic, "ONVIF event without a point");
                    context
                        .metrics
                        .video_onvif_events_unmapped
                        .get_or_create(&DeviceLabels {
                            device: unit.id.to_string(),
                        })
                        .inc();
                }
                for (suffix, value) in event.point_values() {
                    let suffix = format!(".{suffix}");
                    let Some(point) = onvif.points.iter().find(|p| p.as_str().ends_with(&suffix))
                    else {
                        continue;
                    };
                    let observation = EventBody::Observation {
                        device: unit.id.clone(),
                        point: point.clone(),
                        zone: unit.zone.clone(),
                        value: Some(value),
                        quality: Quality::Good,
                        observed_at: event.at,
                    };
                    if !context.emit(observation).await {
                        return "the agent is stopping".into();
                    }
                }
            }
        }
    }

    async fn supervise(&self, context: &AdapterContext) {
        let unit = &self.unit;
        let mut backoff = Backoff::new(unit.backoff.0, unit.backoff.1);
        let mut reported: Option<(DeviceStatus, Option<String>)> = context
            .live
            .device(&unit.id)
            .map(|state| (state.status, state.reason));
        loop {
            let source = tokio::select! {
                () = context.shutdown.cancelled() => return,
                source = self.source() => source,
            };
            let source = match source {
                Ok(source) => source,
                Err(reason) => {
                    tracing::warn!(camera = %unit.id, %reason, "camera unreachable");
                    let offline = (DeviceStatus::Offline, Some(reason.clone()));
                    self.report(context, &mut reported, offline).await;
                    if !context.wait_offline(backoff.next_delay(), &reason).await {
                        return;
                    }
                    continue;
                }
            };
            let (online, mut first_frame) = tokio::sync::oneshot::channel::<Codec>();
            let play = unit
                .feed
                .play(&source, Some(&unit.live), unit.stall_timeout, |codec| {
                    let _ = online.send(codec);
                });
            tokio::pin!(play);
            let error = loop {
                tokio::select! {
                    () = context.shutdown.cancelled() => return,
                    error = &mut play => break error,
                    codec = &mut first_frame, if !first_frame.is_terminated() => {
                        if let Ok(codec) = codec {
                            backoff.reset();
                            tracing::info!(camera = %unit.id, codec = codec.name(), "camera streaming");
                            self.report(context, &mut reported, self.healthy_status()).await;
                        }
                    }
                    () = self.video.disk_changed.notified() => {
                        if unit.feed.frames() > 0 {
                            self.report(context, &mut reported, self.healthy_status()).await;
                        }
                    }
                }
            };
            let reason = error.to_string();
            tracing::warn!(camera = %unit.id, %reason, "camera connection ended");
            context
                .metrics
                .video_reconnects
                .get_or_create(&DeviceLabels {
                    device: unit.id.to_string(),
                })
                .inc();
            self.report(
                context,
                &mut reported,
                (DeviceStatus::Offline, Some(reason.clone())),
            )
            .await;
            if !context.wait_offline(backoff.next_delay(), &reason).await {
                return;
            }
        }
    }

    /// Online, or degraded while recording is stopped for want of space.
    fn healthy_status(&self) -> (DeviceStatus, Option<String>) {
        if self.video.disk_low() {
            (DeviceStatus::Degraded, Some(DISK_LOW.into()))
        } else {
            (DeviceStatus::Online, None)
        }
    }

    async fn report(
        &self,
        context: &AdapterContext,
        reported: &mut Option<(DeviceStatus, Option<String>)>,
        now: (DeviceStatus, Option<String>),
    ) {
        if reported.as_ref() == Some(&now) {
            return;
        }
        let sent = context
            .emit(EventBody::DeviceStatus {
                device: self.unit.id.clone(),
                status: now.0,
                reason: now.1.clone(),
            })
            .await;
        if sent {
            *reported = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_protocol::Value;

    use super::*;
    use crate::test_helpers::{SITE, TestJournal, observation, site_config_from};

    #[tokio::test]
    async fn retention_deletes_the_oldest_clips_past_the_budget_then_by_age() {
        let storage = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = SITE.replace(
            r#"then = [{ raise = { severity = "high", title = "Door opened" } }]"#,
            r#"then = [{ raise = { severity = "high", title = "Door opened" } }, { clip = { camera = "cam.lobby" } }]"#,
        ) + &format!(
            "\n[video]\nstorage = \"{}\"\ndisk_budget_megabytes = 64\n[[video.cameras]]\nid = \"cam.lobby\"\nurl = \"rtsp://127.0.0.1:1/cam\"\n",
            storage.path().display()
        );
        let config = site_config_from(&source);
        let mut journal = TestJournal::with_defaults(&config);
        let (video, _outlets) = Video::new(&config.video).unwrap_or_else(|e| panic!("{e}"));
        let mut ids = Vec::new();
        for open in [true, false, true, false, true] {
            journal
                .handle
                .append_committed(observation("door", Value::Bool(open)))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if !open {
                continue;
            }
            let request = journal
                .rule_clips
                .recv()
                .await
                .unwrap_or_else(|| panic!("no clip request"));
            // 30 MiB each, sparse: the budget counts their length.
            let file = format!("{}.mp4", request.id);
            std::fs::File::create(video.clip_file(&file))
                .and_then(|f| f.set_len(30 << 20))
                .unwrap_or_else(|e| panic!("{e}"));
            let outcome = ClipOutcome::Ready {
                file,
                snapshot: None,
                bytes: 30 << 20,
                duration_ms: 30_000,
            };
            journal
                .handle
                .finish_clip(request.id, outcome)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            ids.push(request.id);
        }
        // 90 MiB against 64: the oldest goes, the two newest stay.
        let deleted = video
            .apply_retention(&journal.handle, &journal.reader)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(deleted, 1);
        assert!(!video.clip_file(&format!("{}.mp4", ids[0])).exists());
        let left: Vec<u64> = journal
            .reader
            .run(clips::finished_oldest_first)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|clip| clip.id)
            .collect();
        assert_eq!(left, ids[1..]);
        // Under the budget: nothing more to do.
        let again = video
            .apply_retention(&journal.handle, &journal.reader)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, 0);
        // 31 days on, past clip_max_age_days (30 by default): the rest go too.
        let later = Timestamp::now() + SignedDuration::from_hours(31 * 24);
        let aged = video
            .apply_retention_at(&journal.handle, &journal.reader, later)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(aged, 2);
        assert!(!video.clip_file(&format!("{}.mp4", ids[2])).exists());
    }
}

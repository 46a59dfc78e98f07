//! Cameras and clips: listed under `/api/v1` (bearer token, like the rest), served under
//! `/media/v1` through signed, short-lived URLs (see [`crate::video::signing`]): a browser's
//! `<video>`, `<img>` or HLS player cannot send a bearer token, so the listing hands out URLs
//! that carry their own authorisation, bound to one camera's live view or snapshot, or to one
//! clip. An unsigned media URL gets 401; a tampered or expired one 403.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_protocol::{DeviceId, DeviceStatus, ZoneId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::{Permission, Principal};
use super::error::{ApiError, Json, Path, Query};
use crate::journal::clips::{self, ClipRecord};
use crate::video::llhls::{LiveError, Ready, Wanted};
use crate::video::service::Video;
use crate::video::signing::SignatureError;

/// A camera with its media URLs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CameraView {
    #[schema(value_type = String)]
    pub id: DeviceId,
    #[schema(value_type = Option<String>)]
    pub zone: Option<ZoneId>,
    pub status: Option<DeviceStatus>,
    pub reason: Option<String>,
    /// `H.264` or `H.265`, once the camera has sent video.
    pub codec: Option<String>,
    /// Frames received since the current connection started (a rate check for installers).
    pub frames: u64,
    /// HLS playlist of the live view (signed; relative to the API's origin).
    pub live_url: String,
    /// JPEG of the newest picture (signed).
    pub snapshot_url: String,
    #[schema(value_type = String, format = DateTime)]
    pub urls_expire_at: Timestamp,
}

/// A clip with its media URLs (once it is ready).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClipView {
    #[serde(flatten)]
    pub clip: ClipRecord,
    /// The MP4 (signed).
    pub media_url: Option<String>,
    /// The JPEG at the trigger (signed).
    pub snapshot_url: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub urls_expire_at: Timestamp,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClipFilter {
    /// Only this camera's clips.
    camera: Option<String>,
    /// Only this incident's clips.
    incident: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<usize>,
}

/// A page of clips, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClipPage {
    pub items: Vec<ClipView>,
    pub next_cursor: Option<String>,
}

fn video(state: &ApiState) -> Result<&Arc<Video>, ApiError> {
    state
        .video
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this appliance has no cameras configured"))
}

fn expiry(video: &Video) -> Timestamp {
    Timestamp::now()
        .checked_add(video.url_ttl)
        .unwrap_or(Timestamp::MAX)
}

/// The cameras, with signed URLs for live view and snapshot.
#[utoipa::path(get, path = "/api/v1/cameras", tag = "video",
    responses((status = 200, body = [CameraView]), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_cameras(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<CameraView>>, ApiError> {
    principal.require(Permission::ReadState)?;
    let video = video(&state)?;
    let expires = expiry(video);
    let seconds = expires.as_second();
    let cameras = video
        .cameras()
        .into_iter()
        .map(|unit| {
            let device = state.live.device(&unit.id);
            let id = unit.id.as_str();
            CameraView {
                id: unit.id.clone(),
                zone: unit.zone.clone(),
                status: device.as_ref().map(|d| d.status),
                reason: device.and_then(|d| d.reason),
                codec: unit.feed.codec().map(|codec| codec.name().to_owned()),
                frames: unit.feed.frames(),
                live_url: format!(
                    "/media/v1/cameras/{id}/live/index.m3u8?{}",
                    video.signer.query(&format!("live:{id}"), seconds)
                ),
                snapshot_url: format!(
                    "/media/v1/cameras/{id}/snapshot.jpg?{}",
                    video.signer.query(&format!("snapshot:{id}"), seconds)
                ),
                urls_expire_at: expires,
            }
        })
        .collect();
    Ok(Json(cameras))
}

fn clip_view(video: &Video, clip: ClipRecord) -> ClipView {
    let expires = expiry(video);
    let query = video
        .signer
        .query(&format!("clip:{}", clip.id), expires.as_second());
    let id = clip.id;
    ClipView {
        media_url: clip
            .file
            .as_ref()
            .map(|_| format!("/media/v1/clips/{id}.mp4?{query}")),
        snapshot_url: clip
            .snapshot
            .as_ref()
            .map(|_| format!("/media/v1/clips/{id}.jpg?{query}")),
        urls_expire_at: expires,
        clip,
    }
}

/// Clips, newest first.
#[utoipa::path(get, path = "/api/v1/clips", tag = "video", params(ClipFilter),
    responses((status = 200, body = ClipPage), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_clips(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<ClipFilter>,
) -> Result<Json<ClipPage>, ApiError> {
    principal.require(Permission::ReadState)?;
    let video = video(&state)?.clone();
    let camera = filter
        .camera
        .map(|camera| {
            DeviceId::new(camera.clone())
                .map_err(|_| ApiError::bad_request(format!("`{camera}` is not a camera id")))
        })
        .transpose()?;
    let before = super::parse_cursor(filter.cursor.as_deref())?;
    let limit = super::page_limit(filter.limit)?;
    let incident = filter.incident.map(super::check_seq).transpose()?;
    let items = state
        .reader
        .run(move |connection| {
            clips::list(
                connection,
                camera.as_ref(),
                incident,
                before,
                limit as u32 + 1,
            )
        })
        .await?;
    let more = items.len() > limit;
    let items: Vec<ClipView> = items
        .into_iter()
        .take(limit)
        .map(|clip| clip_view(&video, clip))
        .collect();
    let next_cursor = more
        .then(|| items.last().map(|view| view.clip.id.to_string()))
        .flatten();
    Ok(Json(ClipPage { items, next_cursor }))
}

/// One clip.
#[utoipa::path(get, path = "/api/v1/clips/{id}", tag = "video",
    params(("id" = u64, Path, description = "clip id")),
    responses((status = 200, body = ClipView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_clip(
    State(state): State<Arc<ApiState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<u64>,
) -> Result<Json<ClipView>, ApiError> {
    principal.require(Permission::ReadState)?;
    let video = video(&state)?.clone();
    let clip = load_clip(&state, id).await?;
    Ok(Json(clip_view(&video, clip)))
}

/// Clip `id`, or 404.
async fn load_clip(state: &ApiState, id: u64) -> Result<ClipRecord, ApiError> {
    let id = super::check_seq(id)?;
    state
        .reader
        .run(move |connection| clips::get(connection, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("clip {id} does not exist")))
}

/// The scope a media path needs a signature for: `live:CAMERA`, `snapshot:CAMERA`, `clip:ID`.
fn scope_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/media/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["cameras", camera, "live", _] => Some(format!("live:{camera}")),
        ["cameras", camera, "snapshot.jpg"] => Some(format!("snapshot:{camera}")),
        ["clips", file] => {
            let (id, _) = file.split_once('.')?;
            Some(format!("clip:{id}"))
        }
        _ => None,
    }
}

/// Middleware of `/media/v1`: the URL's signature must match its scope and not be expired.
pub async fn verify_signature(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let video = video(&state)?;
    let scope =
        scope_of(request.uri().path()).ok_or_else(|| ApiError::not_found("no such media"))?;
    let (mut expires, mut signature) = (None, None);
    for pair in request.uri().query().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("expires", value)) => expires = Some(value),
            Some(("signature", value)) => signature = Some(value),
            _ => {}
        }
    }
    let checked = video
        .signer
        .verify(&scope, expires, signature, Timestamp::now().as_second());
    if let Err(error) = checked {
        state.metrics.api_auth_rejected.inc();
        return Err(match error {
            SignatureError::Missing => ApiError::unauthorized(error.to_string()),
            SignatureError::Invalid | SignatureError::Expired => {
                ApiError::forbidden(error.to_string())
            }
        });
    }
    Ok(next.run(request).await)
}

/// A file of a camera's live view (Low-Latency HLS, see [`crate::video::llhls`]):
/// `index.m3u8` (multivariant: codec and size), `live.m3u8` (media playlist; blocks on
/// `_HLS_msn` and `_HLS_part`), `init-V.mp4`, `part-M-I.mp4` (blocks while it is the next
/// part) and `segment-M.mp4`. Every URI in a playlist carries the playlist's own signature.
pub async fn live_file(
    State(state): State<Arc<ApiState>>,
    Path((camera, file)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let video = video(&state)?;
    let live = DeviceId::new(camera.clone())
        .ok()
        .and_then(|id| video.live(&id))
        .ok_or_else(|| ApiError::not_found(format!("camera `{camera}` does not exist")))?;
    let query = request.uri().query().unwrap_or_default();
    let wanted = live_request(&file, query)?;
    live.touch();
    let signed = signature_query(query);
    let answer = live
        .wait_for(wanted, LIVE_WAIT, |ready| match ready {
            Ready::Playlist(playlist) if file == "index.m3u8" => {
                Bytes::from(playlist.multivariant(&format!("live.m3u8?{signed}")))
            }
            Ready::Playlist(playlist) => Bytes::from(playlist.media(&signed)),
            Ready::Bytes(bytes) => bytes.clone(),
        })
        .await
        .map_err(|error| match error {
            LiveError::NotReady => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_video",
                format!("camera `{camera}`: {error}"),
            ),
            LiveError::TooFarAhead(_) => ApiError::bad_request(error.to_string()),
            LiveError::Gone => ApiError::not_found(error.to_string()),
        })?;
    let (content_type, cache) = if file.ends_with(".m3u8") {
        ("application/vnd.apple.mpegurl", "no-cache")
    } else {
        ("video/mp4", "private, max-age=60")
    };
    Ok(media_response(answer, content_type, cache))
}

/// How long a live-view request waits: for the first key frame of a new viewer, for a
/// blocking playlist reload, or for the hinted next part.
const LIVE_WAIT: Duration = Duration::from_secs(5);

/// What a live-view file name (and the playlist's `_HLS_` parameters) asks for.
fn live_request(file: &str, query: &str) -> Result<Wanted, ApiError> {
    let number = |text: &str, what: &str| {
        text.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{what} `{text}` is not a number")))
    };
    let no_such = || ApiError::not_found(format!("no such live-view file `{file}`"));
    match file {
        "index.m3u8" => Ok(Wanted::Playlist),
        "live.m3u8" => {
            let (mut msn, mut part) = (None, None);
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("_HLS_msn", value)) => msn = Some(number(value, "_HLS_msn")?),
                    Some(("_HLS_part", value)) => part = Some(number(value, "_HLS_part")?),
                    _ => {}
                }
            }
            match (msn, part) {
                (None, None) => Ok(Wanted::Playlist),
                (Some(msn), part) => Ok(Wanted::Blocking {
                    msn,
                    part: part.map(|p| p as usize),
                }),
                (None, Some(_)) => Err(ApiError::bad_request("_HLS_part needs _HLS_msn")),
            }
        }
        _ => {
            let stem = file.strip_suffix(".mp4").ok_or_else(no_such)?;
            if let Some(version) = stem.strip_prefix("init-") {
                Ok(Wanted::Init(number(version, "init version")?))
            } else if let Some(msn) = stem.strip_prefix("segment-") {
                Ok(Wanted::Segment(number(msn, "segment")?))
            } else if let Some((msn, part)) = stem
                .strip_prefix("part-")
                .and_then(|rest| rest.split_once('-'))
            {
                Ok(Wanted::Part {
                    msn: number(msn, "segment")?,
                    part: number(part, "part")? as usize,
                })
            } else {
                Err(no_such())
            }
        }
    }
}

/// The signature parameters of a media query, for the URIs a playlist lists.
fn signature_query(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.starts_with("expires=") || pair.starts_with("signature="))
        .collect::<Vec<_>>()
        .join("&")
}

/// A JPEG of a camera's newest picture.
pub async fn camera_snapshot(
    State(state): State<Arc<ApiState>>,
    Path(camera): Path<String>,
) -> Result<Response, ApiError> {
    let video = video(&state)?;
    let id = DeviceId::new(camera.clone())
        .ok()
        .filter(|id| video.camera(id).is_some())
        .ok_or_else(|| ApiError::not_found(format!("camera `{camera}` does not exist")))?;
    let jpeg = video.snapshot(&id).await.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_video",
            format!("no snapshot of camera `{camera}`: {error}"),
        )
    })?;
    Ok(media_response(jpeg, "image/jpeg", "no-store"))
}

/// A clip's MP4 or its snapshot.
pub async fn clip_file(
    State(state): State<Arc<ApiState>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let video = video(&state)?.clone();
    let (id, extension) = file
        .split_once('.')
        .and_then(|(id, extension)| Some((id.parse::<u64>().ok()?, extension)))
        .ok_or_else(|| ApiError::not_found("no such clip file"))?;
    let clip = load_clip(&state, id).await?;
    let (name, content_type) = match extension {
        "mp4" => (clip.file, "video/mp4"),
        "jpg" => (clip.snapshot, "image/jpeg"),
        _ => (None, ""),
    };
    let name = name.ok_or_else(|| {
        ApiError::not_found(format!(
            "clip {id} has no such file (state: {})",
            clip.state.as_str()
        ))
    })?;
    let bytes = tokio::fs::read(video.clip_file(&name))
        .await
        .map_err(|_| ApiError::not_found(format!("clip {id}'s file is gone (retention?)")))?;
    Ok(media_response(bytes, content_type, "private, max-age=300"))
}

fn media_response(
    bytes: impl Into<Body>,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let mut response = bytes.into().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_paths_map_to_their_scopes() {
        assert_eq!(
            scope_of("/media/v1/cameras/cam.lobby/live/segment00001.ts").as_deref(),
            Some("live:cam.lobby")
        );
        assert_eq!(
            scope_of("/media/v1/cameras/cam.lobby/snapshot.jpg").as_deref(),
            Some("snapshot:cam.lobby")
        );
        assert_eq!(
            scope_of("/media/v1/clips/12.mp4").as_deref(),
            Some("clip:12")
        );
        assert_eq!(
            scope_of("/media/v1/clips/12.jpg").as_deref(),
            Some("clip:12")
        );
        assert_eq!(scope_of("/media/v1/cameras/cam.lobby/other"), None);
        assert_eq!(scope_of("/media/v1/clips/a/b"), None);
    }

    #[test]
    fn live_file_names_say_what_they_want() {
        assert_eq!(live_request("index.m3u8", "").ok(), Some(Wanted::Playlist));
        assert_eq!(
            live_request("live.m3u8", "expires=1&_HLS_msn=12&_HLS_part=3").ok(),
            Some(Wanted::Blocking {
                msn: 12,
                part: Some(3)
            })
        );
        assert_eq!(
            live_request("live.m3u8", "_HLS_msn=12").ok(),
            Some(Wanted::Blocking {
                msn: 12,
                part: None
            })
        );
        assert_eq!(live_request("init-2.mp4", "").ok(), Some(Wanted::Init(2)));
        assert_eq!(
            live_request("part-7-4.mp4", "").ok(),
            Some(Wanted::Part { msn: 7, part: 4 })
        );
        assert_eq!(
            live_request("segment-7.mp4", "").ok(),
            Some(Wanted::Segment(7))
        );
        let bad = |file, query| match live_request(file, query) {
            Ok(wanted) => format!("accepted as {wanted:?}"),
            Err(error) => error.message,
        };
        assert!(bad("live.m3u8", "_HLS_msn=x").contains("_HLS_msn `x` is not a number"));
        assert!(bad("live.m3u8", "_HLS_part=1").contains("needs _HLS_msn"));
        assert!(bad("part-7.mp4", "").contains("no such live-view file `part-7.mp4`"));
        assert!(bad("../media.key", "").contains("no such live-view file"));
    }

    #[test]
    fn playlists_pass_on_only_the_signature() {
        assert_eq!(
            signature_query("expires=5&_HLS_msn=3&signature=ab&_HLS_part=1"),
            "expires=5&signature=ab"
        );
    }
}

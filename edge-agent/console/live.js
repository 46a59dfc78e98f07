// Plays a camera's live view: Low-Latency HLS (fragmented MP4 parts, blocking playlist
// reloads) fed to Media Source Extensions, so a part reaches the screen the moment the
// appliance cuts it. Browsers without MSE for the codec (Safari on iPhone) get the playlist
// itself, which they play natively.

/** How far behind the newest frame playback may fall before it jumps ahead (seconds). */
const MAX_LAG = 1.5;
/** How far behind the newest frame it plays after a jump (seconds). */
const HOLD_BACK = 0.3;
/** Video kept behind the playhead (seconds). */
const KEEP_BEHIND = 10;

class Restart extends Error {}

export class LivePlayer {
  /**
   * @param {HTMLVideoElement} video
   * @param {string} url the camera's signed `live_url` (multivariant playlist)
   * @param {{onStatus?: (text: string) => void, refreshUrl?: () => Promise<string>}} options
   *   refreshUrl gives a new signed URL when the current one expires.
   */
  constructor(video, url, options = {}) {
    this.video = video;
    this.url = new URL(url, location.href);
    this.onStatus = options.onStatus ?? (() => {});
    this.refreshUrl = options.refreshUrl ?? null;
    this.stopped = false;
    this.controller = new AbortController();
  }

  async start() {
    while (!this.stopped) {
      try {
        await this.play();
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof Expired && this.refreshUrl) {
          this.url = new URL(await this.refreshUrl(), location.href);
          continue;
        }
        if (!(error instanceof Restart)) this.onStatus(`Live view interrupted: ${error.message}`);
        await sleep(1000);
      }
    }
  }

  stop() {
    this.stopped = true;
    this.controller.abort();
    this.video.removeAttribute('src');
    this.video.load();
  }

  async play() {
    const index = await this.text(this.url);
    const codecs = attribute(index, 'CODECS');
    const mediaLine = index.split('\n').find((line) => line && !line.startsWith('#'));
    if (!codecs || !mediaLine) throw new Error('the live playlist lists no stream');
    const mime = `video/mp4; codecs="${codecs}"`;
    if (!('MediaSource' in window) || !MediaSource.isTypeSupported(mime)) {
      this.onStatus('Playing with the browser\'s own HLS player.');
      this.video.src = this.url.href;
      await this.video.play().catch(() => {});
      await new Promise(() => {}); // until stopped
    }
    const media = new URL(mediaLine, this.url);
    const source = new MediaSource();
    this.video.src = URL.createObjectURL(source);
    await new Promise((resolve) => source.addEventListener('sourceopen', resolve, { once: true }));
    const buffer = source.addSourceBuffer(mime);
    buffer.mode = 'segments';
    let map = null;
    let next = null;
    this.onStatus('Live');
    while (!this.stopped) {
      const url = new URL(media);
      if (next) {
        url.searchParams.set('_HLS_msn', next.msn);
        url.searchParams.set('_HLS_part', next.index);
      }
      const playlist = parseMedia(await this.text(url));
      let todo;
      if (next === null) {
        // Start at the newest part a decoder can start from.
        const start = findLastIndex(playlist.parts, (part) => part.independent);
        if (start < 0) { await sleep(200); continue; }
        todo = playlist.parts.slice(start);
      } else {
        todo = playlist.parts.filter((part) => part.msn > next.msn
          || (part.msn === next.msn && part.index >= next.index));
        const oldest = playlist.parts[0];
        if (oldest && (oldest.msn > next.msn)) {
          // Fell behind what the appliance keeps: start over.
          throw new Restart();
        }
      }
      for (const part of todo) {
        if (part.map !== map) {
          // A new initialisation segment (the camera reconnected): a new decoder.
          if (map !== null) throw new Restart();
          await append(buffer, await this.bytes(new URL(part.map, media)));
          map = part.map;
        }
        await append(buffer, await this.bytes(new URL(part.uri, media)));
        next = { msn: part.msn, index: part.index + 1 };
      }
      this.keepUp(buffer);
    }
  }

  /** Stays near the newest frame and lets go of old video. */
  keepUp(buffer) {
    const ranges = this.video.buffered;
    if (ranges.length === 0) return;
    const end = ranges.end(ranges.length - 1);
    if (end - this.video.currentTime > MAX_LAG || this.video.currentTime < ranges.start(0)) {
      this.video.currentTime = Math.max(ranges.start(ranges.length - 1), end - HOLD_BACK);
    }
    if (this.video.paused) this.video.play().catch(() => {});
    const behind = this.video.currentTime - KEEP_BEHIND;
    if (behind > ranges.start(0) + KEEP_BEHIND && !buffer.updating) buffer.remove(0, behind);
  }

  async fetch(url) {
    const response = await fetch(url, { signal: this.controller.signal, cache: 'no-store' });
    if (response.status === 403) throw new Expired('the live URL expired');
    if (!response.ok) {
      const detail = await response.json().then((body) => body.error?.message, () => response.statusText);
      throw new Error(`${response.status}: ${detail}`);
    }
    return response;
  }

  async text(url) {
    return (await this.fetch(url)).text();
  }

  async bytes(url) {
    return (await this.fetch(url)).arrayBuffer();
  }
}

class Expired extends Error {}

/** The parts a media playlist lists, each with its segment number, index and init segment. */
export function parseMedia(text) {
  const parts = [];
  let sequence = 0;
  let segment = 0;
  let index = 0;
  let map = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#EXT-X-MEDIA-SEQUENCE:')) {
      sequence = Number(line.slice('#EXT-X-MEDIA-SEQUENCE:'.length));
    } else if (line.startsWith('#EXT-X-MAP:')) {
      map = attribute(line, 'URI');
    } else if (line.startsWith('#EXT-X-PART:')) {
      parts.push({
        msn: sequence + segment,
        index,
        uri: attribute(line, 'URI'),
        independent: line.includes('INDEPENDENT=YES'),
        map,
      });
      index += 1;
    } else if (line && !line.startsWith('#')) {
      // A whole segment's URI closes it.
      segment += 1;
      index = 0;
    }
  }
  return { parts };
}

function attribute(text, name) {
  const match = text.match(new RegExp(`${name}="([^"]*)"`));
  return match ? match[1] : null;
}

function findLastIndex(items, predicate) {
  for (let i = items.length - 1; i >= 0; i -= 1) if (predicate(items[i])) return i;
  return -1;
}

function append(buffer, data) {
  return new Promise((resolve, reject) => {
    buffer.addEventListener('updateend', resolve, { once: true });
    buffer.addEventListener('error', () => reject(new Error('the browser refused the video')), { once: true });
    buffer.appendBuffer(data);
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// The LAN console: a guard signs in with an access token, sees the site's cameras and opens
// one's live view. The token stays in this tab's session storage; every API call carries it.
import { LivePlayer } from './live.js';

const TOKEN = 'gatehouse.token';
const REFRESH_MS = 10_000;
const $ = (id) => document.getElementById(id);

let player = null;
let cameras = [];

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` },
    cache: 'no-store',
  });
  if (response.status === 401) {
    signOut('The access token was refused.');
    throw new Error('signed out');
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error?.message ?? `${path}: ${response.status}`);
  return body;
}

function signOut(reason = '') {
  sessionStorage.removeItem(TOKEN);
  closeViewer();
  $('cameras').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = reason;
}

async function signedIn() {
  $('sign-in').hidden = true;
  $('sign-out').hidden = false;
  $('cameras').hidden = false;
  await loadCameras();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('camera');
  if (wanted) openViewer(wanted);
}

async function loadCameras() {
  try {
    cameras = await api('/api/v1/cameras');
    $('cameras-error').textContent = '';
  } catch (error) {
    $('cameras-error').textContent = `Cannot list the cameras: ${error.message}`;
    return;
  }
  const list = $('camera-list');
  list.replaceChildren(...cameras.map((camera) => {
    const item = document.createElement('li');
    item.dataset.camera = camera.id;
    const title = document.createElement('h3');
    title.textContent = camera.id;
    const status = document.createElement('p');
    const state = camera.status ?? 'unknown';
    status.className = `status-${state}`;
    status.textContent = camera.reason ? `${state}: ${camera.reason}` : state;
    const snapshot = document.createElement('img');
    snapshot.alt = `Snapshot of ${camera.id}`;
    snapshot.src = camera.snapshot_url;
    const live = document.createElement('button');
    live.textContent = 'Live';
    live.addEventListener('click', () => { location.hash = `camera=${encodeURIComponent(camera.id)}`; openViewer(camera.id); });
    item.append(title, status, snapshot, live);
    return item;
  }));
}

function openViewer(id) {
  const camera = cameras.find((c) => c.id === id);
  if (!camera) {
    $('cameras-error').textContent = `There is no camera ${id}.`;
    return;
  }
  closeViewer();
  $('viewer').hidden = false;
  $('viewer-title').textContent = camera.id;
  player = new LivePlayer($('live'), camera.live_url, {
    onStatus: (text) => { $('viewer-status').textContent = text; },
    refreshUrl: async () => (await api('/api/v1/cameras')).find((c) => c.id === id).live_url,
  });
  player.start();
}

function closeViewer() {
  if (player) player.stop();
  player = null;
  $('viewer').hidden = true;
}

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN, $('token').value);
  $('token').value = '';
  await signedIn();
});
$('sign-out').addEventListener('click', () => signOut());
$('viewer-close').addEventListener('click', () => { history.replaceState(null, '', '#'); closeViewer(); });
setInterval(() => { if (sessionStorage.getItem(TOKEN)) loadCameras(); }, REFRESH_MS);

if (sessionStorage.getItem(TOKEN)) signedIn(); else signOut();

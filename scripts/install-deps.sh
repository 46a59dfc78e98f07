#!/usr/bin/env bash
# Installs the Debian packages Gatehouse needs to build and test, skipping those present.
# Rust itself (cargo, rustc 1.95+) must already be installed (rustup).
set -euo pipefail

# tzdata: schedules run in the site's IANA time zone (site.timezone).
# socat: the Modbus RTU tests run the serial bus over a pseudo-terminal pair.
# GStreamer: the video adapter (libraries, RTSP server for re-streaming and the test camera),
# its codecs (x264/x265 in -ugly/-bad, avdec in -libav), gst-discoverer (-base-apps) for tests,
# and the test camera's clock overlay (-x holds the Pango elements; it needs a font).
# chromium: the LAN console's live view is tested and measured in a headless browser.
packages=(build-essential pkg-config python3 python3-venv ca-certificates curl protobuf-compiler mosquitto mosquitto-clients tzdata socat
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
    gstreamer1.0-x fonts-dejavu-core chromium)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust 1.95 or newer with rustup first" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The relay's store tests need PostgreSQL on 127.0.0.1:5432 with trust auth for postgres.
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "install-deps: installing postgresql" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    echo "install-deps: starting PostgreSQL" >&2
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi

#!/usr/bin/env bash
# Installs what the hil-tests need besides Rust: a Python virtualenv at <repo>/.venv with
# pymodbus and pyserial (the third-party Modbus TCP and RTU peer,
# hil-tests/peers/pymodbus_device.py; the RTU tests also need socat, from
# scripts/install-deps.sh) and BACpypes3 (the third-party BACnet/IP peer,
# hil-tests/peers/bacnet_device.py, used by bacnet/tests/).
#
# Idempotent: does nothing that is already done. On a fresh Debian machine it first installs
# python3-venv with apt-get, only if `python3 -m venv` cannot work without it.
# Needs Python >= 3.10 (pymodbus 3.16). Set PYTHON to use another interpreter than python3.
set -euo pipefail

PYMODBUS_VERSION=3.16.1
PYSERIAL_VERSION=3.5
BACPYPES3_VERSION=0.0.110
PYTHON=${PYTHON:-python3}
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$venv/bin/python" ]; then
    # Debian splits venv's ensurepip into python3-venv; without it `-m venv` fails half-way.
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "setup-test-deps: installing python3-venv" >&2
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    fi
    echo "setup-test-deps: creating $venv" >&2
    rm -rf "$venv" # a half-made one from an earlier failure
    "$PYTHON" -m venv "$venv"
fi

# Installs NAME==VERSION into the venv unless that version is already there.
pip_pin() {
    local name=$1 version=$2 installed
    installed=$("$venv/bin/python" -c \
        "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    if [ "$installed" != "$version" ]; then
        echo "setup-test-deps: installing $name==$version into $venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$name==$version"
    fi
    echo "setup-test-deps: $venv has $name $version" >&2
}

pip_pin pymodbus "$PYMODBUS_VERSION"
pip_pin pyserial "$PYSERIAL_VERSION"
pip_pin bacpypes3 "$BACPYPES3_VERSION"

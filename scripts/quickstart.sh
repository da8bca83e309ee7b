#!/usr/bin/env bash
# Citadel's main job, end to end, on a fresh Debian machine with Python 3.11:
# install citadel into .venv, seal the example application, and run it in the protected engine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/citadel ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "== sealing examples/hello (code and data encrypted)"
.venv/bin/citadel seal examples/hello -o "$work/hello.img" --key-out "$work/hello.key"
echo "== running it in the protected engine"
.venv/bin/citadel run --image "$work/hello.img" --key-file "$work/hello.key" app.py Ada

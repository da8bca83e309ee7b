#!/usr/bin/env bash
# Set up and run Citadel's whole test suite on a fresh Debian machine with Python 3.11.
# Installs the system packages the tests use (PostgreSQL, swtpm, a C compiler, PyPy), makes a
# virtual environment in .venv-test, installs citadel with its dev extra, and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PACKAGES="build-essential python3-dev python3-venv pypy3 pypy3-venv postgresql swtpm swtpm-tools tpm2-tools libcairo2-dev pkg-config"
missing=""
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv-test/bin/python ]; then "$PY" -m venv .venv-test; fi
.venv-test/bin/python -m pip install -q --upgrade pip
.venv-test/bin/python -m pip install -q -e '.[dev]'
# The PyPy engine (citadel run --engine pypy3): a PyPy venv in .venv-test/pypy-engine with cryptography 41.0.7.
.venv-test/bin/citadel engine setup pypy3

# -n 2: this project's machines have two cores. Slow tests run too (they are marked, not skipped).
exec .venv-test/bin/python -m pytest -n 2 -q "$@"

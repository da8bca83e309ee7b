#!/usr/bin/env bash
# Citadel's main job, end to end, on a fresh Debian machine with Python 3.11:
# install citadel with its CAS into .venv, start a local CAS (SQLite), register this machine as a
# simulation-mode platform, seal the example application, create its session (policy), and run it
# attested: the engine proves its measurement to the CAS and receives the image key, the program's
# arguments and environment (with a generated secret) and a file it serves from memory.
#
# Everything it makes (the CAS's state, your client key, the platform key, the image) lives in a
# temporary directory that is removed at the end; the CAS is stopped even if a step fails.
# CITADEL_QUICKSTART_VENV=DIR uses an existing virtual environment that has citadel[cas] instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${CITADEL_QUICKSTART_VENV:-}" ]; then
  VENV="$CITADEL_QUICKSTART_VENV"
  unset CITADEL_QUICKSTART_VENV   # not an engine setting
else
  VENV=.venv
  PY="${PYTHON:-python3}"
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  if [ ! -x .venv/bin/citadel ]; then "$PY" -m venv .venv; fi
  echo "== installing citadel with the CAS into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q '.[cas]'
fi
citadel="$VENV/bin/citadel"
python="$VENV/bin/python"

work="$(mktemp -d)"
cas_pid=""
stop_cas() {
  if [ -n "$cas_pid" ] && kill -0 "$cas_pid" 2>/dev/null; then
    kill "$cas_pid" 2>/dev/null || true
    wait "$cas_pid" 2>/dev/null || true
  fi
  cas_pid=""
}
cleanup() { stop_cas; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Keep this demo's keys and state out of your home directory, and use simulation mode: no TEE is
# needed, and memory is not protected from this machine's administrator (Citadel says so).
export XDG_CONFIG_HOME="$work/config" CITADEL_CAS_STATE_DIR="$work/cas" CITADEL_MODE=sim

echo "== 1. starting a local CAS (SQLite, state in $CITADEL_CAS_STATE_DIR, a free port on 127.0.0.1)"
"$citadel" cas serve --port 0 >"$work/cas.out" 2>"$work/cas.log" &
cas_pid=$!
for _ in $(seq 600); do
  grep -q '^operators: ' "$work/cas.out" 2>/dev/null && break
  if ! kill -0 "$cas_pid" 2>/dev/null; then echo "the CAS did not start:" >&2; tail -20 "$work/cas.log" >&2; exit 1; fi
  sleep 0.1
done
CITADEL_CAS_ADDR="$(sed -n 's/^citadel CAS listening on //p' "$work/cas.out")"
[ -n "$CITADEL_CAS_ADDR" ] || { echo "the CAS did not start within 60 s" >&2; tail -20 "$work/cas.log" >&2; exit 1; }
export CITADEL_CAS_ADDR
"$python" - "$CITADEL_CAS_ADDR" "$(cat "$CITADEL_CAS_STATE_DIR/tls/fingerprint")" <<'EOF'
import sys, time
from citadel.attest.client import CasError, CasTransport
deadline = time.monotonic() + 60
while True:  # ready: the database answers and the audit writer runs
    try:
        with CasTransport(sys.argv[1], sys.argv[2], timeout=5) as cas:
            if cas.request("GET", "/readyz")[0] == 200:
                break
    except CasError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the CAS did not become ready within 60 s")
    time.sleep(0.1)
EOF
sed 's/^/   /' "$work/cas.out"

echo "== 2. registering this machine as a sim platform (its key signs the engine's evidence)"
"$citadel" platform add quickstart-host

echo "== 3. sealing examples/hello (code and data encrypted; the key goes to the CAS, not to the host)"
"$citadel" seal examples/hello -o "$work/hello.img" --key-out "$work/hello.key" --json >"$work/seal.json"
tag="$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["tag"])' "$work/seal.json")"
echo "   image tag: $tag"

echo "== 4. measuring the engine as it will run (sim mode, pinned to this CAS)"
measurement="$("$citadel" measure --cas "$CITADEL_CAS_ADDR" --json \
  | "$python" -c 'import json, sys; print(json.load(sys.stdin)["measurement"])')"
echo "   engine measurement: $measurement"

echo "== 5. creating the session: who may receive what (docs/policy.md)"
cat >"$work/hello.yaml" <<EOF
name: hello
version: "1"
services:
  - name: app
    command: app.py Ada                          # the program and its arguments
    environment:
      HELLO_TOKEN: \$\$citadel:token\$\$             # a secret the CAS generates
      HELLO_MOTTO: /etc/hello/motto.txt
    image:
      key: \$\$citadel:image_key\$\$
      tag: $tag
    attestation:
      tee: [sim]
      measurements: [$measurement]
      tolerate: [sim]                            # simulation mode: memory is not protected
    inject_files:                                # served from the engine's memory, never the disk
      - path: /etc/hello/motto.txt
        content: "sealed code, an attested engine, secrets only in memory"
secrets:
  - {name: token, kind: ascii, size: 24}
  - {name: image_key, kind: binary, value: "$(cat "$work/hello.key")"}
EOF
"$citadel" session create "$work/hello.yaml"
rm -f "$work/hello.key"   # the CAS keeps the image key now

echo "== 6. running it attested: the engine asks the CAS for hello/app"
"$citadel" run --cas "$CITADEL_CAS_ADDR" --config-id hello/app --image "$work/hello.img"

echo "== done: the engine proved its measurement to the CAS, which released the image key, the"
echo "   arguments, HELLO_TOKEN and /etc/hello/motto.txt to it alone; nothing secret touched the disk."
echo "   (simulation mode: memory was not protected from this machine's administrator)"
stop_cas

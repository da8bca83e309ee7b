"""Policies the integration tests create (each test uses its own session name)."""

from __future__ import annotations

MEASUREMENT = "ab" * 32
TAG = "cd" * 32
IMPORTED = "imported-secret-value-7f3a"


def policy(name: str, *, tolerate: str = "[sim]", measurement: str = MEASUREMENT, extra: str = "") -> str:
    return f"""\
name: {name}
version: "1"
services:
  - name: app
    command: app.py --token $$citadel:token$$
    environment:
      API_KEY: $$citadel:api_key$$
    image:
      key: $$citadel:image_key$$
      tag: {TAG}
    attestation:
      tee: [sim]
      measurements: [{measurement}]
      tolerate: {tolerate}
    inject_files:
      - path: /etc/app.conf
        content: "password=$$citadel:api_key$$"
secrets:
  - {{name: token, kind: ascii, size: 24}}
  - {{name: api_key, kind: ascii, value: {IMPORTED}}}
  - {{name: image_key, kind: binary, size: 32}}
  - {{name: tls_key, kind: private-key}}
{extra}"""

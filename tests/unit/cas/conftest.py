"""Shared assets for the CAS unit tests: a valid policy and a context on a temporary SQLite state."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

TAG = "cd" * 32
MEASUREMENT = "ab" * 32

VALID_POLICY = f"""\
name: demo
version: "1"
access_policy:
  read: [CREATOR]
  update: [CREATOR]
services:
  - name: app
    command: python app.py --token $$citadel:token$$
    environment:
      API_KEY: $$citadel:api_key$$
      TOKEN_HEX: $$citadel:token:hex$$
    host_environment: [LANG]
    pwd: /app
    image:
      key: $$citadel:image_key$$
      tag: {TAG}
    attestation:
      tee: [sim, tdx]
      measurements:
        - {MEASUREMENT}
        - mrtd: "{"ee" * 48}"
      tolerate: [sim]
    inject_files:
      - path: /etc/app.conf
        content: |
          password=$$citadel:api_key$$
          cert=$$citadel:server_cert:pem$$
      - path: /etc/blob
        secret: blob
    volumes:
      - {{name: data, path: /data}}
secrets:
  - {{name: token, kind: ascii, size: 16}}
  - {{name: api_key, kind: ascii, value: "imported-api-key-value"}}
  - {{name: image_key, kind: binary, size: 32}}
  - {{name: blob, kind: binary, value: "00ff10"}}
  - {{name: ca, kind: x509-ca, common_name: Demo CA}}
  - {{name: server_key, kind: private-key, algorithm: ec-p256}}
  - {{name: server_cert, kind: x509, issuer: ca, private_key: server_key, dns: [app.example], ip: [127.0.0.1]}}
volumes:
  - name: data
"""


@pytest.fixture
def valid_policy() -> str:
    return VALID_POLICY


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[object]:
    from citadel.cas.services.context import build_context
    from citadel.cas.settings import CasSettings

    context = build_context(CasSettings.build(state_dir=tmp_path / "state"))
    yield context
    context.close()

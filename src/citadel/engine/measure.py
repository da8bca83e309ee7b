"""The engine measurement: one SHA-256 naming the code the engine runs and how it was told to run.

measurement = SHA-256 of the canonical text (docs/measurement.md)::

    citadel-engine-measurement/v1
    engine-manifest=<SHA-256 of the engine manifest file>
    <key>=<value>            one line per measured setting, sorted by key

The engine manifest pins every file of the trusted base (trusted_import.py enforces it); the
measured settings are those that change what the engine may load, how it is protected, or whom
it trusts: ``allow_dlopen`` (0/1), ``engine`` (cpython, pypy), ``mode`` (hw, sim) and, when the
engine is pointed at a CAS, ``cas_fingerprint`` (the pinned CAS key), so an engine pointed at
another CAS has another measurement. A policy pins the result; anyone can recompute it from the
manifest and these values. Engine-safe, Python 3.9.
"""

from __future__ import annotations

import hashlib
import sys

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Dict, Mapping, Optional

MEASUREMENT_HEADER = "citadel-engine-measurement/v1"


def measured_settings(*, mode: str, allow_dlopen: bool, engine: str = "",
                      cas_fingerprint: Optional[str] = None) -> Dict[str, str]:
    """The settings that are part of the measurement, as their canonical strings.

    ``cas_fingerprint`` (64 lowercase hex digits, the pinned CAS key) adds the line
    ``cas_fingerprint=<hex>``; without a pin there is no such line (and the engine cannot attest).
    """
    if mode not in ("hw", "sim"):
        raise ValueError(f"the measured mode must be hw or sim, not {mode!r}")
    measured = {
        "allow_dlopen": "1" if allow_dlopen else "0",
        "engine": engine or sys.implementation.name,
        "mode": mode,
    }
    if cas_fingerprint is not None:
        if len(cas_fingerprint) != 64 or any(c not in "0123456789abcdef" for c in cas_fingerprint):
            raise ValueError("the pinned CAS fingerprint must be 64 lowercase hex digits")
        measured["cas_fingerprint"] = cas_fingerprint
    return measured


def measurement_text(manifest_sha256: str, settings: Mapping[str, str]) -> str:
    """The canonical text the measurement hashes (see the module docstring)."""
    if len(manifest_sha256) != 64 or any(c not in "0123456789abcdef" for c in manifest_sha256):
        raise ValueError("the manifest digest must be 64 lowercase hex digits")
    lines = [MEASUREMENT_HEADER, f"engine-manifest={manifest_sha256}"]
    for key in sorted(settings):
        value = settings[key]
        if not key or any(c in key for c in "=\n") or "\n" in value or key == "engine-manifest":
            raise ValueError(f"the measured setting {key!r} cannot be written canonically")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def compute_measurement(manifest_sha256: str, settings: Mapping[str, str]) -> str:
    """SHA-256 (hex) of the canonical text."""
    return hashlib.sha256(measurement_text(manifest_sha256, settings).encode("utf-8")).hexdigest()


def measurement_of_manifest(manifest: bytes, *, mode: str, allow_dlopen: bool, engine: str = "",
                            cas_fingerprint: Optional[str] = None) -> str:
    """Recompute a measurement from an engine manifest file's bytes (for auditors and tests)."""
    digest = hashlib.sha256(manifest).hexdigest()
    return compute_measurement(digest, measured_settings(mode=mode, allow_dlopen=allow_dlopen, engine=engine,
                                                         cas_fingerprint=cas_fingerprint))

"""Simulation-mode evidence: a statement signed by a registered platform key (no TEE involved).

Engine-safe (standard library + `cryptography`, Python 3.9). In sim mode there is no hardware to
vouch for the engine; instead an operator registers a machine's Ed25519 *platform key* with the CAS
(`citadel platform add`), and the engine on that machine signs a statement of its measurement and
the report data with it. This proves which registered machine asked, not that its memory is
protected: whoever is root there can read the key. A session accepts sim evidence only if it
tolerates `sim`.

Layout (all integers big-endian; docs/attestation-protocol.md has the same table):

    header      SIM_HEADER: magic "CSIM", u16 version (1), u16 flags (bit 0: debug; others zero),
                64 bytes report data, 32 bytes raw Ed25519 platform public key, u16 measurement count
    each        MEASUREMENT_HEAD: u8 name length, u16 value length; then the name (ASCII
                [a-z0-9_-], 1..64 bytes, strictly increasing order) and the value (ASCII, 1..1024 bytes)
    signature   64 bytes Ed25519 over SIGN_LABEL || every byte before the signature
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import struct
from collections import abc
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from citadel.attest.evidence import VerifiedEvidence
from citadel.errors import CitadelError, VerificationError

MAGIC = b"CSIM"
VERSION = 1
FLAG_DEBUG = 0x0001
SIM_HEADER = struct.Struct(">4sHH64s32sH")
MEASUREMENT_HEAD = struct.Struct(">BH")
SIGNATURE_SIZE = 64
SIGN_LABEL = b"citadel/sim-evidence/v1\x00"
MAX_MEASUREMENTS = 32
MAX_VALUE = 1024
_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
_VALUE = re.compile(r"^[\x21-\x7e]{1,1024}$")


class PlatformKeyError(CitadelError):
    """The sim platform key file is missing or unusable."""


def platform_fingerprint(public_key: bytes) -> str:
    """How a sim platform is named in policies and audit records: SHA-256 of the raw public key, hex."""
    return hashlib.sha256(public_key).hexdigest()


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def default_platform_key_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    """$CITADEL_PLATFORM_KEY, else ~/.config/citadel/platform.key."""
    env = os.environ if environ is None else environ
    if env.get("CITADEL_PLATFORM_KEY"):
        return Path(env["CITADEL_PLATFORM_KEY"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "citadel" / "platform.key"


def create_platform_key(path: Path) -> Ed25519PrivateKey:
    """Make a new platform key and write it as PKCS#8 PEM, readable by its owner only (0600)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise PlatformKeyError(
            f"cannot make the sim platform key {str(path)!r}: {exc.strerror or exc}",
            "give --key (or CITADEL_PLATFORM_KEY) a path in a directory you can write to",
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def load_platform_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlatformKeyError(
            f"cannot read the sim platform key {str(path)!r}: {exc.strerror}",
            "register this machine first: citadel platform add NAME --key PATH (it creates the key)",
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise PlatformKeyError(
            f"{str(path)!r} is not an Ed25519 private key in PEM",
            "point CITADEL_PLATFORM_KEY at the key `citadel platform add --key` created",
        )
    return key


def make_evidence(
    platform_key: Ed25519PrivateKey,
    report_data: bytes,
    measurements: Mapping[str, str],
    *,
    debug: bool = False,
) -> bytes:
    """Sim evidence: the engine's measurements and the 64 report-data bytes, signed by the platform."""
    if len(report_data) != 64:
        raise ValueError("sim report data is 64 bytes")
    if len(measurements) > MAX_MEASUREMENTS:
        raise ValueError("too many measurements")
    body = bytearray(
        SIM_HEADER.pack(
            MAGIC,
            VERSION,
            FLAG_DEBUG if debug else 0,
            report_data,
            public_bytes(platform_key),
            len(measurements),
        )
    )
    for name in sorted(measurements):
        value = measurements[name]
        if not _NAME.match(name) or not _VALUE.match(value):
            raise ValueError(f"measurement {name!r} has an invalid name or value")
        body += MEASUREMENT_HEAD.pack(len(name), len(value)) + name.encode() + value.encode()
    return bytes(body) + platform_key.sign(SIGN_LABEL + bytes(body))


def _malformed(detail: str) -> VerificationError:
    return VerificationError(
        "format",
        f"sim evidence is malformed: {detail}",
        "the engine must send evidence made by citadel.attest.sim.make_evidence",
    )


class SimVerifier:
    """Checks sim evidence against the platform keys an operator registered (trust anchors)."""

    kind = "sim"

    def __init__(self, platform_keys: Union[Iterable[bytes], Mapping[str, bytes]]) -> None:
        """`platform_keys`: raw public keys, or a mapping fingerprint -> raw key (may look up lazily)."""
        if isinstance(platform_keys, abc.Mapping):
            self._keys: Mapping[str, bytes] = platform_keys
        else:
            self._keys = {platform_fingerprint(k): bytes(k) for k in platform_keys}

    def verify(
        self, evidence: bytes, *, at: _dt.datetime, collateral: Optional[Mapping[str, Any]] = None
    ) -> VerifiedEvidence:
        if len(evidence) < SIM_HEADER.size + SIGNATURE_SIZE:
            raise _malformed("too short")
        magic, version, flags, report, platform_pub, count = SIM_HEADER.unpack_from(evidence)
        if magic != MAGIC:
            raise _malformed("wrong magic")
        if version != VERSION:
            raise _malformed(f"version {version} is not supported")
        if flags & ~FLAG_DEBUG:
            raise _malformed("unknown flags set")
        if count > MAX_MEASUREMENTS:
            raise _malformed("too many measurements")
        fingerprint = platform_fingerprint(platform_pub)
        registered = self._keys.get(fingerprint)
        if registered is None or registered != platform_pub:
            raise VerificationError(
                "platform",
                f"sim platform {fingerprint[:16]}... is not registered with this CAS",
                "an operator registers the machine: citadel platform add NAME --key PATH",
            )
        body, signature = evidence[:-SIGNATURE_SIZE], evidence[-SIGNATURE_SIZE:]
        try:
            Ed25519PublicKey.from_public_bytes(registered).verify(signature, SIGN_LABEL + body)
        except InvalidSignature:
            raise VerificationError(
                "signature",
                "the sim evidence's signature does not verify (tampered)",
                "the evidence was changed on its way; make it again",
            ) from None
        measurements = self._measurements(body, count)
        return VerifiedEvidence(
            kind="sim",
            report_data=report,
            measurements=measurements,
            debug=bool(flags & FLAG_DEBUG),
            tcb_status="n/a",
            platform=fingerprint,
            details={"mode": "sim: memory is not protected from the host's root"},
        )

    @staticmethod
    def _measurements(body: bytes, count: int) -> Dict[str, str]:
        offset = SIM_HEADER.size
        out: Dict[str, str] = {}
        previous = ""
        for _ in range(count):
            if offset + MEASUREMENT_HEAD.size > len(body):
                raise _malformed("measurement list truncated")
            name_len, value_len = MEASUREMENT_HEAD.unpack_from(body, offset)
            offset += MEASUREMENT_HEAD.size
            end = offset + name_len + value_len
            if end > len(body) or value_len > MAX_VALUE:
                raise _malformed("measurement list truncated")
            try:
                name = body[offset : offset + name_len].decode("ascii")
                value = body[offset + name_len : end].decode("ascii")
            except UnicodeDecodeError:
                raise _malformed("measurement is not ASCII") from None
            if not _NAME.match(name) or not _VALUE.match(value) or name <= previous:
                raise _malformed("measurement names must be unique, sorted, [a-z0-9_-]")
            out[name] = value
            previous = name
            offset = end
        if offset != len(body):
            raise _malformed("trailing bytes")
        return out

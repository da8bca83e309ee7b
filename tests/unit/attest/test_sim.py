"""Simulation-mode evidence: production and verification (attest/sim.py)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.attest import sim
from citadel.errors import VerificationError

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
REPORT = bytes(range(64))


@pytest.fixture(scope="module")
def platform() -> sim.Ed25519PrivateKey:
    return sim.Ed25519PrivateKey.generate()


def test_round_trip(platform: sim.Ed25519PrivateKey) -> None:
    evidence = sim.make_evidence(platform, REPORT, {"engine": "ab" * 32, "image": "cd"})
    verified = sim.SimVerifier([sim.public_bytes(platform)]).verify(evidence, at=NOW)
    assert verified.kind == "sim"
    assert verified.report_data == REPORT
    assert verified.measurements == {"engine": "ab" * 32, "image": "cd"}
    assert verified.debug is False
    assert verified.platform == sim.platform_fingerprint(sim.public_bytes(platform))


def test_debug_flag_is_reported(platform: sim.Ed25519PrivateKey) -> None:
    evidence = sim.make_evidence(platform, REPORT, {"engine": "00"}, debug=True)
    assert sim.SimVerifier([sim.public_bytes(platform)]).verify(evidence, at=NOW).debug is True


def test_lookup_mapping_is_accepted(platform: sim.Ed25519PrivateKey) -> None:
    pub = sim.public_bytes(platform)
    verifier = sim.SimVerifier({sim.platform_fingerprint(pub): pub})
    verifier.verify(sim.make_evidence(platform, REPORT, {"engine": "00"}), at=NOW)


def test_unregistered_platform_is_refused(platform: sim.Ed25519PrivateKey) -> None:
    other = sim.Ed25519PrivateKey.generate()
    evidence = sim.make_evidence(other, REPORT, {"engine": "00"})
    with pytest.raises(VerificationError) as info:
        sim.SimVerifier([sim.public_bytes(platform)]).verify(evidence, at=NOW)
    assert info.value.check == "platform"


def test_mapping_entry_with_another_key_is_refused(platform: sim.Ed25519PrivateKey) -> None:
    pub = sim.public_bytes(platform)
    other = sim.public_bytes(sim.Ed25519PrivateKey.generate())
    evidence = sim.make_evidence(platform, REPORT, {"engine": "00"})
    with pytest.raises(VerificationError):
        sim.SimVerifier({sim.platform_fingerprint(pub): other}).verify(evidence, at=NOW)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tampered_evidence_is_refused(platform: sim.Ed25519PrivateKey, data: st.DataObject) -> None:
    evidence = bytearray(sim.make_evidence(platform, REPORT, {"engine": "ab" * 32}))
    index = data.draw(st.integers(min_value=0, max_value=len(evidence) - 1))
    evidence[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(VerificationError):
        sim.SimVerifier([sim.public_bytes(platform)]).verify(bytes(evidence), at=NOW)


@pytest.mark.parametrize("defect", ["empty", "truncated", "wrong_magic", "unknown_version", "trailing_bytes"])
def test_malformed_evidence_is_refused(platform: sim.Ed25519PrivateKey, defect: str) -> None:
    good = sim.make_evidence(platform, REPORT, {"engine": "00"})
    bad = {
        "empty": b"",
        "truncated": good[:50],
        "wrong_magic": b"XSIM" + good[4:],
        "unknown_version": good[:4] + b"\x00\x02" + good[6:],
        "trailing_bytes": good + b"\x00",
    }[defect]
    with pytest.raises(VerificationError):
        sim.SimVerifier([sim.public_bytes(platform)]).verify(bad, at=NOW)


@settings(max_examples=40, deadline=None)
@given(
    measurements=st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=64),
        st.text("0123456789abcdefABCDEF", min_size=1, max_size=128),
        max_size=8,
    ),
    debug=st.booleans(),
    report=st.binary(min_size=64, max_size=64),
)
def test_measurements_round_trip(
    platform: sim.Ed25519PrivateKey, measurements: dict, debug: bool, report: bytes
) -> None:
    evidence = sim.make_evidence(platform, report, measurements, debug=debug)
    verified = sim.SimVerifier([sim.public_bytes(platform)]).verify(evidence, at=NOW)
    assert (verified.measurements, verified.debug, verified.report_data) == (measurements, debug, report)


def test_platform_key_file_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "platform.key"
    key = sim.create_platform_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sim.public_bytes(sim.load_platform_key(path)) == sim.public_bytes(key)


def test_platform_key_missing_or_wrong_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(sim.PlatformKeyError, match="cannot read"):
        sim.load_platform_key(tmp_path / "absent.key")
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not a key")
    with pytest.raises(sim.PlatformKeyError, match="not an Ed25519"):
        sim.load_platform_key(wrong)


def test_default_platform_key_path_follows_the_environment(tmp_path: Path) -> None:
    assert sim.default_platform_key_path({"CITADEL_PLATFORM_KEY": "/x/k"}) == Path("/x/k")
    assert sim.default_platform_key_path({"HOME": "/home/u"}) == Path("/home/u/.config/citadel/platform.key")

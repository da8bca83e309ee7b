"""The measurement's canonical text (docs/measurement.md): fixed vectors, and every input matters."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.measure import (
    compute_measurement,
    measured_settings,
    measurement_of_manifest,
    measurement_text,
)

MANIFEST_DIGEST = "ab" * 32


def test_canonical_text_is_exactly_as_documented() -> None:
    text = measurement_text(MANIFEST_DIGEST, measured_settings(mode="sim", allow_dlopen=False, engine="cpython"))
    assert text == ("citadel-engine-measurement/v1\n"
                    f"engine-manifest={MANIFEST_DIGEST}\n"
                    "allow_dlopen=0\n"
                    "engine=cpython\n"
                    "mode=sim\n")


def test_fixed_vector() -> None:
    """Recorded once from the text above; a change here changes every pinned measurement."""
    digest = compute_measurement(MANIFEST_DIGEST, measured_settings(mode="sim", allow_dlopen=False,
                                                                    engine="cpython"))
    text = (f"citadel-engine-measurement/v1\nengine-manifest={MANIFEST_DIGEST}\nallow_dlopen=0\n"
            "engine=cpython\nmode=sim\n")
    assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_every_measured_input_changes_the_measurement() -> None:
    base = dict(mode="sim", allow_dlopen=False, engine="cpython")
    variants = [base, {**base, "mode": "hw"}, {**base, "allow_dlopen": True}, {**base, "engine": "pypy"}]
    digests = {compute_measurement(MANIFEST_DIGEST, measured_settings(**v)) for v in variants}  # type: ignore[arg-type]
    digests.add(compute_measurement("cd" * 32, measured_settings(**base)))  # type: ignore[arg-type]
    assert len(digests) == 5


@settings(max_examples=50)
@given(st.binary(min_size=1, max_size=200), st.binary(min_size=1, max_size=200))
def test_different_manifests_give_different_measurements(a: bytes, b: bytes) -> None:
    if a != b:
        assert (measurement_of_manifest(a, mode="sim", allow_dlopen=False)
                != measurement_of_manifest(b, mode="sim", allow_dlopen=False))


def test_settings_are_sorted_so_order_does_not_matter() -> None:
    forward = {"a": "1", "b": "2"}
    backward = {"b": "2", "a": "1"}
    assert measurement_text(MANIFEST_DIGEST, forward) == measurement_text(MANIFEST_DIGEST, backward)


@pytest.mark.parametrize("bad", [{"x=y": "1"}, {"x": "1\n2"}, {"": "1"}, {"engine-manifest": "ff"}])
def test_settings_that_cannot_be_written_canonically_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        measurement_text(MANIFEST_DIGEST, bad)


def test_mode_must_be_resolved_and_digest_well_formed() -> None:
    with pytest.raises(ValueError):
        measured_settings(mode="auto", allow_dlopen=False)
    with pytest.raises(ValueError):
        measurement_text("AB" * 32, {})

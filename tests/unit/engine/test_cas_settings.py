"""The CAS settings (CITADEL_CAS_ADDR, CITADEL_CONFIG_ID, CITADEL_CAS_FINGERPRINT, CITADEL_PLATFORM_KEY,
CITADEL_TPM) and the pin's place in the measurement (docs/measurement.md)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.measure import compute_measurement, measured_settings, measurement_text
from citadel.engine.settings import parse_cas_addr, parse_fingerprint, parse_settings
from citadel.errors import UsageError

PIN = "6d" * 32
MANIFEST_DIGEST = "ab" * 32


@pytest.mark.parametrize("text, canonical", [
    ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
    ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
    ("cas.example:9000", "https://cas.example:9000"),
    ("https://cas.example", "https://cas.example:8443"),
    ("[::1]:8443", "https://[::1]:8443"),
    ("https://[2001:db8::1]", "https://[2001:db8::1]:8443"),
])
def test_cas_addresses_are_canonical(text: str, canonical: str) -> None:
    assert parse_cas_addr("CITADEL_CAS_ADDR", text) == canonical
    assert parse_settings({"CITADEL_CAS_ADDR": text}).cas_addr == canonical


@pytest.mark.parametrize("name, value, fragment", [
    ("CITADEL_CAS_ADDR", "http://cas:8443", "is not an https address"),
    ("CITADEL_CAS_ADDR", "https://cas:0", "has no valid port"),
    ("CITADEL_CAS_ADDR", "https://cas:99999", "has no valid port"),
    ("CITADEL_CAS_ADDR", "https://user@cas:1", "is not HOST:PORT"),
    ("CITADEL_CAS_ADDR", "2001:db8::1", "is not HOST:PORT"),
    ("CITADEL_CONFIG_ID", "hello", "is not SESSION/SERVICE"),
    ("CITADEL_CONFIG_ID", "hello/", "is not SESSION/SERVICE"),
    ("CITADEL_CONFIG_ID", "a/b/c", "is not SESSION/SERVICE"),
    ("CITADEL_CONFIG_ID", "../etc/app", "is not SESSION/SERVICE"),
    ("CITADEL_CAS_FINGERPRINT", "sha256:1234", "is not a CAS fingerprint"),
    ("CITADEL_CAS_FINGERPRINT", "zz" * 32, "is not a CAS fingerprint"),
    ("CITADEL_PLATFORM_KEY", "platform.key", "is not an absolute path"),
    ("CITADEL_TPM", "tcp:localhost", "is not a TPM channel"),
    ("CITADEL_TPM", "tpmrm0", "is not a TPM channel"),
])
def test_each_bad_cas_setting_is_one_clear_error(name: str, value: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_settings({name: value})
    assert caught.value.cause.startswith(f"{name}=") and fragment in caught.value.cause
    assert caught.value.remedy and "\n" not in caught.value.cause + caught.value.remedy


def test_fingerprints_in_every_written_form_are_one_value() -> None:
    colons = ":".join(PIN[i:i + 2] for i in range(0, 64, 2)).upper()
    for text in (PIN, f"sha256:{PIN}", f"SHA256:{PIN.upper()}", colons):
        assert parse_fingerprint("CITADEL_CAS_FINGERPRINT", text) == PIN


def test_the_settings_hold_what_the_cas_flow_needs() -> None:
    parsed = parse_settings({"CITADEL_CAS_ADDR": "127.0.0.1:8443", "CITADEL_CONFIG_ID": "hello/app",
                             "CITADEL_CAS_FINGERPRINT": f"sha256:{PIN}", "CITADEL_PLATFORM_KEY": "/keys/p.key",
                             "CITADEL_TPM": "tcp:127.0.0.1:2321"})
    assert (parsed.cas_addr, parsed.config_id, parsed.cas_fingerprint, parsed.platform_key, parsed.tpm) == (
        "https://127.0.0.1:8443", "hello/app", PIN, "/keys/p.key", "tcp:127.0.0.1:2321")
    assert parsed.unknown == ()
    assert parsed.describe()["CITADEL_CAS_FINGERPRINT"] == f"sha256:{PIN}"
    assert parse_settings({"CITADEL_TPM": "/dev/tpmrm0"}).tpm == "/dev/tpmrm0"


def test_the_pin_is_a_measured_line() -> None:
    text = measurement_text(MANIFEST_DIGEST, measured_settings(mode="sim", allow_dlopen=False, engine="cpython",
                                                               cas_fingerprint=PIN))
    assert text == ("citadel-engine-measurement/v1\n"
                    f"engine-manifest={MANIFEST_DIGEST}\n"
                    "allow_dlopen=0\n"
                    f"cas_fingerprint={PIN}\n"
                    "engine=cpython\n"
                    "mode=sim\n")
    assert compute_measurement(MANIFEST_DIGEST, measured_settings(
        mode="sim", allow_dlopen=False, engine="cpython", cas_fingerprint=PIN)) == hashlib.sha256(
        text.encode()).hexdigest()


def test_without_a_pin_the_measurement_is_unchanged() -> None:
    """Engines that never attest (local runs) keep the measurement they had before CAS pins existed."""
    assert "cas_fingerprint" not in measurement_text(MANIFEST_DIGEST, measured_settings(mode="sim",
                                                                                        allow_dlopen=False))


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_another_cas_gives_another_measurement(one: bytes, two: bytes) -> None:
    def measured(pin: str) -> str:
        return compute_measurement(MANIFEST_DIGEST, measured_settings(mode="sim", allow_dlopen=False,
                                                                      cas_fingerprint=pin))

    none = compute_measurement(MANIFEST_DIGEST, measured_settings(mode="sim", allow_dlopen=False))
    assert measured(one.hex()) != none
    assert (measured(one.hex()) == measured(two.hex())) == (one == two)


def test_a_pin_that_is_not_canonical_is_refused_by_the_measurement() -> None:
    with pytest.raises(ValueError):
        measured_settings(mode="sim", allow_dlopen=False, cas_fingerprint="AB" * 32)

"""The engine's CAS client: addresses, pins, the release document (attest/client.py)."""

from __future__ import annotations

import base64
import json

import pytest

from citadel.attest import client


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 8443)),
        ("https://cas.example:9443", ("cas.example", 9443)),
        ("https://cas.example:9443/", ("cas.example", 9443)),
        ("[::1]:8000", ("::1", 8000)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_cas_address(addr: str, expected: tuple) -> None:
    assert client.parse_cas_address(addr) == expected


@pytest.mark.parametrize("addr", ["http://cas:80", "cas:0", "cas:99999", "cas:port", "", "https://[::1", "[::1]x"])
def test_parse_cas_address_refuses(addr: str) -> None:
    with pytest.raises(client.CasError):
        client.parse_cas_address(addr)


def test_normalize_fingerprint_accepts_common_spellings() -> None:
    hexfp = "ab" * 32
    assert client.normalize_fingerprint("sha256:" + hexfp.upper()) == hexfp
    assert client.normalize_fingerprint(":".join(hexfp[i : i + 2] for i in range(0, 64, 2))) == hexfp
    with pytest.raises(client.CasError):
        client.normalize_fingerprint("abcd")


def _release(**changes: object) -> bytes:
    doc = {
        "version": 1,
        "config_id": "s/a",
        "session": "s",
        "service": "a",
        "session_hash": "00" * 32,
        "image": {"key": "11" * 32, "tag": "22" * 32},
        "argv": ["app.py", "x"],
        "module": None,
        "environment": {"A": "1"},
        "pwd": "/app",
        "files": [{"path": "/etc/c", "content": base64.b64encode(b"\x00bin").decode()}],
        "host_environment": ["LANG"],
        "host_arguments": True,
        "volumes": [{"name": "v", "path": "/data"}],
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_parse_release_and_pass_through() -> None:
    config = client.parse_release(_release(), "s/a")
    assert config.image_key == bytes.fromhex("11" * 32)
    assert config.files == {"/etc/c": b"\x00bin"}
    env = config.effective_environment({"LANG": "C", "PATH": "/evil", "A": "host"})
    assert env == {"LANG": "C", "A": "1"}  # policy wins; PATH is not passed through
    assert config.effective_argv(["--host"]) == ["app.py", "x", "--host"]
    closed = client.parse_release(_release(host_arguments=False), "s/a")
    assert closed.effective_argv(["--host"]) == ["app.py", "x"]


@pytest.mark.parametrize(
    "defect",
    ["another_config_id", "unknown_version", "short_image_key", "files_not_base64", "not_json"],
)
def test_parse_release_refuses(defect: str) -> None:
    data = {
        "another_config_id": _release(config_id="s/b"),
        "unknown_version": _release(version=2),
        "short_image_key": _release(image={"key": "11", "tag": None}),
        "files_not_base64": _release(files=[{"path": "/x", "content": "!!"}]),
        "not_json": b"{",
    }[defect]
    with pytest.raises(client.CasProtocolError):
        client.parse_release(data, "s/a")


def test_error_from_answer_keeps_code_cause_and_remedy() -> None:
    err = client.error_from_answer(
        403, {"error": {"kind": "refusal", "code": "stale_nonce", "cause": "old", "remedy": "retry"}}, "u"
    )
    assert isinstance(err, client.AttestationRefused)
    assert (err.code, err.cause, err.remedy) == ("stale_nonce", "old", "retry")
    plain = client.error_from_answer(502, "oops", "u")
    assert type(plain) is client.CasRequestFailed and "502" in plain.cause

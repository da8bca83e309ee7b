"""The launch request in the CAS flow: "cas", "host_env", "host_args", and what the host may not decide."""

from __future__ import annotations

import json
from typing import Any

import pytest

from citadel.engine.request import parse_request
from citadel.errors import UsageError

PIN = "6d" * 32


def doc(**fields: Any) -> bytes:
    base: dict = {"version": 1, "image": "/img", "key": None, "expected_tag": None, "argv": [], "module": None,
                  "interactive": False, "cwd": "/work",
                  "cas": {"addr": "https://127.0.0.1:8443", "config_id": "hello/app", "fingerprint": PIN},
                  "host_env": {"LANG": "C.UTF-8", "TOKEN": "host"}, "host_args": ["--verbose"]}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_a_cas_request() -> None:
    req = parse_request(doc())
    assert req.cas is not None
    assert (req.cas.addr, req.cas.config_id, req.cas.fingerprint) == ("https://127.0.0.1:8443", "hello/app", PIN)
    assert (req.key, req.host_env, req.host_args) == (None, {"LANG": "C.UTF-8", "TOKEN": "host"}, ["--verbose"])
    assert "TOKEN" not in repr(req), "the host's environment stays out of diagnostics"


def test_the_cas_parts_are_canonical_and_each_may_come_from_the_settings() -> None:
    req = parse_request(doc(cas={"addr": "cas.example:9443", "fingerprint": f"sha256:{PIN.upper()}"}))
    assert req.cas is not None
    assert (req.cas.addr, req.cas.config_id, req.cas.fingerprint) == ("https://cas.example:9443", None, PIN)
    empty = parse_request(doc(cas={}, host_env=..., host_args=...))
    assert empty.cas is not None and (empty.host_env, empty.host_args) == ({}, [])


def test_volumes_with_a_cas_need_only_a_host_directory() -> None:
    req = parse_request(doc(volumes=[{"name": "results", "host_dir": "/srv/results"}]))
    spec = req.volumes[0]
    assert (spec.name, spec.host_dir, spec.mount, spec.key) == ("results", "/srv/results", "", None)


@pytest.mark.parametrize("fields, fragment", [
    ({"cas": "https://cas"}, "'cas' is not an object"),
    ({"cas": {"addr": "https://cas", "colour": "blue"}}, "'cas' has an unknown field 'colour'"),
    ({"cas": {"addr": 8443}}, "cas.addr is not a string"),
    ({"cas": {"addr": "http://cas"}}, "cas.addr='http://cas' is not an https address"),
    ({"cas": {"config_id": "hello"}}, "cas.config_id='hello' is not SESSION/SERVICE"),
    ({"cas": {"fingerprint": "12"}}, "cas.fingerprint='12' is not a CAS fingerprint"),
    ({"image": None}, "asks a CAS for its configuration but names no image"),
    ({"key": "ab" * 32}, "gives an image key and asks a CAS for one"),
    ({"expected_tag": "cd" * 32}, "gives an image tag and asks a CAS for one"),
    ({"module": "pkg.tool"}, "names a module to run and asks a CAS for its program"),
    ({"command": "print(1)"}, "names a command to run and asks a CAS for its program"),
    ({"interactive": True}, "an interactive console cannot be combined with a CAS"),
    ({"host_env": ["LANG"]}, "host_env is not an object of strings"),
    ({"host_env": {"LANG": 1}}, "host_env is not an object of strings"),
    ({"host_args": "--verbose"}, "host_args is not a list of strings"),
    ({"volumes": [{"name": "results", "mount": "/data"}]}, "needs both 'host_dir' and 'mount'"),
])
def test_each_defect_is_named(fields: dict, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_request(doc(**fields))
    assert fragment in caught.value.cause


def test_without_a_cas_a_volume_still_needs_its_mount() -> None:
    with pytest.raises(UsageError, match="needs both 'host_dir' and 'mount'"):
        parse_request(doc(cas=None, key="ab" * 32, argv=["app.py"],
                          volumes=[{"name": "v", "host_dir": "/srv/v", "key": "cd" * 32}]))

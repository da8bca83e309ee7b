"""The launch request: what the launcher may send, and a clear refusal for anything else."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.request import parse_request, read_request
from citadel.errors import UsageError

KEY = "ab" * 32


def doc(**fields: object) -> bytes:
    base = {"version": 1, "image": "/img", "key": KEY, "expected_tag": None, "argv": ["app.py", "x"],
            "module": None, "interactive": False, "cwd": "/tmp"}
    base.update(fields)
    return json.dumps(base).encode()


def test_script_request() -> None:
    req = parse_request(doc())
    assert (req.kind, req.image, req.key, req.argv, req.cwd) == ("script", "/img", bytes.fromhex(KEY),
                                                                ["app.py", "x"], "/tmp")
    assert KEY not in repr(req)


def test_module_command_and_console_requests() -> None:
    assert parse_request(doc(module="pkg.tool", argv=[])).kind == "module"
    assert parse_request(doc(image=None, key=None, command="print(1)", argv=[])).kind == "command"
    assert parse_request(doc(image=None, key=None, interactive=True, argv=[])).kind == "interactive"


@pytest.mark.parametrize("fields, fragment", [
    ({"version": 2}, "version 2 is not supported"),
    ({"image": "relative"}, "is not absolute"),
    ({"key": None}, "names an image but no key"),
    ({"key": "zz"}, "not 64 hex digits"),
    ({"expected_tag": "12"}, "expected image tag"),
    ({"argv": "app.py"}, "argv is not a list"),
    ({"module": "not a module"}, "is not a module name"),
    ({"interactive": "yes"}, "'interactive' is not true or false"),
    ({"module": "m", "interactive": True}, "module and interactive at once"),
    ({"argv": []}, "names nothing to run"),
    ({"image": None, "key": None}, "can only be run from a sealed image"),
    ({"cwd": "here"}, "cwd 'here' is not absolute"),
])
def test_each_defect_is_named(fields: dict, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_request(doc(**fields))
    assert fragment in caught.value.cause
    assert KEY not in caught.value.cause + caught.value.remedy


@settings(max_examples=100)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    with contextlib.suppress(UsageError):
        parse_request(raw)


def test_read_request_reads_the_pipe_and_closes_it() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, doc())
    os.close(write_end)
    assert read_request({"CITADEL_LAUNCH_FD": str(read_end)}).argv == ["app.py", "x"]
    with pytest.raises(OSError):
        os.fstat(read_end)


@pytest.mark.parametrize("value, fragment", [("", "without a launch request"), ("1", "not a usable"),
                                             ("x", "not a usable")])
def test_missing_or_bad_descriptor(value: str, fragment: str) -> None:
    env = {"CITADEL_LAUNCH_FD": value} if value else {}
    with pytest.raises(UsageError, match=fragment):
        read_request(env)

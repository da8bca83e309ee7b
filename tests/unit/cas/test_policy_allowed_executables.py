"""A service's allowed_executables: absolute paths only, refused with a line pointer; released as given."""

from __future__ import annotations

import dataclasses
import json

import pytest

from citadel.attest.client import CasProtocolError, parse_release
from citadel.cas.errors import PolicyInvalid
from citadel.cas.policy.parse import parse_policy
from citadel.cas.policy.render import render_release

from .conftest import VALID_POLICY


def _with(line: str) -> str:
    return VALID_POLICY.replace("    pwd: /app\n", f"    pwd: /app\n    allowed_executables: {line}\n", 1)


def _issues(text: str) -> list:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, "p.yaml")
    return info.value.issues


def test_absolute_paths_are_kept_in_order() -> None:
    service = parse_policy(_with("[/usr/bin/echo, /bin/true]"), "p.yaml").policy.services["app"]
    assert service.allowed_executables == ("/usr/bin/echo", "/bin/true")


def test_absent_means_none_and_the_stored_document_is_unchanged() -> None:
    parsed = parse_policy(VALID_POLICY, "p.yaml")
    assert parsed.policy.services["app"].allowed_executables == ()
    assert "allowed_executables" not in parsed.doc["services"][0]


@pytest.mark.parametrize(("value", "word"), [
    ("[/bin/echo, bin/true]", "'bin/true' is not an absolute path"),
    ("[./echo]", "'./echo' is not an absolute path"),
    ("[/bin/echo, /bin/echo]", "non-unique"),
    ("/bin/echo", "is not of type 'array'"),
    ("[/" + "a" * 4095 + "]", "shorter than 4096 bytes"),
    ("[" + ", ".join(f"/bin/p{i}" for i in range(17)) + "]", "too long"),
], ids=["relative_path", "dot_relative_path", "duplicate_path", "not_a_list", "path_longer_than_a_page",
        "more_than_sixteen"])
def test_a_bad_list_is_refused_pointing_at_its_line(value: str, word: str) -> None:
    text = _with(value)
    first = _issues(text)[0]
    assert word in first["message"], first
    assert "allowed_executables:" in text.splitlines()[first["line"] - 1]


def _release(text: str) -> dict:
    policy = parse_policy(text, "p.yaml").policy
    stored = {"image_key": {"kind": "binary", "value": "ab" * 32}}
    # only the image key is needed: no secrets in the command, environment or files
    policy.services["app"] = dataclasses.replace(policy.services["app"], environment={}, inject_files=[],
                                                 argv=["app.py"], volumes=[])
    return render_release(policy, stored, "app", config_id="demo/app", session_hash="00" * 32)


def test_the_release_carries_the_paths_and_the_engine_reads_them() -> None:
    doc = _release(_with("[/usr/bin/echo]"))
    assert doc["allowed_executables"] == ["/usr/bin/echo"]
    config = parse_release(json.dumps(doc).encode(), "demo/app")
    assert config.allowed_executables == ("/usr/bin/echo",)


def test_a_release_without_the_field_allows_nothing() -> None:
    doc = _release(VALID_POLICY)
    del doc["allowed_executables"]
    assert parse_release(json.dumps(doc).encode(), "demo/app").allowed_executables == ()


@pytest.mark.parametrize("value", [["bin/echo"], "/bin/echo", [1], ["/bin/\0echo"]],
                         ids=["relative_path", "not_a_list", "not_a_string", "nul_in_path"])
def test_a_release_with_a_malformed_list_is_a_protocol_error(value: object) -> None:
    doc = _release(VALID_POLICY)
    doc["allowed_executables"] = value
    with pytest.raises(CasProtocolError):
        parse_release(json.dumps(doc).encode(), "demo/app")

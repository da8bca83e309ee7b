"""Volumes in the policy language: schema, semantic checks with line pointers, defaults (policy/volumes.py)."""

from __future__ import annotations

from typing import List

import pytest

from citadel.cas.errors import PolicyInvalid
from citadel.cas.policy import volumes as rules
from citadel.cas.policy.parse import parse_policy

from .conftest import VALID_POLICY

VOLUMES = """\
volumes:
  - name: data
  - name: results
    path: /out
    update_policy: rollback-protected
  - name: scratch
    path: /scratch
    update_policy: ephemeral
  - name: inputs
    key: $$citadel:volume_key$$
"""
SERVICE_MOUNTS = "      - {name: results}\n      - {name: scratch}\n      - {name: inputs, path: /in}\n"


def _policy(volumes: str = VOLUMES, mounts: str = SERVICE_MOUNTS, key_secret: str = "size: 32") -> str:
    text = VALID_POLICY.replace("volumes:\n  - name: data\n", volumes)
    text = text.replace("      - {name: data, path: /data}\n", "      - {name: data, path: /data}\n" + mounts)
    return text.replace(
        '  - {name: blob, kind: binary, value: "00ff10"}\n',
        f'  - {{name: blob, kind: binary, value: "00ff10"}}\n  - {{name: volume_key, kind: binary, {key_secret}}}\n',
    )


def test_volumes_parse_with_defaults_and_default_paths() -> None:
    parsed = parse_policy(_policy(), "v.yaml")
    policy = parsed.policy
    mounts = rules.mounts(policy.volumes, policy.services["app"].volumes)
    assert [(m.name, m.mount, m.update_policy, m.key_secret) for m in mounts] == [
        ("data", "/data", "rollback-protected", None),
        ("results", "/out", "rollback-protected", None),
        ("scratch", "/scratch", "ephemeral", None),
        ("inputs", "/in", "rollback-protected", "volume_key"),
    ]
    # the stored form names each service mount's path, filled from the volume's default
    assert {"name": "results", "path": "/out"} in parsed.doc["services"][0]["volumes"]


def test_imported_key_from_an_imported_secret() -> None:
    policy = parse_policy(_policy(key_secret=f'value: "{"5a" * 32}"'), "v.yaml").policy
    mount = rules.mounts(policy.volumes, policy.services["app"].volumes)[-1]
    assert rules.imported_key(mount, {"volume_key": {"kind": "binary", "value": "5a" * 32}}) == b"\x5a" * 32


def _issues(text: str) -> List[dict]:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, "v.yaml")
    return info.value.issues


# (defect, policy text, word in the message, text on the line the first issue points at)
DEFECTS = [
    (
        "unknown_update_policy",
        _policy(VOLUMES.replace("update_policy: ephemeral", "update_policy: temporary")),
        "temporary",
        "update_policy: temporary",
    ),
    ("relative_volume_path", _policy(VOLUMES.replace("path: /scratch", "path: scratch")), "scratch", "path: scratch"),
    ("volume_mounted_at_root", _policy(VOLUMES.replace("path: /scratch", "path: /")), "'/'", "path: /"),
    (
        "unknown_volume_field",
        _policy(VOLUMES.replace("  - name: data\n", "  - name: data\n    encrypted: true\n")),
        "encrypted",
        "encrypted: true",
    ),
    (
        "key_not_a_reference",
        _policy(VOLUMES.replace("key: $$citadel:volume_key$$", f"key: {'ab' * 32}")),
        "citadel",
        "key: abab",
    ),
    (
        "key_of_unknown_secret",
        _policy(VOLUMES.replace("$$citadel:volume_key$$", "$$citadel:nokey$$")),
        "nokey",
        "key: $$citadel:nokey$$",
    ),
    (
        "key_not_binary",
        _policy(VOLUMES.replace("$$citadel:volume_key$$", "$$citadel:token$$")),
        "binary",
        "key: $$citadel:token$$",
    ),
    (
        "key_with_an_encoding",
        _policy(VOLUMES.replace("$$citadel:volume_key$$", "$$citadel:volume_key:hex$$")),
        "encoding",
        "key: $$citadel:volume_key:hex$$",
    ),
    ("key_of_16_bytes", _policy(key_secret="size: 16"), "32 bytes", "key: $$citadel:volume_key$$"),
    ("imported_key_of_3_bytes", _policy(key_secret='value: "00ff10"'), "32 bytes", "key: $$citadel:volume_key$$"),
    (
        "mount_without_path",
        _policy(mounts="      - {name: results}\n      - {name: inputs}\n"),
        "no mount path",
        "{name: inputs}",
    ),
    (
        "volume_mounted_twice",
        _policy(mounts="      - {name: results}\n      - {name: results, path: /other}\n"),
        "twice",
        "{name: results, path: /other}",
    ),
    (
        "overlapping_mounts",
        _policy(mounts="      - {name: results, path: /data/x}\n"),
        "overlaps",
        "{name: results, path: /data/x}",
    ),
    (
        "mount_of_undeclared_volume",
        _policy(mounts="      - {name: result, path: /r}\n"),
        "result",
        "{name: result, path: /r}",
    ),
    (
        "service_mount_unknown_field",
        _policy(mounts="      - {name: results, readonly: true}\n"),
        "readonly",
        "readonly: true",
    ),
    (
        "duplicate_volume",
        _policy(VOLUMES + "  - name: data\n"),
        "duplicate",
        "  - name: data",
    ),
]


@pytest.mark.parametrize(("text", "word", "line_text"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_volume_defect_points_at_its_line(text: str, word: str, line_text: str) -> None:
    issues = _issues(text)
    matching = [i for i in issues if word.lower() in i["message"].lower()]
    assert matching, issues
    lines = text.splitlines()
    assert line_text in lines[matching[0]["line"] - 1], (matching[0], lines[matching[0]["line"] - 1])


def test_schema_lists_the_update_policies() -> None:
    from citadel.cas.policy.schema import SCHEMA

    assert SCHEMA["properties"]["volumes"]["items"]["properties"]["update_policy"]["enum"] == [
        "rollback-protected",
        "ephemeral",
    ]

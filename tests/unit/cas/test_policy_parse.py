"""The policy language: validation with line pointers, normalization (cas/policy/parse.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.cas.errors import PolicyInvalid
from citadel.cas.policy.model import split_command
from citadel.cas.policy.parse import parse_policy

from .conftest import MEASUREMENT, VALID_POLICY


def test_valid_policy_is_normalized() -> None:
    parsed = parse_policy(VALID_POLICY, "demo.yaml")
    doc = parsed.doc
    assert parsed.name == "demo" and parsed.predecessor is None
    assert doc["version"] == "1"
    assert doc["access_policy"]["delete"] == ["CREATOR"]  # default filled in
    att = doc["services"][0]["attestation"]
    assert att["measurements"][0] == {"engine": MEASUREMENT}
    service = parsed.policy.services["app"]
    assert service.argv == ["app.py", "--token", "$$citadel:token$$"] and service.module is None


def _issues(text: str) -> list:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, "p.yaml")
    assert info.value.issues, "a refusal always lists its problems"
    return info.value.issues


def _replace(old: str, new: str) -> str:
    assert old in VALID_POLICY
    return VALID_POLICY.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# (name of the defect, the policy text, a word the message must contain, the text on the line it points at)
DEFECTS = [
    ("unknown_tolerance", _replace("tolerate: [sim]", "tolerate: [sim, debg]"), "debg", "tolerate:"),
    ("unknown_field", _replace("    pwd: /app", "    pwd: /app\n    cwdd: /x"), "cwdd", "cwdd"),
    ("missing_measurements", _replace("      measurements:\n", "      measurementz:\n"), "measurement", "attestation"),
    ("relative_pwd", _replace("pwd: /app", "pwd: app"), "app", "pwd:"),
    (
        "unknown_secret_reference",
        _replace("$$citadel:api_key$$\n      TOKEN", "$$citadel:nope$$\n      TOKEN"),
        "nope",
        "API_KEY",
    ),
    (
        "malformed_reference",
        _replace("API_KEY: $$citadel:api_key$$", "API_KEY: $$citadel:api key$$"),
        "malformed",
        "API_KEY",
    ),
    (
        "wrong_encoding",
        _replace("TOKEN_HEX: $$citadel:token:hex$$", "TOKEN_HEX: $$citadel:token:pem$$"),
        "encoding",
        "TOKEN_HEX",
    ),
    (
        "raw_binary_in_environment",
        _replace("TOKEN_HEX: $$citadel:token:hex$$", "TOKEN_HEX: $$citadel:blob$$"),
        "binary",
        "TOKEN_HEX",
    ),
    ("duplicate_key", _replace("    pwd: /app", "    pwd: /app\n    pwd: /b"), "duplicate", "pwd: /b"),
    ("x509_without_issuer", _replace("issuer: ca, private_key", "private_key"), "issuer", "server_cert"),
    ("issuer_not_a_ca", _replace("issuer: ca, private_key", "issuer: token, private_key"), "x509-ca", "server_cert"),
    ("image_key_not_binary", _replace("key: $$citadel:image_key$$", "key: $$citadel:token$$"), "binary", "key: $$"),
    ("unknown_volume", _replace("{name: data, path: /data}", "{name: dat, path: /data}"), "dat", "dat, path"),
    ("bad_imported_binary", _replace('value: "00ff10"', 'value: "zz"'), "cannot be read", "blob"),
    (
        "command_with_interpreter_option",
        _replace("command: python app.py", "command: python -X app.py"),
        "option",
        "command:",
    ),
    ("yaml_syntax", _replace("    pwd: /app", "    pwd: [/app"), "YAML", "pwd"),
]


@pytest.mark.parametrize(("text", "word", "line_text"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_malformed_policy_points_at_the_line(text: str, word: str, line_text: str) -> None:
    issues = _issues(text)
    first = issues[0]
    assert word.lower() in first["message"].lower()
    lines = text.splitlines()
    assert line_text in lines[first["line"] - 1] or (
        # YAML syntax errors point where the parser noticed, which may be the next line
        word == "YAML" and abs(first["line"] - _line_of(text, line_text)) <= 2
    ), (first, lines[first["line"] - 1])


def test_all_problems_are_listed_in_order() -> None:
    text = _replace("tolerate: [sim]", "tolerate: [debg]").replace("pwd: /app", "pwd: app")
    issues = _issues(text)
    assert len(issues) >= 2
    assert [i["line"] for i in issues] == sorted(i["line"] for i in issues)


def test_issuer_loop_is_refused() -> None:
    text = VALID_POLICY.replace(
        "  - {name: ca, kind: x509-ca, common_name: Demo CA}",
        "  - {name: ca, kind: x509-ca, common_name: Demo CA, issuer: ca2}\n  - {name: ca2, kind: x509-ca, issuer: ca}",
    )
    assert any("loops" in i["message"] for i in _issues(text))


def test_alias_bomb_is_bounded() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    issues = _issues("\n".join(lines) + "\nname: x\nversion: '1'\n")
    assert "too large" in issues[0]["message"]


def test_empty_and_non_mapping_policies() -> None:
    assert "empty" in _issues("")[0]["message"]
    assert _issues("- 1\n- 2\n")[0]["line"] == 1


@pytest.mark.parametrize(
    ("command", "argv", "module"),
    [
        ("app.py a b", ["app.py", "a", "b"], None),
        ("python3 -m pkg.mod --x", ["pkg.mod", "--x"], "pkg.mod"),
        (["/usr/bin/python3.11", "app.py", "a b"], ["app.py", "a b"], None),
        ("app.py 'quoted arg'", ["app.py", "quoted arg"], None),
    ],
)
def test_split_command(command: object, argv: list, module: object) -> None:
    assert split_command(command) == (argv, module)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_never_escapes_as_anything_but_policy_invalid(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyInvalid as exc:
        assert all(i["line"] >= 1 and i["column"] >= 1 for i in exc.issues)


_names = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_names,
    services=st.lists(_names, min_size=1, max_size=3, unique=True),
    env=st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
        st.text(st.characters(codec="ascii", exclude_characters="$"), max_size=20),
        max_size=3,
    ),
    tolerate=st.lists(st.sampled_from(["debug", "outdated-tcb", "sim"]), unique=True),
    measurement=st.from_regex(r"[0-9a-f]{2,64}", fullmatch=True),
)
def test_generated_policies_parse_and_normalize_idempotently(
    name: str, services: list, env: dict, tolerate: list, measurement: str
) -> None:
    import json

    import yaml

    doc = {
        "name": name,
        "version": "1",
        "services": [
            {
                "name": s,
                "command": ["app.py"],
                "environment": env,
                "image": {"key": "11" * 32},
                "attestation": {"tee": ["sim"], "measurements": [measurement], "tolerate": tolerate},
            }
            for s in services
        ],
    }
    first = parse_policy(yaml.safe_dump(doc)).doc
    again = parse_policy(json.dumps(first)).doc  # the stored form is itself a valid policy
    assert again == first
    assert set(s["name"] for s in first["services"]) == set(services)

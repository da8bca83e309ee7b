"""Policy evaluation order and the release document (cas/policy/evaluate.py, render.py)."""

from __future__ import annotations

import base64

import pytest

from citadel.attest.evidence import VerifiedEvidence
from citadel.cas import secrets
from citadel.cas.errors import Refused
from citadel.cas.policy.evaluate import evaluate
from citadel.cas.policy.parse import parse_policy
from citadel.cas.policy.render import render_release

from .conftest import MEASUREMENT, TAG, VALID_POLICY

POLICY = parse_policy(VALID_POLICY).policy
ATT = POLICY.services["app"].attestation


def _ev(**changes: object) -> VerifiedEvidence:
    base = dict(
        kind="sim",
        report_data=b"\0" * 64,
        measurements={"engine": MEASUREMENT},
        debug=False,
        tcb_status="n/a",
        platform="f" * 64,
    )
    base.update(changes)
    return VerifiedEvidence(**base)  # type: ignore[arg-type]


def test_accepted_evidence_passes() -> None:
    evaluate(ATT, _ev())
    evaluate(ATT, _ev(kind="tdx", measurements={"mrtd": "EE" * 48, "rtmr0": "00"}, tcb_status="UpToDate"))


CASES = [
    ("kind_not_accepted", _ev(kind="sgx"), "tee_not_accepted"),
    ("measurement_not_accepted", _ev(measurements={"engine": "00" * 32}), "measurement_not_accepted"),
    ("hardware_measurement_missing", _ev(kind="tdx", measurements={"rtmr0": "ee" * 48}), "measurement_not_accepted"),
    ("debug_not_tolerated", _ev(debug=True), "debug_not_tolerated"),
    (
        "outdated_tcb_not_tolerated",
        _ev(kind="tdx", measurements={"mrtd": "ee" * 48}, tcb_status="OutOfDate"),
        "tcb_not_tolerated",
    ),
    ("revoked_tcb", _ev(kind="tdx", measurements={"mrtd": "ee" * 48}, tcb_status="Revoked"), "tcb_not_tolerated"),
]


@pytest.mark.parametrize(("ev", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusals_name_their_reason(ev: VerifiedEvidence, code: str) -> None:
    with pytest.raises(Refused) as info:
        evaluate(ATT, ev)
    assert info.value.code == code and info.value.remedy


def test_sim_needs_to_be_tolerated_and_platforms_restrict() -> None:
    strict = parse_policy(VALID_POLICY.replace("tolerate: [sim]", "tolerate: []")).policy.services["app"]
    with pytest.raises(Refused) as info:
        evaluate(strict.attestation, _ev())
    assert info.value.code == "sim_not_tolerated"
    pinned = parse_policy(VALID_POLICY.replace("tolerate: [sim]", "tolerate: [sim]\n      platforms: [host-a]"))
    att = pinned.policy.services["app"].attestation
    evaluate(att, _ev(), platform_name="host-a")
    with pytest.raises(Refused) as other:
        evaluate(att, _ev(), platform_name="host-b")
    assert other.value.code == "platform_not_accepted"


def test_release_substitutes_secrets() -> None:
    stored = secrets.materialize(POLICY.secrets, {})
    doc = render_release(POLICY, stored, "app", config_id="demo/app", session_hash="00" * 32)
    token = stored["token"]["value"]
    assert doc["argv"] == ["app.py", "--token", token]
    assert doc["environment"] == {"API_KEY": "imported-api-key-value", "TOKEN_HEX": token.encode().hex()}
    assert doc["image"] == {"key": stored["image_key"]["value"], "tag": TAG}
    files = {f["path"]: base64.b64decode(f["content"]) for f in doc["files"]}
    assert files["/etc/blob"] == b"\x00\xff\x10"
    assert files["/etc/app.conf"].startswith(b"password=imported-api-key-value\ncert=-----BEGIN CERTIFICATE")
    assert doc["volumes"] == [{"name": "data", "path": "/data"}]
    assert doc["host_environment"] == ["LANG"] and doc["pwd"] == "/app"

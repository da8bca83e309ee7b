"""Volume keys, tags and commits through the service layer, on a real SQLite database."""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any, List

import pytest

from citadel.attest import client, sim, volume_client
from citadel.cas.errors import CasServiceError, Forbidden
from citadel.cas.services import audit_view, platforms, sessions, volume_tokens
from citadel.cas.services import volumes as service
from citadel.cas.storage import repo

from .conftest import VALID_POLICY
from .test_services import ALICE, BOB, _attest, _operator

POLICY = VALID_POLICY.replace(
    "volumes:\n  - name: data\n",
    "volumes:\n  - name: data\n  - {name: scratch, path: /scratch, update_policy: ephemeral}\n",
).replace("      - {name: data, path: /data}\n", "      - {name: data, path: /data}\n      - {name: scratch}\n")


def _tag(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


@pytest.fixture
def deployed(ctx: Any) -> Any:
    _operator(ctx)
    key = sim.Ed25519PrivateKey.generate()
    platforms.add(ctx, ALICE, "host", sim.public_bytes(key).hex())
    sessions.create(ctx, ALICE, POLICY)
    ctx.platform_key = key
    return ctx


def _volumes(ctx: Any) -> dict:
    return {v.name: v for v in _attest(ctx, ctx.platform_key).released_volumes()}


def _audit(ctx: Any) -> List[Any]:
    entries, _, _ = audit_view.page(ctx, ALICE, 0, 1000)
    return [r for r, _ in entries]


def test_first_release_makes_the_key_and_later_releases_keep_it(deployed: Any) -> None:
    first = _volumes(deployed)
    data, scratch = first["data"], first["scratch"]
    assert (data.mount, data.policy, data.expected_tag, data.generation) == ("/data", "rollback-protected", None, 0)
    assert len(data.key) == 32 and data.token
    assert (scratch.policy, scratch.expected_tag, scratch.token) == ("ephemeral", None, None)
    again = _volumes(deployed)
    assert again["data"].key == data.key and again["scratch"].key == scratch.key
    assert again["data"].token != data.token  # bound to each attestation
    with deployed.readers() as db:
        stored = repo.volume_state(db, "demo", "data")
    assert stored is not None and stored.key is not None
    assert data.key not in stored.key and data.key.hex().encode() not in stored.key


def test_commits_swap_from_the_current_tag_only(deployed: Any) -> None:
    token = _volumes(deployed)["data"].token
    result = service.commit_by_engine(deployed, "demo/app", "data", "", _tag(1), token)
    assert (result.tag, result.generation, result.repeated) == (_tag(1), 1, False)
    assert service.commit_by_engine(deployed, "demo/app", "data", _tag(1), _tag(2), token).generation == 2
    repeated = service.commit_by_engine(deployed, "demo/app", "data", _tag(1), _tag(2), token)
    assert repeated.repeated and repeated.generation == 2

    # an engine whose state is based on tag 1 (it opened it after this release): a lost race
    with pytest.raises(service.TagRefused) as lost:
        service.commit_by_engine(deployed, "demo/app", "data", _tag(1), _tag(3), token)
    assert lost.value.code == "committed_elsewhere" and lost.value.http_status == 409
    assert "committed by another engine since" in lost.value.cause and _tag(2) in lost.value.cause

    # released at commit 2, yet based on tag 1: the host handed the engine an older copy
    later = _volumes(deployed)["data"]
    assert (later.expected_tag, later.generation) == (_tag(2), 2)
    with pytest.raises(service.TagRefused) as rolled:
        service.commit_by_engine(deployed, "demo/app", "data", _tag(1), _tag(4), later.token)
    assert rolled.value.code == "rollback"
    assert "restored an older copy" in rolled.value.cause and f"latest tag is {_tag(2)}" in rolled.value.cause
    assert rolled.value.body()["error"]["latest_tag"] == _tag(2)

    events = [(r.event, r.outcome, r.reason) for r in _audit(deployed) if r.event == "volume.commit"]
    assert events == [
        ("volume.commit", "allowed", ""),
        ("volume.commit", "allowed", ""),
        ("volume.commit", "allowed", "repeated"),
        ("volume.commit", "refused", "committed_elsewhere"),
        ("volume.commit", "refused", "rollback"),
    ]
    last = _audit(deployed)[-1]
    assert last.actor == "engine@host" and last.subject == "demo:data" and last.details["old_tag"] == _tag(1)


def _forged(token: str) -> str:
    raw = bytearray(base64.b64decode(token))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("defect", "code"),
    [
        ("forged_token", "invalid_capability"),
        ("token_for_another_volume", "capability_mismatch"),
        ("token_for_another_service", "capability_mismatch"),
        ("ephemeral_volume", "ephemeral"),
        ("malformed_tag", "malformed_tag"),
    ],
)
def test_commits_refused_for_bad_capabilities_and_requests(deployed: Any, defect: str, code: str) -> None:
    token = _volumes(deployed)["data"].token
    config_id, volume, new = "demo/app", "data", _tag(1)
    if defect == "forged_token":
        token = _forged(token)
    elif defect == "token_for_another_volume":
        volume = "scratch"
    elif defect == "token_for_another_service":
        config_id = "demo/other"
    elif defect == "ephemeral_volume":
        volume = "scratch"
        token = volume_tokens.issue(
            deployed.keyring, volume_tokens.Capability("demo/app", "scratch", "x", 0, "00", "host", 0.0)
        )
    elif defect == "malformed_tag":
        new = "XYZ"
    with pytest.raises(CasServiceError) as info:
        service.commit_by_engine(deployed, config_id, volume, "", new, token)
    assert info.value.code == code and info.value.cause and info.value.remedy
    last = _audit(deployed)[-1]
    assert (last.event, last.outcome, last.reason) == ("volume.commit", "refused", code)


def test_recreated_session_has_new_volumes_and_old_tokens_die(deployed: Any) -> None:
    before = _volumes(deployed)["data"]
    sessions.delete(deployed, ALICE, "demo")
    sessions.create(deployed, ALICE, POLICY)
    after = _volumes(deployed)["data"]
    assert after.key != before.key and after.expected_tag is None
    with pytest.raises(Forbidden) as info:
        service.commit_by_engine(deployed, "demo/app", "data", "", _tag(1), before.token)
    assert info.value.code == "stale_capability"


def test_owner_grants_follow_the_access_policy(deployed: Any) -> None:
    released = _volumes(deployed)["data"]
    grant = service.owner_grant(deployed, ALICE, "demo", "data", "update", "app")
    assert grant.key == released.key and grant.tag is None and grant.mount.mount == "/data"
    done = service.commit_by_owner(deployed, ALICE, "demo", "data", "", _tag(7), 0)
    assert done.generation == 1
    assert service.owner_grant(deployed, ALICE, "demo", "data", "read").tag == _tag(7)
    for access in ("read", "update"):
        with pytest.raises(Forbidden):
            service.owner_grant(deployed, BOB, "demo", "data", access)
    with pytest.raises(Forbidden):
        service.commit_by_owner(deployed, BOB, "demo", "data", _tag(7), _tag(8), 1)
    refused = [r for r in _audit(deployed) if r.outcome == "refused"]
    assert [(r.event, r.actor) for r in refused] == [("volume.key", BOB)] * 2 + [("volume.commit", BOB)]
    assert all(released.key.hex() not in str(r.details) for r in _audit(deployed))


def test_concurrent_commits_exactly_one_wins(deployed: Any) -> None:
    token = _volumes(deployed)["data"].token
    barrier = threading.Barrier(4)
    outcomes: List[str] = []

    def commit(i: int) -> None:
        barrier.wait()
        try:
            service.commit_by_engine(deployed, "demo/app", "data", "", _tag(100 + i), token)
            outcomes.append("won")
        except service.TagRefused as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["committed_elsewhere"] * 3 + ["won"]


def test_release_rejects_a_malformed_volume_entry() -> None:
    with pytest.raises(client.CasProtocolError):
        volume_client.parse_volumes(
            [
                {
                    "name": "v",
                    "mount": "/v",
                    "policy": "rollback-protected",
                    "key": "00" * 32,
                    "expected_tag": None,
                    "generation": 0,
                    "token": None,
                }
            ]
        )

"""Sessions, platforms and attestation through the service layer, on a real SQLite database."""

from __future__ import annotations

import base64
import threading
from typing import Any, List

import pytest

from citadel.attest import binding, client, sim
from citadel.cas.errors import Conflict, Forbidden, NotFound, PolicyInvalid, Refused
from citadel.cas.services import attestation, audit_view, platforms, sessions
from citadel.cas.storage import repo

from .conftest import MEASUREMENT, VALID_POLICY

ALICE = "ed25519:" + "a" * 64
BOB = "ed25519:" + "b" * 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _operator(ctx: Any) -> None:
    with ctx.sessions.begin() as db:
        repo.add_operator(db, ALICE, 0.0)


def test_create_show_update_delete(ctx: Any) -> None:
    info = sessions.create(ctx, ALICE, VALID_POLICY)
    assert info.generation == 1 and info.creator == ALICE
    shown, policy = sessions.show(ctx, ALICE, "demo")
    assert shown.hash == info.hash
    assert "imported-api-key-value" not in str(policy)
    updated = sessions.update(ctx, ALICE, VALID_POLICY + f"predecessor: {info.hash}\n")
    assert updated.generation == 2 and updated.hash != info.hash
    assert [s.name for s in sessions.list_readable(ctx, ALICE)] == ["demo"]
    sessions.delete(ctx, ALICE, "demo")
    with pytest.raises(NotFound):
        sessions.show(ctx, ALICE, "demo")


def test_create_twice_is_a_conflict(ctx: Any) -> None:
    sessions.create(ctx, ALICE, VALID_POLICY)
    with pytest.raises(Conflict) as info:
        sessions.create(ctx, BOB, VALID_POLICY)
    assert info.value.code == "exists"


@pytest.mark.parametrize("defect", ["no_predecessor", "wrong_predecessor"])
def test_update_needs_the_current_predecessor(ctx: Any, defect: str) -> None:
    sessions.create(ctx, ALICE, VALID_POLICY)
    text = VALID_POLICY if defect == "no_predecessor" else VALID_POLICY + f"predecessor: {'0' * 64}\n"
    with pytest.raises(Conflict) as info:
        sessions.update(ctx, ALICE, text)
    assert info.value.code == ("predecessor_required" if defect == "no_predecessor" else "stale_predecessor")


def test_update_by_someone_not_in_the_access_policy(ctx: Any) -> None:
    info = sessions.create(ctx, ALICE, VALID_POLICY)
    with pytest.raises(Forbidden):
        sessions.update(ctx, BOB, VALID_POLICY + f"predecessor: {info.hash}\n")
    with pytest.raises(Forbidden):
        sessions.show(ctx, BOB, "demo")
    with pytest.raises(Forbidden):
        sessions.delete(ctx, BOB, "demo")
    assert sessions.list_readable(ctx, BOB) == []


def test_access_policy_can_name_others(ctx: Any) -> None:
    text = VALID_POLICY.replace("update: [CREATOR]", f"update: [CREATOR, {BOB}]")
    info = sessions.create(ctx, ALICE, text)
    sessions.update(ctx, BOB, text + f"predecessor: {info.hash}\n")
    with pytest.raises(Forbidden):
        sessions.show(ctx, BOB, "demo")  # read is still only the creator


def test_two_concurrent_updates_exactly_one_wins(ctx: Any) -> None:
    info = sessions.create(ctx, ALICE, VALID_POLICY)
    texts = [VALID_POLICY.replace("pwd: /app", f"pwd: /app{i}") + f"predecessor: {info.hash}\n" for i in range(2)]
    barrier = threading.Barrier(2)
    outcomes: List[str] = []

    def update(text: str) -> None:
        barrier.wait()
        try:
            sessions.update(ctx, ALICE, text)
            outcomes.append("won")
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=update, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale_predecessor", "won"]


def test_invalid_policy_is_refused_before_storage(ctx: Any) -> None:
    with pytest.raises(PolicyInvalid):
        sessions.create(ctx, ALICE, VALID_POLICY.replace("tolerate: [sim]", "tolerate: [simm]"))
    assert sessions.list_readable(ctx, ALICE) == []


def test_platforms_need_an_operator(ctx: Any) -> None:
    key = sim.Ed25519PrivateKey.generate()
    with pytest.raises(Forbidden):
        platforms.add(ctx, ALICE, "host", sim.public_bytes(key).hex())
    _operator(ctx)
    row = platforms.add(ctx, ALICE, "host", sim.public_bytes(key).hex())
    assert row.fingerprint == sim.platform_fingerprint(sim.public_bytes(key))
    with pytest.raises(Conflict):
        platforms.add(ctx, ALICE, "host2", sim.public_bytes(key).hex())
    platforms.remove(ctx, ALICE, "host")
    assert list(platforms.listing(ctx)) == []


def _attest(
    ctx: Any,
    key: Any,
    *,
    config_id: str = "demo/app",
    measurement: str = MEASUREMENT,
    nonce: bytes = b"",
    public: bytes = b"",
) -> client.ReleasedConfig:
    nonce = nonce or attestation.issue_nonce(ctx)[0]
    private, fresh = binding.generate_key_pair()
    public = public or fresh
    evidence = sim.make_evidence(key, binding.report_data(nonce, public), {"engine": measurement})
    sealed = attestation.attest(
        ctx, attestation.AttestRequest(config_id, "sim", _b64(nonce), _b64(public), _b64(evidence))
    )
    plaintext = binding.open_sealed(private, sealed, context=binding.release_context(nonce, config_id))
    return client.parse_release(plaintext, config_id)


def test_attestation_allowed_then_replay_refused_and_both_audited(ctx: Any) -> None:
    _operator(ctx)
    key = sim.Ed25519PrivateKey.generate()
    platforms.add(ctx, ALICE, "host", sim.public_bytes(key).hex())
    sessions.create(ctx, ALICE, VALID_POLICY)
    nonce = attestation.issue_nonce(ctx)[0]
    config = _attest(ctx, key, nonce=nonce)
    assert config.environment["API_KEY"] == "imported-api-key-value"
    with pytest.raises(Refused) as info:
        _attest(ctx, key, nonce=nonce)
    assert info.value.code == "replayed_nonce"
    with pytest.raises(Refused) as other:
        _attest(ctx, key, measurement="00" * 32)
    assert other.value.code == "measurement_not_accepted"
    entries, head_seq, _ = audit_view.page(ctx, ALICE, 0, 100)
    attests = [(r.outcome, r.reason) for r, _ in entries if r.event == "attest"]
    assert attests == [("allowed", ""), ("refused", "replayed_nonce"), ("refused", "measurement_not_accepted")]
    with ctx.readers() as db:
        assert audit_view.verify(db, ctx.keyring).entries == head_seq


def test_a_session_update_takes_effect_for_the_next_attestation(ctx: Any) -> None:
    _operator(ctx)
    key = sim.Ed25519PrivateKey.generate()
    platforms.add(ctx, ALICE, "host", sim.public_bytes(key).hex())
    info = sessions.create(ctx, ALICE, VALID_POLICY)
    assert _attest(ctx, key).pwd == "/app"
    sessions.update(ctx, ALICE, VALID_POLICY.replace("pwd: /app", "pwd: /srv") + f"predecessor: {info.hash}\n")
    assert _attest(ctx, key).pwd == "/srv"

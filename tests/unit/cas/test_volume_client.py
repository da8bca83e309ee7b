"""The engine's CAS tag store (attest/client.py): how a commit's outcome is classified, and what a
volume does when the CAS cannot be reached (real sockets and real volumes; no CAS is needed)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from citadel.attest import client, volume_client
from citadel.errors import CitadelError
from citadel.volume import Volume, VolumeConflict, VolumeError

FP = "ab" * 32


def _refusal(code: str, **extra: Any) -> dict:
    return {"error": {"kind": "refusal", "code": code, "cause": f"because {code}", "remedy": "r", **extra}}


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (200, {"volume": "v", "tag": "t", "generation": 3, "repeated": False}, "recorded"),
        (409, _refusal("committed_elsewhere", latest_tag="cd" * 32, generation=4), "refused"),
        (409, _refusal("rollback", latest_tag="cd" * 32, generation=4), "refused"),
        (403, _refusal("invalid_capability"), "refused"),
        (404, _refusal("not_found"), "refused"),
        (422, _refusal("invalid_request"), "refused"),
        (503, _refusal("unavailable"), "unknown"),
        (500, None, "unknown"),
        (409, None, "unknown"),  # a 409 without the CAS's error body is not the CAS speaking
        (200, {"unexpected": True}, "unknown"),
    ],
)
def test_commit_answers_are_recorded_refused_or_unknown(status: int, answer: Any, outcome: str) -> None:
    if outcome == "recorded":
        assert volume_client.volume_commit_answer(status, answer, "https://cas", "v")["generation"] == 3
        return
    expected = volume_client.VolumeTagRefused if outcome == "refused" else volume_client.VolumeCommitUnknown
    with pytest.raises(expected) as info:
        volume_client.volume_commit_answer(status, answer, "https://cas", "v")
    # a refusal is a CitadelError (the volume keeps the state as a conflict); an unknown outcome is not
    assert isinstance(info.value, CitadelError) == (outcome == "refused")
    if status == 409 and answer:
        assert info.value.latest_tag == "cd" * 32 and info.value.generation == 4  # type: ignore[attr-defined]


def _dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}"  # nothing listens there any more


def test_unreachable_cas_leaves_the_commit_pending(tmp_path: Path) -> None:
    key = os.urandom(32)
    root = str(tmp_path / "vol")
    Volume.create(root, key).close()
    store = volume_client.CasVolumeTagStore(_dead_address(), FP, "demo/app", {"v": "token"}, timeout=2)
    vol = Volume.open(root, key, on_commit=store.on_commit("v"))
    with pytest.raises(VolumeError) as info, vol.open_file("f", "wb") as fh:
        fh.write(b"x")  # closing the last writer commits
    assert not isinstance(info.value, VolumeConflict) and "did not complete" in info.value.cause
    assert os.listdir(os.path.join(root, "pending"))  # kept until the next open learns the CAS's tag
    vol.close()


def test_ephemeral_volumes_get_no_commit_callback() -> None:
    store = volume_client.CasVolumeTagStore("https://127.0.0.1:1", FP, "demo/app", {"results": "t"})
    with pytest.raises(client.CasError) as info:
        store.on_commit("scratch")
    assert "no commit token" in info.value.cause
    assert "t" not in repr(store).replace("CasVolumeTagStore", "").replace("results", "")

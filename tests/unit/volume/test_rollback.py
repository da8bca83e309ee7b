"""Rollback protection: an older copy is refused; a commit the tag store accepted is never lost."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from citadel.volume import LocalTagStore, Volume, VolumeConflict, VolumeError, VolumeRollback
from citadel.volume.tagstore import TagRefused

from .conftest import KEY


class SimulatedCrash(BaseException):
    """Stands for the process dying at that instant (not an Exception, like SystemExit)."""


def test_restoring_an_earlier_copy_is_refused(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    vol = Volume.create(root, KEY, on_commit=tag_store.on_commit("vol"))
    vol.write_bytes("balance.txt", b"100")
    vol.close()
    shutil.copytree(root, str(tmp_path / "old-copy"))
    vol = Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=tag_store.on_commit("vol"))
    vol.write_bytes("balance.txt", b"0")
    vol.close()
    shutil.rmtree(root)
    shutil.copytree(str(tmp_path / "old-copy"), root)  # the host hands back the older state
    with pytest.raises(VolumeRollback) as info:
        Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=tag_store.on_commit("vol"))
    text = info.value.diagnostics()
    assert "not at its latest state" in text and "older copy" in text and "generation 1" in text


def test_restoring_only_the_old_manifest_is_refused(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    vol = Volume.create(root, KEY, on_commit=tag_store.on_commit("vol"))
    old_manifest = Path(root, "manifest").read_bytes()
    vol.write_bytes("f", b"new")
    vol.close()
    Path(root, "manifest").write_bytes(old_manifest)
    with pytest.raises(VolumeRollback):
        Volume.open(root, KEY, expected_tag=tag_store.current("vol"), read_only=True)


def test_a_deleted_volume_is_refused_not_recreated(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    Volume.create(root, KEY, on_commit=tag_store.on_commit("vol")).close()
    shutil.rmtree(root)
    with pytest.raises(VolumeRollback, match="holds no volume"):
        Volume.open(root, KEY, expected_tag=tag_store.current("vol"), create=True)


def test_accepted_commit_is_rolled_forward_after_a_crash(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    swap = tag_store.on_commit("vol")
    Volume.create(root, KEY, on_commit=swap).close()

    def accept_then_die(old: str, new: str) -> None:
        swap(old, new)
        raise SimulatedCrash  # the tag store recorded it; the rename never happened

    vol = Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=accept_then_die,
                      auto_commit=False)
    vol.write_bytes("saved.txt", b"fsynced data")
    with pytest.raises(SimulatedCrash):
        vol.commit()
    vol._release()
    assert os.listdir(os.path.join(root, "pending")) == [tag_store.current("vol")]
    with Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=swap) as vol:
        assert vol.read_bytes("saved.txt") == b"fsynced data"
        assert vol.tag == tag_store.current("vol")
    assert Path(root, "manifest").read_bytes() != b"" and os.listdir(os.path.join(root, "pending")) == []


def test_unacknowledged_commit_is_dropped_after_a_crash(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    swap = tag_store.on_commit("vol")
    Volume.create(root, KEY, on_commit=swap).close()

    def die_first(old: str, new: str) -> None:
        raise SimulatedCrash

    vol = Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=die_first,
                      auto_commit=False)
    vol.write_bytes("lost.txt", b"never acknowledged")
    with pytest.raises(SimulatedCrash):
        vol.commit()
    vol._release()
    with Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=swap) as vol:
        assert not vol.exists("lost.txt")
    assert os.listdir(os.path.join(root, "pending")) == []
    assert os.listdir(os.path.join(root, "segments")) == []  # its chunks were collected


def test_session_after_an_unknown_outcome_stops(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    Volume.create(root, KEY, on_commit=tag_store.on_commit("vol")).close()

    def unreachable(old: str, new: str) -> None:
        raise ConnectionError("CAS unreachable")

    vol = Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=unreachable)
    with pytest.raises(VolumeError, match="did not complete .ConnectionError: CAS unreachable") as info:
        vol.write_bytes("x", b"1")  # the close of the last writer commits, and fails
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(VolumeError, match="did not complete"):
        vol.mkdir("more")
    assert len(os.listdir(os.path.join(root, "pending"))) == 1  # kept: the next open decides
    vol._release()


def test_tag_store_refusal_is_a_conflict(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    Volume.create(root, KEY, on_commit=tag_store.on_commit("vol")).close()
    tag_store.compare_and_swap("vol", tag_store.current("vol") or "", "f" * 64)  # someone else moved on
    vol = Volume.open(root, KEY, on_commit=tag_store.on_commit("vol"))
    with pytest.raises(VolumeConflict) as info:
        vol.write_bytes("late.txt", b"data")
    assert isinstance(info.value.__cause__, TagRefused)
    assert info.value.kept_as in os.listdir(os.path.join(root, "conflicts"))
    vol._release()


def test_local_tag_store_semantics(tmp_path: Path) -> None:
    store = LocalTagStore(str(tmp_path / "t.json"))
    assert store.current("v") is None
    store.compare_and_swap("v", "", "a" * 64)
    with pytest.raises(TagRefused):
        store.compare_and_swap("v", "", "b" * 64)
    with pytest.raises(TagRefused):
        store.compare_and_swap("v", "c" * 64, "b" * 64)
    store.compare_and_swap("v", "a" * 64, "b" * 64)
    assert LocalTagStore(str(tmp_path / "t.json")).current("v") == "b" * 64


def test_create_refused_by_the_tag_store_can_be_retried(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    tag_store.compare_and_swap("vol", "", "e" * 64)  # the name is taken
    with pytest.raises(VolumeConflict):
        Volume.create(root, KEY, on_commit=tag_store.on_commit("vol"))
    Volume.create(root, KEY, on_commit=tag_store.on_commit("other")).close()
    assert tag_store.current("other") is not None

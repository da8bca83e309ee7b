"""Commits: no-op commits, conflicts between sessions (kept, never lost), clean-up, fork."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citadel.volume import LocalTagStore, Volume, VolumeClosed, VolumeConflict
from citadel.volume.transfer import export_tree, kept_states

from .conftest import KEY


def test_commit_without_changes_keeps_the_tag(volume: Volume) -> None:
    tag = volume.tag
    assert volume.commit() is None
    assert volume.tag == tag
    volume.write_bytes("f", b"1")
    assert volume.tag != tag and volume.generation == 1


def test_closed_volume_refuses_use(volume: Volume) -> None:
    volume.close()
    with pytest.raises(VolumeClosed):
        volume.listdir("")


@pytest.mark.parametrize("with_store", [True, False])
def test_second_session_loses_and_its_changes_are_kept(tmp_path: Path, with_store: bool) -> None:
    root = str(tmp_path / "vol")
    store = LocalTagStore(str(tmp_path / "tags.json"))
    swap = store.on_commit("vol") if with_store else None
    Volume.create(root, KEY, on_commit=swap).close()
    a = Volume.open(root, KEY, expected_tag=store.current("vol"), on_commit=swap)
    b = Volume.open(root, KEY, expected_tag=store.current("vol"), on_commit=swap)
    a.write_bytes("from-a.txt", b"A wins")
    with pytest.raises(VolumeConflict) as info:
        b.write_bytes("from-b.txt", b"B's work")
    kept = info.value.kept_as
    assert "another engine" in info.value.diagnostics() and "conflicts/" in info.value.diagnostics()
    with pytest.raises(VolumeConflict):  # the loser cannot go on as if nothing happened
        b.listdir("")
    b.close()
    a.close()
    with Volume.open(root, KEY, expected_tag=store.current("vol") if with_store else None, read_only=True) as vol:
        assert vol.listdir("") == ["from-a.txt"]
    # nothing is lost: the owner finds B's state and exports it
    states = kept_states(root, KEY)
    assert [(s.kind, s.tag, s.files) for s in states] == [("conflict", kept, 1)]
    with Volume.open(root, KEY, expected_tag=kept, read_only=True) as old:
        export_tree(old, str(tmp_path / "b-export"))
    assert (tmp_path / "b-export" / "from-b.txt").read_bytes() == b"B's work"
    # and later clean-ups keep its chunks
    Volume.open(root, KEY, expected_tag=store.current("vol") if with_store else None, on_commit=swap).close()
    with Volume.open(root, KEY, expected_tag=kept, read_only=True) as old:
        assert old.read_bytes("from-b.txt") == b"B's work"


def test_unreferenced_segments_are_collected_only_when_alone(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    swap = tag_store.on_commit("vol")
    vol = Volume.create(root, KEY, on_commit=swap)
    vol.write_bytes("f", os.urandom(200_000))
    vol.close()
    first = set(os.listdir(os.path.join(root, "segments")))
    reader = Volume.open(root, KEY, read_only=True)
    vol = Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=swap)
    vol.write_bytes("f", b"small now")  # every record of the first segment is now dead
    vol.close()
    assert first <= set(os.listdir(os.path.join(root, "segments")))  # the reader still uses it
    assert len(reader.read_bytes("f")) == 200_000
    reader.close()
    Volume.open(root, KEY, expected_tag=tag_store.current("vol"), on_commit=swap).close()
    assert not first & set(os.listdir(os.path.join(root, "segments")))


def test_forked_child_writes_to_its_own_segment(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    swap = tag_store.on_commit("vol")
    vol = Volume.create(root, KEY, on_commit=swap, auto_commit=False)
    with vol.open_file("parent.txt", "w") as fh:
        fh.write("p" * 100_000)
    before = set(os.listdir(os.path.join(root, "segments")))
    pid = os.fork()
    if pid == 0:  # the child: commit its own change, then vanish without clean-up
        status = 0
        try:
            vol.write_bytes("child.txt", b"c" * 100_000)
            vol.commit()
        except BaseException:
            status = 1
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    after = set(os.listdir(os.path.join(root, "segments")))
    assert len(after - before) == 1  # a new segment: no nonce of the parent's segment was reused
    with pytest.raises(VolumeConflict):  # the child committed first, as a second engine would
        vol.commit()
    vol._release()
    with Volume.open(root, KEY, expected_tag=tag_store.current("vol"), read_only=True) as check:
        assert check.read_bytes("child.txt") == b"c" * 100_000
        assert check.read_bytes("parent.txt") == b"p" * 100_000  # inherited, committed by the child


def test_forked_child_that_writes_nothing_commits_nothing(tmp_path: Path, tag_store: LocalTagStore) -> None:
    root = str(tmp_path / "vol")
    vol = Volume.create(root, KEY, on_commit=tag_store.on_commit("vol"), auto_commit=False)
    vol.write_bytes("parent.txt", b"uncommitted in the parent")
    pid = os.fork()
    if pid == 0:
        os._exit(0 if vol.commit() is None else 1)  # what a clean exit in the child would do
    assert os.waitpid(pid, 0)[1] == 0
    assert vol.commit() is not None  # the parent's own commit is not a conflict
    vol.close()

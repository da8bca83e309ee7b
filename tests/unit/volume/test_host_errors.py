"""The host side's file-system errors become one VolumeError naming the path, never a bare OSError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citadel.volume import LocalTagStore, Volume, VolumeError
from citadel.volume.transfer import export_tree, import_path


def test_create_on_a_file_is_a_volume_error(tmp_path: Path, key: bytes) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    with pytest.raises(VolumeError, match="is a file"):
        Volume.create(str(target), key)
    assert target.read_text() == "x"


def test_create_where_nothing_can_be_written_is_a_volume_error(key: bytes) -> None:
    with pytest.raises(VolumeError, match="cannot create a volume"):
        Volume.create("/proc/citadel-test-volume", key)


def test_tag_store_that_is_a_directory_leaves_no_lock_file(tmp_path: Path) -> None:
    store = LocalTagStore(str(tmp_path / "adir"))
    (tmp_path / "adir").mkdir()
    with pytest.raises(VolumeError, match="is a directory"):
        store.current("vol")
    assert not (tmp_path / "adir.lock").exists()


def test_tag_store_in_an_unwritable_place_is_a_volume_error() -> None:
    with pytest.raises(VolumeError, match="cannot use the tag store"):
        LocalTagStore("/proc/citadel-test-tags.json").current("vol")


def test_import_to_a_path_outside_or_over_a_file_is_refused_and_not_committed(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "f.txt"
    src.write_text("data")
    Volume.create(str(tmp_path / "vol"), key).close()
    with Volume.open(str(tmp_path / "vol"), key, auto_commit=False) as vol:
        with pytest.raises(VolumeError, match=r"cannot import .*\.\."):
            import_path(vol, str(src), "../..")
        import_path(vol, str(src))
        with pytest.raises(VolumeError, match="f.txt"):
            import_path(vol, str(tmp_path / "vol"), "f.txt")  # a directory into what is a file
        vol.commit()
        tag = vol.tag
    vol = Volume.open(str(tmp_path / "vol"), key, auto_commit=False)
    import_path(vol, str(src), "again")
    with pytest.raises(VolumeError):
        import_path(vol, str(src), "../..")
    vol.abandon()  # as `citadel volume import` does when a source fails: all or nothing
    with Volume.open(str(tmp_path / "vol"), key, read_only=True) as again:
        assert again.tag == tag and [p for p, _ in again.walk_files()] == ["f.txt"]


@pytest.mark.parametrize(("dest", "words"), [("missing/out", "does not exist"), ("afile/out", "is a file"),
                                              ("/proc/citadel-test-export", "cannot write")])
def test_export_to_an_unusable_place_leaves_nothing(tmp_path: Path, key: bytes, dest: str, words: str) -> None:
    (tmp_path / "afile").write_text("x")
    with Volume.create(str(tmp_path / "vol"), key) as vol:
        target = dest if dest.startswith("/") else str(tmp_path / dest)
        with pytest.raises(VolumeError, match=words):
            export_tree(vol, target)
    assert sorted(os.listdir(tmp_path)) == ["afile", "vol"]

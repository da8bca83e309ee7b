"""Tamper matrix: every change a host can make to a volume's bytes gives one clear error naming the file."""

from __future__ import annotations

import os
import shutil
from typing import Callable, Dict, List, Tuple

import pytest

from citadel.crypto import GCM_TAG_SIZE
from citadel.volume import TamperedVolume, Volume, VolumeError, VolumeRollback, VolumeWrongKey
from citadel.volume.format import HOLE, chunk_length, open_manifest

from .conftest import KEY, OTHER_KEY

CS = 4096
A = bytes(range(256)) * (3 * CS // 256) + b"tail"  # three full chunks and a short one
B = b"b" * CS + b"end"  # a full chunk and a short one


def make(root: str) -> None:
    vol = Volume.create(root, KEY, chunk_size=CS)
    vol.write_bytes("a.bin", A)
    vol.makedirs("d")
    vol.write_bytes("d/b.txt", B)
    vol.close()


def records(root: str) -> Dict[str, List[Tuple[str, int, int]]]:
    """path -> [(segment file, offset, record length)] from the (trusted, test-side) manifest."""
    with open(os.path.join(root, "manifest"), "rb") as fh:
        state = open_manifest(fh.read(), KEY, "t")
    out = {}
    for path, rec in state.files.items():
        out[path] = [(os.path.join(root, "segments", state.segments[s].hex()), off,
                      chunk_length(i, rec.size, state.chunk_size) + GCM_TAG_SIZE)
                     for i, (s, off) in enumerate(rec.chunks) if s != HOLE]
    return out


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def read_at(path: str, offset: int, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(n)


def flip_chunk_byte(root: str) -> None:
    seg, off, n = records(root)["a.bin"][1]
    patch(seg, off + 5, bytes([read_at(seg, off + 5, 1)[0] ^ 1]))


def flip_tag_byte(root: str) -> None:
    seg, off, n = records(root)["d/b.txt"][1]
    patch(seg, off + n - 1, bytes([read_at(seg, off + n - 1, 1)[0] ^ 0x80]))


def swap_chunks_within_file(root: str) -> None:
    (seg, o0, n), (_, o1, _) = records(root)["a.bin"][:2]
    c0, c1 = read_at(seg, o0, n), read_at(seg, o1, n)
    patch(seg, o0, c1)
    patch(seg, o1, c0)


def swap_chunks_between_files(root: str) -> None:
    (sa, oa, n), (sb, ob, _) = records(root)["a.bin"][0], records(root)["d/b.txt"][0]
    ca, cb = read_at(sa, oa, n), read_at(sb, ob, n)
    patch(sa, oa, cb)
    patch(sb, ob, ca)


def truncate_segment(root: str) -> None:
    seg = records(root)["d/b.txt"][-1][0]
    os.truncate(seg, os.path.getsize(seg) - 3)


def delete_segment(root: str) -> None:
    os.remove(records(root)["a.bin"][0][0])


def replace_segment_with_one_of_another_volume(root: str) -> None:
    other = root + "-other"
    make(other)
    seg = records(root)["a.bin"][0][0]
    shutil.copyfile(records(other)["a.bin"][0][0], seg)


def drop_last_chunk_of_a_file(root: str) -> None:
    # Make the file's last chunk unreadable by cutting the segment right after the previous chunk.
    seg, off, _ = records(root)["a.bin"][-1]
    os.truncate(seg, off)


CHUNK_CASES: Dict[str, Tuple[Callable[[str], None], str]] = {
    "chunk_byte_flipped": (flip_chunk_byte, "a.bin"),
    "chunk_tag_flipped": (flip_tag_byte, "d/b.txt"),
    "chunks_swapped_within_a_file": (swap_chunks_within_file, "a.bin"),
    "chunks_swapped_between_files": (swap_chunks_between_files, "a.bin"),
    "segment_replaced_by_another_volumes": (replace_segment_with_one_of_another_volume, "a.bin"),
}
OPEN_CASES: Dict[str, Tuple[Callable[[str], None], str]] = {
    "segment_truncated": (truncate_segment, ""),
    "segment_deleted": (delete_segment, "a.bin"),
    "file_end_cut_off": (drop_last_chunk_of_a_file, "a.bin"),  # d/b.txt, stored after it, too
}


@pytest.mark.parametrize("case", sorted(CHUNK_CASES))
def test_chunk_tampering_is_caught_on_read_naming_the_file(tmp_path: object, case: str) -> None:
    root = os.path.join(str(tmp_path), "vol")
    make(root)
    tamper, victim = CHUNK_CASES[case]
    tamper(root)
    with Volume.open(root, KEY, read_only=True) as vol:
        with pytest.raises(TamperedVolume) as info:
            vol.verify()
        assert info.value.path == victim
        assert victim in info.value.diagnostics() and "changed outside Citadel" in info.value.diagnostics()


@pytest.mark.parametrize("case", sorted(OPEN_CASES))
def test_missing_or_cut_storage_is_caught_at_open(tmp_path: object, case: str) -> None:
    root = os.path.join(str(tmp_path), "vol")
    make(root)
    tamper, victim = OPEN_CASES[case]
    tamper(root)
    with pytest.raises(TamperedVolume) as info:
        Volume.open(root, KEY, read_only=True)
    assert info.value.path in ({victim} if victim else {"a.bin", "d/b.txt"})


def test_appended_bytes_change_nothing(tmp_path: object) -> None:
    root = os.path.join(str(tmp_path), "vol")
    make(root)
    for seg in {r[0] for rs in records(root).values() for r in rs}:
        with open(seg, "ab") as fh:
            fh.write(os.urandom(100))
    with Volume.open(root, KEY, read_only=True) as vol:
        vol.verify()
        assert vol.read_bytes("a.bin") == A and vol.read_bytes("d/b.txt") == B


@pytest.mark.parametrize("defect, change, error", [
    ("manifest_byte_flipped", lambda m: m[:100] + bytes([m[100] ^ 1]) + m[101:], VolumeWrongKey),
    ("manifest_truncated", lambda m: m[:40], VolumeError),
    ("manifest_bad_magic", lambda m: b"XXXX" + m[4:], VolumeError),
    ("manifest_extended", lambda m: m + b"\0", VolumeWrongKey),
])
def test_manifest_tampering(tmp_path: object, defect: str, change: Callable[[bytes], bytes], error: type) -> None:
    root = os.path.join(str(tmp_path), "vol")
    make(root)
    path = os.path.join(root, "manifest")
    with open(path, "rb") as fh:
        good = fh.read()
    with open(path, "wb") as fh:
        fh.write(change(good))
    with pytest.raises(error):
        Volume.open(root, KEY, read_only=True)
    # pinned to its tag, any change is first of all "not the latest state"
    with pytest.raises(VolumeRollback):
        Volume.open(root, KEY, read_only=True, expected_tag=__import__("hashlib").sha256(good).hexdigest())


def test_wrong_key(tmp_path: object) -> None:
    root = os.path.join(str(tmp_path), "vol")
    make(root)
    with pytest.raises(VolumeWrongKey):
        Volume.open(root, OTHER_KEY, read_only=True)


def test_manifest_of_another_volume_is_refused_when_pinned(tmp_path: object) -> None:
    root, other = os.path.join(str(tmp_path), "vol"), os.path.join(str(tmp_path), "other")
    make(root)
    make(other)
    with Volume.open(root, KEY, read_only=True) as vol:
        tag = vol.tag
    shutil.copyfile(os.path.join(other, "manifest"), os.path.join(root, "manifest"))
    with pytest.raises(VolumeRollback):
        Volume.open(root, KEY, read_only=True, expected_tag=tag)


def test_no_unauthenticated_plaintext_reaches_the_callers_buffer(tmp_path: object) -> None:
    root = os.path.join(str(tmp_path), "vol")
    make(root)
    flip_chunk_byte(root)  # chunk 1 of a.bin
    with Volume.open(root, KEY, read_only=True) as vol:
        raw = vol.open_file("a.bin", "rb", buffering=0)
        buf = bytearray(len(A))
        with pytest.raises(TamperedVolume):
            raw.readinto(buf)
        assert buf[CS : 2 * CS] == bytes(CS)
        raw.close()

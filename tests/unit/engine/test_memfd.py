"""Sealed memfds: exact content, no way to change them, close-on-exec; and streaming from an image."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.memfd import (
    ALL_SEALS,
    F_GET_SEALS,
    fd_path,
    memfd_from_bytes,
    memfd_from_image,
)
from citadel.errors import TamperedImage
from citadel.seal.image import SealedImage
from citadel.seal.sealer import seal_tree

KEY = bytes(range(32))


def test_memfd_holds_the_bytes_and_is_sealed() -> None:
    fd = memfd_from_bytes("unit", b"hello world")
    try:
        assert os.read(fd, 100) == b"hello world"
        assert fcntl.fcntl(fd, F_GET_SEALS) & ALL_SEALS == ALL_SEALS
        assert not os.get_inheritable(fd)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"X", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1)
        with pytest.raises(PermissionError):
            mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE)
        assert os.readlink(fd_path(fd)) == "/memfd:unit (deleted)"
        with open(fd_path(fd), "rb") as again:  # reopening gives a new offset on the same bytes
            assert again.read() == b"hello world"
    finally:
        os.close(fd)


def test_writes_through_a_reopened_memfd_fail() -> None:
    fd = memfd_from_bytes("unit", b"x")
    writer = os.open(fd_path(fd), os.O_WRONLY)
    try:
        with pytest.raises(PermissionError) as caught:
            os.write(writer, b"y")
        assert caught.value.errno == errno.EPERM
        assert os.pread(fd, 10, 0) == b"x"
    finally:
        os.close(writer)
        os.close(fd)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=200_000))
def test_memfd_round_trips_any_bytes(data: bytes) -> None:
    fd = memfd_from_bytes("prop", data)
    try:
        assert os.fstat(fd).st_size == len(data)
        assert os.pread(fd, len(data) + 1, 0) == data
    finally:
        os.close(fd)


@pytest.fixture()
def image(tmp_path: Path) -> SealedImage:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big.bin").write_bytes(os.urandom(200_000))  # several 64 KiB chunks
    (src / "d" / "empty.bin").write_bytes(b"")
    (src / "d" / "auth.bin").write_bytes(os.urandom(3_000_000))
    (src / "d" / "note.txt").write_text("note\n")
    seal_tree(str(src), str(tmp_path / "img"), rules=[("d/auth.bin", "authenticated")], key=KEY)
    return SealedImage.open(str(tmp_path / "img"), KEY)


def _content(fd: int) -> bytes:
    try:
        return os.pread(fd, os.fstat(fd).st_size + 1, 0)
    finally:
        os.close(fd)


def test_streamed_plaintext_equals_image_read(image: SealedImage) -> None:
    for rel in ("d/big.bin", "d/empty.bin", "d/auth.bin", "d/note.txt"):
        fd = memfd_from_image(image, rel)
        assert fcntl.fcntl(fd, F_GET_SEALS) & ALL_SEALS == ALL_SEALS
        assert _content(fd) == image.read(rel), rel


def _flip(path: str, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 1
    Path(path).write_bytes(bytes(data))


def _truncate(path: str, offset: int) -> None:
    os.truncate(path, os.path.getsize(path) - offset)


def _extend(path: str, offset: int) -> None:
    with open(path, "ab") as fh:
        fh.write(b"\0" * offset)


def _swap_chunks(path: str, offset: int) -> None:
    data = Path(path).read_bytes()
    header, size = 36, 65536 + 16
    first, second = data[header : header + size], data[header + size : header + 2 * size]
    Path(path).write_bytes(data[:header] + second + first + data[header + 2 * size :])


TAMPERS = {
    "bit_flip_in_chunk": ("d/big.bin", _flip, 100, "failed authentication in chunk 0"),
    "bit_flip_in_last_chunk": ("d/big.bin", _flip, -3, "failed authentication in chunk 3"),
    "bit_flip_in_header": ("d/big.bin", _flip, 10, "has a header that does not match the manifest"),
    "bit_flip_in_reserved_header_byte": ("d/big.bin", _flip, 6, "failed authentication in chunk 0"),
    "bad_magic": ("d/big.bin", _flip, 0, "is not an encrypted Citadel file (bad magic or version)"),
    "truncated": ("d/big.bin", _truncate, 1, "has the wrong length (truncated or extended)"),
    "extended": ("d/big.bin", _extend, 1, "has the wrong length (truncated or extended)"),
    "chunks_swapped": ("d/big.bin", _swap_chunks, 0, "failed authentication in chunk 0"),
    "truncated_to_header": ("d/note.txt", _truncate, 30, "is shorter than its header"),
    "authenticated_bit_flip": ("d/auth.bin", _flip, 2_999_999, "does not match its recorded SHA-256"),
    "authenticated_truncated": ("d/auth.bin", _truncate, 1, "does not match its recorded SHA-256"),
    "authenticated_extended": ("d/auth.bin", _extend, 5, "does not match its recorded SHA-256"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_files_are_refused_like_image_read(image: SealedImage, case: str) -> None:
    rel, tamper, offset, message = TAMPERS[case]
    tamper(image.host_path(rel), offset)
    with pytest.raises(TamperedImage) as by_read:
        image.read(rel)
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(TamperedImage) as by_stream:
        memfd_from_image(image, rel)
    assert set(os.listdir("/proc/self/fd")) == fds_before  # the half-filled memfd was closed
    assert str(by_stream.value) == str(by_read.value)
    assert message in str(by_stream.value) and repr(rel) in str(by_stream.value)


def test_files_outside_the_manifest_are_refused(image: SealedImage) -> None:
    with pytest.raises(TamperedImage, match="is not part of the sealed image"):
        memfd_from_image(image, "d/other.bin")

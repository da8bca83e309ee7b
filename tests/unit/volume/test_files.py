"""Volume files behave like plain files: every open mode, seek/tell/truncate, text, big data, libraries."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from citadel.volume import Volume, VolumeFile, file_for_fd

from .conftest import reopen

MODES = ["r", "rb", "w", "wb", "a", "ab", "x", "xb", "r+", "r+b", "w+", "w+b", "a+", "a+b", "x+", "x+b"]


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # the type is what is compared
        return ("error", type(exc).__name__, getattr(exc, "errno", None))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("exists", [True, False])
def test_each_mode_matches_a_plain_file(volume: Volume, tmp_path: Path, mode: str, exists: bool) -> None:
    plain = tmp_path / "plain.txt"
    initial = b"line one\nline two\n"
    if exists:
        plain.write_bytes(initial)
        volume.write_bytes("f.txt", initial)

    def script(fh: Any) -> list:
        data = b"more\n" if "b" in mode else "more\n"
        return [outcome(fh.read), outcome(lambda: fh.write(data)), outcome(fh.tell), outcome(lambda: fh.seek(0)),
                outcome(fh.read), outcome(fh.readable), outcome(fh.writable), outcome(fh.seekable),
                outcome(lambda: fh.truncate(4)), outcome(fh.tell), getattr(fh, "mode", None)]

    got_plain = outcome(lambda: open(plain, mode))  # noqa: SIM115 - closed below
    got_vol = outcome(lambda: volume.open_file("f.txt", mode))
    assert got_plain[0] == got_vol[0], (got_plain, got_vol)
    if got_plain[0] == "error":
        assert got_plain == got_vol
        return
    with got_plain[1] as fp, got_vol[1] as fv:
        assert script(fp) == script(fv)
    assert plain.read_bytes() == volume.read_bytes("f.txt")


def test_sizes_cross_chunks_and_survive_reopen(volume: Volume, tag_store: Any) -> None:
    data = os.urandom(5 * volume.chunk_size + 123)
    with volume.open_file("big.bin", "wb") as fh:
        for i in range(0, len(data), 7777):
            fh.write(data[i : i + 7777])
    assert volume.stat("big.bin").st_size == len(data)
    vol = reopen(volume, tag_store)
    try:
        assert vol.read_bytes("big.bin") == data
        with vol.open_file("big.bin", "r+b") as fh:  # overwrite across a chunk border, then read back
            fh.seek(vol.chunk_size - 10)
            fh.write(b"X" * 20)
            fh.seek(vol.chunk_size - 12)
            assert fh.read(24) == data[vol.chunk_size - 12 : vol.chunk_size - 10] + b"X" * 20 + \
                data[vol.chunk_size + 10 : vol.chunk_size + 12]
        expected = bytearray(data)
        expected[vol.chunk_size - 10 : vol.chunk_size + 10] = b"X" * 20
        assert vol.read_bytes("big.bin") == bytes(expected)
        vol.verify()
    finally:
        vol.close()


def test_holes_and_truncation(volume: Volume, tmp_path: Path) -> None:
    plain = tmp_path / "p.bin"
    cs = volume.chunk_size
    with open(plain, "wb") as fp, volume.open_file("h.bin", "wb") as fv:
        for fh in (fp, fv):
            fh.write(b"head")
            fh.seek(3 * cs + 5)
            fh.write(b"tail")
            fh.truncate(cs * 5)
            fh.truncate(2 * cs + 1)
            fh.seek(0, io.SEEK_END)
            fh.write(b"!")
    assert volume.read_bytes("h.bin") == plain.read_bytes()
    assert volume.stat("h.bin").st_size == plain.stat().st_size == 2 * cs + 2


def test_text_mode_newlines_and_encodings(volume: Volume, tmp_path: Path) -> None:
    text = "héllo\r\nwörld\nlast\r"
    for kwargs in ({}, {"newline": ""}, {"newline": "\r\n"}, {"encoding": "utf-16"}, {"encoding": "latin-1"}):
        plain = tmp_path / "t.txt"
        with open(plain, "w", **kwargs) as fp, volume.open_file("t.txt", "w", **kwargs) as fv:  # type: ignore[arg-type]
            fp.write(text)
            fv.write(text)
        assert volume.read_bytes("t.txt") == plain.read_bytes()
        with open(plain, **kwargs) as fp, volume.open_file("t.txt", **kwargs) as fv:  # type: ignore[arg-type]
            assert fv.readlines() == fp.readlines()


def test_unbuffered_binary_and_unbuffered_text(volume: Volume) -> None:
    with volume.open_file("u.bin", "wb", buffering=0) as raw:
        assert raw.write(b"abc") == 3
        assert isinstance(raw, io.RawIOBase)
    with pytest.raises(ValueError, match="unbuffered text"):
        volume.open_file("u.bin", "r", buffering=0)
    assert volume.read_bytes("u.bin") == b"abc"


def test_buffered_files_are_not_mistaken_for_os_files(volume: Volume) -> None:
    # numpy and others take a C fast path for io.BufferedReader/BufferedWriter/FileIO objects
    with volume.open_file("a.bin", "wb") as fh:
        assert isinstance(fh, VolumeFile)
        assert not isinstance(fh, (io.FileIO, io.BufferedReader, io.BufferedWriter))
    with volume.open_file("a.bin", "rb") as fh:
        assert not isinstance(fh, (io.FileIO, io.BufferedReader, io.BufferedWriter))


def test_fileno_is_a_token_that_commits_on_fsync(volume: Volume) -> None:
    before = volume.tag
    with volume.open_file("d.txt", "w") as fh:
        fh.write("durable")
        fh.flush()
        fd = fh.fileno()
        raw = file_for_fd(fd)
        assert raw is not None
        raw.fsync()  # what the shield does for os.fsync(fd)
        assert volume.tag != before
        with pytest.raises(OSError):
            os.read(fd, 1)  # the token is never data
    assert file_for_fd(fd) is None


def test_numpy_save_and_load(volume: Volume) -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(100_000, dtype=np.float64).reshape(250, 400)
    with volume.open_file("arr.npy", "wb") as fh:
        np.save(fh, arr)
    with volume.open_file("arr.npy", "rb") as fh:
        back = np.load(fh)
    assert (back == arr).all()
    with volume.open_file("arrs.npz", "wb") as fh:
        np.savez_compressed(fh, a=arr, b=arr[:3])
    with volume.open_file("arrs.npz", "rb") as fh, np.load(fh) as z:
        assert (z["b"] == arr[:3]).all()


def test_shutil_copyfileobj_in_and_out(volume: Volume, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    with open(src, "rb") as fin, volume.open_file("copy.bin", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    with volume.open_file("copy.bin", "rb") as fin, volume.open_file("copy2.bin", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    assert volume.read_bytes("copy2.bin") == src.read_bytes()


def test_open_unlinked_file_keeps_working(volume: Volume) -> None:
    fh = volume.open_file("gone.txt", "w+")
    fh.write("still here")
    volume.remove("gone.txt")
    fh.seek(0)
    assert fh.read() == "still here"
    fh.close()
    assert not volume.exists("gone.txt")


def test_read_only_volume_refuses_writes(volume: Volume, tag_store: Any) -> None:
    volume.write_bytes("r.txt", b"x")
    volume.close()
    with Volume.open(volume.root, bytes(range(32)), read_only=True) as vol:
        assert vol.read_bytes("r.txt") == b"x"
        for call in (lambda: vol.open_file("r.txt", "w"), lambda: vol.mkdir("d"), lambda: vol.remove("r.txt")):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == 30  # EROFS


def test_last_writer_close_commits(volume: Volume) -> None:
    a = volume.open_file("a", "w")
    b = volume.open_file("b", "w")
    tag = volume.tag
    a.write("1")
    a.close()
    assert volume.tag == tag  # b is still open
    b.close()
    assert volume.tag != tag


def test_sqlite_database_kept_in_a_volume_via_serialize(volume: Volume) -> None:
    """sqlite3 opens files in C, out of any Python shield's reach; a database still lives in a volume
    when the program loads it into memory and saves it back (Connection.serialize, Python 3.11+)."""
    sqlite3 = pytest.importorskip("sqlite3")
    if not hasattr(sqlite3.Connection, "serialize"):
        pytest.skip("Connection.serialize needs Python 3.11")
    db = sqlite3.connect(":memory:")
    db.execute("create table t (k text primary key, v integer)")
    db.executemany("insert into t values (?, ?)", [(f"k{i}", i) for i in range(1000)])
    db.commit()
    volume.write_bytes("app.db", db.serialize())
    back = sqlite3.connect(":memory:")
    back.deserialize(volume.read_bytes("app.db"))
    assert back.execute("select sum(v) from t").fetchone() == (499500,)

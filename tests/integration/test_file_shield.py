"""Ordinary file APIs see sealed files as verified plaintext, read-only; the shield survives fork."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.engine_shields_harness import (
    engine_code,
    last_json,
    python,
    seal,
    trusted_site,
    write_tree,
)

SECRET = "top secret\nline two\n"
CRLF = b"one\r\ntwo\r\n"
LATIN = "caf\xe9 cr\xe8me\n"
BLOB = bytes(range(256)) * 1000  # bigger than a chunk of 64 KiB

READS = r"""
import io, json, mmap, os, pathlib
out = {}
root = IMAGE
secret = os.path.join(root, "data", "secret.txt")
with open(secret) as fh:
    out["text"] = fh.read()
    out["name"] = fh.name == secret
with open(secret, "rb") as fh:
    fh.seek(4)
    out["seek_read"] = fh.read(6).decode()
    out["tell"] = fh.tell()
    buf = bytearray(3)
    fh.seek(0)
    fh.readinto(buf)
    out["readinto"] = buf.decode()
    out["fstat_size"] = os.fstat(fh.fileno()).st_size
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        out["mmap"] = mapped[:10].decode()
with open(os.path.join(root, "data", "crlf.txt"), newline="") as fh:
    out["newline_kept"] = fh.read()
with open(os.path.join(root, "data", "crlf.txt")) as fh:
    out["newline_translated"] = fh.read()
with open(os.path.join(root, "data", "latin.txt"), encoding="latin-1") as fh:
    out["latin"] = fh.read()
blob = os.path.join(root, "data", "blob.bin")
with open(blob, "rb", buffering=0) as fh:
    out["blob_ok"] = fh.read() == bytes(range(256)) * 1000 and type(fh).__name__ == "FileIO"
out["io_open"] = io.open(secret, encoding="utf-8").readline()
out["open_code"] = io.open_code(secret).read().decode()
out["pathlib_text"] = pathlib.Path(secret).read_text()
out["pathlib_bytes_auth"] = pathlib.Path(blob).read_bytes() == bytes(range(256)) * 1000
fd = os.open(secret, os.O_RDONLY)
out["os_open"] = os.read(fd, 10).decode()
os.close(fd)
out["sizes"] = [os.stat(secret).st_size, os.lstat(secret).st_size, os.path.getsize(secret),
                pathlib.Path(secret).stat().st_size, os.path.getsize(blob)]
out["is_file"] = [os.path.isfile(secret), pathlib.Path(secret).is_file(), pathlib.Path(secret).exists()]
out["listing"] = sorted(os.listdir(os.path.join(root, "data")))
out["glob"] = sorted(p.name for p in pathlib.Path(root).glob("data/*.txt"))
out["writable"] = os.access(secret, os.W_OK)
os.chdir(os.path.join(root, "data"))
out["relative"] = open("secret.txt").read()
link = os.path.join(OUTSIDE, "link-to-secret")
os.symlink(secret, link)
out["via_symlink"] = open(link).read()
print(json.dumps(out))
"""

WRITES = r"""
import json, os, pathlib, shutil
from citadel.errors import SealedFileReadOnly
root = IMAGE
secret = os.path.join(root, "data", "secret.txt")
attempts = {
    "open_w": lambda: open(secret, "w"),
    "open_a": lambda: open(secret, "a"),
    "open_rplus": lambda: open(secret, "r+"),
    "open_x_new": lambda: open(os.path.join(root, "data", "new.txt"), "x"),
    "open_w_new": lambda: open(os.path.join(root, "new.txt"), "wb"),
    "pathlib_write": lambda: pathlib.Path(secret).write_text("x"),
    "pathlib_touch_new": lambda: pathlib.Path(root, "data", "touched").touch(),
    "os_open_wronly": lambda: os.open(secret, os.O_WRONLY),
    "os_open_trunc": lambda: os.open(secret, os.O_RDONLY | os.O_TRUNC),
    "remove": lambda: os.remove(secret),
    "unlink": lambda: pathlib.Path(secret).unlink(),
    "rename_from": lambda: os.rename(secret, os.path.join(OUTSIDE, "stolen")),
    "replace_onto": lambda: os.replace(os.path.join(OUTSIDE, "plain"), secret),
    "truncate": lambda: os.truncate(secret, 0),
    "mkdir": lambda: os.mkdir(os.path.join(root, "data", "sub")),
    "rmdir": lambda: os.rmdir(os.path.join(root, "data")),
    "chmod": lambda: os.chmod(secret, 0o777),
    "copy_into": lambda: shutil.copy(os.path.join(OUTSIDE, "plain"), os.path.join(root, "data")),
}
results = {}
for name, attempt in attempts.items():
    try:
        attempt()
        results[name] = "allowed"
    except PermissionError as exc:
        ok = isinstance(exc, SealedFileReadOnly) and "read-only inside the engine" in str(exc)
        results[name] = "refused" if ok else f"wrong error {exc!r}"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trusted_site(tmp_path_factory.mktemp("trusted-site"))


@pytest.fixture()
def image(tmp_path: Path) -> tuple[Path, str, Path]:
    src = write_tree(
        tmp_path / "src",
        {
            "data/secret.txt": SECRET,
            "data/crlf.txt": CRLF,
            "data/latin.txt": LATIN.encode("latin-1"),
            "data/blob.bin": BLOB,
            "logs/app.log": "started\n",
        },
    )
    key = seal(src, tmp_path / "img", rules=[("data/blob.bin", "authenticated"), ("logs", "unprotected")])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "plain").write_text("plain\n")
    return (tmp_path / "img").resolve(), key, outside


def _run(image: tuple[Path, str, Path], site: Path, body: str) -> dict:
    root, key, outside = image
    code = engine_code(
        root, key, site, body=body.replace("IMAGE", repr(str(root))).replace("OUTSIDE", repr(str(outside)))
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    return last_json(done.stdout)


def test_sealed_files_read_as_plaintext(image: tuple[Path, str, Path], site: Path) -> None:
    out = _run(image, site, READS)
    size = len(SECRET)
    assert out == {
        "text": SECRET,
        "name": True,
        "seek_read": "secret",
        "tell": 10,
        "readinto": "top",
        "fstat_size": size,
        "mmap": SECRET[:10],
        "newline_kept": CRLF.decode(),
        "newline_translated": "one\ntwo\n",
        "latin": LATIN,
        "blob_ok": True,
        "io_open": "top secret\n",
        "open_code": SECRET,
        "pathlib_text": SECRET,
        "pathlib_bytes_auth": True,
        "os_open": SECRET[:10],
        "sizes": [size, size, size, size, len(BLOB)],
        "is_file": [True, True, True],
        "listing": ["blob.bin", "crlf.txt", "latin.txt", "secret.txt"],
        "glob": ["crlf.txt", "latin.txt", "secret.txt"],
        "writable": False,
        "relative": SECRET,
        "via_symlink": SECRET,
    }
    assert SECRET.encode() not in (image[0] / "data" / "secret.txt").read_bytes()


def test_every_kind_of_write_is_refused(image: tuple[Path, str, Path], site: Path) -> None:
    before = {p: p.read_bytes() for p in image[0].rglob("*") if p.is_file()}
    results = _run(image, site, WRITES)
    assert results == dict.fromkeys(results, "refused")
    assert len(results) == 18
    assert {p: p.read_bytes() for p in image[0].rglob("*") if p.is_file()} == before
    assert not (image[2] / "stolen").exists()


def test_refusal_message_names_the_path_and_the_remedy(image: tuple[Path, str, Path], site: Path) -> None:
    root, key, _ = image
    done = python(engine_code(root, key, site, body=f"open({str(root / 'data' / 'secret.txt')!r}, 'w')\n"))
    assert done.returncode != 0
    assert (
        "SealedFileWriteRefused: [Errno 13] sealed files are read-only inside the engine; "
        f"write to a volume or a path outside the image: '{root}/data/secret.txt'"
    ) in done.stderr


def test_unprotected_files_and_outside_paths_are_ordinary(image: tuple[Path, str, Path], site: Path) -> None:
    body = """
        import json, os
        log = os.path.join(IMAGE, "logs", "app.log")
        with open(log, "a") as fh:
            fh.write("more\\n")
        with open(os.path.join(IMAGE, "logs", "new.log"), "w") as fh:
            fh.write("new\\n")
        plain = os.path.join(OUTSIDE, "plain")
        with open(plain, "a") as fh:
            fh.write("appended\\n")
        print(json.dumps([open(log).read(), open(plain).read(), os.path.getsize(log)]))
        """
    out = _run(image, site, body)
    assert out == ["started\nmore\n", "plain\nappended\n", 13]
    assert (image[0] / "logs" / "new.log").read_text() == "new\n"


def test_files_not_in_the_manifest_are_refused(image: tuple[Path, str, Path], site: Path) -> None:
    body = """
        import json, os
        from citadel.engine import fileshield
        planted = os.path.join(IMAGE, "data", "planted.txt")
        with fileshield.original.open(planted, "w") as fh:  # the host adds a file after the image was opened
            fh.write("planted")
        out = {}
        for name, path in {"planted": planted, "missing": os.path.join(IMAGE, "data", "missing.txt")}.items():
            try:
                open(path).read()
                out[name] = "read"
            except OSError as exc:
                out[name] = [type(exc).__name__, exc.errno, str(exc)]
        print(json.dumps(out))
        """
    out = _run(image, site, body)
    root = image[0]
    assert out == {
        "planted": [
            "FileNotSealed",
            13,
            "[Errno 13] this file inside the sealed image is not in its manifest "
            "(added after sealing?); only sealed files, or files the image's unprotected patterns "
            f"cover, can be opened: '{root}/data/planted.txt'",
        ],
        "missing": [
            "FileNotFoundError",
            2,
            f"[Errno 2] No such file or directory: '{root}/data/missing.txt'",
        ],
    }


def test_tampered_data_file_is_refused_naming_it(image: tuple[Path, str, Path], site: Path) -> None:
    root, key, _ = image
    blob = root / "data" / "blob.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    done = python(engine_code(root, key, site, body=f"print(len(open({str(blob)!r}, 'rb').read()))\n"))
    assert done.returncode != 0
    assert "TamperedImage: sealed file 'data/blob.bin' does not match its recorded SHA-256" in done.stderr
    assert done.stdout == ""


def test_fork_keeps_the_shield(image: tuple[Path, str, Path], site: Path) -> None:
    body = """
        import json, os, sys
        secret = os.path.join(IMAGE, "data", "secret.txt")
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            result = {"child_reads": open(secret).read()}
            try:
                open(secret, "w")
                result["child_write"] = "allowed"
            except PermissionError as exc:
                result["child_write"] = "refused" if "read-only inside the engine" in str(exc) else repr(exc)
            os.write(write_fd, json.dumps(result).encode())
            os._exit(0)
        os.close(write_fd)
        child = json.loads(os.read(read_fd, 65536))
        _, status = os.waitpid(pid, 0)
        child["child_status"] = os.waitstatus_to_exitcode(status)
        child["parent_reads"] = open(secret).read()
        print(json.dumps(child))
        """
    out = _run(image, site, body)
    assert out == {"child_reads": SECRET, "child_write": "refused", "child_status": 0, "parent_reads": SECRET}


def test_shield_keeps_unpatched_originals_for_the_engine(image: tuple[Path, str, Path], site: Path) -> None:
    body = """
        import builtins, io, json, os
        from citadel.engine import fileshield
        secret = os.path.join(IMAGE, "data", "secret.txt")
        raw = fileshield.original.open(secret, "rb").read()
        patched = builtins.open is not fileshield.original.open and io.open is builtins.open
        print(json.dumps({"patched": patched, "raw_is_ciphertext": raw[:4].decode(),
                          "raw_size": fileshield.original.stat(secret).st_size,
                          "installed": fileshield.installed() is not None}))
        """
    out = _run(image, site, body)
    assert out == {
        "patched": True,
        "raw_is_ciphertext": "CITF",
        "raw_size": (image[0] / "data" / "secret.txt").stat().st_size,
        "installed": True,
    }

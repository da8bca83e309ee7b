"""Encrypted volumes inside the engine, through the real `citadel` command: sealed programs use a
mounted volume like a plain directory, the data owner exports the same bytes, and the engine
refuses rolled-back, tampered and conflicting volumes with exit status 74.

The programs are ordinary Python. `writer.py` is also run by python itself on a plain directory:
its observations (sizes, listings, errors, positions) and the files it leaves must be the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from tests.conftest import citadel_cmd, clean_env

WRITER = r'''
import errno, json, os, pathlib, shutil, sys, tempfile
out = sys.argv[1] if len(sys.argv) > 1 else "/data/out"
r = {}
with open(f"{out}/notes.txt", "w") as fh:                         # text, write
    fh.write("line one\n")
with open(f"{out}/notes.txt", "a") as fh:                         # append
    r["append_tell"] = fh.tell()
    fh.write("line two\n")
with open(f"{out}/data.bin", "wb+") as fh:                        # binary, +, seek, tell, truncate, fsync
    fh.write(bytes(range(256)) * 1024)                            # 256 KiB: four 64 KiB chunks
    fh.seek(70000)
    fh.write(b"XYZ")
    r["tell"] = fh.tell()
    fh.seek(69998)
    r["around"] = fh.read(7).hex()
    r["truncate"] = fh.truncate(200000)
    fh.flush()
    os.fsync(fh.fileno())
    r["fstat"] = os.fstat(fh.fileno()).st_size
    fh.seek(0, os.SEEK_END)
    r["end"] = fh.tell()
with open(f"{out}/data.bin", "r+b") as fh:
    fh.seek(300000)                                               # past the end: a hole of zeros
    fh.write(b"tail")
with open(f"{out}/lines.txt", "w", newline="\r\n") as fh:
    fh.write("a\nb\n")
with open(f"{out}/lines.txt", newline="") as fh:
    r["newline"] = fh.read()
try:
    open(f"{out}/notes.txt", "x")
except FileExistsError as exc:
    r["exclusive"] = os.path.basename(exc.filename)
r["sizes"] = {name: os.stat(f"{out}/{name}").st_size for name in sorted(os.listdir(out))}
os.makedirs(f"{out}/a/b/c")
os.rename(f"{out}/notes.txt", f"{out}/a/notes.txt")
os.replace(f"{out}/a/notes.txt", f"{out}/a/b/notes.txt")
os.rmdir(f"{out}/a/b/c")
os.chmod(f"{out}/lines.txt", 0o600)
os.utime(f"{out}/lines.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
st = os.stat(f"{out}/lines.txt")
r["chmod_utime"] = [oct(st.st_mode & 0o777), st.st_mtime_ns]
p = pathlib.Path(out, "p")
p.mkdir()
(p / "hello.txt").write_text("h\u00e9llo w\u00f6rld", encoding="utf-8")
(p / "empty").touch()
r["pathlib"] = [[x.name, x.stat().st_size, x.is_file()] for x in sorted(p.iterdir())]
r["pathlib_text"] = (p / "hello.txt").read_text(encoding="utf-8")
r["exists"] = [p.exists(), (p / "nope").exists(), os.path.isdir(out), os.path.isfile(f"{out}/data.bin")]
shutil.copyfile(f"{out}/a/b/notes.txt", f"{out}/copy.txt")
shutil.copy2(f"{out}/lines.txt", f"{out}/p/lines-copy.txt")
fd, tmp = tempfile.mkstemp(dir=out, prefix="t-")                 # os.open + os.write + os.fsync + os.replace
os.write(fd, b"written atomically")
os.fsync(fd)
os.close(fd)
os.replace(tmp, f"{out}/atomic.txt")
dfd = os.open(out, os.O_RDONLY)                                   # fsync of the directory
os.fsync(dfd)
os.close(dfd)
with tempfile.TemporaryDirectory(dir=out) as scratch:
    open(os.path.join(scratch, "s"), "w").write("scratch")
    r["scratch"] = os.listdir(scratch)
r["walk"] = sorted([os.path.relpath(d, out), sorted(ds), sorted(fs)] for d, ds, fs in os.walk(out))
r["scandir"] = sorted([e.name, e.is_dir(), e.stat().st_size if e.is_file() else -1] for e in os.scandir(out))
for name, call in [("enoent", lambda: open(f"{out}/missing.txt")),
                   ("enotempty", lambda: os.rmdir(f"{out}/a")),
                   ("eisdir", lambda: open(f"{out}/a", "w")),
                   ("enotdir", lambda: os.listdir(f"{out}/copy.txt"))]:
    try:
        call()
        r[name] = "no error"
    except OSError as exc:
        r[name] = [errno.errorcode[exc.errno], os.path.relpath(exc.filename, out) if exc.filename else None]
os.remove(f"{out}/lines.txt")
print(json.dumps(r, sort_keys=True))
'''

READER = r'''
import hashlib, json, os, sys
out = sys.argv[1] if len(sys.argv) > 1 else "/data/out"
found = {}
for d, ds, fs in os.walk(out):
    for f in fs:
        path = os.path.join(d, f)
        with open(path, "rb") as fh:
            found[os.path.relpath(path, out)] = [os.path.getsize(path), hashlib.sha256(fh.read()).hexdigest()]
print(json.dumps(found, sort_keys=True))
'''

COUNTER = r'''
import os, sys
path = "/data/out/count"
n = int(open(path).read()) if os.path.exists(path) else 0
with open(path, "w") as fh:
    fh.write(str(n + 1))
print(n + 1)
'''

TICKER = r'''
import hashlib, os, sys
print(os.getpid(), flush=True)
i = 0
while True:
    i += 1
    big = open("/data/out/big.bin", "wb")
    tick = open("/data/out/tick", "w")
    big.write(hashlib.sha256(str(i).encode()).digest() * 8192)     # 256 KiB, derived from i
    tick.write(str(i))
    tick.flush()
    big.flush()
    os.fsync(tick.fileno())                                        # one commit: both files, durable
    print(i, flush=True)                                           # acknowledged only after the commit
    big.close()
    tick.close()
'''

CHECK_TICK = r'''
import hashlib
i = int(open("/data/out/tick").read())
ok = open("/data/out/big.bin", "rb").read() == hashlib.sha256(str(i).encode()).digest() * 8192
print(i, ok)
'''

WAITER = r'''
import os, sys, time
keep = open("/data/out/left-open.txt", "w")   # never closed: the exit commit flushes and saves it
keep.write(sys.argv[1])
print("ready", flush=True)
if len(sys.argv) > 2 and sys.argv[2]:
    for _ in range(600):
        if os.path.exists(sys.argv[2]):
            break
        time.sleep(0.05)
end = sys.argv[3] if len(sys.argv) > 3 else ""
if end == "raise":
    raise RuntimeError("the program's own bug")
if end == "fsync":                            # the program catches the refused commit and carries on
    try:
        keep.flush()
        os.fsync(keep.fileno())
    except Exception as exc:
        print("caught", type(exc).__name__, flush=True)
elif end:
    sys.exit(int(end))
'''

PROBE = r'''
import errno, json, os, sys
r = {"cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace"),
     "environ": open("/proc/self/environ", "rb").read().decode(errors="replace"),
     "parent": open(f"/proc/{os.getppid()}/cmdline", "rb").read().decode(errors="replace"),
     "input": open("/data/in/in.txt").read()}
try:
    open("/data/in/new.txt", "w")
except OSError as exc:
    r["ro"] = errno.errorcode[exc.errno]
r["access_w"] = os.access("/data/in/in.txt", os.W_OK)
open("/data/out/moved.txt", "w").write("across")
try:
    os.rename("/data/out/moved.txt", "/tmp/citadel-never-here")
except OSError as exc:
    r["rename_across"] = [errno.errorcode[exc.errno], exc.filename, exc.filename2]
try:
    os.rename("/data/in/in.txt", "/data/out/in.txt")
except OSError as exc:
    r["rename_between_volumes"] = errno.errorcode[exc.errno]
import io, sqlite3
for name, call in [("fileio", lambda: io.FileIO("/data/out/raw", "w")),
                   ("sqlite", lambda: sqlite3.connect("/data/out/db.sqlite"))]:
    try:
        call()
    except PermissionError as exc:
        r[name] = exc.strerror
db = sqlite3.connect(":memory:")                      # a database lives in a volume as bytes
db.execute("create table t (x)")
db.execute("insert into t values ('in a volume')")
db.commit()
with open("/data/out/db.sqlite", "wb") as fh:
    fh.write(db.serialize())
back = sqlite3.connect(":memory:")
with open("/data/out/db.sqlite", "rb") as fh:
    back.deserialize(fh.read())
r["sqlite_bytes"] = back.execute("select x from t").fetchone()[0]
print(json.dumps(r))
'''

PROGRAMS = {"writer.py": WRITER, "reader.py": READER, "counter.py": COUNTER, "ticker.py": TICKER,
            "check_tick.py": CHECK_TICK, "waiter.py": WAITER, "probe.py": PROBE}

Mount = Tuple[str, str, str]  # (volume name, mount path, options)


def citadel(args: Sequence[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(citadel_cmd() + list(args), cwd=cwd, env=clean_env(CITADEL_MODE="sim"),
                          capture_output=True, text=True, timeout=timeout)


def two_lines(proc: subprocess.CompletedProcess) -> str:
    """The engine's error (cause line + hint line), after checking it is exactly that, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("citadel: ")]
    assert [line.split(":")[1] for line in lines] == [" error", " hint"], proc.stderr
    return "\n".join(lines)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    root = tmp_path_factory.mktemp("volume-programs")
    (root / "src").mkdir()
    for name, text in PROGRAMS.items():
        (root / "src" / name).write_text(text)
    proc = citadel(["seal", str(root / "src"), "-o", str(root / "app.img"), "--key-out", str(root / "app.key")],
                   root)
    assert proc.returncode == 0, proc.stderr
    return root / "app.img", root / "app.key"


class Host:
    """One working directory on the untrusted host: volumes, their keys, the tag store, and runs."""

    def __init__(self, work: Path, image: Path, key: Path) -> None:
        self.work, self.image, self.key = work, image, key

    def volume(self, *args: str) -> subprocess.CompletedProcess:
        return citadel(["volume", *args], self.work)

    def create(self, name: str) -> None:
        proc = self.volume("create", name, "--key-file", f"{name}.key", "--tag-store", "tags.json")
        assert proc.returncode == 0, proc.stderr

    def run(self, program: str, *args: str, mounts: Sequence[Mount] = (("out", "/data/out", ""),),
            extra: Sequence[str] = (), timeout: float = 120) -> subprocess.CompletedProcess:
        return citadel(self.run_args(program, *args, mounts=mounts, extra=extra), self.work, timeout)

    def run_args(self, program: str, *args: str, mounts: Sequence[Mount] = (("out", "/data/out", ""),),
                 extra: Sequence[str] = ()) -> List[str]:
        cmd = ["run", "--image", str(self.image), "--key-file", str(self.key), "--tag-store", "tags.json"]
        for name, mount, options in mounts:
            cmd += ["--volume", f"{name}={name}:{mount}{options}", "--volume-key", f"{name}={name}.key"]
        return cmd + list(extra) + ["--", program, *args]

    def tags(self) -> Dict[str, str]:
        return json.loads((self.work / "tags.json").read_text())


@pytest.fixture
def host(tmp_path: Path, sealed: Tuple[Path, Path]) -> Host:
    return Host(tmp_path, *sealed)


def tree(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_sealed_program_uses_a_volume_like_a_plain_directory(host: Host, tmp_path: Path) -> None:
    host.create("out")
    proc = host.run("writer.py")
    assert proc.returncode == 0, proc.stderr
    in_volume = json.loads(proc.stdout)
    plain = tmp_path / "plain"
    plain.mkdir()
    unsealed = subprocess.run([sys.executable, "-I", "-c", WRITER, str(plain)], capture_output=True, text=True,
                              timeout=60)
    assert unsealed.returncode == 0, unsealed.stderr
    assert in_volume == json.loads(unsealed.stdout)  # every observation matches python on a plain directory
    assert in_volume["sizes"]["data.bin"] == 300004 and in_volume["fstat"] == 200000  # plaintext sizes
    # a second run reads back what the first one wrote
    second = host.run("reader.py")
    assert second.returncode == 0, second.stderr
    expected = {rel: [len(data), hashlib.sha256(data).hexdigest()] for rel, data in tree(plain).items()}
    assert json.loads(second.stdout) == expected
    # the data owner exports the same bytes; the host holds none of them in clear
    export = host.volume("export", "out", "exported", "--key-file", "out.key", "--tag-store", "tags.json")
    assert export.returncode == 0, export.stderr
    assert tree(host.work / "exported") == tree(plain)
    stored = b"".join(tree(host.work / "out").values())
    assert b"line one" not in stored and b"notes" not in stored and b"written atomically" not in stored
    assert host.tags()["out"] == export.stdout.strip()  # every commit of the runs went through the tag store


@pytest.mark.parametrize("end, status", [("", 0), ("3", 3), ("raise", 1)])
def test_volumes_commit_at_exit_however_the_program_ends(host: Host, end: str, status: int) -> None:
    host.create("out")
    proc = host.run("waiter.py", f"saved-{end}", "", end)
    assert proc.returncode == status, proc.stderr
    assert ("the program's own bug" in proc.stderr) == (end == "raise")
    second = host.run("reader.py")
    assert json.loads(second.stdout)["left-open.txt"][0] == len(f"saved-{end}")  # flushed and saved at exit


def test_an_older_copy_of_the_volume_is_refused_as_a_rollback(host: Host) -> None:
    host.create("out")
    assert host.run("counter.py").stdout == "1\n"
    shutil.copytree(host.work / "out", host.work / "backup")
    assert host.run("counter.py").stdout == "2\n"
    shutil.rmtree(host.work / "out")
    shutil.copytree(host.work / "backup", host.work / "out")  # the host restores the older copy
    refused = host.run("counter.py")
    assert refused.returncode == 74, refused.stderr
    message = two_lines(refused)
    assert "is not at its latest state" in message and "restored an older copy" in message
    assert refused.stdout == ""  # the program never ran


def test_a_tampered_segment_is_refused_naming_the_file(host: Host) -> None:
    host.create("out")
    assert host.run("counter.py").returncode == 0
    for segment in (host.work / "out" / "segments").iterdir():
        data = bytearray(segment.read_bytes())
        data[0] ^= 0x01  # the host flips one bit of every record's first byte
        segment.write_bytes(bytes(data))
    refused = host.run("counter.py")
    assert refused.returncode == 74, refused.stderr
    message = two_lines(refused)
    assert "volume file 'count' chunk 0 failed authentication" in message
    assert "counter.py line 4" in message  # where the program read it


def test_a_truncated_segment_is_refused_before_the_program_runs(host: Host) -> None:
    host.create("out")
    assert host.run("counter.py").returncode == 0
    for segment in (host.work / "out" / "segments").iterdir():
        segment.write_bytes(segment.read_bytes()[:-1])
    refused = host.run("counter.py")
    assert refused.returncode == 74 and refused.stdout == "", refused.stderr
    assert "volume file 'count' is truncated" in two_lines(refused)


def test_sigkill_during_a_run_leaves_a_committed_state(host: Host) -> None:
    host.create("out")
    for round_ in range(4):
        proc = subprocess.Popen(citadel_cmd() + host.run_args("ticker.py"), cwd=host.work,
                                env=clean_env(CITADEL_MODE="sim"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        engine = int(proc.stdout.readline())
        acknowledged = 0
        target = 5 + 7 * round_
        while acknowledged < target:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            acknowledged = int(line)
        time.sleep(0.003 * round_)  # a different moment of the write/commit cycle each round
        os.kill(engine, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == 128 + signal.SIGKILL
        after = host.run("check_tick.py")
        assert after.returncode == 0, after.stderr
        seen, consistent = after.stdout.split()
        assert consistent == "True"  # big.bin and tick come from the same commit
        assert int(seen) >= acknowledged  # nothing acknowledged was lost
    shown = host.volume("show", "out", "--key-file", "out.key", "--tag-store", "tags.json", "--verify")
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize("when", ["exit", "fsync"])
def test_a_refused_commit_gives_two_lines_and_status_74(host: Host, when: str) -> None:
    """Another writer commits first; whether the refusal meets the exit commit or an fsync the program
    caught, the run ends with the conflict's two lines and 74, and the engine's state is kept."""
    host.create("out")
    go = host.work / "go"
    args = ["waiter.py", "mine", str(go)] + (["fsync"] if when == "fsync" else [])
    proc = subprocess.Popen(citadel_cmd() + host.run_args(*args), cwd=host.work, env=clean_env(CITADEL_MODE="sim"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    (host.work / "other.txt").write_text("the owner's change")
    imported = host.volume("import", "out", "other.txt", "--key-file", "out.key", "--tag-store", "tags.json")
    assert imported.returncode == 0, imported.stderr  # another writer commits first
    go.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 74, err
    assert out == ("caught VolumeConflict\n" if when == "fsync" else "")
    message = two_lines(subprocess.CompletedProcess([], 74, out, err))
    assert "was changed by another engine since this one opened it" in message
    assert "kept, unapplied, as conflict state" in message
    assert len(list((host.work / "out" / "conflicts").iterdir())) == 1  # nothing lost: the owner can export it
    assert "other.txt" in host.run("reader.py").stdout  # the winner's state is the volume's state


def test_keys_travel_only_in_the_pipe_and_read_only_volumes_refuse_writes(host: Host) -> None:
    host.create("in")
    host.create("out")
    (host.work / "in.txt").write_text("input data")
    assert host.volume("import", "in", "in.txt", "--key-file", "in.key", "--tag-store", "tags.json").returncode == 0
    proc = host.run("probe.py", mounts=[("in", "/data/in", ":ro"), ("out", "/data/out", "")])
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["input"] == "input data"
    assert seen["ro"] == "EROFS" and seen["access_w"] is False
    assert seen["rename_across"] == ["EXDEV", "/data/out/moved.txt", "/tmp/citadel-never-here"]
    assert seen["rename_between_volumes"] == "EXDEV"
    assert "this call bypasses open()" in seen["fileio"] and "sqlite3 opens its files in C" in seen["sqlite"]
    assert seen["sqlite_bytes"] == "in a volume"
    for name in ("in", "out"):
        key = (host.work / f"{name}.key").read_text().strip()
        for where in ("cmdline", "environ", "parent"):
            assert key not in seen[where] and key.upper() not in seen[where]
    assert "in=in.key" in seen["parent"]  # the launcher's command line names the key file, not the key


def test_ephemeral_volumes_and_volume_create(host: Host) -> None:
    first = host.run("counter.py", mounts=[("scratch", "/data/out", ":ephemeral")],
                     extra=["--volume-create", "scratch"])
    assert first.returncode == 0 and first.stdout == "1\n", first.stderr
    assert "wrote a new key for volume 'scratch'" in first.stderr
    assert oct((host.work / "scratch.key").stat().st_mode & 0o777) == "0o600"
    assert not (host.work / "tags.json").exists()  # an ephemeral volume is recorded nowhere
    assert host.run("counter.py", mounts=[("scratch", "/data/out", ":ephemeral")]).stdout == "2\n"
    created = host.run("counter.py", mounts=[("fresh", "/data/out", "")], extra=["--volume-create", "fresh"])
    assert created.returncode == 0 and created.stdout == "1\n", created.stderr
    shown = host.volume("show", "fresh", "--key-file", "fresh.key", "--tag-store", "tags.json")
    assert shown.returncode == 0 and host.tags()["fresh"] in shown.stdout


@pytest.mark.parametrize("case, mounts, extra, status, fragment", [
    ("no_tag_store", [("out", "/data/out", "")], [], 2, "no --tag-store was given"),
    ("not_recorded", [("unrecorded", "/data/out", "")], [], 74, "has no record of volume 'unrecorded'"),
    ("missing_volume", [("ghost", "/data/out", "")], [], 74, "volume 'ghost' does not exist"),
    ("wrong_key", [("out", "/data/out", "")], [], 74, "the key does not open the volume manifest"),
    ("mount_over_image", [("out", "IMAGE", "")], [], 64, "overlaps the sealed image"),
    ("mount_over_proc", [("out", "/proc/x", "")], [], 64, "would cover /proc"),
    ("create_read_only", [("out", "/data/out", ":ro")], ["--volume-create", "out"], 2, "cannot be created"),
])
def test_each_volume_defect_gets_one_clear_error(host: Host, case: str, mounts: List[Mount], extra: List[str],
                                                  status: int, fragment: str) -> None:
    host.create("out")
    if case == "not_recorded":  # made without the tag store: its latest state is unknown
        assert host.volume("create", "unrecorded", "--key-file", "unrecorded.key").returncode == 0
    if case == "wrong_key":
        (host.work / "out.key").write_text(os.urandom(32).hex())
    if case == "missing_volume":
        (host.work / "ghost.key").write_text(os.urandom(32).hex())
    mounts = [(n, str(host.image) if m == "IMAGE" else m, o) for n, m, o in mounts]
    args = host.run_args("counter.py", mounts=mounts, extra=extra)
    if case == "no_tag_store":
        args = [a for a in args if a not in ("--tag-store", "tags.json")]
    proc = citadel(args, host.work)
    assert proc.returncode == status, proc.stderr
    assert fragment in two_lines(proc)
    assert proc.stdout == ""


NUMPY_APP = r'''
import os, sys
import numpy as np
out = "/data/out"
a = np.arange(200_000, dtype=np.float64).reshape(400, 500) / 7
if sys.argv[1] == "save":
    np.save(f"{out}/a.npy", a)
    np.savez(f"{out}/b.npz", x=a[:10], words=np.array(["sealed", "volume"]))
    np.savez_compressed(f"{out}/c.npz", a=a)
    np.savetxt(f"{out}/d.csv", a[:3], delimiter=",")
    with open(f"{out}/e.bin", "wb") as fh:
        fh.write(a.tobytes())
    try:
        with open(f"{out}/f.bin", "wb") as fh:
            a.tofile(fh)                      # needs a real descriptor: refused with a reason
    except OSError as exc:
        print("tofile:", exc.strerror)
    print(os.path.getsize(f"{out}/a.npy"))
else:
    with np.load(f"{out}/b.npz") as b, np.load(f"{out}/c.npz") as c:
        print(bool((np.load(f"{out}/a.npy") == a).all()), bool((b["x"] == a[:10]).all()), b["words"].tolist(),
              bool((c["a"] == a).all()), bool(np.allclose(np.loadtxt(f"{out}/d.csv", delimiter=","), a[:3])),
              bool((np.frombuffer(open(f"{out}/e.bin", "rb").read()).reshape(400, 500) == a).all()))
'''


@pytest.fixture(scope="module")
def numpy_image(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    numpy = pytest.importorskip("numpy")
    site = Path(numpy.__file__).resolve().parent.parent
    root = tmp_path_factory.mktemp("numpy-volume")
    (root / "app").mkdir()
    (root / "app" / "arrays.py").write_text(NUMPY_APP)
    ignore = shutil.ignore_patterns("__pycache__", "tests")
    for name in ("numpy", "numpy.libs"):
        if (site / name).is_dir():
            shutil.copytree(site / name, root / "site" / name, ignore=ignore)
    proc = citadel(["seal", str(root / "app"), "-o", str(root / "np.img"), "--python-path", str(root / "site"),
                    "--key-out", str(root / "np.key")], root, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root / "np.img", root / "np.key"


def test_numpy_saves_and_loads_arrays_in_a_volume(tmp_path: Path, numpy_image: Tuple[Path, Path]) -> None:
    import numpy as np

    host = Host(tmp_path, *numpy_image)
    host.create("out")
    saved = host.run("arrays.py", "save")
    assert saved.returncode == 0, saved.stderr
    assert "tofile: a file of an encrypted volume has no real descriptor to duplicate" in saved.stdout
    assert saved.stdout.splitlines()[-1] == str(200_000 * 8 + 128)  # the .npy's plaintext size
    loaded = host.run("arrays.py", "load")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == "True True ['sealed', 'volume'] True True True\n"
    export = host.volume("export", "out", "exported", "--key-file", "out.key", "--tag-store", "tags.json")
    assert export.returncode == 0, export.stderr
    expected = np.arange(200_000, dtype=np.float64).reshape(400, 500) / 7
    assert (np.load(host.work / "exported" / "a.npy") == expected).all()  # the owner reads what the program wrote

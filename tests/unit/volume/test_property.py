"""Property: random sequences of file operations on a volume and on a plain directory look the same.

A hypothesis state machine drives both sides with the same calls (open in every mode, write, read,
seek, truncate, flush, fsync, close, stat, listdir, mkdir, makedirs, rmdir, remove, rename,
replace, reopening the volume) and compares every result, or the type and errno of every error.
The volume uses tiny chunks (32 bytes) so that chunk borders, holes and "last chunk" changes are
crossed all the time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Callable, List, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from citadel.volume import LocalTagStore, Volume, file_for_fd

from .conftest import KEY

NAMES = st.sampled_from(["a", "b", "c.txt"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
BIN_MODES = st.sampled_from(["rb", "wb", "ab", "xb", "r+b", "w+b", "a+b", "x+b"])
TEXT_MODES = st.sampled_from(["r", "w", "a", "r+", "w+", "a+"])
BUFFERING = st.sampled_from([0, 1, 7, 64, 4096])
CHUNK = 32


def outcome(fn: Callable[[], Any]) -> Tuple[Any, ...]:
    try:
        return ("ok", fn())
    except Exception as exc:  # compared by type and errno
        return ("error", type(exc).__name__, getattr(exc, "errno", None))


class VolumeVersusPlain(RuleBasedStateMachine):
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="citadel-prop-")
        self.plain = os.path.join(self.tmp, "plain")
        os.mkdir(self.plain)
        self.store = LocalTagStore(os.path.join(self.tmp, "tags.json"))
        self.vol = Volume.create(os.path.join(self.tmp, "vol"), KEY, on_commit=self.store.on_commit("v"),
                                 chunk_size=CHUNK)
        self.open_pairs: List[Tuple[Any, Any, bool]] = []

    def both(self, plain_fn: Callable[[], Any], vol_fn: Callable[[], Any]) -> Tuple[Any, ...]:
        p, v = outcome(plain_fn), outcome(vol_fn)
        if p[0] == "ok" and v[0] == "ok" and isinstance(p[1], os.stat_result):
            p, v = ("ok", _stat_view(p[1])), ("ok", _stat_view(v[1]))
        assert p == v, (p, v)
        return p

    def p(self, path: str) -> str:
        return os.path.join(self.plain, path)

    # --- files -------------------------------------------------------------------------------
    @rule(target=handles, path=PATHS, mode=BIN_MODES | TEXT_MODES, buffering=BUFFERING)
    def open_file(self, path: str, mode: str, buffering: int) -> Any:
        p = outcome(lambda: open(self.p(path), mode, buffering=buffering))  # noqa: SIM115
        v = outcome(lambda: self.vol.open_file(path, mode, buffering=buffering))
        if p[0] != v[0]:
            for h in (p, v):
                if h[0] == "ok":
                    h[1].close()
        assert p[0] == v[0] and (p[0] == "ok" or p == v), (p, v)
        if p[0] != "ok":
            return None
        pair = (p[1], v[1], "b" not in mode)
        self.open_pairs.append(pair)
        return pair

    @rule(h=handles, data=st.binary(max_size=200))
    def write(self, h: Any, data: bytes) -> None:
        if h is None or h[0].closed:
            return
        payload: Any = data.decode("latin-1") if h[2] else data
        self.both(lambda: h[0].write(payload), lambda: h[1].write(payload))

    @rule(h=handles, n=st.integers(-1, 150))
    def read(self, h: Any, n: int) -> None:
        if h is None or h[0].closed:
            return
        self.both(lambda: h[0].read(n), lambda: h[1].read(n))

    @rule(h=handles, offset=st.integers(0, 300), whence=st.sampled_from([0, 1, 2]))
    def seek(self, h: Any, offset: int, whence: int) -> None:
        if h is None or h[0].closed:
            return
        if h[2]:  # text files only seek to the start or the end
            offset, whence = 0, (0 if whence != 2 else 2)
        self.both(lambda: h[0].seek(offset, whence), lambda: h[1].seek(offset, whence))
        self.both(h[0].tell, h[1].tell)

    @rule(h=handles, size=st.none() | st.integers(0, 300))
    def truncate(self, h: Any, size: Any) -> None:
        if h is None or h[0].closed:
            return
        self.both(lambda: h[0].truncate(size), lambda: h[1].truncate(size))

    @rule(h=handles)
    def flush_and_fsync(self, h: Any) -> None:
        if h is None or h[0].closed:
            return
        self.both(h[0].flush, h[1].flush)
        os.fsync(h[0].fileno())
        raw = file_for_fd(h[1].fileno())
        assert raw is not None
        raw.fsync()

    @rule(h=consumes(handles))
    def close(self, h: Any) -> None:
        if h is None:
            return
        self.both(h[0].close, h[1].close)

    # --- directories -------------------------------------------------------------------------
    @rule(path=PATHS)
    def stat(self, path: str) -> None:
        self.both(lambda: os.stat(self.p(path)), lambda: self.vol.stat(path))

    @rule(path=st.just("") | PATHS)
    def listdir(self, path: str) -> None:
        self.both(lambda: sorted(os.listdir(self.p(path))), lambda: self.vol.listdir(path))

    @rule(path=PATHS)
    def mkdir(self, path: str) -> None:
        self.both(lambda: os.mkdir(self.p(path)), lambda: self.vol.mkdir(path))

    @rule(path=PATHS, exist_ok=st.booleans())
    def makedirs(self, path: str, exist_ok: bool) -> None:
        self.both(lambda: os.makedirs(self.p(path), exist_ok=exist_ok),
                  lambda: self.vol.makedirs(path, exist_ok=exist_ok))

    @rule(path=PATHS)
    def rmdir(self, path: str) -> None:
        self.both(lambda: os.rmdir(self.p(path)), lambda: self.vol.rmdir(path))

    @rule(path=PATHS)
    def remove(self, path: str) -> None:
        self.both(lambda: os.remove(self.p(path)), lambda: self.vol.remove(path))

    @rule(src=PATHS, dst=PATHS, replace=st.booleans())
    def rename(self, src: str, dst: str, replace: bool) -> None:
        if replace:
            self.both(lambda: os.replace(self.p(src), self.p(dst)), lambda: self.vol.replace(src, dst))
        else:
            self.both(lambda: os.rename(self.p(src), self.p(dst)), lambda: self.vol.rename(src, dst))

    # --- the volume as a whole ---------------------------------------------------------------
    @precondition(lambda self: True)
    @rule()
    def reopen_volume(self) -> None:
        """Close every handle on both sides, close the volume, open it pinned to the latest tag."""
        for pf, vf, _ in self.open_pairs:
            self.both(pf.close, vf.close)
        self.open_pairs.clear()
        self.vol.close()
        self.vol = Volume.open(self.vol.root, KEY, expected_tag=self.store.current("v"),
                               on_commit=self.store.on_commit("v"))
        assert _tree(self.plain) == _volume_tree(self.vol)

    @invariant()
    def sizes_match(self) -> None:
        # Buffered data is invisible on both sides alike; compare what the raw layers hold.
        for pf, vf, _ in self.open_pairs:
            if not pf.closed:
                pf.flush()
                vf.flush()
        assert _tree(self.plain, contents=False) == _volume_tree(self.vol, contents=False)

    def teardown(self) -> None:
        for pf, vf, _ in self.open_pairs:
            for fh in (pf, vf):
                with contextlib.suppress(Exception):  # teardown only: the comparison is over
                    fh.close()
        if not self.vol.closed:
            self.vol.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _stat_view(s: os.stat_result) -> Tuple[bool, int]:
    import stat

    is_dir = stat.S_ISDIR(s.st_mode)
    return is_dir, 0 if is_dir else s.st_size


def _tree(root: str, contents: bool = True) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            key = os.path.normpath(os.path.join(rel, f))
            if contents:
                with open(path, "rb") as fh:
                    out[key] = fh.read()
            else:
                out[key] = os.path.getsize(path)
    return out


def _volume_tree(vol: Volume, contents: bool = True) -> dict:
    out: dict = {d: "dir" for d in vol.directories()}
    for path, size in vol.walk_files():
        out[path] = vol.read_bytes(path) if contents else size
    return out


VolumeVersusPlain.TestCase.settings = settings(
    max_examples=int(os.environ.get("CITADEL_PROP_EXAMPLES", "120")),
    stateful_step_count=int(os.environ.get("CITADEL_PROP_STEPS", "40")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_volume_behaves_like_a_plain_directory = VolumeVersusPlain.TestCase

"""The examples/volume-workflow example, end to end: owner CLI in, program over volumes, owner CLI out.

Until the engine mounts volumes itself, the program runs in a child process (this file run as a
script) whose ``open``/``os.listdir``/``os.stat``/``os.mkdir`` are routed, for paths under the
mount paths, to the volume library through `VolumeMount`: the seam the engine's file shield uses.
"""

from __future__ import annotations

import builtins
import csv
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "volume-workflow"


def run_with_volumes(program: str, mounts: Dict[str, Any], argv: List[str]) -> None:
    """Run ``program`` as __main__ with ``mounts`` ({mount path: Volume}) routed by a minimal shim."""
    from citadel.volume import VolumeMount

    table = [VolumeMount(path, vol) for path, vol in mounts.items()]
    orig = {"open": builtins.open, "listdir": os.listdir, "stat": os.stat, "mkdir": os.mkdir}

    def route(path: Any) -> Tuple[Any, Optional[str]]:
        if isinstance(path, (str, bytes, os.PathLike)):
            for mount in table:
                rel = mount.relpath(path)
                if rel is not None:
                    return mount.volume, rel
        return None, None

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        vol, rel = route(file)
        return vol.open_file(rel, mode, *args, name=file, **kwargs) if vol else orig["open"](file, mode, *args,
                                                                                            **kwargs)

    def listdir(path: Any = ".") -> List[str]:
        vol, rel = route(path)
        return vol.listdir(rel) if vol else orig["listdir"](path)

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        vol, rel = route(path)
        return vol.stat(rel) if vol else orig["stat"](path, *args, **kwargs)

    def mkdir(path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
        vol, rel = route(path)
        return vol.mkdir(rel) if vol else orig["mkdir"](path, mode, *args, **kwargs)

    builtins.open, os.listdir, os.stat, os.mkdir = open_, listdir, stat, mkdir  # type: ignore[assignment]
    sys.argv = [program, *argv]
    try:
        runpy.run_path(program, run_name="__main__")
    finally:
        builtins.open, os.listdir, os.stat, os.mkdir = (orig["open"], orig["listdir"], orig["stat"],  # type: ignore
                                                        orig["mkdir"])


def runner(work: str) -> None:
    from citadel.volume import LocalTagStore, Volume, parse_key

    store = LocalTagStore(os.path.join(work, "tags.json"))
    vols = {}
    for name, mount, read_only in (("vol-in", "/data/in", True), ("vol-out", "/data/out", False)):
        with open(os.path.join(work, name.replace("vol-", "") + ".key")) as fh:
            key = parse_key(fh.read())
        vols[mount] = Volume.open(os.path.join(work, name), key, expected_tag=store.current(name),
                                  on_commit=store.on_commit(name), read_only=read_only)
    try:
        run_with_volumes(str(EXAMPLE / "summarize.py"), vols, ["/data/in", "/data/out"])
    finally:
        for vol in vols.values():
            vol.close()  # the clean exit commits the output volume


def test_volume_workflow_example(tmp_path: Path, run_citadel: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))

    def volume(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "citadel.cli.cmd_volume", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    common = ["--tag-store", "tags.json"]
    volume("create", "vol-in", "--key-file", "in.key", *common)
    volume("import", "vol-in", str(EXAMPLE / "input" / "sales-q1.csv"), str(EXAMPLE / "input" / "sales-q2.csv"),
           "--key-file", "in.key", *common)
    volume("create", "vol-out", "--key-file", "out.key", *common)
    assert oct(os.stat(tmp_path / "in.key").st_mode & 0o777) == "0o600"
    # the host sees no plaintext: neither the data nor the file names
    stored = b"".join(p.read_bytes() for p in (tmp_path / "vol-in").rglob("*") if p.is_file())
    assert b"north" not in stored and b"sales-q1" not in stored
    proc = subprocess.run([sys.executable, __file__, "runner", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "summarized 8 rows" in proc.stdout
    volume("show", "vol-out", "--key-file", "out.key", "--verify", *common)
    volume("export", "vol-out", "results", "--key-file", "out.key", *common)
    with open(tmp_path / "results" / "summary.csv", newline="") as fh:
        rows = {r["region"]: r for r in csv.DictReader(fh)}
    assert rows["north"]["units"] == "230" and rows["TOTAL"]["units"] == "450"
    assert rows["south"]["revenue"] == f"{80 * 2.5 + 30 * 19.99:.2f}"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "runner":
    runner(sys.argv[2])

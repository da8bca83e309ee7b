"""Two real processes commit the same volume at once: exactly one wins, the other's work is kept.

Each worker (this file run as a script) opens the volume pinned to the tag store's latest tag,
writes its own file, says "ready", waits for "go" on stdin, and commits. Both are released at the
same moment, so their commits race through the tag store's compare-and-swap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))


def worker(root: str, store_path: str, name: str) -> None:
    from citadel.volume import LocalTagStore, Volume, VolumeConflict

    store = LocalTagStore(store_path)
    vol = Volume.open(root, KEY, expected_tag=store.current("vol"), on_commit=store.on_commit("vol"),
                      auto_commit=False)
    with vol.open_file(f"{name}.txt", "w") as fh:
        fh.write(f"written by {name}\n" * 20_000)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        tag = vol.commit()
        result = {"name": name, "won": True, "tag": tag}
    except VolumeConflict as exc:
        result = {"name": name, "won": False, "kept": exc.kept_as, "message": exc.diagnostics()}
    print(json.dumps(result), flush=True)
    vol._release() if not result["won"] else vol.close()


def race(root: str, store_path: str, names: List[str]) -> List[dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    procs = [subprocess.Popen([sys.executable, __file__, "worker", root, store_path, n], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for n in names]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n", p.stderr.read() if p.stderr else ""
    for p in procs:  # release both as close together as two writes allow
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out))
    return results


@pytest.mark.parametrize("round_", range(3))
def test_two_engines_one_commit_wins(tmp_path: Path, round_: int) -> None:
    from citadel.volume import LocalTagStore, Volume
    from citadel.volume.transfer import kept_states

    root, store_path = str(tmp_path / "vol"), str(tmp_path / "tags.json")
    store = LocalTagStore(store_path)
    Volume.create(root, KEY, on_commit=store.on_commit("vol")).close()
    results = race(root, store_path, ["alpha", "beta"])
    winners = [r for r in results if r["won"]]
    losers = [r for r in results if not r["won"]]
    assert len(winners) == 1 and len(losers) == 1, results
    winner, loser = winners[0], losers[0]
    assert store.current("vol") == winner["tag"]
    assert "changed by another engine" in loser["message"]
    with Volume.open(root, KEY, expected_tag=store.current("vol"), read_only=True) as vol:
        assert vol.listdir("") == [f"{winner['name']}.txt"]
        assert vol.read_bytes(f"{winner['name']}.txt").startswith(f"written by {winner['name']}".encode())
    # nothing is lost: the loser's state is kept, complete, for the owner
    assert [s.tag for s in kept_states(root, KEY)] == [loser["kept"]]
    with Volume.open(root, KEY, expected_tag=loser["kept"], read_only=True) as kept:
        kept.verify()
        assert kept.read_bytes(f"{loser['name']}.txt") == f"written by {loser['name']}\n".encode() * 20_000


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "worker":
    worker(sys.argv[2], sys.argv[3], sys.argv[4])

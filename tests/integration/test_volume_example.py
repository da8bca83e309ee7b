"""examples/volume-workflow, end to end, by running the shell commands of its README as they stand.

`citadel seal` seals the program, `citadel volume create/import` fill the input volume, the real
`citadel run` runs the sealed program in the engine with both volumes mounted (input read-only),
and `citadel volume show/export` take the result out. The README cannot drift from what works.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import CITADEL_BIN, REPO, clean_env

EXAMPLE = REPO / "examples" / "volume-workflow"


def readme_commands() -> str:
    text = (EXAMPLE / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one sh block: the workflow"
    return blocks[0]


def run_readme(work: Path) -> subprocess.CompletedProcess:
    script = readme_commands()
    if not CITADEL_BIN.exists():  # a source checkout without the console script
        script = 'citadel() { python -m citadel.cli.main "$@"; }\n' + script
    env = clean_env(CITADEL_MODE="sim")
    env["PATH"] = f"{CITADEL_BIN.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


def test_readme_workflow_runs_the_sealed_program_over_two_volumes(tmp_path: Path) -> None:
    work = tmp_path / "volume-workflow"
    shutil.copytree(EXAMPLE, work)
    proc = run_readme(work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summarized 8 rows from /data/in into /data/out/summary.csv" in proc.stdout
    with open(work / "results" / "summary.csv", newline="") as fh:
        rows = {r["region"]: r for r in csv.DictReader(fh)}
    assert rows["north"]["units"] == "230" and rows["TOTAL"]["units"] == "450"
    assert rows["south"]["revenue"] == f"{80 * 2.5 + 30 * 19.99:.2f}"
    assert (work / "results" / "summary.csv").read_text() in proc.stdout  # `cat` printed what was exported
    # the host sees no plaintext: neither the data, nor the file names, nor the results
    for volume in ("vol-in", "vol-out"):
        stored = b"".join(p.read_bytes() for p in (work / volume).rglob("*") if p.is_file())
        assert b"north" not in stored and b"sales-q1" not in stored and b"summary" not in stored
    assert oct(os.stat(work / "in.key").st_mode & 0o777) == "0o600"
    # the program ran in the engine against the volumes: /data does not exist on this host
    assert not Path("/data/out/summary.csv").exists()


def test_the_unsealed_program_gives_the_same_result_on_plain_directories(tmp_path: Path) -> None:
    """The program is ordinary Python: the same file run by python on plain directories agrees."""
    proc = subprocess.run([sys.executable, str(EXAMPLE / "app" / "summarize.py"), str(EXAMPLE / "input"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        assert {r["region"]: r["units"] for r in csv.DictReader(fh)}["TOTAL"] == "450"

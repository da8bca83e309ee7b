"""The README's main command, `bash scripts/quickstart.sh`, end to end: a local CAS, a registered sim
platform, the example sealed, its session created, and `citadel run` attested by the CAS.

The real script runs; CITADEL_QUICKSTART_VENV makes it use this test run's virtual environment
instead of creating .venv and installing from PyPI. HOME is a fresh directory, so the engine
builds its manifest from the files installed now.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent

pytestmark = pytest.mark.slow


def _env(home: Path, **extra: str) -> Dict[str, str]:
    if not (VENV / "bin" / "citadel").exists():
        pytest.fail(f"{VENV} has no citadel console script (pip install -e '.[dev]')")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "CITADEL_QUICKSTART_VENV": str(VENV)}
    env.update(extra)
    return env


def _quickstart(home: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], capture_output=True, text=True,
                          env=_env(home, **extra), timeout=600)


def _stopped(output: str) -> None:
    """The CAS the script started no longer listens, and its temporary directory is gone."""
    url = re.search(r"citadel CAS listening on https://127\.0\.0\.1:(\d+)", output)
    assert url is not None, output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.group(1))), timeout=2).close()
    state = re.search(r"state in (\S+)/cas,", output)
    assert state is not None and not Path(state.group(1)).exists(), output


def test_the_quickstart_runs_the_whole_flow(tmp_path: Path) -> None:
    done = _quickstart(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    steps = [line for line in out.splitlines() if line.startswith("== ")]
    assert [s.split(" ", 2)[1] for s in steps] == ["1.", "2.", "3.", "4.", "5.", "6.", "done:"]
    assert "platform quickstart-host registered" in out
    assert "session hello created" in out
    program = out[out.index("== 6."):]
    assert "Hello from inside Citadel, Ada!" in program
    assert "the sealed recipe has 3 steps" in program
    assert "HELLO_TOKEN from the CAS: a secret of 24 characters (not shown)" in program
    assert ("/etc/hello/motto.txt (injected, in memory only): sealed code, an attested engine, secrets only "
            "in memory") in program
    assert "Traceback" not in done.stderr and "warning: CITADEL_" not in done.stderr
    assert not (tmp_path / ".config" / "citadel").exists(), "the demo's keys stay in its temporary directory"
    _stopped(out)


def test_a_failing_step_still_stops_the_cas(tmp_path: Path) -> None:
    done = _quickstart(tmp_path, CITADEL_HEAP="1")  # the engine refuses this setting at step 4
    assert done.returncode != 0
    assert "CITADEL_HEAP=1 is too small" in done.stderr
    assert "== 5." not in done.stdout
    _stopped(done.stdout)

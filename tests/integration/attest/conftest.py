"""A real software TPM (swtpm) on a loopback TCP port, started per test and killed afterwards.

swtpm is a test dependency (scripts/test.sh installs swtpm, swtpm-tools and tpm2-tools): its
absence is a failure, never a skip, because these tests are the proof that the TPM collector
speaks the TPM 2.0 protocol.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

START_TIMEOUT = 10.0


@dataclass
class Swtpm:
    """One running swtpm: its command port (the control channel is port + 1) and state directory."""

    port: int
    state: Path
    process: subprocess.Popen

    @property
    def address(self) -> str:
        """The collector's channel spec."""
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def tcti(self) -> str:
        """The same TPM for tpm2-tools (TPM2TOOLS_TCTI)."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _port_pair() -> int:
    """A port P with P and P + 1 free on 127.0.0.1 (swtpm's command and control channels)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    pytest.fail("no two consecutive free TCP ports on 127.0.0.1 for swtpm")


def _wait_ready(tpm: Swtpm) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if tpm.process.poll() is not None:
            err = tpm.process.stderr.read().decode(errors="replace") if tpm.process.stderr else ""
            pytest.fail(f"swtpm exited with status {tpm.process.returncode}: {err.strip()}")
        try:
            socket.create_connection(("127.0.0.1", tpm.port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"swtpm did not listen on port {tpm.port} within {START_TIMEOUT} s")


@pytest.fixture
def start_swtpm(tmp_path: Path) -> Iterator[Callable[..., Swtpm]]:
    """start_swtpm(state=None, startup=True) -> a running swtpm; all are killed after the test.

    startup=True passes `--flags not-need-init,startup-clear` (swtpm runs TPM2_Startup itself);
    startup=False passes only `not-need-init`, so the TPM answers TPM_RC_INITIALIZE until a
    client sends TPM2_Startup. The same `state` directory gives the same TPM (same seeds).
    """
    binary = shutil.which("swtpm")
    if binary is None:
        pytest.fail("swtpm is not installed: apt-get install swtpm swtpm-tools tpm2-tools (scripts/test.sh does)")
    started: List[Swtpm] = []

    def start(state: Path | None = None, startup: bool = True) -> Swtpm:
        directory = state or tmp_path / f"swtpm-state-{len(started)}"
        directory.mkdir(exist_ok=True)
        for _attempt in range(3):
            port = _port_pair()
            flags = "not-need-init,startup-clear" if startup else "not-need-init"
            process = subprocess.Popen(
                [binary, "socket", "--tpm2",
                 "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                 "--tpmstate", f"dir={directory}", "--flags", flags],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            tpm = Swtpm(port, directory, process)
            started.append(tpm)
            time.sleep(0.05)
            if process.poll() is None:  # a lost port race makes swtpm exit at once
                _wait_ready(tpm)
                return tpm
        pytest.fail("swtpm could not start (three attempts)")

    yield start
    for tpm in started:
        tpm.stop()


@pytest.fixture
def swtpm(start_swtpm: Callable[..., Swtpm]) -> Swtpm:
    return start_swtpm()

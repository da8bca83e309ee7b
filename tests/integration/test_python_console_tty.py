"""`citadel python` as a person uses it: a real terminal (pty), the banner, tab completion and
in-session history (up arrow), and no history file written to the host."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import citadel_cmd, clean_env


def _read_until(fd: int, marker: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"did not see {marker!r} in {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.slow
def test_console_has_banner_completion_and_history_on_a_terminal(tmp_path: Path) -> None:
    env = clean_env(CITADEL_MODE="sim", TERM="xterm", HOME=str(tmp_path))
    # as a user would have it: the engine manifest already built (the first start builds it)
    subprocess.run(citadel_cmd() + ["measure"], env=env, check=True, capture_output=True, timeout=300)
    master, slave = pty.openpty()
    proc = subprocess.Popen(citadel_cmd() + ["python"], stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=str(tmp_path), close_fds=True)
    os.close(slave)
    try:
        banner = _read_until(master, b">>> ")
        assert b"inside the protected engine" in banner and b"Engine measurement: " in banner
        assert b"not protected" in banner  # sim mode says plainly what it does not protect

        os.write(master, b"import collections\n")
        _read_until(master, b">>> ")
        os.write(master, b"collections.Ordered\t")  # tab completes the attribute
        completed = _read_until(master, b"OrderedDict")
        assert b"OrderedDict" in completed
        os.write(master, b"\x15")  # Ctrl-U: clear the line
        os.write(master, b"print(6 * 7)\n")
        _read_until(master, b"42")
        _read_until(master, b">>> ")
        os.write(master, b"\x1b[A\n")  # up arrow recalls the last line; run it again
        again = _read_until(master, b"42")
        assert b"42" in again
        _read_until(master, b">>> ")
        os.write(master, b"exit()\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert not list(tmp_path.glob(".*history*")), "typed lines must not be written to the host"

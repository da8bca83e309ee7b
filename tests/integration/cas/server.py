"""A real CAS process on 127.0.0.1 (TLS, free port), and the CLI pointed at it, for tests and bench."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from citadel.attest.client import CasError, CasTransport

CITADEL = [sys.executable, "-m", "citadel.cli.main"]


class CasServer:
    """`citadel cas serve --port 0` in a subprocess; knows its URL and TLS fingerprint."""

    def __init__(
        self,
        state_dir: Path,
        home: Path,
        *,
        db_url: Optional[str] = None,
        extra_args: Sequence[str] = (),
        command: Optional[List[str]] = None,
    ) -> None:
        self.state_dir = state_dir
        self.home = home
        self.db_url = db_url
        self.extra_args = list(extra_args)
        self.command = command
        self.url = ""
        self.fingerprint = ""
        self.proc: Optional[subprocess.Popen] = None
        self.stderr_path = state_dir.parent / f"{state_dir.name}.stderr"

    def env(self, **extra: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CITADEL_", "XDG_"))}
        env.update({"HOME": str(self.home), "PYTHONUNBUFFERED": "1", **extra})
        src = str(Path(__file__).resolve().parents[3] / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def start(self, timeout: float = 60.0) -> CasServer:
        cmd = self.command or (
            CITADEL
            + [
                "cas",
                "serve",
                "--state-dir",
                str(self.state_dir),
                "--port",
                "0",
                *(["--db-url", self.db_url] if self.db_url else []),
                *self.extra_args,
            ]
        )
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, env=self.env(), text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not (self.url and self.fingerprint):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the CAS exited ({self.proc.wait()}):\n{self.log()[-3000:]}")
            if line.startswith("citadel CAS listening on "):
                self.url = line.split()[-1]
            elif line.startswith("TLS fingerprint"):
                self.fingerprint = line.split()[-1]
            if time.monotonic() > deadline:
                raise RuntimeError("the CAS did not start in time")
        self.wait_ready(deadline)
        return self

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                with CasTransport(self.url, self.fingerprint, timeout=5) as transport:
                    status, _ = transport.request("GET", "/readyz")
                if status == 200:
                    return
            except CasError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the CAS never became ready:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()
        return int(self.proc.returncode or 0)

    def cli(
        self,
        args: Sequence[str],
        *,
        home: Optional[Path] = None,
        input: Optional[str] = None,
        timeout: float = 60.0,
        pin: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run `citadel ARGS --cas URL --cas-fingerprint FP` as a user whose HOME is `home`."""
        env = self.env()
        if home is not None:
            env["HOME"] = str(home)
        extra = ["--cas", self.url] + (["--cas-fingerprint", self.fingerprint] if pin else [])
        return subprocess.run(
            CITADEL + list(args) + extra, capture_output=True, text=True, env=env, input=input, timeout=timeout
        )

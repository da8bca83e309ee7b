"""A private PostgreSQL cluster from Debian's binaries, for tests and the CAS benchmark.

Runs `initdb` and `pg_ctl` from /usr/lib/postgresql/<version>/bin (as the `postgres` user when
running as root, as CI does), listening on 127.0.0.1 and a free port, with its data in a fresh
temporary directory. Nothing is installed here: scripts/test.sh installs the `postgresql` package.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional


class PostgresMissing(RuntimeError):
    pass


def _binaries() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PostgresMissing(
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
            "(install Debian's `postgresql` package: scripts/test.sh does)"
        )
    return Path(candidates[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = _binaries()
        self.base = Path(tempfile.mkdtemp(prefix="citadel-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self._started = False

    def _run(self, args: List[str]) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + args
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> PostgresCluster:
        if self.as_root:
            shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o700)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base} "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._started = True
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self._started:
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
            finally:
                self._started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> Optional[str]:
        try:
            return "\n".join((self.base / "log").read_text().splitlines()[-lines:])
        except OSError:
            return None

"""Fixtures: a real CAS process over TLS on 127.0.0.1, on SQLite and on PostgreSQL.

PostgreSQL comes from Debian's binaries (scripts/test.sh installs the package); when they are
missing the PostgreSQL tests fail, they are not skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from citadel.attest import sim
from citadel.cas.auth import default_client_key_path, load_or_create_client_key

from .pgcluster import PostgresCluster, PostgresMissing
from .server import CasServer


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster().start()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


class Deployment:
    """One CAS with its operator (alice, who started it), a second user (bob), a sim platform."""

    def __init__(self, server: CasServer, root: Path, db: str) -> None:
        self.server = server
        self.db = db
        self.alice = server.home
        self.bob = root / "bob"
        self.bob.mkdir()
        self.platform_key_path = root / "platform.key"
        self.platform_key = sim.create_platform_key(self.platform_key_path)
        for home in (self.alice, self.bob):
            load_or_create_client_key(default_client_key_path({"HOME": str(home)}))
        result = server.cli(["platform", "add", "host-1", "--key", str(self.platform_key_path)])
        assert result.returncode == 0, result.stderr


def _deploy(tmp_path_factory: pytest.TempPathFactory, db: str, url: str | None) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"cas-{db}")
    home = root / "alice"
    home.mkdir()
    server = CasServer(root / "state", home, db_url=url).start()
    try:
        yield Deployment(server, root, db)
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    url = None
    if request.param == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"cas_{request.module.__name__.rsplit('.', 1)[-1]}")
    yield from _deploy(tmp_path_factory, request.param, url)


@pytest.fixture(scope="module")
def sqlite_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)

"""The engine trusts the CAS its measurement names: pointing it at another CAS is refused, and pinning
another CAS gives another measurement (which the real CAS's policy would refuse).

Two real CAS processes on loopback (SQLite; the pin is checked by the engine before any database
is involved) and the real `citadel` console script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.cas.conftest import Deployment, _deploy
from tests.integration.cas.server import CasServer
from tests.integration.test_engine_cas import (  # noqa: F401 - fixtures
    _session,
    cache,
    image,
    measure,
    measurement,
    run,
    run_env,
    tag,
    two_lines,
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from _deploy(tmp_path_factory, "sqlite", None)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CasServer]:
    """Another CAS: the one a host that wants the secrets would point the engine at."""
    root = tmp_path_factory.mktemp("other-cas")
    (root / "home").mkdir()
    server = CasServer(root / "state", root / "home").start()
    yield server
    server.stop()


def test_pinning_another_cas_changes_the_measurement(deployment: Deployment, cache: Path, measurement: str,  # noqa: F811
                                                     other: CasServer) -> None:
    pinned_other = measure(deployment, cache, server=other)
    assert pinned_other != measurement
    assert measure(deployment, cache) == measurement, "the same pin gives the same measurement"


def test_an_engine_pointed_at_another_cas_sends_nothing(deployment: Deployment, cache: Path, image: Path,  # noqa: F811
                                                        tag: str, measurement: str, other: CasServer) -> None:  # noqa: F811
    config_id, _ = _session(deployment, measurement, tag)
    redirected = run(deployment, cache, image, config_id, cas_url=other.url)
    assert redirected.returncode == 77, redirected.stderr
    error, hint = two_lines(redirected)
    assert f"has key {other.fingerprint.split(':')[-1][:16]}..., not the pinned" in error
    assert "citadel cas fingerprint" in hint
    # an engine pinned to the host's CAS instead cannot talk to the real one (and is measured differently)
    repinned = run(deployment, cache, image, config_id, fingerprint=other.fingerprint)
    assert repinned.returncode == 77
    assert "not the pinned" in two_lines(repinned)[0]
    assert redirected.stdout == repinned.stdout == ""

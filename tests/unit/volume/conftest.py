"""Fixtures for volume tests: a fixed key (reproducible), a local tag store, a fresh volume."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from citadel.volume import LocalTagStore, Volume

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture
def key() -> bytes:
    return KEY


@pytest.fixture
def tag_store(tmp_path: Path) -> LocalTagStore:
    return LocalTagStore(str(tmp_path / "tags.json"))


@pytest.fixture
def vol_dir(tmp_path: Path) -> str:
    return str(tmp_path / "vol")


@pytest.fixture
def volume(vol_dir: str, tag_store: LocalTagStore) -> Iterator[Volume]:
    vol = Volume.create(vol_dir, KEY, on_commit=tag_store.on_commit("vol"))
    yield vol
    if not vol.closed:
        vol._release()


def reopen(vol: Volume, tag_store: LocalTagStore, **kw: object) -> Volume:
    """Close ``vol`` (committing) and open the same directory again, pinned to the store's latest tag."""
    vol.close()
    return Volume.open(vol.root, KEY, expected_tag=tag_store.current("vol"), on_commit=tag_store.on_commit("vol"),
                       **kw)  # type: ignore[arg-type]

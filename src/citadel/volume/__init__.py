"""Encrypted volumes: directories whose bytes the host stores but cannot read, change or roll back.

Engine-safe (stdlib + `cryptography`, Python 3.9). The engine's file shield routes ``open()`` and
``os.*`` calls on paths under a volume's mount path to a `Volume` (see `VolumeMount`); the CAS
plugs in through ``expected_tag`` (refuse any state but the latest) and ``on_commit(old, new)``
(compare-and-swap of the tag at every commit). docs/volumes.md describes the format and protocol.
"""

from __future__ import annotations

from citadel.volume.errors import (
    TamperedVolume,
    VolumeClosed,
    VolumeConflict,
    VolumeError,
    VolumeRollback,
    VolumeWrongKey,
)
from citadel.volume.fileio import VolumeFile, VolumeRawFile, file_for_fd
from citadel.volume.format import DEFAULT_CHUNK_SIZE, parse_key
from citadel.volume.mount import VolumeMount
from citadel.volume.tagstore import LocalTagStore
from citadel.volume.volume import OnCommit, Volume

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LocalTagStore",
    "OnCommit",
    "TamperedVolume",
    "Volume",
    "VolumeClosed",
    "VolumeConflict",
    "VolumeError",
    "VolumeFile",
    "VolumeMount",
    "VolumeRawFile",
    "VolumeRollback",
    "VolumeWrongKey",
    "file_for_fd",
    "parse_key",
]

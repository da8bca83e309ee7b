"""Recovery and clean-up of a volume directory (engine-safe).

`current_state` picks the manifest to open: the host's, or the tag store's latest one found in
pending/ or conflicts/ (a commit the store accepted just before a crash is rolled forward; any
other state is refused as a rollback). `collect` deletes what no kept state needs; it runs only
when no other session has the volume open.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from citadel.crypto import digests_equal
from citadel.volume import store
from citadel.volume.errors import VolumeError, VolumeRollback
from citadel.volume.format import open_manifest, volume_tag


def read_optional(path: str) -> Optional[bytes]:
    try:
        return store.read_bytes(path)
    except FileNotFoundError:
        return None


def current_state(root: str, expected: Optional[str], key: bytes, promote: bool) -> Tuple[bytes, str]:
    """The manifest to open: the host's, or the tag store's latest found in pending/ or conflicts/."""
    sealed = store.read_bytes(os.path.join(root, store.MANIFEST))
    tag = volume_tag(sealed)
    if expected is None or digests_equal(tag, expected.lower()):
        return sealed, tag
    expected = expected.lower()
    for sub in (store.PENDING, store.CONFLICTS):
        candidate = read_optional(os.path.join(root, sub, expected))
        if candidate is not None and digests_equal(volume_tag(candidate), expected):
            if promote:  # the tag store accepted it, then the writer stopped before renaming it
                with store.commit_lock(root):
                    tmp = os.path.join(root, store.TMP_PREFIX + os.urandom(8).hex())
                    store.write_durable(tmp, candidate)
                    os.replace(tmp, os.path.join(root, store.MANIFEST))
                    store.fsync_dir(root)
            return candidate, expected
    try:
        generation = f" (generation {open_manifest(sealed, key, repr(root)).generation})"
    except VolumeError:
        generation = ""
    raise VolumeRollback(root, tag, expected, generation)


def collect(root: str, key: bytes, *, drop_pending: bool, tag: str) -> None:
    """Delete manifest debris and unreferenced segments. Call only as the only session, under commit.lock."""
    for name in store.list_names(root):
        if name.startswith(store.TMP_PREFIX):
            store.unlink_quietly(os.path.join(root, name))
    current = store.read_bytes(os.path.join(root, store.MANIFEST))
    keep = [current]
    pending_dir = os.path.join(root, store.PENDING)
    for name in store.list_names(pending_dir):
        data = read_optional(os.path.join(pending_dir, name))
        if drop_pending and digests_equal(volume_tag(current), tag):
            store.unlink_quietly(os.path.join(pending_dir, name))  # never accepted, or already current
        elif data is not None:
            keep.append(data)
    conflicts_dir = os.path.join(root, store.CONFLICTS)
    for name in store.list_names(conflicts_dir):
        data = read_optional(os.path.join(conflicts_dir, name))
        if data is not None and digests_equal(volume_tag(data), volume_tag(current)):
            store.unlink_quietly(os.path.join(conflicts_dir, name))  # promoted: it is the current state
        elif data is not None:
            keep.append(data)
    used = set()
    for data in keep:
        try:
            used |= {sid.hex() for sid in open_manifest(data, key, "").referenced_segments()}
        except VolumeError:
            if data is current:
                return  # never delete anything on the word of a manifest we cannot read
    seg_dir = os.path.join(root, store.SEGMENTS)
    removed = False
    for name in store.list_names(seg_dir):
        if name not in used:
            store.unlink_quietly(os.path.join(seg_dir, name))
            removed = True
    if removed:
        store.fsync_dir(seg_dir)
    store.fsync_dir(pending_dir)

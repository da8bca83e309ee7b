"""A local tag store: the stand-in for the CAS's record of each volume's latest tag (engine-safe).

It keeps ``{volume name: latest tag}`` in a JSON file and changes it only by compare-and-swap
under an exclusive flock, with the same semantics the CAS gives at every commit:
``compare_and_swap(name, old, new)`` succeeds only if ``old`` is the recorded tag ("" for a volume
never recorded) and refuses otherwise. It protects against rollback only as far as the file
itself is out of the host's reach (the data owner's machine, tests); in production the CAS
replaces it, through the same two seams: ``expected_tag=store.current(name)`` at open, and
``on_commit=store.on_commit(name)``.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional

from citadel.crypto import digests_equal
from citadel.volume.errors import VolumeError
from citadel.volume.store import fsync_dir, write_durable


class TagRefused(VolumeError):
    """The tag store's compare-and-swap failed: the volume's recorded tag is not the one expected."""


class LocalTagStore:
    """Latest tags of volumes, in one JSON file beside a lock file."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    @contextmanager
    def _locked(self) -> Iterator[Dict[str, str]]:
        if os.path.isdir(self.path):
            raise VolumeError(f"the tag store {self.path!r} is a directory", "name a file for the tag store")
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise VolumeError(f"cannot use the tag store {self.path!r}: {exc.strerror or exc}",
                              "name a file in a directory you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)

    def _read(self) -> Dict[str, str]:
        try:
            with open(self.path, "rb") as fh:
                doc = json.loads(fh.read() or b"{}")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise VolumeError(f"cannot read the tag store {self.path!r}: {exc.strerror or exc}",
                              "name a readable tag store file") from None
        except ValueError:
            raise VolumeError(f"the tag store {self.path!r} is not valid JSON",
                              "restore it from a backup; it records each volume's latest tag") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise VolumeError(f"the tag store {self.path!r} is malformed", "restore it from a backup")
        return doc

    def current(self, name: str) -> Optional[str]:
        """The latest tag recorded for ``name`` (None if the volume was never recorded)."""
        with self._locked() as tags:
            return tags.get(name)

    def compare_and_swap(self, name: str, old_tag: str, new_tag: str) -> None:
        """Record ``new_tag`` if ``old_tag`` is the latest ("" = never recorded); raise TagRefused if not."""
        with self._locked() as tags:
            recorded = tags.get(name, "")
            if not digests_equal(recorded, old_tag):
                raise TagRefused(
                    f"the tag store's latest tag for {name!r} is {recorded[:16] or '(none)'}..., "
                    f"not {old_tag[:16] or '(none)'}...",
                    "open the volume again to work on its latest state")
            tags[name] = new_tag
            tmp = f"{self.path}.tmp-{os.urandom(6).hex()}"
            write_durable(tmp, json.dumps(tags, sort_keys=True, indent=1).encode())
            os.replace(tmp, self.path)
            fsync_dir(os.path.dirname(self.path))

    def on_commit(self, name: str) -> Callable[[str, str], None]:
        """The ``on_commit`` callback for `Volume.open` that swaps ``name``'s tag."""

        def _swap(old_tag: str, new_tag: str) -> None:
            self.compare_and_swap(name, old_tag, new_tag)

        return _swap

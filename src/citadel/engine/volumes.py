"""The volumes of a run: open them, say where the program sees them, commit them at exit.

The launch request lists each volume (`VolumeSpec`). `open_volumes` asks a *binder* for each
volume's key and tag seams, checks the layout (no two mounts overlap, no mount covers the image,
a volume's own files or a system directory), opens every volume with the volume library (all or
none) and returns a `VolumeSet` (one `VolumeMount` per volume) for the file shield. The binder
is the one seam the CAS replaces:

* `local_binding` (this module, for `citadel run --volume ... --tag-store FILE`): the key comes
  with the request; a rollback-protected volume's latest tag is read from, and every commit is a
  compare-and-swap in, a `LocalTagStore` file on the host (a stand-in: only the CAS gives real
  rollback protection); an ephemeral volume has no tag store at all;
* the CAS flow passes its own binder: key and latest tag as the CAS released them, an
  ``on_commit(old_tag, new_tag)`` that performs the CAS's compare-and-swap (raising a
  CitadelError only for a definite refusal), and the mount path the session's policy names.

`VolumeSet.commit_at_exit` runs from `atexit`, registered before the program starts, so it runs
after the program's own exit handlers and after Python joined its threads: it flushes every
volume file the program left open, then closes (commits) every volume. A failure there prints
the two-line diagnostics and ends the process with EXIT_VOLUME. A process that is killed (or
calls ``os._exit``) commits nothing more: the volume keeps its last committed state.
Engine-safe: stdlib + the volume library, Python 3.9.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref

from citadel.crypto import digests_equal
from citadel.engine.request import EPHEMERAL, VolumeSpec
from citadel.errors import CitadelError, UsageError
from citadel.volume import LocalTagStore, Volume, VolumeError, VolumeMount, VolumeRollback
from citadel.volume.store import MANIFEST

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Iterable, List, Optional, Sequence

    from citadel.volume import OnCommit

    Binder = Callable[[VolumeSpec], "VolumeBinding"]

#: directories no volume may be mounted over (the engine reads its memfds and devices there)
SYSTEM_DIRS = ("/proc", "/dev", "/sys")


class VolumeBinding:
    """What a binder gives for one volume: its key, the latest tag to insist on, the commit callback,
    and, for the CAS (whose policy, not the host, decides), the mount path and whether to create it.

    ``expected_tag=None`` and ``on_commit=None`` is an ephemeral volume (no rollback protection).
    """

    __slots__ = ("key", "expected_tag", "on_commit", "mount", "create")

    def __init__(self, key: bytes, expected_tag: Optional[str], on_commit: Optional[OnCommit],
                 mount: Optional[str] = None, create: Optional[bool] = None) -> None:
        self.key = key
        self.expected_tag = expected_tag
        self.on_commit = on_commit
        self.mount = mount  # None: the request's mount path
        self.create = create  # None: as the request says


def local_binding(spec: VolumeSpec) -> VolumeBinding:
    """The binder of local runs (no CAS): the request's key, the local tag store's latest tag."""
    if spec.key is None:
        raise UsageError(f"volume {spec.name!r} has no key", "pass --volume-key NAME=FILE, or run with a CAS session")
    if spec.policy == EPHEMERAL:
        return VolumeBinding(spec.key, spec.expected_tag, None)
    if spec.tag_store is None:
        raise UsageError(
            f"volume {spec.name!r} is rollback-protected, but no tag store records its latest tag",
            "pass --tag-store FILE (the file `citadel volume create --tag-store` wrote), or mount it with "
            ":ephemeral to run without rollback protection")
    store = LocalTagStore(spec.tag_store)
    recorded = store.current(spec.name)
    if recorded is None:
        if os.path.exists(os.path.join(spec.host_dir, MANIFEST)):
            raise VolumeError(
                f"the tag store {spec.tag_store} has no record of volume {spec.name!r} ({spec.host_dir}), "
                "so its latest state is unknown",
                f"create volumes with the tag store (`citadel volume create DIR --tag-store FILE --name "
                f"{spec.name}`), or mount this one with :ephemeral")
        if not spec.create:
            raise VolumeError(
                f"volume {spec.name!r} does not exist: {spec.host_dir} holds no volume and the tag store "
                f"{spec.tag_store} has no record of it",
                f"create it with `citadel volume create` (with --tag-store), or add --volume-create {spec.name}")
    elif spec.expected_tag is not None and not digests_equal(spec.expected_tag, recorded):
        raise VolumeRollback(spec.host_dir, spec.expected_tag, recorded,
                             f" (the tag the launcher asked for; volume {spec.name!r})")
    return VolumeBinding(spec.key, recorded, store.on_commit(spec.name))


def _overlap(a: str, b: str) -> bool:
    """True if one absolute normalised path is the other or lies inside it."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def check_layout(specs: Sequence[VolumeSpec], image_root: Optional[str]) -> None:
    """Refuse mounts that would hide each other, the image, a volume's own files or system directories."""
    for i, spec in enumerate(specs):
        what = f"volume {spec.name!r} mounted at {spec.mount}"
        for system in SYSTEM_DIRS:
            if _overlap(spec.mount, system):
                raise UsageError(f"{what} would cover {system}", "mount volumes at a directory such as /data/in")
        if image_root is not None and _overlap(spec.mount, image_root):
            raise UsageError(f"{what} overlaps the sealed image {image_root}",
                             "mount volumes outside the image's directory, e.g. at /data/in")
        if image_root is not None and _overlap(spec.host_dir, image_root):
            raise UsageError(f"volume {spec.name!r} is stored in {spec.host_dir}, which overlaps the image "
                             f"{image_root}", "keep volumes outside the image's directory")
        for other in specs:
            for path, kind in ((other.host_dir, f"the directory of volume {other.name!r}"),
                               (other.tag_store, "a tag store")):
                if path is not None and _overlap(spec.mount, path):
                    raise UsageError(f"{what} overlaps {kind} ({path})",
                                     "choose a mount path that does not exist on the host, e.g. /data/out")
        for other in specs[:i]:
            if _overlap(spec.mount, other.mount):
                raise UsageError(f"{what} overlaps volume {other.name!r} mounted at {other.mount}",
                                 "give each volume its own directory, e.g. /data/in and /data/out")
            if _overlap(spec.host_dir, other.host_dir):
                raise UsageError(f"volumes {other.name!r} and {spec.name!r} are stored in overlapping directories "
                                 f"({other.host_dir}, {spec.host_dir})", "give each volume its own directory")


class VolumeSet:
    """The open volumes of this engine, the files the program opened on them, and the exit commit."""

    def __init__(self, mounts: List[VolumeMount], names: List[str]) -> None:
        self.mounts = mounts
        self.names = names
        self._files: weakref.WeakSet[Any] = weakref.WeakSet()
        self._reported: List[int] = []

    def track(self, handle: Any) -> Any:
        """Remember a file object opened on a volume (flushed at exit, as Python flushes plain files)."""
        with contextlib.suppress(TypeError):  # an object that takes no weak reference is not flushed at exit
            self._files.add(handle)
        return handle

    def reported(self, exc: BaseException) -> None:
        """The runner printed this error already (the exit commit does not print it twice)."""
        self._reported.append(id(exc))

    def flush_files(self) -> None:
        for handle in list(self._files):
            try:
                if not handle.closed:
                    handle.flush()
            except (CitadelError, OSError, ValueError):
                continue  # the volume's own state decides below; a closed or failed file has nothing to add

    def close_all(self) -> List[CitadelError]:
        """Commit and close every volume; returns the errors not yet reported (each volume is tried)."""
        errors: List[CitadelError] = []
        for mount, name in zip(self.mounts, self.names):
            failure = _close(mount.volume, name)
            if failure is not None and id(failure) not in self._reported:
                errors.append(failure)
        return errors

    def commit_at_exit(self) -> None:
        """The exit commit (atexit): flush, commit, close; on failure two lines and EXIT_VOLUME."""
        self.flush_files()
        errors = self.close_all()
        if not errors:
            return
        from citadel.engine.exits import EXIT_VOLUME

        _flush_std()
        text = "\n".join(exc.diagnostics() for exc in errors)
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os._exit(EXIT_VOLUME)


def _close(vol: Volume, name: str) -> Optional[CitadelError]:
    """Close one volume (its exit commit); the error that kept its changes from being saved, if any."""
    failure: Optional[CitadelError] = None
    if not vol.read_only and not vol.closed:
        try:
            vol.usable()  # a session that failed earlier (a conflict the program caught) must not pass silently
        except CitadelError as exc:
            failure = exc
    try:
        vol.close()  # commits what changed, unless the session failed; always releases the volume
    except CitadelError as exc:
        failure = failure or exc
    except OSError as exc:
        failure = failure or VolumeError(f"cannot save volume {name!r} at exit: {exc.strerror or exc}",
                                         "free disk space or fix the volume directory, then run again")
    return failure


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def open_volumes(specs: Iterable[VolumeSpec], *, image_root: Optional[str],
                 bind: Optional[Binder] = None) -> VolumeSet:
    """Open every volume of the request (all or none) and register the exit commit."""
    import atexit

    specs = list(specs)
    binder = bind or local_binding
    bindings = [binder(spec) for spec in specs]
    for spec, binding in zip(specs, bindings):
        if binding.mount is not None:
            spec.mount = binding.mount
    check_layout(specs, image_root)
    mounts: List[VolumeMount] = []
    try:
        for spec, binding in zip(specs, bindings):
            create = spec.create if binding.create is None else binding.create
            vol = Volume.open(spec.host_dir, binding.key, expected_tag=binding.expected_tag,
                              on_commit=binding.on_commit, read_only=spec.read_only,
                              create=create and not spec.read_only)
            mounts.append(VolumeMount(spec.mount, vol))
    except BaseException:
        for mount, spec in zip(mounts, specs):
            _close(mount.volume, spec.name)  # nothing changed yet: releases the volume, commits nothing
        raise
    volume_set = VolumeSet(mounts, [spec.name for spec in specs])
    atexit.register(volume_set.commit_at_exit)
    return volume_set

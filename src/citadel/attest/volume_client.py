"""The CAS as the tag store of an engine's volumes (engine-safe: stdlib + `cryptography`, Python 3.9).

The release carries, for each volume the service mounts, its key, the CAS's latest tag and a
commit token (docs/volumes.md, section 14). `CasVolumeTagStore` has the interface of
`citadel.volume.LocalTagStore`, so the engine swaps one for the other::

    store = CasVolumeTagStore.from_release(cas_addr, pinned_fingerprint, config)
    for rv in config.released_volumes():
        on_commit = store.on_commit(rv.name) if rv.rollback_protected else None
        vol = Volume.open(host_dir, rv.key, expected_tag=rv.expected_tag, on_commit=on_commit, create=True)

A commit the CAS refuses raises VolumeTagRefused (a CitadelError: `Volume` keeps the state as a
conflict); a commit without an answer raises VolumeCommitUnknown (not a CitadelError: `Volume`
keeps it pending and the next open decides).
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from citadel.attest.client import CasError, CasProtocolError, CasRequestFailed, CasTransport, ReleasedConfig

ROLLBACK_PROTECTED = "rollback-protected"
EPHEMERAL = "ephemeral"
_TAG = re.compile(r"^[0-9a-f]{64}$")
#: statuses with which the CAS definitely did not record a commit (it answered and said no)
_REFUSED = (400, 403, 404, 409, 422)


class VolumeTagRefused(CasRequestFailed):
    """The CAS answered and did not record the tag: another engine committed first, the host handed
    over an older copy, or the commit is not allowed. A CitadelError, so `Volume` turns it into a
    VolumeConflict and keeps the refused state in the volume's conflicts/ directory."""

    def __init__(
        self,
        status: int,
        code: str,
        cause: str,
        remedy: str = "",
        latest_tag: Optional[str] = None,
        generation: Optional[int] = None,
    ) -> None:
        super().__init__(status, code, cause, remedy)
        self.latest_tag = latest_tag
        self.generation = generation


class VolumeCommitUnknown(ConnectionError):
    """No answer from the CAS: the commit may or may not be recorded. Deliberately not a CitadelError:
    `Volume` then keeps the pending state and stops the session; the next open (with the CAS's
    latest tag) rolls forward or discards it."""


@dataclass(frozen=True)
class ReleasedVolume:
    """One volume of a release (docs/volumes.md, "The CAS")."""

    name: str
    mount: str  # absolute path inside the program
    policy: str  # "rollback-protected" or "ephemeral"
    key: bytes  # 32 bytes
    expected_tag: Optional[str]  # the CAS's latest tag; None: never committed (or ephemeral)
    generation: int  # commits the CAS had recorded at the release
    token: Optional[str]  # the commit capability (None for ephemeral volumes)

    @property
    def rollback_protected(self) -> bool:
        return self.policy == ROLLBACK_PROTECTED

    def __repr__(self) -> str:  # never the key or the token
        return f"ReleasedVolume(name={self.name!r}, mount={self.mount!r}, policy={self.policy!r})"


def parse_volumes(items: Sequence[Any]) -> List[ReleasedVolume]:
    """The release's `volumes` as ReleasedVolume objects; anything malformed is a CasProtocolError."""
    out: List[ReleasedVolume] = []
    try:
        for item in items:
            key = bytes.fromhex(item["key"])
            tag = item["expected_tag"]
            token = item["token"]
            policy = item["policy"]
            mount = item["mount"]
            if len(key) != 32 or policy not in (ROLLBACK_PROTECTED, EPHEMERAL):
                raise ValueError("key or policy")
            if tag is not None and not _TAG.match(tag):
                raise ValueError("tag")
            if not isinstance(mount, str) or not mount.startswith("/"):
                raise ValueError("mount")
            if policy == ROLLBACK_PROTECTED and not isinstance(token, str):
                raise ValueError("token")
            out.append(ReleasedVolume(str(item["name"]), mount, policy, key, tag, int(item["generation"]), token))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CasProtocolError(
            "the CAS's release has a malformed volume entry",
            "the CAS and the engine may be of different versions",
        ) from None
    return out


def volume_commit_answer(status: int, answer: Any, url: str, volume: str) -> Dict[str, Any]:
    """The CAS's answer to a commit: the recorded state, or VolumeTagRefused, or VolumeCommitUnknown."""
    if status == 200 and isinstance(answer, dict) and isinstance(answer.get("generation"), int):
        return answer
    err = answer.get("error") if isinstance(answer, dict) else None
    if status in _REFUSED and isinstance(err, dict):
        latest = err.get("latest_tag")
        generation = err.get("generation")
        raise VolumeTagRefused(
            status,
            str(err.get("code", "refused")),
            str(err.get("cause", f"the CAS refused the commit of volume {volume!r}")),
            str(err.get("remedy", "")),
            latest if isinstance(latest, str) else None,
            generation if isinstance(generation, int) else None,
        )
    raise VolumeCommitUnknown(
        f"the CAS at {url} answered HTTP {status} to the commit of volume {volume!r}; "
        "whether it recorded the new tag is unknown"
    )


def post_volume_commit(transport: CasTransport, path: str, doc: Dict[str, Any], volume: str) -> Dict[str, Any]:
    """POST a commit and classify the outcome (recorded / refused / unknown); see volume_commit_answer."""
    try:
        status, answer = transport.request("POST", path, doc)
    except CasError as exc:  # no usable answer: the request may or may not have been carried out
        raise VolumeCommitUnknown(f"{exc.cause} (commit of volume {volume!r}; its outcome is unknown)") from None
    return volume_commit_answer(status, answer, transport.url, volume)


class CasVolumeTagStore:
    """The CAS as the tag store of one engine's volumes: the interface of `citadel.volume.LocalTagStore`.

    ``current(name)`` asks the CAS for the latest tag; ``compare_and_swap(name, old, new)`` records a
    commit (the token from the release authorizes it); ``on_commit(name)`` is the callback
    `Volume.open` takes. A definite refusal raises VolumeTagRefused (a CitadelError); no answer raises
    VolumeCommitUnknown (not one). Safe to use from several threads, and after `fork` (the child opens
    its own connection).
    """

    def __init__(
        self, cas_addr: str, fingerprint: str, config_id: str, tokens: Mapping[str, str], *, timeout: float = 30.0
    ) -> None:
        self.cas_addr = cas_addr
        self.fingerprint = fingerprint
        self.config_id = config_id
        self._tokens = dict(tokens)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._transport: Optional[CasTransport] = None
        self._pid = os.getpid()
        _STORES.add(self)

    @classmethod
    def from_release(
        cls, cas_addr: str, fingerprint: str, config: ReleasedConfig, *, timeout: float = 30.0
    ) -> CasVolumeTagStore:
        tokens = {v.name: v.token for v in config.released_volumes() if v.token is not None}
        return cls(cas_addr, fingerprint, config.config_id, tokens, timeout=timeout)

    def __repr__(self) -> str:  # never the tokens
        return f"CasVolumeTagStore({self.config_id!r}, volumes={sorted(self._tokens)!r})"

    def _token(self, name: str) -> str:
        token = self._tokens.get(name)
        if token is None:
            raise CasError(
                f"volume {name!r} has no commit token in the release of {self.config_id!r}",
                "only rollback-protected volumes the service mounts are committed through the CAS",
            )
        return token

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, and never the parent's TLS connection (its socket is left alone)."""
        self._lock = threading.Lock()
        self._transport, self._pid = None, os.getpid()

    def _connection(self) -> CasTransport:
        """The per-process connection; call with the lock held."""
        if self._pid != os.getpid():
            self._transport, self._pid = None, os.getpid()
        if self._transport is None:
            self._transport = CasTransport(self.cas_addr, self.fingerprint, timeout=self.timeout)
        return self._transport

    def _call(self, path: str, doc: Dict[str, Any], volume: str) -> Dict[str, Any]:
        with self._lock:
            return post_volume_commit(self._connection(), path, doc, volume)

    def current(self, name: str) -> Optional[str]:
        """The latest tag the CAS records for ``name`` (None if never committed).

        Raises CasUnreachable (no answer) or CasRequestFailed (the CAS refused: a stale token).
        """
        doc = {"config_id": self.config_id, "volume": name, "token": self._token(name)}
        with self._lock:
            answer = self._connection().call("POST", "/v1/volumes/state", doc)
        tag = answer.get("tag") if isinstance(answer, dict) else None
        return tag if isinstance(tag, str) else None

    def compare_and_swap(self, name: str, old_tag: str, new_tag: str) -> None:
        """Record ``new_tag`` if ``old_tag`` is the CAS's latest ("" = never committed)."""
        doc = {
            "config_id": self.config_id,
            "volume": name,
            "old_tag": old_tag,
            "new_tag": new_tag,
            "token": self._token(name),
        }
        answer = self._call("/v1/volumes/commit", doc, name)
        if answer.get("tag") != new_tag:
            raise VolumeCommitUnknown(f"the CAS answered the commit of volume {name!r} with another tag")

    def on_commit(self, name: str) -> Callable[[str, str], None]:
        """The ``on_commit`` callback for `Volume.open` that swaps ``name``'s tag in the CAS."""
        self._token(name)

        def _swap(old_tag: str, new_tag: str) -> None:
            self.compare_and_swap(name, old_tag, new_tag)

        return _swap

    def close(self) -> None:
        with self._lock:
            if self._transport is not None and self._pid == os.getpid():
                self._transport.close()
            self._transport = None

    def __enter__(self) -> CasVolumeTagStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_STORES: weakref.WeakSet[CasVolumeTagStore] = weakref.WeakSet()


def _stores_after_fork() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_stores_after_fork)


def commit_volume_tag(
    cas_addr: str,
    fingerprint: str,
    config_id: str,
    volume: str,
    token: str,
    old_tag: str,
    new_tag: str,
    *,
    timeout: float = 30.0,
) -> int:
    """One commit on its own connection; returns the CAS's commit count for the volume."""
    with CasVolumeTagStore(cas_addr, fingerprint, config_id, {volume: token}, timeout=timeout) as store:
        doc = {"config_id": config_id, "volume": volume, "old_tag": old_tag, "new_tag": new_tag, "token": token}
        return int(store._call("/v1/volumes/commit", doc, volume)["generation"])

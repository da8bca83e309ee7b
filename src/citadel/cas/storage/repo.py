"""Persistence functions. Each takes an open SQLAlchemy Session or Connection; the caller owns the
transaction. The attestation path uses Core statements (no ORM unit of work) to stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from citadel.cas.audit import AuditRecord, canonical_json, entry_hash, head_mac
from citadel.cas.envelope import Keyring
from citadel.cas.storage.models import (
    AuditEntry,
    AuditHead,
    OperatorRow,
    PlatformRow,
    SessionRow,
    UsedNonce,
    VolumeRow,
    VolumeTagRow,
)

Db = Union[Session, Connection]
_SESSIONS = cast(Table, SessionRow.__table__)
_PLATFORMS = cast(Table, PlatformRow.__table__)
_AUDIT = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_NONCES = cast(Table, UsedNonce.__table__)
_VOLUMES = cast(Table, VolumeRow.__table__)
_VOLUME_TAGS = cast(Table, VolumeTagRow.__table__)


def _dialect(db: Db) -> str:
    return db.dialect.name if isinstance(db, Connection) else db.get_bind().dialect.name


# --- sessions -------------------------------------------------------------------------------------


def get_session(db: Session, name: str) -> Optional[SessionRow]:
    return db.get(SessionRow, name)


# Statements of the attestation path, built once (SQLAlchemy memoizes their cache keys).
_SESSION_HASH = select(_SESSIONS.c.hash).where(_SESSIONS.c.name == bindparam("name"))
_SESSION_BODY = select(_SESSIONS.c.body).where(
    _SESSIONS.c.name == bindparam("name"), _SESSIONS.c.hash == bindparam("h")
)
_PLATFORM_BY_FP = select(_PLATFORMS.c.name, _PLATFORMS.c.public_key).where(_PLATFORMS.c.fingerprint == bindparam("fp"))
_HEAD_READ = select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.mac).where(_HEAD.c.id == 1)
_HEAD_LOCK = _HEAD_READ.with_for_update()
_HEAD_ADVANCE = (
    update(_HEAD)
    .where(_HEAD.c.id == 1, _HEAD.c.seq == bindparam("old_seq"))
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"), mac=bindparam("new_mac"))
)
_AUDIT_INSERT = insert(_AUDIT)


def session_hash(db: Db, name: str) -> Optional[str]:
    """The current hash of a session (None if it does not exist): the attestation path's one read."""
    return db.execute(_SESSION_HASH, {"name": name}).scalar_one_or_none()


def session_body(db: Db, name: str, digest: str) -> Optional[bytes]:
    return db.execute(_SESSION_BODY, {"name": name, "h": digest}).scalar_one_or_none()


def list_sessions(db: Session) -> Sequence[SessionRow]:
    return db.scalars(select(SessionRow).order_by(SessionRow.name)).all()


def insert_session(db: Session, row: SessionRow) -> None:
    db.add(row)
    db.flush()  # a concurrent create of the same name fails here (primary key)


def update_session_if(db: Session, name: str, predecessor: str, **values: object) -> bool:
    """Compare-and-set on the session's hash: True if this update replaced `predecessor`."""
    result = db.execute(
        update(_SESSIONS).where(_SESSIONS.c.name == name, _SESSIONS.c.hash == predecessor).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_session(db: Session, name: str) -> bool:
    result = db.execute(delete(_SESSIONS).where(_SESSIONS.c.name == name))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def access_of(row: SessionRow) -> dict:
    return json.loads(row.access)


# --- platforms and operators ----------------------------------------------------------------------


def list_platforms(db: Session, kind: Optional[str] = None) -> Sequence[PlatformRow]:
    query = select(PlatformRow).order_by(PlatformRow.name)
    if kind is not None:
        query = query.where(PlatformRow.kind == kind)
    return db.scalars(query).all()


def get_platform(db: Session, name: str) -> Optional[PlatformRow]:
    return db.get(PlatformRow, name)


def platform_by_fingerprint(db: Db, fingerprint: str) -> Optional[Tuple[str, str]]:
    """(name, public key hex) of the platform with this key fingerprint, or None."""
    row = db.execute(_PLATFORM_BY_FP, {"fp": fingerprint}).first()
    return (row[0], row[1]) if row else None


def add_platform(db: Session, row: PlatformRow) -> None:
    db.add(row)
    db.flush()


def remove_platform(db: Session, name: str) -> bool:
    result = db.execute(delete(_PLATFORMS).where(_PLATFORMS.c.name == name))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def is_operator(db: Session, identity: str) -> bool:
    return db.get(OperatorRow, identity) is not None


def add_operator(db: Session, identity: str, now: float) -> bool:
    if db.get(OperatorRow, identity) is not None:
        return False
    db.add(OperatorRow(identity=identity, added_at=now))
    db.flush()
    return True


# --- nonces ---------------------------------------------------------------------------------------


_NONCE_INSERT = {
    module.__name__.rsplit(".", 1)[-1]: module.insert(_NONCES).on_conflict_do_nothing().returning(_NONCES.c.digest)
    for module in (postgresql, sqlite)
}


def consume_nonces(db: Db, nonces: Sequence[Tuple[str, float]]) -> Set[str]:
    """Record nonces (digest, expiry) as used; return the digests that were fresh (not replays)."""
    if not nonces:
        return set()
    stmt = _NONCE_INSERT[_dialect(db)]
    return set(db.execute(stmt, [{"digest": d, "expires_at": e} for d, e in nonces]).scalars())


def purge_nonces(db: Db, now: float) -> int:
    result = db.execute(delete(_NONCES).where(_NONCES.c.expires_at < now))
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- audit ----------------------------------------------------------------------------------------


def read_head(db: Db, *, lock: bool = False) -> Tuple[int, str, str]:
    """(seq, hash, mac) of the newest audit entry; `lock` holds the head until the transaction ends."""
    seq, digest, mac = db.execute(_HEAD_LOCK if lock else _HEAD_READ).one()
    return int(seq), str(digest), str(mac)


def append_audit(
    db: Db, keyring: Keyring, records: Sequence[AuditRecord], head: Optional[Tuple[int, str]] = None
) -> Tuple[List[AuditRecord], Tuple[int, str]]:
    """Chain `records` (their seq is assigned here) after the head, under the head's lock.

    `head` (seq, hash) is the caller's belief of the current head (the writer keeps it); the head
    row is advanced only if it still holds that seq, else the head is read (locked) and the chain
    is built again, so several writers (threads, processes, replicas) never fork the chain.
    Returns the chained records and the new head (seq, hash).
    """
    while True:
        if head is None:
            seq0, prev0, _ = read_head(db, lock=True)
        else:
            seq0, prev0 = head
        seq, prev = seq0, prev0
        out, rows = [], []
        for record in records:
            seq += 1
            chained = AuditRecord(
                seq,
                record.at,
                record.event,
                record.actor,
                record.subject,
                record.outcome,
                record.reason,
                record.details,
            )
            digest = entry_hash(prev, chained)
            rows.append(
                {
                    "seq": seq,
                    "at": chained.at,
                    "event": chained.event,
                    "actor": chained.actor,
                    "subject": chained.subject,
                    "outcome": chained.outcome,
                    "reason": chained.reason,
                    "details": canonical_json(chained.details).decode(),
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
            out.append(chained)
        params = {"old_seq": seq0, "new_seq": seq, "new_hash": prev, "new_mac": head_mac(keyring, seq, prev)}
        if db.execute(_HEAD_ADVANCE, params).rowcount:  # type: ignore[attr-defined]
            db.execute(_AUDIT_INSERT, rows)
            return out, (seq, prev)
        head = None  # someone else appended meanwhile: read the head under its lock and chain again


def iter_audit(
    db: Db, after: int = 0, limit: Optional[int] = None, batch: int = 1000
) -> Iterator[Tuple[AuditRecord, str, str]]:
    """(record, stored prev_hash, stored hash) in seq order, read in batches."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = batch if remaining is None else min(batch, remaining)
        rows = db.execute(select(_AUDIT).where(_AUDIT.c.seq > after).order_by(_AUDIT.c.seq).limit(size)).all()
        if not rows:
            return
        for row in rows:
            record = AuditRecord(
                seq=row.seq,
                at=row.at,
                event=row.event,
                actor=row.actor,
                subject=row.subject,
                outcome=row.outcome,
                reason=row.reason,
                details=json.loads(row.details),
            )
            yield record, row.prev_hash, row.hash
        after = rows[-1].seq
        if remaining is not None:
            remaining -= len(rows)


# --- volumes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeState:
    """One row of `volumes`: `key` is the envelope (None: the policy imports the key), tag "" = none yet."""

    name: str
    instance: str
    key: Optional[bytes]
    tag: str
    generation: int


_VOLUME_COLUMNS = (_VOLUMES.c.name, _VOLUMES.c.instance, _VOLUMES.c.key, _VOLUMES.c.tag, _VOLUMES.c.generation)
_VOLUMES_OF = select(*_VOLUME_COLUMNS).where(_VOLUMES.c.session == bindparam("s"))
_VOLUME_ONE = select(*_VOLUME_COLUMNS).where(_VOLUMES.c.session == bindparam("s"), _VOLUMES.c.name == bindparam("n"))
_VOLUME_INSERT = {
    module.__name__.rsplit(".", 1)[-1]: module.insert(_VOLUMES).on_conflict_do_nothing()
    for module in (postgresql, sqlite)
}
_VOLUME_SWAP = (
    update(_VOLUMES)
    .where(
        _VOLUMES.c.session == bindparam("s"),
        _VOLUMES.c.name == bindparam("n"),
        _VOLUMES.c.instance == bindparam("i"),
        _VOLUMES.c.tag == bindparam("old"),
    )
    .values(tag=bindparam("new"), generation=_VOLUMES.c.generation + 1, updated_at=bindparam("now"))
    .returning(_VOLUMES.c.generation)
)
_VOLUME_TAG_GENERATION = select(func.max(_VOLUME_TAGS.c.generation)).where(
    _VOLUME_TAGS.c.session == bindparam("s"),
    _VOLUME_TAGS.c.volume == bindparam("n"),
    _VOLUME_TAGS.c.tag == bindparam("t"),
)


def _state(row: Any) -> VolumeState:
    return VolumeState(str(row[0]), str(row[1]), row[2], str(row[3]), int(row[4]))


def volume_states(db: Db, session: str) -> Dict[str, VolumeState]:
    """Every volume row of a session, by volume name."""
    return {str(row[0]): _state(row) for row in db.execute(_VOLUMES_OF, {"s": session})}


def volume_state(db: Db, session: str, name: str) -> Optional[VolumeState]:
    row = db.execute(_VOLUME_ONE, {"s": session, "n": name}).first()
    return _state(row) if row is not None else None


def insert_volumes(db: Db, session: str, rows: Sequence[Dict[str, Any]], now: float) -> None:
    """Insert volume rows (name, instance, key) unless present: the first use wins a race."""
    if rows:
        values = [dict(r, session=session, tag="", generation=0, created_at=now, updated_at=now) for r in rows]
        db.execute(_VOLUME_INSERT[_dialect(db)], values)


def swap_volume_tag(
    db: Db, session: str, name: str, instance: str, old_tag: str, new_tag: str, now: float
) -> Optional[int]:
    """Compare-and-swap of a volume's tag: the new generation, or None if `old_tag` is not current.

    One conditional UPDATE: on SQLite the transaction holds the write lock (BEGIN IMMEDIATE); on
    PostgreSQL a concurrent swap of the same row waits for this one and then finds the tag changed.
    """
    params = {"s": session, "n": name, "i": instance, "old": old_tag, "new": new_tag, "now": now}
    generation = db.execute(_VOLUME_SWAP, params).scalar_one_or_none()
    return None if generation is None else int(generation)


def record_volume_tag(db: Db, session: str, name: str, generation: int, tag: str, actor: str, now: float) -> None:
    db.execute(
        insert(_VOLUME_TAGS),
        [{"session": session, "volume": name, "generation": generation, "tag": tag, "actor": actor, "at": now}],
    )


def volume_tag_generation(db: Db, session: str, name: str, tag: str) -> Optional[int]:
    """The generation at which the CAS recorded `tag` for this volume (None: never recorded)."""
    value = db.execute(_VOLUME_TAG_GENERATION, {"s": session, "n": name, "t": tag}).scalar_one_or_none()
    return None if value is None else int(value)


def set_volume_key_if_absent(db: Db, session: str, name: str, key: bytes) -> None:
    """Give a volume a CAS-made key if it has none (its policy stopped importing one)."""
    db.execute(
        update(_VOLUMES)
        .where(_VOLUMES.c.session == session, _VOLUMES.c.name == name, _VOLUMES.c.key.is_(None))
        .values(key=key)
    )

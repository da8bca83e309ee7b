"""Session (policy) lifecycle: create, update (compare-and-set on the predecessor), read, delete.

Each change is audited in the same transaction that makes it. The policy and its secrets are
stored as one envelope-encrypted record bound to the session's name and hash; only the name, the
hash, the creator and the access lists are stored in the clear.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from citadel.cas import secrets as secretlib
from citadel.cas.audit import AuditRecord, canonical_json, now_text
from citadel.cas.errors import Conflict, Forbidden, NotFound
from citadel.cas.policy import refs
from citadel.cas.policy.model import Policy
from citadel.cas.policy.parse import ParsedPolicy, parse_policy
from citadel.cas.services.context import CasContext
from citadel.cas.storage import repo
from citadel.cas.storage.models import SessionRow


@dataclass(frozen=True)
class SessionInfo:
    name: str
    hash: str
    generation: int
    creator: str
    created_at: float
    updated_at: float


def session_hash(ctx: CasContext, doc: Dict[str, Any]) -> str:
    """HMAC-SHA256 of the canonical policy under a key derived from the master key.

    Keyed so that a hash shown to readers reveals nothing about imported secret values.
    """
    return ctx.keyring.mac("session-hash", canonical_json(doc)).hex()


def _context(name: str, digest: str) -> bytes:
    return b"citadel/cas/session/v1\x00" + name.encode() + b"\x00" + digest.encode()


def allowed(entries: List[str], caller: str, creator: str) -> bool:
    return "ANY" in entries or caller in entries or ("CREATOR" in entries and caller == creator)


def _info(row: SessionRow) -> SessionInfo:
    return SessionInfo(row.name, row.hash, row.generation, row.creator, row.created_at, row.updated_at)


def _check(row: SessionRow, caller: str, action: str) -> None:
    if not allowed(repo.access_of(row)[action], caller, row.creator):
        raise Forbidden(
            f"{caller[:24]}... may not {action} session {row.name!r}",
            f"ask its owner to add your identity to access_policy.{action}",
        )


def _audit(ctx: CasContext, db: Session, event: str, caller: str, name: str, details: Dict[str, Any]) -> None:
    repo.append_audit(db, ctx.keyring, [AuditRecord(0, now_text(), event, caller, name, "done", "", details)])
    ctx.metrics.session_changes.labels(event.split(".")[-1]).inc()


def _row_values(ctx: CasContext, parsed: ParsedPolicy, stored: Dict[str, Any]) -> Dict[str, Any]:
    doc = parsed.doc
    digest = session_hash(ctx, doc)
    body = ctx.keyring.seal(
        json.dumps({"policy": doc, "secrets": stored}).encode(), context=_context(doc["name"], digest)
    )
    access = {k: list(v) for k, v in doc["access_policy"].items()}
    return {"hash": digest, "body": body, "access": json.dumps(access), "updated_at": ctx.clock()}


def create(ctx: CasContext, caller: str, text: str, source: str = "policy") -> SessionInfo:
    parsed = parse_policy(text, source)
    if parsed.predecessor is not None:
        raise Conflict(
            f"session {parsed.name!r} names a predecessor, so it is an update",
            "use `citadel session update`, or remove `predecessor` to create it",
            code="not_new",
        )
    stored = secretlib.materialize(parsed.policy.secrets, {})
    try:
        with ctx.sessions.begin() as db:
            if repo.get_session(db, parsed.name) is not None:
                raise _exists(parsed.name)
            values = _row_values(ctx, parsed, stored)
            now = values["updated_at"]
            repo.insert_session(
                db, SessionRow(name=parsed.name, creator=caller, generation=1, created_at=now, **values)
            )
            _audit(ctx, db, "session.create", caller, parsed.name, {"hash": values["hash"]})
    except IntegrityError:  # created concurrently by someone else
        raise _exists(parsed.name) from None
    return SessionInfo(parsed.name, values["hash"], 1, caller, now, now)


def _exists(name: str) -> Conflict:
    return Conflict(
        f"session {name!r} already exists",
        "to change it, `citadel session update` with its hash as predecessor; or pick another name",
        code="exists",
    )


def update(
    ctx: CasContext,
    caller: str,
    text: str,
    source: str = "policy",
    predecessor: Optional[str] = None,
    expected_name: Optional[str] = None,
) -> SessionInfo:
    parsed = parse_policy(text, source)
    if expected_name is not None and parsed.name != expected_name:
        raise Conflict(
            f"the policy is named {parsed.name!r}, the request names {expected_name!r}",
            "update the session the policy names",
            code="name_mismatch",
        )
    wanted = parsed.predecessor or (predecessor.lower() if predecessor else None)
    if parsed.predecessor and predecessor and parsed.predecessor != predecessor.lower():
        raise Conflict(
            "the policy's predecessor and --predecessor differ",
            "give one of them",
            code="predecessor_mismatch",
        )
    if wanted is None:
        raise Conflict(
            f"an update of {parsed.name!r} must name its predecessor (the current session's hash)",
            "add `predecessor: <hash>` (from `citadel session show`), so no update is lost",
            code="predecessor_required",
        )
    if parsed.predecessor is None:
        doc = dict(parsed.doc, predecessor=wanted)
        parsed = ParsedPolicy(Policy.from_doc(doc), parsed.marks)
    with ctx.sessions.begin() as db:
        row = repo.get_session(db, parsed.name)
        if row is None:
            raise NotFound(f"session {parsed.name!r} does not exist", "create it with `citadel session create`")
        _check(row, caller, "update")
        if row.hash != wanted:
            raise _stale(parsed.name)
        _, old_secrets = _decrypt(ctx, row)
        stored = secretlib.materialize(parsed.policy.secrets, old_secrets)
        values = _row_values(ctx, parsed, stored)
        if not repo.update_session_if(db, parsed.name, wanted, generation=row.generation + 1, **values):
            raise _stale(parsed.name)
        _audit(ctx, db, "session.update", caller, parsed.name, {"hash": values["hash"], "predecessor": wanted})
        return SessionInfo(
            parsed.name, values["hash"], row.generation + 1, row.creator, row.created_at, values["updated_at"]
        )


def _stale(name: str) -> Conflict:
    return Conflict(
        f"the predecessor is not the current version of session {name!r} (it was changed meanwhile)",
        "show the session, merge your change into it, and update with its current hash",
        code="stale_predecessor",
    )


def _decrypt(ctx: CasContext, row: SessionRow) -> Tuple[Policy, Dict[str, Any]]:
    return decrypt(ctx, row.name, row.hash, row.body)


def decrypt(ctx: CasContext, name: str, digest: str, body: Optional[bytes]) -> Tuple[Policy, Dict[str, Any]]:
    """The policy and secret values of one session version (cached by name and hash)."""
    key = (name, digest)
    cached = ctx.policy_cache.get(key)
    if cached is None:
        if body is None:
            raise KeyError(key)
        doc = json.loads(ctx.keyring.open(body, context=_context(name, digest)))
        cached = (Policy.from_doc(doc["policy"]), doc["secrets"])
        if len(ctx.policy_cache) > 1024:
            ctx.policy_cache.clear()
        ctx.policy_cache[key] = cached
    return cached


def show(ctx: CasContext, caller: str, name: str) -> Tuple[SessionInfo, Dict[str, Any]]:
    with ctx.readers() as db:
        row = repo.get_session(db, name)
        if row is None:
            raise NotFound(f"session {name!r} does not exist", "`citadel session list` shows the sessions you may read")
        _check(row, caller, "read")
        policy, _ = _decrypt(ctx, row)
        return _info(row), redact(policy.doc)


def redact(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The policy as readers see it: imported secret values and literal image keys hidden."""
    out = copy.deepcopy(doc)
    out["secrets"] = [secretlib.redacted(s) for s in doc.get("secrets", [])]
    for svc in out.get("services", []):
        if not refs.REF.fullmatch(svc["image"]["key"]):
            svc["image"]["key"] = "<hidden>"
    return out


def list_readable(ctx: CasContext, caller: str) -> List[SessionInfo]:
    with ctx.readers() as db:
        return [_info(r) for r in repo.list_sessions(db) if allowed(repo.access_of(r)["read"], caller, r.creator)]


def delete(ctx: CasContext, caller: str, name: str) -> None:
    with ctx.sessions.begin() as db:
        row = repo.get_session(db, name)
        if row is None:
            raise NotFound(f"session {name!r} does not exist", "`citadel session list` shows your sessions")
        _check(row, caller, "delete")
        repo.delete_session(db, name)
        _audit(ctx, db, "session.delete", caller, name, {"hash": row.hash})

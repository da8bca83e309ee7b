"""Volumes on the CAS side: their keys, the latest tag of each, and who may advance it.

* Release (`add_to_release`): for each volume a service mounts, the key (made at first use: 32
  random bytes, stored envelope-encrypted; or the policy's imported secret), the latest recorded
  tag, and a commit capability bound to this attestation (volume_tokens.py).
* Commit (`commit_by_engine`, `commit_by_owner`): a compare-and-swap of the tag, by an engine
  holding a capability or by an owner with update access; exactly one of two concurrent swaps
  from the same tag wins. A refusal says whether another engine committed first or the host
  handed over an older copy (the tag history tells the two apart).
* Owner key requests (`owner_grant`): readers get the key and tag (show, export), updaters too
  (create, import).
Every commit, every refused commit and every owner key request is audited in the transaction
that decides it.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from citadel.cas.audit import AuditRecord, now_text
from citadel.cas.errors import CasServiceError, Conflict, Forbidden, NotFound, Refused
from citadel.cas.policy import volumes as rules
from citadel.cas.policy.model import Policy
from citadel.cas.services import sessions
from citadel.cas.services import volume_tokens as tokens
from citadel.cas.services.context import CasContext
from citadel.cas.storage import repo

_TAG = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TagRefused(Conflict):
    """A compare-and-swap the CAS refused (409); the body also carries the latest tag."""

    kind = "refusal"

    def __init__(self, code: str, cause: str, remedy: str, latest_tag: str, generation: int) -> None:
        super().__init__(cause, remedy, code=code)
        self.latest_tag = latest_tag
        self.generation = generation

    def body(self) -> Dict[str, Any]:
        doc = super().body()
        doc["error"].update({"latest_tag": self.latest_tag or None, "generation": self.generation})
        return doc


@dataclass(frozen=True)
class Grant:
    """One volume's key and latest state, as a release or an owner receives them."""

    mount: rules.Mount
    key: bytes
    tag: Optional[str]  # None: never committed
    generation: int
    instance: str


@dataclass(frozen=True)
class CommitResult:
    tag: str
    generation: int
    repeated: bool  # the CAS already held exactly this tag (a retried request)


def _key_context(session: str, name: str, instance: str) -> bytes:
    return b"\x00".join([b"citadel/cas/volume/v1", session.encode(), name.encode(), instance.encode()])


def _audit(
    ctx: CasContext,
    db: Session,
    event: str,
    actor: str,
    subject: str,
    refusal: Optional[CasServiceError],
    details: Dict[str, Any],
    reason: str = "",
) -> None:
    """One audit entry: `allowed` (with `reason`, e.g. "repeated") or `refused` with the refusal's code."""
    if refusal is not None:
        details = dict(details, cause=refusal.cause)
        reason = refusal.code
    outcome = "refused" if refusal is not None else "allowed"
    record = AuditRecord(0, now_text(), event, actor[:160], subject[:300], outcome, reason, details)
    written, _ = repo.append_audit(db, ctx.keyring, [record])
    ctx.metrics.audit_head.set(written[-1].seq)


# --- keys and states --------------------------------------------------------------------------------


def _grants(ctx: CasContext, session: str, mounts: Sequence[rules.Mount], stored: Dict[str, Any]) -> List[Grant]:
    """Each mount's key and state; rows (and CAS-made keys) are created at first use."""
    with ctx.read_engine.connect() as conn:
        states = repo.volume_states(conn, session)
    missing = [m for m in mounts if m.name not in states]
    keyless = [m for m in mounts if m.key_secret is None and m.name in states and states[m.name].key is None]
    if missing or keyless:
        rows = []
        for m in missing:
            instance = _random.token_hex(16)
            key = (
                None
                if m.key_secret
                else ctx.keyring.seal(os.urandom(32), context=_key_context(session, m.name, instance))
            )
            rows.append({"name": m.name, "instance": instance, "key": key})
        try:
            with ctx.engine.begin() as conn:
                repo.insert_volumes(conn, session, rows, ctx.clock())
                for m in keyless:  # the policy stopped importing this volume's key: the CAS makes one
                    st = states[m.name]
                    repo.set_volume_key_if_absent(
                        conn,
                        session,
                        m.name,
                        ctx.keyring.seal(os.urandom(32), context=_key_context(session, m.name, st.instance)),
                    )
        except IntegrityError:  # the session was deleted meanwhile
            raise NotFound(f"session {session!r} does not exist", "check the session's name") from None
        with ctx.read_engine.connect() as conn:
            states = repo.volume_states(conn, session)
    out = []
    for m in mounts:
        st = states[m.name]
        imported = rules.imported_key(m, stored)
        if imported is not None:
            key = imported
        else:
            assert st.key is not None
            key = ctx.keyring.open(st.key, context=_key_context(session, m.name, st.instance))
        tag = (st.tag or None) if m.rollback_protected else None
        out.append(Grant(m, key, tag, st.generation, st.instance))
    return out


def add_to_release(
    ctx: CasContext,
    plaintext: bytes,
    session: str,
    digest: str,
    body: Optional[bytes],
    service_name: str,
    nonce: bytes,
    platform: str,
) -> bytes:
    """The release document with its `volumes` filled in (docs/volumes.md, section 14)."""
    policy, stored = sessions.decrypt(ctx, session, digest, body)
    service = policy.services[service_name]
    mounts = rules.mounts(policy.volumes, service.volumes)
    if not mounts:
        return plaintext
    doc = json.loads(plaintext)
    attestation = tokens.attestation_id(nonce)
    now = ctx.clock()
    entries = []
    try:
        grants = _grants(ctx, session, mounts, stored)
    except NotFound:
        raise Refused(
            "unknown_session",
            f"session {session!r} was deleted during this attestation",
            "check CITADEL_CONFIG_ID, and that the session exists on this CAS",
        ) from None
    for grant in grants:
        token = None
        if grant.mount.rollback_protected:
            token = tokens.issue(
                ctx.keyring,
                tokens.Capability(
                    doc["config_id"], grant.mount.name, grant.instance, grant.generation, attestation, platform, now
                ),
            )
        entries.append(
            {
                "name": grant.mount.name,
                "mount": os.path.normpath(grant.mount.mount),
                "policy": grant.mount.update_policy,
                "key": grant.key.hex(),
                "expected_tag": grant.tag,
                "generation": grant.generation,
                "token": token,
            }
        )
    doc["volumes"] = entries
    return json.dumps(doc, separators=(",", ":")).encode()


# --- commits ------------------------------------------------------------------------------------------


def _check_tags(old_tag: str, new_tag: str) -> None:
    if not _TAG.match(new_tag) or not (old_tag == "" or _TAG.match(old_tag)):
        raise CasServiceError(
            "a volume tag is 64 lowercase hex digits (the old tag is empty for a new volume)",
            "send the tags the volume library reports",
            code="malformed_tag",
        )
    if old_tag == new_tag:
        raise CasServiceError("the new tag equals the old one", "commit only changed states", code="malformed_tag")


def _refusal(
    session: str,
    volume: str,
    old: str,
    state: repo.VolumeState,
    old_generation: Optional[int],
    base_generation: Optional[int],
) -> TagRefused:
    """Why a swap from `old` failed: a lost race, an older copy from the host, or an unrecorded state."""
    where = f"volume {volume!r} of session {session!r}"
    latest = f"the CAS's latest tag is {state.tag} (commit {state.generation})"
    if not state.tag:
        return TagRefused(
            "not_recorded",
            f"the CAS has no recorded state of {where}, but this state is based on tag {old[:16]}...: "
            "the volume was made without the CAS",
            "create the volume through the CAS (`citadel volume create --config-id ...`) or let the engine create it",
            state.tag,
            state.generation,
        )
    if old_generation is not None and (base_generation is None or old_generation >= base_generation):
        return TagRefused(
            "committed_elsewhere",
            f"{where} was committed by another engine since this one opened it: {latest}",
            "these changes were not recorded; run again on the volume's latest state",
            state.tag,
            state.generation,
        )
    return TagRefused(
        "rollback",
        f"the host restored an older copy of {where}: this state is based on tag "
        f"{old[:16] + '...' if old else '(none: a new volume)'}, but {latest}",
        "give the engine the volume directory's latest copy; Citadel refuses older states",
        state.tag,
        state.generation,
    )


def _commit(
    ctx: CasContext,
    session: str,
    volume: str,
    instance: Optional[str],
    old: str,
    new: str,
    base_generation: Optional[int],
    actor: str,
    details: Dict[str, Any],
) -> CommitResult:
    """The compare-and-swap and its audit entry, in one transaction; raises the refusal after it."""
    subject = f"{session}:{volume}"
    details = dict(details, old_tag=old, new_tag=new)
    refusal: CasServiceError
    with ctx.sessions.begin() as db:
        state = repo.volume_state(db, session, volume)
        if state is None or (instance is not None and state.instance != instance):
            refusal = Forbidden(
                f"volume {volume!r} of session {session!r} is not the one this capability was released for "
                "(the session was deleted or re-created since)",
                "attest again to receive the volume's current capability",
                code="stale_capability" if instance is not None else "unknown_volume",
            )
        else:
            now = ctx.clock()
            generation = repo.swap_volume_tag(db, session, volume, state.instance, old, new, now)
            if generation is not None:
                repo.record_volume_tag(db, session, volume, generation, new, actor, now)
                _audit(ctx, db, "volume.commit", actor, subject, None, dict(details, generation=generation))
                return CommitResult(new, generation, False)
            state = repo.volume_state(db, session, volume) or state
            if state.tag == new:  # the same commit again (a retried request): it is recorded
                _audit(
                    ctx,
                    db,
                    "volume.commit",
                    actor,
                    subject,
                    None,
                    dict(details, generation=state.generation),
                    reason="repeated",
                )
                return CommitResult(new, state.generation, True)
            old_generation = 0 if old == "" else repo.volume_tag_generation(db, session, volume, old)
            refusal = _refusal(session, volume, old, state, old_generation, base_generation)
        _audit(ctx, db, "volume.commit", actor, subject, refusal, details)
    raise refusal


def _split(config_id: str) -> Tuple[str, str]:
    parts = config_id.split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        raise CasServiceError(
            f"config id {config_id[:80]!r} is not SESSION/SERVICE",
            "send the engine's config id",
            code="malformed_request",
        )
    return parts[0], parts[1]


def _current_policy(ctx: CasContext, session: str) -> Tuple[Any, Policy, Dict[str, Any]]:
    with ctx.readers() as db:
        row = repo.get_session(db, session)
        if row is None:
            raise NotFound(f"session {session!r} does not exist", "check the session's name (and the CAS)")
        policy, stored = sessions.decrypt(ctx, row.name, row.hash, row.body)
    return row, policy, stored


def _mount_of(policy: Policy, session: str, volume: str, service: Optional[str]) -> rules.Mount:
    if volume not in policy.volumes:
        raise NotFound(
            f"session {session!r} has no volume {volume!r}",
            f"use one of: {', '.join(sorted(policy.volumes)) or '(none)'}",
        )
    if service is None:
        spec = policy.volumes[volume]
        return rules.Mount(volume, str(spec.get("path") or ""), rules.update_policy(spec), rules.key_secret(spec))
    svc = policy.services.get(service)
    found = [m for m in rules.mounts(policy.volumes, svc.volumes) if m.name == volume] if svc else []
    if not found:
        raise Forbidden(
            f"service {service!r} of session {session!r} does not mount volume {volume!r}",
            "the session's policy decides which services mount which volumes",
            code="not_mounted",
        )
    return found[0]


def _protected(mount: rules.Mount, session: str) -> None:
    if not mount.rollback_protected:
        raise Conflict(
            f"volume {mount.name!r} of session {session!r} is ephemeral: the CAS records no tag for it",
            "commit it locally (no tag store), or make it rollback-protected in the policy",
            code="ephemeral",
        )


def commit_by_engine(ctx: CasContext, config_id: str, volume: str, old: str, new: str, token: str) -> CommitResult:
    """An engine's commit, authorized by the capability its release carried."""
    actor = "engine@unknown"
    details: Dict[str, Any] = {"volume": volume, "config_id": config_id[:300]}
    try:
        session, service = _split(config_id)
        cap = tokens.verify(ctx.keyring, token, config_id, volume)
        actor = f"engine@{cap.platform}"
        details.update(attestation=cap.attestation, released_generation=cap.generation)
        _check_tags(old, new)
        _, policy, _ = _current_policy(ctx, session)
        _protected(_mount_of(policy, session, volume, service), session)
    except CasServiceError as exc:
        _refused(
            ctx,
            "volume.commit",
            actor,
            f"{config_id.split('/')[0][:128]}:{volume[:128]}",
            exc,
            dict(details, old_tag=old[:64], new_tag=new[:64]),
        )
        raise
    return _commit(ctx, session, volume, cap.instance, old, new, cap.generation, actor, details)


def state_for_engine(ctx: CasContext, config_id: str, volume: str, token: str) -> Tuple[Optional[str], int]:
    """(latest tag or None, commits recorded) for the engine holding the capability."""
    session, _ = _split(config_id)
    cap = tokens.verify(ctx.keyring, token, config_id, volume)
    with ctx.read_engine.connect() as conn:
        state = repo.volume_state(conn, session, volume)
    if state is None or state.instance != cap.instance:
        raise Forbidden(
            f"volume {volume!r} of session {session!r} is not the one this capability was released for",
            "attest again",
            code="stale_capability",
        )
    return state.tag or None, state.generation


# --- owners -------------------------------------------------------------------------------------------


def _refused(
    ctx: CasContext, event: str, actor: str, subject: str, exc: CasServiceError, details: Dict[str, Any]
) -> None:
    with ctx.sessions.begin() as db:
        _audit(ctx, db, event, actor, subject, exc, details)


def _owner_policy(ctx: CasContext, caller: str, session: str, access: str) -> Tuple[Policy, Dict[str, Any]]:
    row, policy, stored = _current_policy(ctx, session)
    if not sessions.allowed(repo.access_of(row)[access], caller, row.creator):
        raise Forbidden(
            f"{caller[:24]}... may not {access} session {row.name!r}",
            f"ask its owner to add your identity to access_policy.{access}",
        )
    return policy, stored


def owner_grant(
    ctx: CasContext, caller: str, session: str, volume: str, access: str, service: Optional[str] = None
) -> Grant:
    """A volume's key and latest tag for an owner: `read` access to look, `update` access to change it."""
    subject, details = f"{session}:{volume}", {"volume": volume, "access": access, "service": service}
    try:
        policy, stored = _owner_policy(ctx, caller, session, access)
        grant = _grants(ctx, session, [_mount_of(policy, session, volume, service)], stored)[0]
    except CasServiceError as exc:
        _refused(ctx, "volume.key", caller, subject, exc, details)
        raise
    with ctx.sessions.begin() as db:
        _audit(ctx, db, "volume.key", caller, subject, None, dict(details, tag=grant.tag, generation=grant.generation))
    return grant


def commit_by_owner(
    ctx: CasContext, caller: str, session: str, volume: str, old: str, new: str, base_generation: Optional[int]
) -> CommitResult:
    """An owner's commit (`citadel volume create|import --cas`): update access on the session."""
    subject, details = f"{session}:{volume}", {"volume": volume, "by": "owner"}
    try:
        policy, _ = _owner_policy(ctx, caller, session, "update")
        _check_tags(old, new)
        _protected(_mount_of(policy, session, volume, None), session)
    except CasServiceError as exc:
        _refused(ctx, "volume.commit", caller, subject, exc, dict(details, old_tag=old[:64], new_tag=new[:64]))
        raise
    return _commit(ctx, session, volume, None, old, new, base_generation, caller, details)

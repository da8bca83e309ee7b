"""Attestation: check a nonce, verify evidence, check its binding, evaluate the policy, release.

The release is the service's configuration (policy/render.py) encrypted to the engine's
ephemeral key (attest/binding.py). Every outcome, allowed or refused, is audited through the
writer before the answer is sent; a refusal names its reason (docs/attestation-protocol.md).

The path is kept short because it is the CAS's hot path: one connection for the two reads it
needs (the session's current hash, the sim platform's key), the decrypted policy and the rendered
release cached per session version (a new version has a new hash), and the commit batched with
other requests' (writer.py).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from citadel.attest import binding
from citadel.cas import nonces
from citadel.cas.audit import AuditRecord, now_text
from citadel.cas.errors import Refused
from citadel.cas.policy.evaluate import evaluate
from citadel.cas.policy.render import render_release
from citadel.cas.services import sessions, volumes
from citadel.cas.services.context import CasContext
from citadel.cas.services.writer import REPLAY_REASON, Pending
from citadel.cas.storage import repo
from citadel.errors import VerificationError

log = logging.getLogger("citadel.cas.attest")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class AttestRequest:
    """One attestation request as it came over the wire (binary fields in base64)."""

    config_id: str
    kind: str
    nonce_b64: str
    public_key_b64: str
    evidence_b64: str
    collateral: Optional[Mapping[str, Any]] = None


@dataclass
class _Attempt:
    """What one request established on its way; becomes the audit record."""

    started: float
    facts: Dict[str, Any]
    pending: Pending
    sealed: Optional[bytes]
    refusal: Optional[Refused]


def issue_nonce(ctx: CasContext) -> Tuple[bytes, float]:
    return nonces.issue(ctx.keyring, ctx.clock()), ctx.settings.nonce_ttl


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("malformed_request", f"{what} is not base64", "send standard padded base64") from None


def _split_config_id(config_id: str) -> Tuple[str, str]:
    parts = config_id.split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        raise Refused(
            "malformed_request",
            f"config id {config_id[:80]!r} is not SESSION/SERVICE",
            "set CITADEL_CONFIG_ID=session/service",
        )
    return parts[0], parts[1]


def _release(ctx: CasContext, name: str, digest: str, body: Optional[bytes], service: str, config_id: str) -> bytes:
    key = (name, digest, service)
    cached = ctx.release_cache.get(key)
    if cached is None:
        policy, stored = sessions.decrypt(ctx, name, digest, body)
        doc = render_release(policy, stored, service, config_id=config_id, session_hash=digest)
        cached = json.dumps(doc, separators=(",", ":")).encode()
        if len(ctx.release_cache) > 1024:
            ctx.release_cache.clear()
        ctx.release_cache[key] = cached
    return cached


def _check(ctx: CasContext, req: AttestRequest, nonce: bytes, now: float, facts: Dict[str, Any]) -> bytes:
    """Everything before the commit; returns the sealed release or raises Refused."""
    session_name, service_name = _split_config_id(req.config_id)
    public_key = _b64(req.public_key_b64, "public_key")
    evidence = _b64(req.evidence_b64, "evidence")
    if len(public_key) != binding.PUBLIC_KEY_SIZE:
        raise Refused(
            "malformed_request",
            "the public key is not a raw X25519 key of 32 bytes",
            "send the engine's ephemeral X25519 public key",
        )
    with ctx.read_engine.connect() as conn:
        ev, platform_name = ctx.verifiers.verify(
            req.kind,
            evidence,
            at=dt.datetime.fromtimestamp(now, dt.timezone.utc),
            db=conn,
            request_collateral=req.collateral,
        )
        digest = repo.session_hash(conn, session_name)
        cached = digest is not None and (session_name, digest) in ctx.policy_cache
        body = repo.session_body(conn, session_name, digest) if digest is not None and not cached else None
    facts.update(
        {
            "platform": platform_name or ev.platform,
            "measurements": dict(ev.measurements),
            "debug": ev.debug,
            "tcb": ev.tcb_status,
        }
    )
    if ev.advisory_ids:
        facts["advisories"] = list(ev.advisory_ids)
    try:
        binding.verify_report_data(ev.report_data, nonce, public_key)
    except VerificationError as exc:
        raise Refused("binding_mismatch", exc.cause, exc.remedy) from None
    if digest is None:
        raise Refused(
            "unknown_session",
            f"session {session_name!r} does not exist on this CAS",
            "check CITADEL_CONFIG_ID, and that the session was created on this CAS",
        )
    policy, _ = sessions.decrypt(ctx, session_name, digest, body)
    service = policy.services.get(service_name)
    if service is None:
        raise Refused(
            "unknown_service",
            f"session {session_name!r} has no service {service_name!r}",
            f"use one of: {', '.join(sorted(policy.services)) or '(none)'}",
        )
    facts["session_hash"] = digest
    evaluate(service.attestation, ev, platform_name)
    plaintext = _release(ctx, session_name, digest, body, service_name, req.config_id)
    if service.volumes:  # keys, latest tags and commit capabilities: per release, never cached
        plaintext = volumes.add_to_release(
            ctx, plaintext, session_name, digest, body, service_name, nonce, str(facts["platform"])
        )
    return binding.seal(public_key, plaintext, context=binding.release_context(nonce, req.config_id))


def _begin(ctx: CasContext, req: AttestRequest) -> _Attempt:
    started = time.perf_counter()
    now = ctx.clock()
    facts: Dict[str, Any] = {"config_id": req.config_id[:300], "kind": req.kind[:16]}
    digest: Optional[str] = None
    sealed: Optional[bytes] = None
    refusal: Optional[Refused] = None
    nonce = b""
    try:
        nonce = _b64(req.nonce_b64, "nonce")
        digest = nonces.check(ctx.keyring, nonce, now, ctx.settings.nonce_ttl)
        sealed = _check(ctx, req, nonce, now, facts)
    except Refused as exc:
        refusal = exc
        facts["cause"] = exc.cause
    record = AuditRecord(
        0,
        now_text(),
        "attest",
        f"engine@{facts.get('platform', 'unknown')}",
        req.config_id[:300],
        "refused" if refusal else "allowed",
        refusal.code if refusal else "",
        facts,
    )
    expires = nonces.expires_at(nonce, ctx.settings.nonce_ttl) if digest else 0.0
    return _Attempt(started, facts, Pending(record, digest, expires), sealed, refusal)


def _finish(ctx: CasContext, attempt: _Attempt, written: AuditRecord) -> bytes:
    refusal = attempt.refusal
    if written.reason == REPLAY_REASON and refusal is None:
        refusal = Refused(
            REPLAY_REASON,
            "the nonce was already used (a replayed request)",
            "fetch a fresh nonce for every attestation",
        )
    kind = attempt.facts["kind"]
    ctx.metrics.attestations.labels(kind, written.outcome, written.reason).inc()
    ctx.metrics.attestation_seconds.observe(time.perf_counter() - attempt.started)
    ctx.metrics.audit_head.set(written.seq)
    if log.isEnabledFor(logging.INFO):
        fields = {
            "config_id": written.subject,
            "kind": kind,
            "outcome": written.outcome,
            "reason": written.reason,
            "audit_seq": written.seq,
        }
        log.info("attestation", extra={"fields": fields})
    if refusal is not None:
        raise refusal
    assert attempt.sealed is not None
    return attempt.sealed


def attest(ctx: CasContext, req: AttestRequest) -> bytes:
    """The sealed release for an acceptable request; Refused (audited) otherwise. Blocking."""
    attempt = _begin(ctx, req)
    return _finish(ctx, attempt, ctx.writer.commit([attempt.pending])[0])


async def attest_async(ctx: CasContext, req: AttestRequest) -> bytes:
    """`attest` for the event loop: the audit commit is awaited, not waited for in a thread."""
    attempt = _begin(ctx, req)
    written = await ctx.writer.submit(attempt.pending)
    return _finish(ctx, attempt, written)

"""The audit log's hash chain: how an entry is hashed, how the chain is checked.

Every session change and every attestation (allowed or refused, with its reason) becomes one
entry. Entry n's hash is SHA-256( prev_hash(32 raw bytes) || canonical JSON of entry n ), with 32
zero bytes before the first entry; canonical JSON is `json.dumps(doc, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)` in UTF-8 over the fields of `AuditRecord`. The head
(last seq and hash) is stored with an HMAC under a key derived from the master key, so someone who
can write the database but does not hold the master key cannot rewrite or cut the chain unnoticed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Tuple

from citadel.cas.envelope import Keyring
from citadel.errors import CitadelError

GENESIS = "0" * 64


class AuditChainBroken(CitadelError):
    """The audit log was changed: an entry's hash, its link, or the head does not match."""

    exit_code = 3

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(
            f"audit log broken at entry {seq}: {detail}",
            "the database was changed outside the CAS; restore it from a backup and "
            "compare with the last head you recorded",
        )
        self.seq = seq


@dataclass(frozen=True)
class AuditRecord:
    """One audited event. Never holds a secret value."""

    seq: int
    at: str  # RFC 3339 UTC with microseconds
    event: str  # session.create, session.update, session.delete, platform.add, platform.remove, attest, ...
    actor: str  # a client identity, or "engine@<platform>" for an attestation
    subject: str  # session name, config id, platform name
    outcome: str  # "allowed" or "refused" (attest), "done" (changes)
    reason: str = ""  # refusal code, or "" when allowed
    details: Dict[str, Any] = field(default_factory=dict)


def now_text(at: Optional[dt.datetime] = None) -> str:
    moment = at or dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_doc(record: AuditRecord) -> Dict[str, Any]:
    """The fields that are hashed (the same as dataclasses.asdict, without its deep copy)."""
    return {
        "seq": record.seq,
        "at": record.at,
        "event": record.event,
        "actor": record.actor,
        "subject": record.subject,
        "outcome": record.outcome,
        "reason": record.reason,
        "details": record.details,
    }


def entry_hash(prev_hash: str, record: AuditRecord) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(record_doc(record))).hexdigest()


def head_mac(keyring: Keyring, seq: int, head_hash: str) -> str:
    return keyring.mac("audit-head", struct.pack(">Q", seq) + bytes.fromhex(head_hash)).hex()


@dataclass(frozen=True)
class ChainSummary:
    entries: int
    head_seq: int
    head_hash: str
    head_authenticated: bool


def verify_chain(
    entries: Iterable[Tuple[AuditRecord, str, str]],
    head: Optional[Tuple[int, str, str]],
    keyring: Optional[Keyring],
) -> ChainSummary:
    """Check (record, stored prev_hash, stored hash) in seq order, then the head and its MAC.

    Raises AuditChainBroken at the first defect. Without a keyring the head MAC is not checked
    (the summary says so).
    """
    prev, expected_seq, count = GENESIS, 1, 0
    for record, stored_prev, stored_hash in entries:
        if record.seq != expected_seq:
            raise AuditChainBroken(expected_seq, f"entry missing (next stored entry is {record.seq})")
        if not hmac.compare_digest(stored_prev, prev):
            raise AuditChainBroken(record.seq, "its link to the previous entry does not match")
        computed = entry_hash(prev, record)
        if not hmac.compare_digest(computed, stored_hash):
            raise AuditChainBroken(record.seq, "its content does not match its hash")
        prev, expected_seq, count = computed, expected_seq + 1, count + 1
    head_seq, head_hash, mac = head if head is not None else (0, GENESIS, "")
    if head_seq != count or not hmac.compare_digest(head_hash, prev):
        raise AuditChainBroken(
            count + 1 if head_seq > count else head_seq,
            f"the head says {head_seq} entries, the log has {count}",
        )
    authenticated = False
    if keyring is not None and count:
        if not hmac.compare_digest(mac, head_mac(keyring, head_seq, head_hash)):
            raise AuditChainBroken(head_seq, "the head's MAC does not verify under this master key")
        authenticated = True
    return ChainSummary(count, head_seq, prev, authenticated)

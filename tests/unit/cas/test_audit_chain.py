"""The audit hash chain and its head MAC (cas/audit.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from citadel.cas.audit import GENESIS, AuditChainBroken, AuditRecord, entry_hash, head_mac, verify_chain
from citadel.cas.envelope import Keyring

KEYRING = Keyring(b"a" * 32)


def _chain(n: int):
    entries, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = AuditRecord(
            seq, f"2025-01-01T00:00:0{seq}Z", "attest", "engine@p", "s/a", "allowed", "", {"kind": "sim", "n": seq}
        )
        digest = entry_hash(prev, record)
        entries.append((record, prev, digest))
        prev = digest
    return entries, (n, prev, head_mac(KEYRING, n, prev))


def test_intact_chain_verifies_with_and_without_the_key() -> None:
    entries, head = _chain(4)
    summary = verify_chain(entries, head, KEYRING)
    assert (summary.entries, summary.head_authenticated) == (4, True)
    assert verify_chain(entries, head, None).head_authenticated is False
    assert verify_chain([], None, KEYRING).entries == 0


@pytest.mark.parametrize(
    "defect",
    [
        "changed_detail",
        "changed_outcome",
        "deleted_entry",
        "reordered_entries",
        "cut_tail",
        "forged_head_mac",
        "rewritten_chain_without_key",
    ],
)
def test_tampering_is_detected(defect: str) -> None:
    entries, head = _chain(4)
    if defect == "changed_detail":
        record, prev, digest = entries[1]
        entries[1] = (replace(record, details={"kind": "sgx"}), prev, digest)
    elif defect == "changed_outcome":
        record, prev, digest = entries[2]
        entries[2] = (replace(record, outcome="refused"), prev, digest)
    elif defect == "deleted_entry":
        del entries[1]
    elif defect == "reordered_entries":
        entries[1], entries[2] = entries[2], entries[1]
    elif defect == "cut_tail":
        entries = entries[:3]
    elif defect == "forged_head_mac":
        head = (head[0], head[1], "00" * 32)
    else:  # someone without the master key recomputes every hash after changing an entry
        prev, rebuilt = GENESIS, []
        for record, _, _ in entries:
            record = replace(record, outcome="refused") if record.seq == 2 else record
            digest = entry_hash(prev, record)
            rebuilt.append((record, prev, digest))
            prev = digest
        entries, head = rebuilt, (head[0], prev, head[2])
    with pytest.raises(AuditChainBroken):
        verify_chain(entries, head, KEYRING)

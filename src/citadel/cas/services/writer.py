"""Group commit of attestation outcomes: nonce consumption and audit entries, many per transaction.

Every attestation must be audited (and its nonce marked used) durably before its answer leaves
the CAS. One transaction per request would make the database's commit latency, and the fixed
cost of a transaction, the ceiling of the whole service. Instead, requests on the event loop hand
their outcome to `AuditWriter.submit`; while one commit runs (in a single worker thread, off the
loop), the outcomes that arrive are collected and written together by the next one. A replayed
nonce found at commit time turns its outcome into a refusal before anything is answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from citadel.cas.audit import AuditRecord
from citadel.cas.envelope import Keyring
from citadel.cas.errors import StateError
from citadel.cas.storage import repo

log = logging.getLogger("citadel.cas.writer")
PURGE_EVERY = 30.0
REPLAY_REASON = "replayed_nonce"


@dataclass
class Pending:
    """One attestation's outcome, and the nonce it used (None if the nonce was not ours)."""

    record: AuditRecord
    nonce_digest: Optional[str] = None
    nonce_expires: float = 0.0


class AuditWriter:
    def __init__(self, engine: Engine, keyring: Keyring, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._keyring = keyring
        self._clock = clock
        self._lock = threading.Lock()  # one transaction of this writer at a time: it owns `_head`
        self._head: Optional[Tuple[int, str]] = None  # the head as this writer last wrote it
        self._last_purge = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="citadel-audit")
        self._waiting: List[Tuple[Pending, asyncio.Future]] = []
        self._flushing = False
        self.closed = False
        self.batches = 0

    def close(self) -> None:
        self.closed = True
        self._executor.shutdown(wait=True)

    def commit(self, batch: List[Pending]) -> List[AuditRecord]:
        """Write a batch in one transaction (blocking); return the records as written, in order."""
        if self.closed:
            raise StateError("the CAS is shutting down", "retry against another replica or after the restart")
        with self._lock:
            try:
                with self._engine.begin() as db:
                    records = self._outcomes(db, batch)
                    written, head = repo.append_audit(db, self._keyring, records, self._head)
                    now = self._clock()
                    if now - self._last_purge > PURGE_EVERY:
                        repo.purge_nonces(db, now)
                        self._last_purge = now
            except SQLAlchemyError as exc:
                self._head = None
                log.error("audit commit failed", extra={"fields": {"error": type(exc).__name__, "batch": len(batch)}})
                raise StateError(
                    "the CAS could not record this attestation", "retry; if it persists, check the database"
                ) from None
            self._head = head
            self.batches += 1
            return written

    async def submit(self, pending: Pending) -> AuditRecord:
        """Queue one outcome on the running loop; returns once it is committed (batched with others)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._waiting.append((pending, future))
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush(loop))
        return await future

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    written = await loop.run_in_executor(self._executor, self.commit, [p for p, _ in batch])
                except StateError as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), record in zip(batch, written):
                    if not future.done():
                        future.set_result(record)
        finally:
            self._flushing = False

    def _outcomes(self, db: Connection, batch: List[Pending]) -> List[AuditRecord]:
        fresh = repo.consume_nonces(db, [(p.nonce_digest, p.nonce_expires) for p in batch if p.nonce_digest])
        records, seen = [], set()
        for item in batch:
            record = item.record
            replay = item.nonce_digest is not None and (item.nonce_digest not in fresh or item.nonce_digest in seen)
            if item.nonce_digest is not None:
                seen.add(item.nonce_digest)
            if replay and record.outcome == "allowed":
                record = replace(record, outcome="refused", reason=REPLAY_REASON)
            records.append(record)
        return records

"""Everything a request needs, built once at start: database, keys, writer, verifiers, metrics."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from citadel.cas import envelope
from citadel.cas.audit import AuditRecord, head_mac, now_text
from citadel.cas.envelope import Keyring
from citadel.cas.errors import StateError
from citadel.cas.metrics import Metrics
from citadel.cas.policy.model import Policy
from citadel.cas.services.verifiers import VerifierFactory
from citadel.cas.services.writer import AuditWriter
from citadel.cas.settings import CasSettings
from citadel.cas.storage import db as dbmod
from citadel.cas.storage import repo


@dataclass
class CasContext:
    settings: CasSettings
    engine: Engine
    sessions: sessionmaker[Session]  # read-write transactions
    readers: sessionmaker[Session]  # read-only transactions (no write lock on SQLite)
    read_engine: Engine  # the same, for Core statements on the attestation path
    keyring: Keyring
    writer: AuditWriter
    metrics: Metrics
    verifiers: VerifierFactory
    clock: Callable[[], float] = time.time
    # (session name, hash) -> decrypted policy and secrets; a new hash is a new entry
    policy_cache: Dict[Tuple[str, str], Tuple[Policy, dict]] = field(default_factory=dict)
    # (session name, hash, service) -> the release document's bytes (deterministic per session version)
    release_cache: Dict[Tuple[str, str, str], bytes] = field(default_factory=dict)

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()


def build_context(settings: CasSettings) -> CasContext:
    """Open (or make) the state directory, the master key and the database; start the writer."""
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_key = settings.master_key_file is None
    keyring = Keyring(envelope.load_master_key(settings.master_key_path, create=create_key))
    engine = dbmod.make_engine(settings.database_url)
    dbmod.migrate(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions.begin() as db:
        seq, digest, mac = repo.read_head(db)
        if seq and not hmac.compare_digest(mac, head_mac(keyring, seq, digest)):
            raise StateError(
                "this database was made with another master key (the audit head does not verify)",
                "start the CAS with the master key file that belongs to this database",
            )
        added = [op for op in settings.operators if repo.add_operator(db, op, time.time())]
        if added:
            repo.append_audit(
                db, keyring, [AuditRecord(0, now_text(), "operator.add", "cas", op, "done") for op in added]
            )
    writer = AuditWriter(engine, keyring)
    return CasContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        readers=sessionmaker(dbmod.reader(engine), expire_on_commit=False),
        read_engine=dbmod.reader(engine),
        keyring=keyring,
        writer=writer,
        metrics=Metrics(),
        verifiers=VerifierFactory(settings.trust, settings.collateral),
    )

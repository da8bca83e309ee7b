"""Reading and checking the audit log (the API's /v1/audit and `citadel cas audit verify`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from citadel.cas import envelope
from citadel.cas.audit import AuditRecord, ChainSummary, verify_chain
from citadel.cas.envelope import Keyring
from citadel.cas.errors import StateError
from citadel.cas.services.context import CasContext
from citadel.cas.services.platforms import require_operator
from citadel.cas.storage import db as dbmod
from citadel.cas.storage import repo


def page(ctx: CasContext, caller: str, after: int, limit: int) -> Tuple[List[Tuple[AuditRecord, str]], int, str]:
    """Entries after `after` (operators only): ([(record, hash)], head seq, head hash)."""
    require_operator(ctx, caller)
    with ctx.readers() as db:
        seq, head_hash, _ = repo.read_head(db)
        entries = [(record, digest) for record, _, digest in repo.iter_audit(db, after, limit)]
        return entries, seq, head_hash


def verify(db: Session, keyring: Optional[Keyring]) -> ChainSummary:
    return verify_chain(repo.iter_audit(db), repo.read_head(db), keyring)


def verify_database(url: str, master_key: Optional[Path]) -> ChainSummary:
    """Check the whole chain of the database at `url` (and the head's MAC if the key is given)."""
    keyring = Keyring(envelope.load_master_key(master_key, create=False)) if master_key else None
    engine = dbmod.make_engine(url, pool_size=1)
    try:
        with Session(engine) as db:
            return verify(db, keyring)
    except SQLAlchemyError as exc:
        raise StateError(
            f"cannot read the audit log: {str(exc).splitlines()[0]}",
            "check --db-url / --state-dir: it must be a CAS database",
        ) from None
    finally:
        engine.dispose()

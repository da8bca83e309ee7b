"""The CAS's tables. Secrets and policies live only inside `sessions.body`, encrypted (envelope.py).

Kept apart from the API schemas (routers/schemas.py), as in the FastAPI full-stack template.
Changing a table means a new Alembic revision in citadel/cas/migrations/versions/.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SessionRow(Base):
    __tablename__ = "sessions"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))  # keyed hash of the normalized policy (predecessor)
    creator: Mapped[str] = mapped_column(String(80))
    access: Mapped[str] = mapped_column(Text)  # JSON {read, update, delete}: identities, not secret
    body: Mapped[bytes] = mapped_column(LargeBinary)  # envelope(JSON {policy, secrets})
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class PlatformRow(Base):
    __tablename__ = "platforms"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "sim"
    public_key: Mapped[str] = mapped_column(String(128))  # hex, raw Ed25519
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    added_by: Mapped[str] = mapped_column(String(80))
    added_at: Mapped[float] = mapped_column(Float)


class OperatorRow(Base):
    __tablename__ = "operators"

    identity: Mapped[str] = mapped_column(String(80), primary_key=True)
    added_at: Mapped[float] = mapped_column(Float)


class UsedNonce(Base):
    __tablename__ = "used_nonces"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the nonce
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(160))
    subject: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: the row writers lock
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))

"""The CAS's tables. Secrets and policies live only inside `sessions.body`, and CAS-made volume keys
inside `volumes.key`, encrypted (envelope.py).

Kept apart from the API schemas (routers/schemas.py), as in the FastAPI full-stack template.
Changing a table means a new Alembic revision in citadel/cas/migrations/versions/.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
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
    kind: Mapped[str] = mapped_column(String(16))  # "sim" or "tpm"
    public_key: Mapped[str] = mapped_column(String(128))  # sim: hex, raw Ed25519; tpm: ""
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # sim: SHA-256(key); tpm: SHA-256(AK SPKI)
    public_pem: Mapped[Optional[str]] = mapped_column(Text, nullable=True)  # tpm: the AK, PEM SubjectPublicKeyInfo
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


class VolumeRow(Base):
    """A volume's state: its key (CAS-made, envelope-encrypted; NULL when the policy imports it) and
    the latest tag the CAS recorded. Deleted with its session (a session re-created under the same
    name starts with new volumes: a new `instance`, and never an old key)."""

    __tablename__ = "volumes"

    session: Mapped[str] = mapped_column(String(128), ForeignKey("sessions.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    instance: Mapped[str] = mapped_column(String(32))  # random hex, made with the row: capabilities name it
    key: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)  # envelope(32-byte key)
    tag: Mapped[str] = mapped_column(String(64))  # "" until the first commit
    generation: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))  # commits recorded
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class VolumeTagRow(Base):
    """Every tag the CAS recorded for a volume (tells a lost race from a restored older copy)."""

    __tablename__ = "volume_tags"
    __table_args__ = (
        ForeignKeyConstraint(["session", "volume"], ["volumes.session", "volumes.name"], ondelete="CASCADE"),
        Index("ix_volume_tags_tag", "session", "volume", "tag"),
    )

    session: Mapped[str] = mapped_column(String(128), primary_key=True)
    volume: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    tag: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(160))
    at: Mapped[float] = mapped_column(Float)

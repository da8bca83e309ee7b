"""Volumes: each volume's key (envelope-encrypted) and latest tag, and the history of its tags.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("session", sa.String(128), sa.ForeignKey("sessions.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("generation", _SEQ, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "volume_tags",
        sa.Column("session", sa.String(128), primary_key=True),
        sa.Column("volume", sa.String(128), primary_key=True),
        sa.Column("generation", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["session", "volume"], ["volumes.session", "volumes.name"], ondelete="CASCADE"),
    )
    op.create_index("ix_volume_tags_tag", "volume_tags", ["session", "volume", "tag"])


def downgrade() -> None:
    op.drop_index("ix_volume_tags_tag", table_name="volume_tags")
    op.drop_table("volume_tags")
    op.drop_table("volumes")

"""Platforms of kind tpm: a registered TPM's attestation key (PEM) beside the sim platforms' keys.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("platforms") as batch:
        batch.add_column(sa.Column("public_pem", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("platforms") as batch:
        batch.drop_column("public_pem")

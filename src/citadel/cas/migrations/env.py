"""Alembic environment: runs on the connection citadel.cas.storage.db.migrate hands over."""

from __future__ import annotations

from alembic import context

from citadel.cas.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `citadel cas migrate` (citadel.cas.storage.db.migrate)")
if connection.dialect.name == "postgresql":
    # one replica migrates at a time; the others wait, then find the schema at head
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7270010)")
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite"
)
with context.begin_transaction():
    context.run_migrations()

"""Database engines and migrations: SQLite in the state directory by default, PostgreSQL by URL.

SQLite runs in WAL mode with `synchronous=FULL` (a committed attestation survives a power cut) and
every write transaction starts with BEGIN IMMEDIATE, so read-then-write sequences (the audit chain, a
conditional update) never deadlock between threads or processes. PostgreSQL writers serialize on
the audit head row (SELECT ... FOR UPDATE). Migrations are Alembic revisions shipped in the
package; `migrate` runs them under a lock so several replicas can start at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from citadel.cas.errors import StateError

READ_ONLY = "citadel_read_only"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver the cas extra installs)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'cas.db'}"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise StateError(
            f"{url!r} is not a database URL", "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise StateError(f"database {parsed.get_backend_name()!r} is not supported", "use SQLite or PostgreSQL")
    return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE instead
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    if not conn.get_execution_options().get(READ_ONLY, False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def reader(engine: Engine) -> Engine:
    """The same engine for reads: autocommit, each statement on its own (no write lock, no BEGIN).

    The attestation path's two reads (a session's hash, a platform's key) need no common snapshot.
    """
    return engine.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe from several replicas at once)."""
    cfg = _config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StateError(
            f"cannot migrate the database: {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
            "check the database URL, that the server is running and the user may create tables",
        ) from None


def at_head(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head

"""The database the web services share (users and logins, annotation, knowledge): SQLite (the embedded default, WAL
mode) or PostgreSQL (``postgresql://...``), and the Alembic migrations (:mod:`assay.platform.migrations`) that create
and upgrade its schema.

SQLite serialises writers. A transaction that reads first and writes later can fail with "database is locked"
without waiting when another process committed in between, so every write transaction here starts with
``BEGIN IMMEDIATE`` (it takes the write lock up front and waits for it under ``busy_timeout``); read-only requests
use a separate engine with plain deferred transactions and never block writers (WAL). ``synchronous=NORMAL`` in WAL
mode loses nothing when the server process is killed (committed pages are in the WAL file); only a power cut can
roll back the last transactions. Use ``--sqlite-sync full`` for that guarantee.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DB = "assay-annotate.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def normalize_url(url: str | None) -> str:
    """A SQLAlchemy URL from what a user types: a file path means SQLite, ``postgresql://`` means psycopg 3."""
    url = url or os.environ.get("ASSAY_ANNOTATE_DB") or DEFAULT_DB
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def _sqlite_engine(url: str, immediate: bool, synchronous: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           pool_size=20, max_overflow=20, pool_pre_ping=False)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own handling is broken for this)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class SchemaError(RuntimeError):
    """The database schema cannot be used by this version of Assay."""


class Database:
    """Engines and sessions for one database URL. ``write()`` and ``read()`` are context managers giving a session
    that commits (write) or rolls back (read) at the end."""

    def __init__(self, url: str | None = None, *, sqlite_sync: str = "NORMAL", pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            if sqlite_sync.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
                raise ValueError(f"bad sqlite synchronous mode {sqlite_sync!r}")
            self.write_engine = _sqlite_engine(self.url, True, sqlite_sync.upper())
            self.read_engine = _sqlite_engine(self.url, False, sqlite_sync.upper())
        else:
            self.write_engine = create_engine(self.url, pool_size=pool_size, max_overflow=2 * pool_size,
                                              pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        with self._write() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        # closing (not rolling back) ends the transaction and keeps loaded objects readable after the block
        with self._read() as s:
            yield s

    def migrate(self, revision: str = "head") -> None:
        """Create or upgrade the schema to ``revision`` with Alembic."""
        upgrade(self.write_engine, revision)

    def ensure_schema(self) -> bool:
        """Bring a fresh or older database up to this version's schema (nothing to do when it is current); True
        when it migrated. Raises :class:`SchemaError` for a database made by a newer Assay."""
        from alembic.script import ScriptDirectory

        scripts = ScriptDirectory.from_config(alembic_config(self.write_engine))
        current = current_revision(self.write_engine)
        if current in scripts.get_heads():
            return False
        if current is not None and current not in {r.revision for r in scripts.walk_revisions()}:
            raise SchemaError(f"the database is at schema revision {current!r}, which this version of Assay does not "
                              f"know: upgrade Assay")
        self.migrate()
        return True

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def alembic_config(engine: Engine):  # noqa: ANN201
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()

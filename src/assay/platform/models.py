"""The tables every web service of Assay shares: users, their logins, the login throttle and the security audit log,
and the declarative ``Base`` (with :class:`JSONText`) that the annotation and knowledge tables build on.

One database holds them all (SQLite or PostgreSQL, see :mod:`assay.platform.db`), with one Alembic chain
(:mod:`assay.platform.migrations`): change a model, then add a revision there; ``test_migrations_match_the_models``
fails while the two disagree. Times are Unix seconds (``float``): portable between SQLite and PostgreSQL and cheap to
compare. Structured values are JSON text written by :func:`assay.core.record.dumps`, so ``bytes`` survive the round
trip exactly as they do in Assay's JSONL.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from assay.core.record import _restore_bytes, dumps

ROLES = ("admin", "reviewer", "annotator")  # global roles

#: the modules whose tables live in the shared database: named here, not imported, because they build on this layer
#: (:func:`all_tables` imports them)
TABLE_MODULES = ("assay.platform.models", "assay.annotate.models", "assay.knowledge.models",
                 "assay.experts.models")


def now() -> float:
    return time.time()


class JSONText(TypeDecorator):
    """JSON stored as text, written with Assay's encoder (bytes as ``{"$bytes": base64}``) and read back with bytes
    restored."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else dumps(value).decode("utf-8")

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        import orjson

        return _restore_bytes(orjson.loads(value))


class Base(DeclarativeBase):
    pass


def all_tables() -> Any:
    """The metadata of the whole shared database, every table of :data:`TABLE_MODULES` on it (for ``create_all``,
    autogenerate and comparing a migrated database with the models). ``Base.metadata`` alone holds only the tables
    of the modules imported so far."""
    import importlib

    for module in TABLE_MODULES:
        importlib.import_module(module)
    return Base.metadata


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Session(Base):
    """A login: the cookie or bearer token is random; only its SHA-256 is stored."""

    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float)


class LoginThrottle(Base):
    """Failed logins per key (``user:<name as typed>`` or ``ip:<address>``) in the current window, and until when the
    key is refused without checking a password (a backoff after a few failures, a lockout after many)."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[float] = mapped_column(Float)
    last_failure: Mapped[float] = mapped_column(Float, index=True)
    blocked_until: Mapped[float] = mapped_column(Float, default=0.0)


class AuthEvent(Base):
    """The security audit log: failed logins, lockouts, and what admins did to accounts (unlock, deactivate,
    reactivate, password change). ``actor`` is the admin's username, or ``cli`` for the shell."""

    __tablename__ = "auth_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, default=now, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)

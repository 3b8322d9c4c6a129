"""The annotation database schema (SQLAlchemy 2 declarative models).

Schema changes go through Alembic (``assay/annotate/migrations``): change a model here, then add a revision there;
``tests/test_annotate_db.py`` fails when the two disagree.

Design notes:

* Times are Unix seconds (``float``): portable between SQLite and PostgreSQL and cheap to compare for leases.
* Structured values (record content with image bytes, annotation values, project config) are JSON text written by
  :func:`assay.core.record.dumps`, so ``bytes`` survive the round trip exactly as they do in Assay's JSONL.
* Overlap is enforced by the schema, not by application luck: every regular item gets exactly ``overlap`` rows in
  ``assignments`` at import (one per slot); a slot is claimed by an atomic conditional ``UPDATE`` and ``(item_id,
  user_id)`` is unique, so an item can never be with more than ``overlap`` people, nor twice with the same one.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (Boolean, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from assay.core.record import _restore_bytes, dumps

ROLES = ("admin", "reviewer", "annotator")  # global roles
PROJECT_ROLES = ("reviewer", "annotator")  # roles inside a project
TASK_TYPES = ("sft", "preference", "rating", "critique", "image_edit", "clip_rating")
SLOT_OPEN, SLOT_LEASED, SLOT_SUBMITTED = "open", "leased", "submitted"
REVIEW_PENDING, REVIEW_ACCEPTED, REVIEW_REJECTED = "pending", "accepted", "rejected"


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


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    task_type: Mapped[str] = mapped_column(String(16))
    guidelines: Mapped[str] = mapped_column(Text, default="")
    # task options: rubric dimensions and scale for ratings, whether A/B may be swapped, ...
    config: Mapped[dict] = mapped_column(JSONText, default=dict)
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=1800)
    review: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Membership(Base):
    __tablename__ = "memberships"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16), default="annotator")


class Item(Base):
    """One record imported into a project, with its Assay provenance (record id, meta, lineage)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("project_id", "record_id", name="uq_items_project_record"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    record_id: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(16), default="text")
    content: Mapped[Any] = mapped_column(JSONText)
    meta: Mapped[dict] = mapped_column(JSONText, default=dict)
    lineage: Mapped[list] = mapped_column(JSONText, default=list)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_answer: Mapped[Any] = mapped_column(JSONText, nullable=True)
    # pairwise items: True when response A on screen is the record's second response (position-bias control)
    swapped: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Assignment(Base):
    """A slot of an item: regular items have ``overlap`` slots (``slot`` 0..k-1) created at import; gold items get one
    row per annotator who is shown them (``slot`` NULL)."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("item_id", "slot", name="uq_assignments_item_slot"),
        UniqueConstraint("item_id", "user_id", name="uq_assignments_item_user"),
        Index("ix_assignments_queue", "project_id", "status", "item_id", "slot"),  # = the claim order
        Index("ix_assignments_user", "user_id", "project_id", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=SLOT_OPEN)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Annotation(Base):
    """What an annotator submitted for a slot; ``value`` depends on the task type (see ``workflow.validate_value``)."""

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_project_user", "project_id", "user_id"),
        Index("ix_annotations_item", "item_id"),
        Index("ix_annotations_project_review", "project_id", "review_status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    value: Mapped[Any] = mapped_column(JSONText)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # time on task reported by the client
    created_at: Mapped[float] = mapped_column(Float, default=now)
    review_status: Mapped[str] = mapped_column(String(16), default=REVIEW_PENDING)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


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

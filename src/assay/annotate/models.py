"""The annotation tables (SQLAlchemy 2 declarative models): projects, members, items, slots and annotations.

They sit on the shared layer's ``Base``, next to its users and logins (:mod:`assay.platform.models`), in one
database. Schema changes go through Alembic (:mod:`assay.platform.migrations`): change a model here, then add a
revision there; ``test_migrations_match_the_models`` fails when the two disagree.

Design notes:

* Times are Unix seconds (``float``): portable between SQLite and PostgreSQL and cheap to compare for leases.
* Structured values (record content with image bytes, annotation values, project config) are JSON text written by
  :func:`assay.core.record.dumps`, so ``bytes`` survive the round trip exactly as they do in Assay's JSONL.
* Overlap is enforced by the schema, not by application luck: every regular item gets exactly ``overlap`` rows in
  ``assignments`` at import (one per slot); a slot is claimed by an atomic conditional ``UPDATE`` and ``(item_id,
  user_id)`` is unique, so an item can never be with more than ``overlap`` people, nor twice with the same one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from assay.platform.models import Base, JSONText, now

PROJECT_ROLES = ("reviewer", "annotator")  # roles inside a project
TASK_TYPES = ("sft", "preference", "rating", "critique", "image_edit", "clip_rating", "trajectory", "dialogue",
              "classify", "spans")
SLOT_OPEN, SLOT_LEASED, SLOT_SUBMITTED = "open", "leased", "submitted"
REVIEW_PENDING, REVIEW_ACCEPTED, REVIEW_REJECTED = "pending", "accepted", "rejected"


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


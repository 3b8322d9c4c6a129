"""Tables of the expert network: who knows what, how far they are trusted, what they are working on, and what they
were paid.

They live on the shared declarative ``Base`` (:mod:`assay.platform.models`: same database, same ``users``, same
Alembic chain; revision ``0004``). Times are Unix seconds, structured values JSON text, as in :mod:`assay.platform.models`.

* ``expert_profiles`` — one row per user who takes expert work: capacity (how many routed tasks at once) and
  whether they are available now.
* ``expert_domains`` — the domains an expert declares, each with a level 1..5 (1 = informed amateur, 5 = leading
  specialist); the level weighs the domain match in routing, never the reputation.
* ``expert_reputation`` — the last computed reputation per (user, domain) and the evidence behind it
  (:func:`assay.experts.reputation.compute_reputation` rewrites these rows; they are a cache, not history).
* ``expert_tasks`` — work routed to an expert (:func:`assay.experts.routing.route`): ``open`` rows are the
  expert's current load.
* ``reward_batches`` and ``reward_ledger`` — payments. The ledger is **append-only**: database triggers refuse
  ``UPDATE`` and ``DELETE`` on both tables (SQLite and PostgreSQL), so a correction is a new entry, never an edit.
  ``(batch_id, user_id, task, rule)`` is unique, so a batch cannot pay the same work twice even if two processes
  race to pay it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (DDL, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event)
from sqlalchemy.orm import Mapped, mapped_column

from assay.platform.models import Base, JSONText, now

TASK_OPEN, TASK_DONE, TASK_DECLINED = "open", "done", "declined"
TASK_STATUSES = (TASK_OPEN, TASK_DONE, TASK_DECLINED)
MIN_LEVEL, MAX_LEVEL = 1, 5


class ExpertProfile(Base):
    __tablename__ = "expert_profiles"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    capacity: Mapped[int] = mapped_column(Integer, default=5)  # routed tasks open at the same time
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class ExpertDomain(Base):
    __tablename__ = "expert_domains"
    __table_args__ = (Index("ix_expert_domains_domain", "domain"),)
    user_id: Mapped[int] = mapped_column(ForeignKey("expert_profiles.user_id", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(128), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, default=3)


class ExpertReputation(Base):
    """The reputation of a user in a domain with its components (skills in [0, 1], 0 = chance level) and evidence
    counts, so that a number can always be explained."""

    __tablename__ = "expert_reputation"
    __table_args__ = (Index("ix_expert_reputation_domain", "domain", "score"),)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(128), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    gold_n: Mapped[float] = mapped_column(Float, default=0.0)
    gold_skill: Mapped[float | None] = mapped_column(Float, nullable=True)
    peer_n: Mapped[int] = mapped_column(Integer, default=0)
    peer_skill: Mapped[float | None] = mapped_column(Float, nullable=True)
    review_n: Mapped[int] = mapped_column(Integer, default=0)
    review_skill: Mapped[float | None] = mapped_column(Float, nullable=True)
    details: Mapped[dict] = mapped_column(JSONText, default=dict)
    computed_at: Mapped[float] = mapped_column(Float, default=now)


class ExpertTask(Base):
    """A piece of work routed to an expert: ``task`` names it (``patch:ID@V``, ``item:ID``, ...)."""

    __tablename__ = "expert_tasks"
    __table_args__ = (UniqueConstraint("task", "user_id", name="uq_expert_tasks_task_user"),
                      Index("ix_expert_tasks_user_status", "user_id", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    domains: Mapped[list] = mapped_column(JSONText, default=list)
    status: Mapped[str] = mapped_column(String(16), default=TASK_OPEN)
    score: Mapped[float] = mapped_column(Float)
    explanation: Mapped[dict] = mapped_column(JSONText, default=dict)
    routed_at: Mapped[float] = mapped_column(Float, default=now)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RewardBatch(Base):
    """One payment run. ``inputs_digest`` is the SHA-256 of the canonical reports and parameters: paying a batch id
    again with the same inputs returns the stored result, with different inputs it is refused."""

    __tablename__ = "reward_batches"
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict] = mapped_column(JSONText, default=dict)
    inputs_digest: Mapped[str] = mapped_column(String(64))
    n_reports: Mapped[int] = mapped_column(Integer)
    n_entries: Mapped[int] = mapped_column(Integer)
    total: Mapped[float] = mapped_column(Float)
    summary: Mapped[dict] = mapped_column(JSONText, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class RewardEntry(Base):
    __tablename__ = "reward_ledger"
    __table_args__ = (UniqueConstraint("batch_id", "user_id", "task", "rule", name="uq_reward_ledger_once"),
                      Index("ix_reward_ledger_user", "user_id", "computed_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("reward_batches.batch_id"), index=True)
    # no cascade: a user with payments on record cannot be deleted (deactivate them instead)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    task: Mapped[str] = mapped_column(String(200))
    amount: Mapped[float] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(String(32))
    computed_at: Mapped[float] = mapped_column(Float, default=now)
    details: Mapped[dict] = mapped_column(JSONText, default=dict)


# -- append-only enforcement ---------------------------------------------------------------------------------------
APPEND_ONLY_TABLES = ("reward_batches", "reward_ledger")


def append_only_ddl(dialect: str, table: str) -> list[str]:
    """SQL that makes ``table`` refuse UPDATE and DELETE (the same statements are frozen into migration 0004)."""
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for op in ("UPDATE", "DELETE")]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION assay_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only'; END $$",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION assay_refuse_change()",
        ]
    return []


def _attach_triggers(table: Any) -> None:
    for dialect in ("sqlite", "postgresql"):
        for statement in append_only_ddl(dialect, table.name):
            event.listen(table, "after_create", DDL(statement).execute_if(dialect=dialect))


for _table in (RewardBatch.__table__, RewardEntry.__table__):
    _attach_triggers(_table)

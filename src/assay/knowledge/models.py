"""The knowledge tables, in the annotation server's database (same ``Base``, users, ``Database`` and Alembic chain:
revision ``0003_knowledge``).

History is append-only, and the database enforces it: the version, review, publication and event tables refuse
``UPDATE`` and ``DELETE`` (triggers on SQLite and PostgreSQL, created both by the migration and by
``Base.metadata.create_all``). A change to a patch is a new version row; a status change is a new event row. The
current status of a version is the ``status`` of its latest event.

Users who appear in the history cannot be deleted (foreign keys without ``ON DELETE``): deactivate them instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (Float, ForeignKey, ForeignKeyConstraint, Index, Integer, String, Text, UniqueConstraint,
                        event)
from sqlalchemy.orm import Mapped, mapped_column

from assay.platform.models import Base, JSONText, now

DOMAIN_ROLES = ("reviewer", "publisher", "admin")
EVENTS = ("proposed", "review", "accepted", "rejected", "retracted", "superseded", "conflict")


class KnowledgeDomain(Base):
    """Per-domain settings: how many accepting reviews a patch in this domain needs."""

    __tablename__ = "knowledge_domains"
    domain: Mapped[str] = mapped_column(String(64), primary_key=True)
    quorum: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class KnowledgeRole(Base):
    """A user's role in a domain: ``reviewer`` (may review), ``publisher`` (may sign and retract), ``admin``
    (adjudicates conflicts, grants roles in the domain). Domain ``*`` means every domain."""

    __tablename__ = "knowledge_roles"
    __table_args__ = (Index("ix_knowledge_roles_domain", "domain", "role"),)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted_at: Mapped[float] = mapped_column(Float, default=now)


class KnowledgeKey(Base):
    """A registered Ed25519 public key (hex) of a user, for one purpose: ``publisher`` or ``reviewer``."""

    __tablename__ = "knowledge_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class PatchVersion(Base):
    """One version of a patch: its content document (the fields covered by the content hash), never changed."""

    __tablename__ = "knowledge_patches"
    __table_args__ = (UniqueConstraint("patch_id", "version", name="uq_knowledge_patches_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class PatchReview(Base):
    """A signed review (or adjudication) of one version; ``document`` is the signed :class:`~assay.knowledge.patch.
    Review`."""

    __tablename__ = "knowledge_reviews"
    __table_args__ = (
        UniqueConstraint("patch_id", "version", "reviewer_id", "kind", name="uq_knowledge_reviews_reviewer"),
        ForeignKeyConstraint(["patch_id", "version"], ["knowledge_patches.patch_id", "knowledge_patches.version"],
                             name="fk_knowledge_reviews_patch"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class PatchPublication(Base):
    """The publisher's signed patch document (reviews included, status left out) for one version."""

    __tablename__ = "knowledge_publications"
    __table_args__ = (
        UniqueConstraint("patch_id", "version", name="uq_knowledge_publications_version"),
        ForeignKeyConstraint(["patch_id", "version"], ["knowledge_patches.patch_id", "knowledge_patches.version"],
                             name="fk_knowledge_publications_patch"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    publisher_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    published_at: Mapped[float] = mapped_column(Float, default=now)


class PatchEvent(Base):
    """The change feed: one row per thing that happened to a version, numbered by ``seq`` (strictly increasing and,
    because knowledge writes are serialised, committed in ``seq`` order). ``status`` is the version's status after
    the event."""

    __tablename__ = "knowledge_events"
    __table_args__ = (
        Index("ix_knowledge_events_version", "patch_id", "version", "seq"),
        ForeignKeyConstraint(["patch_id", "version"], ["knowledge_patches.patch_id", "knowledge_patches.version"],
                             name="fk_knowledge_events_patch"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patch_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float, default=now)
    # the signed hash chain (revision 0006; see assay.knowledge.eventlog): the acting user's key and signature over
    # the entry and the hash of the entry before it. NULL on events written before 0005 (a checkpoint covers them).
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    signature: Mapped[str | None] = mapped_column(String(128), nullable=True)
    entry_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the writer's copy, never trusted


class KeyCertificateRow(Base):
    """A root-signed :class:`~assay.knowledge.trust.KeyCertificate` (revision 0006). Verifiers check the signature
    against their pinned root keys: a row is worth nothing without it."""

    __tablename__ = "knowledge_certificates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class KeyRevocationRow(Base):
    """A root-signed :class:`~assay.knowledge.trust.KeyRevocation` (revision 0006)."""

    __tablename__ = "knowledge_revocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class CheckpointRow(Base):
    """A root-signed :class:`~assay.knowledge.trust.Checkpoint` of the event log (revision 0006)."""

    __tablename__ = "knowledge_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    created_at: Mapped[float] = mapped_column(Float, default=now)


APPEND_ONLY_TABLES = ("knowledge_patches", "knowledge_reviews", "knowledge_publications", "knowledge_events",
                      "knowledge_certificates", "knowledge_revocations", "knowledge_checkpoints")


def append_only_ddl(table: str, dialect: str) -> list[str]:
    """Statements that make ``table`` refuse UPDATE and DELETE (used by the migration and by ``create_all``)."""
    if dialect == "sqlite":
        return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for op in ("UPDATE", "DELETE")]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION knowledge_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only'; END $$",
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION knowledge_append_only()",
        ]
    return []


def drop_append_only_ddl(table: str, dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {table}_no_{op}" for op in ("update", "delete")]
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"]
    return []


def _install_triggers(table_name: str):  # noqa: ANN202
    def after_create(target, connection, **_kw) -> None:  # noqa: ANN001
        for stmt in append_only_ddl(table_name, connection.dialect.name):
            connection.exec_driver_sql(stmt)
    return after_create


for _t in APPEND_ONLY_TABLES:
    event.listen(Base.metadata.tables[_t], "after_create", _install_triggers(_t))

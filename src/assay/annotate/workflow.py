"""The work queue: importing records, handing out slots under leases, gold items, submissions and review.

Every function takes a SQLAlchemy session inside a write transaction (``Database.write()``) except :func:`import_records`,
which commits in batches itself. The queue rules:

* **Overlap k.** Each regular item has k slots, created at import. An annotator asking for work gets the first open
  slot (lowest item id first, so items complete in order) of an item they have never held or annotated. Claiming is a
  conditional ``UPDATE ... WHERE status is still claimable``; on PostgreSQL the candidate is picked with ``FOR UPDATE
  SKIP LOCKED`` so concurrent annotators never wait on each other; on SQLite write transactions are serialised by
  ``BEGIN IMMEDIATE``. The unique ``(item_id, user_id)`` constraint makes "k distinct annotators" a schema fact.
* **Leases.** A claimed slot is leased for the project's ``lease_seconds``. Asking again returns (and renews) the
  slot you hold. An expired lease is claimable by anybody, and is handed out before any open slot: abandoned work
  returns to the front of the queue. A submission is
  accepted while you still hold the slot, even after expiry, as long as nobody else has claimed it.
* **Gold.** Gold items (known answers) are served so that an annotator's gold share tracks ``gold_rate``: before
  each regular slot, if gold so far < rate × (annotations + 1), an unseen gold item is served instead. Every annotator
  may see every gold item once; gold items have no overlap limit.
* **Review.** Reviewers accept or reject annotations. A rejected regular annotation reopens its slot for somebody
  else (the rejected annotator is not offered the item again).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple

from sqlalchemy import and_, bindparam, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from assay.annotate import tasks
from assay.annotate.models import (PROJECT_ROLES, REVIEW_ACCEPTED, REVIEW_PENDING, REVIEW_REJECTED, SLOT_LEASED,
                                   SLOT_OPEN, SLOT_SUBMITTED, TASK_TYPES, Annotation, Assignment, Item, Membership,
                                   Project)
from assay.platform import users
from assay.platform.errors import Conflict, NotFound, RequestError
from assay.platform.models import User, now
from assay.platform.users import find_user

#: the workflow's errors are the web services' request errors (``status``: the HTTP status the API answers with)
WorkflowError = RequestError


NOT_YOURS = "no such assignment for you (a slot whose lease ran out may have gone to somebody else)"


# -- users and projects --------------------------------------------------------------------------------------------
def set_active(s: Session, username: str, active: bool, actor: str | None = None) -> User:
    """Deactivate (offboard) or reactivate a user (:func:`assay.platform.users.set_active`: every login ends at
    once) and return the slots they hold to the queue; their annotations stay."""
    user = users.set_active(s, username, active, actor)
    if not active:
        s.execute(update(Assignment).where(Assignment.user_id == user.id, Assignment.status == SLOT_LEASED,
                                           Assignment.slot.is_not(None))
                  .values(status=SLOT_OPEN, user_id=None, leased_at=None, lease_expires=None))
        s.execute(delete(Assignment).where(Assignment.user_id == user.id, Assignment.status == SLOT_LEASED,
                                           Assignment.slot.is_(None)))
    return user


def create_project(s: Session, name: str, task_type: str, *, guidelines: str = "", config: dict | None = None,
                   overlap: int = 1, gold_rate: float = 0.0, lease_seconds: int = 1800, review: bool = False) -> Project:
    name = name.strip()
    if not name or len(name) > 128:
        raise WorkflowError("project name must be 1-128 characters")
    if task_type not in TASK_TYPES:
        raise WorkflowError(f"task type must be one of {', '.join(TASK_TYPES)}")
    if not 1 <= overlap <= 50:
        raise WorkflowError("overlap must be between 1 and 50")
    if not 0.0 <= gold_rate < 1.0:
        raise WorkflowError("gold rate must be in [0, 1)")
    if not 10 <= lease_seconds <= 7 * 24 * 3600:
        raise WorkflowError("lease must be between 10 s and 7 days")
    try:
        cfg = tasks.check_config(task_type, config)
    except ValueError as e:
        raise WorkflowError(str(e)) from None
    if s.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} exists")
    p = Project(name=name, task_type=task_type, guidelines=guidelines, config=cfg, overlap=overlap,
                gold_rate=gold_rate, lease_seconds=lease_seconds, review=review, created_at=now())
    s.add(p)
    s.flush()
    return p


def find_project(s: Session, ref: str | int) -> Project:
    p = s.get(Project, int(ref)) if isinstance(ref, int) or str(ref).isdigit() else None
    if p is None:
        p = s.scalar(select(Project).where(Project.name == str(ref)))
    if p is None:
        raise NotFound(f"no project {ref!r}")
    return p


def add_member(s: Session, project: Project, username: str, role: str = "annotator") -> Membership:
    if role not in PROJECT_ROLES:
        raise WorkflowError(f"project role must be one of {', '.join(PROJECT_ROLES)}")
    user = find_user(s, username)
    m = s.get(Membership, (project.id, user.id))
    if m is None:
        m = Membership(project_id=project.id, user_id=user.id, role=role)
        s.add(m)
    else:
        m.role = role
    s.flush()
    return m


def remove_member(s: Session, project: Project, username: str) -> None:
    user = find_user(s, username)
    s.execute(delete(Membership).where(Membership.project_id == project.id, Membership.user_id == user.id))
    # their open leases go back to the queue at once
    s.execute(update(Assignment).where(Assignment.project_id == project.id, Assignment.user_id == user.id,
                                       Assignment.status == SLOT_LEASED, Assignment.slot.is_not(None))
              .values(status=SLOT_OPEN, user_id=None, leased_at=None, lease_expires=None))


# -- import --------------------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    input_errors: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _lineage_of(record: Any) -> list[dict[str, str]]:
    return [e.as_dict() for e in record.lineage]


def add_items(s: Session, project: Project, records: Iterable[Any], *, gold: bool = False,
              report: ImportReport | None = None) -> ImportReport:
    """Add Assay records to ``project`` (in the caller's transaction); duplicates by record id are counted, not
    re-added. Each regular item gets ``overlap`` open slots."""
    report = report or ImportReport()
    if gold and project.task_type not in ("preference", *tasks.RUBRIC_TASKS):
        raise WorkflowError("gold items need a checkable answer: preference, rating and clip_rating projects only")
    batch: list[tuple[Any, dict, Any]] = []
    for rec in records:
        if not isinstance(rec.id, str) or not rec.id or len(rec.id) > 128:
            report.skip("bad_record_id")
            continue
        try:
            content = tasks.item_content(project.task_type, rec.content, rec.meta or {})
            answer = tasks.gold_answer(project.task_type, rec.meta or {}, rec.content, project.config) if gold else None
        except tasks.SkipRecord as e:
            report.skip(str(e))
            continue
        batch.append((rec, content, answer))
    if not batch:
        return report
    ids = [r.id for r, _, _ in batch]
    existing: set[str] = set()
    for k in range(0, len(ids), 500):
        existing.update(s.scalars(select(Item.record_id).where(Item.project_id == project.id,
                                                               Item.record_id.in_(ids[k:k + 500]))))
    t = now()
    new_items: list[Item] = []
    seen: set[str] = set()
    for rec, content, answer in batch:
        if rec.id in existing or rec.id in seen:
            report.duplicates += 1
            continue
        seen.add(rec.id)
        swapped = project.task_type == "preference" and tasks.swapped_for(rec.id, project.config)
        new_items.append(Item(project_id=project.id, record_id=rec.id, modality=rec.modality or "text",
                              content=content, meta=rec.meta or {}, lineage=_lineage_of(rec), is_gold=gold,
                              gold_answer=answer, swapped=swapped, created_at=t))
    if not new_items:
        return report
    s.add_all(new_items)
    s.flush()
    if not gold:
        s.execute(Assignment.__table__.insert(),
                  [{"project_id": project.id, "item_id": it.id, "slot": k, "status": SLOT_OPEN}
                   for it in new_items for k in range(project.overlap)])
    report.imported += len(new_items)
    return report


def pair_by_caption(records: Iterable[Any], report: ImportReport) -> Iterator[Any]:
    """Image pairs (Pick-a-Pic) from single image-text records, e.g. several generations per prompt: records with
    the same caption are paired in order of arrival (1st with 2nd, 3rd with 4th, ...). The pair's id derives from
    both parents, its meta lists them (``parents``), its lineage is the first parent's. Unpaired images are counted
    skips (``unpaired_image``); records without a caption and an image ``not_image_text``."""
    from assay.core.record import Record, derive_id

    waiting: dict[str, Any] = {}
    for rec in records:
        c = rec.content if isinstance(rec.content, dict) else {}
        caption = c.get("caption") if isinstance(c.get("caption"), str) else None
        if caption is None or c.get("image", c.get("image_path")) is None:
            report.skip("not_image_text")
            continue
        first = waiting.pop(caption, None)
        if first is None:
            waiting[caption] = rec
            continue
        image_of = [r.content.get("image", r.content.get("image_path")) for r in (first, rec)]
        meta = {"source": (first.meta or {}).get("source"), "parents": [first.id, rec.id],
                "parent_meta": [first.meta or {}, rec.meta or {}]}
        yield Record(derive_id(first.id, rec.id, "image_pair"), {"caption": caption, "image_a": image_of[0],
                                                                 "image_b": image_of[1]}, "image_text",
                     meta=meta, lineage=list(first.lineage))
    for _ in waiting:
        report.skip("unpaired_image")


def lift_foreign_meta(rec: Any) -> Any:
    """A plain JSON line's ``"meta"`` object becomes the record's meta (where gold answers, ``meta["gold"]``, and
    provenance live), as the API import does; Assay records are returned unchanged."""
    if isinstance(rec.content, dict) and isinstance(rec.content.get("meta"), dict):
        content = dict(rec.content)
        rec.meta = {**(rec.meta or {}), **content.pop("meta")}
        rec.content = content
    return rec


def import_records(db: Any, project_ref: str | int, paths: list[str], *, gold: bool = False,
                   batch_size: int = 500, pair_images: bool = False) -> ImportReport:
    """Import pipeline output (Assay JSONL/Parquet, or foreign JSONL) into a project, keeping record ids, meta and
    lineage. Read with Assay's own readers, so damaged lines are counted skips, not crashes. ``pair_images``: make
    image pairs of image-text records that share a caption (:func:`pair_by_caption`)."""
    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard

    report = ImportReport()
    with db.read() as s:
        project = find_project(s, project_ref)
        project_id = project.id
    if pair_images and project.task_type != "preference":
        raise WorkflowError("pairing images by caption makes preference items: use a preference project")
    errors = ErrorLog()

    def live_records() -> Iterator[Any]:
        for shard in plan_shards(paths, shard_bytes=0):
            # plain JSON keeps its own "id" as the record id (exports join back to the source by it)
            for rec in read_shard(shard, errors, text_key=None, id_key="id"):
                if rec.drop is not None:
                    report.skip("dropped_record")
                    continue
                yield lift_foreign_meta(rec)

    stream = pair_by_caption(live_records(), report) if pair_images else live_records()
    chunk: list[Any] = []
    for rec in stream:
        chunk.append(rec)
        if len(chunk) >= batch_size:
            with db.write() as s:
                add_items(s, s.get(Project, project_id), chunk, gold=gold, report=report)
            chunk = []
    if chunk:
        with db.write() as s:
            add_items(s, s.get(Project, project_id), chunk, gold=gold, report=report)
    report.input_errors = dict(errors.counts)
    if report.imported and db.write_engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with db.write_engine.begin() as conn:  # fresh planner statistics after a bulk load
            conn.execute(text("ANALYZE items, assignments"))
    return report


# -- the queue -----------------------------------------------------------------------------------------------------
class Claim(NamedTuple):
    """A slot handed to an annotator."""

    id: int
    item_id: int
    lease_expires: float


class Submitted(NamedTuple):
    id: int
    item_id: int


def _my_items(project_id: int, user_id: int):  # noqa: ANN202
    held = select(Assignment.item_id).where(Assignment.project_id == project_id, Assignment.user_id == user_id)
    done = select(Annotation.item_id).where(Annotation.project_id == project_id, Annotation.user_id == user_id)
    return held, done


def _serve_gold(s: Session, project: Project, user_id: int, t: float) -> Claim | None:
    conn = s.connection()
    counts = conn.execute(select(func.count(), func.coalesce(func.sum(case((Annotation.is_gold, 1), else_=0)), 0))
                          .where(Annotation.project_id == project.id, Annotation.user_id == user_id,
                                 Annotation.review_status != REVIEW_REJECTED)).one()
    total, golds = int(counts[0]), int(counts[1])
    if golds >= project.gold_rate * (total + 1):
        return None
    held, done = _my_items(project.id, user_id)
    candidates = list(conn.execute(select(Item.id).where(Item.project_id == project.id, Item.is_gold.is_(True),
                                                         Item.id.not_in(held), Item.id.not_in(done))
                                   .limit(50)).scalars())
    if not candidates:
        return None
    item_id = random.choice(candidates)
    expires = t + project.lease_seconds
    row = conn.execute(insert(Assignment).values(project_id=project.id, item_id=item_id, slot=None, status=SLOT_LEASED,
                                                 user_id=user_id, leased_at=t, lease_expires=expires)
                       .returning(Assignment.id)).one()
    return Claim(row[0], item_id, expires)


@functools.lru_cache(maxsize=4)
def _queue_statements(dialect: str) -> dict[str, Any]:
    """The hot statements of the queue, built once per dialect with bind parameters (building SQLAlchemy statements
    costs more CPU than running them on SQLite). Parameters: p project, u user, t now, exp lease end, avoid item."""
    held = select(Assignment.item_id).where(Assignment.project_id == bindparam("p"),
                                            Assignment.user_id == bindparam("u"))
    done = select(Annotation.item_id).where(Annotation.project_id == bindparam("p"),
                                            Annotation.user_id == bindparam("u"))
    out: dict[str, Any] = {}
    for name, claimable in (("claim_open", Assignment.status == SLOT_OPEN),
                            ("claim_expired", and_(Assignment.status == SLOT_LEASED,
                                                   Assignment.lease_expires < bindparam("t")))):
        pick = (select(Assignment.id).where(Assignment.project_id == bindparam("p"), claimable,
                                            Assignment.slot.is_not(None), Assignment.item_id != bindparam("avoid"),
                                            Assignment.item_id.not_in(held), Assignment.item_id.not_in(done))
                .order_by(Assignment.item_id, Assignment.slot).limit(1))
        if dialect == "postgresql":  # concurrent annotators skip rows another transaction is claiming, no waiting
            pick = pick.with_for_update(skip_locked=True)
        out[name] = (update(Assignment).where(Assignment.id == pick.scalar_subquery(), claimable)
                     .values(status=SLOT_LEASED, user_id=bindparam("u"), leased_at=bindparam("t"),
                             lease_expires=bindparam("exp"), submitted_at=None)
                     .returning(Assignment.id, Assignment.item_id))
    out["resume"] = (update(Assignment).where(Assignment.project_id == bindparam("p"),
                                              Assignment.user_id == bindparam("u"),
                                              Assignment.status == SLOT_LEASED)
                     .values(lease_expires=bindparam("exp"))
                     .returning(Assignment.id, Assignment.item_id, Assignment.leased_at))
    out["submit"] = (update(Assignment).where(Assignment.id == bindparam("a"), Assignment.project_id == bindparam("p"),
                                              Assignment.user_id == bindparam("u"),
                                              Assignment.status == SLOT_LEASED)
                     .values(status=SLOT_SUBMITTED, submitted_at=bindparam("t"))
                     .returning(Assignment.item_id, Assignment.slot))
    out["annotate"] = insert(Annotation).returning(Annotation.id)
    return out


def _claim_regular(s: Session, project: Project, user_id: int, t: float, avoid_item: int | None) -> Claim | None:
    """Claim one slot with a single ``UPDATE ... WHERE id = (first claimable slot) RETURNING``: slots whose lease ran
    out first (abandoned work finishes before new work starts), then open slots."""
    conn = s.connection()
    q = _queue_statements(conn.dialect.name)
    params = {"p": project.id, "u": user_id, "t": t, "exp": t + project.lease_seconds,
              "avoid": -1 if avoid_item is None else avoid_item}
    for name in ("claim_expired", "claim_open"):
        row = conn.execute(q[name], params).first()
        if row is not None:
            return Claim(row[0], row[1], params["exp"])
    return None


def next_assignment(s: Session, project: Project, user_id: int, avoid_item: int | None = None) -> Claim | None:
    """The slot this user should work on now (the one they hold, a gold item, or a newly claimed slot), or None when
    nothing is left for them. ``avoid_item``: an item just skipped, not to be handed straight back.

    Raises :class:`Conflict` when a parallel request of the same user claimed a slot of the same item first
    (PostgreSQL only; the client just asks again)."""
    t = now()
    conn = s.connection()
    exp = t + project.lease_seconds
    mine = conn.execute(_queue_statements(conn.dialect.name)["resume"],
                        {"p": project.id, "u": user_id, "exp": exp}).all()
    if mine:
        first = min(mine, key=lambda r: (r.leased_at or 0, r.id))
        return Claim(first.id, first.item_id, exp)
    try:
        if project.gold_rate > 0:
            claim = _serve_gold(s, project, user_id, t)
            if claim is not None:
                return claim
        return _claim_regular(s, project, user_id, t, avoid_item)
    except IntegrityError:
        raise Conflict("a parallel request of yours claimed this item; ask again") from None


def held_assignment(s: Session, project: Project, user_id: int, assignment_id: int) -> Assignment:
    a = s.get(Assignment, assignment_id)
    if a is None or a.project_id != project.id or a.user_id != user_id:
        raise NotFound(NOT_YOURS)
    return a


def submit(s: Session, project: Project, user_id: int, assignment_id: int, value: Any,
           seconds: float | None = None) -> Submitted:
    """Record an answer (in the record's orientation) for a slot the user holds. Raises :class:`Conflict` if the slot
    was lost or already submitted. Two statements: the slot's conditional state change, the insert."""
    context = None
    if project.task_type in ("image_edit", "trajectory", "classify", "spans"):  # checked against the item (mask
        # size; frame count; the text and the model's suggestions)
        content = s.scalar(select(Item.content).join(Assignment, Assignment.item_id == Item.id)
                           .where(Assignment.id == assignment_id, Assignment.project_id == project.id,
                                  Assignment.user_id == user_id))
        if content is None:
            raise NotFound(NOT_YOURS)
        context = tasks.answer_context(project.task_type, content)
    try:
        clean = tasks.validate_answer(project.task_type, project.config, value, context)
    except tasks.InvalidAnswer as e:
        raise WorkflowError(str(e)) from None
    if seconds is not None and not (0 <= seconds < 7 * 24 * 3600):
        seconds = None
    t = now()
    conn = s.connection()
    q = _queue_statements(conn.dialect.name)
    row = conn.execute(q["submit"], {"a": assignment_id, "p": project.id, "u": user_id, "t": t}).first()
    if row is None:
        raise _not_yours(s, project, user_id, assignment_id)
    ann_id = conn.execute(q["annotate"], {
        "project_id": project.id, "item_id": row.item_id, "assignment_id": assignment_id, "user_id": user_id,
        "value": clean, "is_gold": row.slot is None, "seconds": seconds, "created_at": t,
        "review_status": REVIEW_PENDING}).scalar_one()
    return Submitted(ann_id, row.item_id)


def _not_yours(s: Session, project: Project, user_id: int, assignment_id: int) -> WorkflowError:
    """Why a submission found no slot leased to the user: the one answer (404) for an id that does not exist and for
    somebody else's slot, so assignment ids reveal nothing; 409 only for the user's own slot that is done or given
    back."""
    owner = s.scalar(select(Assignment.user_id).where(Assignment.id == assignment_id,
                                                      Assignment.project_id == project.id))
    if owner != user_id:
        return NotFound(NOT_YOURS)
    return Conflict("this slot is no longer leased to you (already submitted or released)")


def release(s: Session, project: Project, user_id: int, assignment_id: int) -> None:
    """Give a held slot back to the queue (skip)."""
    a = held_assignment(s, project, user_id, assignment_id)
    if a.status != SLOT_LEASED:
        raise Conflict("this slot is not leased to you")
    if a.slot is None:
        s.delete(a)
    else:
        s.execute(update(Assignment).where(Assignment.id == a.id, Assignment.user_id == user_id,
                                           Assignment.status == SLOT_LEASED)
                  .values(status=SLOT_OPEN, user_id=None, leased_at=None, lease_expires=None)
                  .execution_options(synchronize_session=False))


def review(s: Session, project: Project, reviewer_id: int, annotation_id: int, decision: str,
           note: str | None = None) -> Annotation:
    if decision not in (REVIEW_ACCEPTED, REVIEW_REJECTED):
        raise WorkflowError("decision must be accepted or rejected")
    ann = s.get(Annotation, annotation_id)
    if ann is None or ann.project_id != project.id:
        raise NotFound("no such annotation")
    was = ann.review_status
    ann.review_status, ann.reviewer_id, ann.reviewed_at = decision, reviewer_id, now()
    ann.review_note = (note or "")[:5000] or None
    if decision == REVIEW_REJECTED and was != REVIEW_REJECTED and not ann.is_gold:
        s.execute(update(Assignment).where(Assignment.id == ann.assignment_id, Assignment.status == SLOT_SUBMITTED)
                  .values(status=SLOT_OPEN, user_id=None, leased_at=None, lease_expires=None, submitted_at=None)
                  .execution_options(synchronize_session=False))
    elif decision == REVIEW_ACCEPTED and was == REVIEW_REJECTED and not ann.is_gold:
        # un-rejecting is only possible while nobody else has filled the reopened slot
        res = s.execute(update(Assignment).where(Assignment.id == ann.assignment_id, Assignment.status == SLOT_OPEN)
                        .values(status=SLOT_SUBMITTED, user_id=ann.user_id, submitted_at=ann.created_at)
                        .execution_options(synchronize_session=False))
        if res.rowcount != 1:
            raise Conflict("the slot was reassigned after the rejection")
    return ann


def progress(s: Session, project: Project) -> dict[str, Any]:
    t = now()
    by_status = dict(s.execute(select(Assignment.status, func.count()).where(
        Assignment.project_id == project.id, Assignment.slot.is_not(None)).group_by(Assignment.status)).all())
    expired = s.scalar(select(func.count()).where(Assignment.project_id == project.id,
                                                  Assignment.status == SLOT_LEASED, Assignment.lease_expires < t))
    items = dict(s.execute(select(Item.is_gold, func.count()).where(Item.project_id == project.id)
                           .group_by(Item.is_gold)).all())
    reviews = dict(s.execute(select(Annotation.review_status, func.count())
                             .where(Annotation.project_id == project.id).group_by(Annotation.review_status)).all())
    complete = s.scalar(select(func.count()).select_from(
        select(Assignment.item_id).where(Assignment.project_id == project.id, Assignment.slot.is_not(None))
        .group_by(Assignment.item_id)
        .having(func.sum(case((Assignment.status == SLOT_SUBMITTED, 1), else_=0)) == func.count()).subquery()))
    slots = sum(by_status.values())
    return {"items": int(items.get(False, 0)), "gold_items": int(items.get(True, 0)), "slots": int(slots),
            "submitted": int(by_status.get(SLOT_SUBMITTED, 0)), "leased": int(by_status.get(SLOT_LEASED, 0)),
            "expired_leases": int(expired or 0), "open": int(by_status.get(SLOT_OPEN, 0)),
            "complete_items": int(complete or 0),
            "reviews": {k: int(reviews.get(k, 0)) for k in (REVIEW_PENDING, REVIEW_ACCEPTED, REVIEW_REJECTED)}}

"""Routing work to experts: who should review this patch (or label this item)?

Given a piece of work — a task name, its domain tags and its authors — :func:`route` scores every expert who could
take it and picks the best ``k``:

``score = w_match · match + w_rep · reputation − w_load · load − w_spread · recent``

* ``match`` — the mean over the work's domains of the expert's declared level / 5 (0 for a domain they lack);
  experts matching none of the domains are not candidates.
* ``reputation`` — the mean stored reputation (:func:`assay.experts.reputation.compute_reputation`) over the
  work's domains the expert declares (0 where none was computed yet).
* ``load`` — open routed tasks plus live annotation leases, divided by the expert's capacity; experts at capacity
  are not candidates.
* ``recent`` — tasks routed to the expert in the last ``recent_seconds`` (default 7 days), divided by the most any
  candidate got: it spreads work across equally good experts instead of always asking the same one.

Excluded, with the reason in the answer: the work's authors, unavailable or deactivated users, experts already
routed this task, experts at capacity. Ties are broken by fewer open tasks, then fewer recent tasks, then username,
so the same state always gives the same choice. With ``record=True`` the choice is written as open
``expert_tasks`` rows in the same transaction (on SQLite write transactions are serialised, so concurrent routing
never over-fills an expert; on PostgreSQL two concurrent routes may each see the last free slot of an expert).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from sqlalchemy import func, select, update

from assay.annotate.models import SLOT_LEASED, Assignment, Item, Project
from assay.experts.models import (MAX_LEVEL, TASK_DONE, TASK_OPEN, TASK_STATUSES, ExpertDomain,
                                            ExpertProfile, ExpertReputation, ExpertTask)
from assay.knowledge.review import KnowledgeError, NotFound, check_domain
from assay.platform.models import User, now


@dataclass(frozen=True)
class RoutingWeights:
    match: float = 1.0
    reputation: float = 1.0
    load: float = 0.5
    spread: float = 0.25
    recent_seconds: float = 7 * 24 * 3600.0


def _work(item: Mapping[str, Any]) -> tuple[str, list[str], set[str]]:
    task = str(item.get("task") or "").strip()
    if not task or len(task) > 200:
        raise KnowledgeError("work needs a task name of 1-200 characters (e.g. 'patch:ID@1' or 'item:42')")
    domains = sorted({check_domain(str(d)) for d in item.get("domains") or []} - {"*"})
    if not domains:
        raise KnowledgeError("work needs at least one domain tag")
    authors = {str(a) for a in item.get("authors") or []}
    return task, domains, authors


def _route(s: Any, item: Mapping[str, Any], k: int, weights: RoutingWeights,
           exclude: Iterable[str]) -> dict[str, Any]:
    task, domains, authors = _work(item)
    excluded_names = {str(x) for x in exclude}
    t = now()
    levels: dict[int, dict[str, int]] = {}
    for uid, dom, level in s.execute(select(ExpertDomain.user_id, ExpertDomain.domain, ExpertDomain.level)
                                     .where(ExpertDomain.domain.in_(domains))).all():
        levels.setdefault(uid, {})[dom] = level
    reps: dict[tuple[int, str], float] = {(u, d): sc for u, d, sc in s.execute(
        select(ExpertReputation.user_id, ExpertReputation.domain, ExpertReputation.score)
        .where(ExpertReputation.domain.in_(domains))).all()}
    open_tasks = dict(s.execute(select(ExpertTask.user_id, func.count()).where(ExpertTask.status == TASK_OPEN)
                                .group_by(ExpertTask.user_id)).all())
    leases = dict(s.execute(select(Assignment.user_id, func.count())
                            .where(Assignment.status == SLOT_LEASED, Assignment.lease_expires > t)
                            .group_by(Assignment.user_id)).all())
    recent = dict(s.execute(select(ExpertTask.user_id, func.count())
                            .where(ExpertTask.routed_at >= t - weights.recent_seconds)
                            .group_by(ExpertTask.user_id)).all())
    already = set(s.scalars(select(ExpertTask.user_id).where(ExpertTask.task == task)))
    profiles = s.execute(select(ExpertProfile, User.username, User.active)
                         .join(User, User.id == ExpertProfile.user_id)
                         .where(ExpertProfile.user_id.in_(list(levels)))).all()
    candidates: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for profile, username, active in profiles:
        uid = profile.user_id
        load_n = int(open_tasks.get(uid, 0)) + int(leases.get(uid, 0))
        reason = None
        if username in authors or str(uid) in authors:
            reason = "author"
        elif username in excluded_names:
            reason = "excluded"
        elif not active:
            reason = "inactive"
        elif not profile.available:
            reason = "unavailable"
        elif uid in already:
            reason = "already_routed"
        elif load_n >= profile.capacity:
            reason = "at_capacity"
        if reason:
            excluded.append({"user_id": uid, "username": username, "reason": reason})
            continue
        declared = levels[uid]
        match = sum(declared.get(d, 0) / MAX_LEVEL for d in domains) / len(domains)
        rep = sum(reps.get((uid, d), 0.0) for d in declared) / len(declared)
        candidates.append({"user_id": uid, "username": username, "match": round(match, 6),
                           "reputation": round(rep, 6), "open": load_n, "capacity": profile.capacity,
                           "load": round(load_n / profile.capacity, 6), "recent_n": int(recent.get(uid, 0)),
                           "domains": dict(sorted(declared.items()))})
    top_recent = max([c["recent_n"] for c in candidates], default=0) or 1
    for c in candidates:
        c["recent"] = round(c["recent_n"] / top_recent, 6)
        c["score"] = round(weights.match * c["match"] + weights.reputation * c["reputation"]
                           - weights.load * c["load"] - weights.spread * c["recent"], 6)
    candidates.sort(key=lambda c: (-c["score"], c["open"], c["recent_n"], c["username"]))
    excluded.sort(key=lambda e: e["username"])
    return {"task": task, "domains": domains, "k": k, "chosen": [c["username"] for c in candidates[:k]],
            "candidates": candidates, "excluded": excluded, "weights": asdict(weights), "at": t}


def route(db: Any, item: Mapping[str, Any], k: int = 2, *, record: bool = False,
          weights: RoutingWeights = RoutingWeights(), exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Pick up to ``k`` experts for ``item`` (``{"task": str, "domains": [...], "authors": [usernames]}``).

    Returns ``{"task", "domains", "chosen": [usernames, best first], "candidates": [every eligible expert with
    match, reputation, open, capacity, load, recent, score], "excluded": [{"username", "reason"}], "weights"}``.
    Fewer than ``k`` are chosen when fewer are eligible. ``record``: write the choice as open expert tasks."""
    if not 1 <= k <= 100:
        raise KnowledgeError("k must be between 1 and 100")
    if not record:
        with db.read() as s:
            return _route(s, item, k, weights, exclude)
    with db.write() as s:
        decision = _route(s, item, k, weights, exclude)
        by_name = {c["username"]: c for c in decision["candidates"]}
        for name in decision["chosen"]:
            c = by_name[name]
            s.add(ExpertTask(task=decision["task"], user_id=c["user_id"], domains=decision["domains"],
                             status=TASK_OPEN, score=c["score"], explanation=c, routed_at=decision["at"]))
        return decision


def close_task(db: Any, task: str, username: str, status: str = TASK_DONE) -> None:
    """Mark an expert's routed task ``done`` or ``declined`` (it stops counting toward their load)."""
    if status not in TASK_STATUSES or status == TASK_OPEN:
        raise KnowledgeError("status must be done or declined")
    with db.write() as s:
        uid = s.scalar(select(User.id).where(User.username == username))
        res = s.execute(update(ExpertTask).where(ExpertTask.task == task, ExpertTask.user_id == uid,
                                                 ExpertTask.status == TASK_OPEN)
                        .values(status=status, closed_at=now()).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            raise NotFound(f"no open task {task!r} for {username!r}")


def open_tasks(db: Any, username: str) -> list[dict[str, Any]]:
    with db.read() as s:
        uid = s.scalar(select(User.id).where(User.username == username))
        return [{"task": t.task, "domains": t.domains, "score": t.score, "routed_at": t.routed_at}
                for t in s.scalars(select(ExpertTask).where(ExpertTask.user_id == uid, ExpertTask.status == TASK_OPEN)
                                   .order_by(ExpertTask.routed_at, ExpertTask.id))]


# -- work descriptions from the stores -----------------------------------------------------------------------------
def patch_work(db: Any, patch_id: str, version: int) -> dict[str, Any]:
    """The routing description of a knowledge patch version: its domains and authors."""
    from assay.knowledge.models import PatchVersion

    with db.read() as s:
        doc = s.scalar(select(PatchVersion.document).where(PatchVersion.patch_id == patch_id,
                                                           PatchVersion.version == version))
    if doc is None:
        raise NotFound(f"no patch {patch_id}@{version}")
    return {"task": f"patch:{patch_id}@{version}", "domains": list(doc.get("domains") or []),
            "authors": list(doc.get("authors") or [])}


def annotation_work(db: Any, item_id: int) -> dict[str, Any]:
    """The routing description of an annotation item: domains from the item's ``meta["domains"]``, else its
    project's ``config["domains"]``."""
    with db.read() as s:
        row = s.execute(select(Item.meta, Project.config).join(Project, Project.id == Item.project_id)
                        .where(Item.id == item_id)).first()
    if row is None:
        raise NotFound(f"no item {item_id}")
    meta, config = row
    domains = (meta or {}).get("domains") or (config or {}).get("domains") or []
    return {"task": f"item:{item_id}", "domains": list(domains), "authors": []}

"""Expert profiles and reputation per domain.

An expert is an annotation-server user with a profile (capacity, availability) and declared domains with a level
1..5. Their **reputation** in a domain is measured, never declared, from three kinds of evidence, each turned into a
*skill* on the same scale — 0 = no better than chance, 1 = perfect, negative = worse than chance:

* **Gold** (annotation projects of the domain): the answers on gold items, scored by the annotation server's
  ``tasks.gold_score`` (fraction correct; ratings within the project's tolerance). With n gold answers, score sum
  s and chance level c (the score of a uniformly random answer: 1/3 for a preference, the share of the rating scale
  within tolerance of the gold score for ratings), the accuracy is the posterior mean under a Beta prior centred on
  chance, ``Â = (s + s0·c) / (n + s0)`` (``s0`` = ``gold_prior_strength``, default 2), so three right answers out of
  three give 0.73 on a 3-way choice, not 100 %; ``gold_skill = (Â − c) / (1 − c)``.
* **Peer agreement, chance-corrected** (the same projects, regular items): Dawid-Skene
  (:func:`assay.annotate.stats.dawid_skene`) estimates each annotator's confusion matrix E[k, c] = P(says k | truth
  c) and the label prior π. From those, ``p_o = Σ_c π_c E[c, c]`` (estimated accuracy) and ``p_e = Σ_k q_k π_k`` with
  ``q_k = Σ_c π_c E[k, c]`` (the accuracy of somebody answering with the same label frequencies but independently of
  the item); ``peer_skill = (p_o − p_e) / (1 − p_e)``, a κ of the annotator against the latent truth. An annotator
  who always gives the same label, or random ones, gets ≈ 0 however often they match the crowd. Evidence n = their
  labels on items someone else also labelled; several label sets (rating dimensions) are averaged weighted by n.
* **Knowledge reviews** (``knowledge_reviews`` of patches in the domain): each ``review`` verdict (accept / reject)
  against the version's outcome (accepted, approved or superseded → accept; rejected or retracted → reject; still
  open → not counted). With k agreements out of n and chance agreement c = P_user(accept)·P_domain(accept) +
  P_user(reject)·P_domain(reject), ``Â = (k + s0·c) / (n + s0)``, ``review_skill = (Â − c) / (1 − c)``. Note the
  outcome is partly made of the reviewer's own verdict, which flatters reviewers of small quorums.

Combined: ``score = Σ_x β_x n_x skill_x / (m0 + Σ_x β_x n_x)`` over the sources x with evidence — an evidence-
weighted mean shrunk toward 0 by ``m0`` pseudo-observations (default 10), with weights per unit of evidence β_gold
= 4 (a known answer is worth more than an agreement), β_peer = 1, β_review = 2. ``confidence = Σ β n / (m0 + Σ β
n)``. A newcomer starts at 0 and earns reputation by evidence; the declared level only weighs routing.

An annotation project belongs to a domain when its config lists it: ``config["domains"] = ["medicine", ...]``
(``assay annotate create-project --config``), or when passed explicitly (``projects=``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import delete, func, select

from assay.annotate import stats, tasks
from assay.annotate.models import REVIEW_REJECTED, Annotation, Item, Project
from assay.annotate.quality import _label_sets
from assay.annotate.workflow import find_project
from assay.experts.models import MAX_LEVEL, MIN_LEVEL, ExpertDomain, ExpertProfile, ExpertReputation
from assay.knowledge.models import PatchEvent, PatchReview, PatchVersion
from assay.knowledge.review import KnowledgeError, check_domain, find_user
from assay.platform.models import User, now

ACCEPT_OUTCOMES = ("accepted", "approved", "superseded")
REJECT_OUTCOMES = ("rejected", "retracted")


@dataclass(frozen=True)
class ReputationWeights:
    """The constants of the reputation formula (module docstring)."""

    gold_prior_strength: float = 2.0
    review_prior_strength: float = 2.0
    beta_gold: float = 4.0
    beta_peer: float = 1.0
    beta_review: float = 2.0
    shrinkage: float = 10.0  # m0


# -- profiles ------------------------------------------------------------------------------------------------------
def _expert_dict(s: Any, profile: ExpertProfile, username: str) -> dict[str, Any]:
    rows = s.scalars(select(ExpertDomain).where(ExpertDomain.user_id == profile.user_id))
    domains = {d.domain: d.level for d in rows}
    return {"user_id": profile.user_id, "username": username, "capacity": profile.capacity,
            "available": profile.available, "note": profile.note, "domains": dict(sorted(domains.items())),
            "updated_at": profile.updated_at}


def set_expert(db: Any, username: str, *, domains: Mapping[str, int] | None = None, capacity: int | None = None,
               available: bool | None = None, note: str | None = None,
               replace_domains: bool = False) -> dict[str, Any]:
    """Create or update ``username``'s expert profile. ``domains`` maps domain → level (1..5) and is merged into the
    declared domains (``replace_domains``: replaces them). Returns the profile as a dict."""
    if capacity is not None and not 0 <= capacity <= 1000:
        raise KnowledgeError("capacity must be between 0 and 1000 open tasks")
    clean: dict[str, int] = {}
    for d, level in (domains or {}).items():
        if not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
            raise KnowledgeError(f"level of {d!r} must be an integer {MIN_LEVEL}..{MAX_LEVEL}")
        domain = check_domain(d)
        if domain == "*":
            raise KnowledgeError("an expert declares concrete domains, not '*'")
        clean[domain] = level
    with db.write() as s:
        user = find_user(s, username)
        profile = s.get(ExpertProfile, user.id)
        if profile is None:
            profile = ExpertProfile(user_id=user.id, capacity=5 if capacity is None else capacity,
                                    available=True if available is None else available, note=note or "",
                                    updated_at=now())
            s.add(profile)
            s.flush()
        else:
            if capacity is not None:
                profile.capacity = capacity
            if available is not None:
                profile.available = available
            if note is not None:
                profile.note = note
            profile.updated_at = now()
        if replace_domains:
            s.execute(delete(ExpertDomain).where(ExpertDomain.user_id == user.id))
        for domain, level in clean.items():
            row = s.get(ExpertDomain, (user.id, domain))
            if row is None:
                s.add(ExpertDomain(user_id=user.id, domain=domain, level=level))
            else:
                row.level = level
        s.flush()
        return _expert_dict(s, profile, user.username)


def get_expert(db: Any, username: str) -> dict[str, Any] | None:
    with db.read() as s:
        user = s.scalar(select(User).where(User.username == username))
        profile = s.get(ExpertProfile, user.id) if user is not None else None
        return None if profile is None else _expert_dict(s, profile, user.username)


def list_experts(db: Any, domain: str | None = None) -> list[dict[str, Any]]:
    """Profiles (all, or those declaring ``domain``), with their stored reputation in each declared domain."""
    with db.read() as s:
        q = select(ExpertProfile, User.username).join(User, User.id == ExpertProfile.user_id).order_by(User.username)
        if domain is not None:
            q = q.where(ExpertProfile.user_id.in_(select(ExpertDomain.user_id)
                                                  .where(ExpertDomain.domain == check_domain(domain))))
        out = []
        reps = {(r.user_id, r.domain): r.score for r in s.scalars(select(ExpertReputation))}
        for profile, username in s.execute(q).all():
            e = _expert_dict(s, profile, username)
            e["reputation"] = {d: reps.get((profile.user_id, d)) for d in e["domains"]}
            out.append(e)
        return out


# -- evidence ------------------------------------------------------------------------------------------------------
def _beta_skill(score_sum: float, n: float, chance: float, strength: float) -> float | None:
    """Chance-corrected accuracy under a Beta prior centred on the chance level (see the module docstring)."""
    if n <= 0 or chance >= 1.0:
        return None
    acc = (score_sum + strength * chance) / (n + strength)
    return float((acc - chance) / (1.0 - chance))


def _gold_chance(task_type: str, config: dict[str, Any], gold: dict[str, Any]) -> float:
    """The expected gold score of a uniformly random answer."""
    if task_type == "preference":
        return 1.0 / len(tasks.PREFERENCE_CHOICES)
    lo, hi = config["scale"]
    tol = config.get("gold_tolerance", 0)
    dims = gold.get("scores", {})
    if not dims:
        return 1.0
    width = hi - lo + 1
    return float(np.mean([sum(abs(v - g) <= tol for v in range(lo, hi + 1)) / width for g in dims.values()]))


def peer_skill(triples: Sequence[tuple[Hashable, Hashable, Any]]) -> dict[Hashable, tuple[int, float | None]]:
    """Per annotator: (labels on items somebody else labelled too, Dawid-Skene κ against the latent truth)."""
    if not triples:
        return {}
    per_item: dict[Hashable, int] = {}
    for item, _w, _l in triples:
        per_item[item] = per_item.get(item, 0) + 1
    shared: dict[Hashable, int] = {}
    for item, w, _l in triples:
        shared[w] = shared.get(w, 0) + (per_item[item] >= 2)
    agg = stats.dawid_skene(triples)
    prior = np.array([agg.priors.get(c, 0.0) for c in agg.label_order])
    out: dict[Hashable, tuple[int, float | None]] = {}
    for w, E in agg.errors.items():  # E[observed, true]
        p_o = float((np.diag(E) * prior).sum())
        q = E @ prior  # how often w says each label
        p_e = float((q * prior).sum())
        kappa = None if p_e >= 1.0 - 1e-12 else (p_o - p_e) / (1.0 - p_e)
        out[w] = (shared.get(w, 0), None if kappa is None else float(np.clip(kappa, -1.0, 1.0)))
    return out


def _domain_projects(s: Any, domain: str, projects: Iterable[str | int] | None) -> list[Project]:
    if projects is not None:
        return [find_project(s, p) for p in projects]
    out = []
    for p in s.scalars(select(Project).order_by(Project.id)):
        tagged = p.config.get("domains") if isinstance(p.config, dict) else None
        if isinstance(tagged, list) and domain in {str(d).strip().lower() for d in tagged}:
            out.append(p)
    return out


def _annotation_evidence(s: Any, projects: list[Project]) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """(gold: user → [score sum, n, chance sum], peer: user → [n, Σ n·skill]) over ``projects``."""
    gold: dict[int, list[float]] = {}
    peer: dict[int, list[float]] = {}
    for project in projects:
        if project.task_type not in ("preference", "rating"):
            continue
        rows = s.execute(select(Annotation.item_id, Annotation.user_id, Annotation.value, Annotation.is_gold)
                         .where(Annotation.project_id == project.id,
                                Annotation.review_status != REVIEW_REJECTED)).all()
        answers = dict(s.execute(select(Item.id, Item.gold_answer)
                                 .where(Item.project_id == project.id, Item.is_gold.is_(True))).all())
        for r in rows:
            if r.is_gold and answers.get(r.item_id) is not None:
                g = gold.setdefault(r.user_id, [0.0, 0.0, 0.0])
                g[0] += tasks.gold_score(project.task_type, project.config, r.value, answers[r.item_id])
                g[1] += 1
                g[2] += _gold_chance(project.task_type, project.config, answers[r.item_id])
        regular = [r for r in rows if not r.is_gold]
        for triples in _label_sets(project, regular).values():
            for user, (n, skill) in peer_skill(triples).items():
                if skill is None or n == 0:
                    continue
                p = peer.setdefault(user, [0.0, 0.0])
                p[0] += n
                p[1] += n * skill
    return gold, peer


def _review_evidence(s: Any, domain: str, strength: float) -> dict[int, tuple[int, float | None]]:
    """Per reviewer: (verdicts on decided versions of the domain's patches, chance-corrected agreement skill)."""
    last = (select(PatchEvent.patch_id, PatchEvent.version, func.max(PatchEvent.seq).label("seq"))
            .group_by(PatchEvent.patch_id, PatchEvent.version).subquery())
    status = dict(((pid, v), st) for pid, v, st in s.execute(
        select(PatchEvent.patch_id, PatchEvent.version, PatchEvent.status)
        .join(last, PatchEvent.seq == last.c.seq)).all())
    versions = {(pid, v): doc for pid, v, doc in s.execute(
        select(PatchVersion.patch_id, PatchVersion.version, PatchVersion.document)).all()}
    pairs: dict[int, list[tuple[str, str]]] = {}
    outcomes: dict[tuple[str, int], str] = {}
    for pid, v, reviewer, verdict in s.execute(select(PatchReview.patch_id, PatchReview.version,
                                                      PatchReview.reviewer_id, PatchReview.verdict)
                                               .where(PatchReview.kind == "review")).all():
        doc = versions.get((pid, v)) or {}
        if domain not in (doc.get("domains") or []):
            continue
        st = status.get((pid, v))
        outcome = "accept" if st in ACCEPT_OUTCOMES else "reject" if st in REJECT_OUTCOMES else None
        if outcome is None:
            continue
        outcomes[(pid, v)] = outcome
        pairs.setdefault(reviewer, []).append((verdict, outcome))
    if not outcomes:
        return {}
    p_accept = sum(o == "accept" for o in outcomes.values()) / len(outcomes)
    out: dict[int, tuple[int, float | None]] = {}
    for reviewer, rows in pairs.items():
        n = len(rows)
        u_accept = sum(v == "accept" for v, _ in rows) / n
        chance = u_accept * p_accept + (1 - u_accept) * (1 - p_accept)
        agree = sum(v == o for v, o in rows)
        out[reviewer] = (n, _beta_skill(agree, n, chance, strength))
    return out


def compute_reputation(db: Any, domain: str, *, projects: Iterable[str | int] | None = None,
                       weights: ReputationWeights = ReputationWeights(), store: bool = True) -> list[dict[str, Any]]:
    """Reputation of every user with evidence in ``domain`` (and every expert declaring it), best first; stored in
    ``expert_reputation`` unless ``store`` is False. Each row explains itself: skills, evidence counts, weights."""
    domain = check_domain(domain)
    with db.read() as s:
        gold, peer = _annotation_evidence(s, _domain_projects(s, domain, projects))
        reviews = _review_evidence(s, domain, weights.review_prior_strength)
        declared = set(s.scalars(select(ExpertDomain.user_id).where(ExpertDomain.domain == domain)))
        names = dict(s.execute(select(User.id, User.username)).all())
    rows = []
    t = now()
    for uid in sorted(set(gold) | set(peer) | set(reviews) | declared):
        g = gold.get(uid)
        gold_n = g[1] if g else 0.0
        gold_skill = _beta_skill(g[0], g[1], g[2] / g[1], weights.gold_prior_strength) if g else None
        p = peer.get(uid)
        peer_n = int(p[0]) if p else 0
        p_skill = p[1] / p[0] if p and p[0] else None
        review_n, review_skill = reviews.get(uid, (0, None))
        parts = [(weights.beta_gold * gold_n, gold_skill), (weights.beta_peer * peer_n, p_skill),
                 (weights.beta_review * review_n, review_skill)]
        evidence = sum(w for w, x in parts if x is not None)
        weighted = sum(w * x for w, x in parts if x is not None)
        score = weighted / (weights.shrinkage + evidence)
        rows.append({"user_id": uid, "username": names.get(uid, str(uid)), "domain": domain,
                     "score": round(score, 6), "confidence": round(evidence / (weights.shrinkage + evidence), 6),
                     "gold_n": gold_n, "gold_skill": _round(gold_skill), "peer_n": peer_n,
                     "peer_skill": _round(p_skill), "review_n": int(review_n), "review_skill": _round(review_skill),
                     "details": {"weights": asdict(weights)}, "computed_at": t})
    rows.sort(key=lambda r: (-r["score"], r["username"]))
    if store:
        with db.write() as s:
            s.execute(delete(ExpertReputation).where(ExpertReputation.domain == domain))
            if rows:
                s.execute(ExpertReputation.__table__.insert(),
                          [{k: v for k, v in r.items() if k != "username"} for r in rows])
    return rows


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def stored_reputation(db: Any, domain: str) -> dict[int, float]:
    """user id → the last computed reputation score in ``domain``."""
    with db.read() as s:
        return dict(s.execute(select(ExpertReputation.user_id, ExpertReputation.score)
                              .where(ExpertReputation.domain == check_domain(domain))).all())

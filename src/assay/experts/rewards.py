"""Paying experts for reports nobody can check: peer-prediction scoring rules and the append-only rewards ledger.

Most expert work has no answer key — that is why it needs experts. A scoring rule that pays for agreeing with the
majority pays for *guessing what others will say*, which colluders and lazy annotators game by all giving the most
common answer. Peer-prediction rules pay for *informative* agreement instead.

**Correlated agreement** (CA; Shnayder, Agarwal, Frongillo & Parkes, "Informed Truthfulness in Multi-Task Peer
Prediction", EC 2016), for categorical reports on many a-priori-similar tasks:

1. Estimate the **Delta matrix** from the reports: Δ[k, l] = P(two agents on the same task report k and l) −
   P(k)·P(l), the joint distribution of peer reports minus the product of its marginals (each task weighs 1; its
   ordered pairs of distinct agents share that weight).
2. Scoring matrix S[k, l] = 1 if Δ[k, l] > 0 else 0 ("these two reports agree more often than chance").
3. For every task t and agent i who reported on it: pick a peer j who also did t, a **bonus task** b ≠ t that i did,
   and a **penalty task** p ∉ {t, b} that j did; score = S(r_i^t, r_j^t) − S(r_i^b, r_j^p).

The penalty term is the same comparison on two *unrelated* tasks, so whatever agreement a strategy gets without
looking at the task is subtracted again: an agent who always gives the same label, or a random one, or copies a
fixed label agreed with others, scores 0 in expectation; an informed honest agent scores > 0. Shnayder et al. prove
CA *informedly truthful*: truthful reporting is an equilibrium, no strategy profile pays more, and it pays strictly
more than any uninformed one. Assumptions: tasks are a priori similar (same prior, same signal model, so one Δ
fits all), agents' signals on different tasks are independent, agents use the same strategy on every task and
cannot coordinate on task features other than their signals, and Δ is known; here it is estimated from the batch
(the detail-free variant), so small batches only approximate the guarantee. Choices are made with a seeded
``random.Random`` over tasks and agents in sorted order: the same inputs and seed give the same pay.

**Peer truth serum** (RPTS; Radanovic, Faltings & Jurca, ACM TEAC 2016) is the second rule: score = 1[r_i^t =
r_j^t] / R(r_i^t) − 1, where R is the frequency of each label among the *other* agents' reports in the batch.
Agreeing on a common label pays little, on a rare one a lot; uninformed reports again score 0 in expectation.

:func:`majority_agreement` is the naive rule (1 when you match the majority of the others) kept only as the
baseline the simulation compares against; the ledger does not pay by it.

:func:`pay_batch` writes one ledger entry per scored (agent, task) with ``amount = base + scale · score``, in one
transaction with the batch row. A batch id pays once: repeating it with the same inputs returns the stored result,
with different inputs it is refused (:class:`BatchConflict`).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from assay.annotate.models import REVIEW_REJECTED, Annotation
from assay.experts.models import RewardBatch, RewardEntry
from assay.platform.models import User, now

Report = tuple[Hashable, Hashable, Hashable]  # (task, agent, label)
RULES = ("ca", "pts")
#: below this many scored reports an agent's pay does not reliably rank honest work above guessing. Measured with
#: ``benchmarks/knowledge_rewards.py --separation`` (CA; crowds of honest, half-effort and careless agents, 8 batches
#: per size, with 100 agents × 5 reports per task and 20 agents × 3): an honest agent (accuracy 0.75) out-earns a
#: random one in 71 % of pairs at 10 reports per agent, 77 % at 20, 88 % at 50, 95.5 % at 100 and 98 % at 150, in
#: both crowd sizes; out-earning a half-effort agent needs about 300 (≈ 0.9). So 100 reports per agent.
MIN_REPORTS_PER_AGENT = 100
SMALL_BATCH_POLICIES = ("warn", "refuse")


class SmallBatch(ValueError):
    """A batch too small for the rule's guarantee, with ``small_batch="refuse"``."""


class BatchConflict(ValueError):
    """A batch id that was already paid with different reports or parameters."""


def _order(x: Any) -> tuple[str, str]:
    """A total order over mixed hashable keys (ints, strings, tuples) that does not depend on input order."""
    return (type(x).__name__, str(x))


@dataclass
class ScoredReport:
    task: Hashable
    agent: Hashable
    score: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuleResult:
    """The scores of one rule over a set of reports, the skips (reason → count) and, for CA, Δ and S."""

    rule: str
    scores: list[ScoredReport]
    skipped: dict[str, int]
    labels: list[Any]
    delta: np.ndarray | None = None
    scoring: np.ndarray | None = None

    def per_agent(self) -> dict[Hashable, tuple[int, float]]:
        """agent → (number of scored reports, mean score)."""
        acc: dict[Hashable, list[float]] = {}
        for s in self.scores:
            a = acc.setdefault(s.agent, [0, 0.0])
            a[0] += 1
            a[1] += s.score
        return {agent: (int(n), total / n) for agent, (n, total) in acc.items()}


# -- report tables -------------------------------------------------------------------------------------------------
@dataclass
class _Table:
    by_task: dict[Hashable, dict[Hashable, Hashable]]  # task -> agent -> label
    tasks_of: dict[Hashable, list[Hashable]]  # agent -> sorted tasks
    labels: list[Any]
    skipped: dict[str, int]


def _table(reports: Iterable[Report], labels: Sequence[Any] | None) -> _Table:
    by_task: dict[Hashable, dict[Hashable, Hashable]] = {}
    skipped: dict[str, int] = {}
    allowed = None if labels is None else set(labels)
    for row in reports:
        try:
            task, agent, label = row
            hash(task), hash(agent), hash(label)
        except (TypeError, ValueError):
            skipped["malformed_report"] = skipped.get("malformed_report", 0) + 1
            continue
        if label is None or (allowed is not None and label not in allowed):
            skipped["unknown_label"] = skipped.get("unknown_label", 0) + 1
            continue
        per = by_task.setdefault(task, {})
        if agent in per:
            # one report per agent and task; a second (even an equal one) would let a copier count twice
            skipped["duplicate_report"] = skipped.get("duplicate_report", 0) + 1
            continue
        per[agent] = label
    tasks_of: dict[Hashable, list[Hashable]] = {}
    for task in sorted(by_task, key=_order):
        for agent in by_task[task]:
            tasks_of.setdefault(agent, []).append(task)
    label_list = (list(labels) if labels is not None
                  else sorted({lab for per in by_task.values() for lab in per.values()}, key=_order))
    return _Table(by_task, tasks_of, label_list, skipped)


# -- Correlated agreement ------------------------------------------------------------------------------------------
def delta_matrix(reports: Iterable[Report], labels: Sequence[Any] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Δ = joint distribution of two distinct agents' reports on the same task minus the product of its marginals.
    Tasks with fewer than two reports carry no pair and are ignored; each other task has weight 1."""
    tab = _table(reports, labels)
    return _delta(tab), tab.labels


def _delta(tab: _Table) -> np.ndarray:
    index = {lab: k for k, lab in enumerate(tab.labels)}
    K = len(tab.labels)
    joint = np.zeros((K, K))
    n_tasks = 0
    for per in tab.by_task.values():
        n = len(per)
        if n < 2:
            continue
        counts = np.zeros(K)
        for lab in per.values():
            counts[index[lab]] += 1
        # ordered pairs of distinct agents: counts ⊗ counts minus the agent paired with itself
        joint += (np.outer(counts, counts) - np.diag(counts)) / (n * (n - 1))
        n_tasks += 1
    if n_tasks == 0:
        return np.zeros((K, K))
    joint /= n_tasks
    marginal = joint.sum(axis=1)
    return joint - np.outer(marginal, marginal)


def _pick(rng: random.Random, options: list[Hashable], exclude: tuple[Hashable, ...],
          n_excluded_present: int) -> Hashable | None:
    """A uniformly random element of ``options`` (no repeats) not in ``exclude``, of which ``n_excluded_present``
    elements occur in ``options``; None when nothing is left."""
    if len(options) <= n_excluded_present:
        return None
    while True:  # rejection sampling: at most two values are refused, so this ends quickly
        x = options[rng.randrange(len(options))]
        if x not in exclude:
            return x


def correlated_agreement(reports: Iterable[Report], *, seed: int = 0, labels: Sequence[Any] | None = None,
                         scoring: np.ndarray | None = None) -> RuleResult:
    """Score every (task, agent) report by the CA mechanism (see the module docstring). ``scoring`` overrides the
    S matrix estimated from the reports (e.g. one learned on an earlier batch). Reports that cannot be scored are
    counted in ``skipped``: ``no_peer`` (nobody else did the task), ``no_bonus_task`` (the agent did only this
    task), ``no_penalty_task`` (the peer did nothing besides t and b)."""
    tab = _table(reports, labels)
    delta = _delta(tab)
    S = (delta > 0).astype(np.int64) if scoring is None else np.asarray(scoring)
    K = len(tab.labels)
    if S.shape != (K, K):
        raise ValueError(f"scoring matrix must be {K}x{K} for labels {tab.labels}")
    index = {lab: k for k, lab in enumerate(tab.labels)}
    rng = random.Random(seed)
    skipped = dict(tab.skipped)
    scores: list[ScoredReport] = []
    for t in sorted(tab.by_task, key=_order):
        per = tab.by_task[t]
        agents = sorted(per, key=_order)
        for i in agents:
            peers = [a for a in agents if a != i]
            if not peers:
                skipped["no_peer"] = skipped.get("no_peer", 0) + 1
                continue
            j = peers[rng.randrange(len(peers))]
            b = _pick(rng, tab.tasks_of[i], (t,), 1)
            if b is None:
                skipped["no_bonus_task"] = skipped.get("no_bonus_task", 0) + 1
                continue
            p = _pick(rng, tab.tasks_of[j], (t, b), 1 + (j in tab.by_task[b]))
            if p is None:
                skipped["no_penalty_task"] = skipped.get("no_penalty_task", 0) + 1
                continue
            bonus = int(S[index[per[i]], index[per[j]]])
            penalty = int(S[index[tab.by_task[b][i]], index[tab.by_task[p][j]]])
            scores.append(ScoredReport(t, i, float(bonus - penalty),
                                       {"peer": j, "bonus_task": b, "penalty_task": p, "agree": bonus,
                                        "baseline": penalty}))
    return RuleResult("ca", scores, skipped, tab.labels, delta, S)


# -- Peer truth serum ----------------------------------------------------------------------------------------------
def peer_truth_serum(reports: Iterable[Report], *, seed: int = 0, labels: Sequence[Any] | None = None) -> RuleResult:
    """Score every report by RPTS: 1[r_i = r_j] / R_{-i}(r_i) − 1 with a random peer j on the same task and R_{-i}
    the label frequencies of everybody else's reports in the batch (add-one smoothed, so no label has R = 0)."""
    tab = _table(reports, labels)
    index = {lab: k for k, lab in enumerate(tab.labels)}
    K = len(tab.labels)
    total = np.zeros(K)
    own: dict[Hashable, np.ndarray] = {}
    for per in tab.by_task.values():
        for agent, lab in per.items():
            total[index[lab]] += 1
            own.setdefault(agent, np.zeros(K))[index[lab]] += 1
    rng = random.Random(seed)
    skipped = dict(tab.skipped)
    scores: list[ScoredReport] = []
    freq_cache: dict[Hashable, np.ndarray] = {}
    for t in sorted(tab.by_task, key=_order):
        per = tab.by_task[t]
        agents = sorted(per, key=_order)
        for i in agents:
            peers = [a for a in agents if a != i]
            if not peers:
                skipped["no_peer"] = skipped.get("no_peer", 0) + 1
                continue
            j = peers[rng.randrange(len(peers))]
            if i not in freq_cache:
                others = total - own[i] + 1.0
                freq_cache[i] = others / others.sum()
            r = freq_cache[i][index[per[i]]]
            agree = int(per[i] == per[j])
            scores.append(ScoredReport(t, i, agree / r - 1.0, {"peer": j, "agree": agree, "R": round(float(r), 6)}))
    return RuleResult("pts", scores, skipped, tab.labels)


# -- the naive baseline (not payable) ------------------------------------------------------------------------------
def majority_agreement(reports: Iterable[Report], *, labels: Sequence[Any] | None = None) -> RuleResult:
    """1 when the report equals the strict majority of the *other* reports on the task, else 0 (ties: 0). Kept as
    the baseline that shows why CA is used: agents who all give the most common label win under it."""
    tab = _table(reports, labels)
    skipped = dict(tab.skipped)
    scores: list[ScoredReport] = []
    for t in sorted(tab.by_task, key=_order):
        per = tab.by_task[t]
        for i in sorted(per, key=_order):
            counts: dict[Hashable, int] = {}
            for a, lab in per.items():
                if a != i:
                    counts[lab] = counts.get(lab, 0) + 1
            if not counts:
                skipped["no_peer"] = skipped.get("no_peer", 0) + 1
                continue
            top = max(counts.values())
            winners = [lab for lab, c in counts.items() if c == top]
            scores.append(ScoredReport(t, i, float(len(winners) == 1 and per[i] == winners[0])))
    return RuleResult("majority", scores, skipped, tab.labels)


_RULES: dict[str, Callable[..., RuleResult]] = {"ca": correlated_agreement, "pts": peer_truth_serum}


def score_reports(reports: Iterable[Report], rule: str = "ca", *, seed: int = 0,
                  labels: Sequence[Any] | None = None) -> RuleResult:
    if rule not in _RULES:
        raise ValueError(f"unknown reward rule {rule!r}; choose from {', '.join(RULES)}")
    return _RULES[rule](reports, seed=seed, labels=labels)


# -- reports from the annotation database --------------------------------------------------------------------------
def annotation_reports(db: Any, project_ref: str | int, *, since: float | None = None,
                       until: float | None = None) -> dict[str, list[Report]]:
    """The categorical reports of an annotation project, one group per label set (``choice`` for preference
    projects, one per rubric dimension for ratings), as ``("item:ID[:dim]", user_id, label)``. Gold items and
    rejected annotations are left out; ``since``/``until`` bound the submission time (Unix seconds, half-open)."""
    from assay.annotate.quality import _label_sets
    from assay.annotate.workflow import find_project

    with db.read() as s:
        project = find_project(s, project_ref)
        q = (select(Annotation.item_id, Annotation.user_id, Annotation.value)
             .where(Annotation.project_id == project.id, Annotation.is_gold.is_(False),
                    Annotation.review_status != REVIEW_REJECTED))
        if since is not None:
            q = q.where(Annotation.created_at >= since)
        if until is not None:
            q = q.where(Annotation.created_at < until)
        rows = s.execute(q).all()
        sets = _label_sets(project, rows)
    if not sets:
        raise ValueError(f"project {project.name!r} ({project.task_type}) has no categorical answers to pay by "
                         "peer prediction (preference and rating projects only)")
    multi = len(sets) > 1
    return {name: [(f"item:{item}:{name}" if multi else f"item:{item}", user, label) for item, user, label in triples]
            for name, triples in sets.items()}


# -- the ledger ----------------------------------------------------------------------------------------------------
def _digest(groups: Mapping[str, list[Report]], params: dict[str, Any]) -> str:
    canon = {"params": params,
             "groups": {g: sorted([str(t), str(a), str(lab)] for t, a, lab in rows) for g, rows in groups.items()}}
    return hashlib.sha256(orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _seed_for(batch_id: str, group: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{batch_id}\0{group}".encode()).digest()[:8], "big")


def _batch_summary(batch: RewardBatch, already_paid: bool) -> dict[str, Any]:
    return {"batch_id": batch.batch_id, "rule": batch.rule, "params": batch.params, "n_reports": batch.n_reports,
            "n_entries": batch.n_entries, "total": batch.total, "already_paid": already_paid, **batch.summary}


def pay_batch(db: Any, batch_id: str, reports: Iterable[Report] | Mapping[str, Iterable[Report]], *,
              rule: str = "ca", seed: int = 0, scale: float = 1.0, base: float = 0.0,
              labels: Sequence[Any] | None = None, small_batch: str = "warn",
              min_reports: int = MIN_REPORTS_PER_AGENT) -> dict[str, Any]:
    """Score ``reports`` (``(task, user_id, label)``; or a mapping group → reports, each group scored on its own,
    e.g. one per rating dimension) by ``rule`` and append one ledger entry per scored report, ``amount = base +
    scale · score``. Idempotent per ``batch_id``: see the module docstring. Reports naming a user id that does not
    exist are skipped and counted (``unknown_user``). Returns the batch summary: entries, total, per-user totals,
    skipped reports by reason.

    An agent with fewer than ``min_reports`` scored reports in a group is below the size where the rule separates
    honest from guessed work (:data:`MIN_REPORTS_PER_AGENT`): ``small_batch="warn"`` pays and marks each such entry
    (``details.below_guarantee``, ``details.agent_reports``) and the summary (``small_batch``); ``"refuse"`` raises
    :class:`SmallBatch` before anything is written."""
    if rule not in _RULES:
        raise ValueError(f"unknown reward rule {rule!r}; choose from {', '.join(RULES)}")
    if small_batch not in SMALL_BATCH_POLICIES:
        raise ValueError(f"small_batch must be one of {', '.join(SMALL_BATCH_POLICIES)}")
    batch_id = str(batch_id).strip()
    if not batch_id or len(batch_id) > 64:
        raise ValueError("batch id must be 1-64 characters")
    if not (math.isfinite(scale) and math.isfinite(base)):
        raise ValueError("scale and base must be finite numbers")
    groups = ({str(g): list(r) for g, r in reports.items()} if isinstance(reports, Mapping)
              else {"": list(reports)})
    params = {"seed": seed, "scale": scale, "base": base, "labels": None if labels is None else list(labels)}
    digest = _digest(groups, {"rule": rule, **params})

    def existing() -> dict[str, Any] | None:
        with db.read() as s:
            batch = s.get(RewardBatch, batch_id)
            if batch is None:
                return None
            if batch.inputs_digest != digest:
                raise BatchConflict(f"batch {batch_id!r} was already paid with other reports or parameters")
            return _batch_summary(batch, True)

    done = existing()
    if done is not None:
        return done

    with db.read() as s:
        user_ids = set(s.scalars(select(User.id)))
    skipped: dict[str, int] = {}
    entries: list[dict[str, Any]] = []
    below: set[tuple[str, Hashable]] = set()   # (group, agent) under min_reports
    scored_agents: set[tuple[str, Hashable]] = set()
    t = now()
    n_reports = 0
    for group in sorted(groups):
        rows = []
        for row in groups[group]:
            n_reports += 1
            if len(row) != 3 or not isinstance(row[1], int) or row[1] not in user_ids:
                skipped["unknown_user"] = skipped.get("unknown_user", 0) + 1
                continue
            rows.append(row)
        result = score_reports(rows, rule, seed=_seed_for(batch_id, group, seed), labels=labels)
        for reason, n in result.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
        counts = {agent: n for agent, (n, _mean) in result.per_agent().items()}
        scored_agents.update((group, a) for a in counts)
        below.update((group, a) for a, n in counts.items() if n < min_reports)
        for sc in result.scores:
            task = str(sc.task)
            if len(task) > 200:
                skipped["task_name_too_long"] = skipped.get("task_name_too_long", 0) + 1
                continue
            details = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in sc.details.items()}
            details["score"] = sc.score
            if group:
                details["group"] = group
            if (group, sc.agent) in below:
                details["below_guarantee"] = True
                details["agent_reports"] = counts[sc.agent]
            entries.append({"batch_id": batch_id, "user_id": sc.agent, "task": task,
                            "amount": round(base + scale * sc.score, 6), "rule": rule, "computed_at": t,
                            "details": details})
    per_user: dict[int, float] = {}
    for e in entries:
        per_user[e["user_id"]] = per_user.get(e["user_id"], 0.0) + e["amount"]
    summary = {"skipped": skipped, "per_user": {str(u): round(v, 6) for u, v in sorted(per_user.items())}}
    if below:
        summary["small_batch"] = {
            "min_reports_per_agent": min_reports, "agents_below": len(below), "agents": len(scored_agents),
            "note": f"{len(below)} of {len(scored_agents)} agent(s) have fewer than {min_reports} scored reports: "
                    f"at that size {rule} does not reliably pay honest work above guessing"}
        if small_batch == "refuse":
            raise SmallBatch(f"batch {batch_id!r} is too small: {summary['small_batch']['note']} (nothing written)")
    batch = RewardBatch(batch_id=batch_id, rule=rule, params=params, inputs_digest=digest, n_reports=n_reports,
                        n_entries=len(entries), total=round(sum(e["amount"] for e in entries), 6), summary=summary,
                        created_at=t)
    try:
        with db.write() as s:
            s.add(batch)
            s.flush()  # the batch row first: a concurrent payer of the same id fails here, before any entry
            if entries:
                s.execute(RewardEntry.__table__.insert(), entries)
    except IntegrityError:
        done = existing()  # somebody paid this batch id in the meantime
        if done is None:
            raise
        return done
    return _batch_summary(batch, False)


def balances(db: Any, user_id: int | None = None) -> dict[int, float]:
    """Sum of ledger amounts per user (all batches)."""
    with db.read() as s:
        q = select(RewardEntry.user_id, func.sum(RewardEntry.amount)).group_by(RewardEntry.user_id)
        if user_id is not None:
            q = q.where(RewardEntry.user_id == user_id)
        return {int(u): round(float(v), 6) for u, v in s.execute(q).all()}


def ledger_entries(db: Any, *, batch_id: str | None = None, user_id: int | None = None) -> list[dict[str, Any]]:
    """Ledger rows as dicts, oldest first."""
    with db.read() as s:
        q = select(RewardEntry).order_by(RewardEntry.id)
        if batch_id is not None:
            q = q.where(RewardEntry.batch_id == batch_id)
        if user_id is not None:
            q = q.where(RewardEntry.user_id == user_id)
        return [{"id": e.id, "batch_id": e.batch_id, "user_id": e.user_id, "task": e.task, "amount": e.amount,
                 "rule": e.rule, "computed_at": e.computed_at, "details": e.details} for e in s.scalars(q)]


# -- simulation ----------------------------------------------------------------------------------------------------
@dataclass
class SimAgent:
    """A simulated reporter. ``kind``: ``honest`` (reports its signal, correct with probability ``accuracy``, else
    a uniformly random wrong label), ``careless`` (uniform random label), ``colluder`` (always the label that is
    most common a priori — the "majority guess"), ``colluder_hash`` (colluders agree on a label derived from the task
    id: task-dependent coordination without looking, which is outside CA's model — see the docs), ``half_effort``
    (looks at half the tasks, reporting its signal like an honest agent of its ``accuracy``, and answers the other
    half at random)."""

    name: str
    kind: str
    accuracy: float = 0.0


def simulate_reports(agents: Sequence[SimAgent], *, n_tasks: int, per_task: int, prior: Sequence[float],
                     seed: int = 0) -> tuple[list[Report], dict[int, int]]:
    """A crowd: ``n_tasks`` tasks with a latent true label drawn from ``prior``, each reported by ``per_task``
    distinct agents drawn uniformly. Returns (reports, true label per task)."""
    rng = np.random.default_rng(seed)
    K = len(prior)
    p = np.asarray(prior, dtype=float)
    p = p / p.sum()
    majority = int(np.argmax(p))
    truth = rng.choice(K, size=n_tasks, p=p)
    reports: list[Report] = []
    for t in range(n_tasks):
        for a in rng.choice(len(agents), size=per_task, replace=False):
            agent = agents[int(a)]
            looks = agent.kind == "honest" or (agent.kind == "half_effort" and rng.random() < 0.5)
            if looks:
                if rng.random() < agent.accuracy:
                    label = int(truth[t])
                else:
                    label = int(rng.choice([k for k in range(K) if k != truth[t]]))
            elif agent.kind in ("careless", "half_effort"):
                label = int(rng.integers(K))
            elif agent.kind == "colluder":
                label = majority
            elif agent.kind == "colluder_hash":
                label = int(hashlib.sha256(str(t).encode()).digest()[0]) % K
            else:
                raise ValueError(f"unknown agent kind {agent.kind!r}")
            reports.append((t, agent.name, label))
    return reports, {t: int(truth[t]) for t in range(n_tasks)}


def make_population(n_agents: int, mix: Mapping[str, float], honest_accuracies: Sequence[float] = (0.9, 0.75, 0.6),
                    ) -> list[SimAgent]:
    """``n_agents`` agents split by ``mix`` (kind → share, largest remainder rounding); honest and half-effort agents
    cycle through ``honest_accuracies``."""
    kinds = sorted(mix)
    raw = {k: mix[k] * n_agents / sum(mix.values()) for k in kinds}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(kinds, key=lambda k: raw[k] - counts[k], reverse=True)[:n_agents - sum(counts.values())]:
        counts[k] += 1
    agents: list[SimAgent] = []
    for kind in kinds:
        for n in range(counts[kind]):
            acc = honest_accuracies[n % len(honest_accuracies)] if kind in ("honest", "half_effort") else 0.0
            agents.append(SimAgent(f"{kind}-{n}", kind, acc))
    return agents


def payout_by_kind(result: RuleResult, agents: Sequence[SimAgent],
                   by_accuracy: bool = False) -> dict[str, dict[str, float]]:
    """Mean payout per report of each agent kind (``by_accuracy``: honest agents split as ``honest@0.9`` …): the
    mean over agents, its 95% normal-approximation confidence interval over agents, and the number of agents."""
    per = result.per_agent()

    def group(a: SimAgent) -> str:
        return f"honest@{a.accuracy:g}" if by_accuracy and a.kind == "honest" else a.kind

    out: dict[str, dict[str, float]] = {}
    for name in sorted({group(a) for a in agents}):
        values = np.array([per[a.name][1] for a in agents if group(a) == name and a.name in per])
        if len(values) == 0:
            continue
        sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        half = 1.96 * sd / math.sqrt(len(values))
        mean = float(values.mean())
        out[name] = {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "agents": int(len(values))}
    return out

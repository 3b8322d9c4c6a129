"""Simulated experts with known per-domain accuracy, shared misconceptions and coherent schools: the ground truth
against which :mod:`.aggregate` is measured (``benchmarks/superbrain.py`` prints the table; the tests check its
properties on a small seeded run).

The world: each domain has questions with ``options`` possible answers (claim clusters). A question has one true
answer, except the *contested* questions of a schooled domain, where each school holds its own answer (both are
legitimate positions, e.g. two schools of medicine). Every expert belongs to one school in each schooled domain.
An expert answers a question with probability ``answer_rate``; with their accuracy in the domain they give the
true answer (their school's, on a contested question), otherwise a wrong one, which is the question's popular
misconception with probability ``misconception`` (errors are correlated, as they are among people) and a uniform
other answer otherwise. Accuracies: in ``mixed`` worlds a minority of experts is strong in a domain (0.85–0.95)
and the rest weak (0.30–0.50), each expert strong in its own domains, and every school has strong and weak
members; in ``equal`` worlds everybody has 0.7.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from assay.evolve.superbrain.aggregate import (AggregateOptions, Aggregation, Vote, aggregate, majority_vote,
                                               reputation_weighted_vote)


@dataclass(frozen=True)
class SimConfig:
    domains: tuple[str, ...] = ("medicine", "law", "chemistry")
    schooled: tuple[str, ...] = ("medicine",)
    experts: int = 20
    questions: int = 60  # per domain, gold included
    gold: int = 8  # per domain
    options: int = 4
    contested_share: float = 0.25  # of the regular questions of a schooled domain
    schools: int = 2
    answer_rate: float = 0.8
    misconception: float = 0.6
    strong_share: float = 0.35
    reliability: str = "mixed"  # mixed | equal
    seed: int = 0


@dataclass
class World:
    config: SimConfig
    votes: list[Vote]
    gold: dict[str, int]
    truth: dict[str, int]  # factual questions (gold included)
    contested: dict[str, set[int]]  # contested question -> the schools' answers
    accuracy: dict[tuple[str, str], float]  # (expert, domain) -> true accuracy
    school: dict[tuple[str, str], int] = field(default_factory=dict)  # (expert, domain) -> school


def simulate(config: SimConfig) -> World:
    rng = np.random.default_rng(config.seed)
    c = config
    experts = [f"e{i:02d}" for i in range(c.experts)]
    accuracy: dict[tuple[str, str], float] = {}
    school = {}
    for d in c.domains:
        strong = rng.choice(c.experts, size=max(1, round(c.strong_share * c.experts)), replace=False).tolist()
        for i, e in enumerate(experts):
            if c.reliability == "equal":
                accuracy[(e, d)] = 0.7
            else:
                accuracy[(e, d)] = float(rng.uniform(0.85, 0.95) if i in strong else rng.uniform(0.30, 0.50))
        if d in c.schooled:  # schools are dealt out within the strong and the weak experts: each has both
            weak = [i for i in rng.permutation(c.experts).tolist() if i not in strong]
            for rank, i in enumerate(strong + weak):
                school[(experts[i], d)] = rank % c.schools
    votes, gold, truth, contested = [], {}, {}, {}
    for d in c.domains:
        n_regular = c.questions - c.gold
        n_contested = round(c.contested_share * n_regular) if d in c.schooled else 0
        for j in range(c.questions):
            q = f"{d}/q{j:03d}"
            answers = rng.permutation(c.options).tolist()
            misconception = answers[-1]
            is_gold = j < c.gold
            is_contested = not is_gold and j < c.gold + n_contested
            if is_contested:
                held = answers[:c.schools]
                contested[q] = set(held)
            else:
                truth[q] = answers[0]
                if is_gold:
                    gold[q] = answers[0]
            for e in experts:
                if rng.random() >= c.answer_rate:
                    continue
                right = held[school[(e, d)]] if is_contested else answers[0]
                if rng.random() < accuracy[(e, d)]:
                    said = right
                elif misconception != right and rng.random() < c.misconception:
                    said = misconception
                else:
                    said = int(rng.choice([a for a in range(c.options) if a != right]))
                votes.append(Vote(e, q, d, int(said)))
    return World(c, votes, gold, truth, contested, accuracy, school)


def adjusted_rand_index(labels_true: Sequence[Hashable], labels_pred: Sequence[Hashable]) -> float:
    """Hubert and Arabie's adjusted Rand index (1 = identical partitions, ≈ 0 = chance); 1.0 when both partitions
    are a single cluster or all singletons (the convention scikit-learn follows)."""
    from math import comb

    if len(labels_true) != len(labels_pred):
        raise ValueError("the two labelings differ in length")
    n = len(labels_true)
    table: dict[tuple[Hashable, Hashable], int] = {}
    rows: dict[Hashable, int] = {}
    cols: dict[Hashable, int] = {}
    for a, b in zip(labels_true, labels_pred):
        table[(a, b)] = table.get((a, b), 0) + 1
        rows[a] = rows.get(a, 0) + 1
        cols[b] = cols.get(b, 0) + 1
    index = sum(comb(v, 2) for v in table.values())
    sum_rows = sum(comb(v, 2) for v in rows.values())
    sum_cols = sum(comb(v, 2) for v in cols.values())
    total = comb(n, 2)
    if total == 0:
        return 1.0
    expected = sum_rows * sum_cols / total
    maximum = (sum_rows + sum_cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


@dataclass
class Scores:
    method: str
    factual_accuracy: float  # regular (non-gold) factual questions answered right
    schools_presented: float  # contested questions whose output presents every school's answer
    false_contests: float  # factual questions wrongly reported as contested
    school_ari: float | None  # expert school recovery (schooled domains), None without schools


def score(world: World, agg: Aggregation | None = None) -> list[Scores]:
    """Majority vote, reputation-weighted vote and Assay's method on ``world``."""
    agg = agg or aggregate(world.votes, world.gold)
    regular = [q for q in world.truth if q not in world.gold]
    out = []
    for name, picks in (("majority vote", majority_vote(world.votes)),
                        ("reputation-weighted vote", reputation_weighted_vote(world.votes, world.gold))):
        acc = float(np.mean([picks.get(q) == world.truth[q] for q in regular]))
        ari = _ari(world, {}) if world.contested else None
        out.append(Scores(name, acc, 0.0, 0.0, ari))
    dec = agg.decisions
    acc = float(np.mean([dec[q].status in ("consensus", "uncertain") and dec[q].answer == world.truth[q]
                         for q in regular if q in dec]))
    presented = [dec[q].status == "contested" and held <= {a.answer for a in dec[q].alternatives}
                 for q, held in world.contested.items() if q in dec]
    false = float(np.mean([dec[q].status == "contested" for q in regular if q in dec]))
    schools = {}
    for d in world.config.schooled:
        schools.update({(e, d): s for e, s in agg.school_of(d).items()})
    out.append(Scores("Assay (reliability + schools)", acc, float(np.mean(presented)) if presented else 0.0, false,
                      _ari(world, schools) if world.contested else None))
    return out


def _ari(world: World, predicted: dict[tuple[str, str], str]) -> float:
    """ARI over the experts of the schooled domains (an expert without a predicted school is put in one 'none'
    cluster: collapsing everybody into one answer is ARI 0)."""
    keys = sorted(world.school)
    return adjusted_rand_index([f"{k[1]}:{world.school[k]}" for k in keys],
                               [f"{k[1]}:{predicted.get(k, 'none')}" for k in keys])


def run(config: SimConfig, options: AggregateOptions | None = None) -> dict[str, Any]:
    world = simulate(config)
    agg = aggregate(world.votes, world.gold, options=options)
    est = np.array([agg.reliability.get(k, np.nan) for k in sorted(world.accuracy)])
    true = np.array([world.accuracy[k] for k in sorted(world.accuracy)])
    ok = ~np.isnan(est)
    corr = float(np.corrcoef(est[ok], true[ok])[0, 1]) if ok.sum() > 2 and true[ok].std() > 0 else None
    return {"scores": score(world, agg), "reliability_corr": corr, "world": world, "aggregation": agg}


def table(configs: Sequence[SimConfig], options: AggregateOptions | None = None) -> list[dict[str, Any]]:
    """Mean scores per (setting, method) over the worlds of ``configs`` (the setting is ``reliability`` and the
    number of schools)."""
    acc: dict[tuple[str, str], list[Scores]] = {}
    for c in configs:
        for s in run(c, options)["scores"]:
            acc.setdefault((f"{c.reliability}, {c.schools} schools", s.method), []).append(s)
    rows = []
    for (setting, method), scores in acc.items():
        aris = [s.school_ari for s in scores if s.school_ari is not None]
        rows.append({"setting": setting, "method": method, "worlds": len(scores),
                     "factual_accuracy": float(np.mean([s.factual_accuracy for s in scores])),
                     "schools_presented": float(np.mean([s.schools_presented for s in scores])),
                     "false_contests": float(np.mean([s.false_contests for s in scores])),
                     "school_ari": float(np.mean(aris)) if aris else None})
    return rows

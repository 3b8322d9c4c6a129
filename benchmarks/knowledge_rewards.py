"""Rewards simulation: who earns what under correlated agreement (CA), the peer truth serum (PTS) and naive
majority-agreement pay, in simulated crowds of honest, careless and colluding agents.

Each crowd: ``--tasks`` tasks with a latent true label (prior 0.5/0.3/0.2 over three labels), each reported by
``--per-task`` distinct agents out of ``--agents``. Honest agents report their signal (correct with probability 0.9,
0.75 or 0.6, else a random wrong label); careless agents answer at random; colluders always give the a-priori most
common label (the "majority guess"). The last crowd uses task-dependent collusion (colluders agree on a label
derived from the task id), which is outside CA's model and shown as its limit. Figures: mean payout per report of
each agent type (mean over agents, 95 % CI over agents). Then the same reports are paid into a real SQLite ledger
to time :func:`assay.experts.rewards.pay_batch`.

    python benchmarks/knowledge_rewards.py [--tasks 4000] [--agents 100] [--per-task 5] [--seed 0]

``--separation`` answers "how big must a batch be?": crowds of honest (accuracy 0.75), half-effort (look at half the
tasks, guess the rest) and careless agents (half, a quarter, a quarter) are paid by CA over ``--trials`` seeds for
each number of reports per agent; it prints how often an honest agent out-earns a careless one and a half-effort
one (every honest–other pair compared within its batch).

    python benchmarks/knowledge_rewards.py --separation [--agents 100] [--per-task 5] [--trials 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from assay.experts.rewards import (correlated_agreement, majority_agreement, make_population, payout_by_kind,
                                     peer_truth_serum, simulate_reports)

PRIOR = [0.5, 0.3, 0.2]
CROWDS = [("70/20/10", {"honest": 0.7, "careless": 0.2, "colluder": 0.1}),
          ("40/30/30", {"honest": 0.4, "careless": 0.3, "colluder": 0.3}),
          ("40/30/30 task-hash collusion (outside CA's model)",
           {"honest": 0.4, "careless": 0.3, "colluder_hash": 0.3})]


def _fmt(v: dict[str, float]) -> str:
    return f"{v['mean']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"


def ledger_timing(reports: list, n_agents: int) -> str:
    from assay.platform.db import Database
    from assay.platform.models import User
    from assay.experts.rewards import pay_batch

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(str(Path(tmp) / "ledger.db"))
        db.migrate()
        with db.write() as s:
            s.add_all([User(id=i + 1, username=f"agent{i}", password_hash="x", role="annotator", active=True)
                       for i in range(n_agents)])
        index: dict[str, int] = {}
        rows = [(f"task:{t}", index.setdefault(a, len(index) + 1), lab) for t, a, lab in reports]
        t0 = time.perf_counter()
        first = pay_batch(db, "bench", rows)
        t1 = time.perf_counter()
        again = pay_batch(db, "bench", rows)
        t2 = time.perf_counter()
        db.dispose()
    assert again["already_paid"]
    return (f"ledger (SQLite): paid {first['n_entries']} entries in {t1 - t0:.2f} s; "
            f"re-paying the same batch: {t2 - t1:.2f} s, nothing written (already_paid)")


SEPARATION_MIX = {"honest": 0.5, "half_effort": 0.25, "careless": 0.25}
REPORTS_PER_AGENT = (10, 20, 50, 100, 150, 200, 300, 400)


def _beats(a: np.ndarray, b: np.ndarray) -> float:
    """P(a random element of a > a random element of b), ties counting half."""
    return float((a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean())


def separation(n_agents: int, per_task: int, trials: int) -> None:
    print(f"CA separation: {n_agents} agents ({SEPARATION_MIX}), {per_task} reports per task, {trials} batches per "
          "size; honest and half-effort accuracy 0.75\n")
    print("| reports per agent | tasks | P(honest > careless) | P(honest > half-effort) | mean pay honest / half / "
          "careless |")
    print("|---|---|---|---|---|")
    agents = make_population(n_agents, SEPARATION_MIX, honest_accuracies=(0.75,))
    for per_agent in REPORTS_PER_AGENT:
        n_tasks = per_agent * n_agents // per_task
        vs_careless, vs_half, means = [], [], {k: [] for k in SEPARATION_MIX}
        for seed in range(trials):
            reports, _ = simulate_reports(agents, n_tasks=n_tasks, per_task=per_task, prior=PRIOR, seed=seed)
            per = correlated_agreement(reports, seed=seed).per_agent()
            pay = {k: np.array([per[a.name][1] for a in agents if a.kind == k and a.name in per])
                   for k in SEPARATION_MIX}
            vs_careless.append(_beats(pay["honest"], pay["careless"]))
            vs_half.append(_beats(pay["honest"], pay["half_effort"]))
            for k in SEPARATION_MIX:
                means[k].append(float(pay[k].mean()))
        print(f"| {per_agent} | {n_tasks} | {np.mean(vs_careless):.3f} | {np.mean(vs_half):.3f} | "
              + " / ".join(f"{np.mean(means[k]):+.3f}" for k in ("honest", "half_effort", "careless")) + " |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=4000)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--separation", action="store_true", help="How big a batch must be (see the docstring).")
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()
    if args.separation:
        separation(args.agents, args.per_task, args.trials)
        return
    print(f"{args.tasks} tasks x {args.per_task} reports, {args.agents} agents, prior {PRIOR}; "
          "mean payout per report, 95% CI over agents\n")
    last_reports = None
    for name, mix in CROWDS:
        agents = make_population(args.agents, mix)
        reports, _ = simulate_reports(agents, n_tasks=args.tasks, per_task=args.per_task, prior=PRIOR, seed=args.seed)
        t0 = time.perf_counter()
        ca = correlated_agreement(reports, seed=args.seed)
        t_ca = time.perf_counter() - t0
        results = {"CA": ca, "PTS": peer_truth_serum(reports, seed=args.seed), "majority": majority_agreement(reports)}
        tables = {rule: payout_by_kind(res, agents, by_accuracy=True) for rule, res in results.items()}
        kinds = sorted({k for t in tables.values() for k in t}, key=lambda k: (not k.startswith("honest"), k))
        print(f"## crowd {name}   (CA scored {len(ca.scores)} reports in {t_ca:.2f} s; S = {ca.scoring.tolist()})")
        print(f"| agent type | n | {' | '.join(results)} |")
        print("|---|---|" + "---|" * len(results))
        for kind in kinds:
            n = next(t[kind]["agents"] for t in tables.values() if kind in t)
            print(f"| {kind} | {n} | " + " | ".join(_fmt(tables[r][kind]) for r in results) + " |")
        overall = {rule: payout_by_kind(res, agents) for rule, res in results.items()}
        for kind in sorted(overall["CA"]):
            if kind == "honest":
                print(f"| honest (all) | {overall['CA'][kind]['agents']} | "
                      + " | ".join(_fmt(overall[r][kind]) for r in results) + " |")
        print()
        if last_reports is None:
            last_reports = reports
    print(ledger_timing(last_reports, args.agents))


if __name__ == "__main__":
    main()

"""SuperBrain's proof by simulation: simulated experts with known per-domain accuracy, shared misconceptions and
coherent schools (assay.evolve.superbrain.simulate); the accuracy of the aggregated answers against the truth for
majority vote, reputation-weighted vote (gold reputation as the expert network computes it) and Assay's method
(one-coin Dawid-Skene with latent schools), how often each presents every school's answer on contested questions,
how often it reports a factual question as contested, and how well it recovers the schools (adjusted Rand index).

    .venv/bin/python benchmarks/superbrain.py            # 5 worlds per setting
    .venv/bin/python benchmarks/superbrain.py --seeds 2  # quicker

Settings: "mixed" = a minority of experts strong in each domain (0.85-0.95), the rest weak (0.30-0.50) and prone to
the question's popular misconception; "equal" = everybody 0.7; schools in one domain of three ("medicine"), or none
(the control: no school may be invented).
"""

from __future__ import annotations

import argparse
import time

from assay.evolve.superbrain.simulate import SimConfig, run, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--experts", type=int, default=20)
    ap.add_argument("--questions", type=int, default=60)
    args = ap.parse_args()
    settings = [("mixed", 2, ("medicine",)), ("equal", 2, ("medicine",)), ("mixed", 3, ("medicine",)),
                ("mixed", 2, ())]
    started = time.perf_counter()
    print(f"{args.experts} experts, 3 domains x {args.questions} questions (8 gold each), 4 answers per question, "
          f"{args.seeds} worlds per setting\n")
    head = f"{'setting':<28} {'method':<30} {'factual acc':>11} {'schools shown':>13} {'false contests':>14} " \
           f"{'school ARI':>10}"
    print(head)
    print("-" * len(head))
    for rel, schools, schooled in settings:
        configs = [SimConfig(experts=args.experts, questions=args.questions, reliability=rel, schools=schools,
                             schooled=schooled, seed=s) for s in range(args.seeds)]
        label = f"{rel}, " + (f"{schools} schools" if schooled else "no schools")
        for r in table(configs):
            ari = "-" if r["school_ari"] is None else f"{r['school_ari']:.3f}"
            shown = f"{r['schools_presented']:.3f}" if schooled else "-"
            print(f"{label:<28} {r['method']:<30} {r['factual_accuracy']:>11.3f} {shown:>13} "
                  f"{r['false_contests']:>14.3f} {ari:>10}")
        corr = [run(c)["reliability_corr"] for c in configs[:2]] if rel == "mixed" else []
        if corr:
            print(f"{'':<28} estimated vs true accuracy per (expert, domain): Pearson r = "
                  f"{', '.join(f'{c:.3f}' for c in corr)} (first worlds)")
        print()
    print(f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

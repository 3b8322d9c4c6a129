"""The Data Wall: Epoch AI's projection reproduced, which input moves it most, and how stable the Monte Carlo is.

    .venv/bin/python benchmarks/datawall.py [--samples 20000]

Prints (1) the wall year of every scenario under the three dataset projections (compute, historical, both) next
to Villalobos et al. 2024's published median (2028), 80% interval (2026–2032) and 5x-overtrained median (2027);
(2) a one-at-a-time sensitivity table: the baseline median when one input sits at the low or high end of its
interval and the others keep their ranges; (3) the spread of the baseline median over 20 seeds, and the time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from assay.lab import datawall as dw  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20_000)
    args = ap.parse_args()
    n = args.samples
    pub = dw.PUBLISHED_2024
    print(f"Published (Villalobos et al. 2024): median {pub['median']}, 80% {pub['interval_80']}, "
          f"overtrained 5x: {pub['overtrained_5x_median']}")

    start = time.perf_counter()
    for method in dw.METHODS:
        r = dw.project(replace(dw.WallInputs(), method=method), samples=n, seed=0)
        print(f"\n{method} projection ({n:,} samples, seed 0)")
        print(f"  {'scenario':<12} {'stock x':>8} {'median':>8} {'80% interval':>18} {'90% interval':>18} "
              f"{'P<2030':>7}")
        for s in r.scenarios:
            print(f"  {s['name']:<12} {s['stock_multiplier']['median']:>8.3g} {dw.format_year(s['median']):>8} "
                  f"{dw.format_year(s['p10']) + '–' + dw.format_year(s['p90']):>18} "
                  f"{dw.format_year(s['p05']) + '–' + dw.format_year(s['p95']):>18} {s['p_before_2030']:>7.0%}")
    print(f"  ({time.perf_counter() - start:.2f} s for the three projections)")

    base_inputs = dw.WallInputs()
    base = dw.project(base_inputs, samples=n, seed=0).scenario("baseline")["median"]
    print(f"\nSensitivity of the baseline median ({base:.2f}) to one input at the end of its interval "
          "(the others keep their ranges):")
    rows = []
    for f in fields(base_inputs):
        r = getattr(base_inputs, f.name)
        if not isinstance(r, dw.Range) or r.is_fixed:
            continue
        ends = {}
        for end in ("lo", "hi"):
            inp = base_inputs.with_values({f.name: getattr(r, end)}, "sensitivity")
            ends[end] = dw.project(inp, samples=n, seed=0).scenario("baseline")["median"]
        rows.append((abs(ends["hi"] - ends["lo"]), f.name, r, ends))
    for swing, name, r, ends in sorted(rows, key=lambda x: x[0], reverse=True):
        if swing == 0:  # a lever's input, or the other projection's
            continue
        print(f"  {name:<18} {r.describe():<36} lo → {ends['lo']:.2f}   hi → {ends['hi']:.2f}   swing {swing:.2f} y")

    medians = [dw.project(base_inputs, samples=n, seed=s).scenario("baseline")["median"] for s in range(20)]
    print(f"\nBaseline median over 20 seeds: {np.mean(medians):.3f} ± {np.std(medians, ddof=1):.3f} (SD), "
          f"range {min(medians):.3f}–{max(medians):.3f}")
    t0 = time.perf_counter()
    dw.project(base_inputs, samples=n, seed=0)
    print(f"One projection, {n:,} samples, six scenarios and the trajectories: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()

"""Scaling-law fitting: Assay's Chinchilla approach 3 against a plain least-squares fit, on runs with a known truth.

    .venv/bin/python benchmarks/lab_fit.py [--reps 10]

Synthetic runs: the Chinchilla approach-3 law (A=406.4, B=410.7, E=1.69, α=0.34, β=0.28) on a 6×5 grid of
model sizes (3e7–1e10) and token counts (1e9–3e11), log-normal noise (1%), and in half of the repetitions two
diverged runs (+25% loss), as real sweeps have. Peer: ``scipy.optimize.curve_fit`` (least squares on the loss,
one starting point), the usual quick fit. Prints the mean absolute error of α, β, E and of the compute-optimal
N at 1e24 FLOPs for both, the runtime ratio, and whether screening the 5,400-point initialisation grid down to the
64 best starts finds the same optimum as running all 5,400.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from assay.lab import fit as fitmod  # noqa: E402
from assay.lab.fit import Runs, fit_chinchilla  # noqa: E402
from assay.lab.laws import CHINCHILLA_2022, ChinchillaLaw  # noqa: E402

TRUTH = CHINCHILLA_2022


def make_runs(seed: int, outliers: bool) -> Runs:
    rng = np.random.default_rng(seed)
    N = np.repeat(np.logspace(7.5, 10, 6), 5)
    D = np.tile(np.logspace(9, 11.5, 5), 6)
    L = TRUTH.loss(N, D) * np.exp(rng.normal(0, 0.01, len(N)))
    if outliers:
        L[rng.choice(len(L), 2, replace=False)] *= 1.25
    return Runs(L, D, N)


def least_squares(runs: Runs) -> ChinchillaLaw | None:
    from scipy.optimize import curve_fit

    f = lambda x, A, B, E, a, b: E + A / x[0] ** a + B / x[1] ** b  # noqa: E731
    try:
        p, _ = curve_fit(f, np.vstack([runs.N, runs.D]), runs.loss, p0=[100, 100, 1, 0.3, 0.3], maxfev=20000)
    except RuntimeError:
        return None
    return ChinchillaLaw(*p)


def errors(law: ChinchillaLaw | None) -> tuple[float, float, float, float]:
    if law is None:
        return (np.nan,) * 4
    n_true = TRUTH.compute_optimal(1e24)[0]
    try:
        n = law.compute_optimal(1e24)[0]
        n_err = abs(np.log(n / n_true))
    except (ValueError, FloatingPointError, ZeroDivisionError):
        n_err = np.nan
    return abs(law.alpha - TRUTH.alpha), abs(law.beta - TRUTH.beta), abs(law.E - TRUTH.E), n_err


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    ours, peer, t_ours, t_peer = [], [], 0.0, 0.0
    for rep in range(args.reps):
        runs = make_runs(rep, outliers=rep % 2 == 1)
        t = time.perf_counter()
        ours.append(errors(fit_chinchilla(runs, bootstrap=0).law_object()))
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        peer.append(errors(least_squares(runs)))
        t_peer += time.perf_counter() - t
    o, p = np.nanmean(ours, axis=0), np.nanmean(peer, axis=0)
    print(f"{args.reps} synthetic sweeps of 30 runs (1% noise; outliers in half)")
    print(f"{'mean abs error':>24} {'assay (Huber, LSE, grid)':>26} {'curve_fit (least squares)':>26} {'ratio':>7}")
    for i, name in enumerate(("alpha", "beta", "E", "|log N_opt(1e24) ratio|")):
        print(f"{name:>24} {o[i]:>26.4f} {p[i]:>26.4f} {p[i] / o[i] if o[i] else float('nan'):>7.1f}x")
    failed = sum(np.isnan(e[0]) for e in peer)
    print(f"{'failures':>24} {0:>26} {failed:>26}")
    print(f"{'seconds per fit':>24} {t_ours / args.reps:>26.3f} {t_peer / args.reps:>26.3f} "
          f"{t_ours / max(t_peer, 1e-9):>7.0f}x slower")

    runs = make_runs(123, outliers=True)
    t = time.perf_counter()
    screened = fit_chinchilla(runs, bootstrap=0)
    t_screened = time.perf_counter() - t
    saved = fitmod.MAX_STARTS
    fitmod.MAX_STARTS = None  # every one of the 5,400 grid points
    try:
        t = time.perf_counter()
        full = fit_chinchilla(runs, bootstrap=0)
        t_full = time.perf_counter() - t
    finally:
        fitmod.MAX_STARTS = saved
    same = all(abs(screened.params[k] - full.params[k]) <= 1e-4 * max(1.0, abs(full.params[k]))
               for k in full.params)
    print(f"grid screening: {saved} starts {t_screened:.1f} s vs all 5,400 starts {t_full:.1f} s "
          f"({t_full / t_screened:.0f}x); same optimum: {same} (objective {screened.objective:.6f} vs "
          f"{full.objective:.6f})")


if __name__ == "__main__":
    main()

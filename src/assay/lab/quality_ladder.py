"""Estimating a dataset's quality Q: a token-swap corruption ladder, the quality law, and placement on it.

1. **Ladder.** On a clean reference corpus, train the same tiny LM at several data sizes ``D`` and qualities
   ``Q ∈ {1, .9, .75, .5}`` (token-swap corruption, :mod:`assay.lab.corruption`) with several seeds, scoring every
   run on one clean held-out set.
2. **Fit.** Fit ``L = B/(D^β·Q^γ) + E`` (fixed model size) to those runs (:func:`assay.lab.fit.fit_quality`).
3. **Place.** Train the same model on a candidate dataset at a budget ``D``; solve the fitted law for the ``Q``
   that explains its held-out loss, and report its worth in clean tokens, ``D_eff = D·Q^(γ/β)``.

``Q`` is relative to the reference corpus *as judged by the held-out set*: a candidate from another domain than
the held-out set is penalised for the domain gap as well as for noise; ``Q > 1`` means the candidate teaches the
held-out distribution better than the reference corpus does. Confidence intervals combine the spread over seeds
(resampled) with the uncertainty of the law (its bootstrap fits).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from assay.lab.corruption import token_swap
from assay.lab.fit import FitResult, Runs, fit_quality
from assay.lab.harness import Harness, Progress, thin_curve
from assay.lab.stats import MeanCI, mean_ci, percentile_ci

DEFAULT_QUALITIES = (1.0, 0.9, 0.75, 0.5)


@dataclass
class LadderResult:
    """The ladder's runs, the law fitted to them and the placed candidates."""

    runs: list[dict[str, Any]]  # one per run: N, D, Q, seed, loss, seconds, epochs
    fit: FitResult | None
    cells: list[dict[str, Any]]  # one per (D, Q): mean loss with CI over seeds
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # "D=…,Q=…,seed=…" → curve
    placements: list["Placement"] = field(default_factory=list)
    harness: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def cell(self, D: float, Q: float) -> dict[str, Any]:
        for c in self.cells:
            if c["D"] == D and c["Q"] == Q:
                return c
        raise KeyError((D, Q))

    def to_dict(self) -> dict[str, Any]:
        fit = None
        if self.fit is not None:
            fit = self.fit.to_dict()
            fit["effective_data"] = self.fit.effective_data_table(sorted({r["Q"] for r in self.runs}))
            fit["gamma_over_beta"] = list(self.fit.interval(lambda law: law.gamma / law.beta))
        return {"runs": self.runs, "cells": self.cells, "fit": fit, "curves": self.curves,
                "placements": [p.to_dict() for p in self.placements], "harness": self.harness,
                "seconds": self.seconds, "notes": self.notes}


@dataclass
class Placement:
    """A candidate dataset placed on the ladder.

    ``Q`` and ``D_eff`` are read off the ladder itself when the candidate's loss falls inside it (``method =
    "ladder"``): ``Q`` by interpolating ``log Q`` between the ladder's qualities at the same ``D``, ``D_eff`` by
    interpolating ``log D`` between the clean (``Q = 1``) runs, i.e. the number of clean tokens that reach the
    same held-out loss. Outside the ladder (``method = "law"``), and in ``Q_law`` / ``D_eff_law`` always, they
    come from the fitted law: ``Q`` solves ``L = B/(D^β·Q^γ) + E`` and ``D_eff = D·Q^(γ/β)``. The two agree when
    the law fits; at tiny budgets the loss does not yet follow a power law in ``D`` and the ladder reading is the
    trustworthy one.
    """

    name: str
    D: int
    loss: MeanCI
    losses: list[float]
    Q: float
    Q_ci: tuple[float, float]
    D_eff: float
    D_eff_ci: tuple[float, float]
    epochs: float  # > 1 means the candidate was repeated to reach D: its Q then also reflects repetition
    unique_tokens: int
    #: "ladder": Q and D_eff interpolated; "law": both from the law; "mixed": one of each (typically Q below the
    #: ladder's lowest quality, from the law, and D_eff inside the clean runs' range, interpolated)
    method: str = "law"
    Q_law: float = math.nan
    D_eff_law: float = math.nan
    curves: list[list[dict[str, float]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "D": self.D, "loss": self.loss.to_dict(), "losses": self.losses, "Q": self.Q,
                "Q_ci": list(self.Q_ci), "D_eff": self.D_eff, "D_eff_ci": list(self.D_eff_ci),
                "epochs": self.epochs, "unique_tokens": self.unique_tokens, "method": self.method,
                "Q_law": self.Q_law, "D_eff_law": self.D_eff_law, "curves": self.curves}


def summarise_cells(runs: Sequence[dict[str, Any]], keys: Sequence[str] = ("D", "Q")) -> list[dict[str, Any]]:
    """Mean held-out loss with a t-interval over seeds for each design point."""
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r["loss"])
    return [{**dict(zip(keys, k)), **mean_ci(v).to_dict(), "losses": v} for k, v in sorted(groups.items())]


def run_ladder(harness: Harness, clean_seqs: np.ndarray, tokens: Sequence[int],
               qualities: Sequence[float] = DEFAULT_QUALITIES, seeds: Sequence[int] = (0, 1, 2),
               swap: float = 0.5, bootstrap: int = 200, progress: Progress | None = None) -> LadderResult:
    """Train on corrupted copies of ``clean_seqs`` at every ``(D, Q, seed)`` and fit the quality law.

    The corruption of a ``(Q, seed)`` pair is the same at every ``D`` (bigger budgets see more of the same
    corrupted corpus), and the seed also sets initialisation and data order.
    """
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, float]]] = {}
    N = harness.model.param_count()
    total = len(tokens) * len(qualities) * len(seeds)
    for q in qualities:
        for seed in seeds:
            seqs, _ = token_swap(clean_seqs, q, harness.tokenizer.vocab_size, swap=swap, seed=10_000 + seed,
                                 first_id=harness.tokenizer.n_special)
            for D in tokens:
                r = harness.run(seqs, D, seed)
                runs.append({"N": N, "D": int(D), "Q": float(q), "seed": int(seed), "loss": r.eval_loss,
                             "seconds": round(r.seconds, 3), "epochs": round(r.epochs, 4)})
                curves[f"D={int(D)},Q={q:g},seed={seed}"] = thin_curve(r.curve)
                if progress:
                    progress(f"[{len(runs)}/{total}] D={int(D):,} Q={q:g} seed={seed}: loss {r.eval_loss:.4f} "
                             f"({r.seconds:.1f} s)")
    fit = None
    notes = []
    if len(set(tokens)) >= 2 and len(set(qualities)) >= 2:
        fit = fit_quality(Runs.from_rows(runs), bootstrap=bootstrap)
        if len(set(tokens)) < 3:
            notes.append("only two data sizes: B, β and E are not all identified (three constants, two loss levels "
                         "per quality); γ/β and the ordering of qualities are still meaningful")
        if fit.at_bounds:
            notes.append(f"constants at their search bounds (not pinned down by these runs): "
                         f"{', '.join(fit.at_bounds)}")
    unique = len(clean_seqs) * harness.model.context
    if max(tokens) > unique:
        notes.append(f"the largest D ({max(tokens):,}) exceeds the clean corpus ({unique:,} tokens): the ladder "
                     f"repeats data, which the quality law does not model")
    return LadderResult(runs, fit, summarise_cells(runs), curves, harness=harness.describe(),
                        seconds=time.perf_counter() - start, notes=notes)


def _interpolate_log(points: Sequence[tuple[float, float]], loss: float) -> float | None:
    """``x`` at which the piecewise-linear curve (loss → log x) through ``points`` = ``(x, loss)`` reaches
    ``loss``; ``None`` outside the points' loss range or when the losses are not monotone in ``x``."""
    pts = sorted(points)
    xs, ls = [p[0] for p in pts], [p[1] for p in pts]
    if len(pts) < 2 or not all(a > b for a, b in zip(ls, ls[1:])):  # loss must fall as x (Q or D) rises
        return None
    if not ls[-1] <= loss <= ls[0]:
        return None
    for (x0, l0), (x1, l1) in zip(pts, pts[1:]):
        if l1 <= loss <= l0:
            t = (l0 - loss) / (l0 - l1)
            return float(math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0))))
    return None


def place(fit: FitResult, name: str, losses: Sequence[float], D: int, epochs: float = 1.0, unique_tokens: int = 0,
          ladder_runs: Sequence[dict[str, Any]] = (), n_boot: int = 400, seed: int = 0) -> Placement:
    """Place a candidate whose runs at ``D`` tokens reached ``losses`` (one per seed); see :class:`Placement`.

    ``ladder_runs`` (the ladder's runs) enable the ladder reading; confidence intervals resample the candidate's
    seeds, the ladder's seeds (per cell) and, for the law, its bootstrap fits.
    """
    law = fit.law_object()
    loss = mean_ci(losses)
    by_cell: dict[tuple[float, float], list[float]] = {}
    for r in ladder_runs:
        by_cell.setdefault((float(r["D"]), float(r["Q"])), []).append(float(r["loss"]))
    q_cells = {q: v for (d, q), v in by_cell.items() if d == float(D)}
    clean_cells = {d: v for (d, q), v in by_cell.items() if q == 1.0}

    def estimate(cand: float, q_means: dict[float, float], d_means: dict[float, float],
                 boot_law: Any) -> tuple[float, float, str]:
        q = _interpolate_log(list(q_means.items()), cand) if len(q_means) >= 2 else None
        d_eff = _interpolate_log(list(d_means.items()), cand) if len(d_means) >= 2 else None
        method = {(True, True): "ladder", (False, False): "law"}.get((q is not None, d_eff is not None), "mixed")
        if q is None:
            q = float(boot_law.quality_for_loss(cand, D))
        if d_eff is None:
            d_eff = float(boot_law.effective_data(D, q)) if math.isfinite(q) else math.inf
        return q, d_eff, method

    mean_of = lambda v: float(np.mean(v))  # noqa: E731
    q_point, d_point, method = estimate(loss.mean, {q: mean_of(v) for q, v in q_cells.items()},
                                        {d: mean_of(v) for d, v in clean_cells.items()}, law)
    q_law = float(law.quality_for_loss(loss.mean, D))
    d_law = float(law.effective_data(D, q_law)) if math.isfinite(q_law) else math.inf

    rng = np.random.default_rng(seed)
    arr = np.asarray(losses, dtype=float)
    boots = fit.boot_params or [fit.params]
    resample = lambda v: float(rng.choice(v, size=len(v), replace=True).mean())  # noqa: E731
    q_samples, d_samples = [], []
    for i in range(max(n_boot, len(fit.boot_params))):
        q_b, d_b, _ = estimate(resample(arr), {q: resample(v) for q, v in q_cells.items()},
                               {d: resample(v) for d, v in clean_cells.items()},
                               fit.law_object(boots[i % len(boots)]))
        q_samples.append(q_b)
        d_samples.append(d_b)
    return Placement(name, int(D), loss, [float(x) for x in losses], q_point, _finite_ci(q_samples), d_point,
                     _finite_ci(d_samples), epochs, unique_tokens, method, q_law, d_law)


def _finite_ci(samples: Sequence[float]) -> tuple[float, float]:
    """Percentile interval; when more than 2.5% of the samples are infinite (loss below the law's floor) the upper
    bound is ``inf``."""
    finite = [x for x in samples if math.isfinite(x)]
    if not finite:
        return (math.inf, math.inf)
    lo, hi = percentile_ci(finite)
    if (len(samples) - len(finite)) / len(samples) > 0.025:
        hi = math.inf
    return (lo, hi)


def place_candidates(harness: Harness, fit: FitResult, candidates: dict[str, np.ndarray], D: int,
                     seeds: Sequence[int] = (0, 1, 2), progress: Progress | None = None,
                     ladder_runs: Sequence[dict[str, Any]] = ()) -> list[Placement]:
    """Train on each candidate (training sequences) at budget ``D`` with each seed and place it (pass the
    ladder's runs to read ``Q`` and ``D_eff`` off the ladder where possible; use a ladder ``D`` for that)."""
    out = []
    for name, seqs in candidates.items():
        losses, curves, epochs = [], [], 1.0
        for seed in seeds:
            r = harness.run(seqs, D, seed)
            losses.append(r.eval_loss)
            curves.append(thin_curve(r.curve))
            epochs = r.epochs
            if progress:
                progress(f"candidate {name} seed={seed}: loss {r.eval_loss:.4f} ({r.seconds:.1f} s)")
        p = place(fit, name, losses, D, epochs=epochs, unique_tokens=int(len(seqs) * harness.model.context),
                  ladder_runs=ladder_runs)
        p.curves = curves
        out.append(p)
    return out

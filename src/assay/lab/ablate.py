"""Data ablations: the same tiny LM trained on each dataset for the same token budget, with several seeds.

Each dataset gets the same model shape, tokenizer, recipe, token budget and seeds; seed ``s`` gives the same
initial weights for every dataset, so per-seed differences between two datasets are paired. The result is the
held-out loss of each dataset with a t-interval over seeds, and each dataset's paired difference to the first one
(the baseline) with its own interval: a difference whose interval excludes 0 is a real effect at that budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from assay.lab.harness import Harness, Progress, thin_curve
from assay.lab.stats import mean_ci


@dataclass
class AblationResult:
    tokens: int
    seeds: list[int]
    datasets: list[dict[str, Any]]  # name, loss (mean/lo/hi/sd/n), losses, unique_tokens, epochs, curves
    comparisons: list[dict[str, Any]]  # name, baseline, diff (mean/lo/hi/...), wins (seeds where it is lower)
    harness: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "seeds": self.seeds, "datasets": self.datasets,
                "comparisons": self.comparisons, "harness": self.harness, "seconds": self.seconds,
                "notes": self.notes}


def run_ablation(harness: Harness, datasets: dict[str, np.ndarray], tokens: int, seeds: Sequence[int] = (0, 1, 2),
                 progress: Progress | None = None) -> AblationResult:
    """Train on every dataset (training sequences) with every seed; the first dataset is the baseline."""
    if len(seeds) < 1:
        raise ValueError("need at least one seed")
    start = time.perf_counter()
    ctx = harness.model.context
    rows: list[dict[str, Any]] = []
    per_seed: dict[str, dict[int, float]] = {}
    notes: list[str] = []
    for name, seqs in datasets.items():
        losses, curves, epochs = [], [], 0.0
        for seed in seeds:
            r = harness.run(seqs, tokens, seed)
            losses.append(r.eval_loss)
            curves.append(thin_curve(r.curve))
            epochs = r.epochs
            per_seed.setdefault(name, {})[seed] = r.eval_loss
            if progress:
                progress(f"{name} seed={seed}: held-out loss {r.eval_loss:.4f} ({r.seconds:.1f} s)")
        if epochs > 1.0:
            notes.append(f"{name}: {epochs:.2f} epochs (only {len(seqs) * ctx:,} unique tokens for a budget of "
                         f"{tokens:,}); its loss includes the cost of repetition")
        rows.append({"name": name, "loss": mean_ci(losses).to_dict(), "losses": losses,
                     "unique_tokens": int(len(seqs) * ctx), "epochs": round(epochs, 4), "curves": curves})
    comparisons = []
    names = list(datasets)
    for name in names[1:]:
        diffs = [per_seed[name][s] - per_seed[names[0]][s] for s in seeds]
        comparisons.append({"name": name, "baseline": names[0], "diff": mean_ci(diffs).to_dict(),
                            "wins": int(sum(d < 0 for d in diffs)), "seeds": len(seeds)})
    return AblationResult(int(tokens), list(seeds), rows, comparisons, harness.describe(),
                          time.perf_counter() - start, notes)

"""Model collapse simulations: what happens when models are trained on their predecessors' output.

* :func:`gaussian_collapse` is the toy model of Shumailov et al. (2024): generation 0 fits a mean and a standard
  deviation to ``M`` real samples; each later generation draws ``M`` samples from the previous fit and refits. In
  ``replace`` mode a generation sees only the newest samples: ``σ`` performs a multiplicative random walk with a
  downward drift (``E[log σ̂²]`` falls by about ``1/M`` per generation) and collapses towards 0. In ``accumulate``
  mode (Gerstgrasser et al. 2024) every generation fits on all samples so far, real ones included; the per-step
  change shrinks like ``1/t`` and ``σ`` stays close to ``σ₀``. Many independent chains run at once (vectorised),
  so the result is a distribution, not one lucky path.
* :func:`lm_collapse` does the same with the tiny LM: generation 0 trains on real text; generation ``g`` trains a
  fresh model on text sampled from generation ``g-1`` (``replace``) or on the real text plus every sample so far
  (``accumulate``), for the same number of epochs over its pool; each is scored on the real held-out set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from assay.lab.harness import Harness, Progress, thin_curve

MODES: tuple[str, ...] = ("replace", "accumulate")


@dataclass
class GaussianCollapse:
    mode: str
    samples: int  # M, samples drawn per generation
    sigma0: float
    sigma: np.ndarray  # [generations + 1, chains]: the fitted σ of each generation (0 = fit to real data)
    mu: np.ndarray  # [generations + 1, chains]

    @property
    def generations(self) -> int:
        return self.sigma.shape[0] - 1

    def quantiles(self, qs: Sequence[float] = (0.05, 0.5, 0.95)) -> dict[str, list[float]]:
        return {f"q{int(q * 100):02d}": np.quantile(self.sigma, q, axis=1).tolist() for q in qs}

    def final_within(self, tolerance: float = 0.10) -> float:
        """Fraction of chains whose last σ is within ``tolerance`` (relative) of σ₀."""
        return float(np.mean(np.abs(self.sigma[-1] / self.sigma0 - 1.0) <= tolerance))

    def summary(self) -> dict[str, Any]:
        med = np.median(self.sigma, axis=1) / self.sigma0
        return {"mode": self.mode, "generations": self.generations, "samples": self.samples,
                "chains": int(self.sigma.shape[1]), "sigma0": self.sigma0,
                "median_sigma_final_over_sigma0": float(med[-1]),
                "median_sigma_max_deviation": float(np.max(np.abs(med - 1.0))),
                "chains_within_10pct_at_end": self.final_within(0.10)}

    def to_dict(self, every: int = 1) -> dict[str, Any]:
        gens = list(range(0, self.generations + 1, every))
        return {**self.summary(), "generation": gens,
                **{k: [v[g] for g in gens] for k, v in self.quantiles().items()},
                "mean": [float(np.mean(self.sigma[g])) for g in gens]}


def gaussian_collapse(mode: str = "replace", generations: int = 500, samples: int = 100, chains: int = 200,
                      mu0: float = 0.0, sigma0: float = 1.0, seed: int = 0, ddof: int = 1) -> GaussianCollapse:
    """Run ``chains`` independent chains of refit-and-resample for ``generations`` generations.

    ``ddof=1`` uses the unbiased variance estimator (the MLE, ``ddof=0``, adds a deterministic shrink of
    ``(M-1)/M`` per generation on top of the random-walk drift).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if samples < 2:
        raise ValueError("need at least 2 samples per generation")
    rng = np.random.default_rng(seed)
    sig = np.empty((generations + 1, chains))
    mus = np.empty((generations + 1, chains))
    x = rng.normal(mu0, sigma0, size=(chains, samples))
    # running pooled statistics (count, mean, sum of squared deviations) for accumulate mode (Chan et al.)
    n = np.full(chains, float(samples))
    mean = x.mean(axis=1)
    m2 = ((x - mean[:, None]) ** 2).sum(axis=1)
    mus[0], sig[0] = mean, np.sqrt(m2 / (n - ddof))
    for g in range(1, generations + 1):
        x = rng.normal(mus[g - 1][:, None], sig[g - 1][:, None], size=(chains, samples))
        bmean = x.mean(axis=1)
        bm2 = ((x - bmean[:, None]) ** 2).sum(axis=1)
        if mode == "replace":
            n, mean, m2 = np.full(chains, float(samples)), bmean, bm2
        else:
            total = n + samples
            delta = bmean - mean
            mean = mean + delta * samples / total
            m2 = m2 + bm2 + delta**2 * n * samples / total
            n = total
        mus[g], sig[g] = mean, np.sqrt(m2 / (n - ddof))
    return GaussianCollapse(mode, samples, sigma0, sig, mus)


# ---------------------------------------------------------------------------------------------------------------
# the tiny-LM version


@dataclass
class LMCollapse:
    mode: str
    generations: list[dict[str, Any]]  # generation, eval_loss, pool_tokens, synthetic_fraction, seconds
    curves: list[list[dict[str, float]]] = field(default_factory=list)
    harness: dict[str, Any] = field(default_factory=dict)

    def losses(self) -> list[float]:
        return [g["eval_loss"] for g in self.generations]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "generations": self.generations, "curves": self.curves, "harness": self.harness}


def lm_collapse(harness: Harness, real_seqs: np.ndarray, generations: int = 5, mode: str = "replace",
                epochs: float = 1.0, seed: int = 0, temperature: float = 1.0,
                progress: Progress | None = None) -> LMCollapse:
    """Recursive training of the tiny LM (see the module docstring). Each generation samples as many tokens as the
    real set holds and trains a fresh model for ``epochs`` passes over its pool."""
    from dataclasses import replace as dc_replace

    from assay.lab.tinylm import sample_tokens, train_lm
    from assay.lab.tokenizer import make_sequences

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ctx = harness.model.context
    unique = len(real_seqs) * ctx
    pool: list[np.ndarray] = [real_seqs]
    rows: list[dict[str, Any]] = []
    curves: list[list[dict[str, float]]] = []
    for g in range(generations + 1):
        seqs = np.concatenate(pool) if len(pool) > 1 else pool[0]
        tokens = int(epochs * len(seqs) * ctx)
        cfg = dc_replace(harness.train, tokens=tokens, seed=seed + g)
        start = time.perf_counter()
        result, model = train_lm(harness.model, seqs, harness.eval_seqs, cfg, return_model=True)
        synthetic = 0.0 if g == 0 else (1.0 if mode == "replace" else 1.0 - len(real_seqs) / len(seqs))
        rows.append({"generation": g, "eval_loss": result.eval_loss, "pool_tokens": int(len(seqs) * ctx),
                     "train_tokens": result.tokens, "synthetic_fraction": round(synthetic, 4),
                     "seconds": round(time.perf_counter() - start, 2)})
        curves.append(thin_curve(result.curve))
        if progress:
            progress(f"{mode} generation {g}: held-out loss {result.eval_loss:.4f} (pool {len(seqs) * ctx:,} "
                     f"tokens, {synthetic:.0%} synthetic)")
        if g == generations:
            break
        stream = sample_tokens(model, unique + ctx, harness.tokenizer.eos_id, seed=seed * 1000 + g,
                               temperature=temperature, threads=harness.train.threads)
        synth = make_sequences(stream, ctx)[: len(real_seqs)]
        pool = [synth] if mode == "replace" else pool + [synth]
    return LMCollapse(mode, rows, curves, harness.describe())

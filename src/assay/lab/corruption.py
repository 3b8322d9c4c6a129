"""Token-swap corruption: the controlled quality knob of the quality-law experiments.

Following Subramanyam et al. (2025), data of quality ``Q`` is clean data in which a fraction ``1 - Q`` of the
samples (here: training sequences) has a fraction ``swap`` (50%) of its tokens replaced by tokens drawn uniformly
from the vocabulary (special tokens excluded). The rest of the samples are untouched, so ``Q = 1`` is the clean
corpus and ``Q = 0.5`` has half of its sequences half-garbled (a quarter of all tokens random).
"""

from __future__ import annotations

import numpy as np


def token_swap(seqs: np.ndarray, quality: float, vocab_size: int, swap: float = 0.5, seed: int = 0,
               first_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``round((1 - quality)·n)`` of the ``n`` sequences; returns ``(corrupted copy, corrupted-row mask)``.

    In each corrupted sequence exactly ``round(swap·length)`` distinct positions get a random id in
    ``[first_id, vocab_size)``. Deterministic for a given seed.
    """
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"quality must be in [0, 1], got {quality}")
    if not 0.0 <= swap <= 1.0:
        raise ValueError(f"swap fraction must be in [0, 1], got {swap}")
    rng = np.random.default_rng(seed)
    out = np.array(seqs, copy=True)
    n, length = out.shape
    mask = np.zeros(n, dtype=bool)
    k = int(round((1.0 - quality) * n))
    m = int(round(swap * length))
    if k == 0 or m == 0:
        return out, mask
    rows = np.sort(rng.choice(n, size=k, replace=False))
    mask[rows] = True
    positions = np.argsort(rng.random((k, length)), axis=1)[:, :m]
    out[rows[:, None], positions] = rng.integers(first_id, vocab_size, size=(k, m), dtype=out.dtype)
    return out, mask

"""Union-find over millions of records with whole-array numpy operations (no Python loop over edges).

Each set's root is its member with the smallest ``(key, index)``: when two roots meet, the larger one is hooked
under the smaller, so parent pointers strictly decrease in that order (no cycles) and, once every edge has been
merged, the root of a component is its minimum, whatever the order edges arrived in. That is what makes the kept
record independent of sharding and of how many workers produced the edges.

The parent array can live in a memory-mapped file so that the reduce phase needs little RAM on large corpora.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DisjointSets:
    def __init__(self, keys: np.ndarray, path: Path | None = None) -> None:
        """``keys[i]`` orders element ``i`` (ties by index). ``path``: back the parent array by this file."""
        n = keys.shape[0]
        self.keys = keys
        if path is None or n == 0:
            self.parent = np.arange(n, dtype=np.int64)
        else:
            self.parent = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(n,))
            for lo in range(0, n, 1 << 22):
                hi = min(n, lo + (1 << 22))
                self.parent[lo:hi] = np.arange(lo, hi, dtype=np.int64)

    def find(self, x: np.ndarray) -> np.ndarray:
        """Roots of ``x``; compresses the paths of ``x`` on the way."""
        r = self.parent[x]
        while True:
            up = self.parent[r]
            moving = up != r
            if not moving.any():
                break
            r = np.where(moving, up, r)
        self.parent[x] = r
        return r

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Merge the sets of ``a[i]`` and ``b[i]`` for every ``i``."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        while a.size:
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            if not differ.any():
                return
            a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
            ka, kb = self.keys[ra], self.keys[rb]
            a_first = (ka < kb) | ((ka == kb) & (ra < rb))
            winner = np.where(a_first, ra, rb)
            loser = np.where(a_first, rb, ra)
            # several edges may hook the same loser: any winner is smaller than it, and the edges whose winner was
            # overwritten are merged again in the next round
            self.parent[loser] = winner

    def roots(self, lo: int, hi: int) -> np.ndarray:
        """Roots of elements ``lo..hi-1``."""
        return self.find(np.arange(lo, hi, dtype=np.int64))

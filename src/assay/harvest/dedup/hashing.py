"""64-bit hashing primitives shared by the dedup steps, vectorised over numpy ``uint64`` arrays.

Everything here is a fixed function of its input (constants are derived from a fixed seed with splitmix64, never
from a random generator whose stream could change between numpy versions), so signatures written by one process,
machine or release can be compared with those of another.
"""

from __future__ import annotations

import numpy as np
import xxhash

from assay.core.record import Record

U64 = np.uint64
MASK64 = (1 << 64) - 1


def splitmix64(state: int) -> int:
    """One output of the splitmix64 generator for ``state`` (pure Python; used to derive constants)."""
    z = (state + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def constants(seed: int, n: int, odd: bool = True) -> np.ndarray:
    """``n`` fixed pseudo-random 64-bit constants for ``seed`` (odd ones are invertible multipliers mod 2**64)."""
    out = [splitmix64((seed << 20) + i) for i in range(n)]
    if odd:
        out = [c | 1 for c in out]
    return np.array(out, dtype=U64)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied element-wise: a bijection of uint64 with full avalanche."""
    x = x ^ (x >> U64(30))
    x = x * U64(0xBF58476D1CE4E5B9)
    x ^= x >> U64(27)
    x *= U64(0x94D049BB133111EB)
    x ^= x >> U64(31)
    return x


def record_key(record: Record) -> int:
    """A 64-bit key naming one record by its id *and* content.

    Used to order records when choosing the one to keep (the smallest key wins, which does not depend on how the
    corpus is split into shards) and to find a record again in the apply phase even if its shard is streamed in a
    different order.
    """
    return xxhash.xxh3_64_intdigest(f"{record.id}\x00{record.hash}".encode("utf-8", "surrogatepass"))

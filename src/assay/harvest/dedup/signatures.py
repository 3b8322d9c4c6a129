"""MinHash signatures and LSH band keys for many documents at once.

Two schemes, both giving ``P[sig_A[k] == sig_B[k]] ≈ Jaccard(A, B)`` for every slot ``k``:

* ``"one_permutation"`` (default): one-permutation hashing with optimal densification (Li, Owen & Zhang, NeurIPS
  2012; Shrivastava, ICML 2017). Each shingle hash is sent to one of ``K`` bins by its high bits and the bin keeps
  the smallest low bits; bins left empty (documents with few shingles) copy the value of a non-empty bin chosen by a
  fixed probe sequence shared by all documents, which keeps the estimator unbiased. Cost: O(shingles + K) per
  document instead of O(shingles × K): the reason Assay's near-dedup is several times faster than per-permutation
  MinHash at the same number of slots.
* ``"permutations"``: the classic scheme (as datasketch and FineWeb): ``K`` independent hash functions
  ``h_k(x) = (a_k * x + b_k) mod 2**64 >> 32`` (multiply-add-shift, 2-independent on 32-bit keys), minimum per
  function. Slower; kept as a reference and for users who need the textbook estimator's variance on short texts.

Signature values are 32-bit. Band keys hash each band's ``rows`` values (and the band number) to 64 bits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from assay.harvest.dedup.hashing import U64, constants, mix64
from assay.harvest.dedup.shingles import Shingles

Scheme = Literal["one_permutation", "permutations"]

_EMPTY = U64(1 << 32)  # larger than any 32-bit value
_LOW32 = U64(0xFFFFFFFF)
_PROBE_SEED = 0x5EED_0002
_PERM_A_SEED = 0x5EED_0003
_PERM_B_SEED = 0x5EED_0004
_BAND_SEED = 0x5EED_0005
_PERM_CHUNK = 1 << 14  # shingles per (chunk × K) matrix in the permutation scheme


def minhash_signatures(shingles: Shingles, num_perm: int, scheme: Scheme = "one_permutation") -> np.ndarray:
    """``(n_texts, num_perm)`` uint32 signatures. Rows of texts without shingles are all zeros (not meaningful)."""
    if scheme == "one_permutation":
        return _one_permutation(shingles, num_perm)
    if scheme == "permutations":
        return _permutations(shingles, num_perm)
    raise ValueError(f"unknown MinHash scheme {scheme!r}")


def _one_permutation(sh: Shingles, k: int) -> np.ndarray:
    n_docs = sh.starts.size - 1
    x = sh.hashes
    bins = ((x >> U64(32)) * U64(k)) >> U64(32)
    flat = np.full(n_docs * k, _EMPTY, dtype=U64)
    np.minimum.at(flat, sh.doc.astype(U64) * U64(k) + bins, x & _LOW32)
    sig = flat.reshape(n_docs, k)
    _densify(sig, k)
    sig[sh.counts == 0] = 0
    return sig.astype(np.uint32)


def _densify(sig: np.ndarray, k: int) -> None:
    """Fill empty bins in place by optimal densification: probe bins ``p(j, 1), p(j, 2), ...`` until non-empty."""
    filled = sig != _EMPTY
    has_any = filled.any(axis=1)
    doc, slot = np.nonzero(~filled & has_any[:, None])
    if doc.size == 0:
        return
    source = sig.copy()  # copy only from bins that were non-empty before densification
    attempt = 0
    while doc.size:
        attempt += 1
        key = (slot.astype(U64) << U64(32)) | U64(attempt)
        probe = ((mix64(key ^ U64(_PROBE_SEED)) >> U64(32)) * U64(k)) >> U64(32)
        value = source[doc, probe.astype(np.int64)]
        hit = value != _EMPTY
        sig[doc[hit], slot[hit]] = value[hit]
        doc, slot = doc[~hit], slot[~hit]
        if attempt > 200 * k:  # unreachable for a document with a non-empty bin (probability < e**-200)
            raise RuntimeError("MinHash densification did not converge")


def _permutations(sh: Shingles, k: int) -> np.ndarray:
    n_docs = sh.starts.size - 1
    a = constants(_PERM_A_SEED, k)
    b = constants(_PERM_B_SEED, k, odd=False)
    keys = sh.hashes >> U64(32)
    sig = np.full((n_docs, k), _EMPTY, dtype=U64)
    # chunk at document boundaries so each chunk's rows reduce to whole documents
    cut = 0
    while cut < n_docs:
        stop = int(np.searchsorted(sh.starts, sh.starts[cut] + _PERM_CHUNK, side="right")) - 1
        stop = max(stop, cut + 1)
        lo, hi = int(sh.starts[cut]), int(sh.starts[stop])
        if hi > lo:
            vals = (keys[lo:hi, None] * a[None, :] + b[None, :]) >> U64(32)
            counts = sh.counts[cut:stop]
            nonempty = np.flatnonzero(counts)
            offsets = (sh.starts[cut:stop] - lo)[nonempty]
            sig[cut + nonempty] = np.minimum.reduceat(vals, offsets, axis=0)
        cut = stop
    sig[sh.counts == 0] = 0
    return sig.astype(np.uint32)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(bands, n_texts)`` uint64 keys: equal keys in a band mean (up to 2**-64) equal ``rows`` signature values."""
    n = sig.shape[0]
    if sig.shape[1] < bands * rows:
        raise ValueError(f"signature has {sig.shape[1]} values, bands × rows needs {bands * rows}")
    mult = constants(_BAND_SEED, rows + 1)
    blocks = sig[:, :bands * rows].reshape(n, bands, rows).astype(U64)
    acc = (blocks * mult[:rows]).sum(axis=2, dtype=U64)
    acc += np.arange(bands, dtype=U64) * mult[rows]
    return np.ascontiguousarray(mix64(acc).T)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values: the MinHash estimate of the Jaccard similarity."""
    return (sig_a == sig_b).mean(axis=1)

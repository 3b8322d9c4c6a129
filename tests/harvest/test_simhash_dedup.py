"""simhash_dedup: fingerprints and near-duplicate pairs checked against the `simhash` package (1e0ng/simhash, the
classic Python implementation) on Debian's manuals, with planted near-duplicates; the step across shards."""

from __future__ import annotations

import numpy as np
import pytest
from operator_support import real_texts, run_global
from simhash import Simhash, SimhashIndex

from assay.core.record import Record
from assay.core.step import REGISTRY
from assay.harvest.dedup.shingles import shingle_texts
from assay.harvest.dedup.simhash import near_pairs, simhash_from_shingles


def _planted(docs: list[str], n: int = 12) -> list[str]:
    """Copies of the first ``n`` long texts with one word in ~200 replaced (near-duplicates of the originals)."""
    out = []
    for text in [d for d in docs if len(d.split()) > 300][:n]:
        words = text.split()
        for i in range(0, len(words), 200):
            words[i] = "zebra"
        out.append(" ".join(words))
    return out


def _reference_fingerprint(hashes: np.ndarray) -> int:
    # the package hashes each feature string; give it our shingle hashes as the features' hash (big-endian bytes)
    feats = [format(int(h), "016x") for h in hashes]
    return Simhash(feats, hashfunc=lambda b: bytes(8) if b == b"test" else bytes.fromhex(b.decode())).value


def test_fingerprints_and_near_pairs_equal_the_simhash_package():
    docs = [d["text"] for d in real_texts(every=16)]
    docs = docs + _planted(docs)
    sh = shingle_texts(docs, 3)
    fps = simhash_from_shingles(sh)
    ref = [_reference_fingerprint(sh.hashes[sh.starts[i]:sh.starts[i + 1]]) for i in range(len(docs))]
    assert fps.tolist() == ref

    uniq, first = np.unique(fps, return_index=True)
    a, b, _ = near_pairs(uniq, 4, 5)
    ours = {tuple(sorted((int(first[x]), int(first[y])))) for x, y in zip(a, b)}
    index = SimhashIndex([(str(i), Simhash(int(v))) for i, v in zip(first, uniq)], k=4)
    theirs = {tuple(sorted((int(i), int(j)))) for i, v in zip(first, uniq)
              for j in index.get_near_dups(Simhash(int(v))) if int(j) != i}
    assert ours == theirs
    assert len(ours) >= 10  # the planted copies are found


def test_near_pairs_find_every_pair_within_the_distance():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, size=k, replace=False))) for k in range(7)]
    fps = np.unique(np.concatenate([base ^ f for f in flips]))
    a, b, _ = near_pairs(fps, 3, 4)
    found = set(zip(a.tolist(), b.tolist()))
    dist = np.bitwise_count(fps[:, None] ^ fps[None, :])
    brute = {(i, j) for i, j in zip(*np.nonzero(dist <= 3)) if i < j}
    assert found == brute and len(brute) > 40


def test_step_drops_planted_copies_whatever_the_sharding(tmp_path):
    docs = [d["text"] for d in real_texts(every=16)]
    planted = _planted(docs, n=8)
    texts = docs + planted + ["", "   "]
    kept_sets = []
    for n_shards in (1, 3):
        recs = [Record(f"d{i}", t) for i, t in enumerate(texts)]
        step = REGISTRY.get("simhash_dedup")()
        out = run_global(step, [recs[i::n_shards] for i in range(n_shards)], tmp_path / str(n_shards))
        dropped = {r.id for r in out if r.drop}
        assert len(dropped) >= len(planted) and all(r.drop == ("simhash_dedup", "near_duplicate")
                                                      for r in out if r.drop)
        assert step.stats.counters["no_words"] == 2
        for r in out:
            if r.drop:
                assert r.signals["simhash.cluster"] not in dropped
        kept_sets.append(sorted(r.id for r in out if not r.drop))
    assert kept_sets[0] == kept_sets[1]


def test_bands_must_cover_the_distance():
    with pytest.raises(ValueError, match="hamming"):
        REGISTRY.get("simhash_dedup")(hamming=6, bands=6)

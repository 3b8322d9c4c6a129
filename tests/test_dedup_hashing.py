"""Shingling, MinHash signatures and union-find of the dedup package, checked against slow reference versions."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from assay.harvest.dedup.evaluation import jaccard
from assay.harvest.dedup.shingles import reference_shingles, shingle_texts
from assay.harvest.dedup.signatures import band_keys, estimated_jaccard, minhash_signatures
from assay.harvest.dedup.unionfind import DisjointSets

TEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!",
    "“Quoted” words — with dashes… and non-breaking\u00a0spaces, «guillemets» and ¿questions?",
    "Ünïcödé wörds: Straße, façade, naïve café; ÉCOLE École école.",
    "short text",
    "",
    "   \n\t  ",
    "!!! ??? ... ---",
    "emoji 😀 in text 😀 and 中文字符 mixed with english words here",
    "lone surrogate \ud800 inside and a NUL\x00byte and control \x07 chars in a longer sentence",
    "x" * 5000 + " tail words after a very long token",
    "one two three four five six seven eight nine ten eleven twelve",
]


def _distinct_hashes(sh, i: int) -> int:
    return np.unique(sh.hashes[sh.starts[i]:sh.starts[i + 1]]).size


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_shingle_hashes_match_reference_word_ngrams(ngram: int) -> None:
    sh = shingle_texts(TEXTS, ngram)
    assert sh.starts.size == len(TEXTS) + 1
    for i, text in enumerate(TEXTS):
        assert _distinct_hashes(sh, i) == len(reference_shingles(text, ngram)), text[:40]


def test_shingles_ignore_case_and_punctuation_but_not_word_order() -> None:
    a, b, c, d = shingle_texts(["Hello, World! Nice day today, isn't it", "hello world nice day today isn t it",
                                "“HELLO” — world… nice day today isn't it", "world hello nice day today isn't it"],
                               3).hashes.reshape(4, -1)
    assert set(a) == set(b) == set(c)
    assert set(a) != set(d)


def test_shingles_of_a_text_do_not_depend_on_its_batch() -> None:
    alone = [shingle_texts([t], 5).hashes for t in TEXTS]
    together = shingle_texts(TEXTS, 5)
    for i in range(len(TEXTS)):
        assert np.array_equal(alone[i], together.hashes[together.starts[i]:together.starts[i + 1]])


def test_short_texts_get_one_shingle_of_all_their_words() -> None:
    sh = shingle_texts(["two words", "two words", "three words here", "words two"], 5)
    assert list(sh.counts) == [1, 1, 1, 1]
    assert sh.hashes[0] == sh.hashes[1] != sh.hashes[2]
    assert sh.hashes[0] != sh.hashes[3]


def _word_texts(rng: random.Random, n_pairs: int) -> list[tuple[str, str]]:
    vocab = [f"w{i}" for i in range(3000)]
    pairs = []
    for _ in range(n_pairs):
        base = [rng.choice(vocab) for _ in range(rng.randint(150, 600))]
        rate = rng.uniform(0.0, 0.12)
        edited = [rng.choice(vocab) if rng.random() < rate else w for w in base]
        pairs.append((" ".join(base), " ".join(edited)))
    return pairs


@pytest.mark.parametrize("scheme", ["one_permutation", "permutations"])
def test_minhash_estimates_jaccard_without_bias_and_as_well_as_datasketch(scheme: str) -> None:
    from datasketch import MinHash

    pairs = _word_texts(random.Random(7), 150)
    texts = [t for p in pairs for t in p]
    sig = minhash_signatures(shingle_texts(texts, 5), 128, scheme)
    est = estimated_jaccard(sig[0::2], sig[1::2])
    true = np.array([jaccard(a, b) for a, b in pairs])
    assert true.min() < 0.4 and true.max() > 0.95  # the pairs cover the range
    err = est - true
    assert abs(err.mean()) < 0.01  # unbiased
    # datasketch (the reference implementation) on the same shingles, same number of values
    ref_err = []
    for a, b in pairs:
        ma, mb = MinHash(num_perm=128, seed=3), MinHash(num_perm=128, seed=3)
        ma.update_batch([" ".join(s).encode() for s in reference_shingles(a, 5)])
        mb.update_batch([" ".join(s).encode() for s in reference_shingles(b, 5)])
        ref_err.append(ma.jaccard(mb))
    ref_err = np.array(ref_err) - true
    rmse, ref_rmse = np.sqrt((err ** 2).mean()), np.sqrt((ref_err ** 2).mean())
    assert rmse < 1.3 * ref_rmse + 0.005, (rmse, ref_rmse)


def test_signatures_of_identical_texts_are_identical_and_empty_texts_are_zero() -> None:
    sh = shingle_texts(["alpha beta gamma delta epsilon zeta", "", "alpha beta gamma delta epsilon zeta"], 2)
    for scheme in ("one_permutation", "permutations"):
        sig = minhash_signatures(sh, 64, scheme)
        assert np.array_equal(sig[0], sig[2])
        assert not sig[1].any()
        keys = band_keys(sig, 8, 8)
        assert keys.shape == (8, 3) and np.array_equal(keys[:, 0], keys[:, 2])
        assert np.unique(keys[:, 0]).size == 8  # band number is part of the key


def test_densification_fills_every_bin_of_a_one_shingle_text() -> None:
    sig = minhash_signatures(shingle_texts(["just one shingle here"], 5), 112)
    assert np.unique(sig[0]).size == 1  # every bin copied from the single non-empty one


def test_union_find_matches_scipy_components_and_roots_are_minimal_keys() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    keys = rng.integers(0, 2 ** 63, size=n, dtype=np.uint64)
    keys[10:20] = keys[5]  # ties are broken by index
    sets = DisjointSets(keys)
    edges_a, edges_b = [], []
    for _ in range(5):  # edges arrive in several batches, as bands do
        a = rng.integers(0, n, 800)
        b = rng.integers(0, n, 800)
        sets.union(a, b)
        edges_a.append(a), edges_b.append(b)
    a, b = np.concatenate(edges_a), np.concatenate(edges_b)
    _, labels = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)), directed=False)
    roots = sets.roots(0, n)
    # same partition
    assert len(set(zip(labels.tolist(), roots.tolist()))) == len(set(labels.tolist())) == len(set(roots.tolist()))
    # each root is its component's smallest (key, index)
    for label in np.unique(labels)[:300]:
        members = np.flatnonzero(labels == label)
        best = min(members.tolist(), key=lambda i: (int(keys[i]), i))
        assert set(roots[members].tolist()) == {best}

"""The embedding backends: vector contract, stable hashing (against a plain-Python reference), hostile input, and
MiniLM checked against a hand-written mean pooling over the raw transformer."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from assay.models.embeddings import (HashedNgramBackend, SentenceTransformerBackend, backend_from_spec, get_backend,
                                   minilm, ngram_hashes, packaged_minilm_path, resolve_device, token_hashes)

TEXTS = [
    "The cat sat on the mat.",
    "A kitten was sitting on the rug.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "",
    "   \n\t ",
    "Ünïcödé wörds, 中文字符 and emoji 😀 in one line!",
]
HOSTILE = ["a\ud800b", "\x00\x00nul\x00", "x" * 2_000_000, "\ufffd" * 1000, "<" * 50_000, "\u202e\u200b" * 100]

# -- a plain-Python reference of the hashed features (what the vectorised numpy code must reproduce) ------------
M64 = (1 << 64) - 1


def ref_mix(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def ref_token_hash(token: str) -> int:
    acc, power = 0, 1
    for ch in token:
        acc = (acc + (ord(ch) + 1) * power) & M64
        power = (power * 0x100000001B3) & M64
    return ref_mix(acc)


def ref_ngram_hashes(text: str, n: int) -> list[int]:
    import re

    uni = [ref_token_hash(t) for t in re.findall(r"\w+|[^\w\s]", text.lower())]
    out, prev = list(uni), uni
    for k in range(2, n + 1):
        prev = [ref_mix((prev[i] * 0x9E3779B97F4A7C15 + uni[i + k - 1] + k) & M64) for i in range(len(uni) - k + 1)]
        out += prev
    return out


def ref_vector(text: str, dim: int, n: int) -> np.ndarray:
    v = np.zeros(dim)
    for h in ref_ngram_hashes(text, n):
        v[h % dim] += -1.0 if h >> 63 else 1.0
    v = np.sign(v) * np.log1p(np.abs(v))
    norm = np.linalg.norm(v)
    return v / norm if norm else v


# -- hashed backend -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", TEXTS + ["don't stop-believing: 3.14 — ok?", "İstanbul ǅ ﬁ ß"])
def test_hashes_match_plain_python_reference(text):
    assert token_hashes(text).tolist() == ref_ngram_hashes(text, 1)
    assert ngram_hashes(text, 3).tolist() == ref_ngram_hashes(text, 3)


def test_hashed_vectors_match_reference_and_contract():
    backend = HashedNgramBackend(dim=512, ngrams=2)
    X = backend.encode(TEXTS)
    assert X.shape == (len(TEXTS), 512) and X.dtype == np.float32
    for text, row in zip(TEXTS, X):
        np.testing.assert_allclose(row, ref_vector(text, 512, 2), atol=1e-6)
    norms = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 5]], 1.0, atol=1e-5)
    assert norms[3] == 0 and norms[4] == 0  # nothing to embed: a zero row


def test_hashed_sparse_dense_and_dot_agree():
    backend = HashedNgramBackend(dim=1 << 12)
    rows = backend.encode_sparse(TEXTS)
    dense = backend.encode(TEXTS)
    np.testing.assert_array_equal(rows.to_dense(), dense)
    np.testing.assert_allclose(rows.to_scipy().toarray(), dense)
    w = np.random.default_rng(0).normal(size=1 << 12)
    np.testing.assert_allclose(rows.dot(w), dense.astype(np.float64) @ w, atol=1e-5)
    assert len(backend.encode_sparse([])) == 0 and backend.encode([]).shape == (0, 1 << 12)


def test_hashed_similarity_follows_shared_words():
    X = HashedNgramBackend().encode(["the quick brown fox jumps over the lazy dog",
                                     "the quick brown fox jumped over a lazy dog",
                                     "quarterly revenue grew nine percent in europe"])
    assert X[0] @ X[1] > 0.5 > X[0] @ X[2] + 0.3


def test_hashed_is_stable_across_processes():
    code = ("from assay.models.embeddings import HashedNgramBackend as H;"
            "print(H(dim=1<<16).encode_sparse(['Stable hashes, across runs: ok?']).indices.tolist())")
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout)
    assert len(outs) == 1
    here = HashedNgramBackend(dim=1 << 16).encode_sparse(["Stable hashes, across runs: ok?"]).indices.tolist()
    assert outs.pop().strip() == str(here)


def test_hashed_survives_hostile_input():
    backend = HashedNgramBackend(dim=1024, max_chars=100_000)
    X = backend.encode(HOSTILE + [None, b"\xff\xfe bytes", 42])  # type: ignore[list-item]
    assert X.shape == (len(HOSTILE) + 3, 1024) and np.isfinite(X).all()
    assert not X[-3:].any()  # not text: zero rows
    with pytest.raises(TypeError):
        backend.encode("a single string")


def test_spec_round_trip_and_version_guard():
    backend = HashedNgramBackend(dim=2048, ngrams=3)
    again = backend_from_spec(backend.spec())
    np.testing.assert_array_equal(again.encode(TEXTS), backend.encode(TEXTS))
    with pytest.raises(ValueError, match="version"):
        backend_from_spec({**backend.spec(), "feature_version": 99})
    with pytest.raises(ValueError):
        get_backend("no-such-backend")
    assert isinstance(get_backend("hashed", dim=64), HashedNgramBackend)


def test_import_stays_light():
    code = ("import sys, assay.models.embeddings, assay.models.quality_classifier, assay.harvest.quality, "
            "assay.harvest.quality_cli;"
            "heavy = ('torch', 'sentence_transformers', 'sklearn', 'transformers', 'scipy');"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- MiniLM -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini() -> SentenceTransformerBackend:
    return minilm(batch_size=4)


def _reference_minilm(mini: SentenceTransformerBackend, texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 by hand: the raw transformer and its tokenizer (the weights already loaded, to save a
    second load), mean of token vectors under the attention mask, L2 norm."""
    import torch

    tok = mini.model[0].tokenizer
    model = mini.model[0].auto_model
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_minilm_matches_hand_written_pooling(mini):
    texts = [t for t in TEXTS if t.strip()] + ["word " * 400]  # the last one is truncated at 256 tokens
    ours = mini.encode(texts)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference_minilm(mini, texts), atol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_minilm_semantics_empty_rows_and_hostile_input(mini):
    X = mini.encode(TEXTS + HOSTILE[:2] + [HOSTILE[2]])
    assert X[0] @ X[1] > 0.5 and X[0] @ X[1] > X[0] @ X[2] + 0.3  # paraphrase closer than an unrelated sentence
    assert not X[3].any() and not X[4].any()
    assert np.isfinite(X).all()
    assert mini.max_chars == 2560  # 10 characters per token of the 256-token window


def test_minilm_is_offline_cached_and_described(mini):
    mini.encode(["warm up"])
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert minilm().model is mini.model  # one copy per process
    assert resolve_device("auto") in ("cpu", "cuda")
    spec = mini.spec()
    assert spec == {"kind": "sentence-transformers", "label": "minilm", "dim": 384, "max_seq_length": 256,
                    "model": "packaged:all-MiniLM-L6-v2"}
    rebuilt = backend_from_spec(spec, batch_size=8, device="cpu")
    np.testing.assert_allclose(rebuilt.encode(TEXTS[:2]), mini.encode(TEXTS[:2]), atol=1e-5)
    assert isinstance(get_backend(str(packaged_minilm_path())), SentenceTransformerBackend)


def test_minilm_shorter_window_gets_its_own_copy(mini):
    short = minilm(max_seq_length=16)
    long_text = "The committee met on Tuesday to discuss the new budget for schools, roads and the hospital. " * 3
    a, b = mini.encode([long_text]), short.encode([long_text])
    assert short.model is not mini.model and mini.model.max_seq_length == 256 and short.max_chars == 160
    assert float(a[0] @ b[0]) < 0.999  # a 16-token window sees less of the text
    assert backend_from_spec(mini.spec()).model is mini.model  # the spec's default window shares the copy

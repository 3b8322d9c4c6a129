"""The tiny LM, its tokenizer, the token-swap corruption and the dataset reader."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import orjson
import pytest

from assay.lab.corruption import token_swap
from assay.lab.data import read_texts, split_docs
from assay.lab.tinylm import PRESETS, ModelConfig, TrainConfig, build_model, evaluate, sample_tokens, train_lm
from assay.lab.tokenizer import LabTokenizer, make_sequences

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "Pack my box with five dozen liquor jugs. " * 2
        + "def add(a, b):\n    return a + b\n")
DOCS = [TEXT + f" document {i} " + "lorem ipsum dolor sit amet " * (i % 5) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer() -> LabTokenizer:
    return LabTokenizer.train(DOCS, vocab_size=300)


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("tie", [True, False])
def test_param_count_matches_the_module(name, tie):
    cfg = ModelConfig.preset(name, vocab_size=512, tie_embeddings=tie)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.param_count()
    assert cfg.param_count(embeddings=False) < cfg.param_count()


def test_presets_span_the_lab_sizes():
    sizes = {n: ModelConfig.preset(n, vocab_size=2048).param_count() for n in PRESETS}
    assert 0.9e6 < sizes["tiny"] < 2e6 and 0.9e7 < sizes["base"] < 1.2e7  # the ~1–10M range of the issue
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(d_model=30, n_head=4)


def test_tokenizer_is_deterministic_and_byte_level(tokenizer):
    again = LabTokenizer.train(DOCS, vocab_size=300)
    assert again.tokenizer.get_vocab() == tokenizer.tokenizer.get_vocab()
    hostile = "naïve café — 日本語 🙂 \x00\x01 \ud800 end"
    ids = tokenizer.encode(hostile.encode("utf-8", "replace").decode("utf-8"))
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(tokenizer.encode("Pack my box")) == "Pack my box"
    stream = tokenizer.encode_docs(["ab", "cd"])
    assert (stream == tokenizer.eos_id).sum() == 2 and stream[-1] == tokenizer.eos_id


def test_tokenizer_save_load(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tok.json")
    loaded = LabTokenizer.load(tmp_path / "tok.json")
    assert loaded.encode(TEXT) == tokenizer.encode(TEXT)


def test_make_sequences_shapes():
    stream = np.arange(100)
    seqs = make_sequences(stream, 8)
    assert seqs.shape == (12, 9)
    assert seqs[1, 0] == 8 and seqs[0, -1] == 8  # consecutive windows share one token (inputs/targets)
    assert make_sequences(np.arange(5), 8).shape == (0, 9)


def test_token_swap_corrupts_exactly_what_it_says():
    seqs = np.tile(np.arange(1, 41), (200, 1))  # every row 1..40: any change is visible
    out, mask = token_swap(seqs, 0.75, vocab_size=1000, swap=0.5, seed=3, first_id=1)
    assert mask.sum() == 50  # (1 − 0.75)·200 rows
    changed = out != seqs
    assert not changed[~mask].any()
    # 20 of 40 positions replaced; a replacement may draw the original id by chance (1 in 999)
    assert (changed[mask].sum(axis=1) <= 20).all() and changed[mask].sum() >= 50 * 20 * 0.98
    assert out.min() >= 1 and out.max() < 1000
    again, _ = token_swap(seqs, 0.75, vocab_size=1000, seed=3)
    assert (again == out).all()
    clean, m = token_swap(seqs, 1.0, 1000)
    assert (clean == seqs).all() and not m.any()
    with pytest.raises(ValueError):
        token_swap(seqs, 1.5, 1000)


def _tiny_setup(tokenizer):
    cfg = ModelConfig.preset("nano", vocab_size=tokenizer.vocab_size, context=16)
    stream = tokenizer.encode_docs(DOCS)
    seqs = make_sequences(stream, cfg.context)
    return cfg, seqs[:-8], seqs[-8:]


def test_training_is_deterministic_and_learns(tokenizer):
    cfg, train, held = _tiny_setup(tokenizer)
    run = lambda seed: train_lm(cfg, train, held, TrainConfig(tokens=6000, seed=seed, eval_points=3))  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert a.eval_loss == b.eval_loss
    assert a.eval_loss != c.eval_loss
    # a repetitive corpus is learned far below the uniform-guess loss log(V)
    assert a.eval_loss < 0.6 * math.log(tokenizer.vocab_size)
    evals = [p["eval_loss"] for p in a.curve if "eval_loss" in p]
    assert len(evals) == 3 and evals[-1] < evals[0]
    assert a.tokens >= 6000 and a.params == cfg.param_count()
    with pytest.raises(ValueError, match="sequences must be"):
        train_lm(cfg, train[:, :5], held, TrainConfig(tokens=100))
    with pytest.raises(ValueError, match="no training sequences"):
        train_lm(cfg, train[:0], held, TrainConfig(tokens=100))


def test_cached_sampling_matches_full_forward(tokenizer):
    import torch

    cfg, train, held = _tiny_setup(tokenizer)
    result, model = train_lm(cfg, train, held, TrainConfig(tokens=2000), return_model=True)
    seq = torch.as_tensor(train[:2, :cfg.context])
    full = model(seq)
    caches = [{} for _ in model.blocks]
    steps = [model(seq[:, t:t + 1], caches, offset=t)[:, -1] for t in range(cfg.context)]
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-4)
    stream = sample_tokens(model, 100, tokenizer.eos_id, seed=1, batch_size=4)
    assert len(stream) >= 100 and stream.min() >= 0 and stream.max() < tokenizer.vocab_size
    assert (sample_tokens(model, 100, tokenizer.eos_id, seed=1, batch_size=4) == stream).all()
    assert evaluate(model, held) == pytest.approx(result.eval_loss, rel=1e-5)


def test_read_texts_formats_and_bad_input(tmp_path):
    good = {"id": "r1", "content": "an assay record", "modality": "text", "meta": {}, "signals": {}, "lineage": []}
    dropped = {**good, "id": "r2", "content": "dropped one", "drop": {"step": "x", "reason": "y"}}
    lines = [orjson.dumps(good), b'{"text": "foreign json"}', b'{"text": ""}', b"{broken json",
             orjson.dumps(dropped), b'{"text": "with nul \\u0000 inside"}']
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "gzipped text"}) + "\n")
    (tmp_path / "rejected").mkdir()
    (tmp_path / "rejected" / "r.jsonl").write_text(json.dumps({"text": "should not be read"}) + "\n")
    texts = read_texts(str(tmp_path))
    assert sorted(texts.docs) == ["an assay record", "foreign json", "gzipped text"]
    assert texts.skipped["empty_or_not_text"] == 1 and texts.skipped["dropped_record"] == 1
    assert texts.skipped["binary"] == 1 and sum(texts.skipped.values()) >= 4
    txt = tmp_path / "docs"
    (txt / "sub").mkdir(parents=True)
    (txt / "one.txt").write_text("first text file")
    (txt / "sub" / "two.txt").write_bytes(b"second \xff\xfe broken utf-8")
    docs = read_texts(str(txt)).docs
    assert len(docs) == 2 and "\ufffd" in docs[1]
    with pytest.raises(FileNotFoundError):
        read_texts(str(tmp_path / "missing.jsonl"))


def test_split_docs_is_deterministic_and_disjoint():
    docs = [f"doc number {i}" for i in range(1000)]
    train, held = split_docs(docs, 0.1)
    assert 60 < len(held) < 140 and len(train) + len(held) == 1000
    assert not set(train) & set(held)
    train2, held2 = split_docs(list(reversed(docs)), 0.1)
    assert set(held2) == set(held)

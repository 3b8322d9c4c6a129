"""token_count: SmolLM2's tokenizer (the bundled LLM's, through llama.cpp) on Debian's manuals, MiniLM's WordPiece
without truncation, bounds and reasons."""

from __future__ import annotations

from operator_support import real_texts

from assay.core.record import Record
from assay.core.step import REGISTRY
from assay.harvest.filters.tokens import TokenCounter


def test_smollm2_counts_tokens_that_decode_back_to_the_text():
    docs = [d["text"] for d in real_texts(every=16)][:30]
    counter = TokenCounter("smollm2")
    counts = counter.count(docs)
    for text, n in zip(docs, counts):
        ids = counter.tokenize(text)
        assert len(ids) == n and counter.detokenize(ids) == text  # byte-level BPE: lossless, no BOS added
    # one token longer than 32 bytes (llama-cpp-python's own detokenize loses such pieces)
    dashes = "-" * 48 + "+" + " " * 40 + "x"
    assert counter.detokenize(counter.tokenize(dashes)) == dashes
    # a BPE over English text: about 4 characters a token
    ratio = sum(map(len, docs)) / sum(counts)
    assert 3 < ratio < 6, ratio


def test_minilm_wordpiece_counts_without_special_tokens_or_truncation():
    counter = TokenCounter("minilm")
    long_text = "database " * 1000
    assert counter.count([long_text, "Hello, world!", ""]) == [1000, 4, 0]


def test_filter_bounds_and_reasons():
    step = REGISTRY.get("token_count")(min_tokens=3, max_tokens=20)
    recs = [Record("a", "hi"), Record("b", "A sentence of a reasonable length."), Record("c", "word " * 50)]
    step.process_batch(recs, None)
    assert [r.drop and r.drop[1] for r in recs] == ["too_few_tokens", None, "too_many_tokens"]
    assert recs[1].signals["tokens.count"] == 7
    assert step.stats.counters["tokens"] == sum(r.signals["tokens.count"] for r in recs)

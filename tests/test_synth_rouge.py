"""ROUGE-L of assay.synthesize.rouge against the reference implementation (the rouge-score package)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from assay.synthesize.rouge import RougeLIndex, lcs_length, rouge_l, tokenize
from testutil import DATA

SEEDS = DATA / "self_instruct_seed_tasks.jsonl"
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

words = st.sampled_from(["the", "a", "cat", "sat", "on", "mat", "dog", "Run", "run!", "x1", "é", "42", "-", "to"])
texts = st.lists(words, max_size=40).map(" ".join)


def reference(prediction: str, target: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


@settings(max_examples=400, deadline=None)
@given(texts, texts)
def test_rouge_l_matches_rouge_score(a: str, b: str) -> None:
    assert rouge_l(a, b) == pytest.approx(reference(a, b), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_tokenizer_and_score_on_arbitrary_unicode(a: str, b: str) -> None:
    assert rouge_l(a, b) == pytest.approx(reference(a, b), abs=1e-12)


def test_lcs_classic_examples() -> None:
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["a"] * 70, ["a"] * 65) == 65  # more than one 64-bit word


def test_tokenize_matches_rouge_score_rules() -> None:
    assert tokenize("Hello, World! It's 2024.") == ["hello", "world", "it", "s", "2024"]


def test_index_scores_every_pool_entry() -> None:
    pool = ["Write a poem about the sea.", "Explain why the sky is blue.", "", "List three prime numbers."]
    index = RougeLIndex(pool)
    cand = "Write a short poem about the blue sea."
    assert index.scores(cand) == pytest.approx([reference(cand, t) for t in pool], abs=1e-12)
    best, where = index.most_similar(cand)
    assert where == 0 and best == pytest.approx(reference(cand, pool[0]))
    assert RougeLIndex().most_similar("anything") == (0.0, -1)


def test_index_agrees_with_rouge_score_on_the_self_instruct_seeds() -> None:
    instructions = [json.loads(line)["instruction"] for line in SEEDS.open()]
    index = RougeLIndex(instructions[:120])
    for cand in instructions[120:]:
        ours = index.scores(cand)
        theirs = [reference(cand, t) for t in instructions[:120]]
        assert ours == pytest.approx(theirs, abs=1e-12)

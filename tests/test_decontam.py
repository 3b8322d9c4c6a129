"""The ``decontaminate`` filter: n-gram overlap with evaluation sets."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.core.errors import RecipeError
from assay.core.record import Record
from assay.core.step import REGISTRY, StepContext
from assay.harvest.decontam import (
    Decontaminate,
    NgramIndex,
    get_index,
    ngram_hashes,
    normalize_words,
)
from testutil import DATA

HUMANEVAL = DATA / "HumanEval.jsonl.gz"

CLEAN_CODE = '''
from typing import List


def moving_average(values: List[float], window: int) -> List[float]:
    """Return the moving average of values over a sliding window."""
    if window <= 0:
        raise ValueError("window must be positive")
    out = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        if i >= window - 1:
            out.append(total / window)
    return out
'''


def run(step: Decontaminate, records: list[Record]) -> list[Record]:
    step.setup(StepContext())
    return step.process_batch(records, StepContext())


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


# -- hashing: the vectorised n-gram hashes against a plain reference ------------------------------------------
def reference_ngram_hashes(words: list[str], n: int) -> list[int]:
    mask = (1 << 64) - 1
    hashes = [xxhash.xxh3_64_intdigest(w.encode()) for w in words]
    out = []
    for i in range(len(words) - n + 1):
        h = 0
        for j in range(n):
            h = (h * 0x9E3779B97F4A7C15 + hashes[i + j]) & mask
        out.append(h)
    return out


@given(st.lists(st.sampled_from(["a", "b", "c", "delta", "é"]), max_size=40), st.integers(1, 6))
def test_ngram_hashes_match_reference(words, n):
    from assay.harvest.decontam import _WordHasher

    got = ngram_hashes(_WordHasher()(words), n).tolist()
    assert got == reference_ngram_hashes(words, n)


@given(st.lists(st.lists(st.sampled_from("abcd"), min_size=0, max_size=12), min_size=1, max_size=4),
       st.lists(st.sampled_from("abcde"), max_size=30), st.integers(2, 4))
@settings(max_examples=200)
def test_matches_equal_naive_string_ngram_sets(items, doc, n):
    """Where the index says a document n-gram is contaminated must be exactly where the n-gram, as a string,
    is one of the evaluation items' n-grams."""
    index = NgramIndex(n)
    naive: set[str] = set()
    for item in items:
        index.add("bench", " ".join(item))
        naive.update(" ".join(item[i: i + n]) for i in range(len(item) - n + 1))
    index.freeze()
    positions, owners = index.match(doc)
    expected = [i for i in range(len(doc) - n + 1) if " ".join(doc[i: i + n]) in naive]
    assert positions.tolist() == expected
    assert set(owners.tolist()) <= {0}


def test_normalisation_ignores_case_punctuation_accents_and_layout():
    assert normalize_words("Héllo,   WORLD!\n\tdef f(x): return x_1") == ["hello", "world", "def", "f", "x",
                                                                          "return", "x_1"]


# -- the step ---------------------------------------------------------------------------------------------------
def test_jsonl_fields_plain_text_and_signals(tmp_path):
    bench = write_jsonl(tmp_path / "quiz.jsonl.gz", [
        {"question": "Which river flows through the ancient city of Babylon in modern day Iraq today?",
         "answer": "The Euphrates"},
        {"question": "short one", "answer": "x"},
    ], compress=True)
    passage = tmp_path / "passage.txt"
    passage.write_text("It was the best of times, it was the worst of times, it was the age of wisdom, "
                       "it was the age of foolishness.", encoding="utf-8")
    step = Decontaminate(sources=[{"path": str(bench), "fields": ["question", "answer"]}, str(passage)], n=8)
    assert REGISTRY.get("decontaminate") is Decontaminate
    out = run(step, [
        Record("q", "Trivia night! which RIVER flows through the ancient city of Babylon, in modern-day Iraq?"),
        Record("p", "As Dickens wrote: it was the best of times; it was the worst of times..."),
        Record("clean", "A river flows through the city; the times were good, and the age was wise."),
        Record("straddle", "babylon in modern day iraq today the euphrates"),  # question tail + answer: 8 words
    ])
    by_id = {r.id: r for r in out}
    assert by_id["q"].drop == ("decontaminate", "contaminated")
    assert by_id["q"].signals["decontam.benchmark"] == "quiz"
    assert by_id["q"].signals["decontam.matches"] >= 1
    assert by_id["p"].drop == ("decontaminate", "contaminated")
    assert by_id["p"].signals["decontam.benchmark"] == "passage"
    assert by_id["p"].signals["decontam.ngram"] == "it was the best of times it was"
    assert by_id["clean"].drop is None and by_id["clean"].signals == {"decontam.matches": 0}
    assert by_id["straddle"].drop is not None
    assert step.ngram_index.items == 3 and step.ngram_index.short_items == 1
    assert step.stats.counters["decontam.contaminated:quiz"] == 2


def test_flag_mode_and_min_matches(tmp_path):
    src = tmp_path / "eval.txt"
    src.write_text(" ".join(f"w{i}" for i in range(30)), encoding="utf-8")
    doc = Record("d", "intro " + " ".join(f"w{i}" for i in range(15)) + " outro")  # 3 matching 13-grams
    [flagged] = run(Decontaminate(sources=[str(src)], action="flag"), [doc.copy()])
    assert flagged.drop is None
    assert flagged.signals["decontaminate.flag"] == "contaminated"
    assert flagged.signals["decontam.matches"] == 3
    [kept] = run(Decontaminate(sources=[str(src)], min_matches=4), [doc.copy()])
    assert kept.drop is None


def test_index_is_built_once_per_process(tmp_path):
    src = tmp_path / "eval.txt"
    src.write_text("one two three four five six seven eight nine ten eleven twelve thirteen", encoding="utf-8")
    a, b = Decontaminate(sources=[str(src)]), Decontaminate(sources=[str(src)])
    a.setup(StepContext())
    b.setup(StepContext())
    assert a.ngram_index is b.ngram_index and len(a.ngram_index) == 1
    assert get_index(list(a.params.sources), 13) is a.ngram_index


def test_bad_sources_are_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        Decontaminate(sources=[str(tmp_path / "missing.jsonl")]).setup(StepContext())
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}])
    with pytest.raises(RecipeError, match="none of the fields"):
        Decontaminate(sources=[{"path": str(bad), "fields": ["question"]}]).setup(StepContext())
    with pytest.raises(ValueError):
        Decontaminate(sources=[])


def test_empty_and_huge_documents(tmp_path):
    src = tmp_path / "eval.txt"
    src.write_text(" ".join(f"w{i}" for i in range(20)), encoding="utf-8")
    rng = random.Random(0)
    huge = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(500_000))
    out = run(Decontaminate(sources=[str(src)]), [Record("e", ""), Record("h", huge), Record("d", {"x": 1}, "image_text")])
    assert [r.drop for r in out] == [None, None, None]
    assert out[1].signals["decontam.matches"] == 0


def test_planted_humaneval_solution_is_caught_and_clean_code_is_not():
    problems = [json.loads(line) for line in gzip.open(HUMANEVAL, "rt", encoding="utf-8")]
    step = Decontaminate(sources=[{"path": str(HUMANEVAL), "fields": ["prompt", "canonical_solution"],
                                   "name": "humaneval"}])
    # a blog post that pastes one solution (re-indented, no prompt) in the middle of its own prose
    solution = problems[0]["canonical_solution"]  # has_close_elements: 30+ words
    assert len(normalize_words(solution)) >= 13
    planted = ("Here is how I solved this interview question last week.\n\n```python\n"
               + "\n".join(line.strip() for line in solution.splitlines()) + "\n```\nHope it helps!")
    full_problem = "Solutions dump:\n" + problems[10]["prompt"] + problems[10]["canonical_solution"]
    out = run(step, [Record("planted", planted), Record("full", full_problem), Record("clean", CLEAN_CODE)])
    assert out[0].drop == ("decontaminate", "contaminated")
    assert out[0].signals["decontam.benchmark"] == "humaneval"
    assert out[1].drop == ("decontaminate", "contaminated")
    assert out[2].drop is None and out[2].signals["decontam.matches"] == 0
    # every problem's prompt + solution is caught, none of them by chance: each matches many n-grams
    records = [Record(str(i), p["prompt"] + p["canonical_solution"]) for i, p in enumerate(problems)]
    caught = run(step, records)
    assert all(r.drop is not None for r in caught)
    assert np.median([r.signals["decontam.matches"] for r in caught]) > 20

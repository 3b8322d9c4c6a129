"""Code decontamination (a planted HumanEval solution is caught) and code-aware near-dedup."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from assay.core.record import Record
from assay.core.step import StepContext
from assay.harvest.code.decontam import CodeDecontaminate, SubstringIndex, normalize_lines
from assay.harvest.code.dedup import CodeMinHashDedup, code_shingle_text
from assay.harvest.decontam import Decontaminate
from testutil import DATA

HUMANEVAL = DATA / "HumanEval.jsonl.gz"
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
SOURCE = {"path": str(HUMANEVAL), "fields": ["prompt", "canonical_solution"], "name": "humaneval"}


def humaneval() -> list[dict]:
    with gzip.open(HUMANEVAL, "rt") as f:
        return [json.loads(line) for line in f]


def planted_file(item: dict) -> str:
    """A real-looking module with the canonical solution pasted, re-indented, into a method."""
    body = "\n".join("    " + line if line.strip() else line for line in item["canonical_solution"].splitlines())
    return ("import math\n\n\nclass Solver:\n    \"\"\"Helpers for the exercises.\"\"\"\n\n"
            f"    def solve(self, {item['entry_point']}_input):\n{body}\n\n\ndef main():\n    print(Solver())\n")


def test_planted_humaneval_solution_is_removed_by_both_decontamination_steps():
    items = humaneval()
    item = max(items, key=lambda it: len(it["canonical_solution"]))
    text = planted_file(item)
    assert item["canonical_solution"] not in text  # not a verbatim copy: indentation differs
    clean = (SITE / "requests" / "sessions.py").read_text() if SITE.is_dir() else "def f():\n    return 1\n" * 50
    recs = [Record("planted", text, "code", {"language": "Python"}),
            Record("clean", clean, "code", {"language": "Python"})]
    exact = CodeDecontaminate(sources=[SOURCE])
    exact.setup(StepContext())
    exact.process_batch(recs, StepContext())
    assert recs[0].drop == ("code_decontaminate", "contaminated") and recs[1].drop is None
    assert recs[0].signals["code_decontam.item"] == item["task_id"]
    assert recs[0].signals["code_decontam.field"] == "canonical_solution"
    assert exact.stats.counters["code_decontam.contaminated:humaneval"] == 1

    recs2 = [Record("planted", text, "code"), Record("clean", clean, "code")]
    ngram = Decontaminate(sources=[SOURCE], n=13)
    ngram.setup(StepContext())
    ngram.process_batch(recs2, StepContext())
    assert recs2[0].drop == ("decontaminate", "contaminated") and recs2[1].drop is None


def test_every_long_enough_humaneval_item_is_found_when_planted_and_prompts_too():
    items = humaneval()
    step = CodeDecontaminate(sources=[SOURCE], min_chars=50)
    found = missed = 0
    for it in items:
        if len(" ".join(it["canonical_solution"].split())) < 60:
            continue
        rec = Record(it["task_id"], planted_file(it), "code")
        step.process_batch([rec], StepContext())
        found += rec.drop is not None
        missed += rec.drop is None
    assert found >= 100 and missed == 0
    prompt_only = Record("p", "# my notes\n" + items[0]["prompt"] + "    pass\n", "code")
    step.process_batch([prompt_only], StepContext())
    assert prompt_only.signals["code_decontam.field"] == "prompt"


def test_substring_index_normalisation_and_boundaries():
    idx = SubstringIndex(min_chars=20)
    idx.add("for i in range(10):\n    total += i\nreturn total\n", "bench", "1", "solution")
    idx.add("x = 1\n", "bench", "2", "solution")  # too short to use alone
    assert idx.short == 1
    hit = idx.find("def f():\n        total = 0\n        for i in  range(10):\n\n            total += i\n"
                   "        y = 2; return total\n")
    assert hit is None  # last line must *start* the file's line: "y = 2; return total" does not
    hit = idx.find("def f():\n  total = 0;  for i in range(10):\n   total  +=  i\n  return total  # done\n")
    assert hit is not None and hit.item == "1"  # first line may end a line, last line may start one
    assert idx.find("for i in range(10):\n    total -= i\nreturn total\n") is None
    assert normalize_lines("  a   b \n\n\t c\n") == ["a b", "c"]


def test_code_aware_shingles_keep_identifiers_and_optionally_drop_comments():
    assert code_shingle_text("max_line_length = _x") == "maxßlineßlength = ßx"
    text = "# a long explanation of nothing\nvalue = compute(a, b)  # why\n"
    assert code_shingle_text(text, "Python", strip_comments=True) == "\nvalue = compute(a, b)  \n"
    assert code_shingle_text('s = "# kept"\n', "Python", strip_comments=True) == 's = "# kept"\n'


def _module(seed: int, header: str = "") -> str:
    funcs = "".join(f"def handler_{seed}_{i}(request_{i}, context):\n    value = request_{i}.get('k{i}')\n"
                    f"    return context.render(value, status={200 + i})\n\n" for i in range(12))
    return header + funcs


def test_near_duplicate_files_are_clustered_and_distinct_ones_kept(tmp_path: Path):
    base = _module(1)
    near = _module(1, "# Copyright 2024 Someone Else\n# Licensed under MIT\n").replace("status=205", "status=299")
    other = _module(2).replace("render", "dispatch").replace("value", "result")
    recs = [Record("a", base, "code", {"language": "Python"}), Record("b", near, "code", {"language": "Python"}),
            Record("c", other, "code", {"language": "Python"})]
    step = CodeMinHashDedup()
    out = [r for b in step.process([recs], StepContext(run_dir=tmp_path)) for r in b]
    dropped = [r for r in out if r.drop]
    assert len(out) == 3 and len(dropped) == 1 and dropped[0].id in ("a", "b")
    assert dropped[0].drop == ("code_minhash_dedup", "near_duplicate")
    kept_pair = ({"a", "b"} - {dropped[0].id}).pop()
    assert dropped[0].signals["minhash.cluster"] == kept_pair
    assert next(r for r in out if r.id == "c").drop is None
    assert [r.content for r in out] == [base, near, other]  # the shingle view never leaks into the records
    assert all(type(r) is Record for r in out)


def test_strip_comments_clusters_files_that_differ_only_in_commentary(tmp_path: Path):
    code = _module(3)
    doc_a = "".join(f"# note {i}: the design decision number {i * 7} was taken for reason r{i}\n" for i in range(60))
    doc_b = "".join(f"# story {i}: weather report {i * 13} says rain on day d{i}\n" for i in range(60))
    for strip, expect in ((False, 0), (True, 1)):
        recs = [Record("a", doc_a + code, "code", {"language": "Python"}),
                Record("b", doc_b + code, "code", {"language": "Python"})]
        step = CodeMinHashDedup(strip_comments=strip)
        out = [r for b in step.process([recs], StepContext(run_dir=tmp_path / str(strip))) for r in b]
        assert sum(r.drop is not None for r in out) == expect

"""HumanEval in the sandbox: canonical solutions pass their tests, and a mutated (wrong) version of each fails.

The default run takes every 8th problem (21 of 164); ``-m slow`` runs all 164. The mutated solution of a problem
is the first single-site mutant (comparison, arithmetic, constant, boolean, returned value; in that order) that the
tests reject: a mutant the tests accept is an *equivalent* mutant or a gap in HumanEval's tests, and is counted.
Every problem must have a rejected mutant among its first 10, and the mutant must really differ from the original.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest
from testutil import DATA

from assay.core.record import Record
from assay.evolve.execution import CodeChecker, code_task_of, mutants
from assay.evolve.sandbox import Limits, Sandbox

HUMANEVAL = DATA / "HumanEval.jsonl.gz"


def load_problems() -> list[dict]:
    with gzip.open(HUMANEVAL, "rt") as f:
        return [json.loads(line) for line in f]


def check_humaneval(problems: list[dict]) -> dict:
    checker = CodeChecker(Sandbox(Limits(cpu_seconds=5, wall_seconds=15)), workers=2)
    tasks = []
    for p in problems:
        task = code_task_of(Record(p["task_id"], {**p, "solution": p["canonical_solution"]}))
        assert not isinstance(task, str), (p["task_id"], task)
        tasks.append(task)
    t = time.perf_counter()
    canonical = checker.check(tasks)
    canonical_seconds = time.perf_counter() - t
    failures = {p["task_id"]: r.error_summary() for p, r in zip(problems, canonical) if not r.ok}

    # mutants: try them in order until the tests reject one
    mutant_limits = Limits(cpu_seconds=2, wall_seconds=6)
    candidates = [list(mutants(t.prefix, t.solution, limit=10)) for t in tasks]
    chosen: dict[str, tuple[str, str]] = {}
    survivors = 0
    pending = list(range(len(tasks)))
    t = time.perf_counter()
    for k in range(10):
        progs, idx = [], []
        for i in pending:
            if k < len(candidates[i]):
                desc, program = candidates[i][k]
                progs.append(program + "\n\n" + tasks[i].tests + f"\n\ncheck({tasks[i].entry_point})\n")
                idx.append(i)
        if not progs:
            break
        results = checker.sandbox.python_many(progs, workers=2, limits=mutant_limits)
        still = []
        for i, r in zip(idx, results):
            if r.ok:
                survivors += 1
                still.append(i)
            else:
                chosen[problems[i]["task_id"]] = (candidates[i][k][0], r.status)
        pending = still
    mutant_seconds = time.perf_counter() - t
    return {"tasks": tasks, "failures": failures, "chosen": chosen, "survivors": survivors,
            "canonical_seconds": canonical_seconds, "mutant_seconds": mutant_seconds, "candidates": candidates}


def assert_humaneval(problems: list[dict]) -> None:
    out = check_humaneval(problems)
    assert not out["failures"], out["failures"]
    missing = [p["task_id"] for p in problems if p["task_id"] not in out["chosen"]]
    assert not missing, f"no rejected mutant for {missing}"
    for p, t, cands in zip(problems, out["tasks"], out["candidates"]):
        assert all(program != t.prefix + t.solution for _, program in cands)
    # most first mutants are already wrong; equivalent mutants are the exception
    assert out["survivors"] <= 0.2 * len(problems), out["survivors"]
    per_problem = out["canonical_seconds"] / len(problems)
    print(f"\nHumanEval x{len(problems)}: canonical {out['canonical_seconds']:.1f} s "
          f"({1000 * per_problem:.0f} ms/problem, 2 sandboxes at a time); mutants {out['mutant_seconds']:.1f} s; "
          f"surviving (equivalent) mutants tried: {out['survivors']}")
    assert per_problem < 2.0


def test_humaneval_subset_canonical_pass_mutants_fail() -> None:
    assert_humaneval(load_problems()[::8])


@pytest.mark.slow
def test_humaneval_all_164() -> None:
    problems = load_problems()
    assert len(problems) == 164
    assert_humaneval(problems)

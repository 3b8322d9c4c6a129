"""Execution feedback: code tasks from records, RLEF repair rounds with the local model, behaviour clustering."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.pipeline import Pipeline
from assay.core.record import Record
from assay.core.step import StepContext
from assay.evolve.execution import (BehaviourClustering, CodeTask, ExecutionFeedback, behaviour_program,
                                    cluster_by_behaviour, code_task_of, extract_code, generate_inputs,
                                    parse_behaviour)
from assay.evolve.sandbox import Sandbox


# -- code tasks ---------------------------------------------------------------------------------------------------
def test_extract_code_prefers_the_python_fence() -> None:
    text = "Here:\n```bash\npip install x\n```\nand\n```python\ndef f():\n    return 1\n```\nDone."
    assert extract_code(text) == "def f():\n    return 1"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```\nprint(1)\n```") == "print(1)"
    assert extract_code("```python\nunterminated = 1\n") == "unterminated = 1"
    assert extract_code(None) == ""  # type: ignore[arg-type]


def test_code_task_from_humaneval_layout_and_from_chat() -> None:
    he = Record("h", {"prompt": "def inc(x: int) -> int:\n    \"\"\"x + 1\"\"\"\n", "entry_point": "inc",
                      "canonical_solution": "    return x + 1\n",
                      "test": "def check(candidate):\n    assert candidate(1) == 2\n"})
    t = code_task_of(he)
    assert isinstance(t, CodeTask) and t.prefix.startswith("def inc")
    prog = t.test_program()
    assert prog.endswith("check(inc)\n") and "return x + 1" in prog
    # a full function instead of a body replaces the prompt (imports kept)
    full = t.program("import math\ndef inc(x):\n    return x + 1\n")
    assert full.count("def inc") == 1
    chat = Record("c", {"messages": [{"role": "user", "content": "write add"},
                                     {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a+b\n```"}],
                        "tests": "assert add(1, 2) == 3"})
    t2 = code_task_of(chat)
    assert isinstance(t2, CodeTask) and t2.solution == "def add(a, b):\n    return a+b" and t2.prefix == ""
    assert code_task_of(Record("x", "just text")) == "not_a_code_task"
    assert code_task_of(Record("y", {"prompt": "p", "solution": "s"})) == "no_tests"
    assert code_task_of(Record("z", {"tests": "assert 1", "solution": "x"})) == "no_problem"


# -- behaviour clustering -----------------------------------------------------------------------------------------
def test_generate_inputs_follow_annotations_and_are_deterministic() -> None:
    code = ("from typing import List, Optional, Tuple\n"
            "def f(xs: List[int], s: str, k: int, t: Tuple[int, str], o: Optional[float], d: dict[str, int],"
            " u):\n    pass\n")
    a = generate_inputs(code, "f", 30, seed=1)
    assert a == generate_inputs(code, "f", 30, seed=1) and a != generate_inputs(code, "f", 30, seed=2)
    for xs, s, k, t, o, d, u in a:
        assert isinstance(xs, list) and all(isinstance(x, int) for x in xs)
        assert isinstance(s, str) and isinstance(k, int) and not isinstance(k, bool)
        assert isinstance(t, tuple) and isinstance(t[0], int) and isinstance(t[1], str)
        assert o is None or isinstance(o, float)
        assert isinstance(d, dict) and all(isinstance(x, str) for x in d)
        assert isinstance(u, int)
    assert generate_inputs("def g(:", "g", 3) == [] and generate_inputs(code, "missing", 3) == []


def test_cluster_by_behaviour_orders_by_size() -> None:
    assert cluster_by_behaviour([["1"], ["2"], ["1"], ["3"], ["2"], ["1"]]) == [[0, 2, 5], [1, 4], [3]]


def test_behaviour_program_isolates_prints_and_exceptions() -> None:
    prog = "def f(x: int) -> int:\n    print('noise')\n    if x < 0:\n        raise ValueError\n    return x * 2\n"
    r = Sandbox().run_python(behaviour_program(prog, "f", [[1], [-1], [3]]))
    assert parse_behaviour(r) == ["2", "!ValueError", "6"]


def test_behaviour_clustering_keeps_one_program_per_behaviour(tmp_path: Path) -> None:
    problem = "Return the sum of the two integers."
    candidates = {
        "plus": "def add(a: int, b: int) -> int:\n    return a + b\n",
        "plus_swapped": "def add(a: int, b: int) -> int:\n    return b + a\n",
        "sum_list": "```python\ndef add(a: int, b: int) -> int:\n    total = sum([a, b])\n    return total\n```",
        "minus": "def add(a: int, b: int) -> int:\n    return a - b\n",
        "abs_minus": "def add(a: int, b: int) -> int:\n    return abs(a - b)\n",
        "broken": "def add(a: int, b: int) -> int\n    return a + b\n",
    }
    records = [Record(name, {"task_id": "add", "prompt": problem, "solution": code}) for name, code in
               candidates.items()]
    other = Record("solo", {"task_id": "mul", "prompt": "multiply", "solution": "def mul(a: int, b: int):\n"
                                                                                 "    return a * b\n"})
    rejected: list[Record] = []
    step = BehaviourClustering({"num_inputs": 25, "seed": 3})
    kept = list(Pipeline([step]).run_records(records + [other], StepContext(run_dir=tmp_path),
                                             reject=rejected.extend))
    reasons = {r.id: r.drop[1] for r in rejected}
    assert reasons["broken"] == "broken_program"
    kept_ids = {r.id for r in kept}
    # one survivor among the three additions (the shortest program), one per wrong behaviour, and the lone mul
    assert len(kept_ids & {"plus", "plus_swapped", "sum_list"}) == 1
    assert {"minus", "abs_minus", "solo"} <= kept_ids
    by_id = {r.id: r for r in kept + rejected}
    assert by_id["plus"].signals["cluster.size"] == 3 and by_id["plus"].signals["cluster.rank"] == 0
    assert by_id["minus"].signals["cluster.size"] == 1
    assert by_id["plus"].signals["cluster.count"] == 3  # +, -, |-| (the broken one is not clustered)
    assert step.stats.counters["problems"] == 2


def test_behaviour_clustering_max_clusters(tmp_path: Path) -> None:
    records = [Record(f"r{i}", {"task_id": "t", "prompt": "p",
                                "solution": f"def f(x: int) -> int:\n    return x + {i % 3}\n"}) for i in range(6)]
    records.append(Record("r6", {"task_id": "t", "prompt": "p", "solution": "def f(x: int) -> int:\n    return x\n"}))
    rejected: list[Record] = []
    kept = list(Pipeline([BehaviourClustering({"max_clusters": 1})]).run_records(
        records, StepContext(run_dir=tmp_path), reject=rejected.extend))
    # behaviours: x (r0, r3, r6), x+1 (r1, r4), x+2 (r2, r5): only the biggest cluster's shortest program stays
    assert [r.id for r in kept] == ["r6"]
    assert sorted(r.drop[1] for r in rejected).count("small_cluster") == 2


# -- RLEF with the local model --------------------------------------------------------------------------------------
def _step(tmp_path: Path, **params) -> ExecutionFeedback:
    return ExecutionFeedback({"cache": str(tmp_path / "cache.sqlite"), "seed": 1,
                              "sampling": {"temperature": 0.2, "max_tokens": 100}, **params})


def test_passing_solution_needs_no_model(tmp_path: Path) -> None:
    step = _step(tmp_path)
    rec = Record("ok", {"prompt": "add two numbers", "solution": "def add(a, b):\n    return a + b\n",
                        "tests": "assert add(2, 3) == 5"})
    out = list(Pipeline([step]).run_records([rec], StepContext(run_dir=tmp_path)))
    assert [r.id for r in out] == ["ok"]
    assert out[0].signals["exec.passed"] == 1 and out[0].signals["exec.attempts"] == 1
    assert step.llm is None or step.llm.usage.calls == 0


def test_rlef_repair_rounds_with_the_local_model(tmp_path: Path) -> None:
    """A wrong solution goes through up to 2 repair rounds with SmolLM2; whatever the model writes, the trace must
    record each attempt's real sandbox outcome, and the record's fate must follow the last attempt."""
    wrong = Record("wrong", {"prompt": "Write a Python function add(a, b) that returns the sum of a and b.",
                             "solution": "def add(a, b):\n    return a - b\n",
                             "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"})
    unsolved = Record("fresh", {"prompt": "Write a Python function double(x) that returns x times two.",
                                "tests": "assert double(4) == 8\n"})
    originals = {r.id: dict(r.content) for r in (wrong, unsolved)}  # the step writes the solution it keeps into content
    step = _step(tmp_path, max_repairs=2)
    rejected: list[Record] = []
    out = list(Pipeline([step]).run_records([wrong, unsolved], StepContext(run_dir=tmp_path),
                                            reject=rejected.extend))
    everything = {r.id: r for r in out + rejected}
    trace = everything["wrong"].meta["exec"]["trace"]
    assert 2 <= len(trace) <= 3
    assert trace[0]["status"] == "error" and "AssertionError" in trace[0]["error"]
    sb = Sandbox()
    for rid in ("wrong", "fresh"):
        rec = everything[rid]
        task = code_task_of(Record("t", {**(wrong if rid == "wrong" else unsolved).content, "solution": "x"}))
        assert isinstance(task, CodeTask)
        for attempt in rec.meta["exec"]["trace"]:
            rerun = sb.run_python(task.test_program(attempt["code"]))
            assert rerun.status == attempt["status"], (rid, attempt)
        passed = rec.meta["exec"]["trace"][-1]["status"] == "ok"
        assert (rec.drop is None) == passed
        assert rec.signals["exec.passed"] == int(passed)
        if passed:
            assert rec.content["solution"] == rec.meta["exec"]["trace"][-1]["code"]
    traces = [r for r in out if r.content.get("kind") == "execution_feedback_trace"]
    repaired = [rid for rid in ("wrong", "fresh") if everything[rid].drop is None
                and len(everything[rid].meta["exec"]["trace"]) > 1]
    assert len(traces) == len(repaired)
    for t in traces:
        roles = [m["role"] for m in t.content["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant" and "The tests failed" in t.content["messages"][2]["content"]
    c = step.stats.counters
    assert c["repair_requests"] >= 1 and c["generated_solutions"] == 1 and c["llm.calls"] >= 2

    # a rerun is answered from the response cache and gives the same outcome
    step2 = _step(tmp_path, max_repairs=2)
    out2 = list(Pipeline([step2]).run_records([Record(rid, dict(c)) for rid, c in originals.items()],
                                              StepContext(run_dir=tmp_path), reject=lambda b: None))
    assert step2.stats.counters.get("llm.calls", 0) == 0 and step2.stats.counters["llm.cache_hits"] >= 2
    assert sorted(r.id for r in out2) == sorted(r.id for r in out)


def test_bad_records_are_counted_skips(tmp_path: Path) -> None:
    step = _step(tmp_path)
    recs = [Record("a", "plain text"), Record("b", {"prompt": "p", "solution": "x = 1"}),
            Record("c", {"prompt": "p", "solution": "x = 1\x00", "tests": "assert x"})]
    rejected: list[Record] = []
    out = list(Pipeline([step]).run_records(recs, StepContext(run_dir=tmp_path), reject=rejected.extend))
    assert out == [] and {r.drop[1] for r in rejected} == {"not_a_code_task", "no_tests", "binary"}


@pytest.mark.parametrize("solution", ["import os\nos.system('echo hi')\ndef f():\n    return 1\n",
                                      "while True:\n    pass\n"])
def test_hostile_solutions_fail_safely(tmp_path: Path, solution: str) -> None:
    step = _step(tmp_path, max_repairs=0, cpu_seconds=1, wall_seconds=4)
    rec = Record("h", {"prompt": "return 2", "solution": solution, "tests": "assert f() == 2"})
    rejected: list[Record] = []
    list(Pipeline([step]).run_records([rec], StepContext(run_dir=tmp_path), reject=rejected.extend))
    assert rejected[0].drop[1] == "failed_tests"
    assert rejected[0].meta["exec"]["trace"][0]["status"] in ("error", "cpu_limit", "timeout")

"""HumanEval in Assay's sandbox: all 164 canonical solutions must pass and a mutated (wrong) solution of each must
fail; time per problem, side by side with running the same programs with no isolation at all (a bare
``python3 program.py`` subprocess with a timeout: the cost floor of executing tests out of process, and what
OpenAI's human-eval harness does minus its in-process guards).

The mutated solution of a problem is the first single-site mutant (comparison, arithmetic, constant, boolean,
returned value; in that order) the tests reject; mutants the tests accept (equivalent mutants, or gaps in
HumanEval's tests) are counted. Also prints the sandbox escape suite.

    .venv/bin/python benchmarks/sandbox_humaneval.py [--workers 2] [--limit 164]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from assay.core.record import Record
from assay.evolve.escapes import run_escape_suite
from assay.evolve.execution import code_task_of, mutants
from assay.evolve.sandbox import Limits, Sandbox

ROOT = Path(__file__).resolve().parents[1]
HUMANEVAL = ROOT.parent / "shared" / "data" / "HumanEval.jsonl.gz"


def bare_run(program: str, timeout: float) -> bool:
    """The peer: the program in a plain subprocess (no namespaces, no limits but a timeout)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(program)
        path = f.name
    try:
        return subprocess.run(["/usr/bin/python3", path], capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=164)
    args = ap.parse_args()
    if not HUMANEVAL.exists():
        sys.exit(f"{HUMANEVAL} not found")
    with gzip.open(HUMANEVAL, "rt") as f:
        problems = [json.loads(line) for line in f][: args.limit]
    tasks = [code_task_of(Record(p["task_id"], {**p, "solution": p["canonical_solution"]})) for p in problems]
    programs = [t.test_program() for t in tasks]
    sb = Sandbox(Limits(cpu_seconds=5, wall_seconds=15))
    sb.check()

    t = time.perf_counter()
    results = sb.python_many(programs, workers=args.workers)
    sandbox_s = time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        bare = list(pool.map(lambda p: bare_run(p, 15), programs))
    bare_s = time.perf_counter() - t

    passed = sum(r.ok for r in results)
    failed_ids = [p["task_id"] for p, r in zip(problems, results) if not r.ok]
    n = len(problems)
    print(f"HumanEval canonical solutions: {passed}/{n} pass in the sandbox (bare subprocess: {sum(bare)}/{n})")
    if failed_ids:
        print(f"  failing: {failed_ids}")
    print(f"  time per problem ({args.workers} at a time): sandbox {1000 * sandbox_s / n:.0f} ms, "
          f"bare subprocess {1000 * bare_s / n:.0f} ms, ratio {sandbox_s / bare_s:.2f}x")
    walls = sorted(r.wall_seconds for r in results)
    print(f"  wall per run inside the sandbox: median {1000 * walls[n // 2]:.0f} ms, p95 "
          f"{1000 * walls[int(0.95 * (n - 1))]:.0f} ms, max {1000 * walls[-1]:.0f} ms")

    # mutated solutions
    cands = [list(mutants(tk.prefix, tk.solution, limit=10)) for tk in tasks]
    killed: dict[int, str] = {}
    survivors = 0
    pending = list(range(n))
    t = time.perf_counter()
    for k in range(10):
        batch = [(i, cands[i][k]) for i in pending if k < len(cands[i])]
        if not batch:
            break
        progs = [m[1] + "\n\n" + tasks[i].tests + f"\n\ncheck({tasks[i].entry_point})\n" for i, m in batch]
        res = sb.python_many(progs, workers=args.workers, limits=Limits(cpu_seconds=2, wall_seconds=6))
        pending = []
        for (i, m), r in zip(batch, res):
            if r.ok:
                survivors += 1
                pending.append(i)
            else:
                killed[i] = r.status
    mutant_s = time.perf_counter() - t
    statuses: dict[str, int] = {}
    for s in killed.values():
        statuses[s] = statuses.get(s, 0) + 1
    print(f"Mutated solutions: {len(killed)}/{n} problems have a mutant that fails its tests "
          f"(statuses {statuses}); {survivors} equivalent/undetected mutants tried first; {mutant_s:.1f} s")

    print("Sandbox escape attempts:")
    for r in run_escape_suite(Sandbox(Limits(cpu_seconds=5, wall_seconds=10))):
        print(f"  {'contained' if r.contained else 'ESCAPED':9s} {r.name:48s} {r.status:14s} {r.seconds:6.2f} s  "
              f"{r.evidence[:110]}")


if __name__ == "__main__":
    main()

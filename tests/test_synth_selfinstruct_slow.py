"""Acceptance run of recipes/self-instruct.yaml through `assay run` with the bundled local model (slow): a run
killed half-way resumes from the response cache without repeating a single model call and ends with >= 50 novel
instructions (ROUGE-L checked with the rouge-score package). One run does both, to keep the suite short."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rouge_score import rouge_scorer
from testutil import ROOT, DATA, read_output

from assay.synthesize.self_instruct import BLACKLIST

SEEDS = DATA / "self_instruct_seed_tasks.jsonl"
RECIPE = ROOT / "recipes" / "self-instruct.yaml"
ASSAY = str(Path(sys.executable).parent / "assay")


def cache_entries(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        return int(sqlite3.connect(path, timeout=5).execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    except sqlite3.OperationalError:  # table not created yet
        return 0


def step_counters(run_dir: Path) -> dict[str, float]:
    stats = json.loads((run_dir / "stats.json").read_text())
    return stats["steps"][0]["counters"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_self_instruct_recipe_killed_half_way_resumes_to_50_novel_instructions(tmp_path: Path) -> None:
    """One run of the shipped recipe, killed with SIGKILL once a good part of its model calls are cached, then rerun
    into the same folder: the rerun serves every cached answer from the cache, repeats no call, and the finished run
    holds >= 50 novel instructions (checked with rouge-score, the reference implementation)."""
    out = tmp_path / "run"
    cache = out / "llm-cache.sqlite"
    cmd = [ASSAY, "run", str(RECIPE), "--input", str(SEEDS), "--output", str(out), "--workers", "1", "--no-report"]

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 1800
    while cache_entries(cache) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed half-way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    at_kill = cache_entries(cache)
    assert at_kill >= 20 and not (out / "stats.json").exists()

    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3500)
    counters = step_counters(out)
    assert counters["llm.cache_hits"] == at_kill  # everything answered before the kill was served from the cache
    assert cache_entries(cache) == at_kill + counters["llm.calls"]  # and no call repeated a cached request

    records = read_output(out)
    assert len(records) >= 50
    assert len({r["id"] for r in records}) == len(records)  # the resumed run wrote nothing twice
    seeds = [json.loads(line)["instruction"] for line in SEEDS.open()]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)  # the reference implementation
    earlier: list[str] = []
    for r in records:
        instruction = r["content"]["instruction"]
        worst = max(scorer.score(other, instruction)["rougeL"].fmeasure for other in seeds + earlier)
        assert worst < 0.7, (instruction, worst)
        assert not any(re.search(rf"\b{re.escape(w)}\b", instruction, re.IGNORECASE) for w in BLACKLIST)
        assert r["content"]["instances"] and r["content"]["output"]
        assert len(r["meta"]["parents"]) == 8 and r["meta"]["synth"]["model"].endswith(".gguf")
        assert r["lineage"][-1]["step"] == "self_instruct"
        earlier.append(instruction)

"""Executors: sharded local runs, resume after kill -9, global steps across shards, Ray gives the same records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from assay.core.errors import AssayError
from assay.core.recipe import Recipe
from assay.run.executor import LocalExecutor
from testutil import read_output, write_jsonl

RECIPE = """
name: exec-test
input: {shard_bytes: 20000}
output: {format: jsonl.gz, max_records_per_file: 150}
batch_size: 50
steps:
  - length_filter: {min_chars: 40}
  - test_exact_dedup
  - sample: {fraction: 0.8}
"""


def _corpus(tmp_path: Path, n: int = 2400) -> Path:
    rows = []
    for i in range(n):
        base = i if i % 10 else i // 3  # every tenth document repeats an earlier one: duplicates across shards
        rows.append({"text": f"document {base} " + "word " * (base % 23), "i": i})
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[: n // 2])
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[n // 2:])
    return tmp_path / "in"


def _run(tmp_path: Path, name: str, workers: int, recipe: str = RECIPE, executor: str = "local") -> tuple[dict, list]:
    r = Recipe.from_text(recipe)
    if executor == "ray":
        from assay.run.executor import RayExecutor

        ex = RayExecutor(workers)
    else:
        ex = LocalExecutor(workers)
    stats = ex.run(r, [str(tmp_path / "in")], str(tmp_path / name))
    return stats, read_output(tmp_path / name)


def test_sharded_run_is_deterministic_and_accounts_for_every_record(tmp_path: Path):
    _corpus(tmp_path)
    s1, out1 = _run(tmp_path, "w1", 1)
    s2, out2 = _run(tmp_path, "w2", 2)
    assert s1["input"]["shards"] > 4
    assert out1 == out2  # record for record, lineage included
    assert s1["input"]["records_read"] == 2400
    rejected = s1["output"]["rejected"]
    assert s1["output"]["records"] + rejected == 2400
    dedup = s1["steps"][1]
    assert dedup["name"] == "test_exact_dedup" and dedup["drops"]["duplicate"] > 100
    # a duplicate pair split across shards and input files was found: content hashes are unique in the output
    assert len({o["hash"] for o in out1}) == len(out1)
    # rejected/ holds every dropped record with its step and reason
    rej = read_output_rejected(tmp_path / "w1")
    assert len(rej) == rejected
    assert {(r["drop"]["step"], r["drop"]["reason"]) for r in rej} == {
        ("length_filter", "too_short"), ("test_exact_dedup", "duplicate"), ("sample", "sampled_out")}
    # output rolled over at max_records_per_file
    assert max(len(read_file(p)) for p in (tmp_path / "w1").glob("data/train-*")) <= 150
    # every step once, in order: a global step's two phases (collect, apply) make one lineage entry
    assert all([e["step"] for e in o["lineage"]] == ["length_filter", "test_exact_dedup", "sample"] for o in out1)
    assert {tuple(e["step"] for e in r["lineage"]) for r in rej if r["drop"]["step"] == "test_exact_dedup"} == {
        ("length_filter", "test_exact_dedup")}


def read_file(p: Path) -> list:
    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard

    return [r for s in plan_shards([str(p)], "auto", 0) for r in read_shard(s, ErrorLog())]


def read_output_rejected(run: Path) -> list[dict]:
    return [r.to_dict() for p in sorted((run / "rejected").glob("part-*")) for r in read_file(p)]


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path):
    _corpus(tmp_path, 3000)
    slow = RECIPE.replace("steps:\n", "steps:\n  - test_slow: {seconds_per_batch: 0.04}\n")
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(slow)
    _, expected = _run(tmp_path, "clean", 2, slow)

    exe = str(Path(sys.executable).parent / "assay")
    cmd = [exe, "run", str(recipe), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "killed"), "-w", "2",
           "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    markers = tmp_path / "killed" / ".assay" / "markers"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list(markers.glob("s0-*.json")) if markers.exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the test step slower"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    total = len(list(markers.glob("s0-*.json")))
    assert 3 <= total < 30  # killed mid-way
    stages = tmp_path / "killed" / ".assay" / "stages"
    assert list(stages.glob("s0/train-*.jsonl")), "a killed run keeps the records between segments to resume"
    time.sleep(0.5)  # workers die with their parent (PR_SET_PDEATHSIG)

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = read_output(tmp_path / "killed")
    assert resumed == expected
    assert len({o["id"] for o in resumed}) == len(resumed)
    stats = orjson.loads((tmp_path / "killed" / "stats.json").read_bytes())
    assert stats["input"]["records_read"] == 3000
    assert stats["output"]["records"] + stats["output"]["rejected"] == 3000
    assert not list((tmp_path / "killed").rglob(".tmp-*"))
    assert not stages.exists()  # removed once the run completed


def test_other_recipe_in_same_folder_is_refused(tmp_path: Path):
    _corpus(tmp_path, 200)
    _run(tmp_path, "run", 1)
    with pytest.raises(AssayError, match="different recipe"):
        _run(tmp_path, "run", 1, RECIPE.replace("0.8", "0.7"))
    # the same recipe again is a no-op resume with the same output
    before = read_output(tmp_path / "run")
    _, again = _run(tmp_path, "run", 1)
    assert again == before


def test_not_empty_folder_is_refused(tmp_path: Path):
    _corpus(tmp_path, 50)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("keep me")
    with pytest.raises(AssayError, match="not empty"):
        _run(tmp_path, "busy", 1)
    assert (tmp_path / "busy" / "precious.txt").read_text() == "keep me"


def test_missing_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(AssayError, match="no input files match"):
        LocalExecutor(1).run(Recipe.from_text(RECIPE), [str(tmp_path / "nothing*.jsonl")], str(tmp_path / "o"))


@pytest.mark.slow
def test_ray_executor_gives_the_same_records(tmp_path: Path):
    pytest.importorskip("ray")
    _corpus(tmp_path, 1200)
    _, local = _run(tmp_path, "local", 2)
    stats, ray_out = _run(tmp_path, "ray", 2, executor="ray")
    assert stats["executor"] == "ray"
    assert {o["id"] for o in ray_out} == {o["id"] for o in local}
    assert ray_out == local

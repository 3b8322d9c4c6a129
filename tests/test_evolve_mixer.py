"""The mixer: a floor of human data, accumulation across generations, and the same decision across shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.pipeline import Pipeline
from assay.core.record import Record
from assay.core.step import StepContext
from assay.evolve.mixer import HumanFloor, is_human, mix, mix_stats, synthetic_allowance


def human(i: int) -> Record:
    return Record(f"h{i}", f"human text {i}", meta={"source": "seed.jsonl"})


def synth(g: int, i: int) -> Record:
    return Record(f"g{g}-{i}", f"synthetic {g} {i}", meta={"synth": {"technique": "x"}, "parents": [f"h{i}"]})


def test_origin_rules() -> None:
    assert is_human(human(0)) and not is_human(synth(1, 0))
    assert not is_human(Record("p", "x", meta={"parents": ["a"]}))
    assert is_human(Record("o", "x", meta={"origin": "human", "synth": {}}))  # an explicit origin wins
    assert not is_human(Record("s", "x", meta={"origin": "synthetic"}))


@pytest.mark.parametrize("h,s,f,expected", [(10, 100, 0.5, 10), (10, 5, 0.5, 5), (10, 100, 0.2, 40),
                                            (3, 100, 0.75, 1), (10, 100, 0.0, 100), (10, 100, 1.0, 0),
                                            (0, 100, 0.5, 0)])
def test_synthetic_allowance(h: int, s: int, f: float, expected: int) -> None:
    n = synthetic_allowance(h, s, f)
    assert n == expected
    if h + n:
        assert h / (h + n) >= f - 1e-12


def test_accumulate_keeps_every_generation_and_the_floor() -> None:
    humans = [human(i) for i in range(10)]
    gens = [[synth(g, i) for i in range(8)] for g in range(3)]
    mixed = mix(humans, gens, min_human_fraction=0.4, mode="accumulate")
    st = mix_stats(mixed)
    assert st["human"] == 10 and st["synthetic"] == 15  # 10 * 0.6 / 0.4
    assert st["human_fraction"] == pytest.approx(0.4)
    assert set(st["synthetic_by_generation"]) == {"0", "1", "2"}  # drawn from all generations
    assert all(h in mixed for h in humans)  # human records are never dropped
    # deterministic
    again = mix(humans, gens, min_human_fraction=0.4, mode="accumulate")
    assert [r.id for r in again] == [r.id for r in mixed]


def test_replace_uses_only_the_last_generation() -> None:
    humans = [human(i) for i in range(10)]
    gens = [[synth(g, i) for i in range(8)] for g in range(3)]
    st = mix_stats(mix(humans, gens, min_human_fraction=0.1, mode="replace"))
    assert st["synthetic"] == 8 and set(st["synthetic_by_generation"]) == {"2"}


def test_max_synthetic_and_duplicates() -> None:
    humans = [human(i) for i in range(4)]
    dup = [synth(0, 0), synth(0, 0), synth(0, 1)]
    assert mix_stats(mix(humans, [dup], 0.0))["synthetic"] == 2
    assert mix_stats(mix(humans, [[synth(0, i) for i in range(9)]], 0.0, max_synthetic=3))["synthetic"] == 3
    with pytest.raises(ValueError):
        mix(humans, [dup], 1.5)


def test_human_floor_step_across_shards_matches_the_library(tmp_path: Path) -> None:
    humans = [human(i) for i in range(12)]
    synthetic = [synth(g, i) for g in range(2) for i in range(20)]
    shards = [humans[:5] + synthetic[:25], humans[5:] + synthetic[25:]]
    step = HumanFloor({"min_human_fraction": 0.3, "seed": 7})
    step.index = 3
    for k, shard in enumerate(shards):  # collect per shard, as the executor does
        ctx = StepContext(run_dir=tmp_path, shard=k, num_shards=2)
        list(step.collect([shard], ctx))
    step.reduce(StepContext(run_dir=tmp_path))
    kept, dropped = [], []
    for k, shard in enumerate(shards):
        ctx = StepContext(run_dir=tmp_path, shard=k, num_shards=2)
        for batch in step.apply([[r.copy() for r in shard]], ctx):
            kept += [r for r in batch if r.drop is None]
            dropped += [r for r in batch if r.drop is not None]
    assert len(kept) == 12 + synthetic_allowance(12, 40, 0.3) == 12 + 28
    assert {r.drop for r in dropped} == {("human_floor", "human_floor")}
    # the same records as the one-process mix with the same seed
    lib = mix(humans, [synthetic], 0.3, seed=7)
    assert sorted(r.id for r in kept) == sorted(r.id for r in lib)


def test_human_floor_in_a_pipeline(tmp_path: Path) -> None:
    records = [human(i) for i in range(3)] + [synth(0, i) for i in range(10)]
    rejected: list[Record] = []
    out = list(Pipeline([HumanFloor({"min_human_fraction": 0.5})]).run_records(
        records, StepContext(run_dir=tmp_path), reject=rejected.extend))
    assert len(out) == 6 and len(rejected) == 7
    assert mix_stats(out)["human_fraction"] == 0.5


def test_human_floor_under_the_executor_with_two_workers(tmp_path: Path) -> None:
    """`assay run` with 3 input shards on 2 worker processes: the floor holds exactly for the whole run."""
    import os

    from testutil import assay_cli, read_output, write_jsonl

    for k in range(3):
        rows = []
        for i in range(20):
            row = {"text": f"doc {k} {i}"}
            if i % 5:  # 4 of 5 records carry synthesis provenance
                row["synth"] = {"technique": "x"}
            rows.append(row)
        write_jsonl(tmp_path / "in" / f"part{k}.jsonl", rows)
    (tmp_path / "r.yaml").write_text("name: floor\ninput: {format: jsonl}\noutput: {format: jsonl}\n"
                                     "steps:\n  - human_floor: {min_human_fraction: 0.4}\n")
    env = {**os.environ, "ASSAY_STEP_MODULES": os.environ.get("ASSAY_STEP_MODULES", "") + ",assay.evolve.steps"}
    assay_cli("run", str(tmp_path / "r.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-w", "2",
              "--no-report", env=env)
    out = read_output(tmp_path / "out")
    human = sum("synth" not in r["meta"] for r in out)
    assert human == 12 and len(out) - human == synthetic_allowance(12, 48, 0.4) == 18

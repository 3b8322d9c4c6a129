"""Robot trajectories: LeRobot v3 I/O, the quality steps on planted defects, the co-training mix, and the round trip
simulator sample → ``assay run recipes/robot-demos.yaml`` → LeRobot dataset (checked by lerobot-doctor)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from testutil import ROOT

from assay.core.record import Record
from assay.core.step import REGISTRY, StepContext
from assay.trajectories import defects
from assay.trajectories.lerobot import (LeRobotWriter, VideoSpanReader, load_info, read_episodes, write_records)

SAMPLE = ROOT / "samples" / "robot-demos"
LABELS = json.loads((SAMPLE / "episodes.json").read_text())
PEERS = ROOT / ".venv-peers" / "bin"
# the recipe's per-episode checks, in its order, with its parameters
RECIPE = ROOT / "recipes" / "robot-demos.yaml"


@pytest.fixture(scope="module")
def episodes() -> list[Record]:
    return read_episodes(SAMPLE)


@pytest.fixture(scope="module")
def clean(episodes: list[Record]) -> Record:
    """A successful demonstration without operator pauses."""
    i = next(x["episode_index"] for x in LABELS if x["operator"] == "clean" and x["success"])
    return episodes[i]


def _recipe_steps(names: tuple[str, ...] | None = None):  # noqa: ANN202
    from assay.core.recipe import Recipe

    recipe = Recipe.from_yaml(RECIPE)
    return [s for s in recipe.instantiate() if names is None or s.name in names]


def _short(record: Record, n: int) -> Record:
    """The first n frames of an episode (its video span cut to match)."""
    from assay.harvest.trajectory.common import slice_frames

    total = len(record.content["frames"]["action"])
    return Record(record.id, slice_frames(record.content, 0, n), record.modality, dict(record.meta))


@pytest.fixture(scope="module")
def short_dataset(episodes: list[Record], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], Path]:
    """Two episodes cut to 80 frames, written by the writer (the round-trip and lerobot-doctor tests share it)."""
    picked = [_short(episodes[0], 80), _short(episodes[-1], 80)]
    return picked, write_records(picked, tmp_path_factory.mktemp("short") / "ds")


PER_EPISODE = ("trajectory_timing", "trajectory_frozen", "trajectory_joint_range", "trajectory_kinematics",
               "trajectory_success", "trajectory_gripper", "trajectory_trim_idle")


def _check(record: Record, steps) -> Record:  # noqa: ANN001
    for step in steps:
        if record.drop is not None:
            break
        step.process_batch([record], StepContext())
    return record


def _planted_record(base: Record, kind: str | None) -> Record:
    """``base`` with ``kind`` planted in its per-frame arrays (no video: the video checks are tested apart)."""
    cols = {k: np.asarray(v, dtype=bool if k == "next.success" else np.float64)
            for k, v in base.content["frames"].items() if k != "frame_index"}
    n = len(cols["action"])
    frames = [np.zeros((2, 2, 3), np.uint8)] * n
    if kind is not None:
        cols, frames = defects.plant(kind, cols, frames, int(base.content["fps"]))
    content = dict(base.content, videos={}, frames={k: v.tolist() for k, v in cols.items()})
    return Record(f"{base.id}-{kind}", content, "trajectory", dict(base.meta))


def test_the_sample_reads_as_one_record_per_episode(episodes: list[Record]) -> None:
    info = load_info(SAMPLE)
    assert info["codebase_version"] == "v3.0" and len(episodes) == info["total_episodes"] == len(LABELS)
    for r, label in zip(episodes, LABELS):
        c = r.content
        assert r.modality == "trajectory" and c["episode_index"] == label["episode_index"]
        n = {len(v) for v in c["frames"].values()}
        assert n == {label["frames"]}
        assert np.asarray(c["frames"]["observation.state"]).shape == (label["frames"], 14)
        reward = max(c["frames"]["next.reward"])
        assert (reward >= 4) == label["success"] == any(c["frames"]["next.success"])
        span = c["videos"]["observation.images.top"]
        assert span["to_timestamp"] - span["from_timestamp"] == pytest.approx(label["frames"] / 50)
    assert sum(x["success"] for x in LABELS) >= 2 and not all(x["success"] for x in LABELS)
    # one episode's video span decodes to exactly its frames
    last = episodes[-1].content
    span = last["videos"]["observation.images.top"]
    frames = VideoSpanReader.frames(span["path"], span["from_timestamp"], span["to_timestamp"], 50.0)
    assert len(frames) == LABELS[-1]["frames"] and frames[0].shape == (96, 128, 3)


def test_writer_round_trip_keeps_frames_tasks_and_pictures(short_dataset: tuple[list[Record], Path]) -> None:
    picked, out = short_dataset
    back = read_episodes(out)
    assert [r.content["task"] for r in back] == [r.content["task"] for r in picked]
    for a, b in zip(picked, back):
        for key in ("observation.state", "action", "next.reward", "observation.environment_state"):
            np.testing.assert_array_equal(np.asarray(a.content["frames"][key], np.float32),
                                          np.asarray(b.content["frames"][key], np.float32))
        np.testing.assert_allclose(b.content["frames"]["timestamp"],
                                   np.arange(len(b.content["frames"]["timestamp"])) / 50, atol=1e-5)
        sa, sb = a.content["videos"]["observation.images.top"], b.content["videos"]["observation.images.top"]
        fa = VideoSpanReader.frames(sa["path"], sa["from_timestamp"], sa["to_timestamp"], 50.0)
        fb = VideoSpanReader.frames(sb["path"], sb["from_timestamp"], sb["to_timestamp"], 50.0)
        assert len(fa) == len(fb)
        assert len(fa) == 80
        err = np.abs(np.stack(fa[::20]).astype(float) - np.stack(fb[::20]).astype(float)).mean()
        assert err < 4.0  # re-encoded (lossy H.264), but the same pictures
    # each episode row says where it came from and what happened to it
    rows = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["assay/id"] for r in rows] == [r.id for r in picked]
    assert rows[1]["dataset_from_index"] == rows[0]["dataset_to_index"] == rows[0]["length"]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert stats["observation.state"]["count"] == [sum(r["length"] for r in rows)]
    assert np.asarray(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)


def test_lerobot_doctor_accepts_what_we_write(short_dataset: tuple[list[Record], Path]) -> None:
    out = short_dataset[1]
    proc = subprocess.run([str(PEERS / "lerobot-doctor"), "check", str(out), "--json"], capture_output=True,
                          text=True, timeout=300)
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert report["codebase_version"] == "v3.0" and report["total_episodes"] == 2
    for name in ("Metadata & Format Compliance", "Temporal Consistency", "Video Integrity", "Feature Consistency",
                 "Training Readiness"):
        assert by_name[name]["severity"] == "PASS", (name, by_name[name]["messages"])


@pytest.fixture(scope="module")
def checks():  # noqa: ANN201
    return _recipe_steps(PER_EPISODE)


@pytest.mark.parametrize("kind,reason", [
    ("frame_gap", "timestamp_gap"), ("timestamp_jitter", "timestamp_jitter"),
    ("duplicated_frames", "timestamps_not_increasing"), ("frozen_state", "frozen_state"),
    ("action_jump", "action_jump"), ("state_jump", "velocity_outlier"), ("out_of_range", "joint_out_of_range"),
    ("nan_values", "non_finite"), ("gripper_static", "gripper_never_moves"), ("failed", "failed"),
])
def test_each_planted_defect_is_dropped_with_its_reason(clean: Record, checks, kind: str,  # noqa: ANN001
                                                        reason: str) -> None:
    assert _check(_planted_record(clean, None), checks).drop is None  # the clean copy passes every check
    r = _check(_planted_record(clean, kind), checks)
    assert r.drop is not None and r.drop[1] == reason, (kind, r.drop, r.signals)


def test_idle_padding_is_trimmed_and_the_video_span_moves(clean: Record) -> None:
    step = REGISTRY.get("trajectory_trim_idle")(min_idle=10, keep=2)
    r = _planted_record(clean, "idle_padding")
    r.content["videos"] = {"cam": {"path": "x.mp4", "from_timestamp": 10.0,
                                   "to_timestamp": 10.0 + len(r.content["frames"]["action"]) / 50}}
    step.process_batch([r], StepContext())
    pad = 150  # 3 s at 50 fps, before and after
    assert r.drop is None
    assert pad - 3 <= r.signals["traj.idle_head"] <= pad and pad - 3 <= r.signals["traj.idle_tail"] <= pad + 2
    n = len(r.content["frames"]["action"])
    assert n == r.signals["traj.length_before_trim"] - r.signals["traj.idle_head"] - r.signals["traj.idle_tail"]
    span = r.content["videos"]["cam"]
    assert span["from_timestamp"] == pytest.approx(10.0 + r.signals["traj.idle_head"] / 50)
    assert span["to_timestamp"] - span["from_timestamp"] == pytest.approx(n / 50)


def test_frozen_camera_is_caught_from_the_video(clean: Record, tmp_path: Path) -> None:
    part = [_short(clean, 160)]  # the first 160 frames: the right arm reaches for the cube
    defects.write_planted(part, [(0, None), (0, "frozen_video")], str(tmp_path / "ds"))
    recs = read_episodes(tmp_path / "ds")
    step = REGISTRY.get("trajectory_frozen")()
    step.process_batch(recs, StepContext())
    assert recs[0].drop is None and recs[0].signals["traj.frozen_video_run"] <= 5
    assert recs[1].drop == ("trajectory_frozen", "frozen_video") and recs[1].signals["traj.frozen_video_run"] > 10


def test_near_duplicates_and_length_outliers_across_episodes(clean: Record, episodes: list[Record]) -> None:
    others = [r for r in episodes if r is not clean]
    group = [_planted_record(clean, None), _planted_record(clean, "near_duplicate"),
             *[_planted_record(r, None) for r in others], _planted_record(clean, "truncated")]
    dedup = REGISTRY.get("trajectory_dedup")(threshold=0.05)
    dedup.index = 0
    ctx = StepContext(run_dir=None)
    kept = [r for b in dedup.process([group], ctx) for r in b]
    dropped = [r for r in kept if r.drop is not None]
    assert [r.id for r in dropped] == [group[1].id] and dropped[0].drop[1] == "near_duplicate"
    assert dropped[0].signals["traj.duplicate_of"] == group[0].id
    assert min(r.signals["traj.nearest"] for r in group[2:-1]) > 0.05  # different demos are far apart
    length = REGISTRY.get("trajectory_length_outliers")(max_z=4)
    length.index = 1
    fresh = [r for r in group if r.drop is None]
    out = [r for b in length.process([fresh], ctx) for r in b]
    assert [r.drop[1] for r in out if r.drop] == ["too_short_episode"] and out[-1].drop is not None


def test_cotrain_mix_keeps_the_ratio_and_balances_prior_tasks(episodes: list[Record], tmp_path: Path) -> None:
    from assay.trajectories.mix import cotrain_mix

    short = [_short(r, 40) for r in episodes]  # 40 frames each: the mix is about counts, not content
    target = [short[0]]
    prior = []
    for i, r in enumerate(short[1:]):  # a prior with an unbalanced task mix: 4 of one task, 1 of another
        c = r.copy()
        c.content = dict(r.content, task="stack the cubes" if i == 0 else "wipe the table")
        prior.append(c)
    mixed, plan = cotrain_mix(target, prior, target_fraction=0.5, prior_episodes=4, seed=1)
    assert plan.prior_tasks == {"stack the cubes": 2, "wipe the table": 2}  # balanced, the small task repeated
    assert plan.target_frames + plan.prior_frames == 40 * (plan.target_episodes + plan.prior_episodes)
    assert plan.target_episodes == plan.prior_episodes == 4  # equal frames: half the mix is the one target repeated
    assert plan.target_fraction_frames == pytest.approx(0.5)
    assert len({r.id for r in mixed}) == len(mixed)  # repeated episodes get their own ids
    out = write_records(mixed, tmp_path / "mix")
    back = read_episodes(out)
    assert len(back) == plan.target_episodes + plan.prior_episodes
    rows = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    parts = [json.loads(r["assay/mix"])["part"] for r in rows]
    assert parts.count("target") == plan.target_episodes


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample through ``assay run recipes/robot-demos.yaml`` (the run folder)."""
    out = tmp_path_factory.mktemp("curated") / "run"
    proc = subprocess.run([str(ROOT / ".venv/bin/assay"), "run", str(RECIPE), "-i", str(SAMPLE), "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_recipe_round_trip_writes_a_lerobot_dataset_with_lineage_and_drops(curated: Path) -> None:
    out = curated
    import gzip

    rejected = [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl.gz"))
                for line in gzip.open(f, "rt")]
    kept = [json.loads(line) for f in sorted(out.glob("data/train-*.jsonl.gz")) for line in gzip.open(f, "rt")]
    failed = {x["episode_index"] for x in LABELS if not x["success"]}
    assert {r["content"]["episode_index"] for r in rejected} >= failed
    assert all(r["drop"]["reason"] for r in rejected)
    assert {r["content"]["episode_index"] for r in kept} | {r["content"]["episode_index"] for r in rejected} == \
        {x["episode_index"] for x in LABELS}
    ds = out / "lerobot"
    back = read_episodes(ds)
    assert len(back) == len(kept) >= 1
    rows = pq.read_table(ds / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    by_id = {r["id"]: r for r in kept}
    for row in rows:
        rec = by_id[row["assay/id"]]
        steps = [e["step"] for e in json.loads(row["assay/lineage"])]
        assert steps[:3] == ["trajectory_timing", "trajectory_frozen", "trajectory_joint_range"]
        assert "trajectory_dedup" in steps and row["assay/source_episode"] == rec["content"]["episode_index"]
        assert rec["meta"]["lerobot_episode_index"] == row["episode_index"]
    # the idle-padded, paused demonstration (if it succeeded) comes out trimmed
    paused = [x["episode_index"] for x in LABELS if x["operator"] == "paused_idle" and x["success"]]
    for r in kept:
        if r["content"]["episode_index"] in paused:
            assert r["signals"]["traj.idle_head"] > 0 and r["signals"]["traj.pause_frames"] >= 20


def test_lerobots_own_loader_opens_the_curated_dataset(curated: Path) -> None:
    """LeRobot's LeRobotDataset (lerobot-dataset 0.4.4 in .venv-lerobot, made by ``make peers``) reads the run's
    dataset, video frames included."""
    python = ROOT / ".venv-lerobot" / "bin" / "python"
    assert python.exists(), "LeRobot's loader lives in .venv-lerobot: run `make peers`"
    proc = subprocess.run([str(python), str(ROOT / "benchmarks/peers/lerobot_load.py"), str(curated / "lerobot")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = read_episodes(curated / "lerobot")
    assert got["episodes"] == len(ours) and got["fps"] == 50
    assert got["frames"] == sum(len(r.content["frames"]["action"]) for r in ours)
    assert got["video_keys"] == ["observation.images.top"]
    for item in got["items"].values():
        assert item["observation.images.top"] == [3, 96, 128] and item["observation.state"] == [14]
        assert 0.02 < item["image_mean"] < 0.98  # a decoded picture, not a blank


def test_a_damaged_dataset_is_a_counted_skip_not_a_crash(short_dataset: tuple[list[Record], Path],
                                                         tmp_path: Path) -> None:
    import shutil

    import pyarrow as pa

    from assay.core.errors import ErrorLog
    from assay.trajectories.lerobot import read_lerobot

    ds = tmp_path / "ds"
    shutil.copytree(short_dataset[1], ds)
    path = ds / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_pylist()
    lengths[0] += 5  # the episode table promises frames the data file does not hold
    pq.write_table(table.set_column(table.column_names.index("length"), "length", pa.array(lengths)), path)
    errors = ErrorLog()
    got = list(read_lerobot(str(ds), errors))
    assert [r.content["episode_index"] for r in got] == [1]  # the sound episode is still read
    assert dict(errors.counts) == {"bad_episode": 1} and "85 frames" in errors.entries[0]["message"]
    (ds / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 50, "features": {}}))
    errors = ErrorLog()
    assert list(read_lerobot(str(ds), errors)) == [] and dict(errors.counts) == {"bad_lerobot_dataset": 1}
    assert "v3" in errors.entries[0]["message"]


def test_cli_says_what_is_wrong_with_a_folder_that_is_no_dataset(tmp_path: Path) -> None:
    proc = subprocess.run([str(ROOT / ".venv/bin/assay"), "trajectories", "info", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "not a LeRobot dataset" in proc.stderr and "Traceback" not in proc.stderr

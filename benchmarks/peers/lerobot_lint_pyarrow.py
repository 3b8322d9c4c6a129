"""Run lerobot-lint's checks on a local LeRobot v3 dataset without the lerobot package (run in .venv-peers).

lerobot-lint 0.1.1 loads episodes through ``lerobot.datasets.LeRobotDataset`` (its loader.py, "the only file that
touches the lerobot API"); lerobot pins torch<2.12, which cannot sit beside this project's torch 2.13. This script
replaces that one loader with pyarrow + PyAV reading of the same files and leaves every check, threshold and profile
of lerobot-lint as it is. It goes one step further than lerobot-lint's own loader, which passes no camera frames
(``camera_handles={}``): here each episode's decoded video is handed to the video checks (frozen camera, video
length, degenerate image), so lerobot-lint is measured at its best.

    .venv-peers/bin/python benchmarks/peers/lerobot_lint_pyarrow.py DATASET [--profile default] > findings.json
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _video_frames(path: Path, start: float, end: float, fps: float) -> np.ndarray:
    import av

    half = 0.5 / fps
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base or Fraction(1, 90000)
        t0 = s.start_time or 0
        for frame in c.decode(s):
            if frame.pts is None:
                continue
            t = float((frame.pts - t0) * tb)
            if t < start - half:
                continue
            if t >= end - half:
                break
            out.append(frame.to_ndarray(format="rgb24"))
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def iter_episodes(root: str, episode_indices=None, download_videos: bool = True):  # noqa: ANN001, ANN201
    from lerobot_lint.types import CameraSample, EpisodeData

    base = Path(root)
    info = json.loads((base / "meta/info.json").read_text())
    fps = float(info["fps"])
    tasks = pq.read_table(base / "meta/tasks.parquet").to_pandas()
    task_of = {int(i): str(t) for t, i in zip(tasks.index, tasks["task_index"])}
    eps = [r for f in sorted(base.glob("meta/episodes/chunk-*/file-*.parquet"))
           for r in pq.read_table(f).to_pylist()]
    data = {}
    video_keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    for ep in eps:
        i = int(ep["episode_index"])
        if episode_indices is not None and i not in episode_indices:
            continue
        try:
            rel = info["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
            if rel not in data:
                data[rel] = pq.read_table(base / rel).to_pydict()
            cols = data[rel]
            rows = [k for k, e in enumerate(cols["episode_index"]) if e == i]
            cams = {}
            for key in video_keys:
                path = base / info["video_path"].format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                                        file_index=ep[f"videos/{key}/file_index"])
                frames = _video_frames(path, ep[f"videos/{key}/from_timestamp"], ep[f"videos/{key}/to_timestamp"], fps)
                cams[key] = CameraSample(total_frame_count=len(frames), frames=frames)
            yield i, EpisodeData(
                states=np.asarray([cols["observation.state"][k] for k in rows], dtype=np.float32),
                actions=np.asarray([cols["action"][k] for k in rows], dtype=np.float32),
                timestamps=np.asarray([cols["timestamp"][k] for k in rows], dtype=np.float64),
                fps=fps, task=task_of.get(int(cols["task_index"][rows[0]]), ""), camera_handles=cams), None
        except Exception as e:  # noqa: BLE001 - lerobot-lint reports a failed episode and goes on
            yield i, None, f"Could not load episode {i}: {e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--profile", default="default")
    args = ap.parse_args()
    import lerobot_lint.engine as engine
    from lerobot_lint.config import load_profile

    engine.iter_episodes = iter_episodes  # the one replaced piece
    findings = engine.check_dataset(args.dataset, load_profile(args.profile), download_videos=True)
    json.dump([{"check": f.check, "severity": f.severity, "episode": f.episode, "joint": f.joint,
                "frames": len(f.frames), "message": f.message} for f in findings], sys.stdout)


if __name__ == "__main__":
    main()

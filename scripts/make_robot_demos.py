"""Record teleoperation-like demonstrations of ALOHA transfer-cube in MuJoCo and store them as a LeRobot v3 dataset.

    .venv/bin/python scripts/make_robot_demos.py --out samples/robot-demos [--episodes 6] [--width 128 --height 96] [--jobs 3]

Each episode's operator is drawn from a fixed mix (same --seed, same dataset): mostly clean demonstrations with a
little hand tremor, some with a mid-task pause and idle time before and after, some failures (a grasp that misses
the cube, a hand-over released too early). The sample in samples/robot-demos was made with the defaults and --seed 1.
Rendering is software OpenGL (MuJoCo over EGL and Mesa's llvmpipe, no GPU): about 0.03 CPU-seconds a frame, some
15 CPU-seconds an episode; --jobs records episodes in parallel processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

# the operator mix, cycled through: (label, Operator keyword arguments)
MIX = [
    ("clean", {}),
    ("paused_idle", {"pause_prob": 1.0, "idle_head": 40, "idle_tail": 40}),
    ("clean", {"tremor": 0.006}),
    ("failed_grasp", {"grasp_miss": 0.1}),
    ("clean", {}),
    ("failed_handover", {"early_release": True}),
]


_SIM = None


def _record(job: tuple[int, int, int, int]):  # noqa: ANN202
    global _SIM
    from assay.trajectories.sim import Operator, TransferCubeSim, record_episode

    seed, i, width, height = job
    if _SIM is None:
        _SIM = TransferCubeSim(width, height)
    label, kw = MIX[i % len(MIX)]
    ep = record_episode(seed, Operator(**kw), sim=_SIM)
    ep.info["label"] = label
    return ep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="episodes recorded in parallel (processes)")
    args = ap.parse_args()

    from assay.trajectories.lerobot import write_demos

    t0 = time.perf_counter()
    todo = [(args.seed + i, i, args.width, args.height) for i in range(args.episodes)]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            episodes = pool.map(_record, todo, chunksize=1)
    else:
        episodes = [_record(t) for t in todo]
    labels = []
    for i, ep in enumerate(episodes):
        labels.append({"episode_index": i, "seed": ep.seed, "operator": ep.info["label"], "frames": len(ep),
                       "success": ep.success, "max_reward": float(ep.reward.max())})
        print(f"episode {i}: {ep.info['label']:16s} {len(ep):4d} frames  success={ep.success}")
    print(f"recorded in {time.perf_counter() - t0:.0f} s")
    root = write_demos(episodes, args.out, overwrite=args.overwrite)
    (Path(root) / "episodes.json").write_text(json.dumps(labels, indent=1) + "\n")
    print(f"wrote {len(episodes)} episodes to {root}")


if __name__ == "__main__":
    main()

"""Record teleoperation-like demonstrations of ALOHA transfer-cube in MuJoCo and store them as a LeRobot v3 dataset.

    .venv/bin/python scripts/make_robot_demos.py --out samples/robot-demos [--episodes 6] [--width 128 --height 96]

Each episode's operator is drawn from a fixed mix (same --seed, same dataset): mostly clean demonstrations with a
little hand tremor, some with a mid-task pause and idle time before and after, some failures (a grasp that misses
the cube, a hand-over released too early). The sample in samples/robot-demos was made with the defaults.
Rendering is software OpenGL (MuJoCo over EGL/Mesa): about 0.1 s a frame on one core, 40 s an episode.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# the operator mix, cycled through: (label, Operator keyword arguments)
MIX = [
    ("clean", {}),
    ("paused_idle", {"pause_prob": 1.0, "idle_head": 40, "idle_tail": 40}),
    ("clean", {"tremor": 0.006}),
    ("failed_grasp", {"grasp_miss": 0.06}),
    ("clean", {}),
    ("failed_handover", {"early_release": True}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    from assay.trajectories.lerobot import write_demos
    from assay.trajectories.sim import Operator, TransferCubeSim, record_episode

    sim = TransferCubeSim(args.width, args.height)
    episodes, labels = [], []
    t0 = time.perf_counter()
    for i in range(args.episodes):
        label, kw = MIX[i % len(MIX)]
        ep = record_episode(args.seed + i, Operator(**kw), sim=sim)
        ep.info["label"] = label
        episodes.append(ep)
        labels.append({"episode_index": i, "seed": args.seed + i, "operator": label, "frames": len(ep),
                       "success": ep.success, "max_reward": float(ep.reward.max())})
        print(f"episode {i}: {label:16s} {len(ep):4d} frames  success={ep.success}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    root = write_demos(episodes, args.out, overwrite=args.overwrite)
    (Path(root) / "episodes.json").write_text(json.dumps(labels, indent=1) + "\n")
    print(f"wrote {len(episodes)} episodes to {root}")


if __name__ == "__main__":
    main()

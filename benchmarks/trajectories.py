"""Does curation matter for robot demonstrations? Behaviour cloning on curated versus raw demonstrations.

    .venv/bin/python benchmarks/trajectories.py [--demos 40] [--seeds 5] [--episodes 20] [--steps 3000] [--out DIR]

1. Demonstrations from real physics: gym-aloha's transfer-cube task in MuJoCo, driven by the scripted operator of
   ``assay.trajectories.sim`` with a mix of human-like imperfections: most demonstrations are clean (a little
   tremor), some shake hard, some fail (a grasp that misses the cube, a hand-over released too early), some start
   and end with the operator idle and pause midway.
2. Raw: every demonstration as recorded. Curated: the same demonstrations after Assay's trajectory quality steps
   (``recipes/robot-demos.yaml`` run with ``assay run`` on the LeRobot dataset: failures and outliers dropped,
   idle head and tail trimmed); the curated set is read back from the run's LeRobot output.
   A third arm, ``raw-subset``, is as many raw demonstrations as the curated set holds, drawn at random: it tells
   apart "less data" from "better data".
3. For each training seed, one tiny policy per arm (an MLP from the joints and the cube's pose to the 14 joint
   targets; same architecture, same number of gradient steps) is rolled out in gym-aloha's joint-space
   transfer-cube model from the same evaluation starts; success = the left gripper holds the cube in the air.

Prints a table: success rate per arm, mean and 95% Student-t interval over seeds, the paired difference with the
raw arm and whether it is significant. Writes trajectories.json into --out.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# (share of the demonstrations, the operator's settings, what that operator does)
MIX = [
    (0.45, {}, "clean"),
    (0.15, {"tremor": 0.02, "tremor_tau": 3.0}, "shaky"),
    (0.10, {"grasp_miss": 0.05}, "missed grasp"),
    (0.10, {"early_release": True}, "dropped cube"),
    (0.20, {"idle_head": 100, "idle_tail": 100, "pause_prob": 1.0}, "idle and pausing"),
]


def operators(n: int, seed: int) -> list[tuple[str, dict]]:
    """``n`` operator settings in the proportions of MIX, shuffled with ``seed``."""
    out: list[tuple[str, dict]] = []
    for share, kw, name in MIX:
        out += [(name, kw)] * int(round(share * n))
    out = (out + [(MIX[0][2], MIX[0][1])] * n)[:n]
    random.Random(seed).shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demos", type=int, default=40, help="raw demonstrations to record")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per arm")
    ap.add_argument("--episodes", type=int, default=20, help="evaluation rollouts per policy")
    ap.add_argument("--steps", type=int, default=2000, help="gradient steps per policy")
    ap.add_argument("--max-steps", type=int, default=450, help="control steps per evaluation rollout (50 Hz)")
    ap.add_argument("--out", default="/tmp/assay-bench-trajectories")
    args = ap.parse_args()

    from assay.lab.behaviour_cloning import (Budget, Demo, TransferCubeJointEnv, blind_sim, compare,
                                             demo_from_content, replay_in_joint_env)
    from assay.trajectories.sim import Operator, record_episode

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    kinds = operators(args.demos, seed=0)
    sim, env = blind_sim(), TransferCubeJointEnv()
    episodes = []
    for k, (name, kw) in enumerate(kinds):
        ep = replay_in_joint_env(record_episode(seed=k, operator=Operator(**kw), sim=sim), env)
        ep.info["kind"] = name
        episodes.append(ep)
    env.close()
    print(f"recorded {len(episodes)} demonstrations (scripted operator in end-effector space, replayed and "
          f"re-recorded in the joint-space robot) in {time.perf_counter() - t0:.0f} s")
    for _, _, name in MIX:
        mine = [e for e, (n, _) in zip(episodes, kinds) if n == name]
        print(f"  {name:<18} {len(mine):>3} demonstrations, {sum(e.success for e in mine):>3} succeed, "
              f"{sum(len(e) for e in mine):>6} frames")

    raw = [Demo(np.concatenate([e.state, e.env_state], axis=1), e.action, k) for k, e in enumerate(episodes)]
    # the policies start where the demonstrations start (the scripted operator's settled pose)
    firsts = np.stack([e.state[0] for e in episodes])
    start = firsts.mean(0)
    print(f"start pose: the demonstrations' first joint states differ by at most {np.abs(firsts - start).max():.2g}")
    t1 = time.perf_counter()
    curated_contents = curate(episodes, out)
    state_keys = ("observation.state", "observation.environment_state")
    curated = [demo_from_content(c, state_keys) for c in curated_contents]
    kept = sorted(int(c["source_episode"]) for c in curated_contents)
    print(f"curated by Assay (recipes/robot-demos.yaml, {time.perf_counter() - t1:.0f} s): {len(curated)} of "
          f"{len(raw)} demonstrations kept ("
          + ", ".join(f"{name} {sum(kinds[i][0] == name for i in kept)}" for _, _, name in MIX)
          + f"), {sum(len(d.state) for d in curated)} of {sum(len(d.state) for d in raw)} frames; "
          f"{sum(episodes[i].success for i in kept)} of the kept succeed")
    subset = [raw[i] for i in sorted(random.Random(1).sample(range(len(raw)), len(curated)))]

    budget = Budget(steps=args.steps)
    t2 = time.perf_counter()
    result = compare({"raw": raw, "curated": curated, "raw-subset": subset}, lambda: TransferCubeJointEnv(start),
                     seeds=range(args.seeds), episodes=args.episodes, max_steps=args.max_steps, budget=budget,
                     milestone=2, progress=lambda line: print("  " + line, flush=True))
    print(f"\nbehaviour cloning (MLP {budget.layers}x{budget.hidden}, {args.steps} steps of {budget.batch}), "
          f"{args.seeds} seeds x {args.episodes} evaluation rollouts per arm ({time.perf_counter() - t2:.0f} s)")
    print(result.table())
    payload = {"demos": args.demos, "kinds": [n for n, _ in kinds], "kept": kept,
               "success_of_demos": [bool(e.success) for e in episodes], **result.to_dict()}
    (out / "trajectories.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {out / 'trajectories.json'}")


def curate(episodes: list, out: Path) -> list[dict]:
    """Write the raw demonstrations as a LeRobot dataset, run ``recipes/robot-demos.yaml`` over it with ``assay run``
    and read the kept episodes back (``source_episode``: the raw episode each came from). The camera is off in this
    benchmark (software rendering costs ~0.3 s a frame here), so the recipe's frozen-video check is turned off; every
    other step runs as the recipe says, but for the joint limits: the recipe's per-joint limits are the real ViperX's,
    met by recordings in the end-effector model; re-recorded in the joint-space model the fingers travel a little past
    the normalised gripper range (up to ~1.17) and the wrists a few hundredths past theirs, in clean demonstrations
    too, so here only the recipe's ``max_abs`` bound applies."""
    import yaml

    from assay.trajectories.lerobot import read_episodes, write_demos

    raw_dir, run_dir = out / "raw", out / "curated"
    write_demos(episodes, raw_dir, overwrite=True)
    recipe = yaml.safe_load((ROOT / "recipes" / "robot-demos.yaml").read_text())
    for step in recipe["steps"]:
        if isinstance(step, dict) and "trajectory_frozen" in step:
            step["trajectory_frozen"] = {**(step["trajectory_frozen"] or {}), "max_frozen_video": 0}
        if isinstance(step, dict) and "trajectory_joint_range" in step:  # see the docstring
            step["trajectory_joint_range"] = {k: v for k, v in (step["trajectory_joint_range"] or {}).items()
                                              if k != "limits"}
    (out / "robot-demos-no-camera.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    shutil.rmtree(run_dir, ignore_errors=True)  # this script's own folder from an earlier run
    cmd = [str(Path(sys.executable).parent / "assay"), "run", str(out / "robot-demos-no-camera.yaml"),
           "-i", str(raw_dir), "-o", str(run_dir)]
    with open(out / "assay-run.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    source = {int(r.content["episode_index"]): r for r in read_episodes(raw_dir)}
    by_id = {r.id: k for k, r in source.items()}
    kept = []
    if not (run_dir / "lerobot" / "meta" / "info.json").exists():
        raise SystemExit(f"the recipe kept no demonstration: see {run_dir}/stats.json and {out}/assay-run.log")
    for r in read_episodes(run_dir):
        content = dict(r.content)
        content["source_episode"] = _source_episode(r, by_id)
        kept.append(content)
    return kept


def _source_episode(record, by_id: dict) -> int:
    """The raw episode a curated one came from: its Assay id (kept by the pipeline and the LeRobot export)."""
    for key in (record.meta.get("origin_id"), record.id, *(record.meta.get("parents") or [])):
        if key in by_id:
            return by_id[key]
    raise SystemExit(f"cannot tell which raw episode {record.id} came from (meta: {sorted(record.meta)})")


if __name__ == "__main__":
    main()

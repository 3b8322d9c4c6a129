"""Does curation matter for robot demonstrations? Behaviour cloning on curated versus raw demonstrations.

    .venv/bin/python benchmarks/trajectories.py [--demos 40] [--seeds 5] [--episodes 20] [--steps 1500] [--out DIR]

1. Demonstrations from real physics: gym-aloha's transfer-cube task in MuJoCo, driven by the scripted operator of
   ``assay.trajectories.sim`` (end-effector model, camera off) with a mix of human-like imperfections: about half
   clean (a little tremor), some shaking hard, some failing (a grasp that misses the cube, a hand-over released too
   early), some idle before and after with a pause midway. Each is also replayed in gym-aloha's joint-space model,
   where the policies are evaluated, and re-recorded there (ACT's recipe for simulated demonstrations): the policies
   learn what the joint-space robot did.
2. Raw: every demonstration. Curated: the demonstrations ``recipes/robot-demos.yaml`` keeps when ``assay run``
   curates the recorded LeRobot dataset, with the idle head and tail it cut. ``raw-subset``: as many raw
   demonstrations as the curated set holds, drawn at random — it tells "less data" apart from "better data".
3. For each training seed, one tiny policy per arm (an MLP from the joints and the cube's pose to the 14 joint
   targets; same architecture, same number of gradient steps) is rolled out in the joint-space model from the same
   evaluation starts. Success = gym-aloha's reward 4 (the left gripper holds the cube in the air); the milestone
   reward 2 (the right gripper has lifted the cube) is reported too.

Prints a table: per arm the success and milestone rates, mean and 95% Student-t interval over seeds, the paired
difference with the raw arm, its p-value and whether it is significant. Writes trajectories.json into --out.
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
    ap.add_argument("--steps", type=int, default=1500, help="gradient steps per policy")
    ap.add_argument("--max-steps", type=int, default=450, help="control steps per evaluation rollout (50 Hz)")
    ap.add_argument("--out", default="/tmp/assay-bench-trajectories")
    args = ap.parse_args()

    from assay.lab.behaviour_cloning import Budget, Demo, TransferCubeJointEnv, blind_sim, compare, replay_in_joint_env
    from assay.trajectories.sim import Operator, record_episode

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    kinds = operators(args.demos, seed=0)
    sim, env = blind_sim(), TransferCubeJointEnv()
    recorded, executed = [], []
    for k, (name, kw) in enumerate(kinds):
        ep = record_episode(seed=k, operator=Operator(**kw), sim=sim)
        ep.info["kind"] = name
        recorded.append(ep)
        executed.append(replay_in_joint_env(ep, env))
    env.close()
    print(f"recorded {len(recorded)} demonstrations (scripted operator, end-effector model) and replayed each in the "
          f"joint-space robot, in {time.perf_counter() - t0:.0f} s")
    print(f"  {'operator':<18} {'demos':>5} {'succeed as recorded':>20} {'succeed in joint space':>23} {'frames':>7}")
    for _, _, name in MIX:
        ks = [k for k, (n, _) in enumerate(kinds) if n == name]
        print(f"  {name:<18} {len(ks):>5} {sum(recorded[k].success for k in ks):>20} "
              f"{sum(executed[k].success for k in ks):>23} {sum(len(recorded[k]) for k in ks):>7}")

    def demo(k: int, head: int = 0, tail: int = 0) -> Demo:
        e = executed[k]
        end = len(e) - tail
        return Demo(np.concatenate([e.state, e.env_state], axis=1)[head:end], e.action[head:end], k)

    raw = [demo(k) for k in range(len(executed))]
    # the policies start where the demonstrations start (the scripted operator's settled pose)
    firsts = np.stack([e.state[0] for e in executed])
    start = firsts.mean(0)
    print(f"start pose: the demonstrations' first joint states differ by at most {np.abs(firsts - start).max():.2g}")
    t1 = time.perf_counter()
    kept = curate(recorded, out)
    curated = [demo(k, head, tail) for k, head, tail in kept]
    ks = [k for k, _, _ in kept]
    print(f"curated by Assay (recipes/robot-demos.yaml on the recordings, {time.perf_counter() - t1:.0f} s): "
          f"{len(curated)} of {len(raw)} demonstrations kept ("
          + ", ".join(f"{name} {sum(kinds[k][0] == name for k in ks)}" for _, _, name in MIX)
          + f"), {sum(len(d.state) for d in curated)} of {sum(len(d.state) for d in raw)} frames; "
          f"{sum(executed[k].success for k in ks)} of the kept succeed in joint space")
    subset = [raw[i] for i in sorted(random.Random(1).sample(range(len(raw)), len(curated)))]

    budget = Budget(steps=args.steps)
    t2 = time.perf_counter()
    result = compare({"raw": raw, "curated": curated, "raw-subset": subset}, lambda: TransferCubeJointEnv(start),
                     seeds=range(args.seeds), episodes=args.episodes, max_steps=args.max_steps, budget=budget,
                     milestone=2, progress=lambda line: print("  " + line, flush=True))
    print(f"\nbehaviour cloning (MLP {budget.layers}x{budget.hidden}, {args.steps} steps of {budget.batch}), "
          f"{args.seeds} seeds x {args.episodes} evaluation rollouts per arm ({time.perf_counter() - t2:.0f} s)")
    print(result.table())
    for ms, title in ((False, "success"), (True, "reward >= 2")):  # better data, or just less of it?
        diff, p = result.difference("curated", "raw-subset", ms)
        print(f"{title}: curated - raw-subset: {diff.mean:+.3f} [{diff.lo:+.3f}, {diff.hi:+.3f}] (paired over seeds): "
              f"{result.verdict('curated', 'raw-subset', ms)}")
    payload = {"demos": args.demos, "kinds": [n for n, _ in kinds], "kept": kept,
               "success_as_recorded": [bool(e.success) for e in recorded],
               "success_in_joint_space": [bool(e.success) for e in executed], **result.to_dict()}
    (out / "trajectories.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {out / 'trajectories.json'}")


def curate(episodes: list, out: Path) -> list[tuple[int, int, int]]:
    """Write the recorded demonstrations as a LeRobot dataset, run ``recipes/robot-demos.yaml`` over it with
    ``assay run``, and return the kept episodes as (index, idle frames cut at the head, at the tail). The camera is
    off in this benchmark (software rendering costs ~0.3 s a frame on a busy CPU), so the recipe's frozen-video check
    is turned off, and ``trajectory_joint_range`` is left out (the simulated grippers' normalised readings leave the
    recipe's real-ViperX range: it drops every recording); every other step runs as the recipe says."""
    import yaml

    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard
    from assay.trajectories.lerobot import write_demos

    raw_dir, run_dir = out / "raw", out / "curated"
    write_demos(episodes, raw_dir, overwrite=True)
    recipe = yaml.safe_load((ROOT / "recipes" / "robot-demos.yaml").read_text())
    for step in recipe["steps"]:
        if isinstance(step, dict) and "trajectory_frozen" in step:
            step["trajectory_frozen"] = {**(step["trajectory_frozen"] or {}), "max_frozen_video": 0}
    # the simulator's normalised gripper readings leave the recipe's real-ViperX range (see the report): without this
    # every recording is dropped as joint_out_of_range, so this benchmark runs the recipe without that step
    recipe["steps"] = [st for st in recipe["steps"] if not (isinstance(st, dict) and "trajectory_joint_range" in st)]
    (out / "robot-demos-no-camera.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    shutil.rmtree(run_dir, ignore_errors=True)  # this script's own folder from an earlier run
    cmd = [str(Path(sys.executable).parent / "assay"), "run", str(out / "robot-demos-no-camera.yaml"),
           "-i", str(raw_dir), "-o", str(run_dir)]
    with open(out / "assay-run.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    kept = []
    for path in sorted(run_dir.glob("data/train-*")):
        for shard in plan_shards([str(path)], "auto", 0):
            for r in read_shard(shard, ErrorLog()):
                kept.append((int(r.content["episode_index"]), int(r.signals.get("traj.idle_head", 0)),
                             int(r.signals.get("traj.idle_tail", 0))))
    if not kept:
        raise SystemExit(f"the recipe kept no demonstration: see {run_dir}/stats.json and {out}/assay-run.log")
    return sorted(kept)


if __name__ == "__main__":
    main()

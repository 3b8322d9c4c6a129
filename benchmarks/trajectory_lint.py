"""Planted defects in robot demonstrations: what Assay's trajectory checks, lerobot-doctor and lerobot-lint catch.

Clean, successful demonstrations of the sample (samples/robot-demos, recorded in MuJoCo by
scripts/make_robot_demos.py) are the baseline dataset. For every defect kind of ``assay.trajectories.defects`` one
more dataset is written: the baseline with its first episode replaced by a copy with that defect planted (for
``near_duplicate`` the copy comes beside the original). Each tool runs on every dataset:

* Assay: ``assay run recipes/robot-demos.yaml``; caught = the planted episode is dropped (its reason is shown) or,
  for idle padding, trimmed by ``trajectory_trim_idle``;
* lerobot-doctor 0.2.0 (``lerobot-doctor check --json``, its own loader); caught = a WARN/FAIL message that the
  baseline does not have (doctor reports per dataset, mostly without episode numbers);
* lerobot-lint 0.1.1 with its checks, thresholds and default profile, fed by a pyarrow/PyAV loader
  (benchmarks/peers/lerobot_lint_pyarrow.py: lerobot itself pins torch<2.12); caught = a warning/error finding on
  the planted episode that its clean original (episode 0, the same demonstration) does not have or has over fewer
  frames, or a dataset-level finding the baseline does not have.

False alarms on the clean baseline are listed for each tool. Needs ``make peers`` (the two tools in .venv-peers).

    .venv/bin/python benchmarks/trajectory_lint.py [--dataset samples/robot-demos] [--out /tmp/assay-bench-trajlint]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".venv-peers" / "bin"


def run_assay(dataset: Path, out: Path) -> dict[int, str]:
    """episode index → what Assay did to it ('' kept unchanged, 'trimmed …', or the drop reason)."""
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.run([str(ROOT / ".venv/bin/assay"), "run", str(ROOT / "recipes/robot-demos.yaml"),
                           "-i", str(dataset), "-o", str(out)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"assay run failed on {dataset}:\n{proc.stderr[-3000:]}")
    result: dict[int, str] = {}
    for f in sorted((out / "rejected").glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt"):
            r = json.loads(line)
            result[r["content"]["episode_index"]] = f"{r['drop']['step']}: {r['drop']['reason']}"
    for f in sorted(out.glob("data/train-*.jsonl.gz")):
        for line in gzip.open(f, "rt"):
            r = json.loads(line)
            s = r["signals"]
            trimmed = s.get("traj.idle_head", 0) + s.get("traj.idle_tail", 0)
            result[r["content"]["episode_index"]] = f"trimmed {trimmed} idle frames" if trimmed else ""
    return result


def run_doctor(dataset: Path) -> set[str]:
    proc = subprocess.run([str(PEERS / "lerobot-doctor"), "check", str(dataset), "--json"], capture_output=True,
                          text=True)
    report = json.loads(proc.stdout)
    return {f"{c['name']}: {m['message']}" for c in report["checks"] for m in c["messages"]
            if m["severity"] in ("WARN", "FAIL")}


def run_lint(dataset: Path) -> list[dict]:
    proc = subprocess.run([str(PEERS / "python"), str(ROOT / "benchmarks/peers/lerobot_lint_pyarrow.py"),
                           str(dataset)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"lerobot-lint failed on {dataset}:\n{proc.stderr[-3000:]}")
    return [f for f in json.loads(proc.stdout) if f["severity"] in ("warning", "error")]


def _new_findings(lint: list[dict], planted: int, baseline: list[dict]) -> set[str]:
    """Checks that flag the planted episode beyond what they flag on its clean original (episode 0 of the baseline
    run, the same demonstration): a (check, joint) the original does not have, or the same one over more frames.
    (lerobot-lint flags the simulated arms' fast wrist swings as JITTER on clean episodes: a finding alone says
    nothing.)"""
    def by_key(findings: list[dict], ep: int) -> dict[tuple, int]:
        out: dict[tuple, int] = {}
        for f in findings:
            if f["episode"] == ep:
                key = (f["check"], f["joint"])
                out[key] = max(out.get(key, 0), f.get("frames", 0))
        return out

    before, after = by_key(baseline, 0), by_key(lint, planted)
    return {k[0] for k, n in after.items() if k not in before or n > before[k]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "samples/robot-demos"))
    ap.add_argument("--out", default="/tmp/assay-bench-trajlint")
    ap.add_argument("--defects", default="", help="comma-separated subset of the defect kinds")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from assay.trajectories.defects import DEFECTS, write_planted
    from assay.trajectories.lerobot import read_episodes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = read_episodes(args.dataset)
    labels = json.loads((Path(args.dataset) / "episodes.json").read_text())
    clean = [x["episode_index"] for x in labels if x["operator"] == "clean" and x["success"]]
    if not clean:
        raise SystemExit("the dataset has no clean successful episode to plant defects in")
    kinds = [k for k in (args.defects.split(",") if args.defects else DEFECTS)]
    t0 = time.perf_counter()
    base_plan = [(i, None) for i in clean]

    write_planted(records, base_plan, str(out / "data" / "baseline"))
    base_assay = run_assay(out / "data" / "baseline", out / "runs" / "baseline")
    base_doctor = run_doctor(out / "data" / "baseline")
    base_lint = run_lint(out / "data" / "baseline")
    base_lint_ds = {f["check"] for f in base_lint if f["episode"] is None}
    rows = []
    for kind in kinds:
        ds = out / "data" / kind
        # the damaged copy replaces its clean original (else every defect would also be a near-duplicate of it);
        # only for near_duplicate does the original stay beside it
        plan = [*base_plan, (clean[0], kind)] if kind == "near_duplicate" else [*base_plan[1:], (clean[0], kind)]
        planted = len(plan) - 1
        write_planted(records, plan, str(ds))
        assay = run_assay(ds, out / "runs" / kind)
        doctor_new = sorted(run_doctor(ds) - base_doctor)
        lint = run_lint(ds)
        lint_hits = sorted(_new_findings(lint, planted, base_lint) |
                           {f["check"] for f in lint if f["episode"] is None and f["check"] not in base_lint_ds})
        rows.append({"defect": kind, "assay": assay.get(planted, "?"),
                     "assay_false_drops": sorted(k for k, v in assay.items() if k != planted and v and
                                                 not v.startswith("trimmed")),
                     "doctor": doctor_new, "lint": lint_hits})
        print(f"{kind:18s} assay: {rows[-1]['assay'] or 'missed':42s} doctor: {len(doctor_new)} new  "
              f"lint: {', '.join(lint_hits) or 'missed'}", flush=True)

    def mark(hit: bool) -> str:
        return "caught" if hit else "missed"

    print()
    print(f"baseline: {len(clean)} clean successful episodes of {args.dataset} (episodes {clean}); each defect is "
          f"planted in a copy of episode {clean[0]} that takes its place (the last episode of each dataset)")
    print(f"false alarms on the baseline: assay drops {sorted(k for k, v in base_assay.items() if v and not v.startswith('trimmed'))}, "
          f"doctor {len(base_doctor)} WARN/FAIL messages, lint {len(base_lint)} findings "
          f"({', '.join(sorted({f['check'] for f in base_lint})) or 'none'})")
    print()
    print("| defect | Assay | lerobot-doctor | lerobot-lint |")
    print("|---|---|---|---|")
    for r in rows:
        a = r["assay"]
        doc = "; ".join(m[:70] for m in r["doctor"][:2])
        print(f"| {r['defect']} | {mark(bool(a))}{f' ({a})' if a else ''} | {mark(bool(r['doctor']))}"
              f"{f' ({doc})' if doc else ''} | {mark(bool(r['lint']))}{' (' + ', '.join(r['lint']) + ')' if r['lint'] else ''} |")
    missed = [r["defect"] for r in rows if not r["assay"] and (r["doctor"] or r["lint"])]
    print()
    print(f"caught: Assay {sum(bool(r['assay']) for r in rows)}/{len(rows)}, "
          f"lerobot-doctor {sum(bool(r['doctor']) for r in rows)}/{len(rows)}, "
          f"lerobot-lint {sum(bool(r['lint']) for r in rows)}/{len(rows)}; "
          f"caught by a peer but not by Assay: {missed or 'none'}  ({time.perf_counter() - t0:.0f} s)")
    (out / "trajectory_lint.json").write_text(json.dumps({
        "baseline": {"episodes": clean, "assay": base_assay, "doctor": sorted(base_doctor), "lint": base_lint},
        "rows": rows}, indent=1))
    print(f"wrote {out / 'trajectory_lint.json'}")


if __name__ == "__main__":
    main()

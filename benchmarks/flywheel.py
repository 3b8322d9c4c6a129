"""The flywheel at the size of the shipped recipe (or bigger): wall time per phase and the figures per round.

    .venv/bin/python benchmarks/flywheel.py                       # recipes/flywheel.yaml, 3 rounds, into a temp dir
    .venv/bin/python benchmarks/flywheel.py --rounds 5 --budget 10 --pages 40 --out out/flywheel-bench

Prints, per round: pages harvested, human labels spent, the classifier's held-out accuracy (and the majority
baseline), Q of the round's mix with its 95% interval and its effective clean tokens, collapse metrics, patches,
and the seconds each phase took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "flywheel.yaml"))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="documents routed to people per round")
    ap.add_argument("--pages", type=int, default=None, help="pages harvested per round")
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = ap.parse_args()

    from assay.flywheel.loop import PHASES, Flywheel
    from assay.flywheel.recipe import FlywheelRecipe

    data = yaml.safe_load(Path(args.recipe).read_text())
    base = Path(args.recipe).resolve().parent
    if args.budget is not None:
        data.setdefault("route", {})["budget"] = args.budget
    if args.pages is not None:
        data.setdefault("harvest", {})["pages_per_round"] = args.pages
    if args.rounds is not None:
        data["rounds"] = args.rounds
    recipe = FlywheelRecipe.from_dict(data, args.recipe)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="flywheel-bench-")) / "out"
    t0 = time.perf_counter()
    summary = Flywheel(recipe, out, base, log=lambda m: print(f"  {m}", file=sys.stderr)).run()
    total = time.perf_counter() - t0
    ref = summary["reference"]
    print(f"flywheel {recipe.name}: {len(summary['rounds'])} rounds in {total:.1f} s "
          f"(ladder {ref['lab']['seconds']:.1f} s, γ/β = {ref['lab']['law']['gamma_over_beta']:.3f})")
    print(f"{'round':>5} {'pages':>5} {'docs':>5} {'labels':>6} {'acc':>6} {'base':>6} {'synth':>5} {'mix':>5} "
          f"{'Q mix [95% CI]':>24} {'D_eff mix':>10} {'distinct2':>9} {'patches':>7}")
    for r in summary["rounds"]:
        tr, q = r["train"], r["lab_placements"].get("mix", {})
        qtxt = (f"{q['Q']:.3f} [{q['Q_ci'][0]:.3f}, {q['Q_ci'][1] if q['Q_ci'][1] is None else round(q['Q_ci'][1], 3)}]"
                if q.get("placed") and q.get("Q") is not None else "-")
        acc = tr.get("accuracy")
        print(f"{r['round']:>5} {r['harvest']['pages']:>5} {r['harvest']['records']:>5} {tr['labels_total']:>6} "
              f"{'-' if acc is None else f'{acc:.3f}':>6} {tr.get('majority_baseline') or 0:>6.3f} "
              f"{r['verify']['records']:>5} {r['mix']['records']:>5} {qtxt:>24} "
              f"{q.get('D_eff') or 0:>10,.0f} {r['metrics'].get('synthetic.distinct_2', float('nan')):>9.3f} "
              f"{r['knowledge']['patches']:>7}")
    print("seconds per phase (sum over rounds): " + ", ".join(
        f"{p} {sum(r[p]['seconds'] for r in summary['rounds']):.1f}" for p in PHASES))
    print(f"output: {out} (report: {out / 'report.html'})")


if __name__ == "__main__":
    main()

"""Magpie's yield and UltraFeedback's judge on the bundled SmolLM2-135M-Instruct (offline, local backend).

1. ``magpie`` writes ``--slots`` conversations (one per slot, default system prompt): how many survive, and the
   drop reasons, with the seconds per kept conversation.
2. ``ultrafeedback`` rates, for each kept instruction, the model's answer and a planted off-topic distractor
   ("Bananas are yellow and grow in bunches.") on ``--aspects``: how often the first JSON answer was usable
   (before repair turns), how often no rating came at all, the rating distribution, and how often the judge rated
   the distractor strictly lower than the real answer (a floor on judge quality: a judge rating at random ranks
   them strictly right about 40% of the time on a 1-5 scale, and ties count as failures).

Usage: python benchmarks/synth_preference.py [--slots 20] [--aspects overall] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from assay.core.record import Record
from assay.core.step import StepContext
from assay.synthesize.magpie import Magpie
from assay.synthesize.ultrafeedback import UltraFeedback

DISTRACTOR = "Bananas are yellow and grow in bunches."


def run(step, records: list[Record], run_dir: Path) -> list[Record]:  # noqa: ANN001
    ctx = StepContext(run_dir=run_dir)
    step.setup(ctx)
    return [r for batch in step.process([records], ctx) for r in batch]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=20)
    ap.add_argument("--aspects", default="overall", help="comma-separated UltraFeedback aspects")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        magpie = Magpie({"per_record": args.slots, "seed": args.seed,
                         "response_sampling": {"temperature": 0.7, "max_tokens": 96}, "cache": "off"})
        started = time.perf_counter()
        made = run(magpie, [Record("slot", {}, "text")], Path(tmp))
        seconds = time.perf_counter() - started
        kept = [r for r in made if r.drop is None]
        reasons = collections.Counter(r.drop[1] for r in made if r.drop is not None)
        print(f"magpie: {len(kept)}/{args.slots} conversations kept in {seconds:.0f} s "
              f"({seconds / max(1, len(kept)):.1f} s each); dropped: {dict(reasons) or 'none'}")

        records = [Record(r.id, {"instruction": r.content["instruction"],
                                 "responses": [r.content["output"], DISTRACTOR], "models": ["smollm2", "distractor"]},
                          "conversation") for r in kept]
        aspects = [a.strip() for a in args.aspects.split(",") if a.strip()]
        judge = UltraFeedback({"aspects": aspects, "pairs": "random", "seed": args.seed, "cache": "off"})
        started = time.perf_counter()
        rated = [r for r in run(judge, records, Path(tmp)) if r.modality == "conversation"]
        seconds = time.perf_counter() - started
    c = judge.stats.counters
    requests = c["ratings"] + c.get("unparsed", 0)
    first_ok = requests - c.get("repair_prompts", 0)
    dist = collections.Counter(v for r in rated for ratings in r.content["ratings"] for v in ratings.values())
    ranked = sum(1 for r in rated if None not in r.content["mean_ratings"]
                 and r.content["mean_ratings"][1] < r.content["mean_ratings"][0])
    print(f"ultrafeedback ({', '.join(aspects)}): {requests} rating requests in {seconds:.0f} s "
          f"({seconds / max(1, requests):.2f} s each); usable at the first answer {first_ok}/{requests}, "
          f"no rating after repairs {c.get('unparsed', 0)}; ratings {dict(sorted(dist.items(), key=str))}")
    print(f"distractor rated strictly below the model's answer: {ranked}/{len(rated)}; "
          f"pairs {c.get('pairs', 0)}, ties {c.get('pairs_skipped:tie', 0)}")


if __name__ == "__main__":
    main()

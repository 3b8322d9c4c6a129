"""Model collapse, replace vs accumulate: the Gaussian toy model and tiny-LM recursive training.

    .venv/bin/python benchmarks/lab_collapse.py [--chains 1000] [--lm-generations 4] [--out DIR]

Gaussian (Shumailov et al. 2024; Gerstgrasser et al. 2024): 500 generations, M = 100 samples each, many
independent chains. Prints the median and 5–95% band of σ/σ₀ at a few generations for both modes, the largest
deviation of the median from σ₀ under ``accumulate``, and how far the mean log-variance under ``replace`` is from
its closed-form drift, (g+1)·(ψ((M−1)/2) + log 2 − log(M−1)).

Tiny LM: the micro GPT trained on 32k tokens of the Python documentation (reST sources), then each generation
trained on text sampled from the previous one (``replace``) or on the real text plus every sample so far
(``accumulate``), two epochs over its pool; held-out loss on real text per generation. Writes collapse.json and
the HTML report into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
DOCS = Path("/usr/share/doc/python3.11/html/_sources")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--generations", type=int, default=500)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--lm-generations", type=int, default=4)
    ap.add_argument("--lm-tokens", type=int, default=32_000)
    ap.add_argument("--out", default="/tmp/assay-lab-collapse")
    args = ap.parse_args()

    import orjson
    from scipy.special import digamma

    from assay.lab.collapse import MODES, gaussian_collapse, lm_collapse
    from assay.lab.report import write_report

    payload: dict = {"kind": "collapse", "gaussian": [], "lm": []}
    M, G = args.samples, args.generations
    t = time.perf_counter()
    results = {mode: gaussian_collapse(mode, G, M, args.chains, seed=0) for mode in MODES}
    print(f"Gaussian model: {G} generations, M = {M}, {args.chains} chains ({time.perf_counter() - t:.1f} s)")
    marks = [g for g in (0, 1, 10, 50, 100, 200, 300, 400, 500) if g <= G]
    print(f"{'generation':>17} " + " ".join(f"{g:>9}" for g in marks))
    for mode, r in results.items():
        med = np.median(r.sigma, axis=1)
        lo, hi = np.quantile(r.sigma, 0.05, axis=1), np.quantile(r.sigma, 0.95, axis=1)
        print(f"{mode + ' median':>17} " + " ".join(f"{med[g]:>9.3f}" for g in marks))
        print(f"{'5%–95%':>17} " + " ".join(f"{lo[g]:.2f}–{hi[g]:.2f}".rjust(9) for g in marks))
        payload["gaussian"].append(r.to_dict())
    acc = results["accumulate"].summary()
    print(f"accumulate: largest |median σ/σ₀ − 1| over all {G} generations = "
          f"{acc['median_sigma_max_deviation']:.3f} (≤ 0.10 required); chains within 10% at the end: "
          f"{acc['chains_within_10pct_at_end']:.0%}")
    rep = results["replace"]
    expected = (G + 1) * (digamma((M - 1) / 2) + np.log(2) - np.log(M - 1))
    observed = float(np.log(rep.sigma[-1] ** 2).mean())
    se = float(np.log(rep.sigma[-1] ** 2).std() / np.sqrt(args.chains))
    print(f"replace: mean log σ² at generation {G} = {observed:.3f} ± {se:.3f} (closed form {expected:.3f}); "
          f"median σ/σ₀ = {np.median(rep.sigma[-1]):.3f}")

    if DOCS.exists() and args.lm_generations > 0:
        from assay.lab.data import read_texts, split_docs
        from assay.lab.harness import Harness

        docs = read_texts(str(DOCS / "tutorial")).docs + read_texts(str(DOCS / "howto")).docs
        train, held = split_docs(docs, 0.1)
        h = Harness.build(train, held, preset="micro", vocab_size=512, eval_tokens=16_384, eval_points=1)
        real = h.sequences(train)[: args.lm_tokens // h.model.context]
        print(f"\ntiny LM: {h.model.param_count():,} parameters, {len(real) * h.model.context:,} real tokens, "
              f"{args.lm_generations} generations, 2 epochs over each pool")
        for mode in MODES:
            t = time.perf_counter()
            r = lm_collapse(h, real, args.lm_generations, mode, epochs=2.0, seed=0)
            payload["lm"].append(r.to_dict())
            print(f"{mode:>11}: held-out loss by generation "
                  + " → ".join(f"{x:.3f}" for x in r.losses()) + f"  ({time.perf_counter() - t:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "collapse.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))
    print(f"report: {write_report(out)}")


if __name__ == "__main__":
    main()

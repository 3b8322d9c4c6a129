"""Near-dedup benchmark: Assay's ``minhash_dedup`` vs datasketch ``MinHashLSH`` on the same planted corpus.

The corpus: real text (Python and PostgreSQL HTML docs from /usr/share/doc, article bodies of
shared/data/web-articles), made distinct, then near-duplicates planted at word-5-gram Jaccard >= 0.8 and related
but distinct texts at Jaccard <= 0.7 (:mod:`assay.harvest.dedup.evaluation`). Both tools use word 5-grams, 112
MinHash values and 14 bands × 8 rows (FineWeb's setting), so their recall is comparable; each is timed end to end
(shingling, signatures, LSH, clusters, decisions) on one core, best of ``--repeat`` runs, and scored on pairs.

    .venv/bin/python benchmarks/minhash.py [--seed 0] [--repeat 2]
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from pathlib import Path

import xxhash

from assay.core.record import Record, stable_id
from assay.core.step import StepContext
from assay.harvest.dedup import MinHashDedup
from assay.harvest.dedup.evaluation import (distinct_texts, pair_scores, plant_near_duplicates,
                                            texts_from_html_files)
from assay.harvest.dedup.shingles import reference_shingles

ROOT = Path(__file__).resolve().parents[1]
ARTICLES = ROOT.parent / "shared" / "data" / "web-articles" / "ground-truth.json"


def base_texts() -> list[str]:
    py = texts_from_html_files(sorted(glob.glob("/usr/share/doc/python3.11/html/**/*.html", recursive=True)))
    pg = texts_from_html_files(sorted(glob.glob("/usr/share/doc/postgresql-doc-15/html/*.html")))
    articles = []
    if ARTICLES.exists():
        articles = [v["articleBody"] for _, v in sorted(json.loads(ARTICLES.read_text()).items())
                    if len(v["articleBody"].split()) >= 50]
    return distinct_texts(py + pg + articles)


def run_assay(texts: list[str], params: dict) -> tuple[list[object], float]:
    records = [Record(stable_id("bench", i), t) for i, t in enumerate(texts)]
    batches = [records[i:i + 1000] for i in range(0, len(records), 1000)]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = [r for b in MinHashDedup(params).process(batches, StepContext(Path(d))) for r in b]
        seconds = time.perf_counter() - t0
    return [r.signals.get("minhash.cluster", r.id) for r in out], seconds


def run_datasketch(texts: list[str], bands: int, rows: int, fast_hash: bool) -> tuple[list[object], float]:
    from datasketch import MinHash, MinHashLSH

    kwargs = {"hashfunc": lambda b: xxhash.xxh32_intdigest(b)} if fast_hash else {}
    t0 = time.perf_counter()
    lsh = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    sketches = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=bands * rows, **kwargs)
        m.update_batch([" ".join(s).encode() for s in reference_shingles(text, 5)])
        lsh.insert(i, m)
        sketches.append(m)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    labels = [find(i) for i in range(len(texts))]
    return labels, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="seed of the planted edits")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per tool (best is reported)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    base = base_texts()
    corpus = plant_near_duplicates(base, seed=args.seed)
    texts, family = corpus.texts, corpus.family
    mb = sum(len(t) for t in texts) / 1e6
    print(f"corpus: {len(base)} distinct base texts -> {len(texts)} docs, {mb:.1f} M chars "
          f"({len(set(family))} families), built in {time.perf_counter() - t0:.0f}s", flush=True)

    rows = []
    configs = [
        ("assay minhash_dedup (default: min_jaccard=0.7)", lambda: run_assay(texts, {})),
        ("assay minhash_dedup (min_jaccard=None, as FineWeb)", lambda: run_assay(texts, {"min_jaccard": None})),
        ("datasketch MinHashLSH (14x8, default sha1)", lambda: run_datasketch(texts, 14, 8, fast_hash=False)),
        ("datasketch MinHashLSH (14x8, xxh32 hashfunc)", lambda: run_datasketch(texts, 14, 8, fast_hash=True)),
    ]
    for name, fn in configs:
        best = None
        for _ in range(args.repeat):
            labels, seconds = fn()
            best = seconds if best is None else min(best, seconds)
        scores = pair_scores(labels, family)
        rows.append((name, scores, best))
        print(f"{name:52s} recall {scores['recall']:.4f}  precision {scores['precision']:.4f}  "
              f"{best:7.2f}s  {len(texts) / best:8.0f} docs/s", flush=True)

    ours = {r[0]: r[2] for r in rows}
    a_def, a_fw = ours[configs[0][0]], ours[configs[1][0]]
    for name in (configs[2][0], configs[3][0]):
        print(f"speed-up vs {name}: default {ours[name] / a_def:.1f}x, FineWeb-equivalent {ours[name] / a_fw:.1f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Heuristic filters, Assay vs datatrove 0.10.1: throughput (docs/s) and keep/drop agreement on the same texts.

    .venv/bin/python benchmarks/filters_vs_datatrove.py [--extractor resiliparse|trafilatura] [--every N]
                                                        [--filters gopher_quality ...] [--no-agreement]

Texts: tests/peers/filters_corpus.py (Debian's Python and PostgreSQL manuals plus the shared web articles, extracted
once; trafilatura texts are cached in benchmarks/_data). datatrove runs in the peer venv (.venv-peers, ``make
peers``) through tests/peers/datatrove_filters.py. Each filter is timed in a fresh process for each tool (cold word
caches on both sides, as for a new shard), timing only the filter calls; "chain" applies the four text filters one
after the other as in the FineWeb recipe (gopher_repetition, gopher_quality, c4_quality, fineweb_quality), a dropped
document stopping there. Agreement compares each filter's keep/drop decision per document; c4_quality also compares
the cleaned text of the documents both keep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
TEXT_FILTERS = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
sys.path.insert(0, str(ROOT / "tests" / "peers"))


def load_docs(extractor: str, every: int) -> list[dict]:
    import filters_corpus

    return filters_corpus.real_texts(extractor, every=every, cache=True)


def run_peer(request: dict) -> dict:
    import filters_corpus

    return filters_corpus.run_datatrove(request)


def assay_worker(names: list[str], docs_file: str) -> dict:
    """Runs in a fresh process: time the Assay filters ``names`` on the documents (one filter, or the chain)."""
    from assay.core.record import Record
    from assay.core.step import REGISTRY, StepContext

    docs = json.load(open(docs_file))
    steps = [REGISTRY.get(n)() for n in names]
    ctx = StepContext()
    warm = [Record("warm-up", "Warm up. " * 20, meta={"url": "https://example.com/"})]
    for step in steps:
        step.setup(ctx)
        step.process_batch([r.copy() for r in warm], ctx)
    records = [Record(d["id"], d["text"]) for d in docs]
    batch_size = 500  # the recipe default
    t0 = time.perf_counter()
    for i in range(0, len(records), batch_size):
        batch = records[i:i + batch_size]
        for step in steps:
            batch = [r for r in step.process_batch(batch, ctx) if r.drop is None]
    seconds = time.perf_counter() - t0
    kept = sum(r.drop is None for r in records)
    return {"seconds": seconds, "docs": len(records), "kept": kept}


def run_assay(names: list[str], docs_file: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", ",".join(names), "--docs-file", docs_file],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def assay_decisions(names: list[str], docs: list[dict]) -> dict[str, list[dict]]:
    from assay.core.record import Record
    from assay.core.step import REGISTRY, StepContext

    out = {}
    for name in names:
        step = REGISTRY.get(name)()
        records = [Record(d["id"], d["text"]) for d in docs]
        step.process_batch(records, StepContext())
        out[name] = [{"keep": r.drop is None, "reason": r.drop[1] if r.drop else None, "text": r.content}
                     for r in records]
    return out


def agreement(docs: list[dict], mine: dict, ref: dict) -> None:
    print("\nagreement (keep/drop decision per document)")
    for name in mine:
        pairs = [(d, a, b) for d, a, b in zip(docs, mine[name], ref[name]) if "error" not in b]
        agree = sum(a["keep"] == b["keep"] for _, a, b in pairs)
        line = f"  {name:18s} {agree}/{len(pairs)} = {agree / len(pairs):.2%}"
        if len(pairs) < len(docs):
            line += f" ({len(docs) - len(pairs)} docs datatrove cannot process left out)"
        if name == "c4_quality":
            both = [(a, b) for _, a, b in pairs if a["keep"] and b["keep"]]
            line += f"; cleaned text identical for {sum(a['text'] == b['text'] for a, b in both)}/{len(both)} kept"
        print(line)
        causes = Counter((b["reason"], a["reason"]) for _, a, b in pairs if a["keep"] != b["keep"])
        for (theirs, ours), n in causes.most_common(10):
            print(f"      {n} x datatrove {theirs or 'keep'} vs assay {ours or 'keep'}")
        reasons = Counter(b["reason"] or "keep" for _, _, b in pairs)
        print("      datatrove decisions:", dict(reasons.most_common()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extractor", default="resiliparse", choices=["resiliparse", "trafilatura"])
    ap.add_argument("--every", type=int, default=1, help="use every N-th page of each source")
    ap.add_argument("--filters", nargs="*", default=TEXT_FILTERS)
    ap.add_argument("--no-agreement", action="store_true")
    ap.add_argument("--no-chain", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--docs-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        json.dump(assay_worker(args.worker.split(","), args.docs_file), sys.stdout)
        return
    if not PEER_PYTHON.exists():
        sys.exit(f"{PEER_PYTHON} is missing: run `make peers`")
    docs = load_docs(args.extractor, args.every)
    n_chars = sum(len(d["text"]) for d in docs)
    print(f"{len(docs)} documents ({args.extractor} text, {n_chars / 1e6:.1f} M characters)")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(docs, f)
    try:
        runs = [[name] for name in args.filters]
        if not args.no_chain:
            runs.append([n for n in TEXT_FILTERS if n in args.filters])
        print(f"\n{'filter':40s} {'assay docs/s':>13s} {'datatrove docs/s':>17s} {'ratio':>6s}")
        for names in runs:
            mine = run_assay(names, f.name)
            if len(names) == 1:
                theirs = run_peer({"mode": "bench", "filters": names, "docs": docs})[names[0]]
                label = names[0]
            else:
                theirs = run_peer({"mode": "bench_chain", "filters": names, "docs": docs})["chain"]
                label = "chain: " + " > ".join(n.replace("_quality", "").replace("_repetition", "_rep")
                                                 for n in names)
            a, b = mine["docs"] / mine["seconds"], theirs["docs"] / theirs["seconds"]
            print(f"{label:40s} {a:13.0f} {b:17.0f} {a / b:6.2f}")
        if not args.no_agreement:
            names = [n for n in args.filters if n in TEXT_FILTERS]
            agreement(docs, assay_decisions(names, docs), run_peer({"mode": "decide", "filters": names, "docs": docs}))
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()

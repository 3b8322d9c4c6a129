"""Extraction quality and speed of the ``extract`` step on real news/blog pages, next to the libraries called bare.

Data: ``shared/data/web-articles`` (181 pages of scrapinghub's article-extraction-benchmark, with the hand-checked
article body of each). For every page we compare the extracted text with the true body:

* ``tokens``: bag of ``\\w+`` tokens; per page TP = overlap of the two multisets, precision = TP/predicted,
  recall = TP/true; both averaged over pages, F1 from the averages (the benchmark's evaluate.py, with tokens);
* ``shingles``: the same with 4-token shingles, which is what the benchmark's evaluate.py reports.

Rows: our step with each engine (FineWeb settings for trafilatura), and as peers the bare calls the benchmark's own
runners make (``trafilatura.extract(html, include_comments=False)``, ``extract_plain_text(html,
main_content=True)``), and the bare call with the step's own settings: the ratio column is our pages/s over that
one's, i.e. what the step's checks, time limit and title extraction cost.

Run: ``.venv/bin/python benchmarks/extraction_quality.py [--data DIR] [--repeat N]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

_TOKEN = re.compile(r"\w+")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "web-articles"


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text or "")


def shingles(text: str, n: int = 4) -> list[tuple[str, ...]]:
    toks = tokens(text)
    return [tuple(toks[i: i + n]) for i in range(max(1, len(toks) - n + 1)) if toks[i: i + n]]


def overlap_counts(true_units: list, pred_units: list) -> tuple[int, int, int]:
    """TP, FP, FN between two bags (multisets) of units."""
    t, p = Counter(true_units), Counter(pred_units)
    tp = sum((t & p).values())
    return tp, sum(p.values()) - tp, sum(t.values()) - tp


def page_precision(tp: int, fp: int, fn: int) -> float | None:
    if fp == fn == 0:
        return 1.0  # both empty, or identical
    return None if tp + fp == 0 else tp / (tp + fp)  # nothing predicted: precision undefined, left out


def page_recall(tp: int, fp: int, fn: int) -> float | None:
    if fp == fn == 0:
        return 1.0
    return None if tp + fn == 0 else tp / (tp + fn)


def score(truth: dict[str, str], predicted: dict[str, str], unit: Callable[[str], list]) -> dict[str, float]:
    """Per-page precision and recall averaged over pages, F1 from the averages (as evaluate.py)."""
    precisions, recalls = [], []
    for key, true_text in truth.items():
        counts = overlap_counts(unit(true_text), unit(predicted.get(key, "")))
        p, r = page_precision(*counts), page_recall(*counts)
        if p is not None:
            precisions.append(p)
        if r is not None:
            recalls.append(r)
    precision, recall = statistics.mean(precisions), statistics.mean(recalls)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def load_pages(data: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    truth_raw = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    htmls, truth, urls = {}, {}, {}
    for key, item in truth_raw.items():
        with gzip.open(data / "html" / f"{key}.html.gz", "rt", encoding="utf-8") as f:
            htmls[key] = f.read()
        truth[key] = item.get("articleBody") or ""
        urls[key] = item.get("url") or ""
    return htmls, truth, urls


def run_step(engine: str, htmls: dict[str, str], urls: dict[str, str]) -> tuple[dict[str, str], float, Counter]:
    from assay.core.record import Record
    from assay.core.step import StepContext
    from assay.harvest.extract import Extract

    step = Extract(engine=engine)
    ctx = StepContext()
    step.setup(ctx)
    records = [Record(key, html, "html", {"url": urls[key]}) for key, html in htmls.items()]
    started = time.perf_counter()
    out = [r for batch in step.process([records], ctx) for r in batch]
    seconds = time.perf_counter() - started
    drops = Counter(r.drop[1] for r in out if r.drop)
    return {r.id: (r.content if r.drop is None else "") for r in out}, seconds, drops


def peer_extractors() -> dict[str, list[tuple[str, Callable[[], Callable[[str], str]]]]]:
    """Per engine: the bare library call with the step's settings (the speed reference), and for trafilatura also
    the benchmark's own runner (library defaults)."""
    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text
    from trafilatura.deduplication import LRUCache

    def same_settings() -> Callable[[str], str]:
        cache = LRUCache(maxsize=4096)  # fresh per run, as the step's (per shard)
        return lambda html: trafilatura.extract(html, favor_precision=True, include_comments=False,
                                                deduplicate=cache) or ""

    return {
        "trafilatura": [
            ("peer: trafilatura, same settings", same_settings),
            ("peer: trafilatura, benchmark runner", lambda: lambda html: trafilatura.extract(
                html, include_comments=False) or ""),
        ],
        "resiliparse": [
            ("peer: resiliparse main_content=True", lambda: lambda html: extract_plain_text(html, main_content=True)),
        ],
    }


def run_peer(make_fn: Callable[[], Callable[[str], str]], htmls: dict[str, str]) -> tuple[dict[str, str], float]:
    fn = make_fn()
    fn("<html><body><p>warm up</p></body></html>")  # imports and caches outside the timing
    started = time.perf_counter()
    out = {key: fn(html) for key, html in htmls.items()}
    return out, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat", type=int, default=3, help="time the best of N interleaved runs")
    args = ap.parse_args()
    if not (args.data / "ground-truth.json").exists():
        print(f"no benchmark data at {args.data}", file=sys.stderr)
        return 1
    htmls, truth, urls = load_pages(args.data)
    n = len(htmls)
    print(f"{n} pages, {sum(map(len, htmls.values())) / n / 1000:.0f} kB of HTML on average\n")
    header = (f"{'extractor':<44} {'tok P':>6} {'tok R':>6} {'tok F1':>6}   {'sh4 P':>6} {'sh4 R':>6} {'sh4 F1':>6}"
              f"   {'pages/s':>8} {'ratio':>6}  drops")
    print(header)
    print("-" * len(header))
    peers = peer_extractors()
    for engine in ("trafilatura", "resiliparse"):
        # interleave the runs (ours, peers, ours, peers, ...) so that load from other processes hits all alike
        ours_runs: list = []
        peer_runs: list[list] = [[] for _ in peers[engine]]
        for _ in range(args.repeat):
            ours_runs.append(run_step(engine, htmls, urls))
            for runs, (_, make_fn) in zip(peer_runs, peers[engine]):
                runs.append(run_peer(make_fn, htmls))
        ours_out, ours_s, drops = min(ours_runs, key=lambda x: x[1])
        rows = [(f"assay extract engine={engine}", ours_out, ours_s, dict(drops))]
        for (label, _), runs in zip(peers[engine], peer_runs):
            out, secs = min(runs, key=lambda x: x[1])
            rows.append((label, out, secs, None))
        reference_s = rows[1][2]  # the bare call with the same settings
        for label, out, secs, drop_info in rows:
            t, s = score(truth, out, tokens), score(truth, out, shingles)
            ratio = f"{reference_s / ours_s:.2f}" if drop_info is not None else ""
            print(f"{label[:44]:<44} {t['precision']:6.3f} {t['recall']:6.3f} {t['f1']:6.3f}   "
                  f"{s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f}   {n / secs:8.1f} {ratio:>6}  "
                  f"{drop_info if drop_info else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

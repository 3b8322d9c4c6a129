"""Extraction quality and speed of the ``extract`` step on real news/blog pages, next to the libraries called bare.

Data: ``shared/data/web-articles`` (181 pages of scrapinghub's article-extraction-benchmark, with the hand-checked
article body of each). For every page we compare the extracted text with the true body:

* ``tokens``: bag of ``\\w+`` tokens; per page TP = overlap of the two multisets, precision = TP/predicted,
  recall = TP/true; both averaged over pages, F1 from the averages (the benchmark's evaluate.py, with tokens);
* ``shingles``: the same with 4-token shingles, which is what the benchmark's evaluate.py reports;
* ``snippets``: as trafilatura's own evaluation, must-have snippets (the first ten words of lines of the true body,
  six per page, spread over it) and must-not-have snippets (lines of the page's whole text that are not in the body:
  navigation, footers, related links; up to twelve per page): TP = must-have found, FN = must-have missing,
  FP = must-not-have found; precision, recall and F1 over all snippets.

Rows: our step with each engine (FineWeb settings for trafilatura), and as peers the bare calls the benchmark's own
runners make (``trafilatura.extract(html, include_comments=False)``, ``extract_plain_text(html,
main_content=True)``), and the bare call with the step's own settings: the ratio column is our pages/s over that
one's, i.e. what the step's checks, time limit and title extraction cost.

Our step runs three times with trafilatura: ``focus`` precision (the default, FineWeb's settings), balanced (the
library's defaults) and recall.

Run: ``.venv/bin/python benchmarks/extraction_quality.py [--data DIR | --debian-docs] [--repeat N]``
(``--debian-docs``: pages of the Python and PostgreSQL manuals Debian installs, see ``tests/doc_pages.py``).
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


_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text or "").strip()


def snippets(html: str, body: str, per_page: int = 6) -> tuple[list[str], list[str]]:
    """(must-have, must-not-have) snippets of a page, from its true body and its whole visible text."""
    from resiliparse.extract.html2text import extract_plain_text

    lines = [_norm(line) for line in body.split("\n") if len(line.split()) >= 6]
    step = max(1, len(lines) // per_page)
    must = [" ".join(line.split()[:10]) for line in lines[::step][:per_page]]
    flat_body = _norm(body)
    must_not: list[str] = []
    for line in extract_plain_text(html, main_content=False).split("\n"):
        line = _norm(line)
        if len(line.split()) >= 2 and line not in flat_body and line not in must_not:
            must_not.append(line)
    return must, must_not[: 2 * per_page]


def snippet_score(cases: dict[str, tuple[list[str], list[str]]], predicted: dict[str, str]) -> dict[str, float]:
    """Precision, recall and F1 over all snippets (trafilatura's evaluation): ``cases`` maps a page to its
    (must-have, must-not-have) snippets."""
    tp = fn = fp = 0
    for key, (must, must_not) in cases.items():
        text = _norm(predicted.get(key, ""))
        found = sum(s in text for s in must)
        tp, fn, fp = tp + found, fn + len(must) - found, fp + sum(s in text for s in must_not)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
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


def load_debian_docs() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import doc_pages

    pages = doc_pages.article_pages()
    return ({p["key"]: p["html"] for p in pages}, {p["key"]: p["articleBody"] for p in pages},
            {p["key"]: p["url"] for p in pages})


def run_step(engine: str, htmls: dict[str, str], urls: dict[str, str],
             **params: str) -> tuple[dict[str, str], float, Counter]:
    from assay.core.record import Record
    from assay.core.step import StepContext
    from assay.harvest.extract import Extract

    step = Extract(engine=engine, **params)
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
            ("peer: bare trafilatura.extract(html)", lambda: lambda html: trafilatura.extract(html) or ""),
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
    ap.add_argument("--debian-docs", action="store_true", help="use the Debian manuals (tests/doc_pages.py)")
    ap.add_argument("--repeat", type=int, default=3, help="time the best of N interleaved runs")
    args = ap.parse_args()
    if args.debian_docs:
        htmls, truth, urls = load_debian_docs()
    elif not (args.data / "ground-truth.json").exists():
        print(f"no benchmark data at {args.data}", file=sys.stderr)
        return 1
    else:
        htmls, truth, urls = load_pages(args.data)
    n = len(htmls)
    cases = {key: snippets(htmls[key], truth[key]) for key in htmls}
    print(f"{n} pages, {sum(map(len, htmls.values())) / n / 1000:.0f} kB of HTML on average; "
          f"{sum(len(c[0]) for c in cases.values())} must-have and {sum(len(c[1]) for c in cases.values())} "
          f"must-not-have snippets\n")
    header = (f"{'extractor':<44} {'tok P':>6} {'tok R':>6} {'tok F1':>6}   {'sh4 P':>6} {'sh4 R':>6} {'sh4 F1':>6}"
              f"   {'snip P':>6} {'snip R':>6} {'snip F':>6}   {'pages/s':>8} {'ratio':>6}  drops")
    print(header)
    print("-" * len(header))
    peers = peer_extractors()
    for engine in ("trafilatura", "resiliparse"):
        focuses = ["precision", "balanced", "recall"] if engine == "trafilatura" else ["precision"]
        # interleave the runs (ours, peers, ours, peers, ...) so that load from other processes hits all alike
        ours_runs: list[list] = [[] for _ in focuses]
        peer_runs: list[list] = [[] for _ in peers[engine]]
        for _ in range(args.repeat):
            for runs, focus in zip(ours_runs, focuses):
                runs.append(run_step(engine, htmls, urls, focus=focus))
            for runs, (_, make_fn) in zip(peer_runs, peers[engine]):
                runs.append(run_peer(make_fn, htmls))
        rows = []
        for focus, runs in zip(focuses, ours_runs):
            out, secs, drops = min(runs, key=lambda x: x[1])
            label = f"assay extract engine={engine}" + (f" focus={focus}" if engine == "trafilatura" else "")
            rows.append((label, out, secs, dict(drops)))
        for (label, _), runs in zip(peers[engine], peer_runs):
            out, secs = min(runs, key=lambda x: x[1])
            rows.append((label, out, secs, None))
        reference_s = rows[len(focuses)][2]  # the bare call with the default's settings
        for label, out, secs, drop_info in rows:
            t, s, c = score(truth, out, tokens), score(truth, out, shingles), snippet_score(cases, out)
            ratio = f"{reference_s / secs:.2f}" if drop_info is not None else ""
            print(f"{label[:44]:<44} {t['precision']:6.3f} {t['recall']:6.3f} {t['f1']:6.3f}   "
                  f"{s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f}   "
                  f"{c['precision']:6.3f} {c['recall']:6.3f} {c['f1']:6.3f}   {n / secs:8.1f} {ratio:>6}  "
                  f"{drop_info if drop_info else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

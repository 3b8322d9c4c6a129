"""Retrieval quality and latency of the knowledge layer's HybridIndex (BM25, MiniLM embeddings, RRF fusion).

    python benchmarks/knowledge.py --quality                 # recall@5 / MRR@10 of bm25, dense, hybrid
    python benchmarks/knowledge.py --latency                 # p50/p99 over 100,000 patches
    python benchmarks/knowledge.py --quality --dump out/     # also write passages.jsonl and queries.jsonl

**The labelled query set** is built from real text, programmatically and reproducibly (seeded), from the Python 3.11
documentation pages in ``samples/python-docs`` (PSF License, see that folder):

1. *Passages*: each page's main body is cut at its headings (h1-h4) into sections; a section's text (headings and
   "¶" links removed) is cut into chunks of at most 120 words at block boundaries (paragraphs, list items, code
   blocks); chunks under 20 words, index/search pages and duplicate texts (mirror pages) are dropped. Each chunk is
   one passage = one patch; the indexed text is the chunk *without* its heading.
2. *Title queries*: a section heading (numbering like "4.7.1." removed) is the query, its first chunk the answer;
   only headings of at least two words that are unique in the corpus and not generic ("Examples", "Notes", ...).
   The heading is not in the indexed text, so a match must come from the body's vocabulary or meaning.
3. *Paraphrase queries*: a passage's first sentence of 8-40 words (not a version note like "Changed in version
   3.8: ...", and found in no other passage), with words swapped for synonyms from a fixed
   table (``SYNONYMS``: "function" → "routine", "returns" → "gives back", ...), then a third of the remaining words
   dropped at random (at least 4 kept); the answer is that passage. The original sentence stays in the passage, so
   this is a noisy-restatement task where exact words partly survive.

Queries are never hand-picked after seeing results; the construction above is all there is. Recall@5 = share of
queries whose answer passage is among the top 5; MRR@10 = mean reciprocal rank of the answer (0 beyond 10).

**Latency**: 100,000 patches synthesised from the real passages: each passage plus variations (a random 80% of its
sentences in a random order, a random half of the passage joined with the start of another passage), spread over
8 domains and 4 statuses with random validity intervals; a query is timed end to end (`HybridIndex.search`, k=5,
status=accepted, at=now, latest_only) including the embedding of the query (MiniLM on ONNX Runtime when available), and
again with the query vector computed beforehand (``vector=``) to show the index's own share; the dense side both
approximate (faiss IVF-Flat, ``ann="auto"``) and exact (``ann="off"``), with the ANN's build time and its recall@10
against the exact scan. BM25 indexes every synthesised text; the dense
vectors are MiniLM's for the real passages and, for the variations, the passage's vector plus noise (see
``_variation_vectors``: embedding 100,000 texts would take most of an hour on 2 cores, and the query time does not
depend on the values). The built index is kept in ``--index-dir`` (default
``/tmp/assay-knowledge-bench``) so a rerun skips the embedding of 100,000 texts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "python-docs"
MAX_WORDS = 120
MIN_WORDS = 20

_BLOCKS = {"p", "li", "dt", "dd", "pre", "blockquote", "tr", "table", "ul", "ol", "dl", "div", "section", "br"}
_HEADINGS = {"h1", "h2", "h3", "h4"}
_SKIP_PAGES = ("genindex", "search.html", "py-modindex", "/index.html", "contents.html", "glossary.html")
_NUMBERING = re.compile(r"^\s*(\d+(\.\d+)*\.?)\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`'\"])")
#: sentences that start like these are version notes repeated all over the docs: no single right answer
_BOILERPLATE = ("Changed in version", "New in version", "Deprecated since", "Added in version")
GENERIC_TITLES = {"examples", "example", "notes", "note", "see also", "introduction", "overview", "footnotes",
                  "usage", "contents", "summary", "reference", "functions", "classes", "exceptions", "constants",
                  "module contents", "other functions", "basic usage", "command line interface", "what's new"}

#: synonym swaps for paraphrase queries (lower-case word -> replacement); general English and a few programming terms
SYNONYMS = {
    "function": "routine", "functions": "routines", "returns": "gives back", "return": "give back",
    "create": "make", "creates": "makes", "created": "made", "use": "employ", "used": "employed", "uses": "employs",
    "using": "employing", "list": "sequence", "lists": "sequences", "value": "quantity", "values": "quantities",
    "object": "instance", "objects": "instances", "method": "member function", "methods": "member functions",
    "argument": "parameter", "arguments": "parameters", "error": "failure", "errors": "failures",
    "example": "illustration", "file": "document", "files": "documents", "string": "text", "strings": "texts",
    "number": "count", "numbers": "counts", "large": "big", "small": "little", "begin": "start", "begins": "starts",
    "allows": "lets", "allow": "let", "provides": "offers", "provide": "offer", "module": "library",
    "modules": "libraries", "called": "invoked", "call": "invoke", "calls": "invokes", "change": "modify",
    "changes": "modifies", "remove": "delete", "removes": "deletes", "show": "display", "shows": "displays",
    "simple": "basic", "following": "next", "important": "significant", "different": "distinct",
    "specify": "indicate", "specified": "indicated", "contains": "holds", "contain": "hold", "need": "require",
    "needs": "requires", "often": "frequently", "usually": "typically", "also": "additionally",
    "whole": "entire", "first": "initial", "type": "kind", "types": "kinds", "defined": "declared",
    "define": "declare", "defines": "declares", "write": "produce", "writes": "produces", "read": "load",
    "reads": "loads", "new": "fresh", "build": "construct", "built": "constructed", "instead": "rather",
}


class _MainText(HTMLParser):
    """Sections (heading, list of text blocks) of the ``role="main"`` body of a Sphinx page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[tuple[str, list[str]]] = []
        self._main_depth = 0  # div nesting inside the main body (0: outside)
        self._heading: list[str] | None = None
        self._block: list[str] = []
        self._skip = 0  # inside a headerlink anchor

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self._main_depth == 0:
            if tag == "div" and a.get("role") == "main":
                self._main_depth = 1
            return
        if tag == "div":
            self._main_depth += 1
        if tag == "a" and "headerlink" in (a.get("class") or ""):
            self._skip += 1
        if tag in _HEADINGS:
            self._flush()
            self._heading = []
        elif tag in _BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._main_depth == 0:
            return
        if tag == "a" and self._skip:
            self._skip -= 1
        if tag in _HEADINGS and self._heading is not None:
            self.sections.append((" ".join("".join(self._heading).split()), []))
            self._heading = None
        elif tag in _BLOCKS:
            self._flush()
        if tag == "div":
            self._main_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._main_depth == 0 or self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._block.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._block).split())
        self._block = []
        if text and self.sections:
            self.sections[-1][1].append(text)


def load_passages(max_pages: int | None = None) -> list[dict[str, Any]]:
    """Passages of the Python docs sample: ``{"id", "page", "heading", "section", "chunk", "text"}``."""
    from assay.core.errors import ErrorLog
    from assay.io.warc import read_warc

    pages: list[tuple[str, str]] = []
    for path in sorted(SAMPLE.glob("*.warc.gz")):
        for rec in read_warc(str(path), ErrorLog()):
            url = rec.meta.get("url", "")
            if isinstance(rec.content, str) and not any(s in url for s in _SKIP_PAGES):
                pages.append((url, rec.content))
    pages.sort()
    if max_pages is not None:
        pages = pages[:max_pages]
    passages: list[dict[str, Any]] = []
    seen: set[str] = set()
    for url, html in pages:
        parser = _MainText()
        parser.feed(html)
        for s_index, (heading, blocks) in enumerate(parser.sections):
            section = f"{url}#{s_index}"
            for c_index, chunk in enumerate(_chunks(blocks)):
                digest = hashlib.sha1(chunk.encode()).hexdigest()
                if len(chunk.split()) < MIN_WORDS or digest in seen:
                    continue
                seen.add(digest)
                passages.append({"id": f"p{len(passages)}", "page": url, "heading": heading, "section": section,
                                 "chunk": c_index, "text": chunk})
    return passages


def _chunks(blocks: list[str]) -> list[str]:
    """Blocks joined into chunks of at most MAX_WORDS words (a longer block is cut at word boundaries)."""
    out: list[str] = []
    current: list[str] = []
    for block in blocks:
        words = block.split()
        while len(words) > MAX_WORDS:
            if current:
                out.append(" ".join(current))
                current = []
            out.append(" ".join(words[:MAX_WORDS]))
            words = words[MAX_WORDS:]
        if len(current) + len(words) > MAX_WORDS:
            out.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        out.append(" ".join(current))
    return out


def build_queries(passages: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Title and paraphrase queries (see the module docstring): ``{"query", "kind", "answer"}``."""
    rng = random.Random(seed)
    queries: list[dict[str, Any]] = []
    titles: dict[str, list[dict[str, Any]]] = {}
    for p in passages:
        if p["chunk"] == 0:
            title = _NUMBERING.sub("", p["heading"]).strip()
            titles.setdefault(title.lower(), []).append({**p, "title": title})
    for key, group in titles.items():
        words = re.findall(r"[A-Za-z]+", key)
        if len(group) == 1 and len(words) >= 2 and key not in GENERIC_TITLES:
            queries.append({"query": group[0]["title"], "kind": "title", "answer": group[0]["id"]})
    occurrences: dict[str, int] = {}
    for p in passages:
        for s in set(_SENTENCE.split(p["text"])):
            occurrences[s] = occurrences.get(s, 0) + 1
    for p in passages:
        sentence = next((s for s in _SENTENCE.split(p["text"]) if 8 <= len(s.split()) <= 40
                         and occurrences[s] == 1 and not s.startswith(_BOILERPLATE)), None)
        if sentence is None:
            continue
        words = [SYNONYMS.get(w.lower().strip(".,;:()"), w) for w in sentence.split()]
        keep = max(4, round(len(words) * 2 / 3))
        kept = sorted(rng.sample(range(len(words)), keep))
        queries.append({"query": " ".join(words[i] for i in kept), "kind": "paraphrase", "answer": p["id"]})
    rng.shuffle(queries)
    return queries


def evaluate(index: Any, queries: list[dict[str, Any]], modes: tuple[str, ...] = ("bm25", "dense", "hybrid"),
             k: int = 5) -> dict[str, dict[str, float]]:
    """Recall@k and MRR@10 of each mode, overall and per query kind."""
    results: dict[str, dict[str, float]] = {}
    vectors = index.embed([q["query"] for q in queries])
    for mode in modes:
        hits: dict[str, list[float]] = {}
        ranks: dict[str, list[float]] = {}
        for i, q in enumerate(queries):
            found = [d for d, _ in index.search(q["query"], 10, mode=mode, latest_only=False,
                                                vector=None if vectors is None else vectors[i])]
            rank = found.index(q["answer"]) + 1 if q["answer"] in found else None
            for kind in ("all", q["kind"]):
                hits.setdefault(kind, []).append(1.0 if rank is not None and rank <= k else 0.0)
                ranks.setdefault(kind, []).append(1.0 / rank if rank else 0.0)
        results[mode] = {f"recall@{k}": statistics.fmean(hits["all"]), "mrr@10": statistics.fmean(ranks["all"])}
        for kind in sorted(hits):
            if kind != "all":
                results[mode][f"recall@{k}.{kind}"] = statistics.fmean(hits[kind])
    return results


def build_quality_index(passages: list[dict[str, Any]], embedder: str = "minilm") -> Any:
    from assay.knowledge.search import HybridIndex

    index = HybridIndex(embedder=embedder)
    index.upsert([{"doc_id": p["id"], "patch_id": p["id"], "version": 1, "text": p["text"], "domains": ["python"],
                   "status": "accepted"} for p in passages])
    return index


def run_quality(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    passages = load_passages(args.max_pages)
    queries = build_queries(passages, seed=args.seed)
    if args.dump:
        out = Path(args.dump)
        out.mkdir(parents=True, exist_ok=True)
        for name, rows in (("passages.jsonl", passages), ("queries.jsonl", queries)):
            with open(out / name, "w") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    kinds = {kind: sum(q["kind"] == kind for q in queries) for kind in ("title", "paraphrase")}
    print(f"labelled set: {len(passages)} passages from samples/python-docs, {len(queries)} queries ({kinds})")
    index = build_quality_index(passages, args.embedder)
    print(f"indexed in {time.perf_counter() - t0:.1f} s (embedder: {index.embedder.name})")
    results = evaluate(index, queries)
    cols = ["recall@5", "recall@5.title", "recall@5.paraphrase", "mrr@10"]
    print(f"{'mode':8} " + " ".join(f"{c:>20}" for c in cols))
    for mode, row in results.items():
        print(f"{mode:8} " + " ".join(f"{row[c]:>20.3f}" for c in cols))


def synthesise_docs(passages: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` patch docs from real passages and variations of them (see the module docstring)."""
    rng = random.Random(seed)
    domains = ["python", "stdlib", "language", "howto", "faq", "tutorial", "c-api", "packaging"]
    statuses = ["accepted"] * 6 + ["proposed", "under_review", "superseded", "retracted"]
    now = time.time()
    docs = []
    for i in range(n):
        base = passages[i % len(passages)]["text"]
        variant = (i // len(passages)) % 3
        if variant == 1:
            sentences = _SENTENCE.split(base)
            sentences = rng.sample(sentences, max(1, round(len(sentences) * 0.8)))
            text = " ".join(sentences)
        elif variant == 2:
            words = base.split()
            other = passages[rng.randrange(len(passages))]["text"].split()
            text = " ".join(words[: len(words) // 2] + other[: len(other) // 2])
        else:
            text = base
        start = now - rng.uniform(0, 3 * 365 * 86400)
        end = None if rng.random() < 0.8 else start + rng.uniform(30, 900) * 86400
        docs.append({"doc_id": f"bench{i}@1", "patch_id": f"bench{i}", "version": 1, "text": text,
                     "domains": rng.sample(domains, rng.choice([1, 1, 2])), "status": rng.choice(statuses),
                     "valid_from": start, "valid_to": end})
    return docs


def _variation_vectors(index: Any, passages: list[dict[str, Any]], n: int, seed: int = 0) -> Any:
    """Embeddings for :func:`synthesise_docs`' docs: the real MiniLM vector of each passage, and for a variation
    that vector plus Gaussian noise (cosine about 0.9 to it), re-normalised. Embedding 100,000 texts with MiniLM
    takes most of an hour on 2 CPU cores; the time of a query does not depend on the vectors' values."""
    import numpy as np

    base = index.embed([p["text"] for p in passages])
    if base is None:
        return None
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 10_000):
        rows = np.arange(start, min(n, start + 10_000))
        vec = base[rows % len(passages)].copy()
        varied = (rows // len(passages)) % 3 != 0
        noise = rng.standard_normal((int(varied.sum()), base.shape[1])).astype(np.float32)
        vec[varied] += 0.5 / np.sqrt(base.shape[1]) * noise
        out[rows] = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return out


def _percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"p50 {p(0.50):7.2f} ms   p90 {p(0.90):7.2f} ms   p99 {p(0.99):7.2f} ms"


def run_latency(args: argparse.Namespace) -> None:
    from assay.knowledge.search import HybridIndex

    passages = load_passages()
    queries = [q["query"] for q in build_queries(passages, seed=args.seed)]
    index_dir = Path(args.index_dir)
    t0 = time.perf_counter()
    index = HybridIndex(index_dir, embedder=args.embedder)
    if len(index) != args.patches:
        if len(index):  # built for another size: start over
            index.close()
            shutil.rmtree(index_dir)
            index = HybridIndex(index_dir, embedder=args.embedder)
        docs = synthesise_docs(passages, args.patches, seed=args.seed)
        vectors = _variation_vectors(index, passages, args.patches, seed=args.seed)
        for i in range(0, len(docs), 2000):
            index.upsert(docs[i:i + 2000], vectors=None if vectors is None else vectors[i:i + 2000])
            print(f"  indexed {min(i + 2000, len(docs))}/{len(docs)} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
        index.save()
        print(f"built {len(index)} patches in {time.perf_counter() - t0:.0f} s")
    else:
        print(f"opened {len(index)} patches from {index_dir} in {time.perf_counter() - t0:.1f} s")
    rng = random.Random(args.seed)
    sample = [rng.choice(queries) for _ in range(args.queries)]
    vectors = index.embed(sample)
    now = time.time()
    if vectors is not None:
        index.ann = "on"
        index.search("", 5, mode="dense", vector=vectors[0])  # builds the approximate (IVF) index
        print(f"approximate dense index (faiss IVF-Flat) built in {index.ann_build_seconds:.2f} s")
        print_ann_agreement(index, vectors, now)
    index.ann = "auto"
    for q in sample[:20]:  # warm-up (caches, first BLAS call)
        index.search(q, 5, status=["accepted"], at=now)
    configs = (("hybrid, query embedding included, ANN", "hybrid", False, "auto"),
               ("hybrid, query embedding included, exact", "hybrid", False, "off"),
               ("hybrid, query vector precomputed, ANN", "hybrid", True, "auto"),
               ("hybrid, query vector precomputed, exact", "hybrid", True, "off"),
               ("bm25 only", "bm25", False, "auto"),
               ("dense, query embedding included, ANN", "dense", False, "auto"),
               ("dense, query vector precomputed, ANN", "dense", True, "auto"),
               ("dense, query vector precomputed, exact", "dense", True, "off"),
               ("query embedding alone (ONNX Runtime)", None, False, "auto"))
    from assay.models.embeddings import OnnxMiniLMBackend

    if not isinstance(index.query_encoder, OnnxMiniLMBackend):  # onnxruntime missing or its export failed
        configs = configs[:-1] + (("query embedding alone (torch)", None, False, "auto"),)
    times: dict[str, list[float]] = {label: [] for label, *_ in configs}
    load_before = os.getloadavg()[0]
    # every query runs in every configuration, in a rotating order, so that other work on the machine weighs on all
    # configurations alike
    for i, q in enumerate(sample):
        for j in range(len(configs)):
            label, mode, with_vector, ann = configs[(i + j) % len(configs)]
            index.ann = ann
            t = time.perf_counter()
            if mode is None:
                index.embed([q])
            else:
                index.search(q, 5, mode=mode, status=["accepted"], at=now,
                             vector=vectors[i] if with_vector and vectors is not None else None)
            times[label].append(time.perf_counter() - t)
    index.ann = "auto"
    print(f"{len(index)} patches, {len(sample)} queries, k=5, status=accepted, at=now, latest_only; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores); "
          f"dense rankings by path: {index.dense_counts}:")
    for label, *_ in configs:
        print(f"  {label:40} {_percentiles(times[label])}")


def print_ann_agreement(index: Any, vectors: Any, now: float, k: int = 10) -> None:
    """Recall@k of the approximate dense search against the exact scan, over the benchmark's query vectors:
    the share of the approximate top k whose cosine reaches the exact k-th best (so tied neighbours, e.g. the
    identical vectors of a passage and its copies, count as agreement); unfiltered and with the latency filters."""
    import numpy as np

    for label, filters in (("no filter", {"latest_only": False}),
                           ("status=accepted, at=now, latest_only", {"status": ["accepted"], "at": now})):
        recalls = []
        for vec in vectors:
            index.ann = "off"
            exact = index.search("", k, mode="dense", vector=vec, **filters)
            index.ann = "on"
            approx = index.search("", k, mode="dense", vector=vec, **filters)
            kth = exact[-1][1]
            recalls.append(np.mean([score >= kth - 1e-5 for _, score in approx]) if len(approx) == k else 0.0)
        print(f"  ANN recall@{k} vs exact ({label}): {statistics.fmean(recalls):.3f} over {len(recalls)} queries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", action="store_true", help="recall@5 of bm25, dense and hybrid")
    ap.add_argument("--latency", action="store_true",
                    help="p50/p99 query time over --patches patches, ANN and exact dense search")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--max-pages", type=int, default=None, help="quality: use only the first N pages")
    ap.add_argument("--patches", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--index-dir", default="/tmp/assay-knowledge-bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump", default=None, help="quality: write passages.jsonl and queries.jsonl here")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default). One thread embeds a single query fastest and "
                         "steadiest on a busy machine: see docs/knowledge.md")
    args = ap.parse_args()
    if not (args.quality or args.latency):
        ap.error("choose --quality and/or --latency")
    if args.torch_threads:
        from assay.knowledge.server import limit_torch_threads

        limit_torch_threads(args.torch_threads)
    if args.quality:
        run_quality(args)
    if args.latency:
        run_latency(args)


if __name__ == "__main__":
    main()

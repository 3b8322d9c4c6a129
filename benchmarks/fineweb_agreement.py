"""Why Assay's FineWeb recipe and datatrove's FineWeb pipeline keep different documents: the split by cause.

    .venv/bin/python benchmarks/fineweb_agreement.py [--copies 2] [--workers 2] [--folder WARC_DIR]

Input: the WARC corpus of benchmarks/fineweb_vs_datatrove.py (``--copies``), or any folder of ``*.warc.gz``.
Steps:

1. Both full pipelines (reusing the outputs of ``fineweb_vs_datatrove.py`` when they are there): which URLs each keeps.
2. Extraction alone on both sides (URL filter + Trafilatura, precision-favouring): T_A (Assay's trafilatura) and
   T_D (datatrove's pinned trafilatura) for every page.
3. The five FineWeb text filters in order (language en >= 0.65, Gopher repetition, Gopher quality, C4 without the
   terminal-punctuation rule, FineWeb quality), each tool's own implementation, on the SAME texts: both chains on
   T_A and both on T_D. Agreement of the keep/drop decision on the same text is the figure the filters are judged by.

Then every page whose final keep/drop differs is given one cause: ``url_filter`` (the URL lists), ``extraction``
(each tool's chain on its own text differs, but the two chains agree on the same text: the extractor versions),
``filter:<step>`` (the two chains disagree on the same text, at that step), or ``minhash`` (both chains keep it and
one tool's MinHash removed it as a near-duplicate).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
PEERS = ROOT / ".venv-peers" / "bin" / "python"
STEPS_SCRIPT = ROOT / "benchmarks" / "peers" / "datatrove_fineweb_steps.py"
CHAIN = ["language_id", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]


def _jsonl_gz_lines(folder: Path):
    for p in sorted(folder.rglob("*.jsonl.gz")):
        with gzip.open(p, "rt") as f:
            for line in f:
                yield json.loads(line)


def datatrove_kept(work: Path) -> set[str]:
    return {d["metadata"]["url"] for d in _jsonl_gz_lines(work / "out")}


def assay_extract(folder: Path, out: Path, workers: int) -> dict[str, dict]:
    """url → {"text", "drop"} after Assay's url_filter + extract (trafilatura, as in recipes/fineweb.yaml)."""
    import fineweb_at_scale as fas
    import yaml

    if not (out / "stats.json").exists():
        full = yaml.safe_load((ROOT / "recipes" / "fineweb.yaml").read_text())
        full["steps"] = [s for s in full["steps"] if (s if isinstance(s, str) else next(iter(s))) in
                         ("url_filter", "extract")]
        full["name"] = "fineweb-extract"
        recipe = out.parent / "fineweb-extract.yaml"
        recipe.write_text(yaml.safe_dump(full))
        fas.run_assay(recipe, folder, out, workers)
    res = {}
    for d in _jsonl_gz_lines(out):
        url = d["meta"]["url"]
        if d.get("drop"):
            res[url] = {"text": None, "drop": d["drop"]["step"]}
        elif url not in res:
            res[url] = {"text": d["content"], "drop": None}
    return res


def datatrove_extract(folder: Path, out: Path, workers: int) -> dict[str, dict]:
    target = out / "datatrove-extract.jsonl"
    if not target.exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(PEERS), str(STEPS_SCRIPT), "extract", str(folder), str(target) + ".tmp",
                        "--tasks", str(workers)], check=True, capture_output=True)
        Path(str(target) + ".tmp").replace(target)
    res = {}
    for line in target.read_text().splitlines():
        d = json.loads(line)
        res[d["url"]] = {"text": d["text"], "drop": d["drop"]}
    return res


def assay_chain(texts: dict[str, str]) -> dict[str, str | None]:
    """url → the first of Assay's FineWeb filters that drops the text (None: kept), parameters as in the recipe."""
    from assay.core.record import Record, stable_id
    from assay.core.recipe import Recipe
    from assay.core.step import REGISTRY, StepContext

    recipe = Recipe.from_yaml(ROOT / "recipes" / "fineweb.yaml").model_dump(mode="json")
    params = {s["name"]: s["params"] for s in recipe["steps"]}
    ctx = StepContext()
    steps = []
    for name in CHAIN:
        step = REGISTRY.get(name)(params.get(name) or {})
        step.setup(ctx)
        steps.append(step)
    urls = sorted(texts)
    records = [Record(stable_id("agreement", i), texts[u], meta={"url": u}) for i, u in enumerate(urls)]
    out: dict[str, str | None] = {}
    for i in range(0, len(records), 100):
        batch = records[i:i + 100]
        for step in steps:
            batch = [r for r in step.process_batch(batch, ctx) if r.drop is None]
    for u, r in zip(urls, records):
        out[u] = r.drop[0] if r.drop else None
    return out


def datatrove_chain(texts: dict[str, str], work: Path, tag: str) -> dict[str, str | None]:
    from assay.harvest.langid import lid176_path

    src, dst = work / f"chain-in-{tag}.jsonl", work / f"chain-out-{tag}.jsonl"
    with open(src, "w") as f:
        for u in sorted(texts):
            f.write(json.dumps({"url": u, "text": texts[u]}) + "\n")
    subprocess.run([str(PEERS), str(STEPS_SCRIPT), "chain", str(src), str(dst), "--lid", lid176_path()],
                   check=True, capture_output=True)
    return {d["url"]: d["drop"] for d in map(json.loads, dst.read_text().splitlines())}


def main() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import fineweb_at_scale as fas
    import fineweb_vs_datatrove as fvd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--folder", help="a folder of *.warc.gz instead of the fineweb_vs_datatrove corpus")
    ap.add_argument("--datatrove-timeout", type=float, default=1.0,
                    help="datatrove's per-page extraction limit in the full run (its default, 1 s, as in "
                         "fineweb_vs_datatrove.py); the extraction-only run always allows 5 s, as Assay")
    ap.add_argument("--same-text-only", action="store_true",
                    help="only Assay's extraction and both filter chains on its texts (no full pipeline runs)")
    ap.add_argument("--datatrove-extract", action="store_true",
                    help="also extract with datatrove alone and run both chains on its texts (slower)")
    args = ap.parse_args()
    if not PEERS.exists():
        sys.exit("datatrove's venv is missing: make peers")
    if args.folder:
        folder = Path(args.folder)
        work = folder.parent / f"agreement-{folder.name}"
    else:
        folder, _ = fvd.build_corpus(args.copies)
        work = fvd.DATA / f"agreement-x{args.copies}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    full_a, full_d = work / "full-assay", work / f"full-datatrove-t{args.datatrove_timeout:g}"

    def full_assay() -> None:
        if not (full_a / "stats.json").exists():
            fas.run_assay(ROOT / "recipes" / "fineweb.yaml", folder, full_a, args.workers)

    def full_datatrove() -> None:
        if not (full_d / "out").exists():
            fas.run_datatrove(folder, full_d, args.workers, args.datatrove_timeout)

    print(f"input: {folder}; running both full pipelines and both extractions (4 jobs, 2 at a time) ...", flush=True)
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(assay_extract, folder, work / "assay-extract", args.workers)]
        if args.datatrove_extract:
            jobs.append(pool.submit(datatrove_extract, folder, work, args.workers))
        if not args.same_text_only:
            jobs += [pool.submit(full_assay), pool.submit(full_datatrove)]
        ext_a = jobs[0].result()
        ext_d = jobs[1].result() if args.datatrove_extract else {}
        for j in jobs:
            j.result()
    a_dec, _ = fas.assay_decisions(full_a) if not args.same_text_only else ({}, {})
    d_dec, _ = fas.datatrove_decisions(full_d) if not args.same_text_only else ({}, {})
    kept_a = {u for u, v in a_dec.items() if v is None}
    kept_d = {u for u, v in d_dec.items() if v is None}
    timeouts = sum(p.read_text(errors="replace").count("Timeout while cleaning record text")
                   for p in (full_d / "logs" / "filter" / "logs").glob("*.log"))
    if not args.same_text_only:
        print(f"full pipelines: assay keeps {len(kept_a):,}, datatrove keeps {len(kept_d):,} (datatrove extraction "
              f"timeouts at {args.datatrove_timeout:g} s: {timeouts:,}) ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    print(f"extracted: assay {sum(v['text'] is not None for v in ext_a.values()):,} texts, datatrove "
          f"{sum(v['text'] is not None for v in ext_d.values()):,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    urls = sorted(ext_a.keys() | ext_d.keys() | a_dec.keys() | d_dec.keys())
    t_a = {u: ext_a[u]["text"] for u in urls if ext_a.get(u, {}).get("text")}
    t_d = {u: ext_d[u]["text"] for u in urls if ext_d.get(u, {}).get("text")}
    both = t_a.keys() & t_d.keys()
    same_text = sum(t_a[u] == t_d[u] for u in both)
    if t_d:
        print(f"pages with text from both extractors: {len(both):,}; identical text: {same_text:,} "
              f"({same_text / max(1, len(both)):.1%})")

    with ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(datatrove_chain, t_a, work, "assay-text")
        f2 = pool.submit(datatrove_chain, t_d, work, "datatrove-text") if t_d else None
        a_on_a, a_on_d = assay_chain(t_a), assay_chain(t_d) if t_d else {}
        d_on_a, d_on_d = f1.result(), f2.result() if f2 else {}
    print(f"chains done ({time.perf_counter() - t0:.0f} s)")
    for label, x, y in (("Assay's extracted text", a_on_a, d_on_a), ("datatrove's extracted text", a_on_d, d_on_d)):
        if not x:
            continue
        agree = sum((x[u] is None) == (y[u] is None) for u in x)
        print(f"\nsame text ({label}): keep/drop identical for {agree:,}/{len(x):,} = {agree / max(1, len(x)):.2%}; "
              f"same first dropping step for {sum(x[u] == y[u] for u in x):,}")
        diff = Counter((y[u] or "keep", x[u] or "keep") for u in x if (x[u] is None) != (y[u] is None))
        for (d, a), n in diff.most_common():
            print(f"    {n:5d} x datatrove {d:18s} assay {a}")

    if args.same_text_only:
        return
    causes: Counter = Counter()
    examples: dict[str, list[str]] = {}
    for u in urls:
        a, d = a_dec.get(u, "missing"), d_dec.get(u, "missing")
        if (a is None) == (d is None):
            continue
        if "url_filter" in (a, d):
            cause = "url_filter (the block lists)"
        elif d == "missing":
            cause = "datatrove extraction: timeout or no text"
        elif a in ("missing", "extract"):
            cause = "assay extraction: timeout or no text"
        elif u not in t_a:
            cause = "no text in Assay's extraction-only run"
        elif (a_on_a[u] is None) != (d_on_a[u] is None):
            cause = f"filter on the same text: {a_on_a[u] or d_on_a[u]}"
        elif a == "minhash_dedup" or d == "minhash_dedup":
            cause = "minhash: " + ("assay removed" if a == "minhash_dedup" else "datatrove removed")
        elif a_on_a[u] is None and d is not None:
            # both chains keep Assay's text; datatrove's own text was dropped: its extractor gave another text
            cause = f"extraction (trafilatura versions): datatrove's text dropped by {d}"
        elif a_on_a[u] is not None and d is None:
            cause = f"extraction (trafilatura versions): Assay's text dropped by {a}, datatrove's kept"
        else:
            cause = f"other: datatrove {d} / assay {a}"
        causes[cause, "assay keeps" if a is None else "datatrove keeps"] += 1
        examples.setdefault(cause, []).append(u)
    print(f"\nfinal decisions differ for {sum(causes.values()):,} of {len(urls):,} pages "
          f"(assay keeps {len(kept_a):,}, datatrove {len(kept_d):,}):")
    print(f"| cause | assay keeps, datatrove drops | datatrove keeps, assay drops |\n|---|---:|---:|")
    for cause in sorted({c for c, _ in causes}, key=lambda c: -sum(n for (k, _), n in causes.items() if k == c)):
        print(f"| {cause} | {causes[cause, 'assay keeps']:,} | {causes[cause, 'datatrove keeps']:,} |")
    (work / "differences.json").write_text(json.dumps({c: u[:50] for c, u in examples.items()}, indent=1))
    print(f"examples: {work / 'differences.json'}")


def _jsonl_gz_lines_top(folder: Path):
    """Records of a run's output shards (data/: not rejected/, not .assay/)."""
    for p in sorted(folder.glob("data/train-*.jsonl.gz")):
        with gzip.open(p, "rt") as f:
            for line in f:
                yield json.loads(line)


if __name__ == "__main__":
    main()

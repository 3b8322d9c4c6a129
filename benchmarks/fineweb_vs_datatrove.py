"""The FineWeb recipe, Assay vs datatrove, on the same WARC input in one run.

    .venv/bin/python benchmarks/fineweb_vs_datatrove.py [--workers 2] [--copies 1]

Input: real HTML pages — the Python 3.11 and PostgreSQL 15 manuals as Debian installs them (python3-doc,
postgresql-doc-15) and the 181 news pages of ../shared/data/web-articles — plus near-duplicate copies of a tenth
of them (a sentence changed), packed as WARC.gz files under benchmarks/_data/fineweb/. Both tools run the same
steps in the FineWeb order (URL filter → Trafilatura → language → Gopher repetition → Gopher quality → C4 without
the terminal-punctuation rule → FineWeb quality → MinHash dedup → PII) on the same number of worker processes.
Prints documents/s for both and the ratio; then Assay with its faster extractor (resiliparse) for reference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "_data" / "fineweb"
SHARED = ROOT.parent / "shared" / "data"
SOURCES = [("https://docs.python.org/3.11/", Path("/usr/share/doc/python3.11/html")),
           ("https://www.postgresql.org/docs/15/", Path("/usr/share/doc/postgresql-doc-15/html"))]


def build_corpus(copies: int, files: int = 4) -> tuple[Path, int]:
    from assay.io.warc import warc_response, write_warc_gz

    folder = DATA / f"warc-x{copies}"
    marker = folder / "_count"
    if marker.exists():
        return folder, int(marker.read_text())
    pages: list[tuple[str, bytes]] = []
    for base, root in SOURCES:
        if not root.exists():
            sys.exit(f"{root} missing: apt-get install python3-doc postgresql-doc-15 (or `make docs-data`)")
        for p in sorted(root.rglob("*.html")):
            pages.append((base + p.relative_to(root).as_posix(), p.read_bytes()))
    arts = SHARED / "web-articles" / "html"
    if arts.exists():
        for p in sorted(arts.glob("*.html.gz")):
            pages.append((f"https://news.example.com/{p.name[:-8]}", gzip.decompress(p.read_bytes())))
    rng = random.Random(0)
    extra = []
    for url, html in rng.sample(pages, len(pages) // 10):  # near-duplicates: the same page, one sentence changed
        i = html.find(b"</p>")
        if i > 0:
            extra.append((url.replace("https://", "https://mirror."), html[:i] + b" (mirrored copy)" + html[i:]))
    pages = (pages + extra) * copies
    folder.mkdir(parents=True, exist_ok=True)
    recs: list[list[bytes]] = [[] for _ in range(files)]
    for i, (url, html) in enumerate(pages):
        recs[i % files].append(warc_response(url if i < len(pages) // copies else f"{url}?copy={i}", html))
    for k, r in enumerate(recs):
        write_warc_gz(str(folder / f"pages-{k:02d}.warc.gz"), r)
    marker.write_text(str(len(pages)))
    return folder, len(pages)


def run_assay(folder: Path, out: Path, workers: int, extractor: str) -> tuple[float, dict]:
    from assay.core.recipe import Recipe
    from assay.run.executor import LocalExecutor

    recipe = Recipe.from_yaml(ROOT / "recipes" / "fineweb.yaml")
    if extractor != "trafilatura":
        data = recipe.model_dump(mode="json")
        for s in data["steps"]:
            if s["name"] == "extract":
                s["params"]["engine"] = extractor
        recipe = Recipe.from_dict(data)
    t0 = time.perf_counter()
    stats = LocalExecutor(workers).run(recipe, [str(folder)], str(out), overwrite=True)
    return time.perf_counter() - t0, stats


def run_datatrove(folder: Path, work: Path, workers: int) -> tuple[float, dict]:
    peers = ROOT / ".venv-peers" / "bin" / "python"
    if not peers.exists():
        sys.exit("datatrove's venv is missing: make peers")
    from assay.harvest.langid import lid176_path  # the lid.176.ftz both tools use

    t0 = time.perf_counter()
    p = subprocess.run([str(peers), str(ROOT / "benchmarks" / "peers" / "datatrove_fineweb.py"), str(folder),
                        str(work), "--tasks", str(workers), "--lid", lid176_path()],
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"datatrove failed:\n{p.stderr[-3000:]}")
    return elapsed, json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copies", type=int, default=1, help="repeat the corpus (as distinct URLs) for a longer run")
    args = ap.parse_args()
    folder, n = build_corpus(args.copies)
    work = DATA / "work"
    shutil.rmtree(work, ignore_errors=True)
    print(f"input: {n:,} pages in {len(list(folder.glob('*.warc.gz')))} WARC files; {args.workers} workers each")

    print(f"{'':42s} {'seconds':>8s} {'docs/s':>8s} {'kept':>7s}", flush=True)
    t_dt, dt = run_datatrove(folder, work / "datatrove", args.workers)
    print(f"{'datatrove 0.10.1 (trafilatura)':42s} {t_dt:8.1f} {n / t_dt:8.1f} {dt['output']:7,d}", flush=True)
    t_as, st = run_assay(folder, work / "assay", args.workers, "trafilatura")
    print(f"{'assay recipes/fineweb.yaml (trafilatura)':42s} {t_as:8.1f} {n / t_as:8.1f} {st['output']['records']:7,d}",
          flush=True)
    t_rp, sr = run_assay(folder, work / "assay-resiliparse", args.workers, "resiliparse")
    print(f"{'assay, extract engine resiliparse':42s} {t_rp:8.1f} {n / t_rp:8.1f} {sr['output']['records']:7,d}")
    print(f"ratio assay/datatrove, same extractor:       {t_dt / t_as:.2f}x")
    print(f"ratio assay (resiliparse)/datatrove:         {t_dt / t_rp:.2f}x")
    print("datatrove stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in dt["seconds"].items()))
    print("assay step seconds (summed over workers): " +
          ", ".join(f"{s['name']} {s['seconds']:.1f}" for s in st["steps"]))


if __name__ == "__main__":
    main()

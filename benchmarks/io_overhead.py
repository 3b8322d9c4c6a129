"""I/O overhead of the Assay pipeline: a no-op recipe over ~1 GB of JSONL vs a bare orjson / pyarrow read+write of
the same data, in the same run.

    .venv/bin/python benchmarks/io_overhead.py [--gb 1.0] [--workers 1]

Prints MB/s and records/s for: bare orjson (read lines, parse, serialise, write), bare pyarrow (read_json, write
Parquet), and Assay (`assay run` machinery: shard planning, reader, Record, pipeline with no steps, writer, markers,
stats) to JSONL and to Parquet; and the ratios Assay / bare. Data is generated (web-like documents: text of varied
length plus url/date metadata) under benchmarks/_data/ and reused between runs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data" / "io"
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
         "you were her she there one all we their can has more when will would who so no data model token quality "
         "language training corpus web page article research science history music city river system").split()


def generate(path: Path, target_bytes: int, files: int = 4) -> list[Path]:
    path.mkdir(parents=True, exist_ok=True)
    paths = [path / f"docs-{k}.jsonl" for k in range(files)]
    if all(p.exists() for p in paths) and sum(p.stat().st_size for p in paths) >= target_bytes * 0.95:
        return paths
    rng = random.Random(0)
    per_file = target_bytes // files
    for k, p in enumerate(paths):
        with open(p, "wb") as f:
            written = i = 0
            while written < per_file:
                n = int(rng.lognormvariate(6.0, 0.9)) + 20
                text = " ".join(rng.choice(WORDS) for _ in range(n))
                line = orjson.dumps({"id": f"{k}-{i}", "text": text, "url": f"https://example.org/{k}/{i}",
                                     "date": "2024-06-01"}) + b"\n"
                f.write(line)
                written += len(line)
                i += 1
    return paths


def bare_orjson(paths: list[Path], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in paths:
        with open(p, "rb") as fin, open(out / p.name, "wb") as fout:
            buf = []
            for line in fin:
                obj = orjson.loads(line)
                buf.append(orjson.dumps(obj))
                n += 1
                if len(buf) >= 10000:
                    fout.write(b"\n".join(buf) + b"\n")
                    buf.clear()
            if buf:
                fout.write(b"\n".join(buf) + b"\n")
    return n


def bare_pyarrow(paths: list[Path], out: Path) -> int:
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in paths:
        t = pj.read_json(p, read_options=pj.ReadOptions(block_size=64 << 20))
        pq.write_table(t, out / (p.stem + ".parquet"), compression="zstd")
        n += t.num_rows
    return n


def assay_run(paths: list[Path], out: Path, fmt: str, workers: int) -> int:
    from assay.core.recipe import Recipe
    from assay.run.executor import LocalExecutor

    recipe = Recipe.from_dict({"name": "noop", "input": {"id_key": "id"}, "output": {"format": fmt},
                               "batch_size": 1000, "steps": []})
    stats = LocalExecutor(workers).run(recipe, [str(p) for p in paths], str(out), overwrite=True)
    return stats["output"]["records"]


def timed(fn, *args) -> tuple[float, int]:  # noqa: ANN001
    t = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    paths = generate(DATA / f"in-{args.gb:g}gb", int(args.gb * 1e9))
    mb = sum(p.stat().st_size for p in paths) / 1e6
    work = DATA / "out"
    shutil.rmtree(work, ignore_errors=True)
    print(f"input: {len(paths)} JSONL files, {mb:,.0f} MB; workers for Assay: {args.workers}; cpus: {os.cpu_count()}")
    rows = []
    t_oj, n = timed(bare_orjson, paths, work / "bare-orjson")
    rows.append(("bare orjson read+write JSONL", t_oj, n))
    t_pa, n = timed(bare_pyarrow, paths, work / "bare-pyarrow")
    rows.append(("bare pyarrow read_json+write Parquet", t_pa, n))
    t_aj, n = timed(assay_run, paths, work / "assay-jsonl", "jsonl", args.workers)
    rows.append((f"assay no-op recipe → JSONL ({args.workers} worker)", t_aj, n))
    t_ap, n = timed(assay_run, paths, work / "assay-parquet", "parquet", args.workers)
    rows.append((f"assay no-op recipe → Parquet ({args.workers} worker)", t_ap, n))
    print(f"{'':48s} {'seconds':>8s} {'MB/s':>8s} {'records/s':>10s}")
    for name, t, n in rows:
        print(f"{name:48s} {t:8.1f} {mb / t:8.1f} {n / t:10,.0f}")
    print(f"ratio assay JSONL / bare orjson:      {t_oj / t_aj:.2f}  (throughput; 1.0 = no overhead)")
    print(f"ratio assay Parquet / bare pyarrow:   {t_pa / t_ap:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

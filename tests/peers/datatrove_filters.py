"""Run datatrove 0.10.1's heuristic filters on documents: the reference Assay's filters are checked against.

Runs inside the peer venv (/work/main/.venv-peers, made by ``make peers``), never in Assay's own venv.

    .venv-peers/bin/python tests/peers/datatrove_filters.py REQUEST.json > RESPONSE.json

REQUEST: {"mode": "decide" | "bench" | "bench_chain" | "words" | "sentences", "filters": [names],
"docs": [{"id", "text", "url"?}], "language"?: "en", "url_lists"?: {URLFilter list arguments}}
filter names: gopher_quality, gopher_repetition, c4_quality, fineweb_quality, url_filter (the filter's defaults).

RESPONSE for "decide": {filter: [{"keep": bool, "reason": str|null, "text": str (c4_quality only)} or {"error": str}]};
for "bench": {filter: {"seconds": s, "docs": n, "errors": n}} timing only the filter calls, each filter on fresh
documents; for "bench_chain": {"chain": {"seconds", "docs", "kept", "errors"}}, the filters applied in sequence;
for "words": [[word, ...] or null] (datatrove's split_into_words); for "sentences": [n or null]
(split_into_sentences lengths); null/"error" where datatrove raises (spaCy rejects lone surrogates).
"""

from __future__ import annotations

import json
import sys
import time


def make_filter(name: str):
    from datatrove.pipeline import filters as f

    if name == "gopher_quality":
        return f.GopherQualityFilter()
    if name == "gopher_repetition":
        return f.GopherRepetitionFilter()
    if name == "c4_quality":
        return f.C4QualityFilter()
    if name == "fineweb_quality":
        return f.FineWebQualityFilter()
    if name == "url_filter":
        from tldextract import TLDExtract

        flt = f.URLFilter(use_integrated_lists=False, **URL_LISTS)
        flt.tldextractor = TLDExtract(suffix_list_urls=())  # offline: the snapshot bundled with tldextract
        return flt
    raise SystemExit(f"unknown filter {name!r}")


URL_LISTS: dict = {}


def result(res) -> tuple[bool, str | None]:
    if isinstance(res, tuple):
        return bool(res[0]), res[1]
    return bool(res), None


def main() -> None:
    from datatrove.data import Document

    request = json.load(open(sys.argv[1]))
    URL_LISTS.update(request.get("url_lists") or {})
    docs = request["docs"]
    mode = request.get("mode", "decide")
    language = request.get("language", "en")
    if mode in ("words", "sentences"):
        from datatrove.utils.text import split_into_sentences, split_into_words

        def split(text: str):
            try:
                return split_into_words(text, language) if mode == "words" else len(
                    split_into_sentences(text, language))
            except Exception:  # spaCy cannot encode lone surrogates
                return None

        json.dump([split(d["text"]) for d in docs], sys.stdout)
        return

    def fresh(d: dict) -> Document:
        return Document(text=d["text"], id=d["id"], metadata={"url": d["url"]} if d.get("url") else {})

    out: dict = {}
    if mode == "bench_chain":  # the filters one after the other, as in a pipeline: a dropped document stops
        filters = [make_filter(name) for name in request["filters"]]
        for flt in filters:
            flt.filter(fresh({"id": "warm-up", "text": "Warm up. " * 20, "url": "https://example.com/"}))
        batch = [fresh(d) for d in docs]
        kept = errors = 0
        t0 = time.perf_counter()
        for doc in batch:
            try:
                if all(result(flt.filter(doc))[0] for flt in filters):
                    kept += 1
            except Exception:  # spaCy cannot encode lone surrogates
                errors += 1
        out["chain"] = {"seconds": time.perf_counter() - t0, "docs": len(batch), "kept": kept, "errors": errors}
        json.dump(out, sys.stdout)
        return
    for name in request["filters"]:
        flt = make_filter(name)
        batch = [fresh(d) for d in docs]
        # warm up (load the spaCy tokenizer, lists) outside the timed loop
        flt.filter(fresh({"id": "warm-up", "text": "Warm up. " * 20, "url": "https://example.com/"}))
        if mode == "bench":
            errors = 0
            t0 = time.perf_counter()
            for doc in batch:
                try:
                    flt.filter(doc)
                except Exception:  # spaCy cannot encode lone surrogates
                    errors += 1
            out[name] = {"seconds": time.perf_counter() - t0, "docs": len(batch), "errors": errors}
        else:
            rows = []
            for doc in batch:
                try:
                    keep, reason = result(flt.filter(doc))
                except Exception as e:  # spaCy cannot encode lone surrogates
                    rows.append({"error": f"{type(e).__name__}: {e}"[:200]})
                    continue
                row = {"keep": keep, "reason": reason}
                if name == "c4_quality":
                    row["text"] = doc.text
                rows.append(row)
            out[name] = rows
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

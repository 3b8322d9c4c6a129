"""Run datatrove 0.10.1's heuristic filters on documents: the reference Assay's filters are checked against.

Runs inside the peer venv (/work/main/.venv-peers, made by ``make peers``), never in Assay's own venv.

    .venv-peers/bin/python tests/peers/datatrove_filters.py REQUEST.json > RESPONSE.json

REQUEST: {"mode": "decide" | "bench" | "words" | "sentences", "filters": [names], "docs": [{"id", "text", "url"?}]}
filter names: gopher_quality, gopher_repetition, c4_quality, fineweb_quality, url_filter (the filter's defaults).

RESPONSE for "decide": {filter: [{"keep": bool, "reason": str|null, "text": str (c4_quality only)}]};
for "bench": {filter: {"seconds": s, "docs": n}} timing only the filter calls, each filter on fresh documents;
for "words": [[word, ...]] (datatrove's split_into_words); for "sentences": [n] (split_into_sentences lengths).
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
    if mode == "words":
        from datatrove.utils.text import split_into_words

        json.dump([split_into_words(d["text"], "en") for d in docs], sys.stdout)
        return
    if mode == "sentences":
        from datatrove.utils.text import split_into_sentences

        json.dump([len(split_into_sentences(d["text"], "en")) for d in docs], sys.stdout)
        return

    def fresh(d: dict) -> Document:
        return Document(text=d["text"], id=d["id"], metadata={"url": d["url"]} if d.get("url") else {})

    out: dict = {}
    for name in request["filters"]:
        flt = make_filter(name)
        batch = [fresh(d) for d in docs]
        # warm up (load the spaCy tokenizer, lists) outside the timed loop
        flt.filter(fresh(docs[0])) if docs else None
        if mode == "bench":
            t0 = time.perf_counter()
            for doc in batch:
                flt.filter(doc)
            out[name] = {"seconds": time.perf_counter() - t0, "docs": len(batch)}
        else:
            rows = []
            for doc in batch:
                keep, reason = result(flt.filter(doc))
                row = {"keep": keep, "reason": reason}
                if name == "c4_quality":
                    row["text"] = doc.text
                rows.append(row)
            out[name] = rows
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""The real-document corpus shared by the filter benchmark and the datatrove agreement test.

Plain texts extracted from HTML that is on this machine: Debian's python3-doc and postgresql-doc-15 pages (PSF and
PostgreSQL licenses) and the 181 news pages of /work/shared/data/web-articles (evaluation use only), plus a few
texts written to trip each rule. Extraction happens once per extractor and is cached under ``benchmarks/_data``
(git-ignored) because trafilatura needs ~0.1 s a page.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

HTML_SOURCES = {
    "python-doc": Path("/usr/share/doc/python3.11/html"),
    "postgresql-doc": Path("/usr/share/doc/postgresql-doc-15/html"),
    "web-articles": Path(__file__).resolve().parents[2] / "shared" / "data" / "web-articles" / "html",
}
CACHE_DIR = Path(__file__).resolve().parent / "_data"


def html_files() -> list[tuple[str, Path]]:
    """(source name, path) of every HTML page available on this machine, in a stable order."""
    out = []
    for name, root in HTML_SOURCES.items():
        if root.exists():
            out += [(name, p) for p in sorted(root.rglob("*.html"))]
            out += [(name, p) for p in sorted(root.rglob("*.html.gz"))]
    return out


def _read_html(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


def extract(html: str, extractor: str) -> str:
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True)
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html, favor_precision=True) or ""
    raise ValueError(f"unknown extractor {extractor!r}")


def real_documents(extractor: str = "resiliparse", cache: bool = True) -> list[dict]:
    """[{"id", "source", "text"}] for every page with non-empty extracted text."""
    cache_file = CACHE_DIR / f"filter_corpus_{extractor}.jsonl"
    if cache and cache_file.exists():
        return [json.loads(line) for line in cache_file.read_text().splitlines()]
    docs = []
    for source, path in html_files():
        text = extract(_read_html(path), extractor)
        if text.strip():
            docs.append({"id": f"{source}:{path.name}", "source": source, "text": text})
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        tmp.replace(cache_file)
    return docs

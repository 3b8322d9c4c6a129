"""Real web pages with a known main text, for the tests that measure extraction, classifiers, dedup and the lab on
real documents: the HTML manuals Debian's ``python3-doc`` (Sphinx) and ``postgresql-doc-15`` (DocBook) install.

Ground truth comes from the authors' own markup, not from a heuristic: the main text of a Sphinx page is its
``<div role="main">``, of a DocBook page its ``<body>`` without the navigation header and footer. That region is
turned into text with Resiliparse's plain renderer (``main_content=False``: no selection at all), so the truth and
a page's whole text share one line layout. Index, search, table-of-contents-only and very short pages are left out.

The manuals are system packages (`make system-deps` installs them as root); without them, tests that need them fail
with a message that says so, never skip. They are read from /usr/share/doc at test time: nothing is copied into the
repository (see tests/data/README.md).
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import orjson
import pytest

PY_DOCS = Path("/usr/share/doc/python3.11/html")
PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
MANUALS = {  # name -> (folder, glob, public URL of the folder)
    "python": (PY_DOCS, "**/*.html", "https://docs.python.org/3.11/"),
    "postgresql": (PG_DOCS, "*.html", "https://www.postgresql.org/docs/15/"),
}
_SKIP_NAMES = ("genindex", "search.html", "py-modindex", "contents.html", "index.html", "bookindex.html",
               "download.html")
MIN_WORDS = 80


def require_debian_docs() -> tuple[Path, Path]:
    """The two manuals' folders; fails the calling test with what to install when they are missing."""
    missing = [str(folder) for folder, _, _ in MANUALS.values() if not folder.is_dir()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make system-deps` as root "
                    f"(or `apt-get install python3-doc postgresql-doc-15`)", pytrace=False)
    return PY_DOCS, PG_DOCS


def _text(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(html), main_content=False)


def _main_html(html: bytes, manual: str) -> str | None:
    """The HTML of the page's main region, or None for pages without one / that are mostly links."""
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    if manual == "python":
        found = doc.xpath("//div[@role='main']")
        if not found:
            return None
        main = found[0]
    else:
        body = doc.find("body")
        if body is None:
            return None
        for nav in body.xpath("./div[@class='navheader' or @class='navfooter']"):
            body.remove(nav)
        main = body
    text_len = len(main.text_content())
    link_len = sum(len(a.text_content()) for a in main.iter("a"))
    if text_len == 0 or link_len > 0.4 * text_len:  # a table of contents, not an article
        return None
    return lxml.html.tostring(main, encoding="unicode")


@functools.lru_cache(maxsize=None)
def _page(manual: str, path: Path) -> dict | None:
    folder, _, base_url = MANUALS[manual]
    raw = path.read_bytes()
    main = _main_html(raw, manual)
    if main is None:
        return None
    body = _text(main)
    if len(body.split()) < MIN_WORDS:
        return None
    rel = path.relative_to(folder).as_posix()
    section = rel.split("/")[0].removesuffix(".html") if "/" in rel else rel.split("-")[0].removesuffix(".html")
    return {"key": f"{manual}-{rel.removesuffix('.html').replace('/', '-')}", "url": base_url + rel,
            "site": f"{manual}/{section}", "html": raw.decode("utf-8", "replace"), "articleBody": body}


def article_pages(per_manual: int = 90) -> list[dict]:
    """Up to ``per_manual`` pages of each manual, spread evenly over it (the same pages on every machine with the
    same packages): ``{"key", "url", "site", "html", "articleBody"}``, sorted by key."""
    require_debian_docs()
    pages = []
    for manual, (folder, pattern, _) in MANUALS.items():
        files = [p for p in sorted(folder.glob(pattern)) if not p.name.startswith(_SKIP_NAMES)]
        files = files[::max(1, len(files) // (2 * per_manual))]  # about half the pages are usable: parse no more
        usable = [page for page in (_page(manual, p) for p in files) if page is not None]
        step = max(1, len(usable) // per_manual)
        pages += usable[::step][:per_manual]
    return sorted(pages, key=lambda p: p["key"])


def article_bodies(per_manual: int = 90) -> list[str]:
    return [p["articleBody"] for p in article_pages(per_manual)]


def write_article_set(folder: Path, per_manual: int = 90) -> Path:
    """The pages in the layout of scrapinghub's article-extraction-benchmark, which benchmarks/ read:
    ``html/KEY.html.gz`` and ``ground-truth.json`` (``{KEY: {"articleBody", "url", "site"}}``)."""
    (folder / "html").mkdir(parents=True, exist_ok=True)
    truth = {}
    for p in article_pages(per_manual):
        (folder / "html" / f"{p['key']}.html.gz").write_bytes(gzip.compress(p["html"].encode(), mtime=0))
        truth[p["key"]] = {"articleBody": p["articleBody"], "url": p["url"], "site": p["site"]}
    (folder / "ground-truth.json").write_bytes(orjson.dumps(truth))
    return folder

"""Build the bundled demo sample: pages of the Python 3.11 documentation (PSF License), as Debian's python3.11-doc
package installs them, packed into four small WARC.gz files as if crawled from docs.python.org.

    apt-get install python3-doc && python scripts/build_sample.py

Deterministic: same pages, same record ids and dates on every build.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from assay.io.warc import warc_response, write_warc_gz

SRC = Path("/usr/share/doc/python3.11/html")
OUT = Path(__file__).resolve().parents[1] / "samples" / "python-docs"
SECTIONS = ["tutorial", "howto", "faq", "using", "reference", "library", "installing", "distributing"]
MAX_PAGE_BYTES = 120_000  # keep the sample small
MAX_PAGES = 320
FILES = 4


def main() -> None:
    if not SRC.exists():
        sys.exit(f"{SRC} not found: apt-get install python3-doc")
    pages: list[Path] = []
    for sec in SECTIONS:
        for p in sorted((SRC / sec).glob("*.html")):
            if p.stat().st_size <= MAX_PAGE_BYTES:
                pages.append(p)
    # a few real low-quality pages (index listings) and the same page under a second URL (a mirror), as crawls have
    pages = pages[: MAX_PAGES - 6] + [SRC / "genindex-Q.html", SRC / "genindex-X.html", SRC / "py-modindex.html",
                                      SRC / "search.html", SRC / "tutorial" / "index.html", SRC / "faq" / "index.html"]
    date = datetime(2024, 6, 1, tzinfo=timezone.utc)
    records: list[list[bytes]] = [[] for _ in range(FILES)]
    for i, p in enumerate(pages):
        rel = p.relative_to(SRC).as_posix()
        url = f"https://docs.python.org/3.11/{rel}"
        if i >= len(pages) - 2:  # the mirror copies
            url = f"https://mirror.example.org/python-docs/3.11/{rel}"
        rid = f"<urn:uuid:00000000-0000-4000-8000-{i:012d}>"
        records[i % FILES].append(warc_response(url, p.read_bytes(), date=date, record_id=rid))
    OUT.mkdir(parents=True, exist_ok=True)
    for k, recs in enumerate(records):
        write_warc_gz(str(OUT / f"python-docs-{k:02d}.warc.gz"), recs)
    print(f"{len(pages)} pages → {OUT}")


if __name__ == "__main__":
    main()

"""The texts on which Assay's quality filters are compared with datatrove's (test and benchmark share them).

Real pages: the HTML of Debian's ``python3-doc`` and ``postgresql-doc-15`` (``make system-deps`` installs them);
their text is extracted once (Resiliparse main-content mode by default, ~2 ms a page;
trafilatura on request, ~70 ms a page, cached under ``benchmarks/_data``), so both implementations see identical
input. Plus hand-written texts that each trip one rule (short, bullet-heavy, repetitive, lorem ipsum, curly brackets,
non-English, ...).

Runs in the main venv (it needs the extractors); the peer venv only receives the texts as JSON.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = ROOT / "benchmarks" / "_data"
HTML_SOURCES = {
    "python-doc": (Path("/usr/share/doc/python3.11/html"), "**/*.html"),
    "postgresql-doc": (Path("/usr/share/doc/postgresql-doc-15/html"), "*.html"),
}


def available_sources() -> dict[str, list[Path]]:
    """Source name → HTML files, for the sources present on this machine."""
    found = {}
    for name, (folder, pattern) in HTML_SOURCES.items():
        files = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if files:
            found[name] = files
    return found


def extract(html: bytes, extractor: str = "resiliparse") -> str:
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        return extract_plain_text(HTMLTree.parse_from_bytes(html), main_content=True)
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html) or ""
    raise ValueError(f"unknown extractor {extractor!r}")


def real_texts(extractor: str = "resiliparse", every: int = 1, cache: bool = False) -> list[dict]:
    """``[{"id", "text"}]`` extracted from every ``every``-th page of each available source (non-empty texts only).
    ``cache`` keeps the extracted texts in ``benchmarks/_data`` (worth it for trafilatura)."""
    cache_file = CACHE_DIR / f"filters_corpus_{extractor}_{every}.jsonl"
    if cache and cache_file.exists():
        return [json.loads(line) for line in cache_file.read_text().splitlines()]
    docs = []
    for name, files in available_sources().items():
        root = HTML_SOURCES[name][0]
        for path in files[::every]:
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            text = extract(raw, extractor)
            if text.strip():
                docs.append({"id": f"{name}/{path.relative_to(root)}", "text": text})
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(d) + "\n" for d in docs))
        tmp.replace(cache_file)
    return docs


_SENTENCE = "The quick brown fox jumps over the lazy dog and then it runs to the river with the other animals."


def crafted_texts() -> list[dict]:
    """Texts built to trip (or pass) one rule each."""
    good = "\n".join(f"{_SENTENCE} This is sentence number {i} of a perfectly ordinary paragraph." for i in range(12))
    cases = {
        "good": good,
        "empty": "",
        "whitespace": "  \n\n \t ",
        "short": "Too short to be a document. It has the words the and of.",
        "bullets": "\n".join(f"- item {i} of the list with some words" for i in range(60)),
        "bullets_unicode": "\n".join(f"• the point {i} is that of the list" for i in range(60)),
        "ellipsis_lines": "\n".join(f"The story of the day number {i} goes on and on..." for i in range(40)),
        "hashes": " ".join(f"#tag{i} the word of the day" for i in range(80)),
        "repeated_lines": "\n".join([_SENTENCE] * 30 + [good]),
        "repeated_paragraphs": "\n\n".join([good] * 4),
        "repeated_ngrams": " ".join(["the cat sat on the mat and the dog"] * 40),
        "lorem": good + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
        "curly": good + "\nThe function body is { return x; } and that is the end of it.",
        "javascript": good + "\nPlease enable JavaScript in your browser to see the rest of this site.",
        "policy": good + "\nBy using this site you agree to our terms of use and privacy policy.",
        "citations": good.replace("paragraph.", "paragraph.[1]") + "\nSee the notes [edit] below for the rest.",
        "long_word": good + "\n" + "x" * 1200 + " is a very long word in this line.",
        "numbers": " ".join(str(i) for i in range(400)),
        "symbols": " ".join("+ - * / = < > | ~ ^" for _ in range(40)) + " " + _SENTENCE,
        "short_lines": "\n".join(f"Line {i}." for i in range(80)) + "\n" + _SENTENCE,
        "no_punct": "\n".join(f"the list of the things number {i} in a row" for i in range(40)),
        "contractions": " ".join(["I don't think it's what they'd've wanted, y'all can't say we're done."] * 20),
        "urls_code": " ".join(["See https://example.com/a?b=c and os.path.join(a, b) or e.g. U.S. Ph.D. 3.5% $10."]
                              * 20),
        "german": " ".join(["Der schnelle braune Fuchs springt über den faulen Hund und läuft zum Fluss."] * 10),
        "chinese": "敏捷的棕色狐狸跳过了懒狗。" * 40,
        "mixed_scripts": " ".join(["Привет мир, это тест. Hello world, this is a test. مرحبا بالعالم"] * 15),
        "control_chars": ("Some text with \x00 nulls \x07 and \x1b escapes in the line of the day. " * 20),
        "lone_surrogate": "The word \ud800 broken and the rest of the text is fine. " * 20,
        "crlf": "\r\n".join(f"{_SENTENCE} Line {i} ends with CRLF." for i in range(10)),
        "newline_heavy": "\n\n\n".join(f"word{i}" for i in range(100)),
    }
    return [{"id": f"crafted/{k}", "text": v} for k, v in cases.items()]


PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().with_name("datatrove_filters.py")


def run_datatrove(request: dict, timeout: float = 1200) -> object:
    """Send ``request`` to tests/peers/datatrove_filters.py in the peer venv and return its JSON answer."""
    import os
    import subprocess
    import tempfile

    if not PEER_PYTHON.exists():
        raise RuntimeError(f"the datatrove peer venv {PEER_PYTHON.parent.parent} is missing: run `make peers`")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)  # stdlib json escapes lone surrogates (orjson refuses them)
    try:
        out = subprocess.run([str(PEER_PYTHON), str(PEER_SCRIPT), f.name], capture_output=True, text=True,
                             timeout=timeout)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise RuntimeError(f"datatrove peer script failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)

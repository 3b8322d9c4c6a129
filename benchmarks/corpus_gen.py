"""A large, realistic WARC.gz crawl built from the real HTML and prose on this machine, with planted near-duplicates.

    .venv/bin/python benchmarks/corpus_gen.py --docs 1000000 [--seed 0] [--workers 2]

Sources (whatever is installed): the HTML manuals under /usr/share/doc (python3-doc, postgresql-doc-15, nodejs,
valgrind, libxslt, ... every ``*.html``), the article bodies of ../shared/data/web-articles, and, for non-English
pages, the translated manual pages under /usr/share/man/{de,fr,es,it,pt,nl,pl,ru} (real prose, roff stripped).
Their paragraphs form a pool; each page of the crawl is a *composite*: 4–14 paragraphs drawn from the pool (so two
pages share almost nothing by chance), shuffled, wrapped in one of several site templates (navigation, sidebar,
cookie banner, share buttons, footer, inline CSS/JS from the same machine: boilerplate the extractor must remove).

The mix, per *origin* page (shares are of origins; planted copies come on top):

* English articles (most), non-English pages (8%), language-mixed pages (5%: English with a third to a half of the
  paragraphs in another language), low-quality pages (12%: one short paragraph, the same paragraph repeated,
  link lists, bullet lists), pages on a blocklisted host (0.3%);
* **planted near-duplicate clusters**: 10% of the English origins get 1–5 copies, each on another site (another
  template and URL) and lightly edited (a paragraph dropped or two swapped, a few words changed, a dateline added),
  kept only if the word 5-gram Jaccard of its paragraphs' text with the original's is >= 0.8;
* **related pages** (hard negatives): 3% of origins get a page sharing about a third of their paragraphs
  (Jaccard <= 0.5), which a dedup must keep apart.

Every page has a distinct URL. The truth goes to ``truth.jsonl.gz`` beside the WARC files, one line a page:
``url``, ``file``, ``cluster`` (pages with the same cluster are planted near-duplicates; every other page is its own
cluster), ``kind``, ``lang``, ``jaccard`` (with the cluster's original). Pages are spread over ``files`` WARC files in a
global shuffle, so a cluster's members sit in different files (shards), as in a crawl; the first 10% / 50% of the
files are a 10% / 50% sample of the corpus.

Generation is deterministic for a (docs, seed) pair and runs one process per core over the files; the output folder
``benchmarks/_data/scale/d{docs}-s{seed}/`` is reused when complete (``_done``).
"""

from __future__ import annotations

import argparse
import gzip
import html as htmllib
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "_data" / "scale"
SHARED = ROOT.parent / "shared" / "data"
MAN_LANGS = ["de", "fr", "es", "it", "pt", "nl", "pl", "ru"]
DOCS_PER_FILE = 5000
MIN_FILES = 20

# origin kinds and their shares (the rest is "en")
SHARES = {"foreign": 0.08, "mixed": 0.05, "short": 0.03, "repeated": 0.03, "links": 0.03, "bullets": 0.03,
          "blocked": 0.003}
CLUSTER_SHARE = 0.10  # of English origins: planted near-duplicate clusters
RELATED_SHARE = 0.03  # of English origins: one related (distinct) page
MIN_CLUSTER_JACCARD = 0.8
MAX_RELATED_JACCARD = 0.5

_TAG = re.compile(r"<[^>]+>")
_P = re.compile(rb"<p\b[^>]*>(.*?)</p>", re.S | re.I)
_WS = re.compile(r"\s+")


# -- the pools -------------------------------------------------------------------------------------------------
def _text_of(inner: str) -> str:
    return _WS.sub(" ", htmllib.unescape(_TAG.sub("", inner))).strip()


def html_sources() -> list[Path]:
    return sorted(p for p in Path("/usr/share/doc").rglob("*.html") if p.is_file())


def english_paragraphs(min_words: int = 8, paths: list[Path] | None = None) -> list[str]:
    """Inner HTML of the ``<p>`` elements of every HTML manual on this machine (or of ``paths``) plus the shared
    articles' paragraphs, exact duplicates removed, in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []

    def add(inner: str) -> None:
        inner = _WS.sub(" ", inner).strip()
        text = _text_of(inner)
        if len(text.split()) >= min_words and text not in seen:
            seen.add(text)
            out.append(inner)

    for path in html_sources() if paths is None else paths:
        raw = path.read_bytes()
        for m in _P.finditer(raw):
            add(m.group(1).decode("utf-8", "replace"))
    truth = SHARED / "web-articles" / "ground-truth.json"
    if truth.exists():
        for _, v in sorted(json.loads(truth.read_text()).items()):
            for para in v.get("articleBody", "").split("\n"):
                add(htmllib.escape(para))
    return out


_ROFF_ESC = re.compile(r"\\f[BIRPC]|\\f\(..|\\\*\(..|\\\(..|\\[&|^~%]|\\s[-+]?\d")


def _man_paragraphs(path: Path, min_words: int) -> list[str]:
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error):
        return []
    paras, cur = [], []
    for line in text.splitlines():
        if line.startswith((".", "'")) or not line.strip():
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(_ROFF_ESC.sub("", line).replace("\\-", "-").replace("\\e", "\\").strip())
    if cur:
        paras.append(" ".join(cur))
    return [htmllib.escape(p) for p in paras if len(p.split()) >= min_words]


def foreign_paragraphs(min_words: int = 8) -> dict[str, list[str]]:
    """Language code → paragraphs of the translated manual pages installed under /usr/share/man/<lang>."""
    out = {}
    for lang in MAN_LANGS:
        folder = Path("/usr/share/man") / lang
        paras: list[str] = []
        seen: set[str] = set()
        for p in sorted(folder.rglob("*.gz")) if folder.is_dir() else []:
            for para in _man_paragraphs(p, min_words):
                if para not in seen:
                    seen.add(para)
                    paras.append(para)
        if len(paras) >= 50:
            out[lang] = paras
    return out


def static_assets(per_kind: int = 6) -> list[tuple[str, str]]:
    """Real CSS and JS from this machine, inlined into the templates as pages do."""
    out = []
    for kind, found in (("style", sorted(Path("/usr/share/doc").rglob("*.css"))),
                        ("script", sorted(Path("/usr/share/javascript").rglob("*.js")))):
        n = 0
        for p in found:
            try:
                s = p.read_text("utf-8", "replace")
            except OSError:
                continue
            if len(s) >= 500 and n < per_kind:
                out.append((kind, s[:12000].replace("</", "<\\/")))
                n += 1
    return out


# -- templates ---------------------------------------------------------------------------------------------------
NAV_WORDS = ["Home", "News", "World", "Business", "Technology", "Science", "Health", "Sport", "Culture", "Opinion",
             "Travel", "Guides", "Reference", "Tutorials", "Downloads", "Community", "Blog", "About", "Contact",
             "Careers", "Events", "Support", "Pricing", "Docs", "API", "Forum", "Archive", "Podcasts", "Video"]
BOILER = [
    "We use cookies to improve your experience on our site. By continuing to browse you agree to our use of "
    "cookies. <a href='/privacy'>Privacy policy</a>",
    "Sign up for our newsletter to get the latest stories delivered to your inbox. Unsubscribe at any time.",
    "Share this: <a href='#'>Facebook</a> <a href='#'>Twitter</a> <a href='#'>LinkedIn</a> <a href='#'>Email</a>",
    "Copyright &copy; 2024 All rights reserved. Reproduction without written permission is prohibited.",
    "Advertisement",
    "Related articles: <a href='#'>Ten things to know</a> <a href='#'>Read more</a> <a href='#'>Most popular</a>",
]
SITE_WORDS = ["daily", "tech", "open", "dev", "news", "guide", "wiki", "notes", "press", "journal", "hub", "lab",
              "digest", "report", "works", "forge", "post", "times", "review", "central"]
TLDS = {"en": ["com", "org", "net", "io", "co.uk"], "de": ["de", "at"], "fr": ["fr", "be"], "es": ["es", "mx"],
        "it": ["it"], "pt": ["pt", "com.br"], "nl": ["nl"], "pl": ["pl"], "ru": ["ru"]}


@dataclass
class Pools:
    en: list[str]
    foreign: dict[str, list[str]]
    assets: list[tuple[str, str]]
    blocked_hosts: list[str]


def _site(rng: random.Random, lang: str) -> tuple[str, int]:
    host = f"www.{rng.choice(SITE_WORDS)}{rng.choice(SITE_WORDS)}{rng.randrange(1000)}.{rng.choice(TLDS[lang])}"
    return host, rng.randrange(6)


def render(pools: Pools, title: str, body_html: str, template: int, rng: random.Random, lang: str) -> bytes:
    """A page: head with inline assets, navigation, main content, sidebar, footer; layout depends on ``template``."""
    nav = " ".join(f"<li><a href='/{w.lower()}/'>{w}</a></li>" for w in rng.sample(NAV_WORDS, 8 + template * 2))
    parts = [f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'><title>{title}</title>"]
    for k in range(2 if pools.assets else 0):  # a stylesheet and a script inlined, as many sites do
        kind, src = pools.assets[(template * 7 + k * 5 + rng.randrange(3)) % len(pools.assets)]
        parts.append(f"<{kind}>{src}</{kind}>")
    parts.append("</head><body>")
    if template % 2 == 0:
        parts.append(f"<div class='cookie-banner'>{BOILER[0]}</div>")
    parts.append(f"<header><div class='logo'>Site {template}</div><nav><ul>{nav}</ul></nav></header>")
    parts.append(f"<main><article><h1>{title}</h1>")
    if template in (1, 4):
        parts.append(f"<div class='share'>{BOILER[2]}</div>")
    parts.append(body_html)
    parts.append("</article>")
    if template % 3 == 0:
        parts.append(f"<aside><h3>Most read</h3><ul>{nav}</ul><p class='ad'>{BOILER[4]}</p></aside>")
    parts.append(f"</main><div class='newsletter'>{BOILER[1]}</div><div class='related'>{BOILER[5]}</div>")
    parts.append(f"<footer><p>{BOILER[3]}</p><ul>{nav}</ul></footer></body></html>")
    return "".join(parts).encode("utf-8")


def _title(inner: str) -> str:
    words = _text_of(inner).split()[:7]
    return htmllib.escape(" ".join(words).rstrip(".,;:"))


# -- the plan: which page is what ---------------------------------------------------------------------------------
def plan(docs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(origin, variant)`` per page, globally shuffled. variant 0 = the origin page itself, 1..5 = planted copies,
    -1 = the origin's related page. The kind of an origin is a function of (seed, origin) alone (:func:`origin_kind`),
    so any process can render any page."""
    origins, variants = [], []
    o = 0
    n = 0
    while n < docs:
        origins.append(o)
        variants.append(0)
        n += 1
        kind, extra, related = origin_kind(seed, o)
        for v in range(1, extra + 1):
            if n >= docs:
                break
            origins.append(o)
            variants.append(v)
            n += 1
        if related and n < docs:
            origins.append(o)
            variants.append(-1)
            n += 1
        o += 1
    order = np.random.default_rng(seed).permutation(len(origins))
    return np.asarray(origins, np.int64)[order], np.asarray(variants, np.int8)[order]


def origin_kind(seed: int, origin: int) -> tuple[str, int, bool]:
    """(kind, number of planted copies, has a related page) of an origin."""
    rng = random.Random(seed * 1_000_003 + origin)
    u = rng.random()
    kind = "en"
    acc = 0.0
    for k, share in SHARES.items():
        acc += share
        if u < acc:
            kind = k
            break
    extra, related = 0, False
    if kind == "en":
        v = rng.random()
        if v < CLUSTER_SHARE:
            extra = min(5, 1 + int(rng.expovariate(0.8)))
        elif v < CLUSTER_SHARE + RELATED_SHARE:
            related = True
    return kind, extra, related


def _jaccard(a: list[str], b: list[str]) -> float:
    from assay.harvest.dedup.evaluation import jaccard

    return jaccard(" ".join(_text_of(x) for x in a), " ".join(_text_of(x) for x in b))


def _edit_words(inner: str, rng: random.Random, n: int) -> str:
    words = inner.split(" ")
    for _ in range(n):
        i = rng.randrange(len(words))
        if "<" not in words[i] and ">" not in words[i]:
            words[i] = rng.choice(["new", "updated", "the", "a", "various", "several", "important", "this"])
    return " ".join(words)


def page(pools: Pools, seed: int, origin: int, variant: int) -> tuple[str, bytes, dict]:
    """(url, html, truth) of one page."""
    kind, _, _ = origin_kind(seed, origin)
    rng = random.Random(f"page/{seed}/{origin}")
    lang = "en"
    k = rng.randint(4, 14)
    paras = [rng.choice(pools.en) for _ in range(k)]
    if kind in ("foreign", "mixed") and pools.foreign:
        lang = rng.choice(sorted(pools.foreign))
        other = pools.foreign[lang]
        if kind == "foreign":
            paras = [rng.choice(other) for _ in range(k)]
        else:
            for i in rng.sample(range(k), max(1, round(k * rng.uniform(0.33, 0.5)))):
                paras[i] = rng.choice(other)
    host, template = _site(rng, "en" if kind == "mixed" else lang)
    page_lang = lang
    if kind == "mixed":
        lang, page_lang = f"en+{lang}", "en"
    body_kind = "p"
    if kind == "short":
        paras = paras[:1]
    elif kind == "repeated":
        paras = [paras[0]] * rng.randint(5, 12)
    elif kind == "links":
        body_kind = "links"
    elif kind == "bullets":
        body_kind = "ul"
    elif kind == "blocked" and pools.blocked_hosts:
        host = rng.choice(pools.blocked_hosts)
    title = _title(paras[0])
    slug = "-".join(_text_of(paras[0]).lower().split()[:4])
    slug = re.sub(r"[^a-z0-9-]", "", slug)[:40] or "page"
    cluster = f"o{origin}"
    truth_kind = kind
    sim = 1.0
    if variant > 0:  # a planted near-duplicate: another site, light edits
        vr = random.Random(seed * 7_000_001 + origin * 8 + variant)
        host, template = _site(vr, page_lang)
        for strength in (1.0, 0.5, 0.0):
            edited = list(paras)
            ops = []
            if strength and len(edited) >= 7 and vr.random() < 0.4 * strength:
                edited.pop(vr.randrange(len(edited)))
                ops.append("drop_paragraph")
            if strength and len(edited) >= 3 and vr.random() < 0.5:
                i = vr.randrange(len(edited) - 1)
                edited[i], edited[i + 1] = edited[i + 1], edited[i]
                ops.append("swap_paragraphs")
            j = vr.randrange(len(edited))
            edited[j] = _edit_words(edited[j], vr, 1 + int(3 * strength))
            ops.append("word_edits")
            if strength and vr.random() < 0.5:
                edited.insert(0, f"Updated {vr.randint(1, 28)} {vr.choice(['March', 'June', 'May'])} 2024.")
                ops.append("dateline")
            sim = _jaccard(paras, edited)
            if sim >= MIN_CLUSTER_JACCARD:
                break
        else:  # even one changed word is too much for a short page: the same text on another site
            edited, ops, sim = list(paras), ["same_text"], 1.0
        paras = edited
        truth_kind = "copy:" + "+".join(ops)
    elif variant < 0:  # related: shares about a third of the paragraphs, the rest new
        vr = random.Random(seed * 9_000_011 + origin)
        keep = set(vr.sample(range(len(paras)), max(1, len(paras) // 3)))
        new = [p if i in keep else vr.choice(pools.en) for i, p in enumerate(paras)]
        sim = _jaccard(paras, new)
        paras = new
        host, template = _site(vr, page_lang)
        cluster = f"r{origin}"
        truth_kind = "related"
    if body_kind == "links":
        body = "<ul>" + "".join(f"<li><a href='/{i}'>{_title(p)}</a></li>" for i, p in enumerate(paras * 3)) + "</ul>"
    elif body_kind == "ul":
        body = "<ul>" + "".join(f"<li>{_title(p)}</li>" for p in paras * 2) + "</ul><p>" + paras[0] + "</p>"
    else:
        body = "".join(f"<p>{p}</p>" for p in paras)
    url = f"https://{host}/{rng.choice(['article', 'docs', 'blog', 'news', 'wiki'])}/{slug}-{origin}"
    url += f"-{variant}.html" if variant else ".html"
    return url, render(pools, title, body, template, rng, page_lang), {"cluster": cluster, "kind": truth_kind,
                                                                   "lang": lang, "jaccard": round(sim, 4)}


# -- writing ------------------------------------------------------------------------------------------------------
_POOLS: Pools | None = None


def load_pools(paths: list[Path] | None = None, min_paragraphs: int = 1000) -> Pools:
    en = english_paragraphs(paths=paths)
    if len(en) < min_paragraphs:
        sys.exit(f"only {len(en)} English paragraphs found under /usr/share/doc: apt-get install python3-doc "
                 "postgresql-doc-15 (make system-deps)")
    from assay.harvest.filters.url import DEFAULT_LISTS, read_list_file

    blocked, section = [], None
    for line in read_list_file(DEFAULT_LISTS):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "domains":
            blocked.append(line)
    return Pools(en, foreign_paragraphs(), static_assets(), blocked)


def _init(pools: Pools) -> None:
    global _POOLS
    _POOLS = pools


def _write_file(job: tuple[str, int, int, np.ndarray, np.ndarray]) -> tuple[int, int, list[dict]]:
    from assay.io.warc import warc_response

    path, seed, file_no, origins, variants = job
    date = datetime(2024, 6, 1, tzinfo=timezone.utc)
    truth = []
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for o, v in zip(origins.tolist(), variants.tolist()):
            url, html, t = page(_POOLS, seed, o, v)
            rid = f"<urn:uuid:{uuid.UUID(int=zlib.crc32(url.encode()) << 64 | (o << 8) | (v & 0xFF))}>"
            f.write(gzip.compress(warc_response(url, html, date=date, record_id=rid), compresslevel=6, mtime=0))
            truth.append({"url": url, "file": os.path.basename(path), **t})
    os.replace(tmp, path)
    return len(truth), os.path.getsize(path), truth


def n_files(docs: int) -> int:
    return max(MIN_FILES, math.ceil(docs / DOCS_PER_FILE / 10) * 10)


def build(docs: int, seed: int = 0, workers: int = 2, out: Path | None = None, quiet: bool = False,
          pools: Pools | None = None) -> Path:
    """Generate (or reuse) the corpus; returns its folder."""
    folder = out or DATA / f"d{docs}-s{seed}"
    if (folder / "_done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pools = pools or load_pools()
    if not quiet:
        print(f"pools: {len(pools.en):,} English paragraphs, "
              + ", ".join(f"{k} {len(v):,}" for k, v in pools.foreign.items())
              + f"; {len(pools.assets)} CSS/JS assets ({time.perf_counter() - t0:.1f} s)", flush=True)
    origins, variants = plan(docs, seed)
    files = n_files(docs)
    jobs = [(str(folder / f"pages-{k:04d}.warc.gz"), seed, k, origins[k::files], variants[k::files])
            for k in range(files)]
    total_bytes = 0
    with gzip.open(folder / "truth.jsonl.gz.tmp", "wt") as tf:
        if workers > 1:
            ctx = mp.get_context("fork")
            with ctx.Pool(workers, initializer=_init, initargs=(pools,)) as pool:
                results = pool.imap(_write_file, jobs)
                for k, (n, size, truth) in enumerate(results):
                    total_bytes += size
                    tf.writelines(json.dumps(t) + "\n" for t in truth)
                    if not quiet and (k + 1) % max(1, files // 10) == 0:
                        print(f"  {k + 1}/{files} files, {total_bytes / 1e9:.2f} GB, "
                              f"{time.perf_counter() - t0:.0f} s", flush=True)
        else:
            _init(pools)
            for job in jobs:
                n, size, truth = _write_file(job)
                total_bytes += size
                tf.writelines(json.dumps(t) + "\n" for t in truth)
    os.replace(folder / "truth.jsonl.gz.tmp", folder / "truth.jsonl.gz")
    summary = {"docs": int(len(origins)), "files": files, "bytes": total_bytes, "seed": seed,
               "seconds": round(time.perf_counter() - t0, 1)}
    (folder / "_done").write_text(json.dumps(summary))
    if not quiet:
        print(f"wrote {summary['docs']:,} pages, {total_bytes / 1e9:.2f} GB WARC.gz in {files} files to {folder} "
              f"({summary['seconds']} s)")
    return folder


def load_truth(folder: Path, files: set[str] | None = None) -> dict[str, dict]:
    """url → truth line, for the pages in ``files`` (all when None)."""
    out = {}
    with gzip.open(folder / "truth.jsonl.gz", "rt") as f:
        for line in f:
            t = json.loads(line)
            if files is None or t["file"] in files:
                out[t["url"]] = t
    return out


def pair_precision_recall(predicted: dict[str, object], truth: dict[str, object]) -> dict[str, float]:
    """Pair-level precision and recall of predicted clusters against the planted ones, over the pages both map.

    ``predicted`` and ``truth`` map a page (its URL) to a cluster label; a pair of pages is positive when both have
    the same label. Counted exactly from cluster sizes (no pair enumeration, so a huge wrong cluster is cheap)."""
    from collections import Counter

    common = predicted.keys() & truth.keys()

    def pairs(counter: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counter.values())

    pred = pairs(Counter(predicted[u] for u in common))
    true = pairs(Counter(truth[u] for u in common))
    hit = pairs(Counter((predicted[u], truth[u]) for u in common))
    return {"precision": hit / pred if pred else 1.0, "recall": hit / true if true else 1.0,
            "predicted_pairs": pred, "true_pairs": true, "pages": len(common)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    build(args.docs, args.seed, args.workers)


if __name__ == "__main__":
    main()

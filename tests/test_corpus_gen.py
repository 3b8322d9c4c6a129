"""The corpus-scale benchmark's generator (benchmarks/corpus_gen.py): its planted near-duplicate truth matches the
pages it writes, and the pair precision/recall it is scored with is exact."""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import corpus_gen  # noqa: E402

from assay.core.errors import ErrorLog  # noqa: E402
from assay.harvest.dedup.evaluation import jaccard, pair_scores  # noqa: E402
from assay.io.warc import read_warc  # noqa: E402

PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
GERMAN = [
    "Die Konfigurationsdatei wird beim Start des Dienstes gelesen und bestimmt, welche Verzeichnisse durchsucht "
    "werden und in welcher Reihenfolge die Einträge ausgewertet werden.",
    "Wenn die Umgebungsvariable bereits gesetzt ist, wird die Information in der Datei nicht außer Kraft gesetzt, "
    "sondern nur ergänzt, damit der Benutzer die Kontrolle behält.",
    "Jede Handbuchseite enthält eine kurze Beschreibung, die bei der Suche nach einem Schlüsselwort durchsucht wird "
    "und dem Benutzer einen schnellen Überblick gibt.",
]


@pytest.fixture(scope="module")
def pools() -> corpus_gen.Pools:
    files = sorted(PG_DOCS.glob("*.html"))[:80]
    assert files, f"{PG_DOCS} is missing: apt-get install postgresql-doc-15 (make system-deps)"
    return corpus_gen.Pools(en=corpus_gen.english_paragraphs(paths=files), foreign={"de": GERMAN * 20},
                            assets=[], blocked_hosts=["blocked.example"])


@pytest.fixture(scope="module")
def corpus(pools, tmp_path_factory) -> Path:
    return corpus_gen.build(400, seed=3, workers=1, out=tmp_path_factory.mktemp("crawl"), quiet=True, pools=pools)


def _paragraph_text(html: str) -> str:
    """The text of the article's paragraphs, read back from the page."""
    article = re.search(r"<article>(.*)</article>", html, re.S).group(1)
    return " ".join(corpus_gen._text_of(p) for p in re.findall(r"<p>(.*?)</p>", article, re.S))


def test_truth_describes_every_page_written(corpus):
    truth = corpus_gen.load_truth(corpus)
    pages = {}
    for f in sorted(corpus.glob("pages-*.warc.gz")):
        for rec in read_warc(str(f), ErrorLog()):
            pages[rec.meta["url"]] = (f.name, rec.content)
    assert len(pages) == len(truth) == 400  # distinct URLs, one truth line each
    assert all(truth[u]["file"] == name for u, (name, _) in pages.items())
    kinds = Counter(t["kind"].split(":")[0] for t in truth.values())
    assert kinds["copy"] >= 10 and kinds["related"] >= 2 and kinds["foreign"] >= 5 and kinds["mixed"] >= 3
    # a planted cluster spreads over several WARC files (shards), as in a crawl
    files_per_cluster = defaultdict(set)
    for t in truth.values():
        files_per_cluster[t["cluster"]].add(t["file"])
    assert sum(len(v) > 1 for v in files_per_cluster.values()) >= 5


def test_planted_copies_are_near_duplicates_and_related_pages_are_not(corpus):
    truth = corpus_gen.load_truth(corpus)
    text = {}
    for f in sorted(corpus.glob("pages-*.warc.gz")):
        for rec in read_warc(str(f), ErrorLog()):
            text[rec.meta["url"]] = _paragraph_text(rec.content)
    members = defaultdict(list)
    for u, t in truth.items():
        members[t["cluster"]].append(u)
    checked = 0
    for u, t in truth.items():
        if t["kind"].startswith("copy:"):
            original = [m for m in members[t["cluster"]] if truth[m]["kind"] == "en"]
            assert len(original) == 1
            sim = jaccard(text[original[0]], text[u])  # measured on the written HTML, independently of the generator
            assert sim >= corpus_gen.MIN_CLUSTER_JACCARD, (u, sim)
            assert abs(sim - t["jaccard"]) < 1e-3
            checked += 1
        if t["kind"] == "related":
            origin = "o" + t["cluster"][1:]
            original = [m for m in members[origin] if truth[m]["kind"] == "en"]
            assert jaccard(text[original[0]], text[u]) <= corpus_gen.MAX_RELATED_JACCARD
            assert len(members[t["cluster"]]) == 1  # its own cluster: a dedup must keep it
    assert checked >= 10


def test_pages_are_deterministic_and_languages_as_labelled(pools):
    a = corpus_gen.page(pools, 5, 17, 0)
    assert a == corpus_gen.page(pools, 5, 17, 0)
    assert a != corpus_gen.page(pools, 6, 17, 0)
    origins, variants = corpus_gen.plan(300, 5)
    assert len(origins) == 300 and len(set(zip(origins.tolist(), variants.tolist()))) == 300
    foreign = [o for o in range(400) if corpus_gen.origin_kind(5, o)[0] == "foreign"]
    for o in foreign[:5]:
        _, html, t = corpus_gen.page(pools, 5, o, 0)
        assert t["lang"] == "de" and "<html lang='de'>" in html.decode()
        assert any(g.split(",")[0] in html.decode() for g in GERMAN)


def test_pair_precision_recall_by_hand():
    truth = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 3, "z": 9}
    predicted = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "w", "only-predicted": "x"}
    s = corpus_gen.pair_precision_recall(predicted, truth)
    # pages in both: a..e; predicted pairs ab, cd; planted pairs ab, ac, bc; one pair right
    assert (s["predicted_pairs"], s["true_pairs"], s["pages"]) == (2, 3, 5)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(1 / 3)
    assert corpus_gen.pair_precision_recall({}, {})["precision"] == 1.0


def test_pair_precision_recall_matches_pair_enumeration():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 60)
        truth = [rng.randrange(n // 2 + 1) for _ in range(n)]
        pred = [rng.randrange(n // 3 + 1) for _ in range(n)]
        fast = corpus_gen.pair_precision_recall(dict(enumerate(pred)), dict(enumerate(truth)))
        ref = pair_scores(pred, truth)  # enumerates the pairs
        assert fast["precision"] == pytest.approx(ref["precision"]) and fast["recall"] == pytest.approx(ref["recall"])
        assert (fast["predicted_pairs"], fast["true_pairs"]) == (ref["predicted_pairs"], ref["true_pairs"])


def test_truth_file_is_gzip_jsonl(corpus):
    with gzip.open(corpus / "truth.jsonl.gz", "rt") as f:
        first = f.readline()
    assert {"url", "file", "cluster", "kind", "lang", "jaccard"} <= set(json.loads(first))

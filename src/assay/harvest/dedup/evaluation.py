"""Measuring near-dedup: plant known near-duplicates into real text and score predicted clusters against them.

:func:`plant_near_duplicates` takes distinct base documents and adds, for some of them, variants made by the edits
that make web near-duplicates (scattered word edits, sentences swapped, boilerplate header/footer added, the end
cut off, combinations), each kept only if its true word n-gram Jaccard similarity with the original is at least
``min_jaccard``; and, for others, *related but distinct* documents (heavy edits, Jaccard at most
``max_related_jaccard``) that a good dedup must keep apart (scored as distinct). :func:`pair_scores` compares
predicted clusters with the planted families at the level of pairs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable

from assay.harvest.dedup.shingles import reference_shingles

BOILERPLATE = [
    "Accept cookies We use cookies to improve your experience on our site. By continuing to browse you agree to "
    "our use of cookies. Privacy policy Terms of service",
    "Home News Sport Business Technology Science Health Culture Opinion Subscribe Sign in Search Menu",
    "Share this article on Facebook Twitter LinkedIn Email Print Copy link Related articles You may also like",
    "Copyright all rights reserved. Reproduction in whole or in part without written permission is prohibited. "
    "Contact us Advertise Careers Help Sitemap",
    "Sign up for our newsletter to get the latest stories delivered to your inbox every morning. Unsubscribe at "
    "any time. Follow us",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Exact Jaccard similarity of two texts' word ``ngram``-gram sets (as compared by ``minhash_dedup``)."""
    sa, sb = reference_shingles(a, ngram), reference_shingles(b, ngram)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


@dataclass
class PlantedCorpus:
    texts: list[str] = field(default_factory=list)
    family: list[int] = field(default_factory=list)  # texts with the same family are near-duplicates
    kind: list[str] = field(default_factory=list)  # "original", an edit name, or "related" (a distinct text)
    similarity: list[float] = field(default_factory=list)  # true Jaccard with its original (1.0 for originals)

    def add(self, text: str, family: int, kind: str, similarity: float) -> None:
        self.texts.append(text)
        self.family.append(family)
        self.kind.append(kind)
        self.similarity.append(similarity)


def _word_edits(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split(" ")
    out: list[str] = []
    for w in words:
        u = rng.random()
        if u < rate / 3:
            continue  # delete
        if u < 2 * rate / 3:
            out.append(rng.choice(vocabulary))  # substitute
            continue
        out.append(w)
        if u < rate:
            out.append(rng.choice(vocabulary))  # insert
    return " ".join(out)


def _swap_sentences(text: str, swaps: int, rng: random.Random) -> str:
    sentences = _SENTENCE_END.split(text)
    if len(sentences) < 3:
        return text
    for _ in range(swaps):
        i = rng.randrange(len(sentences) - 1)
        sentences[i], sentences[i + 1] = sentences[i + 1], sentences[i]
    return " ".join(sentences)


def _boilerplate(text: str, rng: random.Random) -> str:
    head = rng.choice(BOILERPLATE) if rng.random() < 0.7 else ""
    tail = rng.choice(BOILERPLATE) if rng.random() < 0.7 or not head else ""
    return "\n".join(x for x in (head, text, tail) if x)


def _cut_end(text: str, fraction: float) -> str:
    return text[:max(1, int(len(text) * (1 - fraction)))]


def make_variant(text: str, strength: float, rng: random.Random, vocabulary: list[str]) -> tuple[str, str]:
    """One edited copy of ``text``; ``strength`` in [0, 1] scales how much is changed. Returns (text, kind)."""
    kind = rng.choice(["word_edits", "sentence_swaps", "boilerplate", "cut_end", "combined"])
    if kind == "word_edits":
        return _word_edits(text, 0.05 * strength, rng, vocabulary), kind
    if kind == "sentence_swaps":
        return _swap_sentences(text, max(1, int(4 * strength)), rng), kind
    if kind == "boilerplate":
        return _boilerplate(text, rng), kind
    if kind == "cut_end":
        return _cut_end(text, 0.15 * strength), kind
    edited = _word_edits(_swap_sentences(text, 1, rng), 0.02 * strength, rng, vocabulary)
    return _boilerplate(edited, rng), kind


def make_related(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """A distinct document sharing much of ``text`` (heavy scattered edits: Jaccard typically 0.4–0.7)."""
    return _word_edits(text, rng.uniform(0.035, 0.08), rng, vocabulary)


def plant_near_duplicates(base: list[str], seed: int = 0, duplicate_share: float = 0.4, related_share: float = 0.1,
                          max_variants: int = 3, min_jaccard: float = 0.8, max_related_jaccard: float = 0.7,
                          ngram: int = 5) -> PlantedCorpus:
    """Base texts (assumed distinct) plus planted variants (Jaccard >= ``min_jaccard`` with their original) and
    related documents (Jaccard <= ``max_related_jaccard``, to be kept apart), shuffled."""
    rng = random.Random(seed)
    vocabulary = sorted({w for t in base[:200] for w in t.split() if w.isalpha()}) or ["word"]
    corpus = PlantedCorpus()
    for fam, text in enumerate(base):
        corpus.add(text, fam, "original", 1.0)
        u = rng.random()
        if u < duplicate_share:
            for _ in range(rng.randint(1, max_variants)):
                for strength in (rng.uniform(0.3, 1.0), 0.3, 0.1):
                    variant, kind = make_variant(text, strength, rng, vocabulary)
                    sim = jaccard(text, variant, ngram)
                    if sim >= min_jaccard:
                        corpus.add(variant, fam, kind, sim)
                        break
        elif u < duplicate_share + related_share:
            for _ in range(3):
                related = make_related(text, rng, vocabulary)
                sim = jaccard(text, related, ngram)
                if sim <= max_related_jaccard:
                    corpus.add(related, len(base) + fam, "related", sim)
                    break
    order = list(range(len(corpus.texts)))
    rng.shuffle(order)
    shuffled = PlantedCorpus()
    for i in order:
        shuffled.add(corpus.texts[i], corpus.family[i], corpus.kind[i], corpus.similarity[i])
    return shuffled


def _pairs(groups: Iterable[Iterable[int]]) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for g in groups:
        out.update(combinations(sorted(g), 2))
    return out


def clusters_from_labels(labels: list[object]) -> list[list[int]]:
    """Indices grouped by equal label."""
    groups: dict[object, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return list(groups.values())


def pair_scores(predicted_labels: list[object], true_labels: list[object]) -> dict[str, float]:
    """Pair-level precision and recall: a pair is positive if both texts share a label."""
    predicted = _pairs(clusters_from_labels(predicted_labels))
    truth = _pairs(clusters_from_labels(true_labels))
    hit = len(predicted & truth)
    return {"precision": hit / len(predicted) if predicted else 1.0,
            "recall": hit / len(truth) if truth else 1.0,
            "predicted_pairs": len(predicted), "true_pairs": len(truth)}


# -- base documents ----------------------------------------------------------------------------------------------
def texts_from_html_files(paths: Iterable[str], min_words: int = 50) -> list[str]:
    """Main text of HTML files (Resiliparse), keeping those with at least ``min_words`` words."""
    from resiliparse.extract.html2text import extract_plain_text

    out = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            text = extract_plain_text(f.read(), main_content=True)
        if len(text.split()) >= min_words:
            out.append(text)
    return out


def distinct_texts(texts: list[str], max_jaccard: float = 0.5, ngram: int = 5) -> list[str]:
    """``texts`` without those whose n-gram Jaccard with an earlier kept text exceeds ``max_jaccard``.

    Independent of MinHash: candidates come from an inverted index of a deterministic 1-in-4 sample of the
    shingles (ignoring shingles found in more than 100 texts), then the exact Jaccard similarity decides.
    """
    import zlib

    shingle_sets = [reference_shingles(t, ngram) for t in texts]
    samples = [{s for s in ss if zlib.crc32(" ".join(s).encode()) % 4 == 0} for ss in shingle_sets]
    postings: dict[tuple[str, ...], list[int]] = {}
    for i, sample in enumerate(samples):
        for s in sample:
            postings.setdefault(s, []).append(i)
    shared: dict[tuple[int, int], int] = {}
    for docs in postings.values():
        if 1 < len(docs) <= 100:
            for pair in combinations(docs, 2):
                shared[pair] = shared.get(pair, 0) + 1
    dropped: set[int] = set()
    for (i, j), n in sorted(shared.items()):
        if i in dropped or j in dropped:
            continue
        if n < 0.2 * max(1, min(len(samples[i]), len(samples[j]))):
            continue
        a, b = shingle_sets[i], shingle_sets[j]
        if len(a & b) / max(1, len(a | b)) > max_jaccard:
            dropped.add(j)
    return [t for i, t in enumerate(texts) if i not in dropped and shingle_sets[i]]

"""ROUGE-L (longest common subsequence F-measure) for the novelty filters of Self-Instruct and Evol-Instruct.

Tokenisation matches the ``rouge-score`` package's default (lowercase, anything but ``[a-z0-9]`` separates tokens,
no stemming), so scores agree with it exactly (cross-checked in the tests). The LCS length is computed with the
bit-parallel algorithm of Allison and Dix (as refined by Hyyrö): one machine word per 64 tokens of the reference,
here Python's arbitrary-size ints, so comparing a candidate with a pool of hundreds of instructions takes well under
a millisecond per pair, with no quadratic table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Tokens as ``rouge-score`` makes them (lowercased ASCII letters and digits)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def _match_masks(tokens: list[str]) -> dict[str, int]:
    """For each distinct token, a bit mask of the positions where it occurs."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if not a or not b:
        return 0
    return _lcs_with_masks(_match_masks(a), len(a), b)


def _lcs_with_masks(masks: dict[str, int], n: int, b: list[str]) -> int:
    full = (1 << n) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m is None:
            continue
        u = v & m
        v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def _fmeasure(lcs: int, len_pred: int, len_ref: int) -> float:
    if lcs == 0:
        return 0.0
    precision = lcs / len_pred
    recall = lcs / len_ref
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure between two texts (symmetric; 0.0 when either has no tokens)."""
    a, b = tokenize(reference), tokenize(prediction)
    return _fmeasure(lcs_length(a, b), len(b), len(a))


@dataclass
class _Entry:
    tokens: list[str]
    masks: dict[str, int]
    vocab: frozenset[str]


class RougeLIndex:
    """A growing pool of texts to score new candidates against (max ROUGE-L F over the pool)."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._entries: list[_Entry] = []
        self.texts: list[str] = []
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, text: str) -> None:
        tokens = tokenize(text)
        self._entries.append(_Entry(tokens, _match_masks(tokens), frozenset(tokens)))
        self.texts.append(text)

    def scores(self, candidate: str) -> list[float]:
        """ROUGE-L F of ``candidate`` against every text in the pool, in pool order."""
        cand = tokenize(candidate)
        if not cand:
            return [0.0] * len(self._entries)
        cand_vocab = set(cand)
        out = []
        for e in self._entries:
            if not e.tokens or cand_vocab.isdisjoint(e.vocab):
                out.append(0.0)
                continue
            out.append(_fmeasure(_lcs_with_masks(e.masks, len(e.tokens), cand), len(cand), len(e.tokens)))
        return out

    def most_similar(self, candidate: str) -> tuple[float, int]:
        """``(best score, index of that text)``; ``(0.0, -1)`` for an empty pool."""
        best, where = 0.0, -1
        for i, s in enumerate(self.scores(candidate)):
            if s > best:
                best, where = s, i
        return best, where

"""Word n-gram shingles of many texts at once, hashed to 64 bits without a Python loop over words.

Why not ``re.findall`` and one ``xxhash`` call per word: that costs ~400 ns per word in CPython and would dominate
near-dedup. Instead a batch of texts is lower-cased, encoded to UTF-8 and joined into one byte buffer; word
boundaries, word hashes and n-gram hashes are then computed with a few numpy passes over the buffer (~20 ns/word).

Words are maximal runs of ASCII letters/digits and non-ASCII characters, minus common Unicode punctuation and spaces
(Latin-1 symbols U+0080–U+00BF, general punctuation U+2000–U+206F, CJK symbols U+3000–U+303F), so that
``“Hello,”`` and ``"hello"`` give the same word. Text without spaces (Chinese, Japanese, Thai) therefore becomes a
few long "words"; near-dedup of such languages needs a word segmenter first.

A word's hash is a polynomial hash of its bytes (mod 2**64), finalised with :func:`~.hashing.mix64`; an n-gram's
hash is ``mix64(sum_k word_hash[i+k] * C_k)`` with fixed odd constants ``C_k`` (order-sensitive). These are good
hashes for natural text, not cryptographic ones: someone who knows the constants can craft colliding words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.harvest.dedup.hashing import U64, constants, mix64

_POLY_BASE = 0x100000001B3  # FNV-1 prime: odd, so multiplication by its powers is invertible mod 2**64
_POLY_INVERSE = pow(_POLY_BASE, -1, 1 << 64)
_MAX_NGRAM = 32
_NGRAM_MULT = constants(seed=0x5EED_0001, n=_MAX_NGRAM + 1)
_SEPARATOR = b"\n"


@dataclass
class Shingles:
    """The hashed shingles of a batch of texts, grouped by text.

    ``hashes[starts[i]:starts[i + 1]]`` are the shingle hashes of text ``i`` (possibly repeated); ``starts`` has
    ``n_texts + 1`` entries. A text without any word has no shingles.
    """

    hashes: np.ndarray  # uint64
    doc: np.ndarray  # int64, text index of each hash, non-decreasing
    starts: np.ndarray  # int64

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.starts)


def _mark_unicode_punctuation(buf: np.ndarray, is_word: np.ndarray) -> None:
    """Clear ``is_word`` on the bytes of common non-ASCII punctuation and space characters (in place)."""
    lead = np.flatnonzero(buf[:-1] >= 0xC2)
    if lead.size == 0:
        return
    b0, b1 = buf[lead], buf[lead + 1]
    two = lead[b0 == 0xC2]  # U+0080..U+00BF: no-break space, «», ¡¿, ©, °, ...
    is_word[two] = False
    is_word[two + 1] = False
    three = lead[((b0 == 0xE2) & ((b1 == 0x80) | (b1 == 0x81))) | ((b0 == 0xE3) & (b1 == 0x80))]
    three = three[three + 2 < buf.size]
    for k in range(3):
        is_word[three + k] = False


_power_cache: list[np.ndarray] = [np.ones(0, dtype=U64), np.ones(0, dtype=U64)]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``B**(j+1)`` and ``B**-(j+1)`` mod 2**64 for ``j < n`` (cached; callers keep buffers to a few MB)."""
    if _power_cache[0].size < n:
        size = max(n, 1 << 20)
        _power_cache[0] = np.cumprod(np.full(size, _POLY_BASE, dtype=U64))
        _power_cache[1] = np.cumprod(np.full(size, _POLY_INVERSE, dtype=U64))
    return _power_cache[0], _power_cache[1]


def word_hashes(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and start offsets of the words in a UTF-8 byte buffer (ASCII letters are lower-cased here; other
    characters must be lower-cased beforehand)."""
    is_word = ((buf | np.uint8(0x20)) - np.uint8(ord("a")) < 26) | (buf - np.uint8(ord("0")) < 10) | (buf >= 0x80)
    _mark_unicode_punctuation(buf, is_word)
    edges = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if starts.size == 0:
        return np.zeros(0, dtype=U64), starts
    lengths = ends - starts
    word_bytes = buf[is_word]
    word_bytes = np.where(word_bytes < 0x80, word_bytes | np.uint8(0x20), word_bytes).astype(U64)  # ASCII lower
    first = np.cumsum(lengths) - lengths  # where each word begins inside word_bytes
    # sum_j byte_j * B**(j - first): weight by absolute powers, then shift each word back by B**-first
    powers, inverse = _powers(word_bytes.size)
    word_bytes *= powers[:word_bytes.size]
    hashes = np.add.reduceat(word_bytes, first)
    hashes *= inverse[first]
    hashes += lengths.astype(U64) * U64(0x9E3779B97F4A7C15)
    return mix64(hashes), starts


def shingle_texts(texts: list[str], ngram: int) -> Shingles:
    """Hash the word ``ngram``-grams of every text.

    A text with at least one word but fewer than ``ngram`` words gets one shingle made of all its words, so that
    short texts can still be matched with each other (never with a long text's shingles).
    """
    if not 1 <= ngram <= _MAX_NGRAM:
        raise ValueError(f"ngram must be in 1..{_MAX_NGRAM}, got {ngram}")
    n_texts = len(texts)
    # ASCII-only texts (most of the web) skip str.lower(): their letters are lower-cased in numpy below
    encoded = [t.encode("ascii") if t.isascii() else t.lower().encode("utf-8", "surrogatepass") for t in texts]
    text_start = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum([len(e) + 1 for e in encoded], out=text_start[1:])
    buf = np.frombuffer(_SEPARATOR.join(encoded) + _SEPARATOR, dtype=np.uint8)
    words, word_start = word_hashes(buf)
    word_doc = np.searchsorted(text_start, word_start, side="right") - 1
    words_per_doc = np.bincount(word_doc, minlength=n_texts)
    first_word = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum(words_per_doc, out=first_word[1:])

    # full n-grams: positions i whose n-th word is in the same text
    n_pos = words.size - ngram + 1
    if n_pos > 0:
        acc = words[:n_pos] * _NGRAM_MULT[0]
        for k in range(1, ngram):
            acc += words[k:k + n_pos] * _NGRAM_MULT[k]
        valid = word_doc[ngram - 1:] == word_doc[:n_pos]
        grams, gram_doc = mix64(acc[valid]), word_doc[:n_pos][valid]
    else:
        grams, gram_doc = np.zeros(0, dtype=U64), np.zeros(0, dtype=np.int64)

    # texts shorter than one n-gram: a single shingle of all their words (tagged with the count)
    short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < ngram))
    if short.size:
        extra = np.empty(short.size, dtype=U64)
        for j, d in enumerate(short):
            c = int(words_per_doc[d])
            w = words[first_word[d]:first_word[d] + c]
            extra[j] = (w * _NGRAM_MULT[:c]).sum(dtype=U64)
        extra += words_per_doc[short].astype(U64) * _NGRAM_MULT[_MAX_NGRAM]
        grams = np.concatenate([grams, mix64(extra)])
        gram_doc = np.concatenate([gram_doc, short])
        order = np.argsort(gram_doc, kind="stable")
        grams, gram_doc = grams[order], gram_doc[order]

    starts = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum(np.bincount(gram_doc, minlength=n_texts), out=starts[1:])
    return Shingles(grams, gram_doc, starts)


def reference_shingles(text: str, ngram: int) -> set[tuple[str, ...]]:
    """The same shingles as :func:`shingle_texts`, as Python tuples of words (slow; for tests and benchmarks)."""
    import re

    cleaned = re.sub(r"[\u0080-\u00bf\u2000-\u206f\u3000-\u303f]", " ", text.lower())
    words = re.findall(r"[a-z0-9\u00c0-\U0010ffff]+", cleaned)
    if not words:
        return set()
    if len(words) < ngram:
        return {tuple(words)}
    return {tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}

"""Gopher's heuristic quality and repetition filters (Rae et al. 2021, "Scaling Language Models", appendix A1).

Defaults and the order of the checks follow datatrove 0.10.1's ``GopherQualityFilter`` and
``GopherRepetitionFilter``, the implementation FineWeb used, so that both keep and drop the same documents; words
come from :mod:`assay.harvest.filters.text`, which reproduces the word splitting datatrove uses.

Both filters write every measured value to ``record.signals`` (``gopher.*`` and ``gopher_rep.*``) whatever the
decision, so thresholds can be studied and changed later without recomputing.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from itertools import accumulate, compress, count, islice
from operator import is_not, itemgetter
from typing import ClassVar

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, Threshold
from assay.harvest.filters.text import SYMBOLS, get_tokenizer

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQualityParams(FilterParams):
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    #: max ratio of "#" (and, separately, of "..."/"…") occurrences to words
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    #: minimum share of words with at least one letter (datatrove's ``max_non_alpha_words_ratio``)
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS
    language: str = "en"


_FIELD = 40  # bits per packed counter (a document would need 10**12 words to overflow one)
_FIELD_MASK = (1 << _FIELD) - 1


class _ChunkStats(dict):
    """chunk -> its counts packed in one integer, so a document's totals are one ``sum`` over its chunks.

    Fields, 40 bits each from the lowest: words, non-symbol words, their total length, words with a letter, then one
    field per stop word counting its occurrences."""

    def __init__(self, language: str, stop_words: tuple[str, ...]) -> None:
        super().__init__()
        self.tokenizer = get_tokenizer(language)
        self.stop_fields = {w: 1 << (_FIELD * (4 + i)) for i, w in enumerate(dict.fromkeys(stop_words))}

    def __missing__(self, chunk: str) -> int:
        packed = self[chunk] = self.of_words(self.tokenizer.chunk_tokens(chunk))
        return packed

    def of_words(self, words: tuple[str, ...]) -> int:
        non_symbol = [w for w in words if not SYMBOLS.issuperset(w)]
        alpha = sum(1 for w in words if w.isalpha() or any(c.isalpha() for c in w))
        packed = len(words) | len(non_symbol) << _FIELD | sum(map(len, non_symbol)) << 2 * _FIELD | alpha << 3 * _FIELD
        for w in words:
            packed += self.stop_fields.get(w, 0)
        return packed

    def unpack(self, total: int) -> tuple[int, int, int, int, int]:
        """(words, non-symbol words, their length, words with a letter, distinct stop words present)."""
        fields = [(total >> (_FIELD * i)) & _FIELD_MASK for i in range(4 + len(self.stop_fields))]
        return fields[0], fields[1], fields[2], fields[3], sum(1 for f in fields[4:] if f)


def _is_bullet_line(line: str) -> bool:
    return line.lstrip().startswith(("•", "-"))


def _ends_with_ellipsis(line: str) -> bool:
    return line.rstrip().endswith(("...", "…"))


class GopherQuality(Filter):
    """Gopher quality rules: document length, mean word length, symbol ratios, bullets, ellipses, letters, stop
    words."""

    name = "gopher_quality"
    version = "1"
    Params: ClassVar[type[FilterParams]] = GopherQualityParams
    signals = ("gopher.",)
    MAX_CACHE = 500_000

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stats: _ChunkStats | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stats"] = None  # a cache: rebuilt where the step is unpickled
        return state

    def _chunk_stats(self) -> _ChunkStats:
        if self._stats is None or len(self._stats) > self.MAX_CACHE:
            self._stats = _ChunkStats(self.params.language, self.params.stop_words)
        return self._stats

    def score(self, record: Record) -> None:
        text = record.text
        stats = self._chunk_stats()
        chunks = text.split()
        total = sum(map(stats.__getitem__, chunks))
        tokenizer = stats.tokenizer
        if tokenizer.context_matters(chunks):  # rare: redo the chunks whose neighbours change their words
            in_context = tokenizer.tokens_by_chunk(text)
            alone = map(tokenizer.chunk_tokens, chunks)
            for j in compress(count(), map(is_not, in_context, alone)):
                total += stats.of_words(in_context[j]) - stats[chunks[j]]
        n_words, n_non_symbol, non_symbol_chars, n_alpha, n_stop_words = stats.unpack(total)
        lines = text.splitlines()
        n_lines = len(lines) or 1
        s = record.signals
        s["gopher.word_count"] = n_non_symbol
        s["gopher.mean_word_length"] = non_symbol_chars / n_non_symbol if n_non_symbol else 0.0
        s["gopher.hash_ratio"] = text.count("#") / n_words if n_words else 0.0
        s["gopher.ellipsis_ratio"] = (text.count("...") + text.count("…")) / n_words if n_words else 0.0
        s["gopher.bullet_lines_ratio"] = sum(map(_is_bullet_line, lines)) / n_lines
        s["gopher.ellipsis_lines_ratio"] = sum(map(_ends_with_ellipsis, lines)) / n_lines
        s["gopher.alpha_words_ratio"] = n_alpha / n_words if n_words else 0.0
        s["gopher.stop_words"] = n_stop_words

    def thresholds(self) -> list[Threshold]:
        p = self.params
        rules = [("gopher.word_count", "<", p.min_doc_words, "gopher_short_doc"),
                 ("gopher.word_count", ">", p.max_doc_words, "gopher_long_doc"),
                 ("gopher.mean_word_length", "<", p.min_avg_word_length, "gopher_below_avg_threshold"),
                 ("gopher.mean_word_length", ">", p.max_avg_word_length, "gopher_above_avg_threshold"),
                 ("gopher.hash_ratio", ">", p.max_symbol_word_ratio, "gopher_too_many_hashes"),
                 ("gopher.ellipsis_ratio", ">", p.max_symbol_word_ratio, "gopher_too_many_ellipsis"),
                 ("gopher.bullet_lines_ratio", ">", p.max_bullet_lines_ratio, "gopher_too_many_bullets"),
                 ("gopher.ellipsis_lines_ratio", ">", p.max_ellipsis_lines_ratio, "gopher_too_many_end_ellipsis"),
                 ("gopher.alpha_words_ratio", "<", p.min_alpha_words_ratio, "gopher_below_alpha_threshold"),
                 ("gopher.stop_words", "<", p.min_stop_words, "gopher_few_stop_words")]
        return [Threshold(*rule) for rule in rules if rule[2]]  # as decide(): a rule set to None or 0 is off

    def decide(self, record: Record) -> str | None:
        p = self.params
        s = record.signals
        n = s["gopher.word_count"]
        if p.min_doc_words and n < p.min_doc_words:
            return "gopher_short_doc"
        if p.max_doc_words and n > p.max_doc_words:
            return "gopher_long_doc"
        if p.min_avg_word_length and s["gopher.mean_word_length"] < p.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if p.max_avg_word_length and s["gopher.mean_word_length"] > p.max_avg_word_length:
            return "gopher_above_avg_threshold"
        if p.max_symbol_word_ratio and s["gopher.hash_ratio"] > p.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if p.max_symbol_word_ratio and s["gopher.ellipsis_ratio"] > p.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        if p.max_bullet_lines_ratio and s["gopher.bullet_lines_ratio"] > p.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
        if p.max_ellipsis_lines_ratio and s["gopher.ellipsis_lines_ratio"] > p.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
        if p.min_alpha_words_ratio and s["gopher.alpha_words_ratio"] < p.min_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if p.min_stop_words and s["gopher.stop_words"] < p.min_stop_words:
            return "gopher_few_stop_words"
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Repetition
# ---------------------------------------------------------------------------------------------------------------------


class GopherRepetitionParams(FilterParams):
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    #: (n, max fraction of characters covered by the most frequent n-gram)
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    #: (n, max fraction of characters inside repeated n-grams)
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    language: str = "en"


_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAKS = re.compile(r"\n+")


def duplicate_stats(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, their total length)."""
    counts = Counter(items)
    dup_items = len(items) - len(counts)
    dup_chars = sum(len(item) * (n - 1) for item, n in counts.items() if n > 1)
    return dup_items, dup_chars


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent word n-gram (joined with spaces) times its count; ties go to the n-gram seen
    first. 0 when the text has fewer than ``n`` words."""
    grams = Counter(zip(*(islice(words, i, None) for i in range(n))))
    if not grams:
        return 0
    gram, freq = max(grams.items(), key=itemgetter(1))
    return (sum(map(len, gram)) + n - 1) * freq


def repeated_ngram_chars(words: list[str], n: int) -> int:
    """Characters inside word n-grams (concatenated without separator) that repeat an earlier, non-overlapping
    n-gram, scanning left to right and jumping past each repeat (Gopher's "duplicated n-gram character fraction",
    as datatrove computes it)."""
    total = len(words) - n + 1
    if total <= 1:
        return 0
    joined = "".join(words)
    offsets = [0, *accumulate(map(len, words))]
    grams = list(map(joined.__getitem__, map(slice, offsets[:total], offsets[n:n + total])))
    counts = Counter(grams)
    if len(counts) == total:
        return 0
    # only positions whose n-gram occurs twice or more can be repeats; walk those in order
    candidates = compress(count(), map((1).__lt__, map(counts.__getitem__, grams)))
    seen: set[str] = set()
    repeated = 0
    next_free = 0
    for i in candidates:
        if i < next_free:
            continue
        gram = grams[i]
        if gram in seen:
            repeated += len(gram)
            next_free = i + n
        else:
            seen.add(gram)
    return repeated


_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
_INV_BASE = pow(_BASE, -1, 1 << 64)


class _Powers:
    """BASE**k and BASE**-k modulo 2**64 for k = 0, 1, 2, ... (grown on demand)."""

    def __init__(self) -> None:
        import numpy as np

        self.np = np
        self.pow = self.inv = np.ones(1, dtype=np.uint64)

    def upto(self, n: int):
        np = self.np
        if len(self.pow) < n:
            size = max(n, 2 * len(self.pow))
            self.pow = np.empty(size, dtype=np.uint64)
            self.inv = np.empty(size, dtype=np.uint64)
            self.pow[0] = self.inv[0] = 1
            with np.errstate(over="ignore"):
                np.cumprod(np.full(size - 1, _BASE, dtype=np.uint64), out=self.pow[1:])
                np.cumprod(np.full(size - 1, _INV_BASE, dtype=np.uint64), out=self.inv[1:])
        return self.pow, self.inv


class _WordIds(dict):
    """word -> a small integer, assigned on first sight."""

    def __missing__(self, word: str) -> int:
        i = self[word] = len(self)
        return i


def _mix64(np, x):
    """A bijective scramble of uint64 values (splitmix64's finaliser)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class NgramStats:
    """Top and repeated n-gram character counts of one document as numpy array operations.

    Word n-grams are compared through 64-bit keys: for the top n-grams a mix of the words' ids (a word sequence);
    for the repeated n-grams a polynomial hash of the n-gram's characters *concatenated*, which is what datatrove
    compares (``"".join(words[i:i + n])``): it is a difference of prefix sums over the document's characters, so
    every n costs a few array operations instead of one string per position. Two different n-grams get the same key
    with probability ~2**-64 per pair on natural text (tests check both against the plain string definitions)."""

    #: documents with more word characters than this use the plain string functions (bounded memory)
    MAX_ARRAY_CHARS = 1_000_000
    MAX_VOCAB = 2_000_000
    _vocab = _WordIds()
    _powers: _Powers | None = None

    def __init__(self, words: list[str]) -> None:
        import numpy as np

        self.np = np
        cls = type(self)
        if len(cls._vocab) > self.MAX_VOCAB:
            cls._vocab = _WordIds()
        if cls._powers is None:
            cls._powers = _Powers()
        n = self.n_words = len(words)
        self.words = words
        self.ids = np.fromiter(map(cls._vocab.__getitem__, words), dtype=np.int64, count=n)
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=n), out=self.offsets[1:])
        self._char_prefix = None

    @property
    def n_chars(self) -> int:
        return int(self.offsets[-1])

    def top_chars(self, n: int) -> int:
        """As :func:`top_ngram_chars` (words hold no spaces, so comparing word sequences is exact)."""
        np = self.np
        m = self.n_words - n + 1
        if m <= 0:
            return 0
        with np.errstate(over="ignore"):
            keys = self.ids[:m].astype(np.uint64)
            for k in range(1, n):
                keys = _mix64(np, keys) + self.ids[k:k + m].astype(np.uint64)
        uniq, counts = np.unique(keys, return_counts=True)
        top = counts.max()
        i = int(np.argmax(np.isin(keys, uniq[counts == top])))  # first n-gram with the top count
        return (int(self.offsets[i + n] - self.offsets[i]) + n - 1) * int(top)

    def repeated_chars(self, n: int) -> int:
        """As :func:`repeated_ngram_chars`, comparing hashes of the concatenated n-grams."""
        np = self.np
        m = self.n_words - n + 1
        if m <= 1:
            return 0
        off = self.offsets
        pow_, inv = self._powers.upto(self.n_chars + 1)
        with np.errstate(over="ignore"):
            if self._char_prefix is None:
                codes = np.frombuffer("".join(self.words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
                self._char_prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
                np.cumsum(codes * pow_[:len(codes)], out=self._char_prefix[1:])
            prefix = self._char_prefix
            starts, ends = off[:m], off[n:n + m]
            keys = (prefix[ends] - prefix[starts]) * inv[starts]
            spans = ends - starts
            keys ^= _mix64(np, spans.astype(np.uint64))
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        if len(uniq) == m:
            return 0
        candidates = np.flatnonzero(counts[inverse] > 1).tolist()
        groups = inverse.tolist()
        seen = bytearray(len(uniq))
        repeated = 0
        next_free = 0
        for i in candidates:
            if i < next_free:
                continue
            g = groups[i]
            if seen[g]:
                repeated += int(spans[i])
                next_free = i + n
            else:
                seen[g] = 1
        return repeated


class GopherRepetition(Filter):
    """Gopher repetition rules: duplicated lines and paragraphs, dominant n-grams, repeated n-grams."""

    name = "gopher_repetition"
    version = "1"
    Params: ClassVar[type[FilterParams]] = GopherRepetitionParams
    signals = ("gopher_rep.",)

    def thresholds(self) -> list[Threshold]:
        p = self.params
        rules = [Threshold(f"gopher_rep.{name}", ">", limit, name)
                 for name in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")
                 if (limit := getattr(p, name))]
        rules += [Threshold(f"gopher_rep.top_{n}_gram_frac", ">", frac, f"top_{n}_gram") for n, frac in p.top_n_grams]
        rules += [Threshold(f"gopher_rep.dup_{n}_gram_frac", ">", frac, f"duplicated_{n}_n_grams")
                  for n, frac in p.dup_n_grams]
        return rules

    def score(self, record: Record) -> None:
        p = self.params
        text = record.text
        s = record.signals
        n_chars = len(text) or 1
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        dup_paras, dup_para_chars = duplicate_stats(paragraphs)
        s["gopher_rep.dup_para_frac"] = dup_paras / len(paragraphs)
        s["gopher_rep.dup_para_char_frac"] = dup_para_chars / n_chars
        lines = _LINE_BREAKS.split(text)
        dup_lines, dup_line_chars = duplicate_stats(lines)
        s["gopher_rep.dup_line_frac"] = dup_lines / len(lines)
        s["gopher_rep.dup_line_char_frac"] = dup_line_chars / n_chars
        words = get_tokenizer(p.language).words(text)
        stats = NgramStats(words)
        if stats.n_chars > NgramStats.MAX_ARRAY_CHARS:
            top, repeated = partial(top_ngram_chars, words), partial(repeated_ngram_chars, words)
        else:
            top, repeated = stats.top_chars, stats.repeated_chars
        for n, _ in p.top_n_grams:
            s[f"gopher_rep.top_{n}_gram_frac"] = top(n) / n_chars
        for n, _ in p.dup_n_grams:
            s[f"gopher_rep.dup_{n}_gram_frac"] = repeated(n) / n_chars

    def decide(self, record: Record) -> str | None:
        p = self.params
        s = record.signals
        if not record.text:
            return "empty"
        if p.dup_para_frac and s["gopher_rep.dup_para_frac"] > p.dup_para_frac:
            return "dup_para_frac"
        if p.dup_para_char_frac and s["gopher_rep.dup_para_char_frac"] > p.dup_para_char_frac:
            return "dup_para_char_frac"
        if p.dup_line_frac and s["gopher_rep.dup_line_frac"] > p.dup_line_frac:
            return "dup_line_frac"
        if p.dup_line_char_frac and s["gopher_rep.dup_line_char_frac"] > p.dup_line_char_frac:
            return "dup_line_char_frac"
        for n, frac in p.top_n_grams:
            if s[f"gopher_rep.top_{n}_gram_frac"] > frac:
                return f"top_{n}_gram"
        for n, frac in p.dup_n_grams:
            if s[f"gopher_rep.dup_{n}_gram_frac"] > frac:
                return f"duplicated_{n}_n_grams"
        return None

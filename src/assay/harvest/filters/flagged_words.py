"""``flagged_words``: drop documents where too many words are on a flagged-word (profanity, obscenity) list,
with Data-Juicer's ``flagged_words_filter`` ratio.

The ratio is Data-Juicer's (ops/filter/flagged_words_filter.py with ops/common/helper_func.py):

1. words: the text split on spaces, newlines and tabs (runs of them give no empty words);
2. each word lower-cased and stripped, at both ends, of "special characters" (punctuation, digits, whitespace,
   symbols and emoji); words left empty are removed;
3. optionally (``words_aug``, for languages written without spaces or with syllables split by spaces, e.g.
   Vietnamese) the joins of every ``n`` consecutive words are appended, for each ``n`` in ``words_aug_sizes``;
4. ratio = words on the list / words (0 for a text without words), capped at 1.

Special characters: Data-Juicer strips a hand-made set (``string.punctuation``, digits, whitespace, ~200 listed
characters and every emoji of the ``emoji`` package); here they are the Unicode categories of punctuation (P*),
symbols (S*, which hold the emoji), numbers (N*), separators (Z*) and controls/format (C*). On 214 pages of the
Debian manuals they differ on four characters (the no-break space and ``‣`` are stripped only here; Data-Juicer's set
also holds letters, ``ø``, ``π``, ``ー``, ``一``, ``Г``...), and the ratios are equal on 97.2% of pages, the keep/drop
decisions on all (benchmarks/operators_vs_peers.py).

Word lists ship with Assay, one per language (``wordlists/<lang>.txt``; source and license in
``wordlists/SOURCE.txt``). ``language: auto`` picks the list of ``meta["language"]`` (written by ``language_id``)
and falls back to ``default_language``; records in a language without a list are kept and counted
(``no_list:<lang>``). Multi-word list entries can only match through ``words_aug`` (as in Data-Juicer).

Languages written without spaces (zh, ja) need a word segmenter first (Data-Juicer uses a SentencePiece model it
downloads at run time); without one a Chinese text is a few long "words" and its ratio is near 0.

Signals: ``flagged_words.ratio``; ``flagged_words.language`` when ``language: auto``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, Threshold

_SPLIT = re.compile(r" |\n|\t")
_SPECIAL_CATEGORIES = ("P", "S", "N", "Z", "C")


@functools.lru_cache(maxsize=65536)
def _is_special(ch: str) -> bool:
    return unicodedata.category(ch)[0] in _SPECIAL_CATEGORIES


def _strip_special(word: str) -> str:
    start, end = 0, len(word)
    while start < end and _is_special(word[start]):
        start += 1
    while end > start and _is_special(word[end - 1]):
        end -= 1
    return word[start:end]


def document_words(text: str, aug_sizes: tuple[int, ...] = (), aug_join: str = "") -> list[str]:
    """The words the ratio is computed over (steps 1-3 of the module docstring)."""
    words = [w for w in (_strip_special(w.lower()) for w in _SPLIT.split(text) if w) if w]
    if aug_sizes:
        extra = [aug_join.join(words[i:i + n]) for n in aug_sizes for i in range(len(words) - n + 1)]
        words = words + extra
    return words


def flagged_ratio(words: list[str], flagged: frozenset[str] | set[str]) -> float:
    if not words:
        return 0.0
    return min(1.0, sum(1 for w in words if w in flagged) / len(words))


def available_languages() -> list[str]:
    return sorted(p.name.removesuffix(".txt") for p in files("assay.harvest.filters").joinpath("wordlists").iterdir()
                  if p.name.endswith(".txt") and len(p.name) <= 6)


@functools.lru_cache(maxsize=None)
def load_word_list(language: str) -> frozenset[str]:
    """The shipped list for ``language`` (ISO 639-1), lower-cased; ``all``: the union of every list."""
    if language == "all":
        return frozenset().union(*(load_word_list(lang) for lang in available_languages()))
    path = files("assay.harvest.filters").joinpath("wordlists", f"{language}.txt")
    if not path.is_file():
        raise KeyError(f"no flagged-word list for language {language!r} (available: "
                       f"{', '.join(available_languages())}, all; or give words_file)")
    return _parse(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=16)
def load_word_file(path: str) -> frozenset[str]:
    return _parse(Path(path).read_text(encoding="utf-8"))


def _parse(text: str) -> frozenset[str]:
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#"))


class FlaggedWordsParams(FilterParams):
    language: str = Field("en", description="list to use: an ISO 639-1 code, 'all' (every list), or 'auto' "
                                            "(meta.language, from language_id)")
    default_language: str | None = Field("en", description="with language: auto, the list for records without "
                                                           "meta.language (null: keep them)")
    words_file: str | None = Field(None, description="use this list instead (one entry a line, '#' comments)")
    max_ratio: float = Field(0.045, ge=0, le=1, description="drop above this share of flagged words "
                                                            "(Data-Juicer: 0.045)")
    min_ratio: float = Field(0.0, ge=0, le=1, description="drop below this share (Data-Juicer: 0)")
    words_aug_sizes: tuple[int, ...] = Field((), description="also match joins of n consecutive words, for each n "
                                                             "(Data-Juicer's words_aug_group_sizes, e.g. [2])")
    words_aug_join: str = Field("", description="string between joined words")

    @field_validator("language")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ("auto", "all") and v not in available_languages():
            raise ValueError(f"no flagged-word list for {v!r}; available: {', '.join(available_languages())}, "
                             f"all, auto")
        return v


class FlaggedWords(Filter):
    """Drop documents with too high a share of flagged (obscene, profane) words, per language (Data-Juicer's
    ratio)."""

    name = "flagged_words"
    summary = "Drop documents with too many flagged (obscene, profane) words, per language (Data-Juicer's ratio)."
    version = "1"
    Params: ClassVar[type[FilterParams]] = FlaggedWordsParams
    signals = ("flagged_words.",)

    def thresholds(self) -> list[Threshold]:
        p: FlaggedWordsParams = self.params  # type: ignore[assignment]
        return [Threshold("flagged_words.ratio", ">", p.max_ratio, "too_many_flagged_words"),
                Threshold("flagged_words.ratio", "<", p.min_ratio, "too_few_flagged_words")]

    def _list_for(self, record: Record) -> frozenset[str] | None:
        p: FlaggedWordsParams = self.params  # type: ignore[assignment]
        if p.words_file:
            return load_word_file(p.words_file)
        if p.language != "auto":
            return load_word_list(p.language)
        lang = record.meta.get("language") or p.default_language
        if lang is None:
            self.count("no_language")
            return None
        lang = str(lang).split("_")[0].split("-")[0].lower()
        record.signals["flagged_words.language"] = lang
        if lang not in available_languages():
            self.count(f"no_list:{lang}")
            return None
        return load_word_list(lang)

    def score(self, record: Record) -> None:
        p: FlaggedWordsParams = self.params  # type: ignore[assignment]
        flagged = self._list_for(record)
        if flagged is None:
            return
        words = document_words(record.text, p.words_aug_sizes, p.words_aug_join)
        record.signals["flagged_words.ratio"] = flagged_ratio(words, flagged)

    def decide(self, record: Record) -> str | None:
        p: FlaggedWordsParams = self.params  # type: ignore[assignment]
        ratio = record.signals.get("flagged_words.ratio")
        if ratio is None:
            return None
        if ratio > p.max_ratio:
            return "too_many_flagged_words"
        if ratio < p.min_ratio:
            return "too_few_flagged_words"
        return None

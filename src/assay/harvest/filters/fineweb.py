"""FineWeb's own quality rules (Penedo et al. 2024, section 3.3.4), as datatrove's ``FineWebQualityFilter``.

Four document-level ratios computed over the non-blank lines: how many end in terminal punctuation, how many are
short, how many characters sit in duplicated lines, and how many newlines there are per word (lists and menus).
"""

from __future__ import annotations

from typing import ClassVar

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, Threshold
from assay.harvest.filters.gopher import duplicate_stats
from assay.harvest.filters.text import TERMINAL_PUNCTUATION, get_tokenizer


class FineWebQualityParams(FilterParams):
    #: drop if fewer than this share of lines end in terminal punctuation
    line_punct_thr: float = 0.12
    #: do not apply the rule above to documents where no line ends in punctuation
    line_punct_exclude_zero: bool = False
    #: line endings that count as punctuation (default: Unicode sentence terminators, as datatrove)
    stop_chars: tuple[str, ...] | None = None
    #: drop if more than this share of lines have at most ``short_line_length`` characters
    short_line_thr: float = 0.67
    short_line_length: int = 30
    #: drop if more than this share of characters (newlines excluded) are in lines that repeat an earlier line
    char_duplicates_ratio: float = 0.01
    #: drop if there are more than this many newlines per word
    new_line_ratio: float = 0.3
    language: str = "en"


class FineWebQuality(Filter):
    """FineWeb rules: punctuated-line ratio, short-line ratio, duplicated-line characters, newlines per word."""

    name = "fineweb_quality"
    version = "1"
    Params: ClassVar[type[FilterParams]] = FineWebQualityParams
    signals = ("fineweb.",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stop = self.params.stop_chars
        stop = tuple(TERMINAL_PUNCTUATION) if stop is None else tuple(stop)
        self._single_char_stops = frozenset(stop) if all(len(c) == 1 for c in stop) else None
        self._stops = stop

    def _ends_with_stop(self, line: str) -> bool:
        if self._single_char_stops is not None:
            return line[-1:] in self._single_char_stops
        return line.endswith(self._stops)

    def score(self, record: Record) -> None:
        p = self.params
        text = record.text
        s = record.signals
        lines = [line for line in text.split("\n") if line.strip()]
        n_lines = len(lines)
        s["fineweb.lines"] = n_lines
        if not n_lines:
            return
        s["fineweb.line_punct_ratio"] = sum(map(self._ends_with_stop, lines)) / n_lines
        short = p.short_line_length
        s["fineweb.short_line_ratio"] = sum(1 for line in lines if len(line) <= short) / n_lines
        chars = len(text) - text.count("\n")
        s["fineweb.char_dup_ratio"] = duplicate_stats(lines)[1] / chars
        n_words = get_tokenizer(p.language).count_words(text)
        s["fineweb.new_line_ratio"] = text.count("\n") / n_words if n_words else float(text.count("\n"))

    def thresholds(self) -> list[Threshold]:
        p = self.params  # (with line_punct_exclude_zero a ratio of exactly 0 is kept)
        return [Threshold("fineweb.lines", "<", 1, "empty"),
                Threshold("fineweb.line_punct_ratio", "<", p.line_punct_thr, "line_punct_ratio"),
                Threshold("fineweb.short_line_ratio", ">", p.short_line_thr, "short_line_ratio"),
                Threshold("fineweb.char_dup_ratio", ">", p.char_duplicates_ratio, "char_dup_ratio"),
                Threshold("fineweb.new_line_ratio", ">", p.new_line_ratio, "list_ratio")]

    def decide(self, record: Record) -> str | None:
        p = self.params
        s = record.signals
        if not s["fineweb.lines"]:
            return "empty"
        ratio = s["fineweb.line_punct_ratio"]
        if ratio < p.line_punct_thr and not (ratio == 0 and p.line_punct_exclude_zero):
            return "line_punct_ratio"
        if s["fineweb.short_line_ratio"] > p.short_line_thr:
            return "short_line_ratio"
        if s["fineweb.char_dup_ratio"] > p.char_duplicates_ratio:
            return "char_dup_ratio"
        if s["fineweb.new_line_ratio"] > p.new_line_ratio:
            return "list_ratio"
        return None

"""C4's line-level cleaning and document rules (Raffel et al. 2020, section 2.2), as datatrove's ``C4QualityFilter``.

Unlike the other heuristic filters this one *edits* documents: it keeps only the lines that end in terminal
punctuation, have at least ``min_words_per_line`` words and mention neither "javascript" nor a cookie/terms-of-use
phrase, removes Wikipedia-style citation marks ("[1]", "[edit]"), and then drops the document if fewer than
``min_num_sentences`` sentences remain, or if any kept line contains "lorem ipsum" or a curly bracket. A kept
document's content becomes its kept lines joined by newlines (only the content changes; no other signal is
recomputed).
"""

from __future__ import annotations

import re
from typing import ClassVar

from assay.core.record import Record
from assay.core.step import Batch, Filter, FilterParams, StepContext, Threshold
from assay.harvest.filters.text import get_tokenizer

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4QualityParams(FilterParams):
    #: keep only lines ending in . ? ! " or ' (and not in "...")
    require_terminal_punct: bool = True
    remove_citations: bool = True
    #: fewer sentences than this (after line removal) drops the document; -1 disables
    min_num_sentences: int = 5
    #: lines with fewer whitespace-separated words are removed; -1 disables
    min_words_per_line: int = 3
    #: lines with a longer word are removed; -1 disables
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    language: str = "en"


class C4Quality(Filter):
    """C4 rules: keep punctuated lines of 3+ words, drop javascript/policy lines; lorem ipsum, code, < 5 sentences."""

    name = "c4_quality"
    version = "1"
    Params: ClassVar[type[FilterParams]] = C4QualityParams
    signals = ("c4.",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._kept_text: dict[int, str] = {}  # id(record) -> cleaned text, for the records of the current batch

    def score(self, record: Record) -> None:
        p = self.params
        sentence_count = get_tokenizer(p.language).sentence_count
        lines_in = 0
        removed = {"long_word": 0, "no_terminal_punct": 0, "few_words": 0, "javascript": 0, "policy": 0}
        kept: list[str] = []
        sentences = 0
        doc_reason = None
        for line in record.text.splitlines():
            lines_in += 1
            line = line.strip()
            words = line.split()
            if p.max_word_length != -1 and any(len(w) > p.max_word_length for w in words):
                removed["long_word"] += 1
                continue
            if p.remove_citations and "[" in line:
                line = CITATION.sub("", line)
            if p.require_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                removed["no_terminal_punct"] += 1
                continue
            if len(words) < p.min_words_per_line:
                removed["few_words"] += 1
                continue
            lower = line.lower()
            if p.filter_lorem_ipsum and "lorem ipsum" in lower:
                doc_reason = "lorem_ipsum"
                break
            if p.filter_javascript and "javascript" in lower:
                removed["javascript"] += 1
                continue
            if p.filter_curly_bracket and "{" in line:
                doc_reason = "curly_bracket"
                break
            if p.filter_policy and any(phrase in lower for phrase in POLICY_PHRASES):
                removed["policy"] += 1
                continue
            if p.min_num_sentences != -1:
                sentences += sentence_count(line)
            kept.append(line)
        s = record.signals
        s["c4.lines"] = lines_in
        s["c4.lines_kept"] = len(kept)
        s["c4.sentences"] = sentences
        if doc_reason is not None:
            s["c4.doc_rule"] = doc_reason
        else:
            s.pop("c4.doc_rule", None)
            self._kept_text[id(record)] = "\n".join(kept).strip()
        for key, n in removed.items():
            if n:
                self.count(f"lines_removed:{key}", n)

    def thresholds(self) -> list[Threshold]:
        return [Threshold("c4.doc_rule", "set"),  # lorem_ipsum, curly_bracket
                Threshold("c4.sentences", "<", self.params.min_num_sentences, "too_few_sentences")]

    def decide(self, record: Record) -> str | None:
        s = record.signals
        reason = s.get("c4.doc_rule")
        if reason is not None:
            return reason
        if s["c4.sentences"] < self.params.min_num_sentences:
            return "too_few_sentences"
        return None

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        self._kept_text.clear()
        try:
            batch = super().process_batch(batch, ctx)
            for r in batch:
                cleaned = self._kept_text.get(id(r))
                if cleaned is None or r.drop is not None or f"{self.name}.flag" in r.signals:
                    continue
                if isinstance(r.content, str):
                    r.content = cleaned
                else:
                    self.count("not_edited:non_text_content")
            return batch
        finally:
            self._kept_text.clear()

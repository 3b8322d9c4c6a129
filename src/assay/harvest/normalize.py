"""``normalize_text``: repair and normalise text before filtering and dedup (Data-Juicer's fix_unicode,
punctuation_normalization and whitespace_normalization mappers, and NeMo Curator's UnicodeReformatter, in one step).

Four stages, each optional, in this order (mojibake must be repaired before any normalisation changes the bytes
the repair recognises):

1. ``fix_mojibake``: ``ftfy.fix_text`` (needs the ``harvest`` extra): text decoded with the wrong codec
   (``cafÃ©`` → ``café``), HTML entities left in plain text, curly quotes as ``â€œ``... ftfy also applies the
   Unicode normalisation of stage 2 itself, so with this stage on the text equals ``ftfy.fix_text(text,
   normalization=unicode)`` before the punctuation and whitespace stages.
2. ``unicode``: a Unicode normal form (NFKC by default: full-width letters and digits become ASCII, ligatures are
   split, ``…`` becomes ``...``; it also flattens superscripts, ``x²`` → ``x2``: ``NFC``, Data-Juicer's
   ``fix_unicode_mapper`` default, keeps them).
3. ``punctuation``: typographic and CJK punctuation to ASCII (:data:`PUNCTUATION`; off by default: it changes
   the text of languages that use these marks properly).
4. ``whitespace``: line breaks (``\\r\\n``, ``\\r``, U+2028/2029, vertical tab, form feed, NEL) become ``\\n``;
   other Unicode spaces and tabs become a plain space; invisible characters (zero-width space, word joiner, BOM, soft
   hyphen) are removed; trailing spaces of every line and blank lines beyond ``max_blank_lines`` go; the text is
   stripped.

Differences from Data-Juicer's ops, on purpose: zero-width *joiners* (U+200C/U+200D) are kept (they are part of
Persian, Indic and emoji spelling; Data-Juicer turns them into spaces, which splits words); zero-width spaces are
removed rather than made spaces; ``１`` is not mapped to ``"`` (a slip in Data-Juicer's table) and ``—`` becomes
``-`` rather than `` - ``. benchmarks/operators_vs_peers.py measures the agreement.

Counters: ``changed`` (records whose text changed) and ``changed:<stage>`` per stage (``ftfy``, ``unicode``,
``punctuation``, ``whitespace``). Records whose content is not a string are passed through untouched.
"""

from __future__ import annotations

import re
import unicodedata
from typing import ClassVar, Literal

from pydantic import Field

from assay.core.step import Batch, Step, StepContext, StepParams

#: typographic and CJK punctuation → ASCII (applied after the Unicode normal form; NFKC already maps the full-width
#: forms ，：；！？（）％～ and the ellipsis)
PUNCTUATION: dict[str, str] = {
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u00b4": "'", "\u2039": "'", "\u203a": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2501": "-", "\u25ba": "-",
    "\u2026": "...",
    "\u3002": ".", "\uff0e": ".", "\u3001": ",", "\uff0c": ",",
    "\u300c": '"', "\u300d": '"', "\u300e": '"', "\u300f": '"', "\u300a": '"', "\u300b": '"',
    "\u3008": "<", "\u3009": ">", "\u3010": "[", "\u3011": "]",
    "\u2236": ":", "\uff1a": ":", "\uff1b": ";", "\uff1f": "?", "\uff01": "!", "\uff08": "(", "\uff09": ")",
    "\uff05": "%", "\uff5e": "~",
}
_PUNCT_TABLE = str.maketrans(PUNCTUATION)

#: invisible characters removed by the whitespace stage (zero-width space, word joiner, BOM, soft hyphen, U+FFFC)
INVISIBLE = "\u200b\u2060\ufeff\u00ad\ufffc"
_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\x0b\x0c\x85]")
# every Unicode space separator (Zs) but the plain space, and the tab
_SPACES = "\t" + "".join(chr(c) for c in range(0x80, 0x3001)
                         if unicodedata.category(chr(c)) == "Zs")
_WS_TABLE = str.maketrans({**{c: " " for c in _SPACES}, **{c: None for c in INVISIBLE}})
_TRAILING = re.compile(r"[ ]+$", re.MULTILINE)


def normalize_whitespace(text: str, max_blank_lines: int = 1) -> str:
    """The whitespace stage alone (see the module docstring)."""
    text = _LINE_BREAKS.sub("\n", text).translate(_WS_TABLE)
    text = _TRAILING.sub("", text)
    text = re.sub(r"\n{%d,}" % (max_blank_lines + 2), "\n" * (max_blank_lines + 1), text)
    return text.strip()


def normalize_punctuation(text: str) -> str:
    return text.translate(_PUNCT_TABLE)


class NormalizeTextParams(StepParams):
    fix_mojibake: bool = Field(True, description="repair mis-decoded text with ftfy.fix_text (harvest extra)")
    unicode: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = Field(
        "NFKC", description="Unicode normal form (null: none)")
    punctuation: bool = Field(False, description="typographic and CJK punctuation to ASCII")
    whitespace: bool = Field(True, description="line breaks, exotic spaces, invisible characters, trailing "
                                               "spaces, blank lines")
    max_blank_lines: int = Field(1, ge=0, description="blank lines kept in a row (whitespace stage)")


class NormalizeText(Step):
    """Repair mojibake (ftfy), apply a Unicode normal form, normalise punctuation and whitespace."""

    name = "normalize_text"
    version = "1"
    Params: ClassVar[type[StepParams]] = NormalizeTextParams

    def setup(self, ctx: StepContext) -> None:
        if self.params.fix_mojibake:
            try:
                import ftfy
            except ModuleNotFoundError as e:
                raise ModuleNotFoundError("normalize_text with fix_mojibake needs ftfy: pip install "
                                          "'assay[harvest]' (or set fix_mojibake: false)", name="ftfy") from e
            self._ftfy = ftfy

    def normalize(self, text: str) -> tuple[str, list[str]]:
        """The normalised text and the stages that changed it."""
        p: NormalizeTextParams = self.params  # type: ignore[assignment]
        changed = []
        if p.fix_mojibake:
            if not hasattr(self, "_ftfy"):
                self.setup(StepContext())
            new = self._ftfy.fix_text(text, normalization=p.unicode)
            if new != text:
                # ftfy applies the normal form too: a change a plain normal form explains is the unicode stage's
                plain = unicodedata.normalize(p.unicode, text) if p.unicode else text
                changed.append("ftfy" if new != plain else "unicode")
            text = new
        elif p.unicode:
            new = unicodedata.normalize(p.unicode, text)
            if new != text:
                changed.append("unicode")
            text = new
        if p.punctuation:
            new = normalize_punctuation(text)
            if new != text:
                changed.append("punctuation")
            text = new
        if p.whitespace:
            new = normalize_whitespace(text, p.max_blank_lines)
            if new != text:
                changed.append("whitespace")
            text = new
        return text, changed

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for r in batch:
            if r.drop is not None or not isinstance(r.content, str):
                continue
            text, changed = self.normalize(r.content)
            if changed:
                r.content = text
                self.count("changed")
                for stage in changed:
                    self.count(f"changed:{stage}")
        return batch

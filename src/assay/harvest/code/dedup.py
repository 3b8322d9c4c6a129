"""``code_minhash_dedup``: near-duplicate code files, with the text harvest's MinHash-LSH and code-aware shingles.

The MinHash machinery (signatures, banding, the cross-shard reduce, the choice of the kept record) is
``minhash_dedup``'s, unchanged. What differs is what is shingled. ``minhash_dedup`` splits text into words at
every character that is not a letter or digit, so ``max_line_length`` becomes ``max line length``; BigCode's
near-dedup of The Stack splits code on ``[^A-Za-z_0-9]`` instead, keeping identifiers whole, and compares 5-grams
of those tokens at a Jaccard threshold of about 0.7 to 0.85. This step feeds the MinHash step a *view* of each file
in which ``_`` inside identifiers is spelled with a letter the word splitter keeps (``ß``, which the splitter
counts as a word character; a real ``ß`` in code is rare and only merges two tokens), and optionally without
comments (``strip_comments``) so that files differing only by license headers or commentary still cluster. The
record's content itself is never changed: the view exists only while signatures are computed in ``collect``.

Defaults follow BigCode's code dedup: 5-token shingles, 256 MinHash values in 32 bands of 8 rows, i.e. a
threshold near (1/32)^(1/8) ≈ 0.65, and candidate pairs verified at an estimated Jaccard ≥ 0.7 as their
``jaccard_threshold``.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, StepContext
from assay.harvest.code.comments import _SCANNERS, _PYTHON
from assay.harvest.dedup.minhash import MinHashDedup

_UNDERSCORE_STAND_IN = "ß"
_IDENT_UNDERSCORE = re.compile(r"(?<=[A-Za-z0-9_])_|_(?=[A-Za-z0-9])")


def code_shingle_text(text: str, language: str | None = None, strip_comments: bool = False) -> str:
    """The text the MinHash step shingles for a code file: identifiers kept whole, comments optionally removed."""
    if strip_comments:
        text = _without_comments(text, language)
    return _IDENT_UNDERSCORE.sub(_UNDERSCORE_STAND_IN, text)


def _without_comments(text: str, language: str | None) -> str:
    if language == "Python":
        return _PYTHON.sub(lambda m: "" if m.start(1) >= 0 else m.group(0), text)
    scanner = _SCANNERS.get(language or "")
    if scanner is None:
        return text
    return scanner.sub(lambda m: "" if m.start(1) >= 0 else m.group(0), text)


class _ShingleView(Record):
    """A record that shows the MinHash step its code-aware text; id and content (hence its key) are the original's."""

    __slots__ = ("_view",)

    def __init__(self, original: Record, view: str) -> None:
        super().__init__(original.id, original.content, original.modality, original.meta, original.signals,
                         original.lineage, original.drop)
        self._view = view

    @property
    def text(self) -> str:  # type: ignore[override]
        return self._view


class CodeMinHashDedup(MinHashDedup):
    """Drop near-duplicate code files (MinHash-LSH over identifier-preserving token 5-grams)."""

    name = "code_minhash_dedup"
    version = "1"

    class Params(MinHashDedup.Params):
        ngram: int = Field(5, ge=1, le=32)
        bands: int = Field(32, ge=1, le=1024)
        rows: int = Field(8, ge=1, le=64)
        min_jaccard: float | None = Field(0.7, ge=0.0, le=1.0)
        #: shingle the code without its comments
        strip_comments: bool = False

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        strip = self.params.strip_comments  # type: ignore[attr-defined]
        originals: list[Batch] = []

        def views() -> Iterator[Batch]:
            for batch in batches:
                originals.append(batch)
                yield [r if r.drop is not None else
                       _ShingleView(r, code_shingle_text(r.text, r.meta.get("language"), strip)) for r in batch]

        for _ in super().collect(views(), ctx):
            yield originals.pop(0)

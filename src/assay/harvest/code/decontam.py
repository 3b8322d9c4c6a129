"""``code_decontaminate``: drop (or flag) code files that contain a benchmark's prompt or solution verbatim.

The ``decontaminate`` step (:mod:`assay.harvest.decontam`) catches shared word n-grams; this step adds the
exact-substring test BigCode used for The Stack / StarCoder: a file is contaminated if it contains a benchmark
item's text (HumanEval's ``prompt``, its ``canonical_solution``, or both joined) as a substring, up to
indentation and spacing. Both texts are compared as sequences of lines with each line stripped and its inner runs
of white space folded to one space, and blank lines removed, so re-indenting a solution or pasting it into a
class does not hide it. The first line of a pattern may end a longer line of the file and its last line may
start one (``x = 1; return ...``).

Patterns shorter than ``min_chars`` (after normalisation) are not used on their own: one-line solutions such as
``return a + b`` occur in innocent code all the time (they still count inside the joined prompt + solution, and
the n-gram step covers them). Matching is an index of each pattern's longest line; a file is hashed line by line
and only the pattern lines around an anchor hit are compared, so the cost does not grow with the number of
patterns.

Signals: ``code_decontam.benchmark``, ``code_decontam.item`` (the item's ``task_id``/``id`` or line number) and
``code_decontam.field`` (which field matched).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator

from assay.core.errors import RecipeError
from assay.core.record import Record
from assay.core.step import Filter, FilterParams, StepContext
from assay.harvest.decontam import EvalSource, iter_eval_items



def normalize_lines(text: str) -> list[str]:
    """Non-blank lines of ``text``, stripped, with inner white space folded to single spaces."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Pattern:
    lines: tuple[str, ...]
    benchmark: str
    item: str
    field: str


class SubstringIndex:
    """Patterns (normalised line sequences) indexed by their longest line."""

    def __init__(self, min_chars: int) -> None:
        self.min_chars = min_chars
        self.patterns: list[Pattern] = []
        self.anchors: dict[str, list[tuple[int, int]]] = {}  # line -> [(pattern index, offset in pattern)]
        self.short = 0

    def add(self, text: str, benchmark: str, item: str, field: str) -> None:
        lines = tuple(normalize_lines(text))
        if not lines:
            return
        if sum(map(len, lines)) + len(lines) - 1 < self.min_chars:
            self.short += 1
            return
        # the anchor must be a full line of the file: a middle line when there is one
        inner = range(1, len(lines) - 1) if len(lines) > 2 else range(len(lines))
        offset = max(inner, key=lambda i: (len(lines[i]), -i))
        idx = len(self.patterns)
        self.patterns.append(Pattern(lines, benchmark, item, field))
        self.anchors.setdefault(lines[offset], []).append((idx, offset))

    def find(self, text: str) -> Pattern | None:
        """The first pattern contained in ``text`` (None when clean)."""
        doc = normalize_lines(text)
        anchors = self.anchors
        for i, line in enumerate(doc):
            hits = anchors.get(line)
            if hits is None:
                continue
            for idx, off in hits:
                if self._matches(doc, i - off, self.patterns[idx].lines):
                    return self.patterns[idx]
        return None

    @staticmethod
    def _matches(doc: list[str], start: int, lines: tuple[str, ...]) -> bool:
        n = len(lines)
        if start < 0 or start + n > len(doc):
            return False
        if n == 1:
            return doc[start] == lines[0]
        if not doc[start].endswith(lines[0]) or not doc[start + n - 1].startswith(lines[-1]):
            return False
        return all(doc[start + k] == lines[k] for k in range(1, n - 1))


def build_substring_index(sources: list[EvalSource], min_chars: int, joined: bool = True) -> SubstringIndex:
    index = SubstringIndex(min_chars)
    for source in sources:
        label = source.label()
        for item, fields in iter_eval_items(source, "code_decontaminate"):
            for field, text in fields.items():
                index.add(text, label, item, field)
            if joined and len(fields) > 1:
                # prompt + solution as one text (HumanEval solutions continue the prompt's last line)
                index.add("".join(fields[f] for f in source.fields if f in fields), label, item, "+".join(fields))
    return index


_INDEXES: dict[tuple, SubstringIndex] = {}
_LOCK = threading.Lock()


class CodeDecontaminateParams(FilterParams):
    #: evaluation sets (path, fields, name), as for ``decontaminate``; HumanEval: fields [prompt, canonical_solution]
    sources: list[EvalSource] = Field(min_length=1)
    #: patterns shorter than this (normalised characters) are not matched on their own
    min_chars: int = Field(50, ge=1)
    #: also match the item's fields joined in order (prompt followed by its solution)
    joined: bool = True

    @field_validator("sources", mode="before")
    @classmethod
    def _paths_as_sources(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, (list, tuple)):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value


class CodeDecontaminate(Filter):
    """Drop code containing a benchmark's prompt or solution verbatim (up to indentation and spacing)."""

    name = "code_decontaminate"
    version = "1"
    Params: ClassVar = CodeDecontaminateParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._substrings: SubstringIndex | None = None

    def setup(self, ctx: StepContext) -> None:
        self._load()

    def _load(self) -> SubstringIndex:
        if self._substrings is None:
            p: CodeDecontaminateParams = self.params  # type: ignore[assignment]
            key = (tuple((s.path, s.fields, s.label()) for s in p.sources), p.min_chars, p.joined)
            with _LOCK:
                index = _INDEXES.get(key)
                if index is None:
                    index = _INDEXES[key] = build_substring_index(list(p.sources), p.min_chars, p.joined)
            self._substrings = index
        return self._substrings

    def score(self, record: Record) -> None:
        hit = self._load().find(record.text)
        if hit is not None:
            record.signals["code_decontam.benchmark"] = hit.benchmark
            record.signals["code_decontam.item"] = hit.item
            record.signals["code_decontam.field"] = hit.field

    def decide(self, record: Record) -> str | None:
        benchmark = record.signals.get("code_decontam.benchmark")
        if benchmark is None:
            return None
        self.count(f"code_decontam.contaminated:{benchmark}")
        return "contaminated"

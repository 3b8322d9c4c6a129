"""``decontaminate``: drop (or flag) training documents that contain text from evaluation sets.

As GPT-3 and datatrove do it: a document is contaminated if it shares any n-gram (default 13 words) with an
evaluation item. Words are normalised first (Unicode NFKD, accents stripped, lower case, ``\\w+`` runs only, so
punctuation, white space and code layout do not matter).

Evaluation sets are files:

* JSONL / JSONL.gz (``.jsonl``, ``.json`` lines, any fsspec compression): one item per line; ``fields`` names the
  item's fields joined in order into its text (e.g. HumanEval: ``[prompt, canonical_solution]``, so n-grams that
  straddle prompt and answer count too, as datatrove's "overlap" n-grams). List values are joined.
* anything else (``.txt``, ``.md``, ...): the whole file is one text.

Items shorter than ``n`` words can only be caught together with their neighbours in the text (counted in
``decontam.short_items`` when the index is built); lower ``n`` (8 is common for code) to catch short answers.

The index is built once per worker process in :meth:`Decontaminate.setup` and shared by the steps of that
process: a sorted ``uint64`` array of n-gram hashes (plus which benchmark each came from), queried with one
vectorised ``searchsorted`` per document. An n-gram's hash is a polynomial over 64-bit xxh3 hashes of its words
(so every window of a document is hashed in ``n`` numpy passes).

Signals: ``decontam.matches`` (number of the document's n-grams found in the index), and when there is one,
``decontam.benchmark`` (the benchmark with most matches) and ``decontam.ngram`` (the first matching n-gram).
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator

from assay.core.errors import RecipeError
from assay.core.record import Record
from assay.core.step import Filter, FilterParams, StepContext, StepParams

_WORD = re.compile(r"\w+")
#: odd 64-bit multiplier of the n-gram polynomial hash
_BASE = np.uint64(0x9E3779B97F4A7C15)
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")


class EvalSource(BaseModel):
    """One evaluation set to decontaminate against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a local path or fsspec URL
    path: str
    #: JSONL fields making up an item's text, in order (default: ``text``); ignored for plain-text files
    fields: tuple[str, ...] = ("text",)
    #: name recorded in signals (default: the file name without its extensions)
    name: str | None = None

    def label(self) -> str:
        if self.name:
            return self.name
        base = self.path.rstrip("/").rsplit("/", 1)[-1]
        return base.split(".", 1)[0] or base


class DecontaminateParams(FilterParams):
    sources: list[EvalSource] = Field(min_length=1, description="evaluation sets: {path, fields, name} or a "
                                                                "bare path")
    n: int = Field(13, ge=1, le=64, description="n-gram length in words (13 as GPT-3)")
    min_matches: int = Field(1, ge=1, description="a document with at least this many matching n-grams is "
                                                  "contaminated")

    @field_validator("sources", mode="before")
    @classmethod
    def _paths_as_sources(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, (list, tuple)):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value


# -- normalisation and hashing -----------------------------------------------------------------------------------
def normalize_words(text: str) -> list[str]:
    """Lower-cased, accent-stripped ``\\w+`` runs of ``text``."""
    text = unicodedata.normalize("NFKD", text.lower())
    if not text.isascii():
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _WORD.findall(text)


class _WordHasher:
    """64-bit hashes of words, with a bounded memo (common words repeat a lot)."""

    MAX_MEMO = 1_000_000

    def __init__(self) -> None:
        self._memo: dict[str, int] = {}

    def __call__(self, words: list[str]) -> np.ndarray:
        memo = self._memo
        if len(memo) > self.MAX_MEMO:
            memo.clear()
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = memo.get(w)
            if h is None:
                h = memo[w] = xxhash.xxh3_64_intdigest(w.encode("utf-8", "surrogatepass"))
            out[i] = h
        return out


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of ``n`` consecutive words (arithmetic mod 2**64): ``len - n + 1`` values."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            out = out * _BASE + word_hashes[j: j + count]
    return out


# -- reading evaluation sets -------------------------------------------------------------------------------------
def _is_jsonl(path: str) -> bool:
    name = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.endswith(_JSONL_SUFFIXES)


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(_field_text(v) for v in value)
    if value is None:
        return ""
    return str(value)


def iter_eval_items(source: EvalSource, step: str = "decontaminate") -> Iterator[tuple[str, dict[str, str]]]:
    """(item id, {field: text}) for each item of an evaluation set: one per JSONL line (id from ``task_id``/``id``
    or the line number), or the whole file as one item ``{"text": ...}``. A malformed line is a :class:`RecipeError`
    naming ``step``, the file and the line: contamination checks against half an evaluation set are worse than none."""
    import fsspec

    try:
        opened = fsspec.open(source.path, "rt", compression="infer", encoding="utf-8", errors="replace")
        with opened as f:
            if not _is_jsonl(source.path):
                yield "0", {"text": f.read()}
                return
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{step}: {source.path} line {line_no} is not JSON ({e})") from None
                if not isinstance(item, dict):
                    raise RecipeError(f"{step}: {source.path} line {line_no} is not a JSON object")
                fields = {k: _field_text(item[k]) for k in source.fields if item.get(k) is not None}
                if not fields:
                    raise RecipeError(f"{step}: {source.path} line {line_no} has none of the fields "
                                      f"{list(source.fields)} (it has {sorted(item)})")
                yield str(item.get("task_id", item.get("id", line_no))), fields
    except FileNotFoundError:
        raise RecipeError(f"{step}: evaluation set not found: {source.path}") from None


def iter_source_texts(source: EvalSource) -> Iterator[str]:
    """The item texts of one evaluation set (one per JSONL line, or the whole file): the item's fields joined."""
    for _, fields in iter_eval_items(source):
        yield "\n".join(fields.values())


class NgramIndex:
    """The n-gram hashes of a set of benchmarks: ``lookup(hashes)`` says which are contaminated and by what."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.benchmarks: list[str] = []
        self.short_items = 0
        self.items = 0
        self._parts: list[tuple[np.ndarray, int]] = []
        self.keys = np.empty(0, dtype=np.uint64)
        self.owners = np.empty(0, dtype=np.int32)
        self._hasher = _WordHasher()

    def add(self, benchmark: str, text: str) -> None:
        if benchmark not in self.benchmarks:
            self.benchmarks.append(benchmark)
        words = normalize_words(text)
        self.items += 1
        if len(words) < self.n:
            self.short_items += 1
            return
        self._parts.append((ngram_hashes(self._hasher(words), self.n), self.benchmarks.index(benchmark)))

    def freeze(self) -> "NgramIndex":
        """Sort and deduplicate (a hash shared by two benchmarks is credited to the first listed)."""
        if self._parts:
            keys = np.concatenate([h for h, _ in self._parts])
            owners = np.concatenate([np.full(len(h), b, dtype=np.int32) for h, b in self._parts])
            keys, first = np.unique(keys, return_index=True)
            self.keys, self.owners = keys, owners[first]
        self._parts = []
        return self

    def __len__(self) -> int:
        return len(self.keys)

    def match(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``words`` where a contaminated n-gram starts, and the benchmark index of each."""
        hashes = ngram_hashes(self._hasher(words), self.n)
        if not len(hashes) or not len(self.keys):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        idx = np.searchsorted(self.keys, hashes)
        idx[idx == len(self.keys)] = 0
        hit = self.keys[idx] == hashes
        positions = np.flatnonzero(hit)
        return positions, self.owners[idx[positions]]


def build_index(sources: list[EvalSource], n: int) -> NgramIndex:
    index = NgramIndex(n)
    for source in sources:
        label = source.label()
        for text in iter_source_texts(source):
            index.add(label, text)
    return index.freeze()


#: indexes built in this process, keyed by their sources and n (each worker builds each index once)
_INDEXES: dict[tuple, NgramIndex] = {}
_INDEXES_LOCK = threading.Lock()


def _source_key(source: EvalSource) -> tuple:
    try:
        stat = Path(source.path).stat()
        version: tuple = (stat.st_mtime_ns, stat.st_size)
    except OSError:  # remote URL: trust the path
        version = ()
    return (source.path, source.fields, source.label(), version)


def get_index(sources: list[EvalSource], n: int) -> NgramIndex:
    key = (tuple(_source_key(s) for s in sources), n)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = build_index(sources, n)
        return index


class Decontaminate(Filter):
    """Drop documents sharing an n-gram (default 13 words) with an evaluation set (HumanEval, MMLU, ...)."""

    name = "decontaminate"
    version = "1"
    Params: ClassVar[type[StepParams]] = DecontaminateParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.ngram_index: NgramIndex | None = None

    def setup(self, ctx: StepContext) -> None:
        self._load()

    def _load(self) -> NgramIndex:
        if self.ngram_index is None:
            p: DecontaminateParams = self.params  # type: ignore[assignment]
            self.ngram_index = get_index(list(p.sources), p.n)
        return self.ngram_index

    def score(self, record: Record) -> None:
        index = self._load()
        words = normalize_words(record.text)
        positions, owners = index.match(words)
        record.signals["decontam.matches"] = int(len(positions))
        if len(positions):
            counts = np.bincount(owners, minlength=len(index.benchmarks))
            record.signals["decontam.benchmark"] = index.benchmarks[int(np.argmax(counts))]
            first = int(positions[0])
            record.signals["decontam.ngram"] = " ".join(words[first: first + index.n])

    def decide(self, record: Record) -> str | None:
        if record.signals.get("decontam.matches", 0) >= self.params.min_matches:  # type: ignore[attr-defined]
            self.count(f"decontam.contaminated:{record.signals.get('decontam.benchmark')}")
            return "contaminated"
        return None

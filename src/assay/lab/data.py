"""Reading the texts of a dataset for the lab, and splitting a clean corpus into train and held-out parts.

A dataset is whatever Assay writes or reads: JSONL / JSONL.gz / Parquet files of records (the text is the record's
``content``) or foreign ``{"text": ...}`` JSONL, given as files, folders or globs (read through :mod:`assay.io`).
Plain ``.txt`` files are also accepted, one document per file (e.g. the Python documentation sources). An Assay
output folder contributes its kept records only: files under ``rejected/`` and records marked as dropped are
skipped. Empty and non-text records are counted, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import xxhash


@dataclass
class Texts:
    """The documents of one dataset and what was skipped while reading it."""

    name: str
    docs: list[str]
    skipped: Counter = field(default_factory=Counter)

    @property
    def chars(self) -> int:
        return sum(len(d) for d in self.docs)


def _is_rejected(path: str) -> bool:
    return "rejected" in Path(path).parts[:-1]


def _txt_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".txt" else []
    if path.is_dir():
        return sorted(p for p in path.rglob("*.txt") if p.is_file() and not p.name.startswith((".", "_")))
    return []


def read_texts(paths: str | Sequence[str], name: str | None = None, max_docs: int | None = None) -> Texts:
    """Read the documents of a dataset (see the module docstring for what is accepted)."""
    from assay.core.errors import ErrorLog
    from assay.io.files import expand_inputs
    from assay.io.sources import plan_shards, read_shard

    paths = [paths] if isinstance(paths, str) else list(paths)
    out = Texts(name or Path(paths[0]).name.split(".")[0], [])
    files: list[str] = []
    for p in paths:
        txt = _txt_files(Path(p))
        for f in txt:
            _add(out, f.read_bytes().decode("utf-8", errors="replace"))
        if txt and Path(p).is_file():
            continue
        try:  # a folder may hold data files beside its .txt files
            files.extend(f for f in expand_inputs([p]) if not _is_rejected(f))
        except FileNotFoundError:
            if not txt:
                raise
    if files:
        errors = ErrorLog()
        for shard in plan_shards(files, shard_bytes=0):
            for record in read_shard(shard, errors):
                if max_docs is not None and len(out.docs) >= max_docs:
                    break
                if record.drop is not None:
                    out.skipped["dropped_record"] += 1
                    continue
                _add(out, record.text)
        out.skipped.update(errors.counts)
    if max_docs is not None:
        out.docs = out.docs[:max_docs]
    return out


def _add(out: Texts, text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        out.skipped["empty_or_not_text"] += 1
        return
    if "\x00" in text[:4096]:
        out.skipped["binary"] += 1
        return
    # lone surrogates (from broken encodings) would make the tokenizer raise: replace them
    out.docs.append(text.encode("utf-8", "replace").decode("utf-8"))


def split_docs(docs: Iterable[str], heldout_fraction: float, salt: str = "assay-lab") -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split by a hash of each document's text (stable under reordering)."""
    train, heldout = [], []
    threshold = int(heldout_fraction * 2**64)
    for d in docs:
        h = xxhash.xxh3_64_intdigest(f"{salt}\x00{d}".encode("utf-8", "replace"))
        (heldout if h < threshold else train).append(d)
    return train, heldout

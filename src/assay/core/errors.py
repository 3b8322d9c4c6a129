"""Errors: the ones that stop a run (bad recipes, bad arguments) and the ones that are counted and skipped
(a truncated gzip, a broken WARC record, a bad JSON line, a page that takes too long)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class AssayError(Exception):
    """An error meant for the user: printed without a traceback by the CLI."""


class RecipeError(AssayError):
    """A recipe that cannot be used; the message names the bad key and what was expected."""


@dataclass
class ErrorLog:
    """Counted skips of one shard: each entry says what kind, which file, where in it, and why."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    max_entries: int = 10_000  # keep the log bounded on pathological inputs; counts stay exact

    def add(self, kind: str, source: str, offset: int | str | None, message: str) -> None:
        self.counts[kind] += 1
        if len(self.entries) < self.max_entries:
            self.entries.append({"kind": kind, "source": source, "offset": offset, "message": message[:500]})

    def __len__(self) -> int:
        return sum(self.counts.values())

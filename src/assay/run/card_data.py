"""What the data card learns from a run's records (kept and rejected), beyond ``stats.json``.

Every record carries the signals of every step it went through and its lineage, and a rejected one its drop step and
reason, so the card can show, for each filter, the distribution of its signals over all records that *reached* it
(kept, or dropped there or later), which records each drop reason took, where records came from, dedup clusters and
one record's lineage. In an analysis run (``assay run --analyze``) nothing was dropped: a record stops, for the card,
at the first step that flagged it (``signals["<step>.flag"]``), which is where a real run would have dropped it.

Big runs are read through a bounded sample: a hash of each record's id decides, so the same records every time;
:attr:`CardData.sampled` says how many were read of how many.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import xxhash

from assay.core.errors import ErrorLog
from assay.core.step import Filter, Step
from assay.io.sources import in_sample, plan_shards, read_shard

MAX_RECORDS = 20_000  # records the card reads at most (a hash-of-id sample beyond that)
TEXT_CHARS = 800  # of each record's text kept for examples


@dataclass
class Seen:
    """The part of a record the card uses."""

    id: str
    text: str
    meta: dict[str, Any]
    signals: dict[str, Any]
    lineage: list[tuple[str, str, str]]
    drop: tuple[str, str] | None
    stop: int | None = None  # the recipe position where it was dropped (or would be, in an analysis run)
    reason: str | None = None

    @property
    def order(self) -> int:
        """A seeded, deterministic shuffle key (examples are the records with the smallest keys, not the first in
        a file)."""
        return xxhash.xxh3_64_intdigest(self.id.encode())

    def reached(self, index: int) -> bool:
        return self.stop is None or self.stop >= index


def origin(meta: dict[str, Any]) -> str:
    """Where a record came from: its URL's host, else its input file's name."""
    url = meta.get("url")
    if isinstance(url, str) and url:
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if host:
            return host
    source = meta.get("source")
    return os.path.basename(str(source)) if source else "(unknown)"


def step_signals(step: Step, keys: list[str]) -> list[str]:
    """The keys among ``keys`` that ``step`` wrote: a filter's declared signals, a dedup step's ``<prefix>.*``, and
    ``<step>.*`` (flags)."""
    prefix = getattr(step, "signal_prefix", None)
    out = []
    for k in keys:
        if (isinstance(step, Filter) and step.owns_signal(k)) or k.startswith(f"{step.name}.") or (
                prefix and k.startswith(f"{prefix}.")):
            out.append(k)
    return out


@dataclass
class CardData:
    steps: list[Step]
    records: list[Seen]
    total: int  # records in the run's files
    analysis: bool = False
    #: (step index, reason) -> records of the sample that stopped there
    by_reason: dict[tuple[int, str], list[Seen]] = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        return len(self.records) < self.total

    def reaching(self, index: int) -> list[Seen]:
        return [r for r in self.records if r.reached(index)]

    def would_drop(self, index: int) -> Counter:
        """Reason -> records the step at ``index`` drops (or would drop) among the records read."""
        return Counter({reason: len(rs) for (i, reason), rs in self.by_reason.items() if i == index})

    def examples(self, index: int, reason: str, n: int = 3) -> list[Seen]:
        return sorted(self.by_reason.get((index, reason), []), key=lambda r: r.order)[:n]

    def languages(self, index: int) -> list[tuple[str, int, int]]:
        """(language, records that reached the step, of which the step dropped) for the language_id at ``index``."""
        seen: Counter = Counter()
        dropped: Counter = Counter()
        for r in self.reaching(index):
            lang = str(r.signals.get("lang", "(none)"))
            seen[lang] += 1
            if r.stop == index:
                dropped[lang] += 1
        return [(lang, c, dropped[lang]) for lang, c in seen.most_common()]

    def origins(self) -> list[tuple[str, int, int, str]]:
        """(host or input file, records, kept, top drop reason) by number of records."""
        total: Counter = Counter()
        kept: Counter = Counter()
        reasons: dict[str, Counter] = defaultdict(Counter)
        for r in self.records:
            o = origin(r.meta)
            total[o] += 1
            if r.stop is None:
                kept[o] += 1
            else:
                reasons[o][f"{self.steps[r.stop].name}: {r.reason}" if r.stop < len(self.steps) else r.reason] += 1
        return [(o, c, kept[o], reasons[o].most_common(1)[0][0] if reasons[o] else "")
                for o, c in total.most_common()]

    def clusters(self, step: Step, n: int = 3) -> list[tuple[Seen | None, str, list[Seen]]]:
        """Up to ``n`` dedup clusters of ``step``: (kept member if read, its id, dropped duplicates), largest first."""
        key = f"{getattr(step, 'signal_prefix', step.name)}.cluster"
        groups: dict[str, list[Seen]] = defaultdict(list)
        for r in self.records:
            kept_id = r.signals.get(key)
            if kept_id is not None and r.stop == step.index:
                groups[str(kept_id)].append(r)
        by_id = {r.id: r for r in self.records}
        order = sorted(groups, key=lambda k: (-len(groups[k]), xxhash.xxh3_64_intdigest(k.encode())))
        return [(by_id.get(k), k, sorted(groups[k], key=lambda r: r.order)) for k in order[:n]]

    def lineage_sample(self) -> Seen | None:
        """A kept record (seeded choice) with the longest lineage; a rejected one if nothing was kept."""
        pool = [r for r in self.records if r.stop is None] or self.records
        if not pool:
            return None
        return min(pool, key=lambda r: (-len(r.lineage), r.order))


def _stop(r: Seen, positions: dict[tuple[str, str], int], names: dict[str, int],
          flag_order: list[tuple[int, str]]) -> tuple[int | None, str | None]:
    if r.drop is not None:
        step, reason = r.drop
        last = r.lineage[-1] if r.lineage else None
        if last is not None and last[0] == step and (step, last[2]) in positions:
            return positions[(step, last[2])], reason
        return names.get(step, len(names)), reason
    for index, name in flag_order:
        flag = r.signals.get(f"{name}.flag")
        if flag is not None:
            return index, str(flag)
    return None, None


def _settle_clusters(records: list[Seen], steps: list[Step], flag_order: list[tuple[int, str]]) -> None:
    """In an analysis run a dedup step compared every record, also those an earlier step would have dropped: a
    cluster whose kept member would be gone keeps one of its flagged duplicates instead (the one with the smallest
    shuffle key: an estimate, the real run picks by a hash of id and content, and may split the cluster)."""
    by_id = {r.id: r for r in records}
    for step in steps:
        prefix = getattr(step, "signal_prefix", None)
        if prefix is None:
            continue
        groups: dict[str, list[Seen]] = defaultdict(list)
        for r in records:
            if r.stop == step.index and f"{prefix}.cluster" in r.signals:
                groups[str(r.signals[f"{prefix}.cluster"])].append(r)
        for kept_id, dups in groups.items():
            kept = by_id.get(kept_id)
            if kept is None or kept.reached(step.index):
                continue
            heir = min(dups, key=lambda r: r.order)
            heir.stop, heir.reason = _stop(heir, {}, {}, [(i, n) for i, n in flag_order if i > step.index])


def read_card_data(kept_files: list[str], rejected_files: list[str], steps: list[Step], total: int,
                   analysis: bool = False, max_records: int = MAX_RECORDS) -> CardData:
    """Read the run's records (a hash-of-id sample of ``max_records`` of ``total`` when there are more) and place
    each at the step where it stopped."""
    fraction = min(1.0, max_records / total) if total else 1.0
    positions = {(s.name, s.params_hash): s.index for s in steps}
    names: dict[str, int] = {}
    for s in steps:
        names.setdefault(s.name, s.index)
    flag_order = [(s.index, s.name) for s in steps]
    records: list[Seen] = []
    errors = ErrorLog()
    for f in kept_files + rejected_files:
        for shard in plan_shards([f], "auto", 0):
            for r in read_shard(shard, errors):
                if fraction < 1 and not in_sample(r.id, fraction):
                    continue
                meta = {k: r.meta[k] for k in ("url", "source", "title") if k in r.meta}
                seen = Seen(r.id, r.text[:TEXT_CHARS], meta, dict(r.signals),
                            [(e.step, e.version, e.params) for e in r.lineage], r.drop)
                seen.stop, seen.reason = _stop(seen, positions, names, flag_order)
                records.append(seen)
    if analysis:
        _settle_clusters(records, steps, flag_order)
    data = CardData(steps, records, total, analysis)
    by_reason: dict[tuple[int, str], list[Seen]] = defaultdict(list)
    for r in records:
        if r.stop is not None:
            by_reason[(r.stop, r.reason or "")].append(r)
    data.by_reason = dict(by_reason)
    return data

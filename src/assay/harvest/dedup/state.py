"""On-disk state of the dedup steps: per-shard parts written by ``collect``, per-shard decisions written by ``reduce``.

Layout under the step's state dir (shared by every worker of the run)::

    shard-00003.json                  manifest of shard 3, written last by its collect (lists its parts)
    shard-00003-part-0000.<name>.npy  arrays of one part (at most ``part_rows`` records), e.g. keys, band keys
    decisions-00003.npz               what apply must do in shard 3 (written by reduce)
    reduce.json                       summary of the reduce phase (counts), written last by reduce

Every file is written to a temporary name and renamed into place (``os.replace``), so a reader never sees half a
file, and a re-run of a phase (a retried task, a resumed run) overwrites the same names with the same content.
Nothing assumes the phases run in one process: they communicate only through these files.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from assay.core.errors import AssayError


# -- atomic writes -----------------------------------------------------------------------------------------------
def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def save_array(path: Path, array: np.ndarray) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def save_json(path: Path, obj: Any) -> None:
    tmp = _tmp(path)
    tmp.write_bytes(json.dumps(obj, indent=1, sort_keys=True).encode())
    os.replace(tmp, path)


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


# -- strings as two arrays (UTF-8 bytes + offsets): compact, random access through a memory map ------------------
def pack_strings(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def unpack_strings(data: np.ndarray, offsets: np.ndarray, indices: Iterable[int] | None = None) -> list[str]:
    idx = range(len(offsets) - 1) if indices is None else indices
    return [bytes(data[offsets[i]:offsets[i + 1]]).decode("utf-8", "surrogatepass") for i in idx]


# -- collect side --------------------------------------------------------------------------------------------------
def shard_manifest_path(state_dir: Path, shard: int) -> Path:
    return state_dir / f"shard-{shard:05d}.json"


def part_path(state_dir: Path, shard: int, part: int, name: str) -> Path:
    return state_dir / f"shard-{shard:05d}-part-{part:04d}.{name}.npy"


def write_part(state_dir: Path, shard: int, part: int, arrays: dict[str, np.ndarray], ids: list[str]) -> None:
    """Write one part's arrays and record ids (before the shard's manifest, which is what makes them visible)."""
    data, offsets = pack_strings(ids)
    for name, arr in {**arrays, "id_data": data, "id_offsets": offsets}.items():
        save_array(part_path(state_dir, shard, part, name), arr)


def write_manifest(state_dir: Path, shard: int, part_records: list[int], extra: dict[str, Any]) -> None:
    save_json(shard_manifest_path(state_dir, shard),
              {"shard": shard, "parts": part_records, "records": sum(part_records), **extra})


# -- reduce side ---------------------------------------------------------------------------------------------------
class _OpenMaps:
    """Memory maps opened by reduce, least recently used closed first (a process may hold only ~65k maps)."""

    def __init__(self, limit: int = 2048) -> None:
        self.limit = limit
        self.maps: OrderedDict[Path, np.ndarray] = OrderedDict()

    def get(self, path: Path) -> np.ndarray:
        arr = self.maps.get(path)
        if arr is None:
            arr = self.maps[path] = load_array(path)
            if len(self.maps) > self.limit:
                self.maps.popitem(last=False)
        else:
            self.maps.move_to_end(path)
        return arr


@dataclass(frozen=True)
class Segment:
    """One part of one shard, placed in the global numbering of records (shards in order, then parts)."""

    state_dir: Path
    shard: int
    part: int
    records: int
    shard_offset: int  # position of its first record in the shard
    global_offset: int  # position of its first record in the whole corpus
    maps: _OpenMaps = field(compare=False, repr=False)  # shared by the segments of one reduce

    def load(self, name: str) -> np.ndarray:
        """The part's array ``name``, memory-mapped."""
        return self.maps.get(part_path(self.state_dir, self.shard, self.part, name))

    def ids(self, local: Iterable[int]) -> list[str]:
        return unpack_strings(self.load("id_data"), self.load("id_offsets"), local)


def read_segments(state_dir: Path, num_shards: int, step_name: str) -> tuple[list[Segment], list[dict[str, Any]]]:
    """Every shard's parts in global order; fails clearly if a shard's collect did not finish (or extra ones did)."""
    found = sorted(int(m.group(1)) for p in state_dir.glob("shard-*.json")
                   if (m := re.fullmatch(r"shard-(\d+)\.json", p.name)))
    missing = sorted(set(range(num_shards)) - set(found))
    extra = sorted(set(found) - set(range(num_shards)))
    if missing or extra:
        raise AssayError(
            f"{step_name}: reduce expected the collect state of shards 0..{num_shards - 1} in {state_dir}; "
            + (f"missing: {missing[:10]}" if missing else f"unexpected shards: {extra[:10]} (wrong num_shards?)"))
    segments: list[Segment] = []
    manifests = []
    maps = _OpenMaps()
    g = 0
    for shard in range(num_shards):
        manifest = json.loads(shard_manifest_path(state_dir, shard).read_text())
        manifests.append(manifest)
        s = 0
        for part, n in enumerate(manifest["parts"]):
            segments.append(Segment(state_dir, shard, part, int(n), s, g, maps))
            s += n
            g += n
    return segments, manifests


def check_params(manifests: list[dict[str, Any]], params_hash: str, step_name: str) -> None:
    """Fail if a shard was collected with other parameters (its state would be meaningless to this reduce)."""
    for m in manifests:
        if m.get("params") != params_hash:
            raise AssayError(f"{step_name}: shard {m['shard']} was collected with different parameters "
                             f"({m.get('params')} != {params_hash}); rerun collect")


def shard_bounds(segments: list[Segment], num_shards: int) -> list[int]:
    """Global index of each shard's first record, and the total number of records at the end (empty shards start
    where the next one does)."""
    total = sum(s.records for s in segments)
    bounds = [total] * (num_shards + 1)
    present = set()
    for s in reversed(segments):
        bounds[s.shard] = s.global_offset
        present.add(s.shard)
    for sh in range(num_shards - 1, -1, -1):
        if sh not in present:
            bounds[sh] = bounds[sh + 1]
    return bounds


def hash_ranges(n: int) -> list[int]:
    """``n`` equal ranges of the 64-bit hash space, as ``n + 1`` bounds (Python ints; the last is 2**64)."""
    return [(i << 64) // n for i in range(n + 1)]


def slice_sorted(sorted_arr: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Index range of the values in ``[lo, hi)`` of a sorted uint64 array (binary search: on a memory map, only a
    few pages are read)."""
    a = int(np.searchsorted(sorted_arr, np.uint64(lo), side="left"))
    b = sorted_arr.shape[0] if hi >= 1 << 64 else int(np.searchsorted(sorted_arr, np.uint64(hi), side="left"))
    return a, b


# -- decisions -----------------------------------------------------------------------------------------------------
def decisions_path(state_dir: Path, shard: int) -> Path:
    return state_dir / f"decisions-{shard:05d}.npz"


def write_decisions(state_dir: Path, shard: int, drop_keys: np.ndarray, drop_kept_ids: list[str],
                    kept_keys: np.ndarray, kept_sizes: np.ndarray) -> None:
    """Shard ``shard``'s decisions: records to drop (by key) with the id of the record kept in their place, and
    the kept representatives of clusters (by key) with their cluster size."""
    data, offsets = pack_strings(drop_kept_ids)
    save_arrays(decisions_path(state_dir, shard), {
        "drop_keys": drop_keys.astype(np.uint64), "kept_id_data": data, "kept_id_offsets": offsets,
        "kept_keys": kept_keys.astype(np.uint64), "kept_sizes": kept_sizes.astype(np.int64)})


class Decisions:
    """The decisions of one shard, looked up by record key (so the order of the shard's records does not matter)."""

    def __init__(self, state_dir: Path, shard: int, step_name: str) -> None:
        path = decisions_path(state_dir, shard)
        if not path.exists():
            raise AssayError(f"{step_name}: no decisions for shard {shard} in {state_dir}; did reduce run?")
        with np.load(path, allow_pickle=False) as z:
            kept_ids = unpack_strings(z["kept_id_data"], z["kept_id_offsets"])
            self.drops: dict[int, list[str]] = {}
            for key, kept in zip(z["drop_keys"].tolist(), kept_ids):
                self.drops.setdefault(key, []).append(kept)
            self.sizes: dict[int, int] = dict(zip(z["kept_keys"].tolist(), z["kept_sizes"].tolist()))

    def take_drop(self, key: int) -> str | None:
        """The id kept in place of the record with ``key``, or None if it is kept. Each decision is used once."""
        pending = self.drops.get(key)
        if not pending:
            return None
        kept = pending.pop()
        if not pending:
            del self.drops[key]
        return kept

    def unused(self) -> int:
        return sum(len(v) for v in self.drops.values())

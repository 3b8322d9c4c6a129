"""From input paths to shards, and from a shard to records.

A shard is a unit of work for one worker: a whole file, a byte range of an uncompressed JSONL file, or a range of
row groups of a Parquet file. Shard numbering depends only on the sorted input list and the recipe, so a rerun
(resume) sees the same shards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Iterator

import fsspec
import xxhash

from assay.core.errors import ErrorLog
from assay.core.record import Record
from assay.io.files import compression_of, detect_format, expand_inputs


@dataclass(frozen=True)
class Shard:
    index: int
    path: str
    format: str
    start: int = 0  # byte offset (jsonl) or first row group (parquet)
    end: int | None = None  # exclusive; None = to the end
    # a tuning run's selection (assay.run.tuning): keep a record when the hash of (sample_seed, its id) falls in the
    # first `sample` of the hash range, then stop after `limit` records
    sample: float | None = None
    sample_seed: int = 0
    limit: int | None = None

    def describe(self) -> str:
        rng = "" if self.start == 0 and self.end is None else f" [{self.start}:{self.end if self.end is not None else ''}]"
        return f"{self.path}{rng}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.sample is None:  # absent unless set: the manifest of a run without them stays as it was
            del d["sample"], d["sample_seed"]
        if self.limit is None:
            del d["limit"]
        return d


def plan_shards(paths: list[str], fmt: str = "auto", shard_bytes: int = 128 << 20) -> list[Shard]:
    shards: list[Shard] = []
    if fmt == "lerobot" or (fmt == "auto" and paths and all(_is_lerobot(p) for p in paths)):
        return _plan_lerobot(paths)
    files = expand_inputs(paths)
    for path in files:
        f = detect_format(path) if fmt == "auto" else fmt
        if f == "jsonl" and shard_bytes > 0 and compression_of(path) is None:
            size = fsspec.core.url_to_fs(path)[0].size(path)
            n = max(1, -(-size // shard_bytes))
            for k in range(n):
                start = k * shard_bytes
                end = None if k == n - 1 else (k + 1) * shard_bytes
                shards.append(Shard(len(shards), path, f, start, end))
        elif f == "parquet" and shard_bytes > 0:
            from assay.io.parquet import row_group_count

            size = fsspec.core.url_to_fs(path)[0].size(path)
            groups = row_group_count(path)
            n = max(1, min(groups, -(-size // shard_bytes)))
            per = -(-groups // n) if groups else 0
            for k in range(n):
                lo, hi = k * per, min(groups, (k + 1) * per)
                if lo < hi or (groups == 0 and k == 0):
                    shards.append(Shard(len(shards), path, f, lo, hi))
        else:
            shards.append(Shard(len(shards), path, f))
    return shards


def _is_lerobot(path: str) -> bool:
    from assay.trajectories.lerobot import is_lerobot_dataset

    return "://" not in path and is_lerobot_dataset(path)


def _plan_lerobot(paths: list[str]) -> list[Shard]:
    """A LeRobot dataset (a folder with meta/info.json) gives one shard per frame file (data/chunk-*/file-*)."""
    import os

    from assay.trajectories.lerobot import data_files, is_lerobot_dataset

    shards: list[Shard] = []
    for p in sorted(dict.fromkeys(paths)):
        if "://" in p or not os.path.isdir(p):
            raise FileNotFoundError(f"{p}: a LeRobot dataset is a local folder (with meta/info.json)")
        if not is_lerobot_dataset(p):
            raise ValueError(f"{p}: not a LeRobot dataset (no meta/info.json)")
        root = os.path.abspath(p)
        for k in range(max(1, len(data_files(root)))):
            shards.append(Shard(len(shards), root, "lerobot", k, k + 1))
    return shards


def read_shard(shard: Shard, errors: ErrorLog, *, text_key: str | None = "text", id_key: str | None = None,
               modality: str = "text", warc_types: tuple[str, ...] = ("response",)) -> Iterator[Record]:
    records = _read_shard(shard, errors, text_key=text_key, id_key=id_key, modality=modality, warc_types=warc_types)
    if shard.sample is not None:
        records = (r for r in records if in_sample(r.id, shard.sample, shard.sample_seed))
    if shard.limit is not None:
        records = islice(records, shard.limit)
    return records


def in_sample(record_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether a record belongs to a ``fraction`` sample: a hash of the seed and its id, so the same records on
    every rerun and with any number of workers."""
    return xxhash.xxh3_64_intdigest(f"{seed}:{record_id}".encode()) < fraction * 2.0**64


def _read_shard(shard: Shard, errors: ErrorLog, *, text_key: str | None, id_key: str | None,
                modality: str, warc_types: tuple[str, ...]) -> Iterator[Record]:
    try:
        if shard.format == "jsonl":
            from assay.io.jsonl import read_jsonl

            yield from read_jsonl(shard.path, errors, start=shard.start, end=shard.end, text_key=text_key,
                                  id_key=id_key, modality=modality)
        elif shard.format == "parquet":
            from assay.io.parquet import read_parquet

            rg = (shard.start, shard.end) if shard.end is not None else None
            yield from read_parquet(shard.path, errors, row_groups=rg, text_key=text_key, id_key=id_key,
                                    modality=modality)
        elif shard.format == "warc":
            from assay.io.warc import read_warc

            yield from read_warc(shard.path, errors, types=warc_types)
        elif shard.format == "webdataset":
            from assay.io.webdataset import read_webdataset

            yield from read_webdataset(shard.path, errors, text_key=text_key)
        elif shard.format == "video":
            from assay.io.video import read_video_file

            yield from read_video_file(shard.path, errors)
        elif shard.format == "lerobot":
            from assay.trajectories.lerobot import read_lerobot

            yield from read_lerobot(shard.path, errors, files=(shard.start, shard.end or shard.start + 1))
        else:
            raise ValueError(f"unknown input format {shard.format!r}")
    except FileNotFoundError as e:
        errors.add("missing_file", shard.path, None, str(e))
    except PermissionError as e:
        errors.add("unreadable_file", shard.path, None, str(e))

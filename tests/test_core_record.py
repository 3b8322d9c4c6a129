"""The record envelope: stable ids, content hash, lineage surviving every reader/writer round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.errors import ErrorLog
from assay.core.pipeline import Pipeline
from assay.core.basic_steps import LengthFilter, Sample
from assay.core.record import LineageEntry, Record, derive_id, stable_id
from assay.io.sources import plan_shards, read_shard
from assay.io.writers import ShardWriter


def _records() -> list[Record]:
    return [
        Record(stable_id("s3://bucket/a.jsonl", 0), "plain text ünïcödé", "text", {"url": "http://a"}, {"q": 0.5},
               [LineageEntry("extract", "1", "abc")]),
        Record(derive_id("p1", "p2", "evol", 0), {"messages": [{"role": "user", "content": "hi"}]}, "conversation",
               {"parents": ["p1", "p2"]}, {}, [LineageEntry("evol", "2", "def"), LineageEntry("judge", "1", "0")]),
        Record("img-1", {"caption": "a red square", "image": b"\x89PNG\r\n\x1a\n\x00\xff"}, "image_text"),
        Record("pref-1", {"prompt": "p", "chosen": "a", "rejected": "b"}, "preference", drop=("judge", "tie")),
    ]


def test_ids_are_stable_and_positional():
    assert stable_id("f.jsonl", 10) == stable_id("f.jsonl", 10)
    assert stable_id("f.jsonl", 10) != stable_id("f.jsonl", 11)
    assert stable_id("f.jsonl", 10) != stable_id("g.jsonl", 10)
    assert derive_id("a", "b") != derive_id("b", "a")


def test_hash_follows_content():
    r = Record("x", "hello")
    h = r.hash
    r.content = "hello!"
    assert r.hash != h
    assert Record("y", "hello").hash == h  # content hash, not id hash


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_round_trip_keeps_everything(tmp_path: Path, fmt: str):
    recs = _records()
    w = ShardWriter(str(tmp_path), "part-00000", fmt, max_records=3)
    w.write_many(recs)
    paths = w.close()
    assert len(paths) == 2  # rolled over after 3 records
    back = []
    for p in paths:
        for shard in plan_shards([p], "auto", 0):
            back.extend(read_shard(shard, ErrorLog()))
    assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]
    assert back[2].content["image"] == b"\x89PNG\r\n\x1a\n\x00\xff"
    assert back[1].lineage[1] == LineageEntry("judge", "1", "0")


def test_parquet_loads_with_datasets(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    w = ShardWriter(str(tmp_path), "part-00000", "parquet")
    w.write_many(_records())
    (path,) = w.close()
    ds = datasets.load_dataset("parquet", data_files=path, split="train")
    assert ds.num_rows == 4
    assert ds[0]["content"] == "plain text ünïcödé"
    assert ds[1]["lineage"][0] == {"step": "evol", "version": "2", "params": "def"}


def test_pipeline_appends_lineage_and_rejects_with_reason():
    recs = [Record(str(i), "x" * i) for i in range(0, 200, 10)]
    rejected: list[Record] = []
    p = Pipeline([LengthFilter(min_chars=50), Sample(fraction=0.5)])
    kept = list(p.run_records(recs, reject=rejected.extend))
    assert len(kept) + len(rejected) == len(recs)
    assert all(r.lineage == [p.steps[0].lineage_entry, p.steps[1].lineage_entry] for r in kept)
    assert {r.drop for r in rejected} <= {("length_filter", "too_short"), ("sample", "sampled_out")}
    short = [r for r in rejected if r.drop == ("length_filter", "too_short")]
    assert len(short) == 5 and all(len(r.content) < 50 for r in short)
    assert p.steps[0].stats.drops["too_short"] == 5
    assert p.steps[0].stats.records_in == 20 and p.steps[1].stats.records_in == 15


def test_params_hash_tracks_parameters():
    assert LengthFilter(min_chars=5).params_hash == LengthFilter(min_chars=5).params_hash
    assert LengthFilter(min_chars=5).params_hash != LengthFilter(min_chars=6).params_hash


def test_flag_mode_keeps_and_marks():
    r = Record("a", "tiny")
    out = LengthFilter(min_chars=50, action="flag").process_batch([r], None)  # type: ignore[arg-type]
    assert out[0].drop is None
    assert out[0].signals["length_filter.flag"] == "too_short"

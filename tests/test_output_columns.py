"""Output columns: Parquet ``meta``/``signals`` as typed structs with one schema per run folder, the ``text_column``
option for JSONL and Parquet, and Parquet files of the older JSON-text layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from assay.core.errors import ErrorLog
from assay.core.record import LineageEntry, Record
from assay.core.recipe import Recipe, RecipeError
from assay.io.folder import Folder
from assay.io.parquet import ParquetWriter, read_parquet, unify_parquet_schemas
from assay.io.writers import ShardWriter
from assay.run import layout
from assay.run.executor import LocalExecutor
from testutil import ROOT, SAMPLE, assay_cli, read_output, write_jsonl

LINEAGE = [LineageEntry("extract", "1", "ab12")]


@pytest.fixture(scope="module")
def quickstart_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (ROOT / "recipes" / "quickstart.yaml").read_text().replace("format: jsonl.gz", "format: parquet")
    out = tmp_path_factory.mktemp("qp") / "run"
    LocalExecutor(2).run(Recipe.from_text(text), [str(SAMPLE)], str(out))
    return out


def _schemas(files: list[str]) -> list[pa.Schema]:
    return [pq.read_schema(f) for f in files]


def test_parquet_run_signals_are_a_struct_one_schema_per_folder(quickstart_parquet: Path) -> None:
    out = quickstart_parquet
    kept, rejected = layout.output_files(str(out)), layout.rejected_files(str(out))
    assert len(kept) > 1 and len(rejected) > 1
    for files in (kept, rejected):
        schemas = _schemas(files)
        assert all(s.equals(schemas[0], check_metadata=True) for s in schemas)
        assert pa.types.is_struct(schemas[0].field("signals").type)
        assert pa.types.is_struct(schemas[0].field("meta").type)
    records = read_output(out)
    word_counts = [r["signals"]["gopher.word_count"] for r in records]
    threshold = sorted(word_counts)[len(word_counts) // 2]
    # a signal is a struct field: pyarrow filters on it (duckdb: signals."gopher.word_count" > ...)
    table = ds.dataset(str(out / "data"), format="parquet").to_table(
        columns=["id"], filter=ds.field("signals", "gopher.word_count") > threshold)
    assert sorted(table.column("id").to_pylist()) == sorted(
        r["id"] for r in records if r["signals"]["gopher.word_count"] > threshold)
    assert 0 < table.num_rows < len(records)
    # the same query in duckdb (the acceptance: signals queryable as a struct), over the glob of all shards
    import duckdb

    got = duckdb.sql(f"""SELECT id FROM read_parquet('{out / "data"}/*.parquet')
                         WHERE signals."gopher.word_count" > {threshold}""").fetchall()
    assert sorted(i for (i,) in got) == sorted(table.column("id").to_pylist())
    by_reason = dict(duckdb.sql(f"""SELECT drop_step, count(*) FROM read_parquet('{out / "rejected"}/*.parquet')
                                    GROUP BY drop_step""").fetchall())
    stats = json.loads((out / "stats.json").read_text())
    assert by_reason == {st["name"]: st["dropped"] for st in stats["steps"] if st["dropped"]}
    reasons = ds.dataset(str(out / "rejected"), format="parquet").to_table(columns=["drop_step"])
    assert reasons.num_rows == sum(pq.read_metadata(f).num_rows for f in rejected)

    from datasets import load_dataset

    loaded = load_dataset("parquet", data_files=kept, split="train", cache_dir=str(out.parent / "hf"))
    assert len(loaded) == len(records)
    assert sorted(loaded["id"]) == sorted(r["id"] for r in records)
    lost = load_dataset("parquet", data_files=rejected, split="train", cache_dir=str(out.parent / "hf"))
    assert len(lost) == reasons.num_rows and set(lost["drop_step"]) >= {"language_id", "gopher_quality"}


def _heterogeneous() -> list[Record]:
    """Records whose meta and signals differ in keys and types between the first two and the last two."""
    return [
        Record("a", "first text", "text", {"source": "s1", "n": 1, "tags": ["x", "y"], "nested": {"p": 1}},
               {"score": 3, "mixed": "high", "lists": [1, 2]}, LINEAGE),
        Record("b", "second text", "text", {"source": "s1", "n": 2, "blob": b"\x00\xff"}, {"score": 4}, LINEAGE),
        Record("c", "third text", "text", {"source": "s2", "n": 2.5, "nested": {"q": [1.5, None]},
                                           "deep": [[1, 2], [3]]},
               {"score": 0.25, "mixed": 7, "lists": [1, "two"], "only_here": True}, LINEAGE,
               ("gopher_quality", "too_short")),
        Record("d", {"messages": [{"role": "user", "content": "hi"}], "raw": b"\x01"}, "conversation", {},
               {}, LINEAGE),
    ]


def test_heterogeneous_records_round_trip_across_unified_shards(tmp_path: Path) -> None:
    records = _heterogeneous()
    writer = ShardWriter(str(tmp_path / "data"), "train-00000", "parquet", max_records=2)
    writer.write_many(records)
    files = writer.close()
    assert len(files) == 2
    before = _schemas(files)
    assert not before[0].equals(before[1])  # each shard typed its own records: n int64 vs double, mixed str vs int
    (tmp_path / "data" / ".tmp-unify-train-00000-0000.parquet").write_bytes(b"left by a killed run")
    report = unify_parquet_schemas([Folder(str(tmp_path / "data"))])
    assert report["files"] == 2 and report["rewritten"] == 2
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(Path(f).name for f in files)
    after = _schemas(files)
    assert after[0].equals(after[1], check_metadata=True)
    meta_type, signals_type = after[0].field("meta").type, after[0].field("signals").type
    assert meta_type.field("n").type == pa.float64()  # int in one shard, float in the other: promoted
    assert signals_type.field("mixed").type == pa.string()  # text and a number: kept as JSON text
    assert ds.dataset(str(tmp_path / "data"), format="parquet").to_table().num_rows == len(records)

    back = [r for f in files for r in read_parquet(f, ErrorLog())]
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    assert "only_here" not in back[0].signals and "blob" not in back[0].meta  # absent keys stay absent
    assert back[1].meta["blob"] == b"\x00\xff" and back[3].content["raw"] == b"\x01"
    assert back[2].signals["lists"] == [1, "two"] and back[2].meta["deep"] == [[1, 2], [3]]
    assert back[2].meta["nested"] == {"q": [1.5, None]}  # None items of lists survive
    assert back[2].drop == ("gopher_quality", "too_short")
    # a second unify finds nothing to do
    assert unify_parquet_schemas([Folder(str(tmp_path / "data"))])["rewritten"] == 0


def test_row_groups_with_new_keys_widen_the_file_schema(tmp_path: Path) -> None:
    records = _heterogeneous() + [Record("e", "late", "text", {"late_key": "v"}, {"score": 1}, LINEAGE)]
    path = tmp_path / "one.parquet"
    writer = ParquetWriter(open(path, "wb"), row_group_size=1)  # every record a row group of its own
    writer.write_many(records)
    writer.close()
    assert pq.ParquetFile(path).num_row_groups == len(records)
    assert [r.to_dict() for r in read_parquet(str(path), ErrorLog())] == [r.to_dict() for r in records]


def test_values_arrow_would_coerce_keep_their_type(tmp_path: Path) -> None:
    """Arrow's own inference reads True beside 1.5 as 1.0 and "a" beside b"a" as bytes: such keys stay JSON text."""
    records = [Record("a", "t", "text", {"flag": 1.5}, {"raw": "a", "v": [1, 2]}),
               Record("b", "t", "text", {"flag": True}, {"raw": b"a", "v": [1, True]})]
    path = tmp_path / "c.parquet"
    writer = ParquetWriter(open(path, "wb"))
    writer.write_many(records)
    writer.close()
    back = list(read_parquet(str(path), ErrorLog()))
    assert [(r.meta, r.signals) for r in back] == [(r.meta, r.signals) for r in records]
    assert back[1].meta["flag"] is True and back[1].signals["raw"] == b"a" and back[0].signals["raw"] == "a"
    assert back[1].signals["v"][1] is True


class _Tensor:
    """An array type Arrow does not know (as a torch tensor): it has a dtype and tolist()."""

    dtype = "float32"

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def tolist(self) -> list[float]:
        return list(self.values)


def test_array_values_arrow_does_not_know_are_written_as_lists(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    writer = ParquetWriter(open(path, "wb"))
    writer.write_many([Record("a", "t", "text", {}, {"embedding": _Tensor([0.5, 1.0]), "n": 1}),
                       Record("b", "t", "text", {}, {"embedding": [2.0], "n": 2})])
    writer.close()
    assert pq.read_schema(path).field("signals").type.field("embedding").type == pa.list_(pa.float64())
    assert [r.signals for r in read_parquet(str(path), ErrorLog())] == [{"embedding": [0.5, 1.0], "n": 1},
                                                                        {"embedding": [2.0], "n": 2}]


def test_none_values_in_dicts_read_as_absent_keys(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    writer = ParquetWriter(open(path, "wb"))
    writer.write(Record("a", "t", "text", {"url": None, "k": {"x": None, "y": 1}}, {"s": [None, 1]}))
    writer.close()
    back, = read_parquet(str(path), ErrorLog())
    assert back.meta == {"k": {"y": 1}} and back.signals == {"s": [None, 1]}


RECIPE = """
name: columns
output: {format: %s, text_column: %s, max_records_per_file: 7}
steps:
  - length_filter: {min_chars: 12}
"""


def _corpus(tmp_path: Path) -> Path:
    rows = [{"text": f"document number {i} " + "word " * (i % 5), "url": f"https://e.x/{i}", "i": i}
            for i in range(20)]
    rows += [{"text": "tiny", "url": "https://e.x/tiny", "i": 99}]
    return write_jsonl(tmp_path / "in" / "docs.jsonl", rows)


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet"])
def test_text_column_names_the_content_text_and_records_read_back(tmp_path: Path, fmt: str) -> None:
    corpus = _corpus(tmp_path)
    runs = {}
    for column in ("content", "text"):
        out = tmp_path / f"{column}-{fmt.replace('.', '')}"
        LocalExecutor(1).run(Recipe.from_text(RECIPE % (fmt, column)), [str(corpus)], str(out))
        runs[column] = out
    out = runs["text"]
    first, rejected = layout.output_files(str(out))[0], layout.rejected_files(str(out))[0]
    for f in (first, rejected):
        if fmt == "parquet":
            names = pq.read_schema(f).names
        else:
            names = list(orjson.loads(gzip.open(f).readline()))
        assert "text" in names and "content" not in names
    kept = read_output(out)
    assert kept == read_output(runs["content"])  # the same records, lineage included
    assert len(kept) == 20 and kept[0]["content"].startswith("document number")
    if fmt == "parquet":
        dropped = list(read_parquet(rejected, ErrorLog()))
    else:
        from assay.io.jsonl import read_jsonl

        dropped = list(read_jsonl(rejected, ErrorLog()))
    assert [(r.content, r.drop) for r in dropped] == [("tiny", ("length_filter", "too_short"))]
    shown = assay_cli("inspect", str(out), "-n", "1").stdout
    assert "document number" in shown


def test_text_column_values_are_checked() -> None:
    with pytest.raises(RecipeError, match="text_column.*'content' or 'text'"):
        Recipe.from_text("output: {format: parquet, text_column: body}")
    with pytest.raises(RecipeError, match="text_column applies to jsonl and parquet"):
        Recipe.from_text("output: {format: webdataset, text_column: text}")


def test_parquet_with_json_text_meta_still_reads(tmp_path: Path) -> None:
    """The layout Assay wrote before structs: meta and signals as JSON text."""
    old = pa.schema([("id", pa.string()), ("hash", pa.string()), ("modality", pa.string()),
                     ("content", pa.large_string()), ("content_is_json", pa.bool_()), ("meta", pa.string()),
                     ("signals", pa.string()),
                     ("lineage", pa.list_(pa.struct([("step", pa.string()), ("version", pa.string()),
                                                     ("params", pa.string())]))),
                     ("drop_step", pa.string()), ("drop_reason", pa.string())])
    rows = {"id": ["a", "b"], "hash": ["h", "h"], "modality": ["text", "conversation"],
            "content": ["plain", orjson.dumps({"messages": []}).decode()], "content_is_json": [False, True],
            "meta": [orjson.dumps({"url": "u", "n": 1}).decode(), ""],
            "signals": [orjson.dumps({"score": 0.5, "mixed": [1, "a"]}).decode(), None],
            "lineage": [[{"step": "extract", "version": "1", "params": "ab12"}], []],
            "drop_step": [None, "pii"], "drop_reason": [None, "secret"]}
    pq.write_table(pa.table(rows, schema=old), tmp_path / "old.parquet")
    a, b = read_parquet(str(tmp_path / "old.parquet"), ErrorLog())
    assert a.to_dict() == Record("a", "plain", "text", {"url": "u", "n": 1}, {"score": 0.5, "mixed": [1, "a"]},
                                 LINEAGE).to_dict()
    assert (b.content, b.meta, b.signals, b.drop) == ({"messages": []}, {}, {}, ("pii", "secret"))
    # a folder of such files is left as it is by the run's unification
    pq.write_table(pa.table(rows, schema=old), tmp_path / "old2.parquet")
    assert unify_parquet_schemas([Folder(str(tmp_path))])["rewritten"] == 0


def test_image_text_and_text_shards_get_one_schema(tmp_path: Path) -> None:
    """A shard of image-text records has img2dataset's columns; a shard of text records gets them as nulls."""
    records = [Record("t", "a text", "text", {"a": 1}, {}, LINEAGE),
               Record("i", {"caption": "c", "image": b"\x89PNG"}, "image_text", {"width": 3, "url": "u"}, {}, LINEAGE)]
    writer = ShardWriter(str(tmp_path), "train-00000", "parquet", max_records=1)
    writer.write_many(records)
    files = writer.close()
    assert "image" not in pq.read_schema(files[0]).names
    assert unify_parquet_schemas([Folder(str(tmp_path))])["rewritten"] == 2
    schemas = _schemas(files)
    assert schemas[0].equals(schemas[1], check_metadata=True) and "image" in schemas[0].names
    assert [r.to_dict() for f in files for r in read_parquet(f, ErrorLog())] == [r.to_dict() for r in records]

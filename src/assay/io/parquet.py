"""Parquet reading (whole files or row-group ranges) and writing.

Assay's Parquet layout loads with ``pyarrow`` and ``datasets.load_dataset("parquet", ...)``: columns ``id``, ``hash``,
``modality``, ``content`` (a string; JSON text when ``content_is_json``), ``meta`` and ``signals`` (JSON text: their
keys differ between records), ``lineage`` (list of {step, version, params}), ``drop_step``/``drop_reason``.
Foreign Parquet files (e.g. a ``text`` column) are read like foreign JSONL.
"""

from __future__ import annotations

from typing import IO, Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from assay.core.errors import ErrorLog
from assay.core.record import Record, _lineage_entry, _restore_bytes, dumps
from assay.io.files import open_binary
from assay.io.jsonl import record_from_foreign

LINEAGE_TYPE = pa.list_(pa.struct([("step", pa.string()), ("version", pa.string()), ("params", pa.string())]))
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("hash", pa.string()),
    ("modality", pa.string()),
    ("content", pa.large_string()),
    ("content_is_json", pa.bool_()),
    ("meta", pa.string()),
    ("signals", pa.string()),
    ("lineage", LINEAGE_TYPE),
    ("drop_step", pa.string()),
    ("drop_reason", pa.string()),
])
_ASSAY_COLUMNS = {"id", "modality", "content", "meta", "signals", "lineage"}


def row_group_count(path: str) -> int:
    with open_binary(path) as f:
        return pq.ParquetFile(f).num_row_groups


def read_parquet(path: str, errors: ErrorLog, *, row_groups: tuple[int, int] | None = None,
                 text_key: str | None = "text", id_key: str | None = None, modality: str = "text",
                 batch_size: int = 4096) -> Iterator[Record]:
    try:
        f = open_binary(path)
        pf = pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as e:
        errors.add("corrupt_file", path, 0, f"{type(e).__name__}: {e}")
        return
    with f:
        groups = list(range(*row_groups)) if row_groups else list(range(pf.num_row_groups))
        names = set(pf.schema_arrow.names)
        ours = _ASSAY_COLUMNS <= names
        row = sum(pf.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
        try:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups):
                if ours:
                    yield from _records_from_batch(batch)
                else:
                    for obj in batch.to_pylist():
                        try:
                            yield record_from_foreign(obj, path, row, text_key, id_key, modality)
                        except KeyError:
                            errors.add("missing_field", path, row, f"no column {text_key!r} (set input.text_key)")
                        row += 1
                row += 0 if not ours else batch.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            errors.add("corrupt_file", path, row, f"{type(e).__name__}: {e}")


def _records_from_batch(batch: pa.RecordBatch) -> Iterator[Record]:
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    n = batch.num_rows
    is_json = cols.get("content_is_json") or [False] * n
    drop_step = cols.get("drop_step") or [None] * n
    drop_reason = cols.get("drop_reason") or [None] * n
    loads = orjson.loads
    for i in range(n):
        content: Any = cols["content"][i]
        if is_json[i]:
            content = _restore_bytes(loads(content))
        yield Record(
            cols["id"][i], content, cols["modality"][i],
            loads(cols["meta"][i]) if cols["meta"][i] else {},
            loads(cols["signals"][i]) if cols["signals"][i] else {},
            [_lineage_entry(e) for e in (cols["lineage"][i] or ())],
            (drop_step[i], drop_reason[i]) if drop_step[i] else None,
        )


class ParquetWriter:
    """Writes records to one Parquet file, a row group every ``row_group_size`` records."""

    def __init__(self, f: IO[bytes], row_group_size: int = 10_000) -> None:
        self._f = f
        self._writer = pq.ParquetWriter(f, SCHEMA, compression="zstd")
        self._rows: list[Record] = []
        self.row_group_size = row_group_size
        self.bytes_written = 0

    def write(self, record: Record) -> int:
        self._rows.append(record)
        n = record.nbytes() + 200
        self.bytes_written += n
        if len(self._rows) >= self.row_group_size:
            self.flush()
        return n

    def write_many(self, records: list[Record]) -> int:
        return sum(self.write(r) for r in records)

    def flush(self) -> None:
        if not self._rows:
            return
        rows = self._rows
        content, is_json = [], []
        for r in rows:
            if isinstance(r.content, str):
                content.append(r.content)
                is_json.append(False)
            else:
                content.append(dumps(r.content).decode())
                is_json.append(True)
        table = pa.table({
            "id": [r.id for r in rows],
            "hash": [r.hash for r in rows],
            "modality": [r.modality for r in rows],
            "content": content,
            "content_is_json": is_json,
            "meta": [dumps(r.meta).decode() for r in rows],
            "signals": [dumps(r.signals).decode() for r in rows],
            "lineage": [[e.as_dict() for e in r.lineage] for r in rows],
            "drop_step": [r.drop[0] if r.drop else None for r in rows],
            "drop_reason": [r.drop[1] if r.drop else None for r in rows],
        }, schema=SCHEMA)
        self._writer.write_table(table)
        self._rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._f.close()

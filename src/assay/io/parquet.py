"""Parquet reading (whole files or row-group ranges) and writing.

Assay's Parquet layout loads with ``pyarrow``, duckdb and ``datasets.load_dataset("parquet", ...)``: columns ``id``,
``hash``, ``modality``, ``content`` (a string; JSON text when ``content_is_json``; named ``text`` with
``output.text_column: text``), ``meta`` and ``signals`` (structs, one field per key: :mod:`assay.io.struct_columns`),
``lineage`` (list of {step, version, params}), ``drop_step``/``drop_reason``. A run gives the files of each folder
one schema at its end (:func:`unify_parquet_schemas`). Files of older versions, with ``meta`` and ``signals`` as JSON
text, still read. Foreign Parquet files (e.g. a ``text`` column) are read like foreign JSONL.

Image-text pairs use the img2dataset layout. Reading: a foreign file with an image column (``jpg``, ``png``,
``webp``, ``image``, ``img``, ``image_bytes``, ``bytes``: binary, or a Hugging Face ``Image`` struct with ``bytes``
and ``path``) gives ``image_text`` records, ``content = {"caption": <caption column>, "image": <bytes>}`` (or
``{"image_path": ...}`` for a struct with only a path), the other columns in ``meta``; the caption column is
``text_key`` if present, else ``caption``, ``txt``, ``TEXT``, ``text``, ``alt`` or ``alt_text``. Rows without an image
(img2dataset's failed downloads) are skipped and counted as ``missing_image``. Writing: when the first row group of a
file holds ``image_text`` records, the file also gets img2dataset's columns ``key``, ``url``, ``caption``, ``image``
(the bytes, not duplicated in ``content``), ``width``, ``height`` and ``format``, so it loads directly in tools that
expect that layout, and still round-trips every record exactly.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import IO, Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from assay.core.errors import AssayError, ErrorLog
from assay.core.record import Record, _lineage_entry, _restore_bytes, dumps, stable_id
from assay.io.files import open_binary
from assay.io.folder import Folder
from assay.io.jsonl import record_from_foreign
from assay.io.struct_columns import (STRUCT_COLUMNS, DictsType, conform, conform_dicts, decode_dicts, dicts_to_arrow,
                                     dicts_types, read_metadata, schema_metadata)

LINEAGE_TYPE = pa.list_(pa.struct([("step", pa.string()), ("version", pa.string()), ("params", pa.string())]))
#: the text column's default name; ``output.text_column: text`` names it ``text``
CONTENT = "content"
TEXT_COLUMNS = (CONTENT, "text")
_ASSAY_COLUMNS = {"id", "modality", "meta", "signals", "lineage"}  # and one of TEXT_COLUMNS
#: img2dataset's columns added to Assay's layout for image-text files
IMAGE_FIELDS = [("key", pa.string()), ("url", pa.string()), ("caption", pa.large_string()),
                ("image", pa.large_binary()), ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string())]


def file_schema(types: dict[str, DictsType] | None = None, *, images: bool = False,
                text_column: str = CONTENT) -> pa.Schema:
    """Assay's layout with ``meta`` and ``signals`` in the given types (no keys: null columns)."""
    types = types or {name: DictsType() for name in STRUCT_COLUMNS}
    fields = [("id", pa.string()), ("hash", pa.string()), ("modality", pa.string()),
              (text_column, pa.large_string()), ("content_is_json", pa.bool_()),
              ("meta", types["meta"].arrow_type()), ("signals", types["signals"].arrow_type()),
              ("lineage", LINEAGE_TYPE), ("drop_step", pa.string()), ("drop_reason", pa.string())]
    if images:
        fields += IMAGE_FIELDS
    return pa.schema(fields, metadata=schema_metadata(types, text_column))


#: foreign columns that may hold the encoded image, in order of preference
IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img", "image_bytes", "bytes")
CAPTION_COLUMNS = ("caption", "txt", "TEXT", "text", "alt", "alt_text")
#: an image-text file gets a row group at least every this many bytes of images
IMAGE_ROW_GROUP_BYTES = 64 << 20


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
        ours = _ASSAY_COLUMNS <= names and not names.isdisjoint(TEXT_COLUMNS)
        image_col = None if ours else _image_column(pf.schema_arrow)
        if image_col is not None:
            caption_col = text_key if text_key in names else next((c for c in CAPTION_COLUMNS if c in names), None)
        row = sum(pf.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
        try:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups):
                if ours:
                    yield from _records_from_batch(batch, pf.schema_arrow)
                elif image_col is not None:
                    for obj in batch.to_pylist():
                        record = _image_record(obj, path, row, image_col, caption_col, id_key)
                        if record is None:
                            errors.add("missing_image", path, row, f"row has no {image_col!r} value")
                        else:
                            yield record
                        row += 1
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


def _image_column(schema: pa.Schema) -> str | None:
    """The column of a foreign file holding encoded images (binary, or an HF ``Image`` struct), if any."""
    for name in IMAGE_COLUMNS:
        if name not in schema.names:
            continue
        t = schema.field(name).type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return name
        if pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"bytes"}:
            return name
    return None


def _image_record(obj: dict[str, Any], path: str, row: int, image_col: str, caption_col: str | None,
                  id_key: str | None) -> Record | None:
    """An ``image_text`` record from one row of an img2dataset-style file (None if the row has no image)."""
    value = obj.pop(image_col)
    content: dict[str, Any] = {}
    if isinstance(value, dict):  # Hugging Face Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            content["image"] = value["bytes"]
        elif value.get("path"):
            content["image_path"] = value["path"]
    elif value:
        content["image"] = value
    if not content:
        return None
    caption = obj.pop(caption_col, None) if caption_col else None
    content = {"caption": caption if isinstance(caption, str) else "", **content}
    rid = str(obj.pop(id_key)) if id_key and obj.get(id_key) is not None else stable_id(path, row)
    meta = {k: v for k, v in obj.items() if v is not None}
    meta["source"] = path
    meta["offset"] = row
    return Record(rid, content, "image_text", meta)


def _records_from_batch(batch: pa.RecordBatch, schema: pa.Schema) -> Iterator[Record]:
    names = batch.schema.names
    text_column = read_metadata(schema).get("text_column") or (CONTENT if CONTENT in names else "text")
    cols = {name: batch.column(name).to_pylist() for name in names if name not in STRUCT_COLUMNS}
    types = dicts_types(schema) if _is_struct_layout(schema) else {}
    dicts = {name: _read_dicts(batch.column(name), types.get(name)) for name in STRUCT_COLUMNS}
    n = batch.num_rows
    images = cols.get("image")
    is_json = cols.get("content_is_json") or [False] * n
    drop_step = cols.get("drop_step") or [None] * n
    drop_reason = cols.get("drop_reason") or [None] * n
    contents = cols[text_column]
    loads = orjson.loads
    for i in range(n):
        content: Any = contents[i]
        if is_json[i]:
            content = _restore_bytes(loads(content))
            if images is not None and images[i] is not None and isinstance(content, dict):
                content["image"] = images[i]  # image-text layout: the bytes live in their own column
        yield Record(
            cols["id"][i], content, cols["modality"][i], dicts["meta"][i], dicts["signals"][i],
            [_lineage_entry(e) for e in (cols["lineage"][i] or ())],
            (drop_step[i], drop_reason[i]) if drop_step[i] else None,
        )


def _read_dicts(column: pa.Array, dtype: DictsType | None) -> list[dict[str, Any]]:
    """A meta/signals column: structs of type ``dtype``, or (``None``) JSON text as older Assay versions wrote."""
    if dtype is None:
        return [orjson.loads(v) if v else {} for v in column.to_pylist()]
    return decode_dicts(column, dtype)


class ParquetWriter:
    """Writes records to one Parquet file, a row group every ``row_group_size`` records (and, for image-text files,
    every :data:`IMAGE_ROW_GROUP_BYTES`). The layout is chosen at the first row group: Assay's, plus img2dataset's
    columns if that row group holds ``image_text`` records.

    ``meta`` and ``signals`` are struct columns (:mod:`assay.io.struct_columns`) whose types come from the records.
    Row groups go to a local temporary file; a row group with keys or wider types than the ones before starts a
    new temporary file in the wider schema. :meth:`close` copies the one temporary file to ``f``, or writes every
    row group again in the final schema if there are several."""

    def __init__(self, f: IO[bytes], row_group_size: int = 10_000, text_column: str = CONTENT) -> None:
        if text_column not in TEXT_COLUMNS:
            raise ValueError(f"text_column must be one of {', '.join(TEXT_COLUMNS)}, not {text_column!r}")
        self._f = f
        self.text_column = text_column
        self._images = False
        self._schema: pa.Schema | None = None
        self._types: dict[str, DictsType] = {}
        self._parts: list[tuple[IO[bytes], pq.ParquetWriter]] = []  # temporary files, each in a wider schema
        self._rows: list[Record] = []
        self._pending_bytes = 0
        self._saw_image = False
        self.row_group_size = row_group_size
        self.bytes_written = 0

    def write(self, record: Record) -> int:
        self._rows.append(record)
        n = record.nbytes() + 200
        self.bytes_written += n
        self._pending_bytes += n
        self._saw_image = self._saw_image or record.modality == "image_text"
        big = self._saw_image and self._pending_bytes >= IMAGE_ROW_GROUP_BYTES
        if len(self._rows) >= self.row_group_size or big:
            self.flush()
        return n

    def write_many(self, records: list[Record]) -> int:
        return sum(self.write(r) for r in records)

    def flush(self) -> None:
        if not self._rows:
            return
        rows = self._rows
        if self._schema is None:
            self._images = any(r.modality == "image_text" for r in rows)
        mine = {name: dicts_to_arrow([getattr(r, name) for r in rows]) for name in STRUCT_COLUMNS}
        types = {name: t for name, (t, _) in mine.items()}
        if self._types:
            types = {name: self._types[name].unify(types[name]) for name in STRUCT_COLUMNS}
        arrays = {name: conform_dicts(arr, t, types[name]) for name, (t, arr) in mine.items()}
        if types != self._types:  # the first row group, or keys and types the earlier ones lacked
            self._types = types
            self._schema = file_schema(types, images=self._images, text_column=self.text_column)
            tmp = tempfile.TemporaryFile()
            self._parts.append((tmp, pq.ParquetWriter(tmp, self._schema, compression="zstd")))
        assert self._schema is not None
        self._parts[-1][1].write_table(self._table(rows, arrays))
        self._rows = []
        self._pending_bytes = 0

    def _table(self, rows: list[Record], dicts: dict[str, pa.Array]) -> pa.Table:
        content, is_json = [], []
        images: list[bytes | None] = []
        for r in rows:
            c = r.content
            if isinstance(c, str):
                content.append(c)
                is_json.append(False)
                images.append(None)
            else:
                image = c.get("image") if self._images and isinstance(c, dict) else None
                if isinstance(image, (bytes, bytearray)):
                    c = {k: v for k, v in c.items() if k != "image"}
                    images.append(bytes(image))
                else:
                    images.append(None)
                content.append(dumps(c).decode())
                is_json.append(True)
        columns = {
            "id": [r.id for r in rows],
            "hash": [r.hash for r in rows],
            "modality": [r.modality for r in rows],
            self.text_column: content,
            "content_is_json": is_json,
            "meta": dicts["meta"],
            "signals": dicts["signals"],
            "lineage": [[e.as_dict() for e in r.lineage] for r in rows],
            "drop_step": [r.drop[0] if r.drop else None for r in rows],
            "drop_reason": [r.drop[1] if r.drop else None for r in rows],
        }
        if self._images:
            columns.update({
                "key": [_str_or_none(r.meta.get("key")) for r in rows],
                "url": [_str_or_none(r.meta.get("url")) for r in rows],
                "caption": [r.content.get("caption") if isinstance(r.content, dict)
                            and isinstance(r.content.get("caption"), str) else None for r in rows],
                "image": images,
                "width": [_int_or_none(r.meta.get("width")) for r in rows],
                "height": [_int_or_none(r.meta.get("height")) for r in rows],
                "format": [_str_or_none(r.meta.get("format")) for r in rows],
            })
        return pa.table(columns, schema=self._schema)

    def close(self) -> None:
        try:
            self.flush()
            if not self._parts:  # no records: an empty file in Assay's layout
                pq.ParquetWriter(self._f, file_schema(text_column=self.text_column), compression="zstd").close()
            elif len(self._parts) == 1:
                tmp, writer = self._parts[0]
                writer.close()
                tmp.seek(0)
                shutil.copyfileobj(tmp, self._f, 4 << 20)
            else:
                assert self._schema is not None
                for _, writer in self._parts:
                    writer.close()
                with pq.ParquetWriter(self._f, self._schema, compression="zstd") as out:
                    for tmp, _ in self._parts:
                        tmp.seek(0)
                        _copy_row_groups(pq.ParquetFile(tmp), out, self._schema)
        finally:
            for tmp, _ in self._parts:
                tmp.close()
            self._parts = []
            self._f.close()


def _copy_row_groups(src: pq.ParquetFile, out: pq.ParquetWriter, schema: pa.Schema) -> None:
    """Every row group of ``src`` into ``out``, in ``schema`` (a unification of ``src``'s)."""
    have = src.schema_arrow
    have_types = dicts_types(have) if _is_struct_layout(have) else {}
    want_types = dicts_types(schema)
    for i in range(src.num_row_groups):
        table = src.read_row_group(i)
        columns = []
        for field in schema:
            if field.name not in have.names:
                columns.append(pa.nulls(table.num_rows, field.type))
                continue
            col = table.column(field.name).combine_chunks()
            if field.name in want_types and field.name in have_types:
                col = conform_dicts(col, have_types[field.name], want_types[field.name])
            else:
                col = conform(col, field.type)
            columns.append(col)
        out.write_table(pa.Table.from_arrays(columns, schema=schema))


def _is_struct_layout(schema: pa.Schema) -> bool:
    return all(name in schema.names and not pa.types.is_string(schema.field(name).type) for name in STRUCT_COLUMNS)


def unify_parquet_schemas(folders: list[Folder]) -> dict[str, Any]:
    """Give every Parquet file of each folder one schema (each folder its own: ``data/`` and ``rejected/``), so that
    pyarrow, ``datasets`` and duckdb read a folder's files as one table. The types of ``meta`` and ``signals`` are
    unified (:mod:`assay.io.struct_columns`); files already in the unified schema are left alone, the others are
    rewritten (row group by row group, into a temporary name, then moved over the original). Returns what it did:
    ``{"files": n, "rewritten": k, "bytes_rewritten": b, "seconds": s}``."""
    t0 = time.perf_counter()
    report = {"files": 0, "rewritten": 0, "bytes_rewritten": 0}
    for folder in folders:
        fs = folder.fs
        for stale in folder.glob(".tmp-unify-*"):  # left by a run killed while it unified
            fs.rm(stale)
        paths = sorted(p for p in folder.glob("*.parquet") if not p.rsplit("/", 1)[-1].startswith("."))
        report["files"] += len(paths)
        if len(paths) < 2:
            continue
        schemas = []
        for p in paths:
            with fs.open(p, "rb") as f:
                schemas.append(pq.read_schema(f))
        if not all(_is_struct_layout(s) for s in schemas):
            continue  # files of an older Assay (JSON text meta) are left as they are
        target = _unified_schema(schemas)
        for p, schema in zip(paths, schemas):
            if _same_layout(schema, target):
                continue
            tmp = f"{folder.path()}/.tmp-unify-{p.rsplit('/', 1)[-1]}"
            with fs.open(p, "rb") as src, fs.open(tmp, "wb") as dst:
                with pq.ParquetWriter(dst, target, compression="zstd") as out:
                    _copy_row_groups(pq.ParquetFile(src), out, target)
            report["bytes_rewritten"] += fs.size(p)
            fs.mv(tmp, p)
            report["rewritten"] += 1
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    text_columns = {read_metadata(s).get("text_column") or CONTENT for s in schemas}
    if len(text_columns) > 1:
        raise AssayError(f"Parquet files of one folder name their text column differently ({', '.join(text_columns)})")
    types = dicts_types(schemas[0])
    images = False
    for s in schemas:
        other = dicts_types(s)
        types = {name: types[name].unify(other[name]) for name in STRUCT_COLUMNS}
        images = images or "image" in s.names
    return file_schema(types, images=images, text_column=text_columns.pop())


def _same_layout(schema: pa.Schema, target: pa.Schema) -> bool:
    return (schema.names == target.names and all(a.type == b.type for a, b in zip(schema, target))
            and dicts_types(schema) == dicts_types(target))


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -(2 ** 31) <= v < 2 ** 31 else None

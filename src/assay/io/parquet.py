"""Parquet reading (whole files or row-group ranges) and writing.

Assay's Parquet layout loads with ``pyarrow`` and ``datasets.load_dataset("parquet", ...)``: columns ``id``, ``hash``,
``modality``, ``content`` (a string; JSON text when ``content_is_json``), ``meta`` and ``signals`` (JSON text: their
keys differ between records), ``lineage`` (list of {step, version, params}), ``drop_step``/``drop_reason``.
Foreign Parquet files (e.g. a ``text`` column) are read like foreign JSONL.

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

from typing import IO, Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from assay.core.errors import ErrorLog
from assay.core.record import Record, _lineage_entry, _restore_bytes, dumps, stable_id
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
#: img2dataset's columns added to Assay's layout for image-text files
IMAGE_FIELDS = [("key", pa.string()), ("url", pa.string()), ("caption", pa.large_string()),
                ("image", pa.large_binary()), ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string())]
IMAGE_SCHEMA = pa.schema(list(SCHEMA) + [pa.field(n, t) for n, t in IMAGE_FIELDS])
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
        ours = _ASSAY_COLUMNS <= names
        image_col = None if ours else _image_column(pf.schema_arrow)
        if image_col is not None:
            caption_col = text_key if text_key in names else next((c for c in CAPTION_COLUMNS if c in names), None)
        row = sum(pf.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
        try:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups):
                if ours:
                    yield from _records_from_batch(batch)
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


def _records_from_batch(batch: pa.RecordBatch) -> Iterator[Record]:
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    n = batch.num_rows
    images = cols.get("image")
    is_json = cols.get("content_is_json") or [False] * n
    drop_step = cols.get("drop_step") or [None] * n
    drop_reason = cols.get("drop_reason") or [None] * n
    loads = orjson.loads
    for i in range(n):
        content: Any = cols["content"][i]
        if is_json[i]:
            content = _restore_bytes(loads(content))
            if images is not None and images[i] is not None and isinstance(content, dict):
                content["image"] = images[i]  # image-text layout: the bytes live in their own column
        yield Record(
            cols["id"][i], content, cols["modality"][i],
            loads(cols["meta"][i]) if cols["meta"][i] else {},
            loads(cols["signals"][i]) if cols["signals"][i] else {},
            [_lineage_entry(e) for e in (cols["lineage"][i] or ())],
            (drop_step[i], drop_reason[i]) if drop_step[i] else None,
        )


class ParquetWriter:
    """Writes records to one Parquet file, a row group every ``row_group_size`` records (and, for image-text files,
    every :data:`IMAGE_ROW_GROUP_BYTES`). The layout is chosen at the first row group: Assay's, plus img2dataset's
    columns if that row group holds ``image_text`` records."""

    def __init__(self, f: IO[bytes], row_group_size: int = 10_000) -> None:
        self._f = f
        self._writer: pq.ParquetWriter | None = None
        self._images = False
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
        if self._writer is None:
            self._images = any(r.modality == "image_text" for r in rows)
            self._writer = pq.ParquetWriter(self._f, IMAGE_SCHEMA if self._images else SCHEMA, compression="zstd")
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
            "content": content,
            "content_is_json": is_json,
            "meta": [dumps(r.meta).decode() for r in rows],
            "signals": [dumps(r.signals).decode() for r in rows],
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
        table = pa.table(columns, schema=IMAGE_SCHEMA if self._images else SCHEMA)
        self._writer.write_table(table)
        self._rows = []
        self._pending_bytes = 0

    def close(self) -> None:
        self.flush()
        if self._writer is None:  # no records: an empty file in Assay's layout
            self._writer = pq.ParquetWriter(self._f, SCHEMA, compression="zstd")
        self._writer.close()
        self._f.close()


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -(2 ** 31) <= v < 2 ** 31 else None

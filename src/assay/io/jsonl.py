"""JSONL reading (plain, .gz, .zst; whole files or byte ranges of plain files) and writing.

Lines that are not valid JSON or not valid UTF-8, and streams that end early (a truncated gzip), are skipped and
counted in the error log with the file and the byte offset (of the uncompressed stream); the run goes on.

Assay's records are read back whether their content is under ``content`` or, written with ``output.text_column:
text``, under ``text`` (a line with all of a record's keys: ``id``, ``hash``, ``modality``, ``meta``, ``signals``,
``lineage``); other JSON objects are foreign input (``text_key`` names their text).
"""

from __future__ import annotations

import gzip
import zlib
from typing import IO, Any, Iterator

import orjson

from assay.core.errors import ErrorLog
from assay.core.record import Record, stable_id
from assay.io.files import TruncatedStream, compression_of, iter_decompressed, open_binary


def record_from_foreign(obj: Any, source: str, position: int, text_key: str | None, id_key: str | None,
                        modality: str) -> Record:
    """A record from a JSON object not written by Assay (e.g. ``{"text": ..., "url": ...}``)."""
    if not isinstance(obj, dict):
        return Record(stable_id(source, position), obj, modality, {"source": source, "offset": position})
    meta = obj  # freshly parsed and ours: no copy
    rid = str(meta.pop(id_key)) if id_key and id_key in meta else stable_id(source, position)
    if text_key is None:
        content: Any = dict(obj)
        meta = {}
    elif text_key in meta:
        content = meta.pop(text_key)
    else:
        raise KeyError(text_key)
    meta["source"] = source
    meta["offset"] = position
    return Record(rid, content, modality, meta)


#: the keys of a record Assay wrote with ``output.text_column: text`` (its content under ``text``)
TEXT_KEYED_RECORD = frozenset(("id", "hash", "modality", "text", "meta", "signals", "lineage"))


def is_text_keyed_record(obj: Any) -> bool:
    """A JSON object Assay wrote as a record with its content under ``text`` (not a foreign ``{"text": ...}``)."""
    return isinstance(obj, dict) and "content" not in obj and TEXT_KEYED_RECORD <= obj.keys()


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Split a stream of chunks into lines (without the newline); the last line may lack one."""
    rest = b""
    for chunk in chunks:
        if rest:
            chunk = rest + chunk
        lines = chunk.split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def read_jsonl(path: str, errors: ErrorLog, *, start: int = 0, end: int | None = None, text_key: str | None = "text",
               id_key: str | None = None, modality: str = "text") -> Iterator[Record]:
    """Records from a JSONL file; ``start``/``end`` select a byte range of an uncompressed file (a line belongs to
    the range its first byte is in)."""
    if (start or end is not None) and compression_of(path) is not None:
        raise ValueError("byte ranges work on uncompressed JSONL only")
    raw = open_binary(path)
    with raw:
        pos = 0
        if start > 0:
            raw.seek(start - 1)
            skipped = raw.readline()  # finish the line that straddles the boundary: it belongs to the previous range
            pos = start - 1 + len(skipped)
        loads = orjson.loads
        is_record = Record.is_record_dict
        from_dict = Record.from_dict
        try:
            for line in _lines(iter_decompressed(path, raw)):
                here = pos
                pos += len(line) + 1
                if end is not None and here >= end:
                    break
                if not line or line.isspace():
                    continue
                try:
                    obj = loads(line)
                except orjson.JSONDecodeError as e:
                    kind = "bad_json"
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        kind = "invalid_utf8"
                    errors.add(kind, path, here, str(e))
                    continue
                if is_record(obj) or is_text_keyed_record(obj):
                    try:
                        if "content" not in obj:
                            obj["content"] = obj.pop("text")
                        yield from_dict(obj)
                    except (KeyError, TypeError, ValueError) as e:
                        errors.add("bad_record", path, here, f"{type(e).__name__}: {e}")
                    continue
                try:
                    yield record_from_foreign(obj, path, here, text_key, id_key, modality)
                except KeyError:
                    errors.add("missing_field", path, here, f"no field {text_key!r} (set input.text_key)")
        except TruncatedStream as e:
            errors.add("truncated_file", path, pos, str(e))
        except (zlib.error, OSError) as e:
            errors.add("corrupt_file", path, pos, f"{type(e).__name__}: {e}")
        except Exception as e:  # zstandard.ZstdError: count it, keep the run going
            if type(e).__module__.startswith("zstandard"):
                errors.add("corrupt_file", path, pos, f"{type(e).__name__}: {e}")
            else:
                raise


class JsonlWriter:
    """Writes records to one JSONL file (compressed by extension); each record's content under ``text_column``
    (``content``, or ``text`` as datatrove and Data-Juicer write)."""

    def __init__(self, f: IO[bytes], compression: str | None, text_column: str = "content") -> None:
        if text_column not in ("content", "text"):
            raise ValueError(f"text_column must be 'content' or 'text', not {text_column!r}")
        self.text_column = text_column
        self._raw = f
        if compression == "gzip":
            self._f: IO[bytes] = gzip.GzipFile(fileobj=f, mode="wb", compresslevel=3)  # type: ignore[assignment]
        elif compression == "zstd":
            import zstandard

            self._f = zstandard.ZstdCompressor(level=3).stream_writer(f, closefd=False)  # type: ignore[assignment]
        else:
            self._f = f
        self._buf: list[bytes] = []
        self._buffered = 0
        self.bytes_written = 0

    def write(self, record: Record) -> int:
        return self.write_many([record])

    def write_many(self, records: list[Record]) -> int:
        key = self.text_column
        lines = [r.to_json(key) for r in records]
        n = sum(map(len, lines)) + len(lines)
        self._buf.extend(lines)  # lines without their newline: joined once in flush()
        self._buffered += n
        self.bytes_written += n
        if self._buffered >= 4 << 20:
            self.flush()
        return n

    def flush(self) -> None:
        if self._buf:
            self._buf.append(b"")
            self._f.write(b"\n".join(self._buf))
            self._buf.clear()
            self._buffered = 0

    def close(self) -> None:
        self.flush()
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()

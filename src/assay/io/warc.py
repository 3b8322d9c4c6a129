"""WARC reading (.warc, .warc.gz) with FastWARC, robust to damaged files; and a small WARC writer.

A ``.warc.gz`` file is a series of gzip members, one per WARC record. We split the members ourselves so that a
corrupt member (bad deflate data) is skipped and counted, and reading resumes at the next member; a truncated last
member is counted, not silently dropped (FastWARC alone stops at the first damage, or ends quietly on truncation).
Each member is parsed by FastWARC.

Records come out as ``modality="html"`` with ``content`` the decoded page (HTTP charset, else detection) and
``meta``: url, warc_date, warc_record_id, content_type, charset, http_status, source, offset.
"""

from __future__ import annotations

import gzip
import io
import uuid
import zlib
from datetime import datetime, timezone
from typing import IO, Iterator

from assay.core.errors import ErrorLog
from assay.core.record import Record, stable_id
from assay.io.files import open_binary

_GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 20
MAX_RECORD_BYTES = 256 * 1024 * 1024


def _gzip_members(f: IO[bytes], path: str, errors: ErrorLog) -> Iterator[tuple[int, bytes]]:
    """Yield (compressed offset, decompressed bytes) for each gzip member; skip damaged ones, counted."""
    pos = 0  # absolute offset of data[0]
    data = f.read(_CHUNK)
    while data:
        start = pos
        d = zlib.decompressobj(31)
        out: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = d.decompress(data)
                size += len(chunk)
                if size > MAX_RECORD_BYTES:
                    raise _TooLarge()
                out.append(chunk)
                if d.eof:
                    used = len(data) - len(d.unused_data)
                    pos += used
                    data = d.unused_data or f.read(_CHUNK)
                    break
                pos += len(data)
                data = f.read(_CHUNK)
                if not data:
                    errors.add("truncated_record", path, start, "file ends inside a gzip member (truncated)")
                    return
            yield start, b"".join(out)
        except (zlib.error, _TooLarge) as e:
            kind = "too_large" if isinstance(e, _TooLarge) else "corrupt_record"
            errors.add(kind, path, start, f"{type(e).__name__}: {e}" if str(e) else kind)
            # resynchronise: the next gzip magic after the damaged member's start
            f.seek(start + 1)
            pos = start + 1
            data = f.read(_CHUNK)
            while data:
                i = data.find(_GZIP_MAGIC)
                if i >= 0:
                    pos += i
                    data = data[i:]
                    break
                keep = len(_GZIP_MAGIC) - 1  # the magic may straddle chunks
                pos += len(data) - keep
                data = data[-keep:] + f.read(_CHUNK) if len(data) > keep else f.read(_CHUNK)
                if len(data) <= keep:
                    return


class _TooLarge(Exception):
    pass


def decode_html(body: bytes, declared: str | None) -> tuple[str, str]:
    """Decode a page: the declared (HTTP) charset if it works, else UTF-8, else detection (resiliparse when
    installed), else cp1252 with replacement. Returns (text, charset used)."""
    if declared:
        try:
            return body.decode(declared), declared.lower()
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        enc = detect_encoding(body)
        return bytes_to_str(body, enc), enc
    except ImportError:
        return body.decode("cp1252", errors="replace"), "cp1252"


def _records_from_bytes(blob: bytes, path: str, base_offset: int, types: int, errors: ErrorLog,
                        skipped: dict[str, int]) -> Iterator[Record]:
    from fastwarc.warc import ArchiveIterator

    try:
        for rec in ArchiveIterator(io.BytesIO(blob), record_types=types, parse_http=True):
            offset = base_offset + rec.stream_pos
            try:
                yield _to_record(rec, path, offset, skipped)
            except Exception as e:  # one malformed record must not end the file
                errors.add("bad_record", path, offset, f"{type(e).__name__}: {e}")
    except OSError as e:
        errors.add("corrupt_record", path, base_offset, str(e))


def _to_record(rec, path: str, offset: int, skipped: dict[str, int]) -> Record:  # noqa: ANN001
    h = rec.headers
    url = h.get("WARC-Target-URI", "")
    body = rec.reader.read()
    meta = {
        "source": path,
        "offset": offset,
        "url": url,
        "warc_record_id": rec.record_id,
        "warc_date": rec.record_date.isoformat() if rec.record_date else None,
    }
    content_type = ""
    declared = None
    if rec.is_http:
        status = rec.http_headers.status_code if rec.http_headers is not None else None
        meta["http_status"] = status
        content_type = (rec.http_content_type or "").lower()
        declared = rec.http_charset
    else:
        content_type = (h.get("Content-Type", "") or "").lower()
    meta["content_type"] = content_type
    text, charset = decode_html(body, declared)
    meta["charset"] = charset
    return Record(stable_id(path, offset), text, "html", meta)


def read_warc(path: str, errors: ErrorLog, *, types: tuple[str, ...] = ("response",),
              skipped: dict[str, int] | None = None) -> Iterator[Record]:
    """Records of the given WARC types from ``path``; damaged records are skipped and counted."""
    from fastwarc.warc import WarcRecordType

    mask = 0
    for t in types:
        mask |= int(getattr(WarcRecordType, t))
    skipped = skipped if skipped is not None else {}
    with open_binary(path) as f:
        if path.lower().endswith(".gz"):
            for start, blob in _gzip_members(f, path, errors):
                yield from _records_from_bytes(blob, path, start, mask, errors, skipped)
        else:
            yield from _records_from_bytes(f.read(), path, 0, mask, errors, skipped)


# -- writing ---------------------------------------------------------------------------------------------------

def warc_response(url: str, html: bytes, date: datetime | None = None, content_type: str = "text/html; charset=utf-8",
                  status: str = "200 OK", record_id: str | None = None) -> bytes:
    """One WARC/1.0 response record (uncompressed bytes)."""
    http = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(html)}\r\n\r\n".encode() + html
    date = date or datetime.now(timezone.utc)
    rid = record_id or f"<urn:uuid:{uuid.uuid4()}>"
    payload_type = content_type.split(";")[0].strip()  # as Common Crawl writes it (readers filter on it)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Date: {date.strftime('%Y-%m-%dT%H:%M:%SZ')}\r\nWARC-Record-ID: {rid}\r\n"
            f"WARC-Identified-Payload-Type: {payload_type}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def write_warc_gz(path: str, records: list[bytes]) -> None:
    """Write records as a .warc.gz, one gzip member per record (the layout readers can seek and resync in)."""
    with open(path, "wb") as f:
        for r in records:
            f.write(gzip.compress(r, compresslevel=6, mtime=0))

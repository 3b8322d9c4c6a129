"""Damaged input is skipped and counted with file and offset; everything else is read."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from assay.core.errors import ErrorLog
from assay.io.jsonl import read_jsonl
from assay.io.sources import plan_shards, read_shard
from assay.io.warc import read_warc, warc_response, write_warc_gz
from testutil import SAMPLE, write_jsonl


def _rows(n: int) -> list[dict]:
    return [{"text": f"document number {i} " * 5, "n": i} for i in range(n)]


def test_truncated_gzip_keeps_what_came_before(tmp_path: Path):
    blob = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in _rows(2000)))
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(blob[: len(blob) // 2])
    errors = ErrorLog()
    got = list(read_jsonl(str(p), errors))
    assert 0 < len(got) < 2000
    assert [r.meta["n"] for r in got] == list(range(len(got)))  # the prefix, in order, nothing invented
    assert errors.counts["truncated_file"] == 1
    assert errors.entries[-1]["source"] == str(p) and errors.entries[-1]["offset"] > 0


def test_bad_json_and_invalid_utf8_lines(tmp_path: Path):
    lines = [orjson.dumps(r) for r in _rows(5)]
    lines.insert(2, b'{"text": "broken')
    lines.insert(4, b'{"text": "caf\xe9 latin-1"}')
    lines.insert(5, b'["not", "an", "object with text"]')
    p = tmp_path / "m.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    errors = ErrorLog()
    got = list(read_jsonl(str(p), errors))
    assert [r.meta["n"] for r in got if "n" in r.meta] == [0, 1, 2, 3, 4]
    assert errors.counts["bad_json"] == 1 and errors.counts["invalid_utf8"] == 1
    bad = [e for e in errors.entries if e["kind"] == "invalid_utf8"][0]
    assert bad["offset"] == p.read_bytes().index(b'{"text": "caf\xe9')


def test_missing_text_field_is_counted(tmp_path: Path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"body": "no text key"}, {"text": "ok"}])
    errors = ErrorLog()
    assert [r.content for r in read_jsonl(str(p), errors)] == ["ok"]
    assert errors.counts["missing_field"] == 1


def test_byte_range_shards_cover_every_line_once(tmp_path: Path):
    p = write_jsonl(tmp_path / "big.jsonl", [{"text": "x" * (i % 97), "n": i} for i in range(3000)])
    for shard_bytes in (1000, 4096, 65536, 10**9):
        shards = plan_shards([str(p)], "auto", shard_bytes)
        ns = []
        for s in shards:
            ns.extend(r.meta["n"] for r in read_shard(s, ErrorLog()))
        assert ns == list(range(3000)), shard_bytes


def _warc_records(n: int) -> list[bytes]:
    return [warc_response(f"https://example.org/{i}", f"<html><body><p>page {i}</p></body></html>".encode())
            for i in range(n)]


def test_warc_corrupt_record_is_skipped_and_reading_resumes(tmp_path: Path):
    recs = _warc_records(10)
    members = [gzip.compress(r) for r in recs]
    blob = bytearray(b"".join(members))
    start = sum(len(m) for m in members[:4])
    blob[start + 20: start + 40] = b"\x00" * 20  # damage record 4's deflate stream
    p = tmp_path / "bad.warc.gz"
    p.write_bytes(bytes(blob))
    errors = ErrorLog()
    urls = [r.meta["url"] for r in read_warc(str(p), errors)]
    assert urls == [f"https://example.org/{i}" for i in range(10) if i != 4]
    assert errors.counts["corrupt_record"] == 1
    assert errors.entries[0]["offset"] == start


def test_warc_truncated_last_record_is_counted(tmp_path: Path):
    members = [gzip.compress(r) for r in _warc_records(6)]
    blob = b"".join(members)
    p = tmp_path / "trunc.warc.gz"
    p.write_bytes(blob[: len(blob) - len(members[-1]) // 2])
    errors = ErrorLog()
    assert len(list(read_warc(str(p), errors))) == 5
    assert errors.counts["truncated_record"] == 1


def test_warc_garbage_between_records_and_bad_charset(tmp_path: Path):
    recs = _warc_records(3)
    latin = warc_response("https://example.org/latin", "<p>café crème</p>".encode("latin-1"),
                          content_type="text/html; charset=utf-8")  # lies about its charset
    p = tmp_path / "g.warc.gz"
    with open(p, "wb") as f:
        f.write(gzip.compress(recs[0]))
        f.write(b"this is not gzip at all \x00\x01\x02")
        f.write(gzip.compress(recs[1]))
        f.write(gzip.compress(latin))
        f.write(gzip.compress(recs[2]))
    errors = ErrorLog()
    got = list(read_warc(str(p), errors))
    assert [r.meta["url"].rsplit("/", 1)[-1] for r in got] == ["0", "1", "latin", "2"]
    assert "café" in got[2].content
    assert errors.counts["corrupt_record"] == 1


def test_bundled_sample_reads_cleanly():
    errors = ErrorLog()
    recs = []
    for s in plan_shards([str(SAMPLE)], "auto"):
        recs.extend(read_shard(s, errors))
    assert len(recs) == 308 and not errors
    assert all(r.modality == "html" and r.meta["url"].startswith("https://") for r in recs)
    assert len({r.id for r in recs}) == 308
    assert sum("<html" in r.content.lower() for r in recs) == 308


def test_uncompressed_warc(tmp_path: Path):
    p = tmp_path / "plain.warc"
    p.write_bytes(b"".join(_warc_records(4)))
    assert len(list(read_warc(str(p), ErrorLog()))) == 4


def test_write_warc_gz_roundtrip(tmp_path: Path):
    p = tmp_path / "w.warc.gz"
    write_warc_gz(str(p), _warc_records(3))
    assert [r.meta["http_status"] for r in read_warc(str(p), ErrorLog())] == [200, 200, 200]

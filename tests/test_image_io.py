"""Image-text I/O: WebDataset tars (img2dataset layout) and img2dataset-style Parquet, read and written, with damaged
input counted and survived. Tars are written by the standard library's tarfile (an independent writer)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from assay.core.errors import ErrorLog
from assay.core.record import LineageEntry, Record
from assay.io.parquet import ParquetWriter, read_parquet
from assay.io.sources import plan_shards, read_shard
from assay.io.webdataset import WebDatasetWriter, image_extension, read_webdataset, split_key
from image_scenes import encode, scene, write_tar


def _samples(n: int, folder: str = "00000") -> list[dict]:
    out = []
    for i in range(n):
        key = f"{folder}/{i:09d}"
        fmt = ("JPEG", "PNG", "WEBP")[i % 3]
        img = encode(scene(i, (64 + i, 48)), fmt)
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
        out.append({"__key__": key, ext: img, "txt": f"caption number {i}",
                    "json": {"url": f"http://example.com/{i}.{ext}", "key": f"{i:09d}", "status": "success",
                             "width": 64 + i, "height": 48}})
    return out


def _member_offsets(path: Path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        return {m.name: m.offset for m in tar.getmembers()}


def test_split_key_follows_webdataset_rules() -> None:
    assert split_key("00000/000000012.jpg") == ("00000/000000012", "jpg")
    assert split_key("./a/b.seg.PNG") == ("a/b", "seg.png")
    assert split_key("plain") == ("plain", "")


def test_reads_img2dataset_tar(tmp_path: Path) -> None:
    samples = _samples(7)
    path = write_tar(tmp_path / "00000.tar", samples)
    errors = ErrorLog()
    records = list(read_webdataset(str(path), errors))
    assert len(errors) == 0
    assert len(records) == 7
    offsets = _member_offsets(path)
    for s, r in zip(samples, records):
        ext = next(e for e in ("jpg", "png", "webp") if e in s)
        assert r.modality == "image_text"
        assert r.content == {"caption": s["txt"], "image": s[ext]}
        assert r.meta["url"] == s["json"]["url"] and r.meta["status"] == "success"
        assert r.meta["key"] == s["json"]["key"]  # the .json's key wins over the member name
        assert r.meta["offset"] == offsets[f"{s['__key__']}.{ext}"]  # the sample's first member header
        assert r.meta["source"] == str(path)
    assert len({r.id for r in records}) == 7
    # the same file read twice gives the same ids (resume safety)
    assert [r.id for r in read_webdataset(str(path), ErrorLog())] == [r.id for r in records]


def test_input_format_detected_and_sharded_per_tar(tmp_path: Path) -> None:
    write_tar(tmp_path / "a.tar", _samples(3, "a"))
    write_tar(tmp_path / "b.tar", _samples(2, "b"))
    shards = plan_shards([str(tmp_path)])
    assert [(Path(s.path).name, s.format) for s in shards] == [("a.tar", "webdataset"), ("b.tar", "webdataset")]
    assert sum(1 for s in shards for _ in read_shard(s, ErrorLog())) == 5


def test_long_member_names_via_pax_and_gnu(tmp_path: Path) -> None:
    img = encode(scene(1), "PNG")
    key = "deep/" + "x" * 120 + "/sample"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = tmp_path / f"long-{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            for ext, data in (("png", img), ("txt", "ünïcode caption".encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        errors = ErrorLog()
        [r] = list(read_webdataset(str(path), errors))
        assert len(errors) == 0
        assert r.meta["key"] == key and r.content == {"caption": "ünïcode caption", "image": img}


def test_corrupt_header_is_counted_and_reading_resumes(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "s.tar", _samples(6))
    offsets = _member_offsets(path)
    bad = offsets["00000/000000002.txt"]  # the caption header of the third sample
    data = bytearray(path.read_bytes())
    data[bad + 10: bad + 40] = b"\xff" * 30  # breaks the header checksum
    path.write_bytes(bytes(data))
    errors = ErrorLog()
    records = list(read_webdataset(str(path), errors))
    assert errors.counts == {"corrupt_tar_header": 1}
    assert errors.entries[0]["offset"] == bad and errors.entries[0]["source"] == str(path)
    # the third sample lost its caption member (its data block is skipped while resynchronising), the others are whole
    assert [r.meta["key"] for r in records] == [f"{i:09d}" for i in range(6)]
    assert records[2].content["caption"] == ""
    assert all(r.content["caption"] == f"caption number {i}" for i, r in enumerate(records) if i != 2)


def test_truncated_member_is_counted_and_earlier_samples_kept(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "s.tar", _samples(5))
    offsets = _member_offsets(path)
    cut = offsets["00000/000000003.jpg"] + 512 + 100  # inside the fourth sample's image data
    path.write_bytes(path.read_bytes()[:cut])
    errors = ErrorLog()
    records = list(read_webdataset(str(path), errors))
    assert errors.counts == {"truncated_member": 1}
    assert errors.entries[0]["offset"] == offsets["00000/000000003.jpg"]
    assert "000000003.jpg" in errors.entries[0]["message"]
    assert [r.meta["key"] for r in records] == [f"{i:09d}" for i in range(3)]


def test_missing_end_of_archive_is_counted(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "s.tar", _samples(3))
    offsets = _member_offsets(path)
    end = max(offsets.values())
    last_size = len(b'{"url": "http://example.com/2.webp", "key": "000000002", "status": "success", "width": 66, '
                    b'"height": 48}')
    path.write_bytes(path.read_bytes()[: end + 512 + -(-last_size // 512) * 512])  # cut the zero blocks only
    errors = ErrorLog()
    assert len(list(read_webdataset(str(path), errors))) == 3
    assert errors.counts == {"truncated_file": 1}


def test_garbage_and_empty_files_do_not_crash(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(bytes(range(256)) * 40)
    errors = ErrorLog()
    assert list(read_webdataset(str(junk), errors)) == []
    assert errors.counts == {"corrupt_tar_header": 1} and errors.entries[0]["offset"] == 0
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    errors = ErrorLog()
    assert list(read_webdataset(str(empty), errors)) == []
    assert errors.counts == {"empty_file": 1} and errors.entries[0]["offset"] == 0


def test_empty_tar_shard_is_logged_in_errors_jsonl(tmp_path: Path) -> None:
    """Issue 15 §3: a 0-byte .tar shard (an interrupted download) was skipped without a word in errors.jsonl."""
    import orjson

    from testutil import assay_cli

    (tmp_path / "in").mkdir()
    write_tar(tmp_path / "in" / "00000.tar", _samples(3))
    (tmp_path / "in" / "00001.tar").write_bytes(b"")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\ninput: {format: webdataset}\noutput: {format: webdataset}\nsteps:\n  - image_decode\n")
    assay_cli("run", str(recipe), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-w", "1", "--no-report")
    logged = [orjson.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_bytes().splitlines()]
    assert [(e["kind"], Path(e["source"]).name, e["offset"]) for e in logged] == [("empty_file", "00001.tar", 0)]
    stats = orjson.loads((tmp_path / "out" / "stats.json").read_bytes())
    assert stats["input"]["records_read"] == 3 and stats["errors"] == {"empty_file": 1}


def test_sample_without_image_and_bad_json_are_counted(tmp_path: Path) -> None:
    img = encode(scene(3), "JPEG")
    path = write_tar(tmp_path / "s.tar", [
        {"__key__": "a", "txt": "no picture here", "json": {"url": "u"}},
        {"__key__": "b", "jpg": img, "txt": "fine", "json": b"{not json"},
        {"__key__": "c", "jpg": img, "txt": b"\xff\xfe caption"},
    ])
    errors = ErrorLog()
    records = list(read_webdataset(str(path), errors))
    assert errors.counts == {"missing_image": 1, "bad_json": 1, "invalid_utf8": 1}
    assert [r.meta["key"] for r in records] == ["b", "c"]
    assert records[1].content["caption"].endswith(" caption")


def _rich_record(i: int, image: bytes) -> Record:
    return Record(f"id-{i}", {"caption": f"a caption {i}", "image": image, "extra": [1, 2]}, "image_text",
                  {"url": f"http://x/{i}", "key": f"k{i:03d}", "width": 70, "height": 50, "format": "png",
                   "parents": ["p"]},
                  {"image.phash": "8000000000000000", "clip.score": 0.31},
                  [LineageEntry("image_decode", "1", "abc"), LineageEntry("image_filter", "1", "def")])


def test_webdataset_writer_round_trip(tmp_path: Path) -> None:
    png = encode(scene(5, (70, 50)), "PNG")
    records = [_rich_record(i, png) for i in range(4)]
    records.append(Record("t", "just a text", "text", {"source": "s"}))
    records.append(Record("dup-key", {"caption": "c", "image": encode(scene(6), "JPEG")}, "image_text",
                          {"key": "k000"}))  # key already used in this file: a fresh one is made
    path = tmp_path / "out.tar"
    w = WebDatasetWriter(open(path, "wb"))
    w.write_many(records)
    w.close()
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names[:3] == ["k000.png", "k000.txt", "k000.json"]
    assert "000000005.jpg" in names and "000000004.txt" in names
    errors = ErrorLog()
    back = list(read_webdataset(str(path), errors))
    assert len(errors) == 0
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    # writing is deterministic
    path2 = tmp_path / "out2.tar"
    w = WebDatasetWriter(open(path2, "wb"))
    w.write_many(records)
    w.close()
    assert path2.read_bytes() == path.read_bytes()


def test_image_extension_sniffs_magic() -> None:
    img = scene(2, (40, 30))
    assert image_extension(encode(img, "JPEG")) == "jpg"
    assert image_extension(encode(img, "PNG")) == "png"
    assert image_extension(encode(img, "WEBP")) == "webp"
    assert image_extension(encode(img, "GIF")) == "gif"
    assert image_extension(b"not an image") == "img"
    assert image_extension(b"", "jpeg") == "jpg"


def test_reads_img2dataset_parquet(tmp_path: Path) -> None:
    imgs = [encode(scene(i, (50, 40)), "JPEG") for i in range(4)]
    table = pa.table({
        "url": [f"http://e/{i}.jpg" for i in range(5)],
        "caption": [f"cap {i}" for i in range(5)],
        "key": [f"{i:09d}" for i in range(5)],
        "status": ["success"] * 4 + ["failed_to_download"],
        "width": [50] * 4 + [None], "height": [40] * 4 + [None],
        "jpg": pa.array(imgs + [None], type=pa.binary()),
    })
    path = tmp_path / "00000.parquet"
    pq.write_table(table, path)
    errors = ErrorLog()
    records = list(read_parquet(str(path), errors))
    assert errors.counts == {"missing_image": 1} and errors.entries[0]["offset"] == 4
    assert len(records) == 4
    for i, r in enumerate(records):
        assert r.modality == "image_text"
        assert r.content == {"caption": f"cap {i}", "image": imgs[i]}
        assert r.meta["url"] == f"http://e/{i}.jpg" and r.meta["key"] == f"{i:09d}" and r.meta["offset"] == i


def test_reads_hf_image_struct_column(tmp_path: Path) -> None:
    img = encode(scene(9, (30, 30)), "PNG")
    struct = pa.array([{"bytes": img, "path": None}, {"bytes": None, "path": "/data/x.png"}],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": struct, "text": ["one", "two"]}), tmp_path / "hf.parquet")
    records = list(read_parquet(str(tmp_path / "hf.parquet"), ErrorLog()))
    assert [r.content for r in records] == [{"caption": "one", "image": img},
                                           {"caption": "two", "image_path": "/data/x.png"}]


def test_parquet_writer_uses_img2dataset_columns_and_round_trips(tmp_path: Path) -> None:
    png = encode(scene(5, (70, 50)), "PNG")
    records = [_rich_record(i, png) for i in range(3)]
    records.append(Record("no-image", {"caption": "only a path", "image_path": "/x.jpg"}, "image_text", {}))
    records.append(Record("dropped", {"caption": "x", "image": b"junk"}, "image_text", {},
                          drop=("image_decode", "corrupt_image")))
    path = tmp_path / "out.parquet"
    w = ParquetWriter(open(path, "wb"))
    w.write_many(records)
    w.close()
    t = pq.read_table(path)
    assert {"key", "url", "caption", "image", "width", "height", "format"} <= set(t.column_names)
    assert t.column("image").to_pylist()[:3] == [png] * 3
    assert t.column("caption").to_pylist()[0] == "a caption 0"
    assert t.column("width").to_pylist()[:3] == [70] * 3
    assert png not in t.column("content").to_pylist()[0].encode()  # the bytes are stored once, in their column
    assert len(t.column("content").to_pylist()[0]) < 200
    back = list(read_parquet(str(path), ErrorLog()))
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    # a file of text records keeps Assay's plain layout
    w = ParquetWriter(open(tmp_path / "text.parquet", "wb"))
    w.write(Record("t", "text", "text"))
    w.close()
    assert "image" not in pq.read_schema(tmp_path / "text.parquet").names


def test_decoded_images_survive_the_round_trip(tmp_path: Path) -> None:
    """Bytes written to tar and read back decode to the same pixels (no re-encoding anywhere)."""
    jpg = encode(scene(11, (90, 60)), "JPEG")
    path = tmp_path / "one.tar"
    w = WebDatasetWriter(open(path, "wb"))
    w.write(Record("a", {"caption": "c", "image": jpg}, "image_text", {}))
    w.close()
    [r] = list(read_webdataset(str(path), ErrorLog()))
    assert r.content["image"] == jpg
    assert Image.open(io.BytesIO(r.content["image"])).size == (90, 60)

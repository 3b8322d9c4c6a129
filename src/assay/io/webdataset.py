"""WebDataset tar shards (the layout img2dataset writes) → image-text records, and records → tar shards.

A WebDataset shard is a plain POSIX tar whose members are grouped into samples by key: ``00000/000000012.jpg``,
``00000/000000012.txt`` and ``00000/000000012.json`` form the sample with key ``00000/000000012`` (the key is the
member name up to the first dot of its file name; the rest is the member's extension). Consecutive members with the
same key form one sample.

Reading: each sample becomes an ``image_text`` record with ``content = {"caption": <.txt>, "image": <image
bytes>}`` (other members are kept in ``content`` under their extension, as bytes) and ``meta`` = the ``.json``
object (url, key, width, height, ... as img2dataset writes them) plus ``source``, ``offset`` (byte offset of the
sample's first member header) and ``key``. Samples written by Assay carry the record's envelope (id, signals,
lineage) under ``.json["assay"]`` and come back identical.

The tar is parsed here rather than with :mod:`tarfile` so that damage is counted and survived: a header whose
checksum is wrong is logged (``corrupt_tar_header``, with file and offset) and reading resynchronises at the next
valid header; a member cut short by the end of the file is logged (``truncated_member``) and its sample skipped; a
file that ends without the end-of-archive blocks is logged (``truncated_file``) after every complete sample has been
delivered; a 0-byte file is logged (``empty_file``). Samples without an image member are skipped and counted
(``missing_image``).
"""

from __future__ import annotations

import io
import re
import tarfile
from typing import IO, Any, Iterator

import orjson

from assay.core.errors import ErrorLog
from assay.core.record import Record, _lineage_entry, _restore_bytes, dumps, stable_id
from assay.io.files import open_binary

BLOCK = 512
#: member extensions read as the sample's image, in order of preference
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm", "img")
#: what a caption member is called when ``text_key`` is the default ``text`` (or null)
CAPTION_EXT = "txt"
#: members larger than this are not loaded (an image this large is not training data; a broken size field is likely)
MAX_MEMBER_BYTES = 1 << 30
_ENVELOPE = "assay"


# -- reading -------------------------------------------------------------------------------------------------------
class _Header:
    __slots__ = ("name", "size", "type", "offset")

    def __init__(self, name: str, size: int, type_: bytes, offset: int) -> None:
        self.name, self.size, self.type, self.offset = name, size, type_, offset


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(b for b in block[:148] + block[156:] if b > 127) * 2  # old tars summed signed chars
    return stored in (unsigned, signed)


def _octal_size(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    return int(field.replace(b"\x00", b" ").strip() or b"0", 8)


def _parse_header(block: bytes, offset: int) -> _Header | None:
    """The header in ``block``, or None if it is not a valid tar header (bad checksum or size)."""
    if not _checksum_ok(block):
        return None
    try:
        size = _octal_size(block[124:136])
    except ValueError:
        return None
    name = block[0:100].split(b"\x00", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return _Header(name.decode("utf-8", "surrogateescape"), size, block[156:157], offset)


def _pax_path(data: bytes) -> str | None:
    """The ``path`` of a pax extended header (records ``"<len> key=value\\n"``), if it sets one."""
    pos = 0
    while pos < len(data):
        m = re.match(rb"(\d+) ", data[pos:pos + 24])
        if not m:
            return None
        length = int(m.group(1))
        if length <= 0:
            return None
        key, _, value = data[pos + m.end(): pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += length
    return None


class _Reader:
    """A forward-only reader of 512-byte-aligned tar data that knows its byte offset."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunks, want = [], n
        while want > 0:
            c = self.f.read(want)
            if not c:
                break
            chunks.append(c)
            want -= len(c)
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        """Read past ``n`` bytes a megabyte at a time (never holding them); returns how many there were."""
        done = 0
        while done < n:
            got = len(self.read(min(1 << 20, n - done)))
            if not got:
                break
            done += got
        return done


def iter_tar_members(path: str, f: IO[bytes], errors: ErrorLog) -> Iterator[tuple[str, int, bytes | None]]:
    """Yield ``(name, header offset, data)`` of every regular file in the tar stream ``f``; damage is counted in
    ``errors`` (see the module docstring) and reading goes on where it can. A member cut short by the end of the
    file is yielded last with ``data = None``."""
    r = _Reader(f)
    long_name: str | None = None
    resyncing_from: int | None = None
    while True:
        offset = r.pos
        block = r.read(BLOCK)
        if len(block) < BLOCK:
            if resyncing_from is not None:
                errors.add("corrupt_tar_header", path, resyncing_from, "no valid tar header after this offset")
            elif offset == 0 and not block:
                errors.add("empty_file", path, 0, "the tar is 0 bytes long (an interrupted download or copy?)")
            elif offset > 0 or block:
                errors.add("truncated_file", path, offset, "tar ends without its end-of-archive blocks")
            return
        if block == b"\x00" * BLOCK:
            if resyncing_from is not None:
                continue  # zero padding inside damaged data: keep looking for a header
            return  # end of archive
        header = _parse_header(block, offset)
        if header is None:
            if resyncing_from is None:
                resyncing_from = offset
            continue
        if resyncing_from is not None:
            errors.add("corrupt_tar_header", path, resyncing_from,
                       f"invalid tar header; resumed at the next valid header (offset {offset})")
            resyncing_from = None
            long_name = None
        size = header.size
        if size > MAX_MEMBER_BYTES:
            errors.add("too_large", path, offset, f"{header.name}: member of {size} bytes not loaded")
            if r.skip(-(-size // BLOCK) * BLOCK) < size:
                errors.add("truncated_member", path, offset, f"{header.name}: file ends inside the member")
                return
            continue
        data = r.read(size)
        if len(data) < size:
            errors.add("truncated_member", path, offset,
                       f"{long_name or header.name}: {len(data)} of {size} bytes before the end of the file; "
                       "its sample is skipped")
            yield long_name or header.name, offset, None  # tells iter_samples to drop the incomplete sample
            return
        r.read(-size % BLOCK)  # padding to the next block (if the file ends here, the next header read says so)
        t = header.type
        if t == b"L":  # GNU long name of the next member
            long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if t == b"x":  # pax header of the next member
            long_name = _pax_path(data) or long_name
            continue
        name = long_name or header.name
        long_name = None
        if t in (b"0", b"\x00", b"7"):  # regular file (7: contiguous file, a regular file in practice)
            yield name, offset, data
        # directories, links, devices, global pax headers: nothing to read


def split_key(name: str) -> tuple[str, str]:
    """``"00000/000000012.seg.png"`` → ``("00000/000000012", "seg.png")`` (WebDataset's key/extension rule)."""
    name = name.removeprefix("./")
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_samples(path: str, f: IO[bytes], errors: ErrorLog) -> Iterator[tuple[str, int, dict[str, bytes]]]:
    """Group consecutive members by key: yield ``(key, offset of the first member, {extension: data})``."""
    key: str | None = None
    start = 0
    members: dict[str, bytes] = {}
    for name, offset, data in iter_tar_members(path, f, errors):
        k, ext = split_key(name)
        if data is None:  # truncated: the sample it belongs to is incomplete
            if k != key and key is not None and members:
                yield key, start, members
            return
        if k != key:
            if key is not None and members:
                yield key, start, members
            key, start, members = k, offset, {}
        if not ext:
            errors.add("unknown_member", path, offset, f"{name}: member without an extension ignored")
            continue
        if ext in members:
            errors.add("duplicate_member", path, offset, f"{name}: second member with this name; first kept")
            continue
        members[ext] = data
    if key is not None and members:
        yield key, start, members


def read_webdataset(path: str, errors: ErrorLog, *, text_key: str | None = "text") -> Iterator[Record]:
    """Records from one WebDataset tar shard. ``text_key`` names the caption member's extension (the default
    ``text``, or null, means ``txt``)."""
    caption_ext = CAPTION_EXT if text_key in (None, "text") else text_key.lower()
    f = open_binary(path)
    with f:
        for key, offset, members in iter_samples(path, f, errors):
            record = _record_from_sample(path, key, offset, members, caption_ext, errors)
            if record is not None:
                yield record


def _record_from_sample(path: str, key: str, offset: int, members: dict[str, bytes], caption_ext: str,
                        errors: ErrorLog) -> Record | None:
    meta: dict[str, Any] = {}
    raw_json = members.pop("json", None)
    if raw_json is not None:
        try:
            obj = orjson.loads(raw_json)
            if isinstance(obj, dict):
                meta = obj
            else:
                errors.add("bad_json", path, offset, f"{key}.json is not an object")
        except orjson.JSONDecodeError as e:
            errors.add("bad_json", path, offset, f"{key}.json: {e}")
    envelope = meta.pop(_ENVELOPE, None)
    image_ext = next((e for e in IMAGE_EXTS if e in members), None)
    image = members.pop(image_ext) if image_ext else None
    caption_bytes = members.pop(caption_ext, None)
    caption: str | None = None
    if caption_bytes is not None:
        try:
            caption = caption_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.add("invalid_utf8", path, offset, f"{key}.{caption_ext}: {e}; decoded with replacement")
            caption = caption_bytes.decode("utf-8", "replace")

    if isinstance(envelope, dict) and "id" in envelope:  # written by Assay: restore the record as it was
        content = _restore_bytes(envelope.get("content") or {})
        if not isinstance(content, dict):
            content = {"text": content}
        if caption is not None:
            content[envelope.get("caption_field", "caption")] = caption
        if image is not None:
            content["image"] = image
        content.update(members)
        if envelope.get("content_is_text"):
            content = content.get("text", "")
        drop = envelope.get("drop")
        try:
            return Record(envelope["id"], content, envelope.get("modality", "image_text"), meta,
                          envelope.get("signals") or {}, [_lineage_entry(e) for e in envelope.get("lineage") or ()],
                          (drop["step"], drop["reason"]) if drop else None)
        except (KeyError, TypeError, ValueError) as e:
            errors.add("bad_record", path, offset, f"{key}: {type(e).__name__}: {e}")
            return None

    if image is None:
        errors.add("missing_image", path, offset, f"sample {key!r} has no image member "
                                                  f"(members: {', '.join(sorted(members)) or 'none'})")
        return None
    if caption is None:  # img2dataset also writes the caption into the .json
        caption = meta.get("caption") if isinstance(meta.get("caption"), str) else ""
    content = {"caption": caption, "image": image, **members}
    meta.setdefault("key", key)
    meta["source"] = path
    meta["offset"] = offset
    return Record(stable_id(path, offset), content, "image_text", meta)


# -- writing -------------------------------------------------------------------------------------------------------
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"))
_FORMAT_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif",
               "ppm": "ppm"}


def image_extension(data: bytes, fmt: str | None = None) -> str:
    """The member extension for image bytes: from the decoded format if known, else from the magic bytes."""
    if fmt and fmt.lower() in _FORMAT_EXT:
        return _FORMAT_EXT[fmt.lower()]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "img"


_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-/]{0,199}")  # no dots, no absolute paths


class WebDatasetWriter:
    """Writes records to one WebDataset tar: ``{key}.{jpg|png|...}`` (image bytes), ``{key}.txt`` (caption or
    text), ``{key}.json`` (meta, img2dataset-style, with the Assay envelope under ``"assay"``). Member times are 0
    so that the same records give the same bytes."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._tar = tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT)
        self._keys: set[str] = set()
        self._n = 0
        self.bytes_written = 0

    def _key(self, record: Record) -> str:
        key = record.meta.get("key")
        if isinstance(key, str) and _SAFE_KEY.fullmatch(key) and key not in self._keys:
            return key
        key = f"{self._n:09d}"
        while key in self._keys:  # a foreign key may look like a counter
            key += "_"
        return key

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))
        self.bytes_written += BLOCK + len(data) + (-len(data) % BLOCK)

    def write(self, record: Record) -> int:
        before = self.bytes_written
        key = self._key(record)
        self._keys.add(key)
        self._n += 1
        envelope: dict[str, Any] = {"id": record.id, "modality": record.modality, "signals": record.signals,
                                    "lineage": [e.as_dict() for e in record.lineage]}
        if record.drop is not None:
            envelope["drop"] = {"step": record.drop[0], "reason": record.drop[1]}
        content = record.content
        members: list[tuple[str, bytes]] = []
        if isinstance(content, dict):
            rest = dict(content)
            image = rest.pop("image", None)
            if image is None and isinstance(rest.get("image_path"), str):
                image = _read_path(rest["image_path"])
                if image is not None:
                    rest.pop("image_path")
            if isinstance(image, (bytes, bytearray)):
                members.append((image_extension(bytes(image), record.meta.get("format")), bytes(image)))
            elif image is not None:
                rest["image"] = image
            for field in ("caption", "text"):
                if isinstance(rest.get(field), str):
                    members.append((CAPTION_EXT, rest.pop(field).encode("utf-8", "surrogatepass")))
                    if field != "caption":
                        envelope["caption_field"] = field
                    break
            for name in [k for k, v in rest.items() if isinstance(v, (bytes, bytearray))
                         and re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)*", k) and k not in ("json", CAPTION_EXT)
                         and k not in IMAGE_EXTS]:
                members.append((name, bytes(rest.pop(name))))
            envelope["content"] = rest
        elif isinstance(content, str):
            members.append((CAPTION_EXT, content.encode("utf-8", "surrogatepass")))
            envelope["content_is_text"] = True
            envelope["caption_field"] = "text"
        else:
            envelope["content"] = content
        meta = {k: v for k, v in record.meta.items() if k != _ENVELOPE}
        meta[_ENVELOPE] = envelope
        for ext, data in members:
            self._add(f"{key}.{ext}", data)
        self._add(f"{key}.json", dumps(meta))
        return self.bytes_written - before

    def write_many(self, records: list[Record]) -> int:
        return sum(self.write(r) for r in records)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._tar.close()
        self._f.close()


def _read_path(path: str) -> bytes | None:
    try:
        with open_binary(path) as f:
            return f.read()
    except OSError:
        return None

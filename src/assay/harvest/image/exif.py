"""Removing EXIF (and other embedded metadata) from image files without touching the pixels.

EXIF can carry GPS coordinates, camera serial numbers and the photographer's name; a training set should not.
Re-encoding a JPEG to drop it would lose quality, so the metadata containers are cut out of the file instead:

* JPEG: APP1 segments holding ``Exif`` or XMP, and APP13 (Photoshop/IPTC) and COM (comment) segments are dropped;
  everything else (JFIF, ICC profile, Adobe colour transform, tables, the entropy-coded data) is copied byte for byte.
* PNG: the ``eXIf``, ``tEXt``, ``zTXt``, ``iTXt`` and ``tIME`` chunks are dropped.
* WebP: the ``EXIF`` and ``XMP `` chunks are dropped and the VP8X flags and RIFF size updated.

Each function returns the new bytes, or ``None`` if the file's structure is not what its format says (the caller
then re-encodes or reports it).
"""

from __future__ import annotations

import struct

_JPEG_DROP_APP1 = (b"Exif\x00\x00", b"Exif\x00\xff", b"http://ns.adobe.com/xap/1.0/\x00",
                   b"http://ns.adobe.com/xmp/extension/\x00")
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def strip_jpeg(data: bytes) -> bytes | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    out = [b"\xff\xd8"]
    pos = 2
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            return None
        marker = data[pos]
        start = pos - 1
        pos += 1
        if marker == 0xD9 or marker == 0xDA:  # EOI, or SOS: the rest is image data, copied verbatim
            out.append(data[start:])
            return b"".join(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            out.append(data[start:pos])
            continue
        if pos + 2 > n:
            return None
        length = struct.unpack(">H", data[pos:pos + 2])[0]
        end = pos + length
        if length < 2 or end > n:
            return None
        payload = data[pos + 2:end]
        drop = (marker == 0xE1 and payload.startswith(_JPEG_DROP_APP1)) or marker in (0xED, 0xFE)
        if not drop:
            out.append(data[start:end])
        pos = end
    return None  # no SOS: not a complete JPEG


def strip_png(data: bytes) -> bytes | None:
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    n = len(data)
    while pos + 12 <= n:
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        if ctype not in _PNG_DROP:
            out.append(data[pos:end])
        pos = end
        if ctype == b"IEND":
            return b"".join(out)
    return None


def strip_webp(data: bytes) -> bytes | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks: list[bytearray | bytes] = []
    pos = 12
    n = min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    while pos + 8 <= n:
        fourcc = data[pos:pos + 4]
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > n:
            return None
        if fourcc not in (b"EXIF", b"XMP "):
            chunk = bytearray(data[pos:min(end, n)])
            if fourcc == b"VP8X" and size >= 1:
                chunk[8] &= ~(0x08 | 0x04) & 0xFF  # clear the EXIF and XMP flags
            chunks.append(chunk)
        pos = end
    body = b"WEBP" + b"".join(bytes(c) for c in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def strip_metadata(data: bytes, fmt: str) -> bytes | None:
    """``data`` without embedded metadata, for JPEG, PNG and WebP (``fmt`` as Pillow names it, any case); None if
    the format is another one or the file's structure is broken."""
    f = fmt.lower()
    if f in ("jpeg", "jpg", "mpo"):
        return strip_jpeg(data)
    if f == "png":
        return strip_png(data)
    if f == "webp":
        return strip_webp(data)
    return None

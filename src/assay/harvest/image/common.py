"""What the image steps share: getting a record's image bytes and opening them safely with Pillow."""

from __future__ import annotations

import io
import struct
import warnings
from typing import TYPE_CHECKING

from assay.core.record import Record

if TYPE_CHECKING:
    from PIL import Image

#: Pillow's own limit (about 89.5 megapixels): larger images are refused before their pixels are decoded
DEFAULT_MAX_PIXELS = 89_478_485


class ImageProblem(Exception):
    """A record's image cannot be used; ``reason`` is the drop reason (a category)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


def image_bytes(record: Record) -> bytes:
    """The encoded image of an ``image_text`` record: ``content["image"]`` (bytes), else the file at
    ``content["image_path"]`` (a local path or fsspec URI)."""
    c = record.content
    if not isinstance(c, dict):
        raise ImageProblem("no_image", "content is not an image-text object")
    data = c.get("image")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    path = c.get("image_path")
    if isinstance(path, str) and path:
        from assay.io.files import open_binary

        try:
            with open_binary(path) as f:
                return f.read()
        except OSError as e:
            raise ImageProblem("missing_image_file", f"{path}: {e}") from None
    raise ImageProblem("no_image", "neither content['image'] bytes nor content['image_path']")


def open_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, verify: bool = False) -> "Image.Image":
    """Open and fully decode ``data``; raises :class:`ImageProblem` (``corrupt_image`` for anything Pillow cannot
    read, truncated files included; ``too_many_pixels`` above ``max_pixels``, checked from the header before any
    pixel is decoded). ``verify`` also runs Pillow's integrity check first (e.g. PNG chunk CRCs)."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            if verify:
                img.verify()  # leaves the image unusable: open it again
                img = Image.open(io.BytesIO(data))
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageProblem("too_many_pixels", f"{w}x{h} is more than {max_pixels} pixels")
            img.load()
        except ImageProblem:
            raise
        except Image.DecompressionBombError as e:
            raise ImageProblem("too_many_pixels", str(e)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
                ZeroDivisionError, TypeError) as e:
            raise ImageProblem("corrupt_image", f"{type(e).__name__}: {e}") from None
    return img


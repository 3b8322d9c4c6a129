"""Images and video for the visual tasks: checking what an item or an upload holds, and sending it to the browser.

Visual items never point the browser at a foreign URL: image bytes are kept in the item (read from the record, or
from ``image_path`` at import), video is either bytes in the item or a local file the import checked, and the
annotator's browser fetches both from the app's own authenticated endpoints (``app.py``). This module knows nothing
about users or projects; it only answers "is this an image / a video?" and builds HTTP responses, with ``Range``
support so a ``<video>`` element can seek.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
               ".mkv": "video/x-matroska", ".ogv": "video/ogg", ".ogg": "video/ogg"}
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused (decompression-bomb guard)
CACHE_CONTROL = "private, max-age=3600"


class MediaError(ValueError):
    """Bytes that are not an acceptable image or video; ``str(e)`` is a short reason category (import) or a sentence
    for the annotator (uploads)."""


# -- images --------------------------------------------------------------------------------------------------------
def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of encoded image bytes, read from the header with Pillow; raises :class:`MediaError`
    for bytes Pillow can't identify or formats a browser can't show."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format or "", im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise MediaError("bad_image") from None
    if fmt not in IMAGE_FORMATS:
        raise MediaError("unsupported_image_format")
    if w * h > MAX_IMAGE_PIXELS or w < 1 or h < 1:
        raise MediaError("image_too_large")
    return fmt, w, h


def image_mime(data: bytes) -> str:
    return IMAGE_FORMATS[image_info(data)[0]]


def decode_data_url(value: str) -> bytes | None:
    """The bytes of a ``data:…;base64,`` URL (what a browser canvas gives), or None when it isn't one."""
    m = re.match(r"data:[\w/+.-]*;base64,", value[:100])
    if m is None:
        return None
    try:
        return base64.b64decode(value[m.end():], validate=True)
    except ValueError:
        raise MediaError("the data URL is not valid base64") from None


def load_image(value: Any) -> bytes:
    """Image bytes from what a record holds: bytes, a ``data:`` URL, or a local file path. Remote URLs are refused
    (``remote_image``): the app never makes an annotator's browser fetch a third-party URL, and fetching at import is
    the harvest stage's job (img2dataset layout). Raises :class:`MediaError` with a reason category."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and value.startswith(("http://", "https://", "//")):
        raise MediaError("remote_image")
    elif isinstance(value, str) and value.startswith("data:"):
        data = decode_data_url(value) or b""
    elif isinstance(value, str) and value.strip():
        path = Path(value).expanduser()
        try:
            data = path.read_bytes() if path.is_file() else b""
        except OSError:
            data = b""
        if not data:
            raise MediaError("image_unreadable")
    else:
        raise MediaError("no_image")
    image_info(data)
    return data


def check_upload(value: Any, *, what: str, max_bytes: int) -> bytes:
    """An image the annotator uploaded (bytes, ``{"$bytes": base64}`` or a data URL), checked for size and type;
    raises :class:`MediaError` with a sentence the annotator can act on."""
    if isinstance(value, dict) and set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
        try:
            value = base64.b64decode(value["$bytes"], validate=True)
        except ValueError:
            raise MediaError(f"the {what} is not valid base64") from None
    elif isinstance(value, str):
        value = decode_data_url(value)
        if value is None:
            raise MediaError(f"the {what} must be an uploaded file or a base64 data URL")
    if not isinstance(value, (bytes, bytearray)):
        raise MediaError(f"the {what} must be an image file")
    if len(value) > max_bytes:
        raise MediaError(f"the {what} is larger than the limit of {max_bytes / 2**20:g} MiB")
    try:
        image_info(bytes(value))
    except MediaError:
        raise MediaError(f"the {what} is not a PNG, JPEG, WebP or GIF image") from None
    return bytes(value)


def normalise_mask(data: bytes, size: tuple[int, int]) -> tuple[bytes, int]:
    """A drawn mask as a one-channel PNG (255 = painted, 0 = keep) the size of the before image, and the number of
    painted pixels. Painted means opaque where the mask has an alpha channel (a browser canvas), else non-black."""
    from PIL import Image

    fmt, w, h = image_info(data)
    if fmt != "PNG":
        raise MediaError("the mask must be a PNG image")
    if (w, h) != tuple(size):
        raise MediaError(f"the mask is {w}x{h} but the before image is {size[0]}x{size[1]}")
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if "A" in im.getbands():
            band = im.getchannel("A")
        elif im.mode == "P" and "transparency" in im.info:
            band = im.convert("RGBA").getchannel("A")
        else:
            band = im.convert("L")
    binary = band.point(lambda v: 255 if v > 0 else 0, mode="L")
    painted = binary.histogram()[255]
    out = io.BytesIO()
    binary.save(out, format="PNG", optimize=True)
    return out.getvalue(), painted


# -- video ---------------------------------------------------------------------------------------------------------
def video_mime_of_bytes(data: bytes) -> str | None:
    """The container of video bytes from its signature: ISO BMFF (``ftyp``) or Matroska/WebM (EBML); None otherwise."""
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:10] == b"qt" else "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    if data[:4] == b"OggS":
        return "video/ogg"
    return None


def check_video_file(value: Any) -> str:
    """The absolute path of a readable local video file (known extension and container signature); raises
    :class:`MediaError` (``video_missing`` / ``not_a_video``). Checked at import, so the server only ever serves files
    that looked like video when an admin imported them."""
    if not isinstance(value, str) or not value.strip() or value.startswith(("http://", "https://", "//")):
        raise MediaError("video_missing")
    path = Path(value).expanduser().resolve()
    if path.suffix.lower() not in VIDEO_TYPES:
        raise MediaError("not_a_video")
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        raise MediaError("video_missing") from None
    if video_mime_of_bytes(head) is None:
        raise MediaError("not_a_video")
    return str(path)


# -- responses -----------------------------------------------------------------------------------------------------
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def bytes_response(request: Request, data: bytes, media_type: str) -> Response:
    """``data`` as a response honouring a single ``Range: bytes=…`` request (206 / 416), which is what a browser's
    media element sends; other range forms get the whole body (allowed by RFC 9110)."""
    size = len(data)
    headers = {"accept-ranges": "bytes", "cache-control": CACHE_CONTROL}
    m = _RANGE.match(request.headers.get("range", "").strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return Response(data, media_type=media_type, headers=headers)
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:  # suffix range: the last n bytes
        start, end = max(0, size - int(m.group(2))), size - 1
    if start >= size or start > end:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    return Response(data[start:end + 1], status_code=206, media_type=media_type,
                    headers={**headers, "content-range": f"bytes {start}-{end}/{size}"})


def file_response(path: str) -> Response:
    """A local video file (Starlette's FileResponse handles ``Range``, ``If-Range`` and 416 itself)."""
    p = Path(path)
    if not p.is_file():
        return Response("the media file is gone from the server", status_code=410, media_type="text/plain")
    return FileResponse(p, media_type=VIDEO_TYPES.get(p.suffix.lower(), "application/octet-stream"),
                        headers={"cache-control": CACHE_CONTROL})

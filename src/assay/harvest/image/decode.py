"""``image_decode``: decode every image with Pillow, record what it is, drop what cannot be used.

For each ``image_text`` record the image (``content["image"]`` bytes or the file at ``content["image_path"]``) is
verified and fully decoded. Kept records get ``meta["width"]``, ``meta["height"]`` (as stored, before any EXIF
rotation), ``meta["format"]`` (``jpeg``, ``png``, ``webp``, ...), ``meta["mode"]`` (``RGB``, ``L``, ``RGBA``, ...) and
``signals["image.phash"]`` (16 hex digits, see :mod:`.phash`), so that later steps (filters, dedup) need not decode
again.

Drop reasons: ``no_image`` (no bytes and no path), ``missing_image_file`` (the path cannot be read), ``too_large``
(more than ``max_bytes``), ``too_many_pixels`` (more than ``max_pixels``: a decompression bomb is refused from its
header, before any pixel is decoded), ``corrupt_image`` (Pillow cannot read it: undecodable, truncated, bad CRC),
``format`` (not one of ``formats``).

``strip_exif: true`` removes EXIF, XMP, IPTC and comments from the stored bytes. For JPEG, PNG and WebP the metadata
is cut out of the file and the pixel data is untouched (:mod:`.exif`); other formats are re-encoded by Pillow in
their own (lossless) format. An image whose EXIF orientation says it must be rotated is rotated first when
``apply_orientation`` is on (the default), since the orientation is lost with the EXIF: that re-encodes it (JPEG at
``jpeg_quality``, counted as ``reencoded_lossy``). Counters: ``exif_stripped``, ``no_metadata``,
``reencoded_lossless``, ``reencoded_lossy``, ``rotated``.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.image.common import DEFAULT_MAX_PIXELS, ImageProblem, image_bytes, open_image
from assay.harvest.image.exif import strip_metadata
from assay.harvest.image.phash import phash, to_hex

_ORIENTATION = 0x0112
_LOSSLESS_SAVE = {"png": "PNG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "ppm": "PPM"}


class ImageDecodeParams(StepParams):
    strip_exif: bool = Field(False, description="remove EXIF/XMP/IPTC/comments from the stored image bytes "
                                                "(losslessly for JPEG, PNG, WebP)")
    apply_orientation: bool = Field(True, description="with strip_exif: rotate images whose EXIF orientation asks "
                                                      "for it before the EXIF is removed (re-encodes them)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of JPEGs that must be re-encoded (rotation)")
    max_bytes: int = Field(50 << 20, gt=0, description="larger encoded images are dropped (too_large)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0,
                            description="images with more pixels are dropped (too_many_pixels) before decoding")
    formats: list[str] | None = Field(None, description="keep only these formats (e.g. [jpeg, png, webp]); "
                                                        "none: any format Pillow reads")
    verify: bool = Field(True, description="run Pillow's integrity check (PNG CRCs ...) before decoding")
    phash: bool = Field(True, description="compute signals['image.phash'] (used by image_dedup)")


class ImageDecode(Step):
    """Decode images with Pillow: width/height/format/mode to meta, pHash to signals; corrupt images dropped."""

    name = "image_decode"
    version = "1"
    Params: ClassVar[type[StepParams]] = ImageDecodeParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        fmts = self.params.formats  # type: ignore[attr-defined]
        self._formats = None if fmts is None else {_canonical(f) for f in fmts}

    def setup(self, ctx: StepContext) -> None:
        import PIL.Image  # noqa: F401  (fail early, once, if Pillow is missing)

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for record in batch:
            if record.drop is not None:
                continue
            try:
                self._decode(record)
            except ImageProblem as e:
                record.signals["image.error"] = str(e)[:200]
                self.reject(record, e.reason)
        return batch

    def _decode(self, record: Record) -> None:
        p: ImageDecodeParams = self.params  # type: ignore[assignment]
        data = image_bytes(record)
        if len(data) > p.max_bytes:
            raise ImageProblem("too_large", f"{len(data)} bytes")
        img = open_image(data, p.max_pixels, verify=p.verify)
        fmt = (img.format or "").lower()
        if self._formats is not None and _canonical(fmt) not in self._formats:
            raise ImageProblem("format", f"format {fmt or 'unknown'}")
        if p.strip_exif:
            new, same_pixels = self._strip(data, img, fmt)
            if new is not data:
                data = new
                if not same_pixels:  # re-encoded (rotated, or a format stripped by re-saving): read what is stored
                    img = open_image(data, p.max_pixels)
                    fmt = (img.format or fmt).lower()
                _store(record, data)
        meta = record.meta
        meta["width"], meta["height"] = img.size
        meta["format"] = fmt
        meta["mode"] = img.mode
        if getattr(img, "n_frames", 1) > 1:
            meta["frames"] = img.n_frames
        if p.phash:
            record.signals["image.phash"] = to_hex(phash(img))

    def _strip(self, data: bytes, img: Any, fmt: str) -> tuple[bytes, bool]:
        """The image bytes without metadata (the same object if there was nothing to remove), and whether their
        pixel data is ``img``'s, byte for byte (metadata cut out of the file: no need to decode them again)."""
        p: ImageDecodeParams = self.params  # type: ignore[assignment]
        orientation = img.getexif().get(_ORIENTATION, 1) if hasattr(img, "getexif") else 1
        if p.apply_orientation and orientation not in (1, None) and 2 <= int(orientation) <= 8:
            self.count("rotated")
            return self._reencode(img, fmt, rotate=True), False
        stripped = strip_metadata(data, fmt)
        if stripped is None:
            if not _has_metadata(img):
                self.count("no_metadata")
                return data, True
            return self._reencode(img, fmt, rotate=False), False
        if len(stripped) == len(data):
            self.count("no_metadata")
            return data, True
        self.count("exif_stripped")
        return stripped, True

    def _reencode(self, img: Any, fmt: str, rotate: bool) -> bytes:
        from PIL import ImageOps

        p: ImageDecodeParams = self.params  # type: ignore[assignment]
        out = ImageOps.exif_transpose(img) if rotate else img
        buf = io.BytesIO()
        if fmt in ("jpeg", "mpo"):
            if out.mode not in ("RGB", "L", "CMYK"):
                out = out.convert("RGB")
            out.save(buf, "JPEG", quality=p.jpeg_quality, icc_profile=img.info.get("icc_profile"))
            self.count("reencoded_lossy")
        elif fmt == "webp":
            out.save(buf, "WEBP", lossless=True, icc_profile=img.info.get("icc_profile"))
            self.count("reencoded_lossless")
        else:
            out.save(buf, _LOSSLESS_SAVE.get(fmt, "PNG"))
            self.count("reencoded_lossless")
        self.count("exif_stripped")
        return buf.getvalue()


def _has_metadata(img: Any) -> bool:
    info = img.info or {}
    return bool(len(img.getexif()) or any(k in info for k in ("exif", "xmp", "XML:com.adobe.xmp", "comment")))


def _store(record: Record, data: bytes) -> None:
    """Put the new bytes in the record (a record that pointed at a file now carries its cleaned bytes; the path is
    kept in ``meta["image_path"]``)."""
    content = dict(record.content)
    path = content.pop("image_path", None)
    if path is not None:
        record.meta["image_path"] = path
    content["image"] = data
    record.content = content


def _canonical(fmt: str) -> str:
    f = fmt.lower()
    return {"jpg": "jpeg", "mpo": "jpeg", "tif": "tiff"}.get(f, f)

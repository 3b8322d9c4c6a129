"""``image_filter``: keep images within resolution and aspect-ratio bounds.

It reads ``meta["width"]``/``meta["height"]`` written by ``image_decode``; a record without them (the step used
alone) has its image header read (Pillow reads only the header: cheap), and one whose header cannot be read is
dropped as ``corrupt_image`` (or ``no_image``, ``missing_image_file``, ``too_many_pixels``).

Signals: ``image.pixels``, ``image.aspect_ratio`` (width / height). Reasons: ``too_small`` (shorter side under
``min_side``, or width/height under ``min_width``/``min_height``), ``too_big`` (longer side over ``max_side``),
``too_few_pixels`` (under ``min_pixels``), ``aspect_ratio`` (width / height outside
[``min_aspect_ratio``, ``max_aspect_ratio``]).
"""

from __future__ import annotations

import io
from typing import ClassVar

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, StepParams
from assay.harvest.image.common import ImageProblem, image_bytes


class ImageFilterParams(FilterParams):
    min_side: int = Field(0, ge=0, description="minimum of the shorter side, in pixels")
    min_width: int = Field(0, ge=0, description="minimum width")
    min_height: int = Field(0, ge=0, description="minimum height")
    max_side: int | None = Field(None, gt=0, description="maximum of the longer side; none: no limit")
    min_pixels: int = Field(0, ge=0, description="minimum width × height")
    min_aspect_ratio: float | None = Field(None, gt=0, description="minimum width / height (e.g. 0.33)")
    max_aspect_ratio: float | None = Field(None, gt=0, description="maximum width / height (e.g. 3.0)")


class ImageFilter(Filter):
    """Drop images outside resolution (shorter/longer side, pixels) and aspect-ratio bounds."""

    name = "image_filter"
    version = "1"
    Params: ClassVar[type[StepParams]] = ImageFilterParams

    def score(self, record: Record) -> None:
        w, h = record.meta.get("width"), record.meta.get("height")
        if not (isinstance(w, int) and isinstance(h, int)):
            try:
                w, h = _header_size(image_bytes(record))
            except ImageProblem as e:
                record.signals["image.error"] = str(e)[:200]
                record.signals["image.problem"] = e.reason
                record.signals["image.pixels"] = -1
                return
            record.meta["width"], record.meta["height"] = w, h
        record.signals["image.pixels"] = w * h
        record.signals["image.aspect_ratio"] = round(w / h, 4) if h else 0.0

    def decide(self, record: Record) -> str | None:
        p: ImageFilterParams = self.params  # type: ignore[assignment]
        if record.signals.get("image.pixels", -1) < 0:
            return str(record.signals.get("image.problem", "corrupt_image"))
        w, h = record.meta["width"], record.meta["height"]
        if min(w, h) < p.min_side or w < p.min_width or h < p.min_height:
            return "too_small"
        if p.max_side is not None and max(w, h) > p.max_side:
            return "too_big"
        if w * h < p.min_pixels:
            return "too_few_pixels"
        ratio = w / h if h else 0.0
        if (p.min_aspect_ratio is not None and ratio < p.min_aspect_ratio) or \
                (p.max_aspect_ratio is not None and ratio > p.max_aspect_ratio):
            return "aspect_ratio"
        return None


def _header_size(data: bytes) -> tuple[int, int]:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as e:
        raise ImageProblem("too_many_pixels", str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageProblem("corrupt_image", f"{type(e).__name__}: {e}") from None

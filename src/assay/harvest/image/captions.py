"""``caption_filter``: drop image-text pairs whose caption says nothing about the image.

Alt-texts scraped from the web are often placeholders: "image", "photo 3", "IMG_1234.jpg", "DSC00017",
"click here", "untitled", a URL, a product number. LAION kept pairs by CLIP similarity alone, which lets many of
these through when the image happens to match a generic word; a cheap rule filter in front removes them first.

Rules, in order (the first that fires is the reason):

* ``empty_caption``: nothing but white space.
* ``boilerplate_caption``, with ``signals["caption.boilerplate"]`` saying which kind: ``url`` (the caption is a
  URL), ``file_name`` (``holiday-2019.jpg``), ``camera_file_name`` (``IMG_1234``, ``DSC0001``, ``PXL_2023…``),
  ``generic`` (a placeholder word or phrase such as "image", "photo 3", "click here", "untitled", "no image
  available", "thumbnail", with any numbers and punctuation around it), ``mostly_digits`` (more than
  ``max_digit_fraction`` of its non-space characters are digits).
* ``too_short`` / ``too_long``: characters outside [``min_chars``, ``max_chars``].
* ``too_few_words`` / ``too_many_words``: words outside [``min_words``, ``max_words``].
* ``language`` / ``low_language_score``: with ``languages`` set, the caption's language by
  :mod:`assay.harvest.langid` (fastText lid.176 by default) must be one of them with a score of at least
  ``language_threshold`` (lower than for documents: short texts get lower scores).

Signals: ``caption.chars``, ``caption.words``, and with ``languages`` set ``caption.lang``, ``caption.lang_score``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, StepContext, StepParams

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)
_IMAGE_EXT = r"(?:jpe?g|png|gif|webp|bmp|tiff?|heic|heif|svg|avif|jfif|ico)"
_FILE_NAME = re.compile(rf"[\w\-.,()\[\] %+~]+\.{_IMAGE_EXT}", re.IGNORECASE)
_CAMERA = re.compile(r"(?:img|dsc[nf]?|dcim|pict?|imag|pxl|mvimg|gopr|dji|sam|wp|p|screenshot|photo|image|scan)"
                     r"[\s_\-]*\d{3,}[\w\-]*(?:\s*\(\d+\))?", re.IGNORECASE)
#: placeholder captions, matched whole after lower-casing and removing digits, punctuation and extra spaces
GENERIC_CAPTIONS = frozenset({
    "image", "images", "img", "photo", "photos", "photograph", "picture", "pictures", "pic", "pics", "foto",
    "bild", "imagen", "immagine", "untitled", "untitled image", "untitled design", "no title", "no image",
    "no image available", "image not available", "image not found", "no photo", "no photo available",
    "photo not available", "coming soon", "image coming soon", "placeholder", "default", "default image",
    "thumbnail", "thumb", "thumbnail image", "preview", "preview image", "icon", "logo", "banner", "spacer", "blank",
    "blank image", "transparent pixel", "click here", "click to enlarge", "click here to enlarge", "click to zoom",
    "click for larger image", "enlarge", "zoom", "view larger", "view image", "view larger image", "see more", "more",
    "read more", "download image", "loading", "alt", "alt text", "alt image", "featured image", "feature image",
    "main image", "header image", "hero image", "cover", "cover image", "product image", "product photo",
    "screenshot", "screen shot", "avatar", "profile picture", "profile photo", "user avatar", "gravatar",
    "advertisement", "ad", "image of", "photo of", "picture of", "an image", "a photo", "a picture", "the image",
    "this image", "my photo", "stock photo", "stock image", "file", "attachment",
})
_NON_WORD = re.compile(r"[\W\d_]+", re.UNICODE)


def boilerplate_kind(caption: str, max_digit_fraction: float = 0.5) -> str | None:
    """Which kind of placeholder alt-text ``caption`` is (``url``, ``file_name``, ``camera_file_name``,
    ``generic``, ``mostly_digits``), or None if it looks like a real caption."""
    s = caption.strip()
    if _URL.fullmatch(s):
        return "url"
    if _FILE_NAME.fullmatch(s):
        return "file_name"
    if _CAMERA.fullmatch(s):
        return "camera_file_name"
    core = " ".join(_NON_WORD.sub(" ", s.lower()).split())
    if core in GENERIC_CAPTIONS:
        return "generic"
    chars = [c for c in s if not c.isspace()]
    if chars and sum(c.isdigit() for c in chars) / len(chars) > max_digit_fraction:
        return "mostly_digits"
    return None


class CaptionFilterParams(FilterParams):
    min_chars: int = Field(5, ge=0, description="minimum caption length in characters (LAION: 5)")
    max_chars: int = Field(1000, gt=0, description="maximum caption length in characters")
    min_words: int = Field(2, ge=0, description="minimum number of words")
    max_words: int = Field(200, gt=0, description="maximum number of words")
    boilerplate: bool = Field(True, description="drop placeholder alt-texts (image, IMG_1234.jpg, click here, ...)")
    max_digit_fraction: float = Field(0.5, ge=0, le=1, description="captions with more digits than this "
                                                                   "(fraction of non-space characters) are boilerplate")
    languages: list[str] | None = Field(None, description="ISO 639-1 codes to keep; none: no language check")
    language_threshold: float = Field(0.4, ge=0, le=1, description="minimum language score (captions are short: "
                                                                  "lower than the 0.65 used for documents)")
    engine: Literal["fasttext", "lingua"] = Field("fasttext", description="language ID engine (assay.harvest.langid)")


class CaptionFilter(Filter):
    """Drop captions that are empty, placeholder alt-text (IMG_1234.jpg, "image", URLs), too short/long, or in
    another language."""

    name = "caption_filter"
    version = "2"
    Params: ClassVar[type[StepParams]] = CaptionFilterParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        langs = self.params.languages  # type: ignore[attr-defined]
        self._wanted = None if langs is None else {code.lower() for code in langs}
        self._lid: Any = None

    def setup(self, ctx: StepContext) -> None:
        if self._wanted is not None:
            self._load_lid()

    def _load_lid(self) -> Any:
        if self._lid is None:
            from assay.harvest.langid import load_lid

            self._lid = load_lid(self.params.engine)  # type: ignore[attr-defined]
        return self._lid

    def score(self, record: Record) -> None:
        p: CaptionFilterParams = self.params  # type: ignore[assignment]
        caption = _caption(record)
        record.signals["caption.chars"] = len(caption)
        record.signals["caption.words"] = len(caption.split())
        if p.boilerplate:
            kind = boilerplate_kind(caption, p.max_digit_fraction) if caption.strip() else None
            if kind is not None:
                record.signals["caption.boilerplate"] = kind
        if self._wanted is not None and caption.strip():
            lang, score = self._load_lid().predict(caption[:2000])
            record.signals["caption.lang"] = lang
            record.signals["caption.lang_score"] = score  # unrounded: the threshold is compared with the model's score

    def decide(self, record: Record) -> str | None:
        p: CaptionFilterParams = self.params  # type: ignore[assignment]
        s = record.signals
        if s["caption.words"] == 0:
            return "empty_caption"
        if "caption.boilerplate" in s:
            return "boilerplate_caption"
        if s["caption.chars"] < p.min_chars:
            return "too_short"
        if s["caption.chars"] > p.max_chars:
            return "too_long"
        if s["caption.words"] < p.min_words:
            return "too_few_words"
        if s["caption.words"] > p.max_words:
            return "too_many_words"
        if self._wanted is not None:
            if s.get("caption.lang") not in self._wanted:
                return "language"
            if s.get("caption.lang_score", 0.0) < p.language_threshold:
                return "low_language_score"
        return None


def _caption(record: Record) -> str:
    c = record.content
    if isinstance(c, dict):
        v = c.get("caption")
        return v if isinstance(v, str) else ""
    return c if isinstance(c, str) else ""

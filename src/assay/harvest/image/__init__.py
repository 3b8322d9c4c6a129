"""Stage I for image-text pairs (LAION-style): decode, resolution/aspect filters, caption filters, pHash dedup and
image-text alignment.

Importing this package registers the steps ``image_decode``, ``image_filter``, ``caption_filter``, ``image_dedup``
and ``image_nsfw`` (and ``image_text_alignment`` when its module and dependencies are present). Pillow is imported
only when a step runs, so ``assay steps`` works without the ``vision`` extra. In a recipe::

    steps:
      - image_decode: {strip_exif: true}
      - image_filter: {min_side: 64, max_aspect_ratio: 3.0, min_aspect_ratio: 0.33}
      - caption_filter: {min_words: 2}
      - image_dedup: {threshold: 4}
      - image_nsfw: {max_score: 0.8}
"""

from assay.harvest.image.captions import CaptionFilter
from assay.harvest.image.decode import ImageDecode
from assay.harvest.image.dedup import ImageDedup
from assay.harvest.image.filters import ImageFilter
from assay.harvest.image.nsfw import ImageNsfw

__all__ = ["CaptionFilter", "ImageDecode", "ImageDedup", "ImageFilter", "ImageNsfw"]

try:  # image-text alignment (CLIP-family scoring) lives beside these steps but has optional dependencies
    from assay.harvest.image.alignment import ImageTextAlignment  # noqa: F401

    __all__.append("ImageTextAlignment")
except ModuleNotFoundError:
    pass

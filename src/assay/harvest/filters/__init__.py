"""Heuristic quality filters for web text: URL blocklist, C4, Gopher quality and repetition, FineWeb.

Importing this package registers the steps ``url_filter``, ``c4_quality``, ``gopher_quality``,
``gopher_repetition`` and ``fineweb_quality``: their rules and defaults are those of datatrove 0.10.1 (the
implementation behind FineWeb); words and sentences are split as datatrove splits them (:mod:`.text`). Also
``token_count`` (:mod:`.tokens`) and ``flagged_words`` (:mod:`.flagged_words`, Data-Juicer's ratio).
"""

from assay.harvest.filters.c4 import C4Quality
from assay.harvest.filters.fineweb import FineWebQuality
from assay.harvest.filters.flagged_words import FlaggedWords
from assay.harvest.filters.gopher import GopherQuality, GopherRepetition
from assay.harvest.filters.tokens import TokenCount
from assay.harvest.filters.url import URLFilter

__all__ = ["C4Quality", "FineWebQuality", "FlaggedWords", "GopherQuality", "GopherRepetition", "TokenCount",
           "URLFilter"]

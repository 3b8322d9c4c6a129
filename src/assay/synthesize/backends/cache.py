"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.llm.cache`."""

import sys

from assay.models.llm import cache as _moved

sys.modules[__name__] = _moved

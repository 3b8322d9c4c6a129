"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.llm.server`."""

import sys

from assay.models.llm import server as _moved

sys.modules[__name__] = _moved

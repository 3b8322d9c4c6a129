"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.llm.base`."""

import sys

from assay.models.llm import base as _moved

sys.modules[__name__] = _moved

"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.llm.local`."""

import sys

from assay.models.llm import local as _moved

sys.modules[__name__] = _moved

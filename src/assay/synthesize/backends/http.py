"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.llm.http`."""

import sys

from assay.models.llm import http as _moved

sys.modules[__name__] = _moved

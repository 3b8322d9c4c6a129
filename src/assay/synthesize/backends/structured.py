"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.llm.structured`."""

import sys

from assay.models.llm import structured as _moved

sys.modules[__name__] = _moved

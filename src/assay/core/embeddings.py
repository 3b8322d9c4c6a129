"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.embeddings`."""

import sys

from assay.models import embeddings as _moved

sys.modules[__name__] = _moved

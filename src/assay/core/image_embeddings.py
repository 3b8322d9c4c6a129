"""Kept for helpers during the move; remove. This module moved to :mod:`assay.models.image_embeddings`."""

import sys

from assay.models import image_embeddings as _moved

sys.modules[__name__] = _moved

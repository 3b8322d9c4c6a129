"""Kept for helpers during the move; remove. This module moved to :mod:`assay.experts.routing`."""

import sys

from assay.experts import routing as _moved

sys.modules[__name__] = _moved

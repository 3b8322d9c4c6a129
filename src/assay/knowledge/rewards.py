"""Kept for helpers during the move; remove. This module moved to :mod:`assay.experts.rewards`."""

import sys

from assay.experts import rewards as _moved

sys.modules[__name__] = _moved

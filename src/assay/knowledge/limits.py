"""Kept for helpers during the move; remove. This module moved to :mod:`assay.platform.limits`."""

import sys

from assay.platform import limits as _moved

sys.modules[__name__] = _moved

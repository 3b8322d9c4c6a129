"""Kept for helpers during the move; remove. This module moved to :mod:`assay.platform.db`."""

import sys

from assay.platform import db as _moved

sys.modules[__name__] = _moved

"""Kept for helpers during the move; remove. This module moved to :mod:`assay.platform.auth`."""

import sys

from assay.platform import auth as _moved

sys.modules[__name__] = _moved

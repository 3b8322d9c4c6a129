"""Kept for helpers during the move; remove. This module moved to :mod:`assay.experts.models`."""

import sys

from assay.experts import models as _moved

sys.modules[__name__] = _moved

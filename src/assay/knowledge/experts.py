"""Kept for helpers during the move; remove. This module moved to :mod:`assay.experts.reputation`."""

import sys

from assay.experts import reputation as _moved

sys.modules[__name__] = _moved

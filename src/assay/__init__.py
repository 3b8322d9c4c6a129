"""Assay: a data engine for foundation models."""

from assay.core.record import Record

__version__ = "0.1.0"
__all__ = ["Record", "__version__"]

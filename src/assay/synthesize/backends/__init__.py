"""Kept for helpers during the move; remove. The LLM backends moved to :mod:`assay.models.llm`."""

from typing import Any

from assay.models import llm as _moved
from assay.models.llm import *  # noqa: F401,F403


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)

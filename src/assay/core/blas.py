"""One BLAS thread for code that calls BLAS many times on small matrices.

Multi-threaded OpenBLAS on a busy machine makes such calls one to two orders of magnitude slower (measured on 2
shared cores: ``eigvalsh`` of a 1000×1000 matrix 6.6 s with the default threads, 0.27 s with one; L-BFGS-B steps
~100×). numpy and scipy each bundle their own OpenBLAS; both are limited.
"""

from __future__ import annotations

import contextlib
from typing import Any


def single_threaded_blas() -> Any:
    """A context manager limiting every loaded BLAS library to one thread (a no-op without threadpoolctl)."""
    try:
        import scipy.linalg  # noqa: F401  (load scipy's own BLAS first so the limit reaches it)
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")

"""pytest configuration; shared helpers live in testutil.py (importable: tests/ is on pytest's pythonpath)."""

from testutil import PLUGINS, ROOT, SAMPLE, SHARED, requires_shared  # noqa: F401  (sets ASSAY_STEP_MODULES)

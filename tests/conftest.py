"""pytest configuration; shared helpers live in testutil.py (importable: tests/ is on pytest's pythonpath)."""

import pytest
from annotate_support import BACKENDS, cheap_password_hashing, make_database
from testutil import DATA, PLUGINS, ROOT, SAMPLE  # noqa: F401  (sets ASSAY_STEP_MODULES)


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):  # noqa: ANN001, ANN201
    """An annotation-server database (the knowledge layer's too), migrated, on SQLite and on PostgreSQL."""
    cheap_password_hashing()
    database, cleanup = make_database(request.param, tmp_path)
    yield database
    cleanup()

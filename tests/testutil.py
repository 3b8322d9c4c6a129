"""Shared test helpers (import with `from testutil import ...`). Tests may read the larger real data sets under ../shared/data when present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "samples" / "python-docs"
PLUGINS = Path(__file__).resolve().parent / "plugins"

requires_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real data folder {SHARED} is absent (fresh clone)")

# let worker processes (spawned) find the test-only steps
os.environ["ASSAY_STEP_MODULES"] = "assay_test_steps"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    return path


def read_output(run_dir: Path) -> list[dict]:
    """Every output record of a run, in file order, as dicts."""
    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard
    from assay.run.executor import output_files

    out = []
    for f in output_files(str(run_dir)):
        for shard in plan_shards([f], "auto", 0):
            out.extend(r.to_dict() for r in read_shard(shard, ErrorLog()))
    return out


def assay_cli(*args: str, timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "assay"
    p = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"assay {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p

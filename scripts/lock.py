"""Regenerate constraints.txt, the lock: the exact version of every distribution `make install` and `make demo` install.

    .venv/bin/python scripts/lock.py          # after `make install` has installed .[all,dev] into .venv

Run it with the interpreter of the environment to lock: it walks the requirements of ``assay[all,dev]`` (and of
``demo``, a subset) through the installed distributions' metadata, markers evaluated for this interpreter, and writes
``name==version`` for each, names normalised, local version labels dropped (``torch==2.13.0`` matches the CPU wheel
``2.13.0+cpu`` that the machine's wheel directory holds). The Makefile installs with ``pip install -c constraints.txt``,
so a new machine gets exactly what was tested; pyproject.toml keeps the compatible ranges a user's project resolves.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
LOCKED_EXTRAS = ("all", "dev", "demo")
HEADER = """\
# The lock: exact versions of everything `make install` (.[all,dev]) and `make demo` (.[demo]) install, used by the
# Makefile as `pip install -c constraints.txt`. pyproject.toml holds the compatible ranges; this file what was tested.
# Regenerate: make install, then `.venv/bin/python scripts/lock.py` (walks the installed requirement tree of
# assay[all,dev,demo] on CPython {py}, Linux x86-64). torch is the CPU wheel 2.13.0+cpu (local label dropped here);
# llama-cpp-python is built once into the portable wheelhouse (see the Makefile) at the version below.
# tests/test_packaging.py checks that every requirement of pyproject.toml is here and inside its range.
#
# The lower bounds in pyproject.toml were tested (2026-12-06) in scratch venvs made with
# `uv pip install --resolution lowest-direct -c <torch==2.13.0+cpu, llama-cpp-python==0.3.36>` (torch from the local
# CPU wheel, llama-cpp-python from the portable wheelhouse):
# - .[harvest] + the test tools (pydantic 2.11.0, PyYAML 6.0, pyarrow 21.0.0, numpy 2.0.2, fsspec 2025.3.0,
#   trafilatura 1.11.0, regex 2024.11.6, ...): tests/test_core_*, test_io_bad_input, test_run_executor, test_extract,
#   test_langid, harvest/test_filters_rules|text, harvest/test_normalize, test_dedup_*, test_decontam, test_pii,
#   test_packaging passed (test_pii's real-packages check needs flask and friends, absent there);
# - .[harvest,annotate,knowledge,llm,ml,s3,hf,ray,dev] (where other floors lift some: pydantic 2.12.0, pyarrow 24.0.0,
#   regex 2025.10.22): the above plus harvest/test_filters_vs_datatrove, test_annotate_api, test_knowledge_store|patch|
#   search, test_lab_fit, test_object_storage: 377 passed. Floors raised by that run: numpy 2.0.0 -> 2.0.2 (np.isin
#   overflows on uint64 hashes), s3fs 2025.3-2026.1 -> 2026.2.0 (an existing s3:// output folder seen as a file).
# The vision and robot extras' floors are the versions locked here (not run at lower versions).
"""


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The requirements of ``assay[extras]`` as pyproject.toml states them now (self-references like ``assay[vision]``
    expanded), so the lock follows the file even before the editable install's metadata is refreshed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    reqs, todo, done = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in done:
            continue
        done.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == canonicalize_name(project["name"]):
                todo.extend(req.extras)
            else:
                reqs.append(req)
    return reqs


def closure(reqs: list[Requirement]) -> dict[str, str]:
    """Every distribution ``reqs`` need in this environment: canonical name -> installed version."""
    found: dict[str, str] = {}
    todo = [(r.name, frozenset(r.extras)) for r in reqs if r.marker is None or r.marker.evaluate()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            sys.exit(f"error: {name} is required but not installed in {sys.prefix}: run `make install` first")
        found[canonicalize_name(dist.metadata["Name"])] = Version(dist.version).public
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return found


def main() -> None:
    pins = closure(project_requirements(LOCKED_EXTRAS))
    py = ".".join(map(str, sys.version_info[:3]))
    LOCK.write_text(HEADER.format(py=py) + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())), encoding="utf-8")
    print(f"{LOCK.name}: {len(pins)} distributions")


if __name__ == "__main__":
    main()

"""Packaging: ``assay --version``, ``python -m assay``, the license, the changelog and ``py.typed``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from typer.testing import CliRunner

import assay
from assay.cli import app
from testutil import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_flag_prints_the_projects_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    declared = PYPROJECT["project"]["version"]
    assert res.output.strip() == f"assay {declared}"
    assert assay.__version__ == declared  # the source tree and pyproject agree


def test_python_dash_m_assay_is_the_same_command_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "assay", "--version"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"assay {PYPROJECT['project']['version']}"
    p = subprocess.run([sys.executable, "-m", "assay", "inspect", str(tmp_path / "missing")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and "error:" in p.stderr and "Traceback" not in p.stderr


def test_license_changelog_and_py_typed_ship():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert metadata("assay")["License-Expression"] == "Apache-2.0"
    assert (ROOT / "src" / "assay" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["assay"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## Unreleased" in changelog and "## Session 1" in changelog


# --- dependency ranges and the lock (issue 20 §4) -------------------------------------------------------------------

LOCK = ROOT / "constraints.txt"


def _requirements(extras=None):
    """Every requirement pyproject.toml states (core and each extra), self-references (``assay[annotate]``) left out."""
    project = PYPROJECT["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return [(group, Requirement(line)) for group, lines in groups.items() if extras is None or group in extras
            for line in lines if canonicalize_name(Requirement(line).name) != "assay"]


def _lock():
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and name == canonicalize_name(name), f"lock line not 'name==version' (normalised): {line!r}"
            assert name not in pins, f"{name} twice in the lock"
            pins[name] = Version(version)
    return pins


def test_every_requirement_is_a_range_with_a_lower_bound():
    reqs = _requirements()
    assert len(reqs) > 50
    for group, req in reqs:
        ops = {s.operator for s in req.specifier}
        assert ops & {">=", "~="}, f"{group}: {req} has no lower bound"
        assert not ops & {"==", "==="}, f"{group}: {req} is pinned; exact versions belong in constraints.txt"
        lower = next(Version(s.version) for s in req.specifier if s.operator in {">=", "~="})
        if lower.major >= 1 and lower.major < 2000:  # semantic versions get a ceiling; calendar versions (2025.3) not
            assert "<" in ops or "~=" in ops, f"{group}: {req} has no upper bound below the next major"
    # the extras that reference others name ones that exist
    optional = PYPROJECT["project"]["optional-dependencies"]
    for group, lines in optional.items():
        for line in lines:
            req = Requirement(line)
            if canonicalize_name(req.name) == "assay":
                assert req.extras <= optional.keys(), f"{group}: {line} names an unknown extra"


def test_the_lock_pins_every_requirement_inside_its_range():
    pins = _lock()
    for group, req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} ({group}) is not in constraints.txt: regenerate it with scripts/lock.py"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock has {name}=={pins[name]}, outside {req}"
    # deliberate: torch 2.13.0 is the CPU wheel on this machine's disk (any other version pulls GBs of CUDA)
    assert pins["torch"] == Version("2.13.0")


def test_the_lock_script_walks_the_installed_requirement_tree():
    import importlib.util
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    lock_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_script)
    demo = {canonicalize_name(r.name) for r in lock_script.project_requirements(("demo",))}
    harvest = {canonicalize_name(r.name) for _, r in _requirements(("core", "harvest"))}
    assert demo == harvest  # demo = assay[harvest], expanded through the self-reference
    tree = lock_script.closure(lock_script.project_requirements(()))
    assert {canonicalize_name(r.name) for _, r in _requirements(("core",))} < tree.keys()  # direct and transitive
    assert "pydantic-core" in tree and "annotated-types" in tree  # pydantic's own requirements
    assert set(tree) <= _lock().keys()  # the core install's whole tree is locked


def test_make_installs_with_the_lock():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "LOCK := constraints.txt" in makefile
    installs = [line for line in makefile.splitlines() if "pip install" in line and "-e '.[" in line]
    assert len(installs) == 2  # .[all,dev] for make install/test, .[demo] for make demo
    assert all("-c $(LOCK)" in line for line in installs), installs
    # the portable llama-cpp-python wheel is built at the locked version
    assert "LLAMA_CPP := $(shell grep -o '^llama-cpp-python==[0-9.]*' $(LOCK))" in makefile


def test_readme_names_every_extra_and_its_size():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Installing", 1)[1].split("\n## ", 1)[0]
    for extra in ["core", *PYPROJECT["project"]["optional-dependencies"]]:
        row = next((line for line in section.splitlines() if line.startswith(f"| `{extra}` ")), None)
        assert row is not None, f"README's Installing table has no row for {extra}"
        assert " MB |" in row, row

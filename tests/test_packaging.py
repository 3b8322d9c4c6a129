"""Packaging: ``assay --version``, ``python -m assay``, the license, the changelog and ``py.typed``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import metadata

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

"""The license a repository's package manifest declares: ``pyproject.toml``, ``setup.cfg``, ``package.json``,
``Cargo.toml`` at the top of the repository (the first of these that declares one, in that order).

What is read:

* ``pyproject.toml``: ``[project] license`` as a string (PEP 639 SPDX expression, or free text), as a table
  ``{text = "…"}`` (free text, sometimes a whole license) or ``{file = "LICENSE.txt"}``; ``[project]
  license-files`` (PEP 639 globs) and ``[tool.setuptools] license-files``; Poetry's ``[tool.poetry] license``.
* ``setup.cfg``: ``[metadata] license``, ``license_file``, ``license_files``.
* ``package.json``: ``license`` (an SPDX expression, ``"SEE LICENSE IN <file>"``, or the old ``{"type": …}``),
  the old ``licenses: [{"type": …}]``; ``"UNLICENSED"`` means *not* licensed (no expression).
* ``Cargo.toml``: ``[package] license`` (``license.workspace = true`` reads ``[workspace.package]``),
  ``license-file``; the old ``MIT/Apache-2.0`` is ``MIT OR Apache-2.0``.

A declared value becomes an SPDX expression in current spelling (:func:`.licenses.canonical_spdx`) when it is one;
free text is recognised as a license text or a license's name (:mod:`.licenses`), else it stays text only. Files a
manifest names are returned so that the caller reads them as license files. A manifest that does not parse is
passed over (the next one is tried).
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

from assay.harvest.code.licenses import canonical_spdx, is_spdx_expression, match_licenses, name_only_license

MANIFESTS: tuple[str, ...] = ("pyproject.toml", "setup.cfg", "package.json", "Cargo.toml")
_MAX_TEXT = 20_000  # a license field longer than this is not a declaration we can use


@dataclass
class DeclaredLicense:
    """What one manifest says."""

    manifest: str  # e.g. "pyproject.toml"
    text: str | None = None  # the declared value as written (None when only files are named)
    expression: str | None = None  # SPDX expression (current ids), None when the value is not recognised
    files: list[str] = field(default_factory=list)  # repository paths of the license files it names


def declared_license(paths: Collection[str], read: Callable[[str], str | None]) -> DeclaredLicense | None:
    """The first manifest among ``paths`` (repository-relative) that declares a license or names license files.

    ``read(path)`` returns a file's text (None when it cannot be read)."""
    for manifest in MANIFESTS:
        if manifest not in paths:
            continue
        text = read(manifest)
        if text is None:
            continue
        try:
            value, patterns = _PARSERS[manifest](text)
        except (ValueError, TypeError, AttributeError, configparser.Error):  # TOML/JSON errors are ValueErrors
            continue
        if value is None and not patterns:
            continue
        found = DeclaredLicense(manifest, value, _expression(value) if value else None,
                                _matching(paths, patterns))
        return found
    return None


def _expression(value: str) -> str | None:
    """An SPDX expression for a declared value: itself if it is one, else the license its text or name shows."""
    value = value.strip()
    if not value or len(value) > _MAX_TEXT or value.upper() == "UNLICENSED":
        return None
    if len(value) <= 200:
        canonical = canonical_spdx(value)
        if is_spdx_expression(canonical):
            return canonical
        named = name_only_license(value)
        if named is not None:
            return named
    matches = match_licenses(value)  # a whole license text in the field
    return matches[0].spdx if matches else None


def _matching(paths: Collection[str], patterns: list[str]) -> list[str]:
    """The repository files a manifest's license-file entries name (exact paths or globs), sorted."""
    out: set[str] = set()
    for pattern in patterns:
        pattern = pattern.strip().removeprefix("./")
        if not pattern:
            continue
        if any(ch in pattern for ch in "*?["):
            out.update(p for p in paths if fnmatch.fnmatchcase(p, pattern))
        elif pattern in paths:
            out.add(pattern)
    return sorted(out)


# -- the manifests ------------------------------------------------------------------------------------------------
def _pyproject(text: str) -> tuple[str | None, list[str]]:
    data = tomllib.loads(text)
    project = data.get("project") or {}
    value: str | None = None
    patterns: list[str] = []
    lic = project.get("license")
    if isinstance(lic, str):
        value = lic
    elif isinstance(lic, dict):
        if isinstance(lic.get("text"), str):
            value = lic["text"]
        if isinstance(lic.get("file"), str):
            patterns.append(lic["file"])
    patterns += _strings(project.get("license-files"))
    tool = data.get("tool") or {}
    setuptools_files = (tool.get("setuptools") or {}).get("license-files")
    patterns += _strings(setuptools_files)
    poetry = (tool.get("poetry") or {}).get("license")
    if value is None and isinstance(poetry, str):
        value = poetry
    return value, patterns


def _setup_cfg(text: str) -> tuple[str | None, list[str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    if not parser.has_section("metadata"):
        return None, []
    meta = parser["metadata"]
    value = meta.get("license")
    patterns = []
    for key in ("license_file", "license_files", "license-file", "license-files"):
        raw = meta.get(key)
        if raw:
            patterns += [p for chunk in raw.splitlines() for p in chunk.split(",") if p.strip()]
    return (value.strip() or None) if value else None, patterns


def _package_json(text: str) -> tuple[str | None, list[str]]:
    data = json.loads(text)
    if not isinstance(data, dict):
        return None, []
    lic = data.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if lic is None and isinstance(data.get("licenses"), list):
        types = [x.get("type") for x in data["licenses"] if isinstance(x, dict) and isinstance(x.get("type"), str)]
        lic = " OR ".join(types) if types else None
    if not isinstance(lic, str):
        return None, []
    if lic.upper().startswith("SEE LICENSE IN "):
        return None, [lic[len("SEE LICENSE IN "):].strip()]
    return lic, []


def _cargo(text: str) -> tuple[str | None, list[str]]:
    data = tomllib.loads(text)
    package = data.get("package") or {}
    workspace = (data.get("workspace") or {}).get("package") or {}
    value = package.get("license")
    if isinstance(value, dict) and value.get("workspace"):
        value = workspace.get("license")
    if value is None and not package:  # a virtual workspace manifest
        value = workspace.get("license")
    file = package.get("license-file")
    if isinstance(file, dict) and file.get("workspace"):
        file = workspace.get("license-file")
    return (value if isinstance(value, str) else None), ([file] if isinstance(file, str) else [])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):  # setuptools' old {paths = [...], globs = [...]}
        return [v for key in ("paths", "globs") for v in _strings(value.get(key))]
    return []


_PARSERS: dict[str, Callable[[str], tuple[str | None, list[str]]]] = {
    "pyproject.toml": _pyproject, "setup.cfg": _setup_cfg, "package.json": _package_json, "Cargo.toml": _cargo,
}

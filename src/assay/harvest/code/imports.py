"""Which files of a repository a file imports: the edges of the repository's dependency graph.

Supported languages and how imports are resolved to files of the same repository (imports of anything outside
it, the standard library or installed packages, are ignored):

* **Python**: ``import a.b`` and ``from .x import y`` statements. Each statement is found by a line-anchored
  regular expression and then parsed with :mod:`ast` (so parentheses, aliases, commas and continuation lines are
  handled as Python does), which is ~50× faster than parsing whole files with ``ast.parse`` on real code and
  finds the same statements (imports inside functions and ``if TYPE_CHECKING:`` blocks included). Absolute
  names are looked up in the repository's module table, built for the roots ``""``, ``src/``, ``lib/`` and
  ``python/``, and, when the repository's top folder is itself a package (an installed package, whose files
  import ``requests.api`` from inside ``requests/``), under the repository's name. ``from p import n`` depends on
  ``p.n`` when that is a module, else on ``p``. Relative imports are resolved from the file's package. As scripts
  run from their folder see their neighbours, an absolute name found nowhere else is tried next to the file.
* **JavaScript / TypeScript**: ``import … from "./x"``, ``import "./x"``, ``export … from "./x"``,
  ``require("./x")`` and ``import("./x")`` with relative specifiers, resolved as bundlers do: the exact path,
  then with ``.ts .tsx .d.ts .js .jsx .mjs .cjs .vue .svelte .json``, then ``index.*`` in that folder, and a
  ``.js`` specifier may name a ``.ts`` file (TypeScript's ESM convention). Bare package names are external.
* **Go**: ``import "m/p"`` and import blocks; a path under a module declared by a ``go.mod`` of the repository
  depends on every non-test ``.go`` file of that package's folder.
* **C / C++**: ``#include "x.h"`` relative to the file, then to the repository root and ``include/``.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections import defaultdict
from typing import Iterable

# -- Python --------------------------------------------------------------------------------------------------------
# bounded repetitions: a statement longer than a few thousand characters is not an import, and unbounded ones
# make hostile input (a line of 100k "import" words, an unclosed parenthesis) quadratic
_PY_IMPORT_LINE = re.compile(
    r"^[ \t]*(?:from[ \t]+\.{0,50}[\w.]{0,500}[ \t]+import[ \t]*(?:\([^)]{0,8000}\)|(?:[^\n\\]|\\\n){0,4000})"
    r"|import[ \t]+(?:[^\n\\]|\\\n){0,4000})",
    re.M)
_PY_ROOTS = ("", "src/", "lib/", "python/")


def python_imports(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(level, module, names)`` of each import statement: ``from ..a import b, c`` → ``(2, "a", ("b", "c"))``,
    ``import a.b`` → ``(0, "a.b", ())``."""
    out: list[tuple[int, str, tuple[str, ...]]] = []
    for m in _PY_IMPORT_LINE.finditer(text):
        stmt = m.group(0).strip()
        try:
            tree = ast.parse(stmt)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                out.extend((0, alias.name, ()) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                out.append((node.level, node.module or "", tuple(a.name for a in node.names if a.name != "*")))
    return out


def _python_module_table(paths: Iterable[str], repo_name: str | None) -> dict[str, str]:
    """Dotted module name → file, for every Python file under each candidate root."""
    table: dict[str, str] = {}
    py = sorted(p for p in paths if p.endswith((".py", ".pyi", ".pyx")))
    top_is_package = "__init__.py" in py
    for path in py:
        parts = path.rsplit(".", 1)[0].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        for root in _PY_ROOTS:
            depth = root.count("/")
            if root and (not path.startswith(root) or len(parts) <= depth):
                continue
            if parts[depth:]:
                table.setdefault(".".join(parts[depth:]), path)
        if top_is_package and repo_name:
            table.setdefault(".".join([repo_name, *parts]), path)
    return table


def resolve_python(path: str, imports: list[tuple[int, str, tuple[str, ...]]], table: dict[str, str],
                   python_files: set[str]) -> set[str]:
    """The repository files that ``path``'s import statements name."""
    deps: set[str] = set()
    package = path.rsplit(".", 1)[0].split("/")[:-1]  # an __init__ file's package is its folder, as for modules
    folder = posixpath.dirname(path)
    for level, module, names in imports:
        if level:
            if level - 1 > len(package):
                continue
            base = package[: len(package) - (level - 1)]
            full = ".".join([*base, *module.split(".")]) if module else ".".join(base)
            local = None
        else:
            full = module
            local = posixpath.join(folder, *module.split(".")) if folder else module.replace(".", "/")
        found = False
        for name in names:  # from p import n: the submodule p.n when it exists
            target = table.get(f"{full}.{name}" if full else name)
            if target is not None:
                deps.add(target)
                found = True
        if not found and full:
            parts = full.split(".")
            while parts:  # the longest prefix that is a module of the repository
                target = table.get(".".join(parts))
                if target is not None:
                    deps.add(target)
                    found = True
                    break
                if level:
                    break
                parts = parts[:-1]
        if not found and local is not None:  # a script's neighbour: `import utils` next to utils.py
            for cand in (f"{local}.py", f"{local}/__init__.py"):
                if cand in python_files:
                    deps.add(cand)
                    break
    deps.discard(path)
    return deps


# -- JavaScript / TypeScript ------------------------------------------------------------------------------------------
_JS_CLAUSE = r"(?:[\w$]+|\*\s*as\s+[\w$]+|\{[^}]{0,4000}\})"
_JS_IMPORT = re.compile(
    r"\bimport\s*(?:type\s+)?(?:" + _JS_CLAUSE + r"(?:\s*,\s*" + _JS_CLAUSE + r")?\s*from\s*)?[\"']([^\"'\n]{1,500})[\"']"
    r"|\bexport\s+(?:type\s+)?(?:\*(?:\s*as\s+[\w$]+)?|\{[^}]{0,4000}\})\s*from\s*[\"']([^\"'\n]{1,500})[\"']"
    r"|\b(?:require|import)\s*\(\s*[\"']([^\"'\n]{1,500})[\"']")
_JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".vue", ".svelte", ".json")
JS_LANGUAGES = frozenset({"JavaScript", "TypeScript", "Vue", "Svelte"})


def js_imports(text: str) -> list[str]:
    return [m.group(1) or m.group(2) or m.group(3) for m in _JS_IMPORT.finditer(text)]


def resolve_js(path: str, specs: list[str], files: set[str]) -> set[str]:
    deps: set[str] = set()
    folder = posixpath.dirname(path)
    for spec in specs:
        if not spec.startswith((".", "/")):
            continue  # a package
        target = posixpath.normpath(posixpath.join(folder, spec) if not spec.startswith("/") else spec.lstrip("/"))
        if target.startswith("../"):
            continue
        stem = target
        for ext in (".js", ".jsx", ".mjs", ".cjs"):
            if target.endswith(ext):
                stem = target[: -len(ext)]
        candidates = [target, *(stem + e for e in _JS_EXTENSIONS), *(f"{target}/index{e}" for e in _JS_EXTENSIONS)]
        for cand in candidates:
            if cand in files:
                deps.add(cand)
                break
    deps.discard(path)
    return deps


# -- Go ----------------------------------------------------------------------------------------------------------------
_GO_IMPORT_BLOCK = re.compile(r"^import\s*\(([^)]*)(?:\)|\Z)", re.M)  # an unclosed block runs to the end: linear
_GO_IMPORT_LINE = re.compile(r"^import\s+(?:[\w.]+\s+)?\"([^\"]+)\"", re.M)
_GO_SPEC = re.compile(r"^\s*(?:[\w.]+\s+)?\"([^\"]+)\"", re.M)
_GO_MODULE = re.compile(r"^module\s+(\S+)", re.M)


def go_imports(text: str) -> list[str]:
    out = [m.group(1) for m in _GO_IMPORT_LINE.finditer(text)]
    for block in _GO_IMPORT_BLOCK.finditer(text):
        out.extend(m.group(1) for m in _GO_SPEC.finditer(block.group(1)))
    return out


def go_modules(go_mod_texts: dict[str, str]) -> dict[str, str]:
    """Module path → the folder of its go.mod, from ``{go.mod path: text}``."""
    out = {}
    for path, text in go_mod_texts.items():
        m = _GO_MODULE.search(text)
        if m:
            out[m.group(1).strip('"')] = posixpath.dirname(path)
    return out


def resolve_go(path: str, specs: list[str], modules: dict[str, str], go_dirs: dict[str, list[str]]) -> set[str]:
    deps: set[str] = set()
    for spec in specs:
        for mod, folder in modules.items():
            if spec == mod or spec.startswith(mod + "/"):
                sub = spec[len(mod):].lstrip("/")
                target_dir = posixpath.normpath(posixpath.join(folder, sub)) if (folder or sub) else ""
                target_dir = "" if target_dir == "." else target_dir
                deps.update(go_dirs.get(target_dir, ()))
                break
    deps.discard(path)
    return deps


# -- C / C++ -----------------------------------------------------------------------------------------------------------
_C_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"\n]+)"', re.M)
C_LANGUAGES = frozenset({"C", "C++", "Objective-C", "Objective-C++"})


def resolve_c(path: str, text: str, files: set[str]) -> set[str]:
    deps: set[str] = set()
    folder = posixpath.dirname(path)
    for m in _C_INCLUDE.finditer(text):
        inc = m.group(1)
        for base in (folder, "", "include", "src"):
            cand = posixpath.normpath(posixpath.join(base, inc)) if base else posixpath.normpath(inc)
            if cand in files:
                deps.add(cand)
                break
    deps.discard(path)
    return deps


# -- a whole repository ------------------------------------------------------------------------------------------------
def dependency_edges(files: dict[str, tuple[str | None, str]], repo_name: str | None = None) -> dict[str, set[str]]:
    """``{path: paths it imports}`` for a repository given as ``{path: (language, text)}``."""
    paths = set(files)
    table = _python_module_table(paths, repo_name)
    python_files = set(table.values())
    go_mods = go_modules({p: t for p, (_, t) in files.items() if p == "go.mod" or p.endswith("/go.mod")})
    go_dirs: dict[str, list[str]] = defaultdict(list)
    for p, (lang, _) in files.items():
        if p.endswith(".go") and not p.endswith("_test.go"):
            go_dirs[posixpath.dirname(p)].append(p)
    edges: dict[str, set[str]] = {}
    for p, (lang, text) in files.items():
        if lang == "Python" or p.endswith((".py", ".pyi")):
            deps = resolve_python(p, python_imports(text), table, python_files)
        elif lang in JS_LANGUAGES:
            deps = resolve_js(p, js_imports(text), paths)
        elif lang == "Go" and go_mods:
            deps = resolve_go(p, go_imports(text), go_mods, go_dirs)
        elif lang in C_LANGUAGES:
            deps = resolve_c(p, text, paths)
        else:
            deps = set()
        edges[p] = deps
    return edges

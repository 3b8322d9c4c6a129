"""Which files of a repository a file imports: the edges of the repository's dependency graph.

Supported languages and how imports are resolved to files of the same repository (imports of anything outside
it, the standard library or installed packages, are ignored):

* **Python**: ``import a.b`` and ``from .x import y`` statements. Each statement is found by a line-anchored
  regular expression and then parsed with :mod:`ast` (so parentheses, aliases, commas and continuation lines are
  handled as Python does), which is ~50× faster than parsing whole files with ``ast.parse`` on real code and
  finds the same statements. Only imports that run when the module is imported make edges: those inside
  functions (run when called, often placed there to break a cycle) and under ``if TYPE_CHECKING:`` (never run) are
  left out, as they do not say which file must be read first (:func:`python_import_scope`). Absolute
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
import sys
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
#: inside a package, ``import types`` is the standard library's, never the package's own types.py (Python 3
#: absolute imports); a script's folder, being on sys.path, can shadow it
_STDLIB = frozenset(sys.stdlib_module_names)


#: the first line of a compound statement (block header)
_PY_HEADER = re.compile(r"(?:async[ \t]+)?(def|class|if|elif|else|for|while|try|except|finally|with|match|case)\b")
_PY_TYPE_CHECKING_IF = re.compile(r"if[ \t]+(?:[A-Za-z_][\w.]*\.)?TYPE_CHECKING[ \t]*(?::|and\b)")


def python_import_scope(text: str, line_start: int) -> str:
    """When the import statement on the line starting at ``line_start`` runs: ``"module"`` (when the module is
    imported: at module level, in a class body, a ``try`` or an ``if``), ``"function"`` (inside a ``def``: only
    when it is called) or ``"type_checking"`` (under ``if TYPE_CHECKING:``: never at run time).

    Walks back line by line to the enclosing block headers, stopping at the first ``def`` or ``if TYPE_CHECKING``
    (a header is a line with less indentation ending with ``:``; other less-indented lines are continuation lines
    or string contents and are passed over; ``) -> None:`` sends the walk to the ``def (`` that opened it).
    Limit: a line inside a multi-line string, indented less than the import and reading like a header
    (``with x:``), is taken for one."""
    return _ImportScopes(text).scope(line_start)


class _ImportScopes:
    """:func:`python_import_scope` for the import statements of one text, judged in text order.

    Remembering each judged statement makes the walks of a file short (an earlier import at the same or an outer
    level of the walk has the answer), and a budget of characters read keeps hostile texts (thousands of imports
    with ever smaller indentation) linear: past it, statements count as ``"module"``, as if not walked."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.memo: dict[int, str] = {}
        self.budget = 4 * len(text) + 100_000

    def scope(self, line_start: int) -> str:
        text, memo = self.text, self.memo
        line_end = text.find("\n", line_start)
        first = text[line_start:line_end if line_end >= 0 else len(text)]
        limit = len(first) - len(first.lstrip(" \t"))
        pending: int | None = None  # the indentation of a multi-line header whose first line is further up
        pos = line_start
        scope = "module"
        while pos > 0 and limit > 0 and self.budget > 0:
            start = text.rfind("\n", 0, pos - 1) + 1
            line = text[start:pos - 1]
            self.budget -= pos - start
            pos = start
            code = line.lstrip(" \t")
            if not code or code[0] == "#":
                continue
            indent = len(line) - len(code)
            if pending is not None:
                header = _PY_HEADER.match(code) if indent < limit else None
                # the header that opened the pending ") -> None:" line; or a whole header line, which no header's
                # continuation can hold: the pending line was text inside a string
                if header is None or (indent > pending and not _ends_with_colon(code)):
                    continue
                pending = None
            else:
                if indent > limit:
                    continue
                known = memo.get(start)
                if known is not None:
                    scope = known
                    break
                if indent == limit or not _ends_with_colon(code):
                    continue
                header = _PY_HEADER.match(code)
                if header is None:
                    pending = indent
                    continue
            if header.group(1) == "def":
                scope = "function"
                break
            if _PY_TYPE_CHECKING_IF.match(code):
                scope = "type_checking"
                break
            limit = indent
        memo[line_start] = scope
        return scope


def _ends_with_colon(code: str) -> bool:
    code = code.rstrip()
    if code.endswith(":"):
        return True
    return "#" in code and code.split("#", 1)[0].rstrip().endswith(":")


def python_imports(text: str, runtime_only: bool = False) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(level, module, names)`` of each import statement: ``from ..a import b, c`` → ``(2, "a", ("b", "c"))``,
    ``import a.b`` → ``(0, "a.b", ())``. With ``runtime_only``, only the statements that run when the module is
    imported (see :func:`python_import_scope`): function-local and ``TYPE_CHECKING`` imports are left out."""
    out: list[tuple[int, str, tuple[str, ...]]] = []
    scopes = _ImportScopes(text) if runtime_only else None
    for m in _PY_IMPORT_LINE.finditer(text):
        if scopes is not None and scopes.scope(m.start()) != "module":
            continue
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
    in_package = posixpath.join(folder, "__init__.py") in python_files
    top_is_package = "__init__.py" in python_files
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
        stdlib = not level and module.split(".", 1)[0] in _STDLIB

        def lookup(key: str) -> str | None:
            target = table.get(key)
            if target is not None and stdlib and top_is_package and _path_of(key) == _module_path(target):
                return None  # `import types` in click/_compat.py: the standard library, not click/types.py
            return target

        found = False
        for name in names:  # from p import n: the submodule p.n when it exists
            target = lookup(f"{full}.{name}" if full else name)
            if target is not None:
                deps.add(target)
                found = True
        if not found and full:
            parts = full.split(".")
            while parts:  # the longest prefix that is a module of the repository
                target = lookup(".".join(parts))
                if target is not None:
                    deps.add(target)
                    found = True
                    break
                if level:
                    break
                parts = parts[:-1]
        if not found and local is not None and not (stdlib and in_package):
            # a script's neighbour: `import utils` next to utils.py (inside a package, a bare standard library
            # name is the standard library's)
            for cand in (f"{local}.py", f"{local}/__init__.py"):
                if cand in python_files:
                    deps.add(cand)
                    break
    deps.discard(path)
    return deps


def _path_of(dotted: str) -> str:
    return dotted.replace(".", "/")


def _module_path(path: str) -> str:
    """``a/b.py`` and ``a/b/__init__.py`` → ``a/b``."""
    stem = path.rsplit(".", 1)[0]
    return "" if stem == "__init__" else stem.removesuffix("/__init__")


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
            deps = resolve_python(p, python_imports(text, runtime_only=True), table, python_files)
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

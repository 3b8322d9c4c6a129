"""Which language a source file is written in, from its name (and its shebang line), GitHub-linguist style.

Linguist decides by file name first (``Makefile``, ``Dockerfile``), then by extension, then by the interpreter on
a ``#!`` line; ambiguous extensions are settled by its content heuristics. This table keeps the first three and
settles each ambiguous extension on the most common language in open-source code (``.h`` → C, ``.m`` →
Objective-C, ``.pl`` → Perl, ``.v`` → Verilog), which is what The Stack did by mapping extensions to languages.

Every language has linguist's *type*: ``programming``, ``markup`` (HTML, CSS, XML, TeX), ``data`` (JSON, YAML,
CSV, INI) or ``prose`` (Markdown, reStructuredText, plain text). Filters use the type to treat data and config
files differently from code.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Language(NamedTuple):
    name: str
    type: str  # programming | markup | data | prose


_P, _M, _D, _T = "programming", "markup", "data", "prose"

# language name, type, extensions (lower case, with the dot)
_BY_EXTENSION: list[tuple[str, str, tuple[str, ...]]] = [
    ("Python", _P, (".py", ".pyw", ".pyi", ".pyx", ".pxd", ".pxi", ".gyp", ".gypi", ".bzl")),
    ("JavaScript", _P, (".js", ".mjs", ".cjs", ".jsx", ".es6", ".jsm")),
    ("TypeScript", _P, (".ts", ".tsx", ".mts", ".cts")),
    ("Java", _P, (".java", ".jav")),
    ("Kotlin", _P, (".kt", ".kts")),
    ("Scala", _P, (".scala", ".sc", ".sbt")),
    ("Groovy", _P, (".groovy", ".gradle", ".gvy")),
    ("C", _P, (".c", ".h", ".cats", ".idc")),
    ("C++", _P, (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".inl", ".ipp", ".tcc", ".tpp",
                 ".cu", ".cuh")),
    ("C#", _P, (".cs", ".csx")),
    ("Objective-C", _P, (".m",)),
    ("Objective-C++", _P, (".mm",)),
    ("Go", _P, (".go",)),
    ("Rust", _P, (".rs",)),
    ("Swift", _P, (".swift",)),
    ("Ruby", _P, (".rb", ".rake", ".gemspec", ".ru", ".podspec", ".thor")),
    ("PHP", _P, (".php", ".phtml", ".php3", ".php4", ".php5", ".phps")),
    ("Perl", _P, (".pl", ".pm", ".t", ".pod")),
    ("Shell", _P, (".sh", ".bash", ".zsh", ".ksh", ".bats", ".command")),
    ("PowerShell", _P, (".ps1", ".psm1", ".psd1")),
    ("Batchfile", _P, (".bat", ".cmd")),
    ("Lua", _P, (".lua",)),
    ("R", _P, (".r", ".rd", ".rsx")),
    ("Julia", _P, (".jl",)),
    ("MATLAB", _P, (".matlab",)),
    ("Haskell", _P, (".hs", ".lhs", ".hsc")),
    ("OCaml", _P, (".ml", ".mli", ".mll", ".mly")),
    ("F#", _P, (".fs", ".fsi", ".fsx")),
    ("Elixir", _P, (".ex", ".exs")),
    ("Erlang", _P, (".erl", ".hrl")),
    ("Clojure", _P, (".clj", ".cljs", ".cljc", ".edn")),
    ("Common Lisp", _P, (".lisp", ".lsp", ".cl", ".asd")),
    ("Scheme", _P, (".scm", ".ss", ".sld", ".rkt")),
    ("Emacs Lisp", _P, (".el",)),
    ("Dart", _P, (".dart",)),
    ("Visual Basic .NET", _P, (".vb", ".vbs")),
    ("Fortran", _P, (".f", ".f77", ".f90", ".f95", ".f03", ".f08", ".for")),
    ("Assembly", _P, (".asm", ".s", ".nasm")),
    ("Verilog", _P, (".v", ".vh")),
    ("SystemVerilog", _P, (".sv", ".svh")),
    ("VHDL", _P, (".vhd", ".vhdl")),
    ("Zig", _P, (".zig",)),
    ("Nim", _P, (".nim", ".nims")),
    ("Crystal", _P, (".cr",)),
    ("D", _P, (".d",)),
    ("Pascal", _P, (".pas", ".pp", ".dpr", ".lpr")),
    ("Ada", _P, (".adb", ".ads", ".ada")),
    ("COBOL", _P, (".cob", ".cbl", ".cpy")),
    ("Prolog", _P, (".pro", ".prolog")),
    ("Tcl", _P, (".tcl", ".tk")),
    ("Awk", _P, (".awk",)),
    ("SQL", _P, (".sql", ".psql", ".pgsql", ".plsql", ".ddl")),
    ("Solidity", _P, (".sol",)),
    ("CMake", _P, (".cmake",)),
    ("Makefile", _P, (".mk", ".mak", ".make")),
    ("Dockerfile", _P, (".dockerfile",)),
    ("HCL", _P, (".hcl", ".tf", ".tfvars")),
    ("Nix", _P, (".nix",)),
    ("GLSL", _P, (".glsl", ".vert", ".frag", ".geom", ".comp", ".vs", ".fs.glsl")),
    ("HLSL", _P, (".hlsl", ".fx")),
    ("Vue", _M, (".vue",)),
    ("Svelte", _M, (".svelte",)),
    ("HTML", _M, (".html", ".htm", ".xhtml", ".shtml")),
    ("CSS", _M, (".css",)),
    ("SCSS", _M, (".scss",)),
    ("Sass", _M, (".sass",)),
    ("Less", _M, (".less",)),
    ("XML", _D, (".xml", ".xsd", ".plist", ".csproj", ".vcxproj", ".props", ".targets", ".resx", ".xaml",
                 ".wsdl", ".pom", ".nuspec", ".svg", ".kml", ".rss", ".atom")),
    ("XSLT", _P, (".xsl", ".xslt")),
    ("TeX", _M, (".tex", ".sty", ".cls", ".bib", ".ltx", ".dtx")),
    ("Jinja", _M, (".j2", ".jinja", ".jinja2")),
    ("Jupyter Notebook", _M, (".ipynb",)),
    ("JSON", _D, (".json", ".jsonl", ".geojson", ".jsonc", ".json5", ".webmanifest", ".har")),
    ("YAML", _D, (".yml", ".yaml")),
    ("TOML", _D, (".toml",)),
    ("INI", _D, (".ini", ".cfg", ".cnf", ".prefs", ".properties", ".editorconfig")),
    ("CSV", _D, (".csv", ".tsv", ".psv")),
    ("Protocol Buffer", _D, (".proto",)),
    ("GraphQL", _D, (".graphql", ".gql")),
    ("Diff", _D, (".diff", ".patch")),
    ("Markdown", _T, (".md", ".markdown", ".mdown", ".mkd", ".mdx")),
    ("reStructuredText", _T, (".rst", ".rest")),
    ("AsciiDoc", _T, (".adoc", ".asciidoc", ".asc")),
    ("Text", _T, (".txt", ".text")),
]

_BY_FILENAME: dict[str, tuple[str, str]] = {
    "makefile": ("Makefile", _P), "gnumakefile": ("Makefile", _P), "bsdmakefile": ("Makefile", _P),
    "dockerfile": ("Dockerfile", _P), "containerfile": ("Dockerfile", _P),
    "cmakelists.txt": ("CMake", _P),
    "rakefile": ("Ruby", _P), "gemfile": ("Ruby", _P), "guardfile": ("Ruby", _P), "podfile": ("Ruby", _P),
    "vagrantfile": ("Ruby", _P), "brewfile": ("Ruby", _P), "fastfile": ("Ruby", _P),
    "jenkinsfile": ("Groovy", _P),
    "build": ("Starlark", _P), "build.bazel": ("Starlark", _P), "workspace": ("Starlark", _P),
    "workspace.bazel": ("Starlark", _P), "module.bazel": ("Starlark", _P),
    "sconstruct": ("Python", _P), "sconscript": ("Python", _P), "wscript": ("Python", _P),
    "meson.build": ("Meson", _P), "justfile": ("Just", _P),
    ".bashrc": ("Shell", _P), ".bash_profile": ("Shell", _P), ".zshrc": ("Shell", _P), ".profile": ("Shell", _P),
    "configure.ac": ("M4Sugar", _P),
    "go.mod": ("Go Module", _D), "go.sum": ("Go Checksums", _D),
    "requirements.txt": ("Pip Requirements", _D), "pipfile": ("TOML", _D),
    "setup.cfg": ("INI", _D), "tox.ini": ("INI", _D), ".gitconfig": ("INI", _D), ".gitmodules": ("INI", _D),
    ".gitignore": ("Ignore List", _D), ".dockerignore": ("Ignore List", _D), ".npmignore": ("Ignore List", _D),
    ".gitattributes": ("Git Attributes", _D),
    "license": ("Text", _T), "licence": ("Text", _T), "copying": ("Text", _T), "unlicense": ("Text", _T),
    "notice": ("Text", _T), "authors": ("Text", _T), "contributors": ("Text", _T), "readme": ("Text", _T),
    "changelog": ("Text", _T), "changes": ("Text", _T), "install": ("Text", _T), "news": ("Text", _T),
    "record": ("Text", _D), "metadata": ("Text", _D), "wheel": ("Text", _D), "installer": ("Text", _D),
}

_SHEBANG_INTERPRETERS: dict[str, str] = {
    "python": "Python", "python2": "Python", "python3": "Python", "pypy": "Python", "pypy3": "Python",
    "sh": "Shell", "bash": "Shell", "zsh": "Shell", "ksh": "Shell", "dash": "Shell", "ash": "Shell",
    "node": "JavaScript", "nodejs": "JavaScript", "deno": "TypeScript", "ts-node": "TypeScript",
    "perl": "Perl", "ruby": "Ruby", "php": "PHP", "lua": "Lua", "rscript": "R", "julia": "Julia",
    "tclsh": "Tcl", "wish": "Tcl", "awk": "Awk", "gawk": "Awk", "escript": "Erlang", "elixir": "Elixir",
    "guile": "Scheme", "racket": "Scheme", "sbcl": "Common Lisp", "make": "Makefile", "pwsh": "PowerShell",
}

EXTENSIONS: dict[str, Language] = {}
for _name, _type, _exts in _BY_EXTENSION:
    for _ext in _exts:
        EXTENSIONS.setdefault(_ext, Language(_name, _type))
TYPES: dict[str, str] = {name: t for name, t, _ in _BY_EXTENSION}
TYPES.update({name: t for name, t in _BY_FILENAME.values()})
TYPES.update({name: _P for name in _SHEBANG_INTERPRETERS.values()})

_PROSE_NAMES = ("license", "licence", "copying", "unlicense", "readme", "notice", "changelog", "authors")
_SHEBANG = re.compile(rb"^#!\s*(\S+)(?:\s+(\S+))?")


def interpreter_language(first_line: bytes) -> str | None:
    """The language named by a ``#!`` line (``#!/usr/bin/env python3 -u`` → Python), or None."""
    m = _SHEBANG.match(first_line)
    if not m:
        return None
    prog = m.group(1).rsplit(b"/", 1)[-1]
    if prog == b"env" and m.group(2):
        prog = m.group(2)
    name = prog.decode("ascii", "replace").lower()
    name = re.sub(r"[\d.]+$", "", name) or name  # python3.11 → python
    return _SHEBANG_INTERPRETERS.get(name) or _SHEBANG_INTERPRETERS.get(name.rstrip("0123456789"))


def detect_language(path: str, head: bytes = b"") -> Language | None:
    """The language of the file at ``path`` (repository-relative), given the first bytes of its content.

    File name first, then the longest matching extension (``.d.ts`` is TypeScript through ``.ts``), then the
    interpreter of a ``#!`` line. None when nothing matches.
    """
    base = path.rsplit("/", 1)[-1]
    lower = base.lower()
    hit = _BY_FILENAME.get(lower)
    if hit is not None:
        return Language(*hit)
    if lower.startswith(("dockerfile.", "containerfile.")):
        return Language("Dockerfile", _P)
    if lower.startswith("makefile.") and not lower.endswith((".in", ".am")):
        return Language("Makefile", _P)
    if lower.startswith(_PROSE_NAMES):
        ext = lower.rsplit(".", 1)[1] if "." in lower else ""
        lang = EXTENSIONS.get("." + ext)
        if lang is None or lang.type != _P:  # LICENSE.APACHE, LICENSE-MIT, README.md, COPYING.txt
            return lang if lang is not None and lang.type == _T else Language("Text", _T)
    dot = lower.find(".", 1)
    while dot != -1:  # ".tar.gz"-like multi-part extensions: try the longest first
        lang = EXTENSIONS.get(lower[dot:])
        if lang is not None:
            return lang
        dot = lower.find(".", dot + 1)
    if head.startswith(b"#!"):
        name = interpreter_language(head.split(b"\n", 1)[0])
        if name is not None:
            return Language(name, TYPES.get(name, _P))
    return None

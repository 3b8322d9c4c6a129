"""How much of a source file is comments: the comment-to-code ratio of SantaCoder's filter.

BigCode computes it as characters in comments (and, for Python, docstrings) over all characters of the file,
with Python's tokenizer and ``ast`` for Python and pygments for the other languages. That costs milliseconds per
file; here one regular expression per comment syntax scans the text once, skipping string literals so that
``"http://x"`` or ``'#fff'`` are not taken for comments. Python docstrings are triple-quoted strings that start a
line (after indentation), which is what a docstring looks like in practice.

Languages whose comment syntax is not known return None (the filter then does not judge them).
"""

from __future__ import annotations

import re

_DQ = r'"(?:[^"\\\n]|\\.)*"'
_SQ = r"'(?:[^'\\\n]|\\.)*'"
_BT = r"`(?:[^`\\]|\\.)*`"
_BLOCK = r"/\*[\s\S]*?(?:\*/|\Z)"
_LINE_SLASH = r"//[^\n]*"
_LINE_HASH = r"#[^\n]*"
_LINE_DASH = r"--[^\n]*"
_LINE_SEMI = r";[^\n]*"
_LINE_PCT = r"%[^\n]*"
# string prefixes (r, b, f, u) are not part of the patterns: every match then starts at a quote, which lets the
# regex engine skip ahead to the next '#', '"' or "'" instead of trying each position
_PY_TRIPLE = r'(?:"""[\s\S]*?(?:"""|\Z)|\'\'\'[\s\S]*?(?:\'\'\'|\Z))'
_PY_STR = r'(?:' + _DQ + "|" + _SQ + ")"


def _scanner(comment: list[str], strings: list[str]) -> re.Pattern:
    """One regex: group 1 = a comment, anything else matched = a string literal to skip."""
    return re.compile("|".join([f"({'|'.join(comment)})", *strings]))


_C_LIKE = _scanner([_BLOCK, _LINE_SLASH], [_DQ, _SQ])
_JS_LIKE = _scanner([_BLOCK, _LINE_SLASH], [_DQ, _SQ, _BT])
_GO = _scanner([_BLOCK, _LINE_SLASH], [_DQ, _SQ, _BT])
_PHP = _scanner([_BLOCK, _LINE_SLASH, _LINE_HASH], [_DQ, _SQ])
_HASH = _scanner([_LINE_HASH], [_DQ, _SQ])
_SQL = _scanner([_BLOCK, _LINE_DASH], [_SQ, _DQ])
_LUA = _scanner([r"--\[\[[\s\S]*?(?:\]\]|\Z)", _LINE_DASH], [_DQ, _SQ])
_HASKELL = _scanner([r"\{-[\s\S]*?(?:-\}|\Z)", _LINE_DASH], [_DQ])
_LISP = _scanner([_LINE_SEMI], [_DQ])
_TEX = _scanner([r"(?<!\\)%[^\n]*"], [])
_MATLAB = _scanner([_LINE_PCT], [_SQ, _DQ])
_HTML = _scanner([r"<!--[\s\S]*?(?:-->|\Z)"], [])
_CSS = _scanner([_BLOCK], [_DQ, _SQ])
#: Python: comments, and strings; docstrings are told apart from other strings by where they start (used to strip
#: comments; the ratio uses the faster scanner below)
_PYTHON = re.compile(f"({_LINE_HASH})|({_PY_TRIPLE})|{_PY_STR}")

_SCANNERS: dict[str, re.Pattern] = {}
for _names, _scan in (
    (("C", "C++", "Java", "C#", "Objective-C", "Objective-C++", "Kotlin", "Scala", "Groovy", "Swift", "Rust", "Dart",
      "D", "Zig", "Solidity", "GLSL", "HLSL", "Verilog", "SystemVerilog", "Protocol Buffer"), _C_LIKE),
    (("JavaScript", "TypeScript", "Vue", "Svelte"), _JS_LIKE),
    (("Go",), _GO),
    (("PHP",), _PHP),
    (("Shell", "Perl", "Ruby", "R", "Makefile", "CMake", "Dockerfile", "YAML", "TOML", "PowerShell", "Nim", "Julia",
      "Elixir", "Crystal", "Tcl", "Awk", "Starlark", "Meson", "HCL", "Nix", "INI"), _HASH),
    (("SQL",), _SQL),
    (("Lua",), _LUA),
    (("Haskell",), _HASKELL),
    (("Common Lisp", "Scheme", "Emacs Lisp", "Clojure", "Assembly"), _LISP),
    (("TeX",), _TEX),
    (("MATLAB", "Erlang"), _MATLAB),
    (("HTML", "XML", "Markdown"), _HTML),
    (("CSS", "SCSS", "Less"), _CSS),
):
    for _n in _names:
        _SCANNERS[_n] = _scan


def supported(language: str | None) -> bool:
    return language == "Python" or language in _SCANNERS


def comment_chars(text: str, language: str | None) -> int | None:
    """Characters of ``text`` inside comments (and Python docstrings); None if the language is not supported."""
    if language == "Python":
        return _python_comment_chars(text)
    scanner = _SCANNERS.get(language or "")
    if scanner is None:
        return None
    return sum(m.end(1) - m.start(1) for m in scanner.finditer(text) if m.start(1) >= 0)


_PY_NEXT = re.compile(r"[#'\"]")
_PY_SHORT_STRING = {q: re.compile(r"(?:[^%s\\\n]|\\.)*%s?" % (q, q)) for q in ("'", '"')}


def _python_comment_chars(text: str) -> int:
    """Comments and docstrings of Python source, scanned with ``str.find`` jumps (no per-character regex work)."""
    total = 0
    pos = 0
    n = len(text)
    while True:
        m = _PY_NEXT.search(text, pos)
        if m is None:
            return total
        i = m.start()
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            total += j - i
            pos = j
            continue
        if text.startswith(c * 3, i):
            j = i + 3
            while True:  # the closing triple quote, skipping escaped quotes
                j = text.find(c * 3, j)
                if j < 0 or _unescaped(text, j):
                    break
                j += 1
            end = n if j < 0 else j + 3
            line_start = text.rfind("\n", 0, i) + 1
            before = text[line_start:i].strip()
            if not before or (len(before) <= 2 and before.isalpha()):  # starts its line (r"""...): a docstring
                total += end - i
            pos = end
            continue
        pos = _PY_SHORT_STRING[c].match(text, i + 1).end()


def _unescaped(text: str, j: int) -> bool:
    """Whether the character at ``j`` is preceded by an even number of backslashes."""
    k = j
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (j - k) % 2 == 0


def comment_ratio(text: str, language: str | None) -> float | None:
    """Comment characters over all characters (None: unsupported language or empty text)."""
    if not text:
        return None
    n = comment_chars(text, language)
    return None if n is None else n / len(text)

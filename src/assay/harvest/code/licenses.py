"""Which license a repository is under: a light SPDX matcher over LICENSE/COPYING texts and SPDX headers.

Why not scancode-toolkit: it is the reference detector (it matches thousands of license texts and notices with
an index of n-grams), but it is a ~100 MB install with native dependencies and takes seconds per repository. For
a permissive-license *filter* what matters is telling apart the few dozen licenses that cover nearly all code
(MIT, Apache-2.0, BSD-2/3-Clause, ISC, GPL/LGPL/AGPL, MPL, Unlicense, CC0, PSF, Zlib, BSL ...). Each has
sentences no other license has; this module normalises a text (lower case, punctuation and layout removed,
"licence" spelled "license") and looks for those key phrases, both in full license texts and in the standard short
notices ("Licensed under the Apache License, Version 2.0", "either version 3 of the License, or (at your option)
any later version"). ``SPDX-License-Identifier:`` headers are read as they are.

A repository's license comes from its *primary* license files: ``LICENSE*``, ``LICENCE*``, ``COPYING*``,
``UNLICENSE`` at the top of the repository (or of an installed package's ``*.dist-info``, see
:func:`dist_info_license_files`). In each file the license whose phrases appear *first* is that file's license;
licenses found further down (numpy's LICENSE.txt appends the GPL text of the bundled GCC runtime) are recorded as
``bundled``, not as the repository's license. Several primary files are combined with ``AND``, or with ``OR``
when the texts say the code is available under *either* license (dual licensing, e.g. ``packaging``).

Known limits: a license text edited beyond its key sentences is not recognised (``unknown``); licenses outside the
table are ``unknown`` unless named by an SPDX header.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# -- the phrase table ----------------------------------------------------------------------------------------------
# spdx id -> (all of these phrase groups must occur; a group is satisfied by any of its alternatives,
#             none of these phrases may occur)
_RULES: list[tuple[str, tuple[tuple[str, ...], ...], tuple[str, ...]]] = [
    # copyleft first: their texts quote other licenses' names
    ("AGPL-3.0", (("gnu affero general public license version 3 19 november 2007", "gnu affero general public license as "
                   "published by the free software foundation either version 3"),), ()),
    ("LGPL-3.0", (("gnu lesser general public license version 3 29 june 2007",
                   "gnu lesser general public license as published by the free software foundation either version 3",
                   "gnu lesser general public license as published by the free software foundation version 3"),), ()),
    ("LGPL-2.1", (("gnu lesser general public license version 2 1 february 1999",
                   "gnu lesser general public license as published by the free software foundation either version 2 1",
                   "gnu lesser general public license as published by the free software foundation version 2 1"),), ()),
    ("LGPL-2.0", (("gnu library general public license version 2 june 1991",
                   "gnu library general public license as published by the free software foundation either version 2",
                   "gnu library general public license as published by the free software foundation version 2"),), ()),
    ("GPL-3.0", (("gnu general public license version 3 29 june 2007",
                  "gnu general public license as published by the free software foundation either version 3",
                  "gnu general public license as published by the free software foundation version 3",
                  "gnu general public license version 3 as published by the free software foundation"),), ()),
    ("GPL-2.0", (("gnu general public license version 2 june 1991",
                  "gnu general public license as published by the free software foundation either version 2",
                  "gnu general public license as published by the free software foundation version 2",
                  "gnu general public license version 2 as published by the free software foundation"),), ()),
    ("MPL-2.0", (("mozilla public license version 2 0", "mozilla public license v 2 0",
                  "mozilla org mpl 2 0"),), ()),
    ("MPL-1.1", (("mozilla public license version 1 1", "mozilla org mpl 1 1"),), ()),
    ("EPL-2.0", (("eclipse public license v 2 0", "eclipse public license version 2 0"),), ()),
    ("EPL-1.0", (("eclipse public license v 1 0", "eclipse public license version 1 0"),), ()),
    ("CDDL-1.0", (("common development and distribution license cddl version 1 0",),), ()),
    ("EUPL-1.2", (("european union public license v 1 2", "eupl v 1 2"),), ()),
    # permissive
    ("Apache-2.0", (("apache license version 2 0", "apache license v2 0", "apache license 2 0",
                     "apache org licenses license 2 0"),), ()),
    ("MIT", (("permission is hereby granted free of charge to any person obtaining a copy",),
             ("above copyright notice and this permission notice shall be included",
              "above copyright notice and this permission notice including the next paragraph shall be included")),
     ()),
    ("MIT-0", (("permission is hereby granted free of charge to any person obtaining a copy",),
               ("to deal in the software without restriction",),), ("above copyright notice",)),
    ("BSD-4-Clause", (("redistribution and use in source and binary forms with or without modification are permitted",),
                      ("all advertising materials mentioning features or use of this software must display",)), ()),
    ("BSD-3-Clause", (("redistribution and use in source and binary forms with or without modification are permitted",),
                      ("endorse or promote products derived from this software",
                       "names of its contributors may not be used to endorse",
                       "name of the copyright holder nor the names")),
     ("all advertising materials mentioning features",)),
    ("BSD-2-Clause", (("redistribution and use in source and binary forms with or without modification are permitted",),
                      ("redistributions in binary form must reproduce the above copyright notice",)),
     ("endorse or promote products", "all advertising materials mentioning features", "may not be used to endorse")),
    ("ISC", (("permission to use copy modify and or distribute this software for any purpose with or without fee is "
              "hereby granted", "permission to use copy modify and distribute this software for any purpose with or "
              "without fee is hereby granted"),
             ("above copyright notice and this permission notice appear in all copies",)), ()),
    ("0BSD", (("permission to use copy modify and or distribute this software for any purpose with or without fee is "
               "hereby granted",),), ("above copyright notice and this permission notice appear",)),
    ("MIT-CMU", (("permission to use copy modify and distribute this software and its associated documentation for "
                  "any purpose and without fee is hereby granted",),), ()),
    ("HPND", (("permission to use copy modify and distribute this software and its documentation for any purpose "
               "and without fee is hereby granted",),), ()),
    ("Unlicense", (("this is free and unencumbered software released into the public domain",),), ()),
    ("CC0-1.0", (("cc0 1 0 universal", "creativecommons org publicdomain zero 1 0"),), ()),
    ("Zlib", (("altered source versions must be plainly marked as such",),
              ("this notice may not be removed or altered from any source distribution",)), ()),
    ("BSL-1.0", (("boost software license version 1 0", "boost org license 1 0"),), ()),
    ("PSF-2.0", (("python software foundation license version 2", "psf license agreement",
                  "license agreement is between the python software foundation"),), ()),
    ("LicenseRef-PSF-derived", (("hereby grants licensee a nonexclusive royalty free world wide license to reproduce "
                                 "analyze test perform and or display publicly prepare derivative works",),), ()),
    ("Artistic-2.0", (("the artistic license 2 0",),), ()),
    ("WTFPL", (("do what the fuck you want to public license",),), ()),
    ("CC-BY-4.0", (("creative commons attribution 4 0 international",),), ("sharealike", "noncommercial")),
    ("CC-BY-SA-4.0", (("creative commons attribution sharealike 4 0 international",),), ()),
    ("CC-BY-NC-4.0", (("creative commons attribution noncommercial 4 0 international",),), ()),
]

#: licenses that may be used for training under The Stack's permissive policy (Blue Oak Council's permissive list)
PERMISSIVE: tuple[str, ...] = (
    "MIT", "MIT-0", "MIT-CMU", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "ISC", "Unlicense", "CC0-1.0",
    "Zlib", "BSL-1.0", "PSF-2.0", "Python-2.0", "LicenseRef-PSF-derived", "HPND", "X11", "Artistic-2.0",
    "CC-BY-4.0", "UPL-1.0", "NCSA", "PostgreSQL", "BlueOak-1.0.0",
)

_SPDX_HEADER = re.compile(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+\-() ]+?)\s*(?:\*/|-->|\"\"\"|'''|$)", re.M)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
#: in a short file that is not itself a license text ("This software is made available under the terms of *either*
#: of the licenses found in LICENSE.APACHE or LICENSE.BSD"): the other files' licenses are alternatives
_DUAL = re.compile(r" (?:either|at your option|dual licensed|dually licensed|dual license|multi licensed) ")
_DUAL_MAX_CHARS = 3000
_OR_LATER = "or at your option any later version"
_PRIMARY_NAMES = re.compile(r"^(?:un)?licen[cs]e(?:s)?(?:[-._ ].*)?$|^copying(?:[-._ ].*)?$|^copyright(?:\.txt|\.md)?$",
                            re.IGNORECASE)


def normalize(text: str) -> str:
    """Lower case, every run of non-alphanumeric characters as one space, "licence" as "license"."""
    text = text.lower().replace("licence", "license").replace("&", " and ")
    return " " + _NON_ALNUM.sub(" ", text).strip() + " "


@dataclass
class LicenseMatch:
    spdx: str
    position: int  # where its first key phrase starts in the normalised text


def match_licenses(text: str) -> list[LicenseMatch]:
    """Every license of the table whose key phrases occur in ``text``, ordered by position."""
    norm = normalize(text)
    found: list[LicenseMatch] = []
    for spdx, groups, forbidden in _RULES:
        first: tuple[int, str] | None = None
        for group in groups:
            hits = [(p, alt) for p, alt in ((norm.find(f" {alt} "), alt) for alt in group) if p >= 0]
            if not hits:
                break
            if first is None:
                first = min(hits)
        else:
            if any(f" {f} " in norm for f in forbidden):
                continue
            assert first is not None
            found.append(LicenseMatch(_versioned(spdx, norm, *first), first[0]))
    # a license family matched through a notice and a longer one (MIT-0 vs MIT): keep the more specific
    names = {m.spdx for m in found}
    if "ISC" in names:
        found = [m for m in found if m.spdx != "0BSD"]
    found.sort(key=lambda m: (m.position, m.spdx))
    return found


def _versioned(spdx: str, norm: str, position: int, phrase: str) -> str:
    """GNU licenses. Matched by a notice ("... either version 3 of the License"): ``-or-later`` when "or (at your
    option) any later version" follows, else ``-only``. Matched by the license's own title (the full text, which
    does not say which): ``-only``, the current id of what the deprecated plain id (``GPL-3.0``) meant, as
    scancode reports it; package metadata saying ``-or-later`` refines it (see ``code_ingest``)."""
    if not spdx.startswith(("GPL-", "LGPL-", "AGPL-")):
        return spdx
    if " as published by " not in f" {phrase} ":
        return f"{spdx}-only"
    window = norm[position + len(phrase): position + len(phrase) + 60]
    return f"{spdx}-or-later" if _OR_LATER in window else f"{spdx}-only"


# -- SPDX ids: current spelling ----------------------------------------------------------------------------------------
#: deprecated SPDX ids → their replacement in the current SPDX License List (lower-case keys)
_DEPRECATED: dict[str, str] = {
    **{f"{family}-{version}": f"{family}-{version}-only" for family, version in (
        ("GPL", "1.0"), ("GPL", "2.0"), ("GPL", "3.0"), ("LGPL", "2.0"), ("LGPL", "2.1"), ("LGPL", "3.0"),
        ("AGPL", "1.0"), ("AGPL", "3.0"), ("GFDL", "1.1"), ("GFDL", "1.2"), ("GFDL", "1.3"))},
    **{f"{family}-{version}+": f"{family}-{version}-or-later" for family, version in (
        ("GPL", "1.0"), ("GPL", "2.0"), ("GPL", "3.0"), ("LGPL", "2.0"), ("LGPL", "2.1"), ("LGPL", "3.0"),
        ("AGPL", "1.0"), ("AGPL", "3.0"), ("GFDL", "1.1"), ("GFDL", "1.2"), ("GFDL", "1.3"))},
    "gpl-2.0-with-autoconf-exception": "GPL-2.0-only WITH Autoconf-exception-2.0",
    "gpl-2.0-with-bison-exception": "GPL-2.0-or-later WITH Bison-exception-2.2",
    "gpl-2.0-with-classpath-exception": "GPL-2.0-only WITH Classpath-exception-2.0",
    "gpl-2.0-with-font-exception": "GPL-2.0-only WITH Font-exception-2.0",
    "gpl-2.0-with-gcc-exception": "GPL-2.0-only WITH GCC-exception-2.0",
    "gpl-3.0-with-autoconf-exception": "GPL-3.0-only WITH Autoconf-exception-3.0",
    "gpl-3.0-with-gcc-exception": "GPL-3.0-only WITH GCC-exception-3.1",
    "ecos-2.0": "GPL-2.0-or-later WITH eCos-exception-2.0",
    "wxwindows": "LGPL-2.0-or-later WITH WxWindows-exception-3.1",
    "bsd-2-clause-freebsd": "BSD-2-Clause", "bsd-2-clause-netbsd": "BSD-2-Clause",
    "standardml-nj": "SMLNJ", "nunit": "zlib-acknowledgement", "bzip2-1.0.5": "bzip2-1.0.6",
}
_DEPRECATED = {k.lower(): v for k, v in _DEPRECATED.items()}


@functools.lru_cache(maxsize=4096)
def _listed_spelling(token: str, exception: bool) -> str:
    """A license (or exception) id as the SPDX list spells it (the list ``packaging`` ships), else ``token``."""
    from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

    try:
        if exception:
            return canonicalize_license_expression(f"MIT WITH {token}").split(" WITH ", 1)[1]
        return canonicalize_license_expression(token)
    except InvalidLicenseExpression:
        return token


def canonical_spdx(expression: str) -> str:
    """``expression`` with every id in its current SPDX spelling: deprecated ids replaced (``GPL-3.0`` →
    ``GPL-3.0-only``, ``GPL-2.0+`` → ``GPL-2.0-or-later``), case as on the SPDX list (``mit`` → ``MIT``),
    operators upper case; Cargo's old ``MIT/Apache-2.0`` is ``MIT OR Apache-2.0``. Ids not on the list are kept."""
    out: list[str] = []
    after_with = False
    for token in _EXPR_TOKEN.findall(expression.replace("/", " OR ")):
        upper = token.upper()
        if upper in ("AND", "OR", "WITH"):
            out.append(upper)
            after_with = upper == "WITH"
            continue
        if token in "()":
            out.append(token)
        elif after_with:
            out.append(_listed_spelling(token, True))
        else:  # (a replacement with WITH needs no parentheses: WITH binds tighter than AND and OR)
            out.append(_DEPRECATED.get(token.lower()) or _listed_spelling(token, False))
        after_with = False
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def same_licenses(a: str, b: str) -> bool:
    """Whether two expressions name the same licenses, whatever their operators and GNU version options
    (``GPL-3.0-only AND MIT`` and ``MIT OR GPL-3.0-or-later``: yes)."""
    def ids(expr: str) -> set[str]:
        out = set()
        for lid in split_expression(canonical_spdx(expr))[0]:
            lid = lid.split(" WITH ", 1)[0].lower().removesuffix("+")
            out.add(lid.removesuffix("-only").removesuffix("-or-later"))
        return out

    return ids(a) == ids(b)


def is_spdx_expression(text: str) -> bool:
    """Whether ``text`` is a valid SPDX license expression made of known ids (or ``LicenseRef-…``)."""
    from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

    try:
        canonicalize_license_expression(text)
    except InvalidLicenseExpression:
        return False
    return True


#: a license file holding nothing but a license's name ("Apache 2.0", "MIT License", "BSD-3-Clause")
_NAME_ONLY: dict[str, str] = {
    "apache 2 0": "Apache-2.0", "apache license 2 0": "Apache-2.0", "apache license version 2 0": "Apache-2.0",
    "apache 2": "Apache-2.0", "apache software license 2 0": "Apache-2.0", "mit": "MIT", "mit license": "MIT",
    "the mit license": "MIT", "bsd 3 clause": "BSD-3-Clause", "bsd 3 clause license": "BSD-3-Clause",
    "bsd 2 clause": "BSD-2-Clause", "bsd 2 clause license": "BSD-2-Clause", "isc": "ISC", "isc license": "ISC",
    "unlicense": "Unlicense", "the unlicense": "Unlicense", "cc0 1 0": "CC0-1.0", "mpl 2 0": "MPL-2.0",
    "zlib": "Zlib", "0bsd": "0BSD", "bsl 1 0": "BSL-1.0", "psf 2 0": "PSF-2.0",
}


def name_only_license(text: str) -> str | None:
    """The license of a file that only names it (ray's LICENSE.txt is the single line "Apache 2.0")."""
    if len(text) > 200:
        return None
    return _NAME_ONLY.get(normalize(text).strip())


def spdx_headers(text: str) -> list[str]:
    """The expressions of ``SPDX-License-Identifier:`` lines in ``text`` (in order, duplicates removed), in current
    SPDX spelling (``GPL-2.0+`` → ``GPL-2.0-or-later``)."""
    out: list[str] = []
    for m in _SPDX_HEADER.finditer(text):
        expr = canonical_spdx(" ".join(m.group(1).split()))
        if expr and expr not in out:
            out.append(expr)
    return out


def is_primary_license_file(path: str) -> bool:
    """A top-level LICENSE/LICENCE/COPYING/UNLICENSE file (any suffix: ``LICENSE.txt``, ``LICENSE-MIT``)."""
    return "/" not in path and bool(_PRIMARY_NAMES.match(path))


@dataclass
class RepoLicense:
    """What was found for one repository."""

    expression: str | None  # SPDX expression, e.g. "MIT", "Apache-2.0 OR BSD-2-Clause"; None = unknown
    licenses: list[str] = field(default_factory=list)  # the primary licenses, in file order
    operator: str = "AND"  # how they combine: AND (all apply) or OR (any may be chosen)
    bundled: list[str] = field(default_factory=list)  # licenses of bundled third-party parts
    files: list[str] = field(default_factory=list)  # the license files read

    def as_meta(self) -> dict[str, object]:
        meta: dict[str, object] = {"license": self.expression or "unknown"}
        if self.licenses:
            meta["licenses"] = self.licenses
        if self.bundled:
            meta["licenses_bundled"] = self.bundled
        if self.files:
            meta["license_files"] = self.files
        return meta


def detect_repo_license(texts: Iterable[tuple[str, str]]) -> RepoLicense:
    """The license of a repository from its primary license files, given as ``(name, text)`` pairs."""
    primary: list[str] = []
    bundled: list[str] = []
    files: list[str] = []
    dual = False
    for name, text in texts:
        files.append(name)
        matches = match_licenses(text)
        if not matches:
            named = name_only_license(text)
            if named is not None:
                if named not in primary:
                    primary.append(named)
                continue
            norm = normalize(text)
            if len(norm) <= _DUAL_MAX_CHARS and _DUAL.search(norm):
                dual = True
            for expr in spdx_headers(text):  # a file holding only an SPDX identifier
                primary.extend(e for e in split_expression(expr)[0] if e not in primary)
            continue
        if matches[0].spdx not in primary:
            primary.append(matches[0].spdx)
        for m in matches[1:]:
            if m.spdx not in primary and m.spdx not in bundled:
                bundled.append(m.spdx)
    bundled = [b for b in bundled if b not in primary]
    if not primary:
        return RepoLicense(None, [], "AND", bundled, files)
    op = "OR" if dual and len(primary) > 1 else "AND"
    return RepoLicense(f" {op} ".join(primary), primary, op, bundled, files)


_EXPR_TOKEN = re.compile(r"\(|\)|\bAND\b|\bOR\b|\bWITH\b|[A-Za-z0-9.+\-]+", re.IGNORECASE)


def split_expression(expr: str) -> tuple[list[str], str]:
    """The license ids of a flat SPDX expression and its operator (``OR`` if any top-level ``OR``).

    ``WITH`` exceptions stay attached to their license (``Apache-2.0 WITH LLVM-exception``). Parenthesised
    sub-expressions are flattened; that is exact for ``A OR B`` and ``A AND B`` and conservative for mixtures
    (see :func:`expression_allowed`).
    """
    ids: list[str] = []
    op = "AND"
    tokens = _EXPR_TOKEN.findall(expr)
    i = 0
    while i < len(tokens):
        t = tokens[i]
        u = t.upper()
        if u in ("(", ")"):
            pass
        elif u == "OR":
            op = "OR"
        elif u == "AND":
            pass
        elif u == "WITH" and ids and i + 1 < len(tokens):
            ids[-1] = f"{ids[-1]} WITH {tokens[i + 1]}"
            i += 1
        else:
            ids.append(t)
        i += 1
    return ids, op


def expression_allowed(expr: str, allowed: Iterable[str]) -> bool:
    """Whether code under ``expr`` may be used when only ``allowed`` licenses are acceptable.

    ``A OR B``: one allowed choice suffices; ``A AND B``: every part must be allowed; ``A WITH exception``: as
    ``A``. A mixture (``A AND (B OR C)``) is evaluated properly by :func:`_evaluate`.
    """
    allowed_set = {a.lower() for a in allowed}
    try:
        return _evaluate(_EXPR_TOKEN.findall(expr), allowed_set)
    except (IndexError, ValueError):
        return False


def _evaluate(tokens: list[str], allowed: set[str]) -> bool:
    """Evaluate an SPDX expression (precedence: WITH > AND > OR) to whether it is allowed."""
    pos = 0

    def parse_or() -> bool:
        nonlocal pos
        value = parse_and()
        while pos < len(tokens) and tokens[pos].upper() == "OR":
            pos += 1
            value = parse_and() or value
        return value

    def parse_and() -> bool:
        nonlocal pos
        value = parse_atom()
        while pos < len(tokens) and tokens[pos].upper() == "AND":
            pos += 1
            value = parse_atom() and value
        return value

    def parse_atom() -> bool:
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "(":
            value = parse_or()
            if tokens[pos] != ")":
                raise ValueError("unbalanced")
            pos += 1
            return value
        if t in (")",) or t.upper() in ("AND", "OR", "WITH"):
            raise ValueError(f"unexpected {t}")
        if pos < len(tokens) and tokens[pos].upper() == "WITH":
            pos += 2  # an exception only adds permissions
        lid = t.lower().removesuffix("+")
        return lid in allowed or lid.removesuffix("-only") in allowed or lid.removesuffix("-or-later") in allowed

    value = parse_or()
    if pos != len(tokens):
        raise ValueError("trailing tokens")
    return value


# -- installed packages -----------------------------------------------------------------------------------------------
_DIST_INFO_CACHE: dict[str, dict[str, Path]] = {}


def dist_info_for(package_dir: Path) -> Path | None:
    """The ``*.dist-info`` folder that installed the package at ``package_dir`` (a site-packages child), if any.

    A dist-info owns a top-level name when its ``top_level.txt`` lists it or its ``RECORD`` has files under it.
    """
    parent = package_dir.parent
    key = str(parent)
    owners = _DIST_INFO_CACHE.get(key)
    if owners is None:
        owners = {}
        try:
            infos = sorted(parent.glob("*.dist-info"))
        except OSError:
            infos = []
        for info in infos:
            names: set[str] = set()
            try:
                top = info / "top_level.txt"
                if top.is_file():
                    names.update(n.strip() for n in top.read_text(errors="replace").splitlines() if n.strip())
                record = info / "RECORD"
                if record.is_file():
                    for line in record.read_text(errors="replace").splitlines():
                        head = line.split(",", 1)[0].split("/", 1)
                        if len(head) == 2 and not head[0].endswith((".dist-info", ".data")) and head[0] != "..":
                            names.add(head[0])
                        elif len(head) == 1 and head[0].endswith(".py"):  # a single-module distribution
                            names.add(head[0])
            except OSError:
                continue
            for n in names:
                owners.setdefault(n, info)
        if len(_DIST_INFO_CACHE) > 64:
            _DIST_INFO_CACHE.clear()
        _DIST_INFO_CACHE[key] = owners
    return owners.get(package_dir.name)


def dist_info_license_files(info: Path) -> list[Path]:
    """The primary license files of an installed distribution (PEP 639 ``licenses/`` top level, or legacy)."""
    out: list[Path] = []
    for folder in (info / "licenses", info):
        if folder.is_dir():
            out.extend(p for p in sorted(folder.iterdir()) if p.is_file() and is_primary_license_file(p.name))
    return out


def dist_info_declared(info: Path) -> tuple[str | None, bool]:
    """The license a distribution *declares* in METADATA and whether it is an SPDX expression.

    ``License-Expression`` (PEP 639, SPDX by definition; in current spelling) wins; else a short free-text
    ``License`` field."""
    try:
        with open(info / "METADATA", encoding="utf-8", errors="replace") as f:
            declared = None
            for line in f:
                if not line.strip():
                    break  # end of headers
                if line.startswith("License-Expression:"):
                    value = line.split(":", 1)[1].strip()
                    if value:
                        return canonical_spdx(value), True
                if line.startswith("License:") and declared is None:
                    value = line.split(":", 1)[1].strip()
                    if value and len(value) <= 40 and value.upper() != "UNKNOWN":
                        declared = value
            return declared, False
    except OSError:
        return None, False

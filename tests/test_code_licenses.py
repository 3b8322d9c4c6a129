"""License detection (SPDX matcher) and the permissive allowlist filter.

The real-data check: every installed distribution in this virtualenv that declares a single license with
``License-Expression`` (PEP 639, SPDX) is compared with what the matcher finds in its license files."""

from __future__ import annotations

import sys
from pathlib import Path

from assay.core.record import Record
from assay.harvest.code.license_filter import CodeLicenseFilter
from assay.harvest.code.licenses import (PERMISSIVE, canonical_spdx, detect_repo_license, dist_info_declared,
                                         dist_info_license_files, expression_allowed, match_licenses, same_licenses,
                                         spdx_headers, split_expression)

SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

APACHE_NOTICE = """Copyright 2020 Example Inc.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License."""
GPL3_NOTICE = """This program is free software: you can redistribute it and/or modify
it under the terms of the GNU General Public License as published by
the Free Software Foundation, either version 3 of the License, or
(at your option) any later version."""
BSD2 = """Copyright (c) 2020, Someone. All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution."""
BSD3 = BSD2 + """
3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission."""
ISC = """Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies."""
UNLICENSE = "This is free and unencumbered software released into the public domain.\n\nAnyone is free to copy"


def test_key_phrases_identify_common_licenses():
    assert [m.spdx for m in match_licenses(APACHE_NOTICE)] == ["Apache-2.0"]
    assert [m.spdx for m in match_licenses(GPL3_NOTICE)] == ["GPL-3.0-or-later"]
    assert [m.spdx for m in match_licenses(GPL3_NOTICE.replace(", or\n(at your option) any later version", ""))] \
        == ["GPL-3.0-only"]
    assert [m.spdx for m in match_licenses(BSD2)] == ["BSD-2-Clause"]
    assert [m.spdx for m in match_licenses(BSD3)] == ["BSD-3-Clause"]
    assert [m.spdx for m in match_licenses(ISC)] == ["ISC"]
    assert [m.spdx for m in match_licenses(UNLICENSE)] == ["Unlicense"]
    assert match_licenses("All rights reserved. Do not copy.") == []
    # layout, case and British spelling do not matter
    assert [m.spdx for m in match_licenses(APACHE_NOTICE.upper().replace("LICENSE", "LICENCE").replace(" ", "\n"))] \
        == ["Apache-2.0"]


def test_repo_license_primary_bundled_and_dual():
    bundled = detect_repo_license([("LICENSE.txt", BSD3 + "\n\n----\nbundled libgfortran:\n" + GPL3_NOTICE)])
    assert bundled.expression == "BSD-3-Clause" and bundled.bundled == ["GPL-3.0-or-later"]
    dual = detect_repo_license([
        ("LICENSE", "This software is made available under the terms of *either* of the licenses found in "
                    "LICENSE.APACHE or LICENSE.BSD."),
        ("LICENSE.APACHE", APACHE_NOTICE), ("LICENSE.BSD", BSD2)])
    assert dual.expression == "Apache-2.0 OR BSD-2-Clause"
    both = detect_repo_license([("COPYING", GPL3_NOTICE), ("LICENSE-MIT", ISC)])
    assert both.expression == "GPL-3.0-or-later AND ISC"
    assert detect_repo_license([("LICENSE.txt", "Apache 2.0\n")]).expression == "Apache-2.0"
    assert detect_repo_license([("LICENSE", "proprietary, all rights reserved")]).expression is None


def test_spdx_headers_and_expressions():
    src = "// SPDX-License-Identifier: Apache-2.0 OR MIT\nint x;\n/* SPDX-License-Identifier: GPL-2.0-only */\n"
    assert spdx_headers(src) == ["Apache-2.0 OR MIT", "GPL-2.0-only"]
    assert split_expression("(MIT OR Apache-2.0) AND Zlib") == (["MIT", "Apache-2.0", "Zlib"], "OR")
    allow = PERMISSIVE
    assert expression_allowed("MIT", allow) and expression_allowed("Apache-2.0 OR GPL-3.0-only", allow)
    assert not expression_allowed("MIT AND GPL-3.0-only", allow)
    assert expression_allowed("MPL-2.0 OR (Apache-2.0 AND MIT)", allow)
    assert not expression_allowed("MPL-2.0 AND (Apache-2.0 OR MIT)", allow)
    assert expression_allowed("Apache-2.0 WITH LLVM-exception", allow)
    assert not expression_allowed("((MIT", allow)  # malformed: not allowed, no crash


def test_current_spdx_ids_not_deprecated_ones():
    assert [canonical_spdx(e) for e in ("GPL-3.0", "GPL-2.0+", "lgpl-2.1", "mit or apache-2.0", "MIT/Apache-2.0",
                                        "GPL-2.0-with-classpath-exception", "apache-2.0 with llvm-exception",
                                        "(MIT OR Apache-2.0) AND Zlib", "LicenseRef-Acme")] == [
        "GPL-3.0-only", "GPL-2.0-or-later", "LGPL-2.1-only", "MIT OR Apache-2.0", "MIT OR Apache-2.0",
        "GPL-2.0-only WITH Classpath-exception-2.0", "Apache-2.0 WITH LLVM-exception", "(MIT OR Apache-2.0) AND Zlib",
        "LicenseRef-Acme"]
    gpl3_text = "GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n\nEveryone is permitted to copy"
    assert [m.spdx for m in match_licenses(gpl3_text)] == ["GPL-3.0-only"]
    assert spdx_headers("/* SPDX-License-Identifier: GPL-2.0+ */") == ["GPL-2.0-or-later"]
    assert same_licenses("GPL-3.0-only AND MIT", "MIT OR GPL-3.0-or-later")
    assert not same_licenses("MIT", "Apache-2.0")


def test_license_filter_uses_file_headers_over_repo_license():
    step = CodeLicenseFilter()
    recs = [
        Record("a", "x", "code", {"license": "MIT"}),
        Record("b", "x", "code", {"license": "GPL-3.0-or-later"}),
        Record("c", "x", "code", {"license": "MIT", "spdx": "GPL-2.0-only"}),  # a GPL file in an MIT repository
        Record("d", "x", "code", {"license": "unknown", "spdx": "Apache-2.0"}),
        Record("e", "x", "code", {"license": "unknown"}),
        Record("f", "x", "code", {"license": "Apache-2.0 OR BSD-2-Clause"}),
    ]
    step.process_batch(recs, None)  # type: ignore[arg-type]
    assert {r.id: (r.drop[1] if r.drop else None) for r in recs} == {
        "a": None, "b": "license_not_allowed", "c": "license_not_allowed", "d": None, "e": "license_unknown",
        "f": None}
    keep = CodeLicenseFilter(keep_unknown=True, allow=["GPL-3.0"], use_file_headers=False)
    recs2 = [Record("a", "x", "code", {"license": "MIT"}), Record("b", "x", "code", {"license": "GPL-3.0-only"}),
             Record("e", "x", "code", {"license": "unknown"})]
    keep.process_batch(recs2, None)  # type: ignore[arg-type]
    assert [r.drop[1] if r.drop else None for r in recs2] == ["license_not_allowed", None, None]


def test_matcher_agrees_with_declared_licenses_of_installed_packages():
    compared, agree, disagreements = 0, 0, []
    for info in sorted(SITE.glob("*.dist-info")):
        declared, is_expression = dist_info_declared(info)
        files = dist_info_license_files(info)
        if not (declared and is_expression and files) or " " in declared:
            continue  # only single-id SPDX declarations with license files
        found = detect_repo_license((f.name, f.read_text(errors="replace")) for f in files)
        compared += 1
        if found.licenses and found.licenses[0] == declared:
            agree += 1
        else:
            disagreements.append((info.name, declared, found.expression))
    assert compared >= 20, compared
    assert agree / compared >= 0.9, disagreements

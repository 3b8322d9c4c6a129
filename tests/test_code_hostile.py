"""Hostile input: pathological texts stay linear (no regex blow-ups), odd repositories are counted skips."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from assay.core.record import Record
from assay.core.step import StepContext
from assay.harvest.code.comments import comment_chars
from assay.harvest.code.filters import CodeFilter
from assay.harvest.code.imports import dependency_edges, js_imports, python_imports
from assay.harvest.code.ingest import CodeIngest
from assay.harvest.code.licenses import match_licenses, spdx_headers
from assay.harvest.code.packing import RepoPack
from assay.harvest.code.secrets import SecretRedactor
from assay.harvest.code.tokens import regex_tokens

#: each repeated to ~150k characters: unclosed constructs, runs of delimiters, keywords without their values
UNITS = ["<!--", "<script>", "<style x=", "<", "import (\n", "from . import (\n", "import ", "import {", "export {",
         "require(", '"""', "'''", "'", '"', "/*", "\\", "#include \"", "password = \"", "aws_secret_key = ",
         "-----BEGIN RSA PRIVATE KEY-----\n", "QUJD" * 16 + "\n", "http://a:b@", "1.2.3.", ":", "@", "xoxb-1-", "eyJ",
         "SPDX-License-Identifier: ", "\n", "\t", "a" * 7]


def test_import_scope_walks_stay_linear():
    """Finding which imports run at import time walks back to enclosing headers: imports with ever smaller
    indentation (each walk would pass every line above) must not make it quadratic (was 30 s for 2 MB)."""
    import time

    texts = ["\n".join(" " * (2000 - i) + "import x" for i in range(2000)),
             "\n".join(") -> None:\n        import x" for _ in range(50_000)),
             "class A:\n" + "    x:\n" * 100_000 + "        import y\n"]
    for text in texts:
        started = time.process_time()
        python_imports(text, runtime_only=True)
        assert time.process_time() - started < 5, text[:40]


@pytest.mark.timeout(240)  # a quadratic pattern takes many minutes on these sizes; linear ones take seconds
def test_pathological_texts_are_processed_in_linear_time():
    redactor = SecretRedactor(pii_types=["email", "ip_address"])
    for unit in UNITS:
        text = unit * (150_000 // len(unit))
        redactor.redact(text, "Python")
        redactor.redact(text, "Shell")
        for lang in ("Python", "JavaScript", "SQL", "HTML", "Lua", "Haskell", "CSS"):
            comment_chars(text, lang)
        python_imports(text)
        js_imports(text)
        dependency_edges({"a.py": ("Python", text), "b.ts": ("TypeScript", text), "c.go": ("Go", text),
                          "go.mod": (None, "module x\n"), "d.c": ("C", text)})
        regex_tokens(text)
        match_licenses(text)
        spdx_headers(text)
        for lang in ("HTML", "Python", "JSON"):
            CodeFilter().process_batch([Record("x", text, "code", {"language": lang})], None)  # type: ignore[arg-type]


def test_odd_repositories_give_json_safe_records(tmp_path: Path):
    repo = tmp_path / "odd"
    (repo / "deep" / ("d" * 50) / ("e" * 50) / ("f" * 50)).mkdir(parents=True)
    (repo / "deep" / ("d" * 50) / ("e" * 50) / ("f" * 50) / "x.py").write_text("# deep\nx = 1\n")
    os.makedirs(repo, exist_ok=True)
    with open(os.path.join(os.fsencode(repo), b"bad\xffname.py"), "wb") as f:
        f.write(b"y = 2\n")
    (repo / "new\nline.py").write_text("z = 3\n")
    (repo / "huge_line.py").write_text("a = '" + "x" * 500_000 + "'\n")
    (repo / "nul.py").write_bytes(b"a = 1\n\x00\x00")
    (repo / "bom.py").write_bytes(b"\xef\xbb\xbfw = 4\n")
    os.symlink("/etc/passwd", repo / "escape.py")
    os.symlink(repo / "loop", repo / "loop")
    out = [r for b in CodeIngest().process([[Record("r", str(repo), "code")]], StepContext()) for r in b]
    for r in out:
        orjson.loads(r.to_json())  # every record serialises
    by = {r.meta["path"]: r for r in out}
    assert by["bad\ufffdname.py"].drop == ("code_ingest", "bad_path")
    assert by["escape.py"].drop == ("code_ingest", "symlink") and by["loop"].drop == ("code_ingest", "symlink")
    assert by["nul.py"].drop == ("code_ingest", "binary")
    assert by["bom.py"].content == "w = 4\n"
    assert by["new\nline.py"].drop is None
    assert by[f"deep/{'d' * 50}/{'e' * 50}/{'f' * 50}/x.py"].drop is None
    # the filters and packing cope with what is kept, including a 500k-character line
    kept = [r for r in out if r.drop is None]
    CodeFilter().process_batch(kept, None)  # type: ignore[arg-type]
    assert by["huge_line.py"].drop == ("code_filter", "max_line_length")
    line = by["huge_line.py"].copy()
    line.drop = None
    samples = [r for b in RepoPack(max_tokens=64).process([[line]], StepContext()) for r in b]
    assert len(samples) > 100 and all(s.meta["tokens"] <= 64 for s in samples)
    for s in samples:
        orjson.loads(s.to_json())
    assert "".join(s.content.split("\n", 2)[2] for s in samples).count("x") == 500_000  # split, nothing lost

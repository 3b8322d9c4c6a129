"""Every shell command the docs show runs verbatim: the fenced ```bash blocks of README.md and docs/*.md.

One test per page. A page's blocks run in order with ``bash -euo pipefail`` in one scratch folder that holds the
repository's ``recipes/``, ``samples/``, ``tests/data/`` and ``.venv`` (symlinks) at the same relative paths as the
repository root, so ``.venv/bin/assay run recipes/quickstart.yaml -i samples/python-docs -o out/x`` runs as written
and a later block may use files an earlier one made. ``.venv/bin`` is first on PATH (``assay …`` works too).

Markers, an HTML comment on the line just before a fence (invisible on GitHub):

* ``<!-- docs-test: skip-block REASON -->`` before a ```bash block: not run (``make`` targets that create the
  venv this test runs in, a cluster, a bucket). Keep them rare; every one is listed by ``test_skipped_blocks``.
* ``<!-- docs-test: fails -->`` before a ```bash block: the block shows an error, so it must exit non-zero.
* ``<!-- docs-test: output -->`` before a ```text block that follows a ```bash block: every non-empty line of it
  must appear in that block's output (stdout + stderr, whitespace collapsed): examples of output cannot drift.

A block that needs a server or an API key starts a local stand-in itself (and stops it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from testutil import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = ("recipes", "samples", ".venv", "tests/data")  # what a block may use, at the repository's relative paths
MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip-block|fails|output)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
BLOCK_TIMEOUT = 300  # seconds; the longest blocks (a recipe over the bundled sample) take one or two minutes
MAX_SKIPPED = 8  # skip markers across all pages: raise only with a reason in the review


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None = None  # skip-block | fails | output
    reason: str = ""


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page with the docs-test marker just before each (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: code fence is never closed")
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        blocks.append(Block(path.name if path.parent == ROOT else f"docs/{path.name}", start + 1, lang,
                            "\n".join(lines[start + 1:j]), marker.group(1) if marker else None,
                            marker.group(2) if marker else ""))
        i = j + 1
    return blocks


def _scratch(tmp_path: Path) -> Path:
    for rel in LINKED:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ROOT / rel, target_is_directory=True)
    return tmp_path


def _flat(text: str) -> str:
    return " ".join(text.split())


def run_page(path: Path, workdir: Path) -> None:
    blocks = parse_blocks(path)
    env = {**os.environ, "PATH": f"{workdir / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "HOME": str(workdir / "home"), "ASSAY_PROGRESS_SECONDS": "600"}
    (workdir / "home").mkdir(exist_ok=True)
    last_output: str | None = None
    for n, b in enumerate(blocks, 1):
        where = f"{b.page}, block {n} (line {b.line})"
        if b.marker == "output":
            assert last_output is not None, f"{where}: an output block must follow a bash block"
            missing = [ln for ln in b.text.splitlines() if ln.strip() and _flat(ln) not in _flat(last_output)]
            assert not missing, (f"{where}: the output shown is not what the command prints; missing:\n"
                                 + "\n".join(missing) + f"\n--- actual output ---\n{last_output[-3000:]}")
            continue
        if b.lang != "bash" or b.marker == "skip-block":
            continue
        p = _run_block(b.text, workdir, env, where)
        last_output = p.stdout + p.stderr
        if b.marker == "fails":
            assert p.returncode != 0, f"{where}: documented as failing, but it exited 0:\n{b.text}"
        else:
            assert p.returncode == 0, (f"{where} exited {p.returncode}:\n{b.text}\n--- stdout ---\n{p.stdout[-2000:]}"
                                       f"\n--- stderr ---\n{p.stderr[-3000:]}")


def _run_block(script: str, workdir: Path, env: dict[str, str], where: str) -> subprocess.CompletedProcess:
    """Run one block in its own process group; whatever it leaves running (a server without its `kill`) is stopped
    afterwards, and a block that never ends fails with a hint instead of hanging the suite."""
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{where} did not finish in {BLOCK_TIMEOUT} s (a server started in the foreground? start "
                             f"it with & and stop it in the block):\n{script}\n--- stderr ---\n{err[-2000:]}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_bash_block_runs(page: Path, tmp_path: Path) -> None:
    run_page(page, _scratch(tmp_path))


def test_skipped_blocks() -> None:
    """Skip markers are listed (run pytest with -s to see them), give a reason, sit before a bash block, and stay
    rare."""
    skipped = []
    for page in PAGES:
        for b in parse_blocks(page):
            if b.marker == "skip-block":
                assert b.lang == "bash", f"{b.page}:{b.line}: skip-block marks a bash block, not {b.lang!r}"
                assert b.reason, f"{b.page}:{b.line}: skip-block needs a reason"
                skipped.append(f"{b.page}:{b.line}: {b.reason}")
            if b.marker == "output":
                assert b.lang == "text", f"{b.page}:{b.line}: an output marker goes before a ```text block"
    print(f"{len(skipped)} bash blocks not run:\n" + "\n".join(skipped))
    assert len(skipped) <= MAX_SKIPPED, skipped


def test_the_runner_catches_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks themselves: a failing command, a wrong output example, a `fails` block that succeeds, a block
    that never ends."""
    monkeypatch.setattr(f"{__name__}.BLOCK_TIMEOUT", 2)
    page = tmp_path / "page.md"
    work = _scratch(tmp_path / "w")
    cases = {
        "```bash\nfalse\n```\n": "exited 1",
        "```bash\necho hello\n```\n<!-- docs-test: output -->\n```text\nhello world\n```\n": "the output shown is not what the command prints",
        "<!-- docs-test: fails -->\n```bash\ntrue\n```\n": "documented as failing",
        "```bash\nsleep 60\n```\n": "did not finish in 2 s",
        "<!-- docs-test: skip-block needs a cluster -->\n```bash\nfalse\n```\n```bash\necho ok\n```\n": None,
    }
    for text, expected in cases.items():
        page.write_text(text)
        if expected is None:
            run_page(page, work)
            continue
        with pytest.raises(AssertionError, match=re.escape(expected)):
            run_page(page, work)

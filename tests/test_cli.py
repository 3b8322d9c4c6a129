"""The command line, end to end in subprocesses, as a user runs it."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from testutil import ROOT, SAMPLE, assay_cli, read_output, write_jsonl


def test_steps_lists_and_describes():
    out = assay_cli("steps").stdout
    for name in ("length_filter", "sample"):
        assert name in out
    one = assay_cli("steps", "length_filter").stdout
    assert "min_chars" in one and "action" in one
    bad = assay_cli("steps", "lenght_filter", check=False)
    assert bad.returncode == 2 and "did you mean 'length_filter'" in bad.stderr


def test_run_inspect_report(tmp_path: Path):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"row {i} " * (i % 7 + 1), "url": f"u{i}"} for i in range(300)])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: cli\nsteps:\n  - length_filter: {min_chars: 20}\n")
    r = assay_cli("run", str(recipe), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"), "-w", "1")
    assert "report:" in r.stderr
    stats = orjson.loads((tmp_path / "out" / "stats.json").read_bytes())
    assert stats["output"]["records"] == len(read_output(tmp_path / "out")) > 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in page and "Funnel" in page and "too_short" in page and "<script" not in page
    ins = assay_cli("inspect", str(tmp_path / "out"), "-n", "2").stdout
    assert "lineage: length_filter@1" in ins
    full = assay_cli("inspect", str(tmp_path / "out"), "-n", "2", "--full").stdout.strip().splitlines()
    assert len(full) == 2 and orjson.loads(full[0])["lineage"][0]["step"] == "length_filter"


def test_bad_recipe_is_a_clear_error_not_a_traceback(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - length_filter: {min_char: 3}\n")
    r = assay_cli("run", str(recipe), "-i", "x.jsonl", "-o", str(tmp_path / "o"), check=False)
    assert r.returncode == 2
    assert "unknown key 'min_char'; did you mean 'min_chars'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_quickstart_demo_on_bundled_sample(tmp_path: Path):
    """What `make demo` runs: the quickstart recipe over the bundled WARC sample."""
    out = tmp_path / "qs"
    assay_cli("run", str(ROOT / "recipes" / "quickstart.yaml"), "-i", str(SAMPLE), "-o", str(out), "-w", "2",
              timeout=600)
    stats = orjson.loads((out / "stats.json").read_bytes())
    assert stats["input"]["records_read"] == 308
    assert 30 < stats["output"]["records"] < 308  # filters keep some and drop some
    assert stats["output"]["records"] + stats["output"]["rejected"] == 308
    assert (out / "report.html").exists() and list((out / "rejected").glob("part-*"))
    recs = read_output(out)
    assert all(r["modality"] == "text" and r["meta"]["url"].startswith("https://") for r in recs)
    assert all(r["lineage"][0]["step"] == "extract" for r in recs)
    # markup is gone (the docs quote HTML in code examples, so look for the pages' own Sphinx markup)
    assert not any(re.search(r'class="(headerlink|section|highlight)|<!DOCTYPE|<meta ', r["content"]) for r in recs)

"""The command line, end to end in subprocesses, as a user runs it."""

from __future__ import annotations

import os
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
    assert (out / "report.html").exists() and list((out / "rejected").glob("part-*")) and list(out.glob("data/train-*"))
    recs = read_output(out)
    assert all(r["modality"] == "text" and r["meta"]["url"].startswith("https://") for r in recs)
    assert all(r["lineage"][0]["step"] == "extract" for r in recs)
    # markup is gone (the docs quote HTML in code examples, so look for the pages' own Sphinx markup)
    assert not any(re.search(r'class="(headerlink|section|highlight)|<!DOCTYPE|<meta ', r["content"]) for r in recs)


# -- a newcomer's first hour: one-line errors, a safe --overwrite, progress in logs ---------------------------------

def _tiny_run_inputs(tmp_path: Path, n: int = 40, dedup: bool = False) -> tuple[Path, Path]:
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": f"document {i % 30} with a few words"} for i in range(n)])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: tiny\nsteps:\n  - length_filter: {min_chars: 3}\n" + ("  - exact_dedup\n" if dedup else ""))
    return recipe, data


def _one_line_error(p, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    for needle in needles:
        assert needle in errors[0], (needle, p.stderr)


def test_overwrite_never_deletes_a_folder_that_holds_no_assay_run(tmp_path: Path):
    recipe, data = _tiny_run_inputs(tmp_path)
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "thesis.txt").write_text("two years of work")
    (d / "sub" / "notes.md").write_text("more work")
    p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(d), "--overwrite", "-w", "1", check=False)
    _one_line_error(p, "holds no Assay run", "thesis.txt")
    assert (d / "thesis.txt").read_text() == "two years of work" and (d / "sub" / "notes.md").exists()
    assert sorted(x.name for x in d.iterdir()) == ["sub", "thesis.txt"]  # nothing written either


def test_overwrite_replaces_a_previous_run_but_not_files_put_into_it(tmp_path: Path):
    recipe, data = _tiny_run_inputs(tmp_path)
    out = tmp_path / "out"
    assay_cli("run", str(recipe), "-i", str(data), "-o", str(out), "-w", "1")
    recipe.write_text("name: tiny2\nsteps:\n  - length_filter: {min_chars: 25}\n")
    assay_cli("run", str(recipe), "-i", str(data), "-o", str(out), "-w", "1", "--overwrite")
    assert orjson.loads((out / "stats.json").read_bytes())["recipe"] == "tiny2"
    (out / "my-notes.txt").write_text("mine")
    p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(out), "-w", "1", "--overwrite", check=False)
    _one_line_error(p, "my-notes.txt")
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "stats.json").exists()


def test_output_that_is_a_file_is_a_one_line_error(tmp_path: Path):
    recipe, data = _tiny_run_inputs(tmp_path)
    f = tmp_path / "afile"
    f.write_text("keep me")
    _one_line_error(assay_cli("run", str(recipe), "-i", str(data), "-o", str(f), check=False), "is a file")
    _one_line_error(assay_cli("run", str(recipe), "-i", str(data), "-o", str(f / "sub"), check=False),
                    "cannot create the --output folder")
    assert f.read_text() == "keep me"


def test_workers_below_one_are_refused(tmp_path: Path):
    recipe, data = _tiny_run_inputs(tmp_path)
    for w in ("0", "-3"):
        p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(tmp_path / f"o{w}"), "-w", w, check=False)
        _one_line_error(p, "--workers must be at least 1", f"got {w}")
        assert not (tmp_path / f"o{w}").exists()


def test_ray_address_without_a_cluster_is_a_one_line_error(tmp_path: Path):
    recipe, data = _tiny_run_inputs(tmp_path)
    # "auto" finds a cluster through TMPDIR/ray/ray_current_cluster: a temporary folder of the test's own keeps it from
    # finding a cluster another test (or another pytest-xdist worker) runs at the same time
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")} | {"TMPDIR": str(tmp)}
    p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(tmp_path / "o"), "-e", "ray", "--ray-address", "auto",
                  "-w", "1", check=False, env=env)
    _one_line_error(p, "cannot connect to the Ray cluster at auto")


def test_ray_reduce_resources_are_checked_before_anything_runs(tmp_path: Path):
    recipe, data = _tiny_run_inputs(tmp_path)
    for extra, message in ((["--ray-reduce-resources", "big=1"], "--ray-reduce-resources is for the Ray executor"),
                           (["-e", "ray", "--ray-reduce-resources", "big"], "'big' is not NAME=AMOUNT"),
                           (["-e", "ray", "--ray-reduce-resources", "memory=lots"], "'lots' is not an amount")):
        p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(tmp_path / "o"), *extra, check=False)
        _one_line_error(p, message)
        assert not (tmp_path / "o").exists()


def test_core_install_says_which_extra_to_install(tmp_path: Path):
    """A core install (no extras) running the quickstart: resiliparse is made unimportable in every process of the
    run (a sitecustomize on PYTHONPATH, inherited by the spawned workers); the error names the extra, with its
    brackets intact (rich markup used to eat `[harvest]`)."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'resiliparse':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    p = assay_cli("run", str(ROOT / "recipes" / "quickstart.yaml"), "-i", str(SAMPLE), "-o", str(tmp_path / "qs"),
                  "-w", "2", check=False, env=env, timeout=300)
    _one_line_error(p, "'resiliparse'", "pip install 'assay[harvest]'")


def test_progress_lines_when_output_is_not_a_terminal_and_records_are_counted_once(tmp_path: Path):
    """Redirected output (a log file) still gets progress lines; a recipe with a global step runs two segments, and
    the second one re-reading the records from .assay/stages/ must not count them again (it showed 2x the input)."""
    recipe, data = _tiny_run_inputs(tmp_path, n=300, dedup=True)
    env = {**os.environ, "ASSAY_PROGRESS_SECONDS": "0.05"}
    p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(tmp_path / "o"), "-w", "1", env=env)
    lines = [line for line in p.stderr.splitlines() if "records read ·" in line]
    assert any(line.startswith("[1/2] length_filter → exact_dedup: 1/1 shards") for line in lines), p.stderr
    assert any(line.startswith("[2/2] exact_dedup: 1/1 shards") for line in lines), p.stderr
    counts = {int(re.search(r"([\d,]+) records read", line).group(1).replace(",", "")) for line in lines}
    assert max(counts) == 300, lines
    assert "\x1b[" not in p.stderr  # plain lines in a log, no terminal control codes


def test_a_long_job_prints_periodic_progress_into_a_log(tmp_path: Path):
    """One slow shard in this process (-w 1): while the job runs, a line every ASSAY_PROGRESS_SECONDS, with the live
    count of records read (a redirected run used to print nothing until the end)."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": f"record {i}"} for i in range(400)])
    recipe = tmp_path / "slow.yaml"
    recipe.write_text("name: slow\nbatch_size: 50\nsteps:\n  - test_slow: {seconds_per_batch: 0.25}\n")
    p = assay_cli("run", str(recipe), "-i", str(data), "-o", str(tmp_path / "o"), "-w", "1",
                  env={**os.environ, "ASSAY_PROGRESS_SECONDS": "0.3"})
    during = [line for line in p.stderr.splitlines() if line.startswith("[1/1] test_slow: 0/1 shards")]
    assert len(during) >= 3, p.stderr
    counts = [int(re.search(r"([\d,]+) records read", line).group(1).replace(",", "")) for line in during]
    assert counts == sorted(counts) and counts[-1] > counts[0], during
    assert any(line.startswith("[1/1] test_slow: 1/1 shards · 400 records read") for line in p.stderr.splitlines())


def test_inspect_n_below_one_is_refused(tmp_path: Path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello world"}])
    for n in ("0", "-2"):
        p = assay_cli("inspect", str(data), "-n", n, check=False)
        _one_line_error(p, "-n must be at least 1")
        assert "hello world" not in p.stdout

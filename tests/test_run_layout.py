"""The run folder's layout (assay.run.layout): kept records under data/ load the obvious way with Hugging Face datasets,
rejected/ follows the output format, the bookkeeping hides in .assay/ (stages removed once the run completes), a
run folder as input contributes its kept records only, and a folder of the older layout is read but never resumed."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
import yaml

from assay.core.errors import AssayError
from assay.core.recipe import Recipe
from assay.io.files import expand_inputs
from assay.run import layout
from assay.run.executor import LocalExecutor
from testutil import ROOT, SAMPLE, assay_cli, read_output

QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
WARCS = sorted(str(p) for p in SAMPLE.glob("*.warc.gz"))[:2]  # 2 of the 4 files: enough drops of every kind


def _recipe(fmt: str) -> Recipe:
    text = QUICKSTART.read_text().replace("format: jsonl.gz", f"format: {fmt}")
    assert f"format: {fmt}" in text
    return Recipe.from_text(text)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layout")
    out = {}
    for fmt in ("jsonl.gz", "parquet"):
        out[fmt] = base / fmt.replace(".", "-")
        LocalExecutor(1).run(_recipe(fmt), WARCS, str(out[fmt]))
    return out


def _stats(run: Path) -> dict:
    return orjson.loads((run / "stats.json").read_bytes())


@pytest.mark.parametrize("fmt,builder", [("jsonl.gz", "json"), ("parquet", "parquet")])
def test_load_dataset_takes_exactly_the_kept_records(runs: dict[str, Path], fmt: str, builder: str, tmp_path: Path):
    from datasets import load_dataset

    run = runs[fmt]
    stats = _stats(run)
    kept_ids = sorted(r["id"] for r in read_output(run))
    assert len(kept_ids) == stats["output"]["records"] > 0 and stats["output"]["rejected"] > 0
    cache = str(tmp_path / "hf")
    by_card = load_dataset(str(run), split="train", cache_dir=cache)
    by_dir = load_dataset(builder, data_dir=str(run), split="train", cache_dir=cache)
    assert sorted(by_card["id"]) == kept_ids and sorted(by_dir["id"]) == kept_ids
    rejected = load_dataset(str(run), "rejected", split="train", cache_dir=cache)
    assert len(rejected) == stats["output"]["rejected"]
    assert not set(rejected["id"]) & set(kept_ids)
    # rejected/ is in the output's format, each record with the step and reason that dropped it
    assert {p.name.rsplit("-", 1)[-1].split(".", 1)[1] for p in (run / "rejected").iterdir()} == {fmt}
    steps = ([d["step"] for d in rejected["drop"]] if builder == "json" else rejected["drop_step"])
    drops = {s["name"]: sum(s["drops"].values()) for s in stats["steps"] if s["drops"]}
    assert {s: steps.count(s) for s in set(steps)} == drops


def test_card_recipe_and_hidden_bookkeeping(runs: dict[str, Path]):
    run = runs["jsonl.gz"]
    text = (run / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert [(c["config_name"], c["data_files"][0]["path"]) for c in front["configs"]] == [
        ("default", "data/*"), ("rejected", "rejected/*")]
    stats = _stats(run)
    assert f"| {stats['output']['records']:,} records" in text and "# quickstart" in text
    assert Recipe.model_validate(yaml.safe_load((run / "recipe.yaml").read_text())).fingerprint() == \
        stats["fingerprint"]
    top = sorted(p.name for p in run.iterdir())
    assert top == [".assay", ".lock", "README.md", "data", "errors.jsonl", "recipe.yaml", "rejected", "stats.json"]
    assert sorted(p.name for p in (run / ".assay").iterdir()) == ["markers", "run.json", "state"]  # stages: gone
    assert [f"data/{Path(f).name}" for f in layout.output_files(str(run))] == stats["output"]["files"]


def test_rerun_of_a_complete_run_rewrites_nothing(runs: dict[str, Path]):
    run = runs["parquet"]
    before = {p: p.stat().st_mtime_ns for p in (run / "data").iterdir()}
    records, stats = read_output(run), _stats(run)
    notes: list[str] = []
    assert LocalExecutor(1).run(_recipe("parquet"), WARCS, str(run), notify=notes.append) == stats
    assert notes == [f"{run} holds this run, complete: nothing to do (--overwrite runs it again)"]
    assert {p: p.stat().st_mtime_ns for p in (run / "data").iterdir()} == before and _stats(run) == stats
    assert read_output(run) == records and not (run / ".assay" / "stages").exists()


def test_run_folder_as_input_gives_its_kept_records_only(runs: dict[str, Path], tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(runs["jsonl.gz"], run)
    # what a killed run leaves between segments must not be read either (it was: _stages/ files were input)
    stage = run / ".assay" / "stages" / "s0"
    stage.mkdir(parents=True)
    shutil.copy(next((run / "data").iterdir()), stage / "train-00000-0000.jsonl.gz")
    (run / "lerobot").mkdir()
    shutil.copy(next((run / "data").iterdir()), run / "lerobot" / "episodes.jsonl.gz")
    assert expand_inputs([str(run)]) == sorted(str(p) for p in (run / "data").iterdir())


def _to_old_layout(run: Path, old: Path) -> None:
    """What Assay wrote before data/ and .assay/: part-* at the top, _markers/, _state/, _run.json."""
    shutil.copytree(run, old)
    for f in sorted((old / "data").iterdir()):
        f.rename(old / f.name.replace("train-", "part-"))
    (old / "data").rmdir()
    for name in ("markers", "state"):
        (old / ".assay" / name).rename(old / f"_{name}")
    (old / ".assay" / "run.json").rename(old / "_run.json")
    shutil.rmtree(old / ".assay")
    (old / "README.md").unlink()
    (old / "recipe.yaml").unlink()


def test_old_layout_is_read_but_not_resumed(runs: dict[str, Path], tmp_path: Path):
    run, old = runs["jsonl.gz"], tmp_path / "old"
    _to_old_layout(run, old)
    kept = read_output(run)
    assert read_output(old) == kept  # output_files falls back to part-*
    assert [Path(f).name for f in expand_inputs([str(old)])] == sorted(p.name for p in old.glob("part-*"))
    assert len(layout.rejected_files(str(old))) == len(list((run / "rejected").iterdir()))
    shown = orjson.loads(assay_cli("inspect", str(old), "-n", "1", "--full").stdout)
    assert shown["id"] in {r["id"] for r in kept}
    with pytest.raises(AssayError, match=r"written by an older Assay.*--overwrite"):
        LocalExecutor(1).run(_recipe("jsonl.gz"), WARCS, str(old))
    assert sorted(p.name for p in old.glob("part-*"))  # untouched
    # --overwrite replaces it with a run of the current layout
    LocalExecutor(1).run(_recipe("jsonl.gz"), WARCS, str(old), overwrite=True)
    assert not list(old.glob("part-*")) and not list(old.glob("_*"))
    assert read_output(old) == kept


def test_old_layout_refusal_is_one_line_on_the_cli(runs: dict[str, Path], tmp_path: Path):
    old = tmp_path / "old"
    _to_old_layout(runs["jsonl.gz"], old)
    p = assay_cli("run", str(QUICKSTART), "-i", WARCS[0], "-o", str(old), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "written by an older Assay" in p.stderr and "--overwrite" in p.stderr


def test_annotate_import_of_a_run_folder_takes_its_kept_records(runs: dict[str, Path], tmp_path: Path):
    from annotate_support import make_database

    from assay.annotate import workflow

    run = tmp_path / "run"
    shutil.copytree(runs["parquet"], run)
    (run / ".assay" / "stages" / "s0").mkdir(parents=True)  # as a killed run leaves it
    shutil.copy(next((run / "data").iterdir()), run / ".assay" / "stages" / "s0" / "train-00000-0000.parquet")
    db, cleanup = make_database("sqlite", tmp_path)
    try:
        with db.write() as s:
            workflow.create_project(s, "docs", "rating")
        report = workflow.import_records(db, "docs", [str(run)])
    finally:
        cleanup()
    assert report.imported == _stats(run)["output"]["records"] and report.skipped == {} and not report.duplicates

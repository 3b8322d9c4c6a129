"""``assay push`` against a local stand-in of the Hugging Face Hub (tests/hub_standin.py): the real
``huggingface_hub`` client uploads, ``datasets.load_dataset(repo_id)`` reads back (both in child processes, with
HF_ENDPOINT at the stand-in and without the HF_HUB_OFFLINE the suite's embedding code sets in os.environ)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_standin import make_app
from testutil import SAMPLE, LoopbackLLMServer, assay_cli, free_port, read_output, uvicorn_thread, write_jsonl
from typer.testing import CliRunner

from assay.cli import app

TOKEN = "hf_push_test"
USER = "tester"
BOOKKEEPING = (".assay", "_markers", "_stages", "_state", "_run.json", ".lock", "llm-cache.sqlite")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("hub"), tokens={TOKEN: USER})
    with uvicorn_thread(app) as url:
        yield url, app.state.store


def _env(tmp: Path, endpoint: str | None, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT")}
    env["HF_HOME"] = str(tmp / "hf-home")  # no token saved by `hf auth login`, a cache of this test's own
    env["HF_DATASETS_CACHE"] = str(tmp / "hf-datasets")
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if token:
        env["HF_TOKEN"] = token
    return env


def _push(tmp: Path, endpoint: str | None, *args: str, token: str | None = TOKEN,
          check: bool = True) -> subprocess.CompletedProcess:
    return assay_cli("push", *args, env=_env(tmp, endpoint, token), check=check, timeout=120)


_LOAD = """
import json, sys
import datasets
repo, configs = sys.argv[1], sys.argv[2:] or [None]
print(json.dumps([datasets.load_dataset(repo, c, split="train").to_list() for c in configs], default=str))
"""


def _load(tmp: Path, endpoint: str, repo: str, *configs: str) -> list[list[dict]]:
    """The rows of each config of ``repo`` (the default one without ``configs``), read by ``datasets``."""
    p = subprocess.run([sys.executable, "-c", _LOAD, repo, *configs], capture_output=True, text=True,
                       env=_env(tmp, endpoint), timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def _card(store, repo: str) -> tuple[dict, str]:  # noqa: ANN001
    files = store.repo("dataset", repo)["commits"][-1]["files"]
    text = store.blob(files["README.md"]).decode()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _repo_files(store, repo: str) -> dict[str, str]:  # noqa: ANN001
    return store.repo("dataset", repo)["commits"][-1]["files"]


@pytest.fixture(scope="module")
def harvest_run(tmp_path_factory) -> Path:
    """The quickstart recipe on one of the sample's WARC files."""
    out = tmp_path_factory.mktemp("harvest") / "run"
    assay_cli("run", "recipes/quickstart.yaml", "-i", str(SAMPLE / "python-docs-00.warc.gz"), "-o", str(out),
              "-w", "1", "--no-report", cwd=str(Path(__file__).resolve().parents[1]))
    return out


def test_a_harvest_run_round_trips_through_the_hub(hub, harvest_run, tmp_path):
    url, store = hub
    repo = f"{USER}/quickstart"
    p = _push(tmp_path, url, str(harvest_run), repo, "--include-rejected", "--license", "cc-by-4.0")
    stats = json.loads((harvest_run / "stats.json").read_text())
    assert f"pushed harvest ({stats['output']['records']:,} records" in p.stderr

    local = read_output(harvest_run)
    kept, rejected = _load(tmp_path, url, repo, "default", "rejected")
    assert [r["id"] for r in kept] == [r["id"] for r in local]
    assert [r["content"] for r in kept] == [r["content"] for r in local]
    local_rejected = [json.loads(line) for f in sorted((harvest_run / "rejected").iterdir())
                      for line in gzip.open(f, "rt")]
    assert len(rejected) == stats["output"]["rejected"] > 0
    assert sorted(r["id"] for r in rejected) == sorted(r["id"] for r in local_rejected)

    files = _repo_files(store, repo)
    assert not [f for f in files if f.split("/")[0] in BOOKKEEPING], files
    assert json.loads(store.blob(files["stats.json"])) == stats
    assert {f.split("/")[0] for f in files} == {".gitattributes", "README.md", "data", "rejected", "stats.json",
                                                "recipe.yaml"}
    meta, body = _card(store, repo)
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}
    assert configs == {"default": "data/*", "rejected": "rejected/*"}
    assert meta["license"] == "cc-by-4.0" and meta["language"] == list(stats["languages"])
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    assert f"| kept (`data/`) | {stats['output']['records']:,} records" in body
    for step in stats["steps"]:  # the funnel: every step with its in, out and dropped counts
        assert f"| {step['name']} | {step['records_in']:,} | {step['records_out']:,} | {step['dropped']:,} |" in body
        for reason, n in step["drops"].items():
            assert f"| {step['name']} | {reason} | {n:,} |" in body
    assert "## Input errors" in body and f'load_dataset("{repo}", split="train")' in body

    # a second push into the existing repo is a new commit; without --include-rejected rejected/ goes away
    p = _push(tmp_path, url, str(harvest_run), repo, "-m", "second push")
    assert "removed" in p.stderr
    history = store.repo("dataset", repo)["commits"]
    assert [c["title"] for c in history[-2:]][-1] == "second push" and len(history) == 3
    files = _repo_files(store, repo)
    assert not [f for f in files if f.startswith("rejected/")]
    meta, body = _card(store, repo)
    assert [c["config_name"] for c in meta["configs"]] == ["default"] and '"rejected", split' not in body
    assert len(_load(tmp_path, url, repo)[0]) == len(local)


def _dpo_export(tmp_path: Path) -> Path:
    """A preference project annotated by three people (overlap 3): one pair unanimous, two pairs 2 to 1."""
    from annotate_support import cheap_password_hashing, preference_records
    from sqlalchemy import select

    from assay.annotate import workflow
    from assay.annotate.export import export
    from assay.platform.db import Database
    from assay.platform.users import create_user

    cheap_password_hashing()
    db = Database(str(tmp_path / "annotate.db"))
    db.migrate()
    names = ("alice", "carol", "dan")
    with db.write() as s:
        for name in names:
            create_user(s, name, "password-123")
        project = workflow.create_project(s, "prefs", "preference", overlap=3)
        for name in names:
            workflow.add_member(s, project, name)
        workflow.add_items(s, project, preference_records(3))
        pid = project.id
        users = {n: s.scalar(select(workflow.User.id).where(workflow.User.username == n)) for n in names}
    for round_ in range(3):
        for name in names:
            choice = "b" if name == "dan" and round_ > 0 else "a"  # "a" is the record's chosen answer
            with db.write() as s:
                claim = workflow.next_assignment(s, s.get(workflow.Project, pid), users[name])
            with db.write() as s:
                workflow.submit(s, s.get(workflow.Project, pid), users[name], claim.id, {"choice": choice})
    out = tmp_path / "prefs.jsonl"
    assert export(db, "prefs", "dpo", out)["rows"] == 3
    db.dispose()
    return out


def test_an_annotation_export_gets_a_card_that_fits(hub, tmp_path):
    url, store = hub
    export = _dpo_export(tmp_path)
    repo = f"{USER}/prefs"
    _push(tmp_path, url, str(export), repo)
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert [(r["id"], r["chosen"]) for r in _load(tmp_path, url, repo)[0]] == [(r["id"], r["chosen"]) for r in rows]
    meta, body = _card(store, repo)
    assert meta["configs"][0]["data_files"][0]["path"] == "data/*" and "dpo" in meta["tags"]
    assert "| rows | 3 |" in body and "| format | dpo |" in body and "| annotators | 3 |" in body
    # 9 votes: 3 for the unanimous pair, 2 of 3 for each other pair's chosen answer
    assert "9 votes on 3 pairs; 77.8% of the votes went to the chosen answer; unanimous pairs: 1 (33.3%)" in body
    assert set(_repo_files(store, repo)) == {".gitattributes", "README.md", "data/prefs.jsonl"}


def test_a_synthesis_output_is_pushed_as_synthetic(hub, tmp_path):
    url, store = hub
    reply = "Explain how rainbows form after a summer storm.\nOutput: Sunlight bends inside the raindrops."
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": f"s{i}", "instruction": f"Name {i} animals that fly."}
                                                   for i in range(4)])
    recipe = tmp_path / "recipe.yaml"
    server = LoopbackLLMServer("--engine", "fixed", "--reply", reply)  # the project's OpenAI-compatible server
    try:
        backend = {"kind": "openai", "model": "m", "base_url": server.url, "max_retries": 0}
        recipe.write_text(yaml.safe_dump({
            "name": "tiny-self-instruct", "input": {"format": "jsonl", "text_key": None},
            "output": {"format": "jsonl"},
            "steps": [{"self_instruct": {"num_instructions": 1, "max_requests": 2, "classify": "never",
                                         "backend": backend}}]}))
        assay_cli("run", str(recipe), "-i", str(seeds), "-o", str(tmp_path / "out"), "-w", "1", "--no-report")
    finally:
        server.stop()
    assert (tmp_path / "out" / "llm-cache.sqlite").exists()
    p = _push(tmp_path, url, str(tmp_path / "out"), "synth")  # no namespace: the token's user
    assert f"pushed synthesis (1 records" in p.stderr and f"{USER}/synth" in p.stderr
    meta, body = _card(store, f"{USER}/synth")
    assert "synthetic" in meta["tags"] and meta["pretty_name"] == "tiny-self-instruct"
    assert "kind: synthesis" in body and "self_instruct" in body
    counters = json.loads((tmp_path / "out" / "stats.json").read_text())["steps"][0]["counters"]
    assert counters and all(f"| self_instruct | {k} | {v:,} |" in body for k, v in counters.items())
    assert "llm-cache.sqlite" not in _repo_files(store, f"{USER}/synth")
    files = _repo_files(store, f"{USER}/synth")
    kept = sorted((tmp_path / "out" / "data").iterdir())
    assert [store.blob(files[f"data/{f.name}"]) for f in kept] == [f.read_bytes() for f in kept]


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def test_errors_are_one_line(hub, harvest_run, tmp_path):
    url, store = hub
    line = _one_line_error(_push(tmp_path, url, str(harvest_run), f"{USER}/x", token=None, check=False))
    assert "HF_TOKEN" in line and "--token" in line
    line = _one_line_error(_push(tmp_path, url, str(harvest_run), f"{USER}/x", token="hf_wrong", check=False))
    assert "rejected the token" in line
    nowhere = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(_push(tmp_path, nowhere, str(harvest_run), f"{USER}/x", check=False))
    assert f"cannot reach the Hub at {nowhere}" in line
    # a run whose jobs did not all finish is refused (before any token or request), and goes with --force
    unfinished = tmp_path / "unfinished"
    shutil.copytree(harvest_run, unfinished)
    next((unfinished / ".assay" / "markers").glob("s0-*.json")).unlink()
    run = CliRunner().invoke
    line = _runner_error(run(app, ["push", str(unfinished), f"{USER}/x", "--endpoint", url]))
    assert "is not a finished run: 1 of its 3 jobs have not finished" in line and "--force" in line
    assert _runner_error(run(app, ["push", str(tmp_path), f"{USER}/x"])).endswith(
        "nor an annotation export (.jsonl, .jsonl.gz, .parquet from `assay annotate export`)")
    write_jsonl(tmp_path / "not-an-export.jsonl", [{"a": 1}])
    assert "none of the columns of an `assay annotate export` format (columns: a)" in _runner_error(
        run(app, ["push", str(tmp_path / "not-an-export.jsonl"), f"{USER}/x"]))
    _push(tmp_path, url, str(unfinished), f"{USER}/x", "--force")
    assert "data/train-00000-0000.jsonl.gz" in _repo_files(store, f"{USER}/x")
    (unfinished / "stats.json").unlink()
    assert "no stats.json" in _runner_error(run(app, ["push", str(unfinished), f"{USER}/x"]))


def _runner_error(r) -> str:  # noqa: ANN001
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_dry_run_of_a_run_folder_of_the_older_layout(harvest_run, tmp_path):
    """part-* at the top, _run.json and _markers/ (no recipe.yaml): the kept files go up as data/*, the
    bookkeeping does not; --dry-run lists them and prints the card without a token or a request."""
    old = tmp_path / "old"
    shutil.copytree(harvest_run, old)
    kept = sorted((old / "data").iterdir())
    for f in kept:
        f.rename(old / f"part-{f.name.removeprefix('train-')}")
    (old / ".assay" / "run.json").rename(old / "_run.json")
    (old / ".assay" / "markers").rename(old / "_markers")
    for gone in (".assay", "data"):
        shutil.rmtree(old / gone)
    for gone in ("recipe.yaml", "README.md"):
        (old / gone).unlink()
    r = CliRunner().invoke(app, ["push", str(old), "me/old", "--dry-run"], env={"HF_TOKEN": ""})
    assert r.exit_code == 0, r.output
    listing = r.output.split("README.md", 1)[0].splitlines()[1:]  # the files before the card
    listed = [line.split()[0] for line in listing if line.strip()] + ["README.md"]
    assert listed == [f"data/part-{f.name.removeprefix('train-')}" for f in kept] + ["stats.json", "README.md"]
    assert "would push harvest" in r.output and "path: data/*" in r.output
    # the older folder's markers decide too: one missing is an unfinished run
    next((old / "_markers").glob("s1-*.json")).unlink()
    line = _runner_error(CliRunner().invoke(app, ["push", str(old), "me/old", "--dry-run"]))
    assert "1 of its 3 jobs have not finished (s1-00000)" in line


def test_the_records_licenses_make_the_cards_license(tmp_path):
    from collections import Counter

    from assay.run.card import hub_license

    assert hub_license(Counter({"MIT": 3})) == "mit"
    assert hub_license(Counter({"GPL-3.0-only": 2, "GPL-3.0-or-later": 1})) == "gpl-3.0"
    assert hub_license(Counter({"MIT": 2, "Apache-2.0": 1})) == "other"
    assert hub_license(Counter({"LicenseRef-scancode-proprietary": 1})) == "other"
    assert hub_license(Counter({None: 4})) is None
    rows = [{"id": "a", "text": "one", "license": "MIT"}, {"id": "b", "text": "two", "license": "MIT"},
            {"id": "c", "text": "three", "license": "Apache-2.0"}]
    write_jsonl(tmp_path / "in.jsonl", rows)
    (tmp_path / "recipe.yaml").write_text("name: licensed\ninput: {format: jsonl}\noutput: {format: jsonl}\n"
                                          "steps: []\n")
    assay_cli("run", str(tmp_path / "recipe.yaml"), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"),
              "-w", "1", "--no-report")
    r = CliRunner().invoke(app, ["push", str(tmp_path / "out"), "me/licensed", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "license: other" in r.output and "| MIT | 2 |" in r.output and "| Apache-2.0 | 1 |" in r.output
    r = CliRunner().invoke(app, ["push", str(tmp_path / "out"), "me/licensed", "--dry-run", "--license", "mit"])
    assert "license: mit" in r.output  # --license wins

"""`assay flywheel`: the closed loop on the bundled web sample with the local model, simulated annotators working
through the annotation app's real HTTP API, a real `kill -9` of the run and its resumption without duplicates, the
lineage of a synthetic record across all four stages, and the report page in headless Chromium.

One small run (3 rounds of a handful of items) is shared by the tests of this module; bigger settings are in
docs/flywheel.md and benchmarks/flywheel.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml
from browser_support import chromium
from testutil import ROOT, SAMPLE

from assay.flywheel.calls import template_of
from assay.flywheel.people import gold_rating
from assay.flywheel.recipe import FlywheelError, FlywheelRecipe

ROUNDS, BUDGET, SYNTH_BUDGET = 3, 4, 1


def tiny_recipe(path: Path) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "flywheel.yaml").read_text())
    recipe["harvest"].update({"inputs": [str(SAMPLE)], "reference_pages": 24, "pages_per_round": 10})
    recipe["route"]["budget"] = BUDGET
    recipe["synthesize"].update({"from_top": 2, "route_budget": SYNTH_BUDGET})
    recipe["synthesize"]["steps"][0]["textbook"]["passage_sampling"]["max_tokens"] = 40
    recipe["synthesize"]["verify"][0]["judge_score"].update({"samples": 1, "sampling": {"temperature": 0.7,
                                                                                         "max_tokens": 56}})
    recipe["knowledge"]["disagreement"] = 1.5
    recipe["lab"].update({"tokens": [512, 1024], "seeds": 2, "bootstrap": 4, "eval_tokens": 1024})
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _assay(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assay.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The flywheel run as a user starts it, killed with SIGKILL in round 2 after its documents went to the
    annotation app, then the same command again to the end."""
    tmp = tmp_path_factory.mktemp("flywheel")
    recipe = tiny_recipe(tmp / "flywheel.yaml")
    out = tmp / "out"
    cmd = [sys.executable, "-m", "assay.cli", "flywheel", "run", str(recipe), "-o", str(out)]
    err = open(tmp / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
    marker = out / "round-002" / "_done" / "route"
    deadline = time.monotonic() + 400
    while not marker.exists():
        assert proc.poll() is None, (tmp / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "round 2 never routed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    err.close()
    killed_at = sorted(p.name for p in (out / "round-002" / "_done").iterdir())
    second = _assay("flywheel", "run", str(recipe), "-o", str(out))
    assert second.returncode == 0, second.stderr[-4000:]
    return {"out": out, "recipe": recipe, "killed_at": killed_at, "log": second.stderr}


def test_gold_rule_prefers_long_prose():
    prose = "\n".join(f"This sentence number {i} explains one idea about the topic in plain words." for i in range(40))
    listing = "\n".join(f"item_{i} = {i}" for i in range(40))
    assert gold_rating(prose) >= 4 > 2 >= gold_rating(listing)
    assert gold_rating("") == 1


def test_recipe_errors_name_the_place(tmp_path):
    with pytest.raises(FlywheelError, match=r"route\.budgett"):
        FlywheelRecipe.from_dict({"route": {"budgett": 3}})
    with pytest.raises(FlywheelError, match="no_such_step"):
        FlywheelRecipe.from_dict({"synthesize": {"steps": ["no_such_step"]}})
    from typer.testing import CliRunner

    from assay.flywheel.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 0\n")
    res = CliRunner().invoke(app, ["run", str(bad), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error:" in res.stderr and "rounds" in res.stderr and res.exception is not None
    assert not (tmp_path / "o").exists()


def test_template_of_recognises_the_prompt():
    from assay.synthesize.templates import load_template

    tpl = load_template("textbook_passage", {}, {"topic", "audience", "style"})
    prompt = tpl.render(topic="decorators", audience="students", style="tutorial")
    assert template_of(prompt, {"textbook_passage": tpl}) == "textbook_passage"
    assert template_of("something else entirely, with no template text", {"textbook_passage": tpl}) is None


def test_three_rounds_resumed_after_kill_without_duplicates(run):
    out = run["out"]
    from assay.flywheel.loop import PHASES

    assert "route" in run["killed_at"] and len(run["killed_at"]) < len(PHASES), run["killed_at"]  # killed mid-round
    summary = orjson.loads((out / "flywheel.json").read_bytes())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3] and all(r["complete"] for r in rounds)
    from sqlalchemy import func, select

    from assay.annotate.models import Annotation, Item, Project
    from assay.knowledge.models import PatchVersion
    from assay.platform.db import Database

    db = Database(str(out / "annotate.db"))
    with db.read() as s:
        items = dict(s.execute(select(Project.name, func.count(Item.id)).join(Item, Item.project_id == Project.id)
                               .group_by(Project.name)).all())
        record_ids = list(s.scalars(select(Item.record_id)))
        annotations = s.scalar(select(func.count(Annotation.id)))
        titles = [v.document["title"] for v in s.scalars(select(PatchVersion))]
    db.dispose()
    # exactly the budget per round went to people, each item once, each labelled once (overlap 1), across the kill
    assert items == {"flywheel-docs": ROUNDS * BUDGET, "flywheel-synthetic": ROUNDS * SYNTH_BUDGET}
    assert len(record_ids) == len(set(record_ids)) and annotations == len(record_ids)
    assert len(titles) == len(set(titles))
    patch_ids = [p["patch_id"] for r in rounds for p in r["patches"].values()]
    assert len(patch_ids) == len(set(patch_ids)) == len(titles)
    # the simulated annotators worked through HTTP: the app's login audit has their sessions
    for r in rounds:
        assert sum(a["answered"] for a in r["label"]["annotators"].values()) == BUDGET
        assert r["route"]["routed"] == BUDGET and r["label"]["items"] == BUDGET


def test_classifier_accuracy_and_worth_per_round(run):
    rounds = orjson.loads((run["out"] / "flywheel.json").read_bytes())["rounds"]
    trained = [r["train"] for r in rounds if r["train"].get("trained")]
    assert trained, "the classifier was never trained on human labels"
    labels = [r["train"]["labels_total"] for r in rounds]
    assert labels == [BUDGET * k for k in range(1, ROUNDS + 1)]  # labels accumulate round by round
    for t in trained:
        assert 0.0 <= t["accuracy"] <= 1.0 and t["heldout"] > 0
    for r in rounds:
        mix = r["lab_placements"]["mix"]
        assert mix["placed"] and mix["Q_ci"][0] is not None and mix["Q_ci"][0] <= mix["Q"] <= (mix["Q_ci"][1] or 1e9)
        assert mix["D"] > 0 and mix["D_eff"] is not None
        assert r["mix"]["human_fraction"] >= 0.5
    gens = {x for x in rounds[-1]["mix"]["synthetic_by_generation"]}
    assert len(gens) >= 2, "synthetic generations were replaced, not accumulated"


def test_model_calls_are_logged_with_template_and_cache_key(run):
    from assay.flywheel.calls import read_calls

    calls = [c for r in range(1, ROUNDS + 1) for c in read_calls(run["out"] / f"round-{r:03d}" / "calls.jsonl")]
    by_step = {c["step"] for c in calls}
    assert {"textbook", "judge_score"} <= by_step
    assert all(c["backend"] == "local" and len(c["cache_key"]) == 32 for c in calls)
    assert {c["template"] for c in calls if c["step"] == "textbook"} == {"textbook_passage"}
    assert {c["template"] for c in calls if c["step"] == "judge_score"} <= {"judge_single", "judge_repair"}
    from assay.models.llm.cache import ResponseCache

    cache = ResponseCache(run["out"] / "llm-cache.sqlite")
    found = cache.get_many([c["cache_key"] for c in calls if c["ok"]])
    cache.close()
    assert len(found) == len({c["cache_key"] for c in calls if c["ok"]})  # the logged keys are the cache's keys


def test_lineage_of_a_synthetic_record_spans_all_four_stages(run):
    from assay.flywheel.lineage import RunIndex, lineage

    index = RunIndex(run["out"])
    synthetic = [i for i in index.output_ids() if index.find(i)[-1][2].meta.get("origin") == "synthetic"]
    assert synthetic
    h = lineage(index, synthetic[0])
    stages = {s["stage"]: s["events"] for s in h["stages"]}
    source = [e for e in stages["harvest"] if e["what"] == "source page"]
    assert source and source[0]["url"].startswith("https://docs.python.org/")
    assert any(e["what"] == "harvest steps" and e["steps"][0]["step"] == "extract" for e in stages["harvest"])
    made = [e for e in stages["synthesize"] if e["what"] == "model call" and e["role"] == "made this record"]
    assert made and made[0]["template"] == "textbook_passage" and made[0]["backend"] == "local"
    assert any(e["what"] == "verified" and "judge.samples" in e for e in stages["evolve"])
    assert any(e["what"] == "in the training mix" for e in stages["evolve"])
    assert any(e["what"].startswith("placed on the quality ladder") for e in stages["lab"])
    # a record people labelled: its human label, annotator and (for corrections) its patch and review
    labelled = next(i for r in index.rounds for i in index.files[(r, "routed")] if index.labels.get(i))
    hl = lineage(index, labelled)
    ann = [e for e in hl["stages"][1]["events"] if e["what"] == "human label"]
    assert ann and ann[0]["annotator"] in ("ann1", "ann2") and 1 <= ann[0]["value"]["scores"]["quality"] <= 5
    patched = next((rid for rid in index.patches), None)
    assert patched is not None, "no expert correction became a knowledge patch"
    hp = lineage(index, patched)
    patch = next(e for s in hp["stages"] for e in s["events"] if e["what"].startswith("knowledge patch"))
    assert patch["patch_id"] and any(e["event"] == "review" for e in patch["reviews"])


def test_report_in_headless_chromium(run):
    from typer.testing import CliRunner

    from assay.flywheel.cli import app

    res = CliRunner().invoke(app, ["report", str(run["out"])])
    assert res.exit_code == 0, res.stderr
    page_path = run["out"] / "report.html"
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        rows = page.locator("#rounds tr[data-round]")
        assert rows.count() == ROUNDS
        accs = page.locator("#rounds td.acc").all_inner_texts()
        assert any(a[:1].isdigit() for a in accs)
        assert page.locator("#accuracy-verdict").inner_text().startswith(("Held-out accuracy", "Too few"))
        assert page.locator("#worth tr[data-stage='mix'] td.q .ci").count() == ROUNDS
        # pick a synthetic output record: its history covers the four stages
        options = page.locator("#pick option").all()
        synth = next(o.get_attribute("value") for o in options if o.inner_text().startswith("synthetic"))
        page.select_option("#pick", synth)
        assert page.inner_text("#lineage-id") == synth
        for stage, what in (("harvest", "source page"), ("synthesize", "model call"), ("evolve", "verified"),
                            ("lab", None)):
            box = page.locator(f"#lineage .stage[data-stage='{stage}']")
            assert box.count() == 1
            if what:
                assert box.locator(f".event[data-what='{what}']").count() >= 1, stage
        assert "docs.python.org" in page.inner_text("#lineage .stage[data-stage='harvest']")
        assert "textbook_passage" in page.inner_text("#lineage .stage[data-stage='synthesize']")
        page.screenshot(path=str(run["out"] / "report.png"), full_page=True)
        assert not errors, errors


def test_people_mode_waits_for_labels_then_goes_on(tmp_path):
    """With real people the round stops until the routed items are labelled in the app, then goes on."""
    from annotate_support import cheap_password_hashing

    from assay.annotate import workflow
    from assay.core.record import Record
    from assay.flywheel.loop import Flywheel, WaitingForPeople
    from assay.platform.users import create_user

    cheap_password_hashing()
    recipe = FlywheelRecipe.from_dict({"people": {"mode": "people"}})
    fw = Flywheel(recipe, tmp_path / "out")
    fw.prepare()
    docs = [Record(f"d{i}", f"Document {i} explains one thing in a full sentence.", "text") for i in range(2)]
    assert fw.project("docs").push(docs) == 2
    with pytest.raises(WaitingForPeople, match="2 of 2 items"):
        fw.ask_people("docs", docs, 1)
    with fw.db.write() as s:
        uid = create_user(s, "person", "a-long-password", "annotator").id
        p = workflow.find_project(s, "flywheel-docs")
        workflow.add_member(s, p, "person")
    for score in (5, 2):
        with fw.db.write() as s:
            p = workflow.find_project(s, "flywheel-docs")
            a = workflow.next_assignment(s, p, uid)
            workflow.submit(s, p, uid, a.id, {"scores": {"quality": score}})
    info = fw.ask_people("docs", docs, 1)
    assert sorted(info["labels"].values()) == [2, 5] and "annotators" not in info
    fw.close()


def test_code_tasks_go_through_execution_in_the_sandbox_and_prose_does_not(tmp_path):
    """`synthesize.verify_code` runs on code tasks only: a right solution passes the real sandbox, a wrong one is
    dropped with its reason, and a prose record is neither run nor dropped."""
    from assay.core.record import Record
    from assay.flywheel.loop import Flywheel, read_records, write_records

    recipe = FlywheelRecipe.from_dict({"synthesize": {
        "verify": [], "verify_code": [{"execution_feedback": {"max_repairs": 0, "workers": 1, "emit_traces": False}}]}})
    fw = Flywheel(recipe, tmp_path / "out")
    fw.prepare()
    rd = fw.round_dir(1)
    rd.mkdir()
    task = {"prompt": "Write add(a, b) returning the sum.", "entry_point": "add",
            "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"}
    write_records(rd / "synthetic.jsonl", [
        Record("right", {**task, "solution": "def add(a, b):\n    return a + b\n"}, "code"),
        Record("wrong", {**task, "solution": "def add(a, b):\n    return a - b\n"}, "code"),
        Record("prose", {"instruction": "Explain lists.", "output": "A list holds items in order."}, "conversation")])
    info = fw._verify(1, rd)
    fw.close()
    kept = {x.id: x for x in read_records(rd / "verified.jsonl")}
    assert set(kept) == {"right", "prose"} and info["code_tasks"] == 2
    assert kept["right"].signals["exec.passed"] == 1 and kept["right"].signals["exec.attempts"] == 1
    assert not any(k.startswith("exec.") for k in kept["prose"].signals)
    dropped = read_records(rd / "verify-rejected.jsonl")
    assert [x.id for x in dropped] == ["wrong"] and dropped[0].drop[1] == "failed_tests"

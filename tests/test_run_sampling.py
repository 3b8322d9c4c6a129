"""Tuning runs (issue 20 §2): `assay run --limit N`, `--sample FRACTION`, `--analyze`, and `assay inspect
--rejected --step S --reason R`, on the bundled sample of web pages."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from testutil import SAMPLE, assay_cli

from assay.core.errors import ErrorLog
from assay.io.sources import in_sample, plan_shards, read_shard
from assay.run.layout import output_files, rejected_files

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")


def ids(run: Path) -> list[str]:
    files = output_files(str(run)) + rejected_files(str(run))
    return sorted(r.id for f in files for s in plan_shards([f], "auto", 0) for r in read_shard(s, ErrorLog()))


def input_ids() -> list[str]:
    """The sample's records in input order, as the run reads them."""
    return [r.id for s in plan_shards([str(SAMPLE)], "warc", 0) for r in read_shard(s, ErrorLog())]


def stats(run: Path) -> dict:
    return orjson.loads((run / "stats.json").read_bytes())


@pytest.fixture(scope="module")
def extract_only(tmp_path_factory) -> Path:
    recipe = tmp_path_factory.mktemp("recipe") / "extract.yaml"
    recipe.write_text("name: extract-only\ninput: {format: warc}\nsteps:\n  - extract: {engine: resiliparse}\n")
    return recipe


def test_limit_reads_the_first_n_records_whatever_the_worker_count(tmp_path, extract_only):
    first = input_ids()[:100]  # more than the first file holds: the limit crosses a shard boundary
    for w in ("1", "2"):
        out = tmp_path / f"w{w}"
        assay_cli("run", str(extract_only), "-i", str(SAMPLE), "-o", str(out), "-w", w, "--limit", "100",
                  "--no-report", cwd=ROOT)
        s = stats(out)
        assert s["input"]["records_read"] == 100
        assert s["tuning"]["limit"] == 100
        assert ids(out) == sorted(first)
    assert s["input"]["shards"] < len(plan_shards([str(SAMPLE)], "warc", 0))  # later shards are not run
    # the selection is part of the run's input: the folder is not resumed as another one
    p = assay_cli("run", str(extract_only), "-i", str(SAMPLE), "-o", str(out), "-w", "1", "--limit", "20",
                  "--no-report", cwd=ROOT, check=False)
    assert p.returncode == 2 and "different input files" in p.stderr and "Traceback" not in p.stderr
    p = assay_cli("run", str(extract_only), "-i", str(SAMPLE), "-o", str(tmp_path / "x"), "--sample", "1.5",
                  check=False, cwd=ROOT)
    assert p.returncode == 2 and "--sample must be a fraction in (0, 1]" in p.stderr


def test_sample_is_a_deterministic_hash_of_id_sample(tmp_path, extract_only):
    everything = input_ids()
    expected = sorted(i for i in everything if in_sample(i, 0.3, 0))
    assert 0.2 < len(expected) / len(everything) < 0.4
    runs = []
    for w in ("1", "2"):
        out = tmp_path / f"w{w}"
        p = assay_cli("run", str(extract_only), "-i", str(SAMPLE), "-o", str(out), "-w", w, "--sample", "0.3",
                      "--no-report", cwd=ROOT)
        assert "a 30% sample of the input records" in p.stderr
        runs.append(ids(out))
        assert stats(out)["input"]["records_read"] == len(expected)
    assert runs[0] == runs[1] == expected
    other = tmp_path / "seed"
    assay_cli("run", str(extract_only), "-i", str(SAMPLE), "-o", str(other), "-w", "1", "--sample", "0.3",
              "--seed", "7", "--no-report", cwd=ROOT)
    assert ids(other) != expected


@pytest.fixture(scope="module")
def normal_and_analysis(tmp_path_factory):
    base = tmp_path_factory.mktemp("analyze")
    normal, analysis = base / "normal", base / "analysis"
    assay_cli("run", QUICKSTART, "-i", str(SAMPLE), "-o", str(normal), "-w", "1", "--limit", "150", cwd=ROOT)
    assay_cli("run", QUICKSTART, "-i", str(SAMPLE), "-o", str(analysis), "-w", "1", "--limit", "150", "--analyze",
              cwd=ROOT)
    return normal, analysis


def test_analyze_drops_nothing_and_the_card_shows_what_would_be_dropped(normal_and_analysis):
    normal, analysis = normal_and_analysis
    a, n = stats(analysis), stats(normal)
    assert a["tuning"]["analyze"] is True
    extract = a["steps"][0]
    assert extract["name"] == "extract"
    assert a["output"]["records"] == extract["records_out"] == a["input"]["records_read"] - extract["dropped"]
    assert sum(s["dropped"] for s in a["steps"][1:]) == 0
    card = (analysis / "report.html").read_text()
    assert "Analysis run over the first 150 input records" in card
    selecting = [s for s in n["steps"] if s["name"] not in ("extract", "pii")]
    assert sum(s["dropped"] for s in selecting) > 30
    for s in selecting:
        m = re.search(rf'data-step="{s["name"]}" data-index="{s["index"]}">.*?would drop: <b class="n">(\d+)</b>',
                      card)
        assert m, s["name"]
        assert int(m.group(1)) == s["dropped"], s["name"]
    for s in n["steps"]:  # every reason a normal run drops for has its example block in the analysis card
        for reason in s["drops"]:
            assert f'data-step="{s["name"]}" data-reason="{reason}"' in card


def test_inspect_rejected_by_step_and_reason(normal_and_analysis):
    normal, _ = normal_and_analysis
    n = stats(normal)
    gq = next(s for s in n["steps"] if s["name"] == "gopher_quality")
    reason, count = next(iter(gq["drops"].items()))
    p = assay_cli("inspect", str(normal), "--rejected", "--step", "gopher_quality", "--reason", reason, "-n", "500",
                  cwd=ROOT)
    assert p.stdout.count("dropped by ") == p.stdout.count(f"dropped by gopher_quality: {reason}\n") == count
    p = assay_cli("inspect", str(normal), "--rejected", "--step", "gopher_quality", "-n", "500", "--full", cwd=ROOT)
    shown = [orjson.loads(line) for line in p.stdout.splitlines()]
    assert len(shown) == gq["dropped"]
    assert all(r["drop"]["step"] == "gopher_quality" for r in shown)
    assert {r["drop"]["reason"] for r in shown} == set(gq["drops"])

    p = assay_cli("inspect", str(normal), "--rejected", "--step", "gopher_quality", "--reason", "no_such_reason",
                  cwd=ROOT, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = " ".join(p.stderr.split())
    assert "no rejected record with step 'gopher_quality' and reason 'no_such_reason'" in err
    assert f"gopher_quality/{reason} ({count})" in err
    p = assay_cli("inspect", str(normal), "--step", "gopher_quality", cwd=ROOT, check=False)
    assert p.returncode == 2 and "add --rejected" in p.stderr


def test_dedup_with_action_flag_keeps_duplicates_and_marks_them(tmp_path):
    """What --analyze sets on the dedup steps: the same decisions as action: drop, written to signals instead."""
    from assay.core.record import Record
    from assay.core.step import REGISTRY, StepContext

    texts = ["the same page", "another page", "the same page", "a third page", "another page"]
    decided = {}
    for action in ("drop", "flag"):
        step = REGISTRY.get("exact_dedup")(action=action)
        recs = [Record(id=f"r{i}", content=t) for i, t in enumerate(texts)]
        out = [r for b in step.process([recs], StepContext(tmp_path / action)) for r in b]
        decided[action] = {r.id: (r.drop, r.signals.get("exact_dedup.flag"), r.signals.get("dedup.cluster"))
                           for r in out}
    dropped = {i for i, (drop, _, _) in decided["drop"].items() if drop}
    assert len(dropped) == 2
    assert all(drop is None for drop, _, _ in decided["flag"].values())
    assert {i for i, (_, flag, _) in decided["flag"].items() if flag == "duplicate"} == dropped
    assert all(decided["flag"][i][2] == decided["drop"][i][2] for i in dropped)  # the same kept member

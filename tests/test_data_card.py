"""The data card as a tuning tool (issue 20 §2): the quickstart recipe over the bundled sample, its report.html
opened in headless Chromium, and what the card shows checked against stats.json and the run's own records."""

from __future__ import annotations

import html
import re
from pathlib import Path

import orjson
import pytest
import xxhash
from browser_support import chromium
from testutil import SAMPLE, assay_cli

from assay.core.errors import ErrorLog
from assay.io.sources import plan_shards, read_shard
from assay.run.layout import output_files, rejected_files

ROOT = Path(__file__).resolve().parents[1]
FILTERS = ("language_id", "gopher_repetition", "gopher_quality", "fineweb_quality")


def records(files: list[str]) -> list:
    return [r for f in files for s in plan_shards([f], "auto", 0) for r in read_shard(s, ErrorLog())]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "qs"
    assay_cli("run", str(ROOT / "recipes" / "quickstart.yaml"), "-i", str(SAMPLE), "-o", str(out), "-w", "2",
              cwd=ROOT)
    stats = orjson.loads((out / "stats.json").read_bytes())
    return out, stats, records(output_files(str(out))), records(rejected_files(str(out)))


@pytest.fixture(scope="module")
def page(run):
    out = run[0]
    requests: list[str] = []
    with chromium() as browser:
        pg = browser.new_page()
        pg.on("request", lambda r: requests.append(r.url))
        pg.goto((out / "report.html").as_uri())
        pg.requests = requests
        yield pg


def test_card_is_one_file_without_network(page, run):
    assert page.requests == [(run[0] / "report.html").as_uri()]
    assert page.locator("script").count() == 0


def test_each_filter_has_histograms_thresholds_and_the_share_dropped(page, run):
    _, stats, _, _ = run
    by_name = {s["name"]: s for s in stats["steps"]}
    for name in (*FILTERS, "minhash_dedup"):
        section = page.locator(f'section.filter[data-step="{name}"]')
        assert section.count() == 1, name
        s = by_name[name]
        share = section.locator("p.share").inner_text()
        assert share == (f"dropped here: {s['dropped']:,} of {s['records_in']:,} records "
                         f"({100 * s['dropped'] / s['records_in']:.1f}%)"), name
        if name != "minhash_dedup":
            assert section.locator("line.threshold").count() >= 1, name
            assert section.locator(".no-threshold").count() == 0
    lid = page.locator('section.filter[data-step="language_id"] figure[data-signal="lang.score"]')
    assert lid.locator("line.threshold").get_attribute("data-value") == "0.65"  # the recipe's threshold
    # language_id is the first filter and the sample is English: its score rule made every one of its drops
    assert "language" not in by_name["language_id"]["drops"]
    beyond = re.search(r"beyond: (\d+)", lid.locator("figcaption").inner_text()).group(1)
    assert int(beyond) == by_name["language_id"]["drops"]["low_language_score"]
    # every signal gopher_quality writes has its histogram, over the records that reached it
    gq = page.locator('section.filter[data-step="gopher_quality"] figure.hist')
    assert gq.count() == 8
    assert f"{by_name['gopher_quality']['records_in']} records" in gq.first.inner_text()
    assert page.locator('section.filter[data-step="minhash_dedup"] .no-threshold').count() == 1


def test_declared_thresholds_explain_every_drop(run):
    """Filter.thresholds() says what decide() does: each record a filter dropped breaks a declared rule with that
    reason (or a 'set' rule whose value is the reason)."""
    from assay.core.recipe import Recipe
    import yaml

    out, _, _, rejected = run
    steps = {s.name: s for s in Recipe.model_validate(yaml.safe_load((out / "recipe.yaml").read_text()))
             .instantiate()}
    checked = 0
    for r in rejected:
        step = steps[r.drop[0]]
        if r.drop[0] not in FILTERS:
            continue
        rules = step.thresholds()
        assert any(t.drops(r.signals.get(t.signal)) and t.reason in (r.drop[1], "") for t in rules), r.drop
        checked += 1
    assert checked == sum(1 for r in rejected if r.drop[0] in FILTERS) > 200


def test_an_example_for_every_drop_reason_sampled_not_first(page, run):
    _, stats, _, rejected = run
    pairs = [(s["name"], reason) for s in stats["steps"] for reason in s["drops"]]
    assert len(pairs) >= 8
    for step, reason in pairs:
        block = page.locator(f'div.reason[data-step="{step}"][data-reason="{reason}"]')
        assert block.count() == 1, (step, reason)
        shown = [e.get_attribute("data-id") for e in block.locator("div.example").all()]
        took = [r for r in rejected if r.drop == (step, reason)]
        # the (up to) three with the smallest hash of id: a seeded sample, not the first ones of a file
        expected = sorted(took, key=lambda r: xxhash.xxh3_64_intdigest(r.id.encode()))[:3]
        assert shown == [r.id for r in expected], (step, reason)
        assert f"dropped by {step}: {reason}" in block.locator("div.example").first.inner_text()
    biggest = page.locator('div.reason[data-reason="gopher_below_alpha_threshold"]')
    assert "155 records · 3 shown" in biggest.locator("h3").inner_text()


def test_languages_before_language_id(page, run):
    _, stats, _, _ = run
    lid = next(s for s in stats["steps"] if s["name"] == "language_id")
    rows = page.locator("div.langs tr").all()[1:]
    cells = [[c.inner_text() for c in row.locator("td").all()] for row in rows]
    assert sum(int(c[1].replace(",", "")) for c in cells) == lid["records_in"]
    assert sum(int(c[2].replace(",", "")) for c in cells) == lid["dropped"]
    assert cells[0][0] == "en"


def test_recipe_parameters_as_run(page):
    rows = page.locator("tr.step-params")
    assert [r.get_attribute("data-step") for r in rows.all()] == [
        "extract", "language_id", "gopher_repetition", "gopher_quality", "fineweb_quality", "minhash_dedup", "pii"]
    lid = page.locator('tr.step-params[data-step="language_id"]').inner_text()
    assert '"threshold":0.65' in lid and '"languages":["en"]' in lid
    assert '"min_doc_words":50' in page.locator('tr.step-params[data-step="gopher_quality"]').inner_text()


def test_sources_and_domains(page, run):
    _, stats, kept, rejected = run
    rows = [[c.inner_text() for c in r.locator("td").all()] for r in page.locator("tr.origin").all()]
    assert sum(int(c[1].replace(",", "")) for c in rows) == stats["output"]["records"] + stats["output"]["rejected"]
    assert sum(int(c[2].replace(",", "")) for c in rows) == stats["output"]["records"]
    hosts = {c[0] for c in rows}
    assert "docs.python.org" in hosts
    from urllib.parse import urlsplit

    assert hosts == {urlsplit(r.meta["url"]).hostname for r in kept + rejected}


def test_a_dedup_cluster(page, run):
    _, _, kept, rejected = run
    dups = [r for r in rejected if r.drop == ("minhash_dedup", "near_duplicate")]
    assert dups
    cluster = page.locator('div.cluster[data-step="minhash_dedup"]').first
    ids = [e.get_attribute("data-id") for e in cluster.locator("div.example").all()]
    kept_id = dups[0].signals["minhash.cluster"]
    assert ids[0] == kept_id and kept_id in {r.id for r in kept}
    assert set(ids[1:]) <= {r.id for r in dups if r.signals["minhash.cluster"] == kept_id}


def test_lineage_panel(page, run):
    _, _, kept, _ = run
    panel = page.locator("div.lineage")
    rec = next(r for r in kept if r.id == panel.get_attribute("data-id"))
    rows = panel.locator("table tr").all()[1:]
    assert [r.locator("td").nth(1).inner_text() for r in rows] == [e.step for e in rec.lineage]
    assert [r.locator("td").nth(3).inner_text() for r in rows] == [e.params for e in rec.lineage]
    lid_row = rows[[e.step for e in rec.lineage].index("language_id")].inner_text()
    assert f"lang.score={rec.signals['lang.score']:.3g}" in lid_row


def test_declared_thresholds_match_decide_in_process():
    """The first declared rule a record breaks is the reason decide() gives, for filters the quickstart lacks."""
    from assay.core.record import Record
    from assay.core.step import REGISTRY

    cases = [
        (REGISTRY.get("length_filter")(min_chars=10, max_chars=50, min_words=3),
         ["short", "a b c d e f g h", "one two three four", "x" * 60, "ab cd efghijkl"]),
        (REGISTRY.get("flagged_words")(max_ratio=0.1, default_language="en"),
         ["a perfectly clean sentence about gardens and rivers", "sex sex sex porn and more porn words here"]),
    ]
    decided = set()
    for step, texts in cases:
        for text in texts:
            r = Record(id=text, content=text, meta={"language": "en"})
            step.score(r)
            broken = [t.reason for t in step.thresholds() if t.drops(r.signals.get(t.signal))]
            assert (broken[0] if broken else None) == step.decide(r), (step.name, text)
            decided.add(step.decide(r))
    assert {"too_short", "too_long", None, "too_many_flagged_words"} <= decided


def test_a_big_run_is_read_through_a_bounded_hash_sample(run):
    """Past max_records the card reads a hash-of-id sample of the run's records and says how many it read."""
    from assay.core.recipe import Recipe
    from assay.core.pipeline import Pipeline
    from assay.io.sources import in_sample
    from assay.run.card_data import read_card_data
    from assay.run.report import render
    import yaml

    out, stats, kept, rejected = run
    steps = Recipe.model_validate(yaml.safe_load((out / "recipe.yaml").read_text())).instantiate()
    Pipeline(steps)
    total = len(kept) + len(rejected)
    data = read_card_data(output_files(str(out)), rejected_files(str(out)), steps, total, max_records=100)
    expected = {r.id for r in kept + rejected if in_sample(r.id, 100 / total)}
    assert data.sampled and {r.id for r in data.records} == expected
    assert 60 < len(expected) < 140
    assert html.escape(f"The panels below read {len(expected):,} of the run's {total:,} records (a sample by a "
                       f"hash of their id).") in render(stats, data)

"""The classify and spans tasks in a real browser: headless Debian Chromium (Playwright) logs in as an annotator who
sees the model's suggestions with their scores, keeps one suggested label, drops another (by its hotkey) and adds a
third; then, on a text with an emoji and accented and CJK characters, removes a wrong suggested span, keeps a right
one and selects a new span with the mouse. The stored offsets (code points) slice the original text to exactly the
selected strings. Run by `assay annotate serve` in its own process over a SQLite file."""

from __future__ import annotations

import json

from annotate_support import logged_in_page
from test_annotate_labels import TEXT, at, write_jsonl
from browser_support import wait_until
from assay.platform.users import create_user

PW = "e2e-password"


def word_box(page, word: str) -> dict:
    """Where ``word`` is on screen (its first occurrence inside one text node of the span text)."""
    box = page.evaluate(
        "(() => { const word = " + json.dumps(word) + ";"
        " const walker = document.createTreeWalker(document.getElementById('span-text'), NodeFilter.SHOW_TEXT);"
        " for (let n = walker.nextNode(); n; n = walker.nextNode()) { const i = n.data.indexOf(word);"
        "   if (i >= 0) { const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + word.length);"
        "     const b = r.getBoundingClientRect(); return {x0: b.left, x1: b.right, y: (b.top + b.bottom) / 2}; } }"
        " return null; })()")
    assert box, f"{word!r} not found"
    return box


def drag_select(page, first: str, last: str | None = None) -> None:
    """Select from the start of ``first`` to the end of ``last`` (default: ``first``) by dragging the mouse, as a
    person would."""
    a, b = word_box(page, first), word_box(page, last or first)
    page.mouse.move(a["x0"] + 1, a["y"])
    page.mouse.down()
    page.mouse.move(b["x1"] - 1, b["y"], steps=6)
    page.mouse.up()


def test_annotator_uses_suggestions_and_selects_spans_in_chromium(tmp_path):
    from assay.annotate import workflow
    from assay.annotate.export import export
    from assay.platform.db import Database

    db_path = tmp_path / "e2e.db"
    db = Database(str(db_path))
    db.migrate()
    with db.write() as s:
        create_user(s, "ann", PW, "annotator")
        topics = workflow.create_project(s, "topics", "classify", config={
            "labels": ["sports", "politics", "science"], "multi_label": True})
        ner = workflow.create_project(s, "ner", "spans", config={"labels": ["PER", "LOC"]})
        for p in (topics, ner):
            workflow.add_member(s, p, "ann")
    scores = [{"label": "sports", "score": 0.91}, {"label": "politics", "score": 0.62},
              {"label": "science", "score": 0.08}]
    workflow.import_records(db, "topics", [write_jsonl(tmp_path / "t.jsonl", [
        {"id": "t0", "text": "The minister opened the new stadium.", "meta": {"suggestions": {"labels": scores}}}])])
    zoe, flew = at("Zoë"), at("flew")
    workflow.import_records(db, "ner", [write_jsonl(tmp_path / "n.jsonl", [
        {"id": "n0", "text": TEXT, "meta": {"suggestions": {"spans": [
            {"start": zoe[0], "end": zoe[1], "label": "PER", "score": 0.88},
            {"start": flew[0], "end": flew[1], "label": "LOC", "score": 0.7}]}}}])])
    db.dispose()

    with logged_in_page(db_path, "ann", PW, (1100, 1000), 20_000) as session:
        page, base, errors = session.page, session.base, session.errors

        # classify: suggestions shown with their scores and pre-checked; keep sports, drop politics, add science
        page.click("text=topics")
        page.click("#start")
        page.wait_for_selector("#label-choices")
        assert page.inner_text("#choice-0 .suggested") == "suggested (0.91)"
        assert page.inner_text("#choice-1 .suggested") == "suggested (0.62)"
        assert page.inner_text("#choice-2 .model-score") == "model 0.08"
        checked = "[...document.querySelectorAll('input[name=label]')].map(i => i.checked)"
        assert page.evaluate(checked) == [True, True, False]
        page.keyboard.press("2")
        page.click("#choice-2 input")
        assert page.evaluate(checked) == [True, False, True]
        assert page.evaluate("document.querySelector('#choice-1').classList.contains('changed')")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#saved, #error")
        assert page.locator("#error").count() == 0, page.inner_text("#error")

        # spans: the right suggestion stays, the wrong one goes, "Zürich" (after the emoji) and "東京" are
        # selected with the mouse under the label chosen by its key
        page.goto(base + "/")
        page.click("text=ner")
        page.click("#start")
        page.wait_for_selector("#span-text mark")
        marks = "[...document.querySelectorAll('#span-text mark')].map(m => m.textContent + ':' + m.dataset.label)"
        assert page.evaluate(marks) == ["Zoë:PER", "flew:LOC"]
        assert "suggested (0.88)" in page.inner_text("#span-list") and "suggested (0.70)" in page.inner_text(
            "#span-list")
        page.locator("#span-list li", has_text="flew").locator("button.remove-span").click()
        page.keyboard.press("2")  # LOC
        drag_select(page, "Zürich")
        wait_until(page, "document.querySelectorAll('#span-text mark').length === 2")
        drag_select(page, "東京")
        assert page.evaluate(marks) == ["Zoë:PER", "Zürich:LOC", "東京:LOC"], page.inner_text("#span-status")
        drag_select(page, "from", "Zürich")  # overlaps a span: refused with a message, nothing changes
        assert "overlaps" in page.inner_text("#span-status") and len(page.evaluate(marks)) == 3
        page.screenshot(path=str(tmp_path / "spans.png"), full_page=True)
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#saved, #error")
        assert page.locator("#error").count() == 0, page.inner_text("#error")
        assert errors == []

    db = Database(str(db_path))
    out = tmp_path / "labels.jsonl"
    assert export(db, "topics", "labels", out)["rows"] == 1
    row = json.loads(out.read_text())
    assert row["labels"] == ["sports", "science"] and row["suggested"] == ["sports", "politics"]
    assert row["suggestion_accepted"] is False and row["annotator"] == "ann"
    out = tmp_path / "spans.jsonl"
    assert export(db, "ner", "spans", out)["rows"] == 1
    row = json.loads(out.read_text())
    assert [(TEXT[s["start"]:s["end"]], s["label"], s["suggested"]) for s in row["spans"]] == [
        ("Zoë", "PER", True), ("Zürich", "LOC", False), ("東京", "LOC", False)]
    assert [(s["start"], s["end"]) for s in row["spans"]] == [zoe, at("Zürich"), at("東京")]
    assert (row["accepted_suggestions"], row["rejected_suggestions"], row["added"]) == (1, 1, 2)

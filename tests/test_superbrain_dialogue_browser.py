"""The expert dialogue task in a real browser: headless Debian Chromium (Playwright) logs in as an expert, asks the
local model (SmolLM2-135M, short turns) a domain question, corrects the model's answer in place, sends a follow-up,
marks the corrected turn as the final answer and submits; the stored transcript says which turn was corrected and
what the model really said. Served by `assay annotate serve` in its own process over a SQLite file."""

from __future__ import annotations

from annotate_support import logged_in_page
from sqlalchemy import select

from assay.platform.users import create_user

PW = "e2e-password"


def test_expert_corrects_the_model_and_marks_the_final_answer_in_chromium(tmp_path, monkeypatch):
    from assay.annotate import workflow
    from assay.annotate.export import export_rows
    from assay.annotate.models import Annotation
    from assay.core.record import Record
    from assay.platform.db import Database

    monkeypatch.setenv("ASSAY_DIALOGUE_CACHE", str(tmp_path / "dialogue-cache.sqlite"))  # the server inherits it
    db_path = tmp_path / "e2e.db"
    db = Database(str(db_path))
    db.migrate()
    with db.write() as s:
        create_user(s, "expert", PW, "annotator")
        p = workflow.create_project(s, "med", "dialogue", guidelines="Correct the model; mark the final answer.",
                                    config={"max_tokens": 24, "max_turns": 6, "domain": "medicine"})
        workflow.add_member(s, p, "expert")
        workflow.add_items(s, p, [Record("q1", {"question": "What is a normal resting heart rate for adults?"},
                                         "text")])
    db.dispose()
    corrected = "A normal resting heart rate for adults is 60 to 100 beats per minute."

    with logged_in_page(db_path, "expert", PW, (1200, 1200), 60_000) as session:
        page, errors = session.page, session.errors
        page.click("text=med")
        page.click("#start")
        page.wait_for_selector("#ask")
        assert "normal resting heart rate" in page.inner_text("#question")
        assert page.is_disabled("#expert-message")

        # submitting before the model spoke is stopped in the page
        page.fill("#final-answer", "x")
        page.click("#submit")
        assert "at least once" in page.inner_text("#dialogue-status")

        page.click("#ask")
        page.wait_for_selector("#model-text-0")
        said = page.input_value("#model-text-0")
        assert said.strip()
        assert page.text_content("#badge-0") == ""
        page.fill("#model-text-0", corrected)  # the expert corrects the model in place
        assert "corrected" in page.text_content("#badge-0")

        page.fill("#expert-message", "Is it lower in athletes?")
        page.click("#ask")
        page.wait_for_selector("#model-text-2")
        assert page.inner_text("#turn-1").endswith("Is it lower in athletes?")
        page.click("#final-0")
        assert page.input_value("#final-answer") == corrected
        assert "final" in page.get_attribute("#turn-0", "class")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#saved")
        assert errors == [], errors

    db = Database(str(db_path))
    try:
        with db.read() as s:
            value = s.scalar(select(Annotation.value))
            rows = list(export_rows(s, workflow.find_project(s, "med"), "dialogue"))
    finally:
        db.dispose()
    assert [t["role"] for t in value["turns"]] == ["model", "expert", "model"]
    assert value["turns"][0]["corrected"] is True and value["turns"][0]["original"] == said.strip()
    assert value["turns"][2]["corrected"] is False and value["turns"][2]["verified"] is True
    assert value["final_answer"] == corrected and value["final_turn"] == 0
    assert rows[0]["annotator"] == "expert" and rows[0]["corrected_turns"] == [0]

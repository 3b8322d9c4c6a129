"""End to end in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) logs in as an
annotator, completes a preference item with the keyboard (2, then Ctrl+Enter) and an SFT item, and the exports
contain both with their lineage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from annotate_support import annotate_server
from assay.platform.users import create_user

CHROMIUM = Path(os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PW = "e2e-password"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")


@pytest.fixture
def server(tmp_path):
    from assay.annotate import workflow
    from assay.platform.db import Database
    from assay.core.record import LineageEntry, Record

    db_path = tmp_path / "e2e.db"
    db = Database(str(db_path))
    db.migrate()
    lineage = [LineageEntry("self_instruct", "1", "abc123")]
    with db.write() as s:
        create_user(s, "ann", PW, "annotator")
        prefs = workflow.create_project(s, "prefs", "preference", guidelines="Choose the more helpful answer.")
        sft = workflow.create_project(s, "demos", "sft", guidelines="Write the answer you would want to read.")
        for p in (prefs, sft):
            workflow.add_member(s, p, "ann")
        workflow.add_items(s, prefs, [Record("pair-1", {"prompt": "What is the capital of France?",
                                                        "chosen": "Paris.", "rejected": "Lyon, I think."},
                                             "preference", lineage=lineage)])
        workflow.add_items(s, sft, [Record("demo-1", {"prompt": "Say hello in French."}, "conversation",
                                           lineage=lineage)])
    db.dispose()
    with annotate_server(db_path) as base:
        yield base, db_path


def test_annotator_completes_preference_and_sft_items_in_chromium(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from assay.platform.db import Database
    from assay.annotate.export import export

    base, db_path = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(base + "/")
            assert "/login" in page.url
            page.fill("#username", "ann")
            page.fill("#password", PW)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            assert page.locator("text=prefs").count() == 1 and page.locator("text=demos").count() == 1

            # preference: keyboard only — 2 picks B, Ctrl+Enter submits
            page.click("text=prefs")
            assert "Choose the more helpful answer." in page.inner_text(".guidelines")
            page.click("#start")
            page.wait_for_selector("#annotate-form")
            side_b = page.inner_text("#side-b .text")
            page.keyboard.press("2")
            assert page.is_checked("#choice-b")
            page.keyboard.press("Control+Enter")
            page.wait_for_selector("#saved")
            assert page.locator("#annotate-form").count() == 0  # the only item is done
            page.screenshot(path=str(tmp_path / "preference-done.png"))

            # SFT: type a response, submit with Ctrl+Enter from inside the text area
            page.goto(base + "/")
            page.click("text=demos")
            page.click("#start")
            page.wait_for_selector("#response")
            assert "Say hello in French." in page.inner_text(".prompt")
            page.fill("#response", "Bonjour !")
            page.focus("#response")
            page.keyboard.press("Control+Enter")
            page.wait_for_selector("#saved")
            assert page.locator("#annotate-form").count() == 0
        finally:
            browser.close()

    db = Database(str(db_path))
    export(db, "prefs", "dpo", tmp_path / "dpo.jsonl")
    export(db, "demos", "sft", tmp_path / "sft.jsonl")
    dpo = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert len(dpo) == 1 and dpo[0]["chosen"] == side_b and dpo[0]["record_id"] == "pair-1"
    assert dpo[0]["annotators"] == ["ann"] and dpo[0]["lineage"][0]["step"] == "self_instruct"
    assert len(sft) == 1 and sft[0]["messages"][-1] == {"role": "assistant", "content": "Bonjour !"}
    assert sft[0]["record_id"] == "demo-1" and sft[0]["annotator"] == "ann"
    assert sft[0]["lineage"][-1]["step"] == "annotate.sft"

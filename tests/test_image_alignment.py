"""The image_text_alignment step: true captions outrank shuffled ones with the offline model; scores, thresholds,
drop/flag, and bad input (no image, corrupt image, no caption) as counted reasons."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assay.core.record import Record  # noqa: E402
from assay.core.step import REGISTRY, StepContext  # noqa: E402
from assay.harvest.image.alignment import SCORE_SIGNAL, ImageTextAlignment  # noqa: E402
from assay.models.image_embeddings import DEFAULT_THRESHOLDS, get_image_text_embedder  # noqa: E402
from image_text_fixtures import WORDS, render_text_image, shape_image  # noqa: E402

TEMPLATES = ("a sign that says {}", "the word {} written on a wall", "{}", "a poster: {} in black letters")


def _pair(i: int, word: str, caption: str | None = None, **content: object) -> Record:
    c = {"caption": caption if caption is not None else TEMPLATES[i % len(TEMPLATES)].format(word),
         "image": render_text_image(word, seed=i)}
    c.update(content)
    return Record(f"r{i}", c, modality="image_text")


def test_true_caption_outranks_shuffled_caption_with_the_offline_model() -> None:
    """Acceptance (issue 10): with the offline model, the true caption ranks above a shuffled one for >= 90% of
    rendered-text images."""
    emb = get_image_text_embedder("auto")
    images = [render_text_image(w, seed=i) for i, w in enumerate(WORDS)]
    captions = [TEMPLATES[i % len(TEMPLATES)].format(w) for i, w in enumerate(WORDS)]
    shuffled = captions[7:] + captions[:7]  # every image gets another image's caption
    iv = emb.embed_images(images)
    true = np.einsum("ij,ij->i", iv, emb.embed_texts(captions))
    wrong = np.einsum("ij,ij->i", iv, emb.embed_texts(shuffled))
    rate = float(np.mean(true > wrong))
    print(f"\n{emb.name}: true caption above shuffled for {rate:.1%} of {len(WORDS)} images; "
          f"true mean {true.mean():.3f}, shuffled mean {wrong.mean():.3f}")
    assert rate >= 0.9


def test_step_scores_keeps_matches_and_drops_mismatches() -> None:
    step = ImageTextAlignment({"model": "ocr"})
    step.setup(StepContext())
    batch = [_pair(i, w) for i, w in enumerate(WORDS[:6])]
    batch += [_pair(10 + i, w, caption=f"a photo of a {WORDS[20 + i]}") for i, w in enumerate(WORDS[:4])]
    out = step.process_batch(batch, StepContext())
    assert all(SCORE_SIGNAL in r.signals for r in out)
    kept = [r for r in out if r.drop is None]
    dropped = [r for r in out if r.drop is not None]
    assert {r.id for r in kept} == {f"r{i}" for i in range(6)}
    assert {r.drop for r in dropped} == {("image_text_alignment", "low_clip_score")}
    assert min(r.signals[SCORE_SIGNAL] for r in kept) > max(r.signals[SCORE_SIGNAL] for r in dropped)
    assert step.threshold == DEFAULT_THRESHOLDS["ocr-minilm"] and step.stats.counters["scored"] == 10


def test_bad_input_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "on-disk.png"
    path.write_bytes(render_text_image("harbor", fmt="PNG"))
    batch = [
        Record("ok", {"caption": "harbor", "image_path": str(path)}, modality="image_text"),
        Record("corrupt", {"caption": "harbor", "image": b"\xff\xd8\xff\xe0 truncated jpeg"}, modality="image_text"),
        Record("missing-file", {"caption": "harbor", "image_path": str(tmp_path / "gone.jpg")}, modality="image_text"),
        Record("no-image", {"caption": "harbor"}, modality="image_text"),
        Record("no-caption", {"caption": "  ", "image": render_text_image("harbor")}, modality="image_text"),
        Record("text", "just a text record"),
    ]
    step = ImageTextAlignment({"model": "ocr"})
    out = step.process_batch(batch, StepContext())
    reasons = {r.id: r.drop[1] if r.drop else None for r in out}
    assert reasons == {"ok": None, "corrupt": "corrupt_image", "missing-file": "missing_image_file",
                       "no-image": "no_image", "no-caption": "no_caption", "text": "no_image"}
    assert out[0].signals[SCORE_SIGNAL] > DEFAULT_THRESHOLDS["ocr-minilm"]


def test_flag_action_and_explicit_threshold() -> None:
    batch = [_pair(0, "violin"), _pair(1, "violin", caption="a violin"), _pair(2, "rocket", caption="a zebra"),
             Record("blank", {"caption": "a red circle", "image": shape_image((220, 20, 20))}, modality="image_text")]
    strict = ImageTextAlignment({"model": "ocr", "threshold": 0.99, "action": "flag"})
    out = strict.process_batch([r.copy() for r in batch], StepContext())
    assert all(r.drop is None for r in out)
    # no legible text: no evidence, kept unscored, and with action flag marked as unchecked
    assert [r.signals.get("image_text_alignment.flag") for r in out] == ["low_clip_score"] * 3 + ["unscorable_image"]
    assert SCORE_SIGNAL not in out[3].signals
    assert strict.stats.counters["flagged:low_clip_score"] == 3
    assert strict.stats.counters["flagged:unscorable_image"] == 1
    assert strict.stats.counters["unscorable_image"] == 1
    lax = ImageTextAlignment({"model": "ocr", "threshold": 0.0, "unscorable": "drop"})
    out = lax.process_batch([r.copy() for r in batch], StepContext())
    assert [r.drop for r in out] == [None] * 3 + [("image_text_alignment", "unscorable_image")]


def test_batches_smaller_than_the_input_give_the_same_scores() -> None:
    batch = [_pair(i, w) for i, w in enumerate(WORDS[:5])]
    one = ImageTextAlignment({"model": "ocr", "batch_size": 2}).process_batch([r.copy() for r in batch],
                                                                               StepContext())
    all_at_once = ImageTextAlignment({"model": "ocr", "batch_size": 64}).process_batch(
        [r.copy() for r in batch], StepContext())
    assert [r.signals[SCORE_SIGNAL] for r in one] == pytest.approx([r.signals[SCORE_SIGNAL] for r in all_at_once],
                                                                   abs=1e-5)


def test_step_is_registered_for_recipes() -> None:
    assert REGISTRY.get("image_text_alignment") is ImageTextAlignment
    with pytest.raises(ValueError):
        ImageTextAlignment({"modle": "ocr"})  # unknown keys are errors


def test_recipe_run_end_to_end(tmp_path: Path) -> None:
    """`assay run` on JSONL image-text records (image bytes base64-tagged): matching pairs in the output with their
    score, a mismatched pair and a corrupt image in rejected/ with their reasons."""
    from assay.core.record import dumps
    from testutil import assay_cli, read_output

    records = [_pair(i, w) for i, w in enumerate(WORDS[:4])]
    records.append(_pair(20, "garden", caption="a red sports car"))
    records.append(Record("corrupt", {"caption": "a sign", "image": b"\x89PNG\r\n\x1a\n cut short"},
                          modality="image_text"))
    src = tmp_path / "pairs.jsonl"
    src.write_bytes(b"".join(dumps(r.to_dict()) + b"\n" for r in records))
    recipe = tmp_path / "align.yaml"
    recipe.write_text("name: align\ninput: {format: jsonl}\noutput: {format: jsonl}\n"
                      "steps:\n  - image_text_alignment: {model: ocr}\n")
    env = {**os.environ, "ASSAY_STEP_MODULES": "assay.harvest.image.alignment,assay_test_steps"}
    assay_cli("run", str(recipe), "-i", str(src), "-o", str(tmp_path / "out"), "-w", "1", env=env)
    out = read_output(tmp_path / "out")
    assert sorted(r["id"] for r in out) == ["r0", "r1", "r2", "r3"]
    assert all(r["signals"][SCORE_SIGNAL] > DEFAULT_THRESHOLDS["ocr-minilm"] for r in out)
    stats = (tmp_path / "out" / "stats.json").read_text()
    assert "low_clip_score" in stats and "corrupt_image" in stats


#: real photographs (Debian's mate-backgrounds, GPL-2+) and real diagrams (the Python manual's figures, PSF License),
#: with captions that describe them; `make system-deps` installs both
PHOTO_DIR = Path("/usr/share/backgrounds/mate/nature")
FIGURE_DIR = Path("/usr/share/doc/python3.11/html/_images")
TRUE_PAIRS = {
    PHOTO_DIR / "LadyBird.jpg": "a ladybird on a green leaf",
    PHOTO_DIR / "YellowFlower.jpg": "close-up of a yellow flower",
    PHOTO_DIR / "Storm.jpg": "storm clouds over a field",
    PHOTO_DIR / "RainDrops.jpg": "rain drops on a window",
    PHOTO_DIR / "Dune.jpg": "a sand dune in the desert",
    FIGURE_DIR / "logging_flow.png": "how a logging call flows through loggers and handlers",
    FIGURE_DIR / "pathlib-inheritance.png": "class inheritance diagram of the pathlib module",
    FIGURE_DIR / "hashlib-blake2-tree.png": "BLAKE2 tree hashing: leaves and nodes",
}
WRONG_PAIRS = {PHOTO_DIR / "Garden.jpg": "a red sports car on a race track",
               PHOTO_DIR / "Wood.jpg": "screenshot of a spreadsheet with sales figures"}


def test_laion_recipe_with_the_ocr_stand_in_flags_instead_of_dropping(tmp_path: Path) -> None:
    """Issue 15 §3: with no CLIP model, `model: auto` resolved to OCR and the shipped LAION recipe dropped true
    pairs (photos and diagrams whose text the caption does not repeat) and kept mismatched photos unscored. Now the
    stand-in flags (low_clip_score, unscorable_image), drops nothing, and the run says so in one line at its start
    and in the data card."""
    from assay.core.errors import ErrorLog
    from assay.io.webdataset import read_webdataset
    from image_scenes import write_tar
    from testutil import ROOT, assay_cli

    pairs = {**TRUE_PAIRS, **WRONG_PAIRS}
    assert all(p.is_file() for p in pairs), "needs mate-backgrounds and python3-doc (make system-deps)"
    samples = [{"__key__": f"{i:04d}", p.suffix[1:]: p.read_bytes(), "txt": caption}
               for i, (p, caption) in enumerate(pairs.items())]
    write_tar(tmp_path / "in" / "00000.tar", samples)
    env = {k: v for k, v in os.environ.items() if k != "ASSAY_IMAGE_TEXT_MODEL"}  # no CLIP configured
    done = assay_cli("run", str(ROOT / "recipes" / "laion.yaml"), "-i", str(tmp_path / "in"), "-o",
                     str(tmp_path / "out"), "-w", "1", env=env, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("note: image_text_alignment: model 'auto' is the OCR stand-in")
    assert "flagged, not dropped" in lines[0]
    assert sum("OCR" in line for line in lines) == 1 and "Traceback" not in done.stderr

    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    (align,) = [s for s in stats["steps"] if s["name"] == "image_text_alignment"]
    assert align["records_in"] == len(pairs) and align["dropped"] == 0
    assert stats["notes"] == [lines[0].removeprefix("note: ")]
    assert "is the OCR stand-in" in (tmp_path / "out" / "report.html").read_text()

    out = [r for f in sorted((tmp_path / "out" / "data").glob("*.tar")) for r in read_webdataset(str(f), ErrorLog())]
    assert len(out) == len(pairs)  # nothing lost: every pair is kept, checked or not
    flags = {r.content["caption"]: r.signals.get("image_text_alignment.flag") for r in out}
    for caption in WRONG_PAIRS.values():  # photos without text: nothing to check them with, and it shows
        assert flags[caption] == "unscorable_image"
    assert sum(flag is not None for flag in flags.values()) >= len(WRONG_PAIRS)
    assert align["counters"].get("flagged:unscorable_image", 0) >= len(WRONG_PAIRS)
    assert align["counters"]["ocr.downscaled"] >= 7  # the photos are 1600-2560 px: the OCR work was capped


def test_stand_in_respects_an_explicit_action_and_named_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in flags only when the recipe leaves `action` unset and asks for `auto`; the note says which."""
    monkeypatch.delenv("ASSAY_IMAGE_TEXT_MODEL", raising=False)
    default = ImageTextAlignment({"model": "auto"})
    assert default.params.action == "flag" and "flagged, not dropped" in default.notes()[0]
    explicit = ImageTextAlignment({"model": "auto", "action": "drop"})
    assert explicit.params.action == "drop" and "action: drop as the recipe says" in explicit.notes()[0]
    named = ImageTextAlignment({"model": "ocr"})
    assert named.params.action == "drop" and named.notes() == []
    monkeypatch.setenv("ASSAY_IMAGE_TEXT_MODEL", "clip:/models/clip-vit-base-patch32")  # CLIP configured
    assert ImageTextAlignment({"model": "auto"}).params.action == "drop"

"""ImageReward-style reward head: learns a planted preference rule from image pairs (held-out words), gradients
match finite differences, the .npz round trip, reading preference layouts, and the image_reward step."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assay.core.record import Record  # noqa: E402
from assay.core.step import REGISTRY, StepContext  # noqa: E402
from assay.evolve.visual import (ImageReward, RewardHead, main, preference_of, preferences_from,  # noqa: E402
                                 train_reward_head)
from assay.models.image_embeddings import get_image_text_embedder, load_image  # noqa: E402
from image_text_fixtures import WORDS, render_text_image, shape_image  # noqa: E402

TRAIN_WORDS, TEST_WORDS = WORDS[:26], WORDS[26:]


def _pairs(words: list[str], n: int, seed: int) -> list[dict]:
    """Planted rule: people prefer the image whose rendered word is the one the prompt asks for."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        want, other = rng.sample(words, 2)
        rows.append({"prompt": f"a poster that says {want}", "chosen": render_text_image(want, seed=k % 2),
                     "rejected": render_text_image(other, seed=(k + 1) % 2), "kind": "image"})
    return rows


@pytest.fixture(scope="module")
def ocr():  # noqa: ANN201
    return get_image_text_embedder("ocr")


@pytest.fixture(scope="module")
def trained(ocr):  # noqa: ANN001, ANN201
    return train_reward_head(_pairs(TRAIN_WORDS, 120, seed=1), ocr, val_fraction=0.2)


def _heldout_accuracy(head: RewardHead, ocr, rows: list[dict]) -> float:  # noqa: ANN001
    prefs, _ = preferences_from(rows)
    txt = ocr.embed_texts([p.prompt for p in prefs])
    sc = head.score(ocr.embed_images([p.chosen for p in prefs]), txt)
    sr = head.score(ocr.embed_images([p.rejected for p in prefs]), txt)
    return float(np.mean(sc > sr))


def test_reward_head_learns_the_planted_rule_on_unseen_words(trained, ocr) -> None:  # noqa: ANN001
    head, report = trained
    test_rows = _pairs(TEST_WORDS, 60, seed=2)
    acc = _heldout_accuracy(head, ocr, test_rows)
    print(f"\nlinear head: train {report.train_accuracy:.2f}, val {report.val_accuracy:.2f}, "
          f"held-out words {acc:.2f} (chance 0.5)")
    assert report.pairs == 120 and report.val_pairs == 24 and report.undecodable == 0
    assert acc >= 0.85
    # the same data with the labels reversed teaches the opposite preference: the head follows the labels
    flipped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in _pairs(TRAIN_WORDS, 120, seed=1)]
    anti, _ = train_reward_head(flipped, ocr)
    assert _heldout_accuracy(anti, ocr, test_rows) <= 0.15


def test_mlp_head_learns_too(ocr) -> None:  # noqa: ANN001
    head, report = train_reward_head(_pairs(TRAIN_WORDS, 120, seed=1), ocr, hidden=16, epochs=300, lr=0.01)
    acc = _heldout_accuracy(head, ocr, _pairs(TEST_WORDS, 60, seed=2))
    print(f"\nMLP head (16 hidden): held-out words {acc:.2f}")
    assert acc >= 0.85


@pytest.mark.parametrize("hidden", [0, 5])
def test_gradients_match_finite_differences(hidden: int) -> None:
    rng = np.random.default_rng(3)
    head = RewardHead(dim=4, hidden=hidden, seed=1)
    if hidden == 0:
        head.w = rng.normal(size=head.w.shape)
    z = rng.normal(size=(6, 13))
    g = rng.normal(size=6)
    _, cache = head._raw(z)
    analytic = head._grads(z, cache, g)
    eps = 1e-6
    for p, ga in zip(head._params(), analytic):
        flat, gflat = p.reshape(-1), ga.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 7)):
            old = flat[i]
            flat[i] = old + eps
            up = float(g @ head._raw(z)[0])
            flat[i] = old - eps
            down = float(g @ head._raw(z)[0])
            flat[i] = old
            assert gflat[i] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-6)


def test_head_round_trips_through_npz_without_pickle(trained, ocr, tmp_path: Path) -> None:  # noqa: ANN001
    head, _ = trained
    path = head.save(tmp_path / "heads" / "reward.npz")
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"meta", "mean", "std", "w"}
    again = RewardHead.load(path)
    img = ocr.embed_images([render_text_image("lemon"), render_text_image("kettle")])
    txt = ocr.embed_texts(["lemon", "lemon"])
    assert np.allclose(head.score(img, txt), again.score(img, txt))
    assert again.embedder_spec == "" and again.embedder_name == "ocr-minilm"
    assert again.report["pairs"] == 120
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read reward head"):
        RewardHead.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="expects 384-d"):
        again.score(np.zeros((1, 16), np.float32), np.zeros((1, 16), np.float32))


def test_preference_layouts() -> None:
    a, b = render_text_image("apple"), render_text_image("zebra")
    export_row = {"prompt": "apple", "chosen": a, "rejected": b, "kind": "image", "votes": {"a": 2, "b": 0}}
    assert preference_of(export_row).chosen == a
    pick_a_pic = {"caption": "apple", "jpg_0": b, "jpg_1": a, "label_0": 0}
    p = preference_of(pick_a_pic)
    assert (p.chosen, p.rejected) == (a, b)
    assert preference_of({**pick_a_pic, "label_0": 0.5}) is None  # tie
    assert preference_of({"prompt": "x", "chosen": "text answer", "rejected": ""}) is None
    assert preference_of({"prompt": "x", "chosen": "https://example.org/a.jpg", "rejected": a}) is None
    as_record = Record("p1", export_row, modality="preference")
    as_json = orjson.loads(as_record.to_json())  # a record line as read from JSONL: bytes base64-tagged
    prefs, skipped = preferences_from([as_record, as_json, {"text": "not a preference"}])
    assert len(prefs) == 2 and skipped == 1 and prefs[0].chosen == a
    assert load_image(prefs[1].chosen).tobytes() == load_image(a).tobytes()


def test_undecodable_pairs_are_left_out_and_counted(ocr) -> None:  # noqa: ANN001
    rows = _pairs(TRAIN_WORDS, 20, seed=5)
    rows[3]["chosen"] = b"\x89PNG broken"
    _, report = train_reward_head(rows, ocr, epochs=50)
    assert report.undecodable == 1 and report.pairs == 19


def test_image_reward_step_scores_records_and_pairs(trained, tmp_path: Path) -> None:  # noqa: ANN001
    head, _ = trained
    path = head.save(tmp_path / "reward.npz")
    step = ImageReward({"head": str(path), "model": "ocr"})
    step.setup(StepContext())
    singles = [Record(f"m{i}", {"caption": f"a poster that says {w}", "image": render_text_image(w, seed=i)},
                      modality="image_text") for i, w in enumerate(TEST_WORDS[:6])]
    mismatched = [Record(f"x{i}", {"caption": f"a poster that says {w}",
                                   "image": render_text_image(TEST_WORDS[(i + 3) % 6], seed=i)},
                         modality="image_text") for i, w in enumerate(TEST_WORDS[:6])]
    pairs = [Record(f"p{i}", row, modality="preference") for i, row in enumerate(_pairs(TEST_WORDS, 8, seed=9))]
    broken = Record("bad", {"caption": "x", "image": b"GIF89a broken"}, modality="image_text")
    text = Record("t", "plain text")
    out = step.process_batch(singles + mismatched + pairs + [broken, text], StepContext())
    assert all(r.drop is None for r in out)
    good = [r.signals["reward.score"] for r in out[:6]]
    bad = [r.signals["reward.score"] for r in out[6:12]]
    assert all(g > b for g, b in zip(good, bad))  # same caption: the image that shows it scores higher
    margins = [r.signals["reward.margin"] for r in out[12:20]]
    assert sum(m > 0 for m in margins) >= 7
    assert all(r.signals["reward.margin"] == pytest.approx(r.signals["reward.chosen"] - r.signals["reward.rejected"],
                                                          abs=1e-5) for r in out[12:20])
    assert "reward.score" not in broken.signals and not text.signals
    assert step.stats.counters["skipped:undecodable_image"] == 1
    assert step.stats.counters["skipped:not_an_image_with_caption"] == 1
    assert REGISTRY.get("image_reward") is ImageReward


def test_step_refuses_a_head_of_another_dimension(trained, tmp_path: Path) -> None:  # noqa: ANN001
    head, _ = trained
    path = head.save(tmp_path / "reward.npz")
    with pytest.raises(ValueError, match="trained on 384-d features"):
        ImageReward({"head": str(path), "model": "histogram"}).setup(StepContext())


def test_command_line_trains_from_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from assay.core.record import dumps

    prefs = tmp_path / "prefs.jsonl"
    rows = _pairs(TRAIN_WORDS, 40, seed=7) + [{"prompt": "p", "chosen": "an answer", "rejected": "another"}]
    rows.append({"prompt": "p", "chosen": str(tmp_path / "gone.png"), "rejected": render_text_image("p")})
    rows.append({"prompt": "shape", "chosen": shape_image((1, 200, 1)), "rejected": shape_image((200, 1, 1))})
    prefs.write_bytes(b"".join(dumps(r) + b"\n" for r in rows))
    assert main(["train", str(prefs), "--model", "ocr", "--out", str(tmp_path / "h.npz"), "--epochs", "100"]) == 0
    out = capsys.readouterr().out
    assert '"pairs": 41' in out and '"undecodable": 1' in out and '"skipped": 1' in out  # text row: not images
    assert RewardHead.load(tmp_path / "h.npz").embedder_spec == "ocr"

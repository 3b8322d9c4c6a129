"""`assay quality train / score / info` on real files, including broken lines and bad arguments."""

from __future__ import annotations

import gzip

import orjson
import pytest
from typer.testing import CliRunner

from assay.harvest.quality_cli import app, read_texts
from assay.models.quality_classifier import QualityModel

from test_quality import BOILER, PROSE

runner = CliRunner()


def _jsonl(path, rows, gz=False):
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


@pytest.fixture()
def files(tmp_path):
    pos = _jsonl(tmp_path / "pos.jsonl", [{"text": t} for t in PROSE * 3])
    # negatives: gzipped, with a broken line, a row without text, a too-short text and one Assay record
    neg_rows = [{"text": t, "url": "u"} for t in BOILER * 3] + [{"body": "no text field"}, {"text": "tiny"}]
    neg = tmp_path / "neg.jsonl.gz"
    data = b"".join(orjson.dumps(r) + b"\n" for r in neg_rows) + b"{broken json\n"
    data += orjson.dumps({"id": "r1", "content": BOILER[0] + " Login", "modality": "text", "meta": {}}) + b"\n"
    neg.write_bytes(gzip.compress(data))
    return pos, str(neg)


def test_train_info_and_score(files, tmp_path):
    pos, neg = files
    model_path = tmp_path / "m.npz"
    res = runner.invoke(app, ["train", "-p", pos, "-n", neg, "-o", str(model_path), "--backend", "hashed",
                              "--dim", "4096", "--test-fraction", "0.25"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy" in res.output and "bad_json" in res.output and "missing_field" in res.output
    model = QualityModel.load(model_path)
    assert model.task == "binary" and model.info["training"]["n_train"] + model.info["training"]["n_eval"] == 37
    assert model.info["sources"]["skipped"]["negative"] == {"short_or_empty": 1, "bad_json": 1, "missing_field": 1}

    res = runner.invoke(app, ["info", str(model_path), "--json"])
    assert res.exit_code == 0 and orjson.loads(res.stdout)["format"] == "assay-quality-model"

    inp = _jsonl(tmp_path / "in.jsonl", [{"text": PROSE[0]}, {"text": BOILER[1]}, {"text": ""}])
    out = tmp_path / "out" / "scored.jsonl.gz"
    res = runner.invoke(app, ["score", "--model", str(model_path), inp, str(out)])
    assert res.exit_code == 0, res.output
    rows = [orjson.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(rows) == 3 and rows[0]["content"] == PROSE[0]
    assert rows[0]["signals"]["quality.score"] > 0.5 > rows[1]["signals"]["quality.score"]
    assert "quality.score" not in rows[2]["signals"] and "1 records without text" in res.output
    assert not list(out.parent.glob(".*"))  # written under a temporary name, then renamed


def test_train_with_graded_labels(tmp_path):
    rows = [{"text": t, "score": 4 + i % 2} for i, t in enumerate(PROSE * 3)]
    rows += [{"text": t, "score": i % 2} for i, t in enumerate(BOILER * 3)]
    rows += [{"text": PROSE[0]}]  # no label: skipped and counted
    labels = _jsonl(tmp_path / "graded.jsonl", rows)
    model_path = tmp_path / "edu.npz"
    res = runner.invoke(app, ["train", "--labels", labels, "-o", str(model_path), "-b", "hashed", "--dim", "4096"])
    assert res.exit_code == 0, res.output
    model = QualityModel.load(model_path)
    assert model.task == "regression" and model.info["label_max"] == 5
    assert "held-out MAE" in res.output and "no_label" in res.output
    assert model.score([PROSE[1]])[0] > 2.5 > model.score([BOILER[2]])[0]


@pytest.mark.parametrize("args, message", [
    (["--labels", "x.jsonl", "-p", "y.jsonl"], "either --labels"),
    (["-p", "y.jsonl"], "go together"),
    (["--labels", "missing.jsonl", "--task", "nonsense"], "--task"),
    (["--labels", "missing.jsonl"], "no input files"),
])
def test_train_argument_errors(tmp_path, args, message):
    res = runner.invoke(app, ["train", "-o", str(tmp_path / "m.npz"), *args])
    assert res.exit_code == 2 and message in res.output


def test_score_rejects_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "fake.npz").write_bytes(b"PK\x03\x04 nope")
    inp = _jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    res = runner.invoke(app, ["score", "-m", str(tmp_path / "fake.npz"), inp, str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "not an Assay quality model" in res.output
    assert not (tmp_path / "o.jsonl").exists()


def test_read_texts_sample_limit_is_seeded(tmp_path):
    src = _jsonl(tmp_path / "many.jsonl", [{"text": f"document number {i}"} for i in range(50)])
    a, _, skipped = read_texts([src], limit=10, seed=1)
    b, _, _ = read_texts([src], limit=10, seed=1)
    c, _, _ = read_texts([src], limit=10, seed=2)
    assert a == b != c and len(a) == 10 and skipped == {"over_limit": 40}

"""The ONNX Runtime MiniLM backend: the packaged all-MiniLM-L6-v2 exported with torch.onnx into a cache folder, its
vectors checked against the sentence-transformers (torch) backend on real texts, the export cache, and the hybrid
index embedding queries with it (same results as with torch query vectors; torch when the export fails)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from assay.knowledge.search import HybridIndex
from assay.models import embeddings
from assay.models.embeddings import (OnnxMiniLMBackend, backend_from_spec, export_minilm_onnx, get_backend, minilm,
                                   packaged_minilm_path)

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "The cat sat on the mat.",
    "A kitten was sitting on the rug.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "",
    "   \n\t ",
    "Ünïcödé wörds, 中文字符 and emoji 😀 in one line!",
    "a\ud800b",
    "\x00\x00nul\x00",
    # longer than the model's 256-token window: both backends must cut at the same place
    " ".join(["retrieval augmented generation needs fresh, signed knowledge patches"] * 60),
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private export folder for this module (ASSAY_ONNX_CACHE), exported once."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASSAY_ONNX_CACHE", str(folder))
        export_minilm_onnx()
        yield folder


def real_passages(n: int) -> list[str]:
    """Paragraphs of the Python documentation sample (real text of varied length)."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import knowledge as bench
    finally:
        sys.path.pop(0)
    return [p["text"] for p in bench.load_passages(max_pages=6)][:n]


def test_vectors_match_sentence_transformers(onnx_cache: Path) -> None:
    texts = TEXTS + real_passages(40)
    onnx = OnnxMiniLMBackend(batch_size=7)  # several batches of mixed lengths: padding must not leak into pooling
    ours, reference = onnx.encode(texts), minilm().encode(texts)
    assert ours.dtype == np.float32 and ours.shape == reference.shape == (len(texts), 384)
    blank = np.array([not t.strip() for t in texts])
    assert not ours[blank].any() and not reference[blank].any()
    cosine = (ours[~blank] * reference[~blank]).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    np.testing.assert_allclose(np.linalg.norm(ours[~blank], axis=1), 1.0, atol=1e-5)
    # one text alone or in a batch gives the same vector
    np.testing.assert_allclose(onnx.encode([texts[2]])[0], ours[2], atol=1e-5)


def test_export_is_cached_under_the_model_hash(onnx_cache: Path, tmp_path: Path) -> None:
    files = sorted(onnx_cache.glob("*.onnx"))
    assert len(files) == 1 and files[0].name.startswith("model-")
    stamp = files[0].stat().st_mtime_ns
    assert export_minilm_onnx() == files[0]  # found, not exported again
    assert files[0].stat().st_mtime_ns == stamp
    assert not list(onnx_cache.glob("*.tmp"))
    # other weights, other key: a copy of the folder with a changed config hashes differently
    model = packaged_minilm_path()
    copy = tmp_path / "model"
    copy.mkdir()
    for item in model.iterdir():
        (copy / item.name).symlink_to(item)
    (copy / "config.json").unlink()
    config = json.loads((model / "config.json").read_text())
    config["layer_norm_eps"] = 1e-11
    (copy / "config.json").write_text(json.dumps(config))
    assert embeddings._model_files_digest(copy) != embeddings._model_files_digest(model)


def test_names_and_specs(onnx_cache: Path) -> None:
    backend = get_backend("minilm-onnx")
    assert isinstance(backend, OnnxMiniLMBackend) and backend.name == "minilm" and backend.dim == 384
    spec = backend.spec()
    assert spec == {"kind": "minilm-onnx", "label": "minilm", "dim": 384, "max_seq_length": 256,
                    "model": "packaged:all-MiniLM-L6-v2"}
    rebuilt = backend_from_spec(json.loads(json.dumps(spec)), batch_size=3)
    assert isinstance(rebuilt, OnnxMiniLMBackend) and rebuilt.batch_size == 3
    np.testing.assert_allclose(rebuilt.encode(TEXTS[:3]), backend.encode(TEXTS[:3]), atol=1e-6)
    with pytest.raises(TypeError):
        backend.encode("a single string")
    assert backend.encode([]).shape == (0, 384)


def test_rejects_folders_it_cannot_reproduce(tmp_path: Path) -> None:
    model = packaged_minilm_path()
    with pytest.raises(FileNotFoundError):
        OnnxMiniLMBackend(tmp_path)
    for name in ("tokenizer.json", "sentence_bert_config.json", "config.json"):
        (tmp_path / name).symlink_to(model / name)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                     "pooling_mode_mean_tokens": False}))
    with pytest.raises(ValueError, match="mean pooling"):
        OnnxMiniLMBackend(tmp_path)
    with pytest.raises(ValueError):
        OnnxMiniLMBackend(threads=0)


def docs() -> list[dict]:
    return [{"patch_id": f"p{i}", "version": 1, "text": text, "status": "accepted"}
            for i, text in enumerate(real_passages(60))]


def test_hybrid_index_embeds_queries_with_onnx(onnx_cache: Path) -> None:
    index = HybridIndex(embedder="minilm")
    index.upsert(docs())
    assert isinstance(index.query_encoder, OnnxMiniLMBackend)
    assert not isinstance(index.embedder, OnnxMiniLMBackend)  # documents stay on torch
    queries = ["how to open a file for reading", "exceptions raised by a function", "list comprehension syntax"]
    torch_vectors = index.embedder.encode(queries)
    for query, vector in zip(queries, torch_vectors):
        for mode in ("dense", "hybrid"):
            ours = index.search(query, 5, mode=mode)
            theirs = index.search(query, 5, mode=mode, vector=vector)
            assert [d for d, _ in ours] == [d for d, _ in theirs]
            np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)


def test_hybrid_index_falls_back_to_torch_when_export_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ASSAY_ONNX_CACHE", str(blocker / "onnx"))
    index = HybridIndex(embedder="minilm")
    index.upsert(docs()[:10])
    with pytest.warns(RuntimeWarning, match="stays on torch"):
        encoder = index.query_encoder
    assert encoder is index.embedder
    assert index.search("how to open a file", 3, mode="dense")
    assert not os.path.exists(blocker / "onnx")


def test_a_damaged_cache_file_is_exported_again(tmp_path: Path) -> None:
    model = packaged_minilm_path().resolve()
    damaged = tmp_path / f"{model.name}-{embeddings._model_files_digest(model)}.onnx"
    damaged.write_bytes(b"not an onnx graph")
    backend = OnnxMiniLMBackend(cache_dir=tmp_path)
    vector = backend.encode(["The cat sat on the mat."])
    assert damaged.stat().st_size > 1_000_000  # replaced by a real export
    assert float(vector[0] @ minilm().encode(["The cat sat on the mat."])[0]) >= 0.9999

"""semantic_dedup on planted paraphrase groups among Debian manual paragraphs, with the real MiniLM model, across
shards; NeMo Curator's within-cluster rule checked on vectors built to have known similarities."""

from __future__ import annotations

import numpy as np
from operator_support import real_texts, run_global

from assay.core.record import Record
from assay.core.step import REGISTRY
from assay.harvest.dedup.semantic import semdedup_cluster

GROUPS = [
    ["The cat sat on the mat all afternoon.", "All afternoon the cat was sitting on the mat.",
     "A cat spent the whole afternoon sitting on the mat."],
    ["PostgreSQL stores table data in files on disk.", "Table data in PostgreSQL is kept in files on the disk.",
     "PostgreSQL keeps the data of tables in disk files."],
    ["Python lists can grow and shrink at run time.", "At run time a Python list can grow or shrink.",
     "A list in Python may grow and shrink while the program runs."],
]


def test_one_text_per_paraphrase_group_is_kept_across_shards(tmp_path):
    # distinct real paragraphs: the first paragraph of some manual pages
    singles = []
    for d in real_texts(every=16):
        para = next((p for p in d["text"].split("\n") if len(p.split()) > 25), None)
        if para and para not in singles:
            singles.append(para)
    singles = singles[:20]
    texts = [(f"g{i}-{j}", t) for i, g in enumerate(GROUPS) for j, t in enumerate(g)]
    texts += [(f"s{i}", t) for i, t in enumerate(singles)]
    recs = [Record(i, t) for i, t in texts]
    step = REGISTRY.get("semantic_dedup")(clusters=4, threshold=0.85)
    out = run_global(step, [recs[0::2], recs[1::2]], tmp_path)
    kept = {r.id for r in out if r.drop is None}
    for i in range(len(GROUPS)):
        assert len([k for k in kept if k.startswith(f"g{i}-")]) == 1, kept
    # the real paragraphs are different texts: (almost) all kept
    assert len([k for k in kept if k.startswith("s")]) >= len(singles) - 1
    for r in out:
        if r.drop:
            assert r.drop == ("semantic_dedup", "semantic_duplicate") and r.signals["semdedup.cluster"] in kept


def test_within_cluster_rule_is_nemo_curators():
    # unit vectors with chosen similarities: b ~ a (0.99), c ~ b (0.99) but c ~ a lower, d apart
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.99, np.sqrt(1 - 0.99**2), 0.0])
    c = np.array([0.96, 0.28, 0.0])
    c /= np.linalg.norm(c)
    d = np.array([0.0, 0.0, 1.0])
    emb = np.stack([a, b, c, d])
    centroid = np.array([1.0, 0.0, 0.0])
    out = semdedup_cluster(emb, centroid, threshold=0.98, keep="closest", tiebreak=np.arange(4))
    # ordered by distance to the centroid a, b, c, d: b and c have an earlier member above 0.98; c leads to a
    assert out.tolist() == [0, 0, 0, 3]
    out = semdedup_cluster(emb, centroid, threshold=0.98, keep="farthest", tiebreak=np.arange(4))
    assert out[3] == 3 and out[2] == 2 and out[1] == 2 and out[0] in (1, 2)

"""Latency of the knowledge store's write path and of the service's reads, on SQLite and on PostgreSQL.

For ``-n`` patches: propose, two signed reviews, publish (each timed); then repeated ``get_patch``,
``verify_patch`` (the service: trusted keys read from the database, then the offline check) and the offline
``verify`` alone (three Ed25519 signatures: two reviews and the publisher). Prints p50/p99 per operation, and how
fast a service builds its search index from the change feed (BM25 only, so the store is measured, not a model).

    python benchmarks/knowledge_store.py                                    # SQLite in a temporary folder
    python benchmarks/knowledge_store.py --db postgresql://postgres@127.0.0.1:5432/test   # in a fresh schema

Search latency over 100,000 patches is ``benchmarks/knowledge.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable
from assay.platform.users import create_user

ROOT = Path(__file__).resolve().parent.parent


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs) * 1000:7.2f} ms   p99 {xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000:7.2f} ms"


def _timed(fn: Callable[[], object], times: list[float]) -> object:
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
    return out


def run(url: str, n: int, reads: int) -> None:
    from argon2 import PasswordHasher

    from assay.platform import auth
    from assay.platform.db import Database
    from assay.knowledge import keys
    from assay.knowledge.patch import verify
    from assay.knowledge.service import KnowledgeService
    from assay.knowledge.store import KnowledgeStore

    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # users are not what we measure
    db = Database(url)
    db.migrate()
    with db.write() as s:
        for u in ("author", "rev1", "rev2", "pub"):
            create_user(s, u, "password-123")
    store = KnowledgeStore(db)
    for r in ("rev1", "rev2"):
        store.grant(r, "medicine", "reviewer")
    store.grant("pub", "medicine", "publisher")
    k = {u: keys.generate() for u in ("rev1", "rev2", "pub")}
    for u in ("rev1", "rev2"):
        store.register_key(u, keys.raw_public(k[u]), "reviewer")
    store.register_key("pub", keys.raw_public(k["pub"]), "publisher")
    root = keys.generate()
    store.certify(root)

    t: dict[str, list[float]] = {"propose": [], "review": [], "publish": [], "get_patch": [], "verify_patch": [],
                                 "verify offline": []}
    last = None
    for i in range(n):
        p = _timed(lambda: store.propose("author", title=f"fact {i}", content=f"statement number {i} " * 20,
                                         domains=["medicine"]), t["propose"])
        for r in ("rev1", "rev2"):
            _timed(lambda: store.review(p.patch_id, 1, r, "accept", k[r]), t["review"])
        last = _timed(lambda: store.publish(p.patch_id, 1, "pub", k["pub"]), t["publish"])
    from assay.knowledge.search import HybridIndex

    svc = KnowledgeService(db, index=HybridIndex(None, embedder="none"),  # BM25 only: measures the feed, not a model
                           roots={keys.key_id(root): keys.raw_public(root)})
    t0 = time.perf_counter()
    indexed = svc.sync()
    sync_s = time.perf_counter() - t0
    doc = svc.get_patch(last.patch_id)
    for _ in range(reads):
        _timed(lambda: svc.get_patch(last.patch_id), t["get_patch"])
        assert _timed(lambda: svc.verify_patch(doc), t["verify_patch"])["valid"]
    ring, _checkpoints, _basis = svc.trust_ring()
    for _ in range(reads * 4):
        _timed(lambda: verify(doc, trust=ring), t["verify offline"])
    print(f"{db.url.split('@')[-1].split('?')[0]}: {n} patches, {reads} reads")
    for name, xs in t.items():
        print(f"  {name:<15} {_ms(xs)}   (n={len(xs)})")
    print(f"  index sync from the change feed: {indexed} versions in {sync_s * 1000:.0f} ms "
          f"({indexed / sync_s:,.0f} versions/s, BM25 only)")
    db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=None, help="postgresql://… (a fresh schema is made and dropped); default: a "
                                               "SQLite file in a temporary folder")
    ap.add_argument("-n", type=int, default=200, help="patches to propose, review and publish")
    ap.add_argument("--reads", type=int, default=500, help="repetitions of each read")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.db is None:
        with tempfile.TemporaryDirectory() as tmp:
            run(str(Path(tmp) / "knowledge.db"), args.n, args.reads)
        return
    import psycopg

    base = args.db
    schema = f"kbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in base else "?"
        run(f"{base}{sep}options=-csearch_path%3D{schema}", args.n, args.reads)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()

"""Load test of the annotation server: simulated annotators against a real server (uvicorn, N workers), on SQLite
(WAL) and on PostgreSQL, then a crash: ``kill -9`` of the whole server mid-load, a restart on the same database, and
the checks that nothing acknowledged was lost and no item went to more annotators than its overlap.

Each simulated annotator logs in (API token), then loops: ``POST /next`` (claim or resume a slot) → ``POST
/submit`` (an answer, sometimes with a rationale); occasionally it skips (``/release``). Two load shapes:

* **paced** (the goal's shape): the annotators together aim at ``--rate`` requests/s (think time between requests,
  spread at random); latency is measured per request from the moment it is sent.
* **saturation**: no think time, to show the ceiling of the machine.

Printed: requests/s, p50/p90/p99/max latency per endpoint, and the proof that every acknowledged annotation
(HTTP 201) is in the database, count for count. The goal from the issue: p99 < 50 ms at ≥ 200 req/s.

    python benchmarks/annotate_load.py                       # both backends, 50 annotators, 60 s, 2 workers
    python benchmarks/annotate_load.py --backend sqlite --seconds 20 --crash-only

The load generator runs on the same 2-core machine as the server (and, during development, next to other jobs):
it takes CPU from the server, so the figures are a lower bound for a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

PW = "bench-password-1"
PG_URL = os.environ.get("ASSAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


# -- database setup --------------------------------------------------------------------------------------------------
def make_db(backend: str, workdir: Path, annotators: int, items: int, overlap: int) -> tuple[str, int, callable]:
    """A fresh, migrated, populated database; returns (url, project id, cleanup)."""
    from argon2 import PasswordHasher

    from assay.annotate import workflow
    from assay.platform.db import Database
    from assay.core.record import Record

    if backend == "sqlite":
        url = str(workdir / "bench.db")
        cleanup = lambda: None  # noqa: E731
    else:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        base = PG_URL.replace("postgresql://", "")
        user_host, dbname = base.rsplit("/", 1)
        user, host = user_host.split("@")
        with psycopg.connect(host=host.split(":")[0], dbname=dbname, user=user, autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"

        def cleanup() -> None:
            with psycopg.connect(host=host.split(":")[0], dbname=dbname, user=user, autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{schema}" CASCADE')
    db = Database(url)
    db.migrate()
    # Real Argon2id hashes, but one hash shared by all simulated annotators (hashing 50 passwords is not the test)
    shared_hash = PasswordHasher().hash(PW)
    from assay.platform.models import User

    with db.write() as s:
        proj = workflow.create_project(s, "bench", "preference", overlap=overlap, lease_seconds=120,
                                       guidelines="Pick the better answer.")
        s.add_all([User(username=f"ann{i}", password_hash=shared_hash, role="annotator", active=True,
                        created_at=time.time()) for i in range(annotators)])
        s.flush()
        for i in range(annotators):
            workflow.add_member(s, proj, f"ann{i}")
        pid = proj.id
    text = "An answer of ordinary length, a few sentences long, as a model would write it. " * 4
    for start in range(0, items, 2000):
        with db.write() as s:
            workflow.add_items(s, s.get(workflow.Project, pid), [
                Record(f"bench{k}", {"prompt": f"Question {k}?", "chosen": f"{text} ({k}a)",
                                     "rejected": f"{text} ({k}b)"}, "preference")
                for k in range(start, min(items, start + 2000))])
    db.dispose()
    return url, pid, cleanup


# -- server --------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "assay.annotate.cli", "serve", "--db", url, "--port", str(port),
                             "--workers", str(workers), "--no-migrate"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            # all workers up: a few more probes
            for _ in range(10):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("server exited at start")
            time.sleep(0.2)
    kill_server(proc)
    raise RuntimeError("server did not come up")


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def kill_server(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the server's whole process group (the uvicorn supervisor and its workers: we started it with its own
    session, so its group id is its pid)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)


# -- a minimal HTTP/1.1 keep-alive client ----------------------------------------------------------------------------
class TransportError(Exception):
    pass


class RawClient:
    """Just enough HTTP/1.1 for JSON POSTs over one keep-alive connection. The load generator shares the CPU with
    the server, so it has to be cheap: this costs a fraction of a general-purpose client per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.token = ""

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def post(self, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        import orjson

        data = orjson.dumps(body) if body is not None else b""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n" + (f"Authorization: Bearer {self.token}\r\n" if self.token else "")
                + "\r\n").encode()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(head + data)
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length = next((int(v.split(":", 1)[1]) for v in lines[1:] if v.lower().startswith("content-length:")), 0)
            payload = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            await self.close()
            raise TransportError(str(e)) from None
        try:
            return status, (orjson.loads(payload) if payload else None)
        except orjson.JSONDecodeError:
            return status, {"raw": payload[:300].decode("utf-8", "replace")}


# -- the simulated annotators --------------------------------------------------------------------------------------
class Results:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, int] = defaultdict(int)
        self.acked: set[int] = set()  # annotation ids the server acknowledged (HTTP 201)
        self.failed_inflight = 0  # submits that died with the connection (outcome unknown to the client)
        self.requests = 0
        self.errors = 0


async def annotator(i: int, base: str, pid: int, deadline: float, interval: float, res: Results,
                    token_cache: dict) -> None:
    rng = random.Random(i)
    host, port = base.split("//")[1].split(":")
    client = RawClient(host, int(port))
    try:
        token = token_cache.get(i)
        if token is None:
            status, body = await client.post("/api/login", {"username": f"ann{i}", "password": PW})
            if status != 200:
                raise RuntimeError(f"login failed: {status} {body}")
            token = token_cache[i] = body["token"]
        client.token = token
        next_at = time.perf_counter() + rng.random() * interval

        async def call(kind: str, url: str, body: dict | None = None) -> tuple[int, dict | None] | None:
            nonlocal next_at
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + rng.expovariate(1 / interval), time.perf_counter())
            if time.perf_counter() > deadline:
                return None
            t0 = time.perf_counter()
            try:
                status, payload = await client.post(url, body)
            except TransportError:
                res.errors += 1
                if kind == "submit":
                    res.failed_inflight += 1
                await asyncio.sleep(0.2)
                return None
            res.latency[kind].append(time.perf_counter() - t0)
            res.status[f"{kind} {status}"] += 1
            res.requests += 1
            return status, payload

        while time.perf_counter() < deadline:
            r = await call("next", f"/api/projects/{pid}/next")
            if r is None or r[0] != 200:
                continue
            a = r[1]["assignment"]
            if a is None:
                await asyncio.sleep(0.5)
                continue
            if rng.random() < 0.03:
                await call("release", f"/api/projects/{pid}/assignments/{a['id']}/release")
                continue
            value = {"choice": rng.choice("aab" if i % 5 else "abt").replace("t", "tie")}
            if rng.random() < 0.3:
                value["rationale"] = "A is more specific and answers the question."
            r = await call("submit", f"/api/projects/{pid}/assignments/{a['id']}/submit",
                           {"value": value, "seconds": rng.uniform(5, 60)})
            if r is not None and r[0] == 201:
                res.acked.add(r[1]["annotation_id"])
    finally:
        await client.close()


async def run_load(base: str, pid: int, annotators: int, seconds: float, rate: float, token_cache: dict,
                   kill_after: float | None = None, proc: subprocess.Popen | None = None) -> tuple[Results, float]:
    res = Results()
    # log everybody in before the clock starts, a few at a time (logins are spread out in real life, and Argon2 is
    # meant to be slow)
    missing = [i for i in range(annotators) if i not in token_cache]
    for k in range(0, len(missing), 4):
        await asyncio.gather(*(annotator(i, base, pid, 0, 0, Results(), token_cache) for i in missing[k:k + 4]))
    interval = annotators / rate if rate else 0.0
    start = time.perf_counter()
    deadline = start + seconds
    tasks = [asyncio.create_task(annotator(i, base, pid, deadline, interval, res, token_cache))
             for i in range(annotators)]
    if kill_after is not None and proc is not None:
        await asyncio.sleep(kill_after)
        kill_server(proc)  # kill -9 mid-load
    await asyncio.gather(*tasks)
    return res, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def report(label: str, res: Results, elapsed: float) -> dict:
    every = [x for v in res.latency.values() for x in v]
    row = {"label": label, "req_s": res.requests / elapsed, "p50": pct(every, 0.5), "p90": pct(every, 0.9),
           "p99": pct(every, 0.99), "max": max(every) * 1000 if every else float("nan"),
           "annotations": len(res.acked), "errors": res.errors}
    print(f"  {label}: {res.requests} requests in {elapsed:.1f} s = {row['req_s']:.0f} req/s; "
          f"latency p50 {row['p50']:.1f} ms, p90 {row['p90']:.1f} ms, p99 {row['p99']:.1f} ms, max {row['max']:.0f} ms; "
          f"{len(res.acked)} annotations acknowledged; transport errors {res.errors}")
    for kind, v in sorted(res.latency.items()):
        print(f"      {kind:8s} n={len(v):6d}  p50 {pct(v, .5):6.1f} ms  p99 {pct(v, .99):6.1f} ms  "
              f"mean {statistics.fmean(v) * 1000:6.1f} ms")
    print(f"      statuses: {dict(sorted(res.status.items()))}")
    return row


def db_facts(url: str, pid: int, overlap: int) -> dict:
    from sqlalchemy import func, select

    from assay.platform.db import Database
    from assay.annotate.models import REVIEW_REJECTED, Annotation, Assignment

    db = Database(url)
    with db.read() as s:
        ids = set(s.scalars(select(Annotation.id).where(Annotation.project_id == pid)))
        per_item = s.execute(select(Annotation.item_id, func.count(), func.count(func.distinct(Annotation.user_id)))
                             .where(Annotation.project_id == pid, Annotation.review_status != REVIEW_REJECTED)
                             .group_by(Annotation.item_id)).all()
        holders = s.execute(select(Assignment.item_id, func.count(func.distinct(Assignment.user_id)),
                                   func.count())
                            .where(Assignment.project_id == pid, Assignment.slot.is_not(None))
                            .group_by(Assignment.item_id)).all()
        dup_pairs = s.execute(select(func.count()).select_from(
            select(Annotation.item_id, Annotation.user_id).where(Annotation.project_id == pid)
            .group_by(Annotation.item_id, Annotation.user_id).having(func.count() > 1).subquery())).scalar()
    db.dispose()
    return {"ids": ids, "max_annotations_per_item": max((n for _, n, _ in per_item), default=0),
            "max_annotators_per_item": max((d for _, _, d in per_item), default=0),
            "max_holders_per_item": max((h for _, h, _ in holders), default=0),
            "max_slots_per_item": max((n for _, _, n in holders), default=0),
            "duplicate_item_user": dup_pairs, "overlap": overlap}


# -- main ----------------------------------------------------------------------------------------------------------
def bench_backend(backend: str, args: argparse.Namespace) -> list[dict]:
    print(f"\n== {backend}: {args.annotators} annotators, {args.workers} uvicorn workers, overlap {args.overlap}, "
          f"{args.items} items ==")
    rows = []
    with tempfile.TemporaryDirectory(prefix="annotate-bench-") as tmp:
        url, pid, cleanup = make_db(backend, Path(tmp), args.annotators, args.items, args.overlap)
        try:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            tokens: dict = {}
            acked: set[int] = set()
            if not args.crash_only:
                proc = start_server(url, port, args.workers)
                try:
                    for label, rate in (("paced", args.rate), ("saturation", 0.0)):
                        if label == "saturation" and args.no_saturation:
                            continue
                        cpu0, client0 = group_cpu_seconds(proc.pid), time.process_time()
                        res, elapsed = asyncio.run(run_load(base, pid, args.annotators, args.seconds, rate, tokens))
                        cpu = group_cpu_seconds(proc.pid) - cpu0
                        client_cpu = time.process_time() - client0
                        name = f"{label} ({'target ' + str(int(rate)) + ' req/s' if rate else 'no think time'})"
                        rows.append({"backend": backend, **report(name, res, elapsed)})
                        rows[-1]["server_cpu_ms"] = 1000 * cpu / max(1, res.requests)
                        print(f"      server CPU {1000 * cpu / max(1, res.requests):.2f} ms per request "
                              f"({cpu / elapsed:.2f} cores busy); load generator CPU "
                              f"{1000 * client_cpu / max(1, res.requests):.2f} ms per request")
                        acked |= res.acked
                        facts = db_facts(url, pid, args.overlap)
                        ok = acked <= facts["ids"] and len(facts["ids"]) == len(acked)
                        print(f"      database: {len(facts['ids'])} annotations, client acknowledged {len(acked)} "
                              f"-> {'EQUAL' if ok else 'MISMATCH'}")
                        rows[-1]["count_equal"] = ok
                finally:
                    kill_server(proc, signal.SIGTERM)
            # crash: kill -9 the server group mid-load, restart on the same database, continue
            print(f"  crash test: {args.crash_seconds:.0f} s of saturation load, kill -9 after "
                  f"{args.crash_seconds / 2:.0f} s, restart, {args.crash_seconds / 2:.0f} s more")
            proc = start_server(url, port, args.workers)
            res1, _ = asyncio.run(run_load(base, pid, args.annotators, args.crash_seconds, 0.0, tokens,
                                           kill_after=args.crash_seconds / 2, proc=proc))
            after_kill = db_facts(url, pid, args.overlap)
            lost = (acked | res1.acked) - after_kill["ids"]
            unacked = after_kill["ids"] - acked - res1.acked
            print(f"      killed: acknowledged before the kill {len(res1.acked)}, lost {len(lost)}; committed but "
                  f"unacknowledged (in flight at the kill) {len(unacked)} (≤ {res1.failed_inflight} submits cut off)")
            proc = start_server(url, port, args.workers)
            try:
                res2, elapsed2 = asyncio.run(run_load(base, pid, args.annotators, args.crash_seconds / 2, 0.0,
                                                      tokens))
            finally:
                kill_server(proc, signal.SIGTERM)
            report("after restart", res2, elapsed2)
            facts = db_facts(url, pid, args.overlap)
            all_acked = acked | res1.acked | res2.acked
            lost = all_acked - facts["ids"]
            print(f"      after restart: {len(facts['ids'])} annotations in the database, {len(all_acked)} "
                  f"acknowledged, lost {len(lost)}; max annotations per item {facts['max_annotations_per_item']}, "
                  f"max distinct annotators per item {facts['max_annotators_per_item']}, max slot holders per item "
                  f"{facts['max_holders_per_item']}, slots per item {facts['max_slots_per_item']} (overlap "
                  f"{args.overlap}); duplicate (item, annotator) pairs {facts['duplicate_item_user']}")
            ok = (not lost and facts["max_annotations_per_item"] <= args.overlap
                  and facts["max_annotators_per_item"] <= args.overlap and facts["duplicate_item_user"] == 0
                  and facts["max_slots_per_item"] == args.overlap)
            print(f"      crash verdict: {'OK' if ok else 'FAILED'}")
            rows.append({"backend": backend, "label": "crash", "crash_ok": ok, "lost": len(lost)})
        finally:
            cleanup()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=220.0, help="paced run: target requests/s for all annotators")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--items", type=int, default=8000)
    ap.add_argument("--crash-seconds", type=float, default=20.0)
    ap.add_argument("--crash-only", action="store_true")
    ap.add_argument("--no-saturation", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          f"(the load generator shares the cores with the server)")
    rows = []
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        rows += bench_backend(backend, args)
    print("\nsummary (goal: p99 < 50 ms at >= 200 req/s):")
    for r in rows:
        if r["label"] == "crash":
            print(f"  {r['backend']:10s} crash/restart: {'OK' if r['crash_ok'] else 'FAILED'} (lost {r['lost']})")
        else:
            print(f"  {r['backend']:10s} {r['label']:32s} {r['req_s']:7.0f} req/s  p50 {r['p50']:6.1f} ms  "
                  f"p99 {r['p99']:6.1f} ms  server CPU {r.get('server_cpu_ms', float('nan')):.2f} ms/req  "
                  f"(p99 vs goal: {r['p99'] / 50:.2f}x of 50 ms; rate vs goal {r['req_s'] / 200:.2f}x of 200 req/s)"
                  f"  counts equal: {r.get('count_equal')}")


if __name__ == "__main__":
    main()

"""Shift start: N people log in to the annotation server at the same moment (issue 14 §3: 100 logins took 36 s).

Creates N users in a fresh SQLite database, starts ``assay annotate serve --workers W`` (a real uvicorn server), fires
N concurrent ``POST /api/login`` requests (one thread each, distinct users, all from 127.0.0.1: successes are not
throttled), and prints the wall time until the last token arrived, the latency percentiles, and the Argon2
parameters of the stored hashes before and after.

    python benchmarks/annotate_logins.py                         # 100 logins, 2 workers, hashes at today's params
    python benchmarks/annotate_logins.py --existing-hashes old   # users hashed with argon2-cffi's defaults (64 MiB,
                                                                 # t=3, p=4): verified, then rehashed on login

Run it with ``PYTHONPATH=<an older checkout>/src`` to measure an older server the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from assay.platform.users import create_user

PW = "shift-start-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hash_params(db_path: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        hashes = [h for (h,) in conn.execute("SELECT password_hash FROM users")]
    counts: dict[str, int] = {}
    for h in hashes:
        m = re.search(r"\$(m=\d+,t=\d+,p=\d+)\$", h)
        counts[m.group(1) if m else "?"] = counts.get(m.group(1) if m else "?", 0) + 1
    return counts


def make_users(db_path: Path, n: int, existing: str) -> None:
    from argon2 import PasswordHasher

    from assay.platform.db import Database
    from assay.platform.models import User

    d = Database(str(db_path))
    d.migrate()
    old = PasswordHasher() if existing == "old" else None
    with d.write() as s:
        for k in range(n):
            if old is None:
                create_user(s, f"user{k:03d}", PW)
            else:
                s.add(User(username=f"user{k:03d}", password_hash=old.hash(PW), role="annotator", active=True))
    d.dispose()


def login(base: str, k: int) -> tuple[float, int]:
    body = json.dumps({"username": f"user{k:03d}", "password": PW}).encode()
    req = urllib.request.Request(base + "/api/login", body, {"content-type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return time.perf_counter() - t0, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--existing-hashes", choices=("current", "old"), default="current")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "logins.db"
        make_users(db_path, args.users, args.existing_hashes)
        before = hash_params(db_path)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen([sys.executable, "-m", "assay.annotate.cli", "serve", "--db", str(db_path),
                                 "--port", str(port), "--workers", str(args.workers)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise SystemExit("server did not start: " + proc.stderr.read().decode()[-2000:]) from None
                    time.sleep(0.2)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.users) as pool:
                results = list(pool.map(lambda k: login(base, k), range(args.users)))
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        after = hash_params(db_path)
    lat = sorted(t for t, _ in results)
    ok = sum(1 for _, st in results if st == 200)
    q = statistics.quantiles(lat, n=100)
    print(f"{args.users} concurrent logins, {args.workers} workers, {os.cpu_count()} CPUs: {ok} ok, "
          f"all done in {wall:.2f} s; latency p50 {q[49]:.2f} s, p90 {q[89]:.2f} s, max {lat[-1]:.2f} s")
    print(f"server CPU (all processes, start-up included): {server_cpu:.1f} s; load average now "
          f"{os.getloadavg()[0]:.1f}")
    print(f"stored hashes before: {before}; after: {after}")


if __name__ == "__main__":
    main()

"""Shared test helpers (import with `from testutil import ...`). Real data the tests read ships in tests/data/ (see its
README); real web pages come from Debian's manuals (tests/doc_pages.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # small redistributable data sets, with their licenses
SAMPLE = ROOT / "samples" / "python-docs"
PLUGINS = Path(__file__).resolve().parent / "plugins"

# let worker processes (spawned) find the test-only steps
os.environ["ASSAY_STEP_MODULES"] = "assay_test_steps"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    return path


def read_output(run_dir: Path) -> list[dict]:
    """Every output record of a run, in file order, as dicts."""
    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard
    from assay.run.executor import output_files

    out = []
    for f in output_files(str(run_dir)):
        for shard in plan_shards([f], "auto", 0):
            out.extend(r.to_dict() for r in read_shard(shard, ErrorLog()))
    return out


def assay_cli(*args: str, timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "assay"
    p = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"assay {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_process(args: list[str], probe_url: str, *, timeout: float = 60, **popen):  # noqa: ANN003, ANN201
    """Start a server process, wait until ``probe_url`` answers, yield the process, stop it at the end; a process that
    dies or never answers fails with the end of its stderr."""
    # stderr goes to a file, not a pipe: a server that logs every request would fill a pipe nobody reads and freeze
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, **popen)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(probe_url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    proc.wait(20)
                    err.seek(0)
                    raise RuntimeError("server did not start: " + err.read().decode(errors="replace")[-2000:]) from None
                time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)
        err.close()


@contextlib.contextmanager
def moto_s3_server(*, timeout: float = 60):  # noqa: ANN201
    """moto's S3 server in its own process on a free loopback port; yields its endpoint URL. Without werkzeug's line
    per request: http_process keeps stderr for start-up errors, and a full pipe would stall the server mid-run."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    quiet = ("import logging, sys; logging.getLogger('werkzeug').setLevel(logging.ERROR); "
             "from moto.server import main; main(sys.argv[1:])")
    with http_process([sys.executable, "-c", quiet, "-H", "127.0.0.1", "-p", str(port)], f"{endpoint}/moto-api/",
                      timeout=timeout):
        yield endpoint


class LoopbackLLMServer:
    """``python -m assay.models.llm.server --port 0 ARGS…`` in its own process: a real OpenAI-compatible
    server on loopback (``--engine vlm`` for the vision test engine); ``url`` is its ``/v1`` base."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "assay.models.llm.server", "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.url = line.split()[-1]

    def stats(self) -> dict[str, int]:
        import httpx

        return httpx.get(self.url.removesuffix("/v1") + "/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@contextlib.contextmanager
def uvicorn_thread(app, *, timeout: float = 30):  # noqa: ANN001, ANN201
    """Serve an ASGI app with a real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)

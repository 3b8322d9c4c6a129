"""Synthesis and judge steps run by `assay run` against real OpenAI-compatible servers on loopback (field-trial
issues): a server that is down when the run starts and comes back, one that never comes back, retries counted in
stats.json, `cache: off` as YAML writes it, Self-Instruct giving up, and `concurrency` meaning what it says."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from testutil import LoopbackLLMServer, assay_cli, free_port, read_output, write_jsonl

#: what a judge that works answers
GRADE = '{"reason": "correct and clear", "rating": 7}'


@contextlib.contextmanager
def served(*args: str) -> Iterator[LoopbackLLMServer]:
    server = LoopbackLLMServer(*args)
    try:
        yield server
    finally:
        server.stop()


class DownServer:
    """A port where the model server is down: it accepts each connection and closes it at once (the client sees a
    dropped connection, as from a server restarting behind a load balancer), counting the attempts."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.attempts = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the outage is over
                return
            self.attempts += 1
            conn.close()

    def wait_for(self, attempts: int, at_least: float, timeout: float = 60) -> None:
        started = time.monotonic()
        while self.attempts < attempts or time.monotonic() - started < at_least:
            assert time.monotonic() - started < timeout, f"only {self.attempts} connection attempts"
            time.sleep(0.05)

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux, and the port stays taken until it returns
        # (the next server then fails with 'Address already in use'); shutdown() does wake it
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        assert not self._thread.is_alive(), "the down server still holds its port"


def _recipe(tmp_path: Path, step: dict, **top) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "field-trial", "input": {"format": "jsonl", "text_key": None},
                                    "output": {"format": "jsonl"}, "steps": [step], **top}))
    return path


def _answers(tmp_path: Path, files: int, per_file: int) -> list[str]:
    return [str(write_jsonl(tmp_path / f"in-{f}.jsonl",
                            [{"id": f"{f}-{i}", "instruction": f"What is {f} + {i}?", "output": f"{f + i}."}
                             for i in range(per_file)]))
            for f in range(files)]


def _run(recipe: Path, inputs: list[str], out: Path, workers: int = 2) -> subprocess.Popen:
    args = [str(Path(sys.executable).parent / "assay"), "run", str(recipe), "-o", str(out), "-w", str(workers),
            "--no-report"]
    for i in inputs:
        args += ["-i", i]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _counters(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())["steps"][0]["counters"]


def _judge(url: str, **backend) -> dict:
    return {"judge_score": {"samples": 1, "backend": {"kind": "openai", "model": "judge", "base_url": url,
                                                       "max_retries": 3, "backoff": 0.1, **backend}}}


def test_a_server_outage_is_waited_out_and_retries_are_counted(tmp_path: Path) -> None:
    """The model server is down for the first seconds of a 2-worker run (longer than 3 retries with backoff last):
    the run used to stop with a multiprocessing traceback; it now waits for the server and loses nothing."""
    port = free_port()
    down = DownServer(port)
    out = tmp_path / "out"
    proc = _run(_recipe(tmp_path, _judge(f"http://127.0.0.1:{port}/v1"), batch_size=1), _answers(tmp_path, 2, 3),
                out)
    server = None
    try:
        down.wait_for(attempts=16, at_least=4.0)  # both workers have failed whole batches, retries included
        down.close()
        server = LoopbackLLMServer("--engine", "fixed", "--reply", GRADE, "--port", str(port))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        if server is not None:
            server.stop()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    records = read_output(out)
    assert len(records) == 6 and all(r["signals"]["judge.score"] == 7 for r in records)
    c = _counters(out)
    assert c["llm.retries"] >= 3 * 2 and c["llm.outage_waits"] >= 2 and c["llm.calls"] == 6
    assert "llm.failed_requests" not in c and c["llm.outage_seconds"] > 0


def test_a_server_that_stays_down_stops_the_run_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    down = DownServer(port)
    try:
        p = assay_cli("run", str(_recipe(tmp_path, _judge(f"http://127.0.0.1:{port}/v1", max_outage=2))),
                      "-i", *_answers(tmp_path, 1, 2), "-o", str(tmp_path / "out"), "-w", "1", "--no-report",
                      check=False, timeout=120)
    finally:
        down.close()
    assert p.returncode == 2 and "Traceback" not in p.stderr
    error = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, p.stderr
    assert re.search(r"judge_score: the model server answered nothing for \d+ s \(backend.max_outage: 2\); "
                     r"last error: gave up after 4 attempts: connection error", error[0]), error[0]
    assert "Run the same command again to resume" in error[0]


def test_cache_off_as_yaml_writes_it(tmp_path: Path) -> None:
    """`cache: off` (YAML 1.1 reads it as false) was rejected as not a string."""
    with served("--engine", "fixed", "--reply", GRADE) as server:
        recipe = _recipe(tmp_path, {"judge_score": {**_judge(server.url)["judge_score"], "cache": "off"}})
        recipe.write_text(recipe.read_text().replace("cache: 'off'", "cache: off"))
        assert "cache: off\n" in recipe.read_text()
        assay_cli("run", str(recipe), "-i", *_answers(tmp_path, 1, 2), "-o", str(tmp_path / "out"), "-w", "1",
                  "--no-report")
    assert len(read_output(tmp_path / "out")) == 2
    assert not (tmp_path / "out" / "llm-cache.sqlite").exists()


SEEDS = ["Explain how vaccines train the immune system.", "Give three tips for learning a new language.",
         "Summarize the plot of Romeo and Juliet.", "Convert 25 degrees Celsius to Fahrenheit.",
         "List the planets of the solar system in order.", "Describe the water cycle to a ten-year-old.",
         "Write a short poem about the ocean at night.", "Suggest a name for a bakery in Paris."]


def _self_instruct(tmp_path: Path, url: str, concurrency: int = 8, **params) -> tuple[Path, Path]:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": f"s{i}", "instruction": s} for i, s in enumerate(SEEDS)])
    step = {"self_instruct": {"num_instructions": 3, "max_requests": 8, "classify": "never",
                              "backend": {"kind": "openai", "model": "m", "base_url": url, "max_retries": 0,
                                          "concurrency": concurrency},
                              **params}}
    return _recipe(tmp_path, step), seeds


def test_self_instruct_that_produces_nothing_fails_the_run(tmp_path: Path) -> None:
    """A model that never answers usably: the run used to exit 0 with 0 records and no warning."""
    with served("--engine", "fixed", "--reply", "I like turtles") as server:
        recipe, seeds = _self_instruct(tmp_path, server.url, concurrency=1)
        p = assay_cli("run", str(recipe), "-i", str(seeds), "-o", str(tmp_path / "out"), "-w", "1", "--no-report",
                      check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "self_instruct gave up after 8 list-continuation requests (max_requests) with 0 of 3 instructions" \
        in p.stderr
    assert "rejected: too_short 8" in p.stderr and "the model never answered usably" in p.stderr


def test_self_instruct_that_gives_up_warns(tmp_path: Path) -> None:
    """One usable instruction, then only repeats of it: 1 of 3 made, a warning, exit 0 (the record is kept)."""
    reply = "Explain how rainbows form after a summer storm.\nOutput: Sunlight bends inside the raindrops."
    with served("--engine", "fixed", "--reply", reply) as server:
        recipe, seeds = _self_instruct(tmp_path, server.url, concurrency=1)
        p = assay_cli("run", str(recipe), "-i", str(seeds), "-o", str(tmp_path / "out"), "-w", "1", "--no-report")
    assert "warning: self_instruct gave up after 8 list-continuation requests (max_requests) with 1 of 3" in p.stderr
    assert len(read_output(tmp_path / "out")) == 1
    c = _counters(tmp_path / "out")
    assert c["gave_up"] == 1 and c["rejected:duplicate"] >= 7


def test_self_instruct_keeps_concurrency_requests_in_flight(tmp_path: Path) -> None:
    """`concurrency: 8` used to be capped at 4 requests in flight by the default `prompts_per_round`."""
    reply = "Explain how rainbows form after a summer storm.\nOutput: Sunlight bends inside the raindrops."
    with served("--engine", "fixed", "--reply", reply, "--latency", "1.0") as server:  # 8 overlap even when busy
        recipe, seeds = _self_instruct(tmp_path, server.url, concurrency=8, num_instructions=1, max_requests=8)
        assay_cli("run", str(recipe), "-i", str(seeds), "-o", str(tmp_path / "out"), "-w", "1", "--no-report")
        assert server.stats()["max_in_flight"] == 8
    assert _counters(tmp_path / "out")["requests:tasks"] == 8


@pytest.mark.parametrize("value", ["on", "true"])
def test_cache_on_means_the_default_cache(tmp_path: Path, value: str) -> None:
    from assay.core.recipe import Recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsteps:\n  - judge_score: {{cache: {value}}}\n")
    assert Recipe.from_yaml(recipe).instantiate()[0].params.cache is None


def test_oss_instruct_json_mode_waits_out_an_outage_too(tmp_path: Path) -> None:
    """`mode: json` sends through the JSON repair helper; it used to bypass the step's outage handling and turn a
    server that was down into records dropped as `no_problem`."""
    from assay.core.record import Record
    from assay.core.step import StepContext
    from assay.models.llm.base import BackendError
    from assay.synthesize.oss_instruct import OssInstruct

    port = free_port()
    down = DownServer(port)
    code = Record("c", "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n", "code")
    step = OssInstruct({"mode": "json", "cache": "off",
                        "backend": {"kind": "openai", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1",
                                    "max_retries": 0, "max_outage": 1}})
    ctx = StepContext(run_dir=tmp_path)
    try:
        step.setup(ctx)
        with pytest.raises(BackendError, match="the model server answered nothing"):
            list(step.process([[code]], ctx))
    finally:
        down.close()
    assert step.stats.counters["llm.outage_waits"] >= 1

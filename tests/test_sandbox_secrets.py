"""Issue 14 §1 acceptance: a secret in the environment of `assay run` (an API key) never reaches a sandboxed
program, the run's output (rejected/ included), or the prompts the repair loop sends to the LLM.

The LLM is the project's OpenAI-compatible loopback server with its echo engine (it stands in for a paid remote
API; the real HTTP client of the `openai` backend talks to it), recording every request body it receives."""

from __future__ import annotations

import gzip
import json
import os
import secrets
from pathlib import Path

from testutil import assay_cli, write_jsonl

from assay.models.llm.server import EchoBackend, OpenAICompatibleServer, serve_in_thread

# A candidate solution that hunts for API keys in every environment and command line it can see and puts them in
# its failure message (which becomes the error text stored in rejected/ and sent to the LLM for a repair).
KEY_HUNTER = '''
def solve():
    import glob, os
    found = [f"{k}={v}" for k, v in os.environ.items() if "KEY" in k]
    for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
        try:
            raw = open(path, "rb").read().decode("utf-8", "replace")
        except OSError:
            continue
        found += [f"{path}: {x}" for x in raw.split("\\x00") if "KEY" in x]
    raise AssertionError("keys seen: " + " | ".join(found or ["none"]))
'''


class _RecordingEcho(EchoBackend):
    """The echo engine, keeping every prompt the server received (the parsed request bodies)."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def generate(self, requests, on_complete=None):  # noqa: ANN001, ANN201
        self.prompts += [json.dumps([[role, content] for role, content in r.messages or ()] or r.prompt)
                         for r in requests]
        return super().generate(requests, on_complete)


def _all_text(folder: Path) -> str:
    """Every file of a run folder as text (gzip members decompressed; the LLM response cache as raw bytes)."""
    parts = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".gz":
            data = gzip.decompress(data)
        parts.append(f"== {f.relative_to(folder)}\n" + data.decode("utf-8", "replace"))
    return "\n".join(parts)


def test_api_key_in_the_environment_never_reaches_programs_outputs_or_prompts(tmp_path: Path) -> None:
    canary = "sk-canary-" + secrets.token_hex(16)
    write_jsonl(tmp_path / "tasks.jsonl", [
        {"problem": "Write solve() returning 1.", "solution": KEY_HUNTER, "tests": "assert solve() == 1"},
        {"problem": "Write two() returning 2.", "solution": "def two():\n    return 2\n", "tests": "assert two() == 2"},
    ])
    llm = _RecordingEcho()
    server = OpenAICompatibleServer(llm)
    serve_in_thread(server)
    try:
        (tmp_path / "recipe.yaml").write_text(f"""
name: canary
input: {{format: jsonl, text_key: null}}
output: {{format: jsonl}}
steps:
  - execution_feedback:
      max_repairs: 1
      backend: {{kind: openai, model: echo, base_url: "{server.url}", max_retries: 0}}
""")
        env = {**os.environ, "OPENAI_API_KEY": canary}
        assay_cli("run", str(tmp_path / "recipe.yaml"), "-i", str(tmp_path / "tasks.jsonl"), "-o",
                  str(tmp_path / "out"), "-w", "1", env=env)
    finally:
        server.shutdown()
        server.server_close()
    run = _all_text(tmp_path / "out")
    # the run really did what the user saw: the key hunter ran, failed, was sent for repair and was rejected
    assert "keys seen:" in run and "failed_tests" in run
    assert len(llm.prompts) == 1 and "keys seen:" in llm.prompts[0]
    assert (tmp_path / "out" / "llm-cache.sqlite").exists()  # the response cache is searched too
    # ... but the key appears nowhere: not in the error text, rejected/, stats, nor the repair prompt
    assert canary not in run
    assert canary not in llm.prompts[0]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert "status:error" in json.dumps(stats)

"""Magpie: what goes over the wire (the bare pre-query template as a raw completion, the chat request for the
answer, the turn template for a second turn), filters and dedup counted by reason, reproducible requests, and the
real bundled SmolLM2 writing instructions, with a rerun served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testutil import LoopbackLLMServer

from assay.core.errors import RecipeError
from assay.core.recipe import Recipe
from assay.core.record import Record
from assay.core.step import REGISTRY, StepContext
from assay.models.llm.base import Completion
from assay.synthesize.magpie import FORMATS, Magpie, normalize, repeat_fraction
from assay.synthesize.rouge import RougeLIndex

CHATML_PRE = "<|im_start|>system\nYou are a chef.<|im_end|>\n<|im_start|>user\n"


def run(step: Magpie, records: list[Record], run_dir: Path) -> list[Record]:
    ctx = StepContext(run_dir=run_dir)
    step.setup(ctx)
    return [r for batch in step.process([records], ctx) for r in batch]


def logged(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_registered_and_chat_format_checked() -> None:
    assert "magpie" in REGISTRY
    with pytest.raises(RecipeError, match="pre_query_template"):
        Recipe.from_text("steps:\n  - magpie: {pre_query_template: 'User $name: '}")
    llama3 = Magpie({"format": "llama3"}).raw_prompt("Be brief.", [])
    assert llama3.endswith("Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")


def test_wire_requests_filters_and_dedup(tmp_path: Path) -> None:
    """A server that always writes the same user turn: the raw prompt is exactly the pre-query template, the
    answer is a chat request with the record's system prompt, turn 2 continues through the turn template, and
    the second record's identical instruction is a counted duplicate."""
    log = tmp_path / "requests.jsonl"
    reply = "How do I boil an egg so that the shell does not crack?"
    server = LoopbackLLMServer("--engine", "fixed", "--reply", reply, "--log", str(log))
    try:
        step = Magpie({"backend": {"kind": "openai", "model": "m", "base_url": server.url, "max_retries": 0},
                       "turns": 2, "cache": "off", "seed": 3})
        out = run(step, [Record("r1", "You are a chef.", "text"), Record("r2", {"system": "You are a chef."}, "text")],
                  tmp_path / "run")
    finally:
        server.stop()
    bodies = logged(log)
    raw = [b for b in bodies if "prompt" in b]
    chats = [b for b in bodies if "messages" in b]
    assert raw[0]["prompt"] == CHATML_PRE and raw[1]["prompt"] == CHATML_PRE
    assert raw[0]["stop"] == list(FORMATS["chatml"]["stop"])
    assert chats[0]["messages"] == [{"role": "system", "content": "You are a chef."},
                                    {"role": "user", "content": reply}]
    # turn 2 of the first conversation: the finished turn written back through the turn template
    assert raw[2]["prompt"] == (CHATML_PRE + reply + "<|im_end|>\n<|im_start|>assistant\n" + reply +
                                "<|im_end|>\n<|im_start|>user\n")
    assert len(raw) == 3 and len(chats) == 2  # the duplicate is never answered
    kept = [r for r in out if r.drop is None]
    dropped = [r for r in out if r.drop is not None]
    assert len(kept) == 1 and dropped[0].drop == ("magpie", "duplicate")
    assert [m["role"] for m in kept[0].content["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert kept[0].meta["parents"] == ["r1"] and kept[0].meta["synth"]["format"] == "chatml"
    assert kept[0].meta["synth"]["sampling"]["instruction"]["temperature"] == 1.0
    assert step.stats.counters["rejected:duplicate"] == 1 and step.stats.counters["conversations"] == 1


def test_same_seed_same_requests_other_seed_other_requests(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    reply = "Name three rivers in Africa, please."
    server = LoopbackLLMServer("--engine", "fixed", "--reply", reply, "--log", str(log))
    try:
        for i, seed in enumerate((5, 5, 6)):
            step = Magpie({"backend": {"kind": "openai", "model": "m", "base_url": server.url}, "cache": "off",
                           "seed": seed, "per_record": 2})
            run(step, [Record("r1", {"x": 1}, "text")], tmp_path / f"run{i}")
    finally:
        server.stop()
    seeds = [b["seed"] for b in logged(log) if "prompt" in b]
    assert len(seeds) == 6
    assert seeds[0:2] == seeds[2:4] and seeds[0] != seeds[1]
    assert not set(seeds[4:6]) & set(seeds[0:2])


@pytest.mark.parametrize("text, finish, reason", [
    ("", "stop", "empty"),
    ("Hi there", "stop", "too_short"),
    ("Tell me about the history of Rome and its emperors", "length", "truncated"),
    ("tell me more " * 12, "stop", "looping"),
    ("What is the tallest mountain in Europe?<|im_end|>\n<|im_start|>assistant", "stop", None),
])
def test_instruction_filters(text: str, finish: str, reason: str | None) -> None:
    got, instruction = Magpie()._instruction(Completion(text, finish))
    assert got == reason
    assert "<|im" not in instruction


def test_dedup_normalises_and_uses_rouge() -> None:
    step = Magpie()
    step._kept, step._seen = RougeLIndex(), set()
    assert step._novelty("How do plants make their food?") is None
    assert step._novelty("how do plants   make their food") == "duplicate"
    assert step._novelty("How do plants make their own food?") == "similar"
    assert step._novelty("Write a poem about the sea at night.") is None
    assert normalize(" Hello  World?! ") == "hello world"
    assert repeat_fraction("a b c a b c a b c a b c") > 0.5 > repeat_fraction("the cat sat on the mat today")


def test_real_smollm2_writes_instructions_and_rerun_hits_the_cache(tmp_path: Path) -> None:
    params = {"per_record": 3, "seed": 1, "instruction_sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 48},
              "response_sampling": {"temperature": 0.0, "max_tokens": 24}, "max_repeat_frac": 0.5}
    records = [Record("r1", "You are a helpful assistant who knows geography.", "text")]
    first_step = Magpie(params)
    first = run(first_step, records, tmp_path)
    kept = [r for r in first if r.drop is None]
    assert kept, [r.drop for r in first]
    for r in kept:
        instruction = r.content["instruction"]
        assert len(instruction.split()) >= 3 and "<|im" not in instruction
        assert r.content["output"] and r.meta["synth"]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    counters = first_step.stats.counters
    assert counters["conversations"] + sum(v for k, v in counters.items() if k.startswith("rejected:")) == 3
    assert counters["llm.calls"] >= 3 and (tmp_path / "llm-cache.sqlite").exists()
    # a rerun in the same run folder (what resuming after a kill does): every request answered by the cache
    again_step = Magpie(params)
    again = run(again_step, records, tmp_path)
    assert [r.content for r in again] == [r.content for r in first]
    assert "llm.calls" not in again_step.stats.counters and again_step.stats.counters["llm.cache_hits"] >= 3

"""Synthesis techniques: the parsers and filters of each (pure functions), then each step end to end with the
bundled local model (small counts), checking lineage, the cache on rerun, and bad input."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from testutil import DATA, ROOT, LoopbackLLMServer

from assay.core.errors import RecipeError
from assay.core.recipe import Recipe
from assay.core.record import Record, derive_id
from assay.core.step import REGISTRY, StepContext
from assay.models.llm.base import BackendError, Completion
from assay.synthesize.evol_instruct import METHODS, EvolInstruct, clean_evolution, content_words
from assay.synthesize.oss_instruct import OssInstruct, language_of, parse_sections
from assay.synthesize.rouge import RougeLIndex, rouge_l
from assay.synthesize.self_instruct import (BLACKLIST, SelfInstruct, normalize_instruction, parse_instance,
                                            parse_task_list)
from assay.synthesize.templates import TemplateError, builtin_template_names, load_template
from assay.synthesize.textbook import Textbook, parse_exercises

SEEDS = DATA / "self_instruct_seed_tasks.jsonl"


def run(step, records: list[Record], tmp_path: Path) -> list[Record]:
    ctx = StepContext(run_dir=tmp_path)
    step.setup(ctx)
    return [r for batch in step.process([records], ctx) for r in batch]


def seed_records(n: int | None = None) -> list[Record]:
    rows = [json.loads(line) for line in SEEDS.open()]
    return [Record(d["id"], d, "text") for d in rows[:n]]


# -- registry and templates ------------------------------------------------------------------------------------
def test_steps_are_registered() -> None:
    for name in ("self_instruct", "evol_instruct", "oss_instruct", "textbook"):
        assert name in REGISTRY


def test_every_builtin_template_loads_with_its_placeholders() -> None:
    for step in (SelfInstruct, EvolInstruct, OssInstruct, Textbook):
        for name, placeholders in step.Params.TEMPLATES.items():
            t = load_template(name, placeholders=placeholders)
            assert t.placeholders <= placeholders and len(t.hash) == 12
    assert "self_instruct_tasks" in builtin_template_names()


def test_user_templates_override_and_are_checked(tmp_path: Path) -> None:
    mine = tmp_path / "deepen.txt"
    mine.write_text("Make this harder, it costs $$5: $instruction\n\n")
    t = load_template("evol_deepen", {"evol_deepen": str(mine)}, {"instruction"})
    assert t.render(instruction="Add 2 and 2.") == "Make this harder, it costs $5: Add 2 and 2."  # trailing \n cut
    assert t.hash != load_template("evol_deepen").hash
    bad = tmp_path / "bad.txt"
    bad.write_text("Uses $nonsense")
    with pytest.raises(TemplateError, match="nonsense"):
        load_template("evol_deepen", {"evol_deepen": str(bad)}, {"instruction"})
    with pytest.raises(RecipeError, match="unknown template name"):
        Recipe.from_text("steps:\n  - evol_instruct: {templates: {no_such: x.txt}}")
    with pytest.raises(RecipeError, match="nonsense"):
        Recipe.from_text(f"steps:\n  - evol_instruct: {{templates: {{evol_deepen: {bad}}}}}")


# -- Self-Instruct parsing and filters -------------------------------------------------------------------------
def test_parse_task_list_splits_numbered_items() -> None:
    text = " Write a haiku about autumn.\n10. Translate   the sentence into French:\n11 . List three\n12."
    assert parse_task_list(text, truncated=False) == [
        "Write a haiku about autumn.", "Translate the sentence into French", "List three"]
    assert parse_task_list(text, truncated=True) == parse_task_list(text, truncated=False)  # cut at "12."
    assert parse_task_list(text.removesuffix("\n12."), truncated=True) == [
        "Write a haiku about autumn.", "Translate the sentence into French"]  # "List three" may be cut short
    assert normalize_instruction("  explain   gravity:  ") == "Explain gravity"
    chat_answer = "Sure! Here are more tasks:\n9. Name three rivers in Africa.\n10. Explain what a verb is."
    assert parse_task_list(chat_answer, truncated=False, continuation=False) == [
        "Name three rivers in Africa.", "Explain what a verb is."]


@pytest.mark.parametrize("instruction, reason", [
    ("Tell a joke.", "too_short"),  # three words or fewer
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the image in one sentence.", "blacklisted_word"),
    ("Draw a cat using ASCII characters.", "blacklisted_word"),
    ("Tell me how to go to the station.", "blacklisted_word"),
    ("Summarize these Files for your boss.", "blacklisted_word"),
    ("Write a program that sorts numbers.", "write_a_program"),
    ("- List three kinds of trees.", "bad_start"),
    ("Éxplain the rules of chess please.", "bad_start"),
    ("Open the drawer and describe the contents.", None),  # "drawer" is not "draw"
    ("Explain the rules of chess to a child.", None),
])
def test_self_instruct_filters(instruction: str, reason: str | None) -> None:
    assert SelfInstruct().reject_reason(instruction) == reason


def test_parse_instance_input_first_and_output_first() -> None:
    ok = Completion(" The movie was great\nOutput: Positive\nOutput: Positive\nInput: more")
    assert parse_instance(ok, False, "Classify.") == {"input": "The movie was great", "output": "Positive"}
    no_input = Completion(" none\nOutput: Paris is the capital of France.")
    assert parse_instance(no_input, False, "Name a capital.") == {"input": "", "output":
                                                                   "Paris is the capital of France."}
    clf = Completion(" Negative\nInput: I hated every minute.\nTask: next")
    assert parse_instance(clf, True, "Sentiment?") == {"input": "I hated every minute.", "output": "Negative"}
    assert parse_instance(Completion(" no output section"), False, "x") is None
    assert parse_instance(Completion(" same\nOutput: same"), False, "x") is None
    assert parse_instance(Completion(" Positive\nInput: none"), True, "x") is None
    assert parse_instance(Completion.failed("timeout"), False, "x") is None


# -- Self-Instruct with the local model ------------------------------------------------------------------------
def test_self_instruct_small_run_lineage_and_cache(tmp_path: Path) -> None:
    seeds = seed_records()
    params = {"num_instructions": 2, "prompts_per_round": 1, "seed": 1, "classify": "never",
              "instruction_sampling": {"temperature": 0.9, "top_p": 0.9, "max_tokens": 64, "stop": ["\n\n"]},
              "instance_sampling": {"temperature": 0.5, "max_tokens": 32, "stop": ["\nTask:"]}}
    step = SelfInstruct(params)
    out = run(step, seeds, tmp_path)
    kept = [r for r in out if r.drop is None]
    assert len(kept) == 2
    seed_ids = {r.id for r in seeds}
    templates = {n: load_template(n).hash for n in SelfInstruct.Params.TEMPLATES}
    pool = RougeLIndex(r.content["instruction"] for r in seeds)
    for r in kept:
        c = r.content
        assert r.modality == "conversation" and c["messages"][0]["role"] == "user"
        assert c["instances"] and c["output"] == c["instances"][0]["output"]
        # parents: the 8 tasks of its prompt, seeds or earlier machine instructions (kept or not)
        assert len(r.meta["parents"]) == 8 and set(r.meta["parents"]) <= seed_ids | {o.id for o in out}
        synth = r.meta["synth"]
        assert synth["technique"] == "self_instruct" and synth["backend"] == "local"
        assert synth["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert all(synth["templates"][n] == templates[n] for n in synth["templates"])
        assert pool.most_similar(c["instruction"])[0] < 0.7
        assert not any(re.search(rf"\b{w}\b", c["instruction"], re.I) for w in BLACKLIST)
        pool.add(c["instruction"])
    for r in out:
        if r.drop is not None:
            assert r.drop[0] == "self_instruct"
    assert len({r.id for r in out}) == len(out)
    counters = step.stats.counters
    assert counters["llm.calls"] > 0 and counters["llm.cache_hits"] == 0
    assert (tmp_path / "llm-cache.sqlite").exists()

    again = SelfInstruct(params)  # a rerun into the same folder: every answer comes from the cache
    out2 = run(again, seeds, tmp_path)
    assert again.stats.counters["llm.calls"] == 0
    assert again.stats.counters["llm.cache_hits"] == counters["llm.calls"]
    assert [r.to_dict() for r in out2] == [r.to_dict() for r in out]


def test_self_instruct_bad_seeds_are_counted_not_fatal(tmp_path: Path) -> None:
    bad = [Record("a", None), Record("b", ""), Record("c", {"no": "instruction"}), Record("d", b"\x00\x01"),
           Record("e", {"instruction": 42})]
    step = SelfInstruct({"num_instructions": 1, "cache": "off"})
    assert run(step, bad, tmp_path) == []
    assert step.stats.counters["skipped:no_instruction"] == 5 and step.stats.counters["llm.calls"] == 0


def test_self_instruct_accepts_plain_text_seeds(tmp_path: Path) -> None:
    texts = ["Write a short poem about the ocean at night.", "Explain how vaccines train the immune system.",
             "Give three tips for learning a new language.", "Summarize the plot of Romeo and Juliet.",
             "Convert 25 degrees Celsius to Fahrenheit.", "Suggest a name for a bakery \ud800 in Paris.",
             "List the planets of the solar system in order.", "Describe the water cycle to a ten-year-old."]
    seeds = [Record(derive_id("t", i), t) for i, t in enumerate(texts)]
    step = SelfInstruct({"num_instructions": 1, "instances": False, "prompts_per_round": 1, "max_requests": 6,
                         "instruction_sampling": {"max_tokens": 64, "stop": ["\n\n"], "temperature": 1.0}})
    kept = [r for r in run(step, seeds, tmp_path) if r.drop is None]
    assert len(kept) <= 1 and step.stats.counters["seeds"] == 8
    for r in kept:
        assert max(rouge_l(r.content["instruction"], t) for t in texts) < 0.7


def test_a_dead_backend_stops_the_step(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seeds = [Record(str(i), f"Explain topic number {i} to a child in simple words.") for i in range(8)]
    step = SelfInstruct({"num_instructions": 5, "cache": "off", "prompts_per_round": 2,
                         "backend": {"kind": "openai", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1",
                                     "max_retries": 0, "max_outage": 1.5}})
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"the model server answered nothing for \d+ s \(backend.max_outage: 1.5\)"):
        run(step, seeds, tmp_path)
    assert 1.5 <= time.monotonic() - started < 10
    assert step.stats.counters["llm.outage_waits"] >= 1 and step.stats.counters["llm.calls"] == 0


def test_a_model_that_fails_every_prompt_stops_the_step(tmp_path: Path) -> None:
    """Not an outage (HTTP 400 is not worth asking again): three batches in a row, then stop."""
    seeds = [Record(str(i), f"Explain topic number {i} to a child in simple words.") for i in range(8)]
    server = LoopbackLLMServer("--engine", "echo", "--fail", ",".join(["400"] * 6))
    try:
        step = SelfInstruct({"num_instructions": 5, "cache": "off", "prompts_per_round": 2,
                             "backend": {"kind": "openai", "model": "m", "base_url": server.url}})
        with pytest.raises(BackendError, match="every request of the last 3 batches failed; last error: HTTP 400"):
            run(step, seeds, tmp_path)
    finally:
        server.stop()
    assert step.stats.counters["llm.failed_requests"] == 6 and "llm.outage_waits" not in step.stats.counters


# -- Evol-Instruct ---------------------------------------------------------------------------------------------
def test_evolution_cleaning_and_elimination_rules() -> None:
    assert clean_evolution('Rewritten instruction: "Explain X in detail."') == "Explain X in detail."
    step = EvolInstruct()
    original = "Explain how photosynthesis works."
    assert step._instruction_reason(original, "Explain how photosynthesis works in desert plants and algae.",
                                    "deepen") is None
    assert step._instruction_reason(original, "", "deepen") == "empty"
    assert step._instruction_reason(original, None, "deepen") == "llm_error"
    assert step._instruction_reason(original, "Explain photosynthesis.", "deepen") == "too_short"
    assert step._instruction_reason(original, "Explain how the photosynthesis works.", "deepen") == \
        "no_information_gain"
    assert step._instruction_reason(original, "Here is the rewritten instruction: explain photosynthesis in "
                                              "plants.", "deepen") == "copied_prompt"
    assert step._response_reason("Sorry, I cannot help with that.") == "refusal"
    assert step._response_reason(" ".join(["sorry"] + ["word"] * 100)) is None  # long answers are not refusals
    assert step._response_reason("... the of and !") == "empty_response"
    assert step._response_reason("Plants turn light into sugar.") is None
    assert content_words("The cat and the hat") == {"cat", "hat"}


def test_evol_instruct_run(tmp_path: Path) -> None:
    seeds = [Record("s1", {"instruction": "Explain why the sky is blue."}),
             Record("s2", "Give three tips for staying focused while studying.")]
    step = EvolInstruct({"rounds": 2, "evolve_sampling": {"max_tokens": 24, "temperature": 0.7},
                         "response_sampling": {"max_tokens": 12, "temperature": 0.7}})
    out = run(step, seeds, tmp_path)
    assert len(out) == 4  # one evolution per seed per round, kept or eliminated
    by_round = {0: [], 1: []}
    for r in out:
        synth = r.meta["synth"]
        assert synth["method"] in METHODS and synth["technique"] == "evol_instruct"
        assert synth["templates"] == {f"evol_{synth['method']}": load_template(f"evol_{synth['method']}").hash}
        by_round[synth["round"]].append(r)
        if r.drop is None:
            assert r.content["instruction"] and r.content["output"]
    for r in by_round[0]:
        assert r.meta["parents"][0] in {"s1", "s2"}
    ids_round0 = {r.id for r in by_round[0] if r.drop is None}
    for r in by_round[1]:  # round 2 evolves the survivor of round 1, or the seed again
        assert r.meta["parents"][0] in ids_round0 | {"s1", "s2"}
    counters = step.stats.counters
    assert counters["evolved"] == sum(r.drop is None for r in out)
    assert sum(v for k, v in counters.items() if k.startswith("eliminated:")) == sum(r.drop is not None for r in out)


# -- OSS-Instruct ----------------------------------------------------------------------------------------------
def test_parse_sections_variants() -> None:
    assert parse_sections("[Problem Description]\nSum a list.\n\n[Solution]\n```py\nsum(x)\n```") == \
        ("Sum a list.", "```py\nsum(x)\n```")
    assert parse_sections("## Problem Description\nReverse a string.\n## Solution\ns[::-1]") == \
        ("Reverse a string.", "s[::-1]")
    assert parse_sections("**Problem:** Count words.\n**Solution:**\nlen(s.split())")[1] == "len(s.split())"
    assert parse_sections("Just some text without sections") == ("Just some text without sections", "")
    assert parse_sections("Write a parser.\n[Solution]\ndef parse(): ...") == ("Write a parser.", "def parse(): ...")


def test_snippets_and_languages() -> None:
    step = OssInstruct({"min_lines": 2, "max_lines": 4})
    code = "\n".join(f"line_{i} = {i}" for i in range(40))
    rec = Record("c1", code, "code", meta={"path": "pkg/mod.py"})
    snippet, first, last = step.snippet(rec, 0)
    lines = snippet.splitlines()
    assert 2 <= len(lines) <= 4 and lines[0] == f"line_{first - 1} = {first - 1}" and last - first + 1 == len(lines)
    assert step.snippet(rec, 0) == (snippet, first, last)  # reproducible
    assert language_of(rec) == "python"
    assert language_of(Record("x", "", meta={"language": "Rust"})) == "rust"
    assert step.snippet(Record("b", "a\x00b"), 0) == "binary"
    assert step.snippet(Record("e", "\n \n"), 0) == "empty"
    assert step.snippet(Record("d", {"not": "code"}), 0) == "not_text"


def test_oss_instruct_run_on_real_code(tmp_path: Path) -> None:
    source = ROOT / "src" / "assay" / "core" / "record.py"
    records = [Record(derive_id(str(source)), source.read_text(), "code", meta={"path": str(source)}),
               Record("binary", "\x00\x01\x02", "code")]
    step = OssInstruct({"sampling": {"max_tokens": 48, "temperature": 0.7}})
    out = run(step, records, tmp_path)
    assert len(out) == 1 and step.stats.counters["skipped:binary"] == 1
    for r, src in zip(out, records):
        assert r.meta["parents"] == [src.id]
        assert r.meta["synth"]["language"] == "python"
        first, last = r.meta["synth"]["snippet_lines"]
        assert "\n".join(src.content.splitlines()[first - 1:last]).strip() == r.content["snippet"]
        if r.drop is None:
            assert len(r.content["instruction"].split()) >= 8 and r.content["output"]
        else:
            assert r.drop[1] in ("no_problem", "no_solution")


def test_oss_instruct_structured_json(tmp_path: Path) -> None:
    code = (ROOT / "src" / "assay" / "synthesize" / "rouge.py").read_text()
    step = OssInstruct({"mode": "json", "min_problem_words": 1, "max_repairs": 1,
                        "sampling": {"max_tokens": 64, "temperature": 0.3}})
    (r,) = run(step, [Record("c", code, "code", meta={"path": "rouge.py"})], tmp_path)
    assert r.meta["synth"]["templates"] == {"oss_instruct_json": load_template("oss_instruct_json").hash}
    if r.drop is None:  # the JSON was valid: both fields made it into the record
        assert r.content["instruction"] and r.content["output"]
    else:
        assert r.drop[1] in ("llm_error", "no_problem", "no_solution")


def test_oss_instruct_two_step(tmp_path: Path) -> None:
    code = (ROOT / "src" / "assay" / "core" / "step.py").read_text()
    step = OssInstruct({"mode": "two_step", "min_problem_words": 5, "seed": 2,
                        "sampling": {"max_tokens": 48, "temperature": 0.7}})
    (r,) = run(step, [Record("c", code, "code", meta={"path": "step.py"})], tmp_path)
    assert set(r.meta["synth"]["templates"]) == {"oss_instruct_problem", "oss_instruct_solution"}
    assert step.stats.counters["llm.calls"] == (2 if len(r.content["instruction"].split()) >= 5 else 1)
    if r.drop is None:
        assert len(r.content["instruction"].split()) >= 5 and r.content["output"]
        assert r.content["messages"][1]["content"] == r.content["output"]


# -- Textbook --------------------------------------------------------------------------------------------------
def test_parse_exercises() -> None:
    text = "Here you go:\n1. What is 2+2?\nAnswer: 4\n2) Name a prime.\nAnswer: 3\n**Exercise 3:** Why?\nAnswer: x"
    assert parse_exercises(text, 5) == ["What is 2+2?\nAnswer: 4", "Name a prime.\nAnswer: 3", "Why?\nAnswer: x"]
    assert parse_exercises(text, 2) == ["What is 2+2?\nAnswer: 4", "Name a prime.\nAnswer: 3"]
    assert parse_exercises("no numbers", 3) == []


def test_textbook_grid(tmp_path: Path) -> None:
    step = Textbook({"topics": ["fractions"], "audiences": ["children", "adults"], "styles": ["tutorial"],
                     "exercises": 1, "min_passage_words": 10, "max_passages": 2, "seed": 3,
                     "passage_sampling": {"max_tokens": 32}, "exercise_sampling": {"max_tokens": 24}})
    out = run(step, [Record("t1", "the water cycle")], tmp_path)
    assert len(out) == 2  # 2 of the 2 topics x 2 audiences x 1 style
    cells = {(r.meta["synth"]["topic"], r.meta["synth"]["audience"]) for r in out}
    assert len(cells) == 2 and cells <= {("fractions", "children"), ("fractions", "adults"),
                                         ("the water cycle", "children"), ("the water cycle", "adults")}
    for r in out:
        assert r.modality == "text" and r.content.startswith(f"# {r.meta['synth']['topic']}")
        assert r.meta["parents"] == (["t1"] if r.meta["synth"]["topic"] == "the water cycle" else [])
        if r.drop is None:
            assert "## Exercises" in r.content and r.signals["textbook.exercises"] >= 1
    other_shard = Textbook({"topics": ["fractions"], "audiences": ["children"], "styles": ["tutorial"]})
    ctx = StepContext(run_dir=tmp_path, shard=1)
    other_shard.setup(ctx)
    assert list(other_shard.process([[]], ctx)) == []  # recipe topics are generated by shard 0 only

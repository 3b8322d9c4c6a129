"""Self-Instruct (Wang et al., 2023): grow a pool of instructions from a few human-written seed tasks.

Each round samples prompts of 8 tasks (by default 2 machine-generated from the pool, the rest human seeds), asks
the model to continue the numbered list, and keeps each new instruction that passes the original filters:

* length: more than 3 and at most 150 words;
* a keyword blacklist (image, graph, picture, file, map, draw, plot, go to and plurals: things a language model
  cannot do);
* no "Write a program" instructions, none starting with punctuation or a non-ASCII character;
* not a duplicate, and ROUGE-L against every seed and every instruction already accepted below 0.7.

Accepted instructions join the pool at once. Each is then classified (classification task or not, by few-shot
prompting with the labelled seeds) and given an instance: input-first for ordinary tasks, output-first (class label,
then an input of that class) for classification tasks, as in the paper. The few-shot demonstrations are the seeds'
own instances, so users' seeds steer the format. An instruction whose instance cannot be parsed stays in the pool
(it still counts for novelty) but is rejected with reason ``no_instance``.

The step reads all its input (the seeds) first, then generates until ``num_instructions`` records with instances
have been produced, or ``max_requests`` list-continuation requests have been spent: then it gives up (counted as
``gave_up``) with a warning on stderr, and if it produced nothing at all (the model never answered usably) it stops
the run with :class:`~assay.synthesize.common.SynthesisError` (non-zero exit). It does so once per input shard, from
that shard's seeds; a seed file smaller than the recipe's ``input.shard_bytes`` (128 MiB by default) is one shard.

A round sends ``prompts_per_round`` list-continuation prompts at once; by default that is the backend's
``concurrency`` for an HTTP backend (so ``concurrency: 32`` keeps 32 requests in flight) and 4 for the local model,
which answers one request at a time anyway.
Rejected candidates are emitted as dropped records with their reason, so ``rejected/`` shows what the filters did.
"""

from __future__ import annotations

import logging
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Literal

from pydantic import Field

from assay.core.record import Record, derive_id
from assay.core.step import Batch, StepContext, StepParams
from assay.models.llm.base import Completion, LLMRequest, SamplingParams
from assay.synthesize.common import (SynthesisError, SynthesisStep, SynthParams, clean_text, conversation,
                                     instruction_of)
from assay.synthesize.rouge import RougeLIndex

log = logging.getLogger(__name__)

BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to")
_ITEM_SPLIT = re.compile(r"\n\s*\d{1,3}\s*[.)]\s*")
_SPACES = re.compile(r"\s+")
_NONE_INPUTS = {"", "none", "<none>", "n/a", "na", "no input", "(none)", "null", "-"}


class SelfInstructParams(SynthParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {
        "self_instruct_tasks": {"tasks", "next"},
        "self_instruct_classify": {"examples", "instruction"},
        "self_instruct_input_first": {"examples", "instruction"},
        "self_instruct_output_first": {"examples", "instruction"},
    }

    #: how many new instructions (each with an instance) to produce
    num_instructions: int = Field(100, ge=1)
    #: tasks shown in each list-continuation prompt, and how many of them are machine-generated
    prompt_instructions: int = Field(8, ge=1, le=64)
    machine_in_prompt: int = Field(2, ge=0)
    #: list-continuation prompts sent together in one round (the pool grows between rounds); default: the
    #: backend's `concurrency` for an HTTP backend, 4 for the local model
    prompts_per_round: int | None = Field(None, ge=1)
    #: stop after this many list-continuation requests (default 20 × num_instructions)
    max_requests: int | None = Field(None, ge=1)
    #: candidates whose ROUGE-L F against any pool instruction reaches this are rejected ("similar")
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0)
    blacklist: list[str] = Field(default_factory=lambda: list(BLACKLIST))
    min_words: int = Field(4, ge=1)
    max_words: int = Field(150, ge=1)
    #: generate an instance (input/output) for each new instruction
    instances: bool = True
    #: tries per instruction to get a parseable instance
    instance_attempts: int = Field(2, ge=1)
    #: decide classification vs. generation with the model ("llm") or treat every task as generation ("never")
    classify: Literal["llm", "never"] = "llm"
    #: seed tasks shown as demonstrations in classification and instance prompts
    demonstrations: int = Field(2, ge=1, le=16)
    #: "completion" sends prompts to the completion endpoint (as the paper did); "chat" sends them as a user turn
    api: Literal["completion", "chat"] = "completion"
    instruction_sampling: SamplingParams = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=192,
                                                          stop=("\n\n",), presence_penalty=0.5)
    instance_sampling: SamplingParams = SamplingParams(temperature=0.5, top_p=0.9, max_tokens=128,
                                                       stop=("\nTask:", "\n\n"))
    #: also emit the seed records unchanged
    keep_seeds: bool = False
    #: emit rejected candidates as dropped records (they go to rejected/ with their reason)
    emit_rejected: bool = True


@dataclass
class Task:
    id: str
    instruction: str
    instances: list[dict[str, str]] = field(default_factory=list)
    is_classification: bool | None = None
    machine: bool = False


def normalize_instruction(text: str) -> str:
    """Collapse whitespace, drop a trailing colon, capitalise the first letter (the paper's post-processing)."""
    text = _SPACES.sub(" ", text).strip().rstrip(":").strip()
    return text[:1].upper() + text[1:]


def parse_task_list(text: str, truncated: bool, continuation: bool = True) -> list[str]:
    """The instructions in an answer to a numbered-list prompt (ending with the next number, e.g. ``9.``).

    A completion (``continuation``) starts with the text of that next item; a chat answer restates numbers
    itself, so whatever precedes its first numbered item ("Sure! Here are...") is not an instruction. A truncated
    answer (``finish_reason == "length"``) loses its last, unfinished item.
    """
    items = _ITEM_SPLIT.split("\n" + text.lstrip(" \t"))
    if not continuation:
        items = items[1:]
    items = [normalize_instruction(x) for x in items]
    if truncated and items:
        items = items[:-1]
    return [x for x in items if x]


def _blacklist_patterns(words: Iterable[str]) -> list[re.Pattern[str]]:
    return [re.compile(r"\b" + re.escape(w) + r"\b", re.IGNORECASE) for w in words]


class SelfInstruct(SynthesisStep):
    """Self-Instruct: grow new instructions (with instances) from seed tasks, with ROUGE-L novelty filtering."""

    name = "self_instruct"
    version = "1"
    Params: ClassVar[type[StepParams]] = SelfInstructParams

    def __init__(self, params: StepParams | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._blacklist = _blacklist_patterns(self.p.blacklist)

    @property
    def p(self) -> SelfInstructParams:
        assert isinstance(self.params, SelfInstructParams)
        return self.params

    @property
    def prompts_per_round(self) -> int:
        """``prompts_per_round``, or by default as many as the backend keeps in flight (4 for the local model)."""
        p = self.p
        if p.prompts_per_round is not None:
            return p.prompts_per_round
        return p.backend.concurrency if p.backend.kind == "openai" else 4

    # -- seeds -------------------------------------------------------------------------------------------------
    def read_seed(self, record: Record) -> Task | None:
        instruction = normalize_instruction(instruction_of(record, self.p.max_seed_chars))
        if not instruction:
            return None
        c = record.content
        instances: list[dict[str, str]] = []
        is_clf: bool | None = None
        if isinstance(c, dict):
            for inst in c.get("instances") or ():
                if isinstance(inst, dict) and isinstance(inst.get("output"), str):
                    instances.append({"input": clean_text(inst.get("input") or "", self.p.max_seed_chars),
                                      "output": clean_text(inst["output"], self.p.max_seed_chars)})
            if not instances and isinstance(c.get("output"), str):
                instances.append({"input": clean_text(c.get("input") or "", self.p.max_seed_chars),
                                  "output": clean_text(c["output"], self.p.max_seed_chars)})
            if isinstance(c.get("is_classification"), bool):
                is_clf = c["is_classification"]
        return Task(record.id, instruction, instances, is_clf)

    # -- filters -----------------------------------------------------------------------------------------------
    def reject_reason(self, instruction: str) -> str | None:
        """Why a candidate instruction fails the paper's filters (before the novelty check), or None."""
        words = len(instruction.split())
        if words < self.p.min_words:
            return "too_short"
        if words > self.p.max_words:
            return "too_long"
        if any(pat.search(instruction) for pat in self._blacklist):
            return "blacklisted_word"
        if instruction.startswith("Write a program"):
            return "write_a_program"
        if instruction[0] in string.punctuation or not instruction[0].isascii():
            return "bad_start"
        return None

    # -- the loop ----------------------------------------------------------------------------------------------
    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        self.ensure_backend(ctx)
        seed_records: list[Record] = []
        seeds: list[Task] = []
        for batch in batches:
            for record in batch:
                task = self.read_seed(record)
                if task is None:
                    self.count("skipped:no_instruction")
                    continue
                seeds.append(task)
                seed_records.append(record)
        self.count("seeds", len(seeds))
        if self.p.keep_seeds and seed_records:
            yield seed_records
        if not seeds:
            return
        try:
            yield from self._grow(seeds, ctx)
        finally:
            self.report_usage()

    def _grow(self, seeds: list[Task], ctx: StepContext) -> Iterator[Batch]:
        p = self.p
        rng = random.Random(f"{p.seed}:{ctx.shard}")
        pool = RougeLIndex(t.instruction for t in seeds)
        seen = {t.instruction.lower() for t in seeds}
        machine: list[Task] = []
        produced = 0
        requests = 0
        max_requests = p.max_requests or 20 * p.num_instructions
        round_no = 0
        template = self.templates["self_instruct_tasks"]
        while produced < p.num_instructions and requests < max_requests:
            n = min(self.prompts_per_round, max_requests - requests)
            prompts: list[str] = []
            parents: list[list[Task]] = []
            for _ in range(n):
                k_machine = min(p.machine_in_prompt, len(machine), p.prompt_instructions)
                chosen = rng.sample(machine, k_machine)
                chosen += rng.sample(seeds, min(len(seeds), p.prompt_instructions - k_machine))
                rng.shuffle(chosen)
                tasks = "".join(f"{i + 1}. {t.instruction}\n" for i, t in enumerate(chosen))
                prompts.append(template.render(tasks=tasks, next=len(chosen) + 1))
                parents.append(chosen)
            completions = self.generate([
                self._request(prompt, p.instruction_sampling, self.request_seed(ctx.shard, "tasks", round_no, j))
                for j, prompt in enumerate(prompts)])
            requests += n
            accepted: list[tuple[Task, list[str], float]] = []
            rejected: Batch = []
            needed = p.num_instructions - produced
            for j, completion in enumerate(completions):
                if not completion.ok:
                    continue
                parent_ids = [t.id for t in parents[j]]
                candidates = parse_task_list(completion.text, completion.finish_reason == "length",
                                             continuation=p.api == "completion")
                for k, cand in enumerate(candidates):
                    if len(accepted) >= needed:  # enough for now: the rest would never be used
                        self.count("unused_candidates")
                        continue
                    reason = self.reject_reason(cand)
                    score = 0.0
                    if reason is None and cand.lower() in seen:
                        reason = "duplicate"
                    if reason is None:
                        score, _ = pool.most_similar(cand)
                        if score >= p.rouge_threshold:
                            reason = "similar"
                    self.count("candidates")
                    if reason is not None:
                        self.count(f"rejected:{reason}")
                        if p.emit_rejected:
                            r = self.new_record(conversation(cand, "", ""), "conversation", parent_ids,
                                                f"{ctx.shard}:{round_no}:{j}:{k}",
                                                self.synth_meta(["self_instruct_tasks"], round=round_no),
                                                {"self_instruct.rouge_l_max": round(score, 4)})
                            self.reject(r, reason)
                            rejected.append(r)
                        continue
                    task = Task(derive_id(*parent_ids, self.name, f"{ctx.shard}:{round_no}:{j}:{k}"), cand,
                                machine=True)
                    pool.add(cand)
                    seen.add(cand.lower())
                    machine.append(task)
                    accepted.append((task, parent_ids, score))
            self.count("accepted_to_pool", len(accepted))
            out = self._finish(accepted, seeds, rng, ctx, round_no)
            produced += sum(r.drop is None for r in out)
            round_no += 1
            if out or rejected:
                yield out + rejected
        self.count("requests:tasks", requests)
        if produced < p.num_instructions:
            self.give_up(requests, produced)

    def give_up(self, requests: int, produced: int) -> None:
        """Say that the request budget ran out: a warning, or an error when nothing at all was produced."""
        self.count("gave_up")
        rejected = {k.split(":", 1)[1]: v for k, v in self.stats.counters.items() if k.startswith("rejected:")}
        why = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])) or "none"
        msg = (f"self_instruct gave up after {requests} list-continuation requests (max_requests) with {produced} "
               f"of {self.p.num_instructions} instructions (candidates {self.stats.counters['candidates']}, "
               f"rejected: {why}; failed requests {self.stats.counters['llm.failed_requests']})")
        if produced == 0:
            raise SynthesisError(f"{msg}: the model never answered usably; check the backend and the model")
        log.warning("warning: %s", msg)

    def _request(self, prompt: str, params: SamplingParams, seed: int) -> LLMRequest:
        sampling = params.with_(seed=seed)
        if self.p.api == "chat":
            return LLMRequest.chat(prompt, sampling)
        return LLMRequest.completion(prompt, sampling)

    # -- classification and instances --------------------------------------------------------------------------
    def _finish(self, accepted: list[tuple[Task, list[str], float]], seeds: list[Task], rng: random.Random,
                ctx: StepContext, round_no: int) -> Batch:
        """Classify the newly accepted instructions, give each an instance, and make their records."""
        if not accepted:
            return []
        p = self.p
        tasks = [t for t, _, _ in accepted]
        labelled = [s for s in seeds if s.is_classification is not None]
        if p.classify == "llm" and labelled:
            self._classify(tasks, labelled, rng, ctx, round_no)
        else:
            for t in tasks:
                t.is_classification = False
        if p.instances:
            self._instances(tasks, seeds, rng, ctx, round_no)
        used = ["self_instruct_tasks"]
        if p.classify == "llm" and labelled:
            used.append("self_instruct_classify")
        if p.instances:
            used += ["self_instruct_input_first", "self_instruct_output_first"]
        out: Batch = []
        for task, parent_ids, score in accepted:
            first = task.instances[0] if task.instances else {"input": "", "output": ""}
            content = conversation(task.instruction, first["input"], first["output"])
            content["instances"] = task.instances
            content["is_classification"] = bool(task.is_classification)
            record = Record(task.id, content, "conversation",
                            meta={"parents": parent_ids,
                                  "synth": self.synth_meta(used, round=round_no)},
                            signals={"self_instruct.rouge_l_max": round(score, 4)})
            if p.instances and not task.instances:
                self.count("rejected:no_instance")
                self.reject(record, "no_instance")
            out.append(record)
        return out

    def _classify(self, tasks: list[Task], labelled: list[Task], rng: random.Random, ctx: StepContext,
                  round_no: int) -> None:
        template = self.templates["self_instruct_classify"]
        yes = [s for s in labelled if s.is_classification]
        no = [s for s in labelled if not s.is_classification]
        requests = []
        for i, task in enumerate(tasks):
            demos = rng.sample(yes, min(len(yes), self.p.demonstrations))  # balanced: as many yes as no
            demos += rng.sample(no, min(len(no), 2 * self.p.demonstrations - len(demos)))
            rng.shuffle(demos)
            examples = "".join(f"Task: {d.instruction}\nClassification: {'Yes' if d.is_classification else 'No'}\n\n"
                               for d in demos)
            prompt = template.render(examples=examples, instruction=task.instruction)
            requests.append(self._request(prompt, SamplingParams(temperature=0.0, max_tokens=3, stop=("\n",)),
                                          self.request_seed(ctx.shard, "classify", round_no, i)))
        for task, completion in zip(tasks, self.generate(requests)):
            answer = completion.text.strip().lower()
            task.is_classification = answer.startswith("yes")
            if not (answer.startswith("yes") or answer.startswith("no")):
                self.count("classify_unclear")
        self.count("classification_tasks", sum(bool(t.is_classification) for t in tasks))

    def _instances(self, tasks: list[Task], seeds: list[Task], rng: random.Random, ctx: StepContext,
                   round_no: int) -> None:
        with_instances = [s for s in seeds if s.instances]
        pending = list(range(len(tasks)))
        for attempt in range(self.p.instance_attempts):
            if not pending:
                break
            requests = []
            for i in pending:
                task = tasks[i]
                clf = bool(task.is_classification)
                pool = [s for s in with_instances if bool(s.is_classification) == clf] or with_instances
                demos = rng.sample(pool, min(len(pool), self.p.demonstrations))
                template = self.templates["self_instruct_output_first" if clf else "self_instruct_input_first"]
                examples = "".join(_demo(d, clf) for d in demos)
                prompt = template.render(examples=examples, instruction=task.instruction)
                seed = self.request_seed(ctx.shard, "instance", round_no, i, attempt)
                requests.append(self._request(prompt, self.p.instance_sampling, seed))
            still = []
            for i, completion in zip(pending, self.generate(requests)):
                instance = parse_instance(completion, bool(tasks[i].is_classification), tasks[i].instruction)
                if instance is None:
                    still.append(i)
                else:
                    tasks[i].instances = [instance]
            pending = still


def _demo(task: Task, classification: bool) -> str:
    inst = task.instances[0]
    given = _short(inst["input"]) or "none"
    if classification:
        return f"Task: {task.instruction}\nClass label: {_short(inst['output'])}\nInput: {given}\n\n"
    return f"Task: {task.instruction}\nInput: {given}\nOutput: {_short(inst['output'])}\n\n"


def _short(text: str, limit: int = 240) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


_FIELD_END = re.compile(r"\n\s*(?:Input|Output|Class label|Task|Example \d+)\s*:|\n\s*\n\s*\n", re.IGNORECASE)


def _field(text: str) -> str:
    """A field's value: up to the next ``Input:`` / ``Output:`` / ``Task:`` line (small models repeat them)."""
    return _FIELD_END.split(text, 1)[0].strip()


def parse_instance(completion: Completion, classification: bool, instruction: str) -> dict[str, str] | None:
    """The ``{"input", "output"}`` instance in an answer to an instance prompt, or None if it has none."""
    if not completion.ok:
        return None
    text = completion.text
    if classification:  # "<label>\nInput: <input>"
        label, sep, given = text.partition("\nInput:")
        label, given = _field(label), _field(given)
        if not sep or not label or given.lower() in _NONE_INPUTS or len(label.split()) > 10:
            return None
        instance = {"input": given, "output": label}
    else:  # "<input>\nOutput: <output>"
        given, sep, output = text.partition("\nOutput:")
        given, output = _field(given), _field(output)
        if not sep or not output:
            return None
        if given.lower() in _NONE_INPUTS:
            given = ""
        instance = {"input": given, "output": output}
    if instance["input"] == instance["output"] or instance["output"] == instruction:
        return None
    return instance

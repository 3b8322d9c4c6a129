"""UltraFeedback (Cui et al., 2023): a judge model rates several responses to one instruction, aspect by aspect.

For each record, the responses are those the record holds (``responses``, ``generations`` or ``completions``; a
``chosen``/``rejected`` pair; an ``output``/``response``), plus ``num_generations`` new ones from each backend in
``generators``. The judge (``backend``) rates every response on each of ``aspects`` from 1 to 5 with a short
rationale: the paper's four (``instruction_following``, ``honesty``, ``truthfulness``, ``helpfulness``) and
``overall`` (one call for a holistic rating, distilabel's cheap variant). One request per (response, aspect): a
small judge cannot keep several ratings apart in one answer.

The judge answers in JSON under a schema (``{"rationale": ..., "rating": 1-5}``, the rating an enum so that
llama.cpp's grammars hold it to the scale). An answer counts only when the JSON object *is* the answer
(:func:`assay.evolve.judges.parse_rating` with ``structured``), so a rating written inside a judged response and
echoed by the judge is never taken for the judge's; responses are quoted between tags that their own text cannot
close. An answer without a usable rating gets ``repairs`` repair turns (counter ``repair_prompts``), then counts as
``unparsed``; a response is rated only when all its aspects are, and a record without any rated response is flagged
(``ultrafeedback.flag: unparsed_verdict``) or dropped (``on_unparsed: drop``).

With ``pairs`` the ratings are binarised into DPO pairs (the ``preference`` modality): chosen is the response with
the highest mean rating (a random one among equals), rejected a random response rated strictly lower (``random``,
as distilabel and Zephyr) or the lowest one (``lowest``). Records whose rated responses are all equal make no pair
(``pairs_skipped:tie``), nor do those with fewer than two rated responses (``pairs_skipped:too_few``).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, ClassVar, Iterable, Iterator, Literal

from pydantic import Field, field_validator

from assay.core.record import Record, derive_id
from assay.core.step import Batch, StepContext, StepParams
from assay.evolve.judges import JSON_FRAME_TOKENS, MIN_REASON_CHARS, REASON_CHARS, parse_rating
from assay.models.llm import BackendConfig, LLMBackend, cached, shared_backend
from assay.models.llm.base import Completion, LLMRequest, SamplingParams
from assay.models.llm.structured import strip_fences
from assay.synthesize.common import (SynthesisStep, SynthParams, check_subset, clean_text, conversation,
                                     instruction_of)

PAPER_ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
ASPECTS = PAPER_ASPECTS + ("overall",)
SCALE = (1, 5)
ANSWER_FORMAT = ('Answer with only a JSON object with two keys: "rationale" (one short sentence about this response) '
                 'and "rating" (an integer from 1 to 5).')
_QUOTE_TAG = re.compile(r"<\s*/?\s*(?:instruction|response)\b[^>]*>", re.IGNORECASE)


def quote(tag: str, text: str) -> str:
    """``text`` between ``<tag>`` and ``</tag>``, with every instruction/response tag inside it defused, so a
    response cannot end its quotation and speak to the judge outside it."""
    body = _QUOTE_TAG.sub(lambda m: m.group(0).replace("<", "(").replace(">", ")"), text)
    return f"<{tag}>\n{body if body.strip() else '(empty)'}\n</{tag}>"


def rating_schema(max_tokens: int) -> dict[str, Any]:
    """The JSON schema of one rating, with a rationale short enough to end within ``max_tokens``."""
    rationale = {"type": "string", "maxLength": min(REASON_CHARS, max_tokens - JSON_FRAME_TOKENS)}
    return {"type": "object",
            "properties": {"rationale": rationale,
                           "rating": {"type": "integer", "enum": list(range(SCALE[0], SCALE[1] + 1))}},
            "required": ["rationale", "rating"]}


def parse_verdict(text: str) -> tuple[int, str] | None:
    """``(rating, rationale)`` when the whole answer is a JSON object with a 1-5 rating, else ``None``."""
    rating = parse_rating(text, structured=True)
    if rating is None or not SCALE[0] <= rating <= SCALE[1]:
        return None
    try:
        rationale = json.loads(strip_fences(text), strict=False).get("rationale")
    except (ValueError, AttributeError):
        rationale = None
    return rating, rationale if isinstance(rationale, str) else ""


def _response_text(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("text", "response", "content", "output"):
            if isinstance(item.get(key), str):
                return item[key]
    if isinstance(item, list):  # chat format: the last assistant message
        return next((m.get("content") for m in reversed(item)
                     if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str)),
                    None)
    return None


def responses_of(record: Record) -> list[tuple[str, str]]:
    """``(response, where it came from)`` for each response a record holds (its models if it names them)."""
    c = record.content
    if not isinstance(c, dict):
        return []
    for key in ("responses", "generations", "completions"):
        items = c.get(key)
        if isinstance(items, list) and items:
            models = next((c[k] for k in ("models", "generation_models", "model_names") if isinstance(c.get(k), list)),
                          [])
            texts = [_response_text(x) for x in items]
            return [(t, str(models[i]) if i < len(models) else "record") for i, t in enumerate(texts) if t is not None]
    if "chosen" in c and "rejected" in c:
        pair = [_response_text(c["chosen"]), _response_text(c["rejected"])]
        return [(t, "record") for t in pair if t is not None]
    for key in ("output", "response"):
        if isinstance(c.get(key), str):
            return [(c[key], "record")]
    return []


def binarize(means: list[float | None], mode: Literal["random", "lowest"], rng: random.Random
             ) -> tuple[int, int] | str:
    """``(chosen, rejected)`` indices from mean ratings (``None``: unrated), or why no pair: ``too_few`` rated
    responses, or a ``tie`` (nothing rated strictly below the best)."""
    rated = {i: m for i, m in enumerate(means) if m is not None}
    if len(rated) < 2:
        return "too_few"
    best = max(rated.values())
    lower = [i for i, m in rated.items() if m < best]
    if not lower:
        return "tie"
    chosen = rng.choice([i for i, m in rated.items() if m == best])
    if mode == "lowest":
        worst = min(rated[i] for i in lower)
        return chosen, rng.choice([i for i in lower if rated[i] == worst])
    return chosen, rng.choice(lower)


class UltraFeedbackParams(SynthParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {
        **{f"ultrafeedback_{a}": {"instruction", "response", "answer_format"} for a in ASPECTS},
        "ultrafeedback_repair": {"answer_format"}}

    #: what the judge rates (any of instruction_following, honesty, truthfulness, helpfulness, overall)
    aspects: list[str] = Field(default_factory=lambda: list(PAPER_ASPECTS))
    #: backends that write new responses (none: rate only what the records hold)
    generators: list[BackendConfig] = Field(default_factory=list)
    #: responses each generator writes per record
    num_generations: int = Field(1, ge=1, le=16)
    generation_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=256)
    #: rate the responses the records hold (as well as generated ones)
    record_responses: bool = True
    #: the judge's sampling (the rationale is sized to fit max_tokens)
    sampling: SamplingParams = SamplingParams(temperature=0.0, max_tokens=96)
    #: repair turns for an answer without a usable rating
    repairs: int = Field(1, ge=0, le=3)
    #: a record none of whose responses got rated: keep it with a flag, or drop it
    on_unparsed: Literal["flag", "drop"] = "flag"
    #: binarise into preference pairs: rejected is a random lower-rated response or the lowest; off: ratings only
    pairs: Literal["off", "random", "lowest"] = "off"
    #: also emit the rated records (with pairs on; without pairs they are always emitted)
    keep_rated: bool = True

    @field_validator("aspects")
    @classmethod
    def _known_aspects(cls, aspects: list[str]) -> list[str]:
        check_subset(aspects, ASPECTS, "aspects")
        return list(dict.fromkeys(aspects))

    @field_validator("sampling")
    @classmethod
    def _room_for_json(cls, sampling: SamplingParams) -> SamplingParams:
        if sampling.max_tokens - JSON_FRAME_TOKENS < MIN_REASON_CHARS:
            raise ValueError(f"sampling.max_tokens: {sampling.max_tokens} leaves no room for a JSON rating; "
                             f"give at least {JSON_FRAME_TOKENS + MIN_REASON_CHARS}")
        return sampling


class UltraFeedback(SynthesisStep):
    """UltraFeedback: rate each response to an instruction on fine-grained aspects; optionally make DPO pairs."""

    name = "ultrafeedback"
    version = "1"
    Params: ClassVar[type[StepParams]] = UltraFeedbackParams

    def __init__(self, params: StepParams | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.generators: list[LLMBackend] = []
        self._generator_usage: list[dict[str, float]] = []

    @property
    def p(self) -> UltraFeedbackParams:
        assert isinstance(self.params, UltraFeedbackParams)
        return self.params

    def ensure_backend(self, ctx: StepContext) -> LLMBackend:
        judge = super().ensure_backend(ctx)
        if len(self.generators) != len(self.p.generators):
            self.generators = [cached(shared_backend(cfg), self.cache_path(ctx)) for cfg in self.p.generators]
            self._generator_usage = [g.usage.snapshot() for g in self.generators]
        return judge

    def use_generators(self, backends: list[LLMBackend]) -> None:
        """Use these backends as the generators (library use and tests), one per ``generators`` entry."""
        self.generators = list(backends)
        self._generator_usage = [g.usage.snapshot() for g in self.generators]

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        return self.map_batches(batches, ctx, self._batch)

    # -- responses ---------------------------------------------------------------------------------------------
    def _generate_with(self, backend: LLMBackend, requests: list[LLMRequest]) -> list[Completion]:
        """:meth:`generate` (failure counting, outage waits) on a generator backend instead of the judge."""
        judge, self.llm = self.llm, backend
        try:
            return self.generate(requests)
        finally:
            self.llm = judge

    def _collect(self, batch: Batch) -> list[tuple[Record, str, list[tuple[str, str]]]]:
        """``(record, instruction, [(response, source)])`` for each record with an instruction and responses."""
        p = self.p
        items = []
        for record in batch:
            instruction = instruction_of(record, p.max_seed_chars)
            if not instruction:
                self.count("skipped:no_instruction")
                continue
            held = responses_of(record) if p.record_responses else []
            items.append((record, instruction, [(clean_text(t, p.max_seed_chars), s) for t, s in held]))
        for g, backend in enumerate(self.generators):
            requests = [LLMRequest.chat(instruction, p.generation_sampling.with_(
                            seed=self.request_seed("generate", record.id, g, k)))
                        for record, instruction, _ in items for k in range(p.num_generations)]
            answers = iter(self._generate_with(backend, requests))
            for _, _, responses in items:
                for _ in range(p.num_generations):
                    completion = next(answers)
                    if completion.ok:
                        responses.append((completion.text.strip(), backend.model))
                        self.count("generated")
        kept = []
        for item in items:
            if item[2]:
                kept.append(item)
            else:
                self.count("skipped:no_responses")
        return kept

    # -- ratings -----------------------------------------------------------------------------------------------
    def _ask(self, requests: list[LLMRequest]) -> list[tuple[int, str] | None]:
        """The verdict of each request's answer, after up to ``repairs`` repair turns (``None``: none usable)."""
        answers = self.generate(requests)
        verdicts = [parse_verdict(a.text) if a.ok else None for a in answers]
        repair = self.templates["ultrafeedback_repair"].render(answer_format=ANSWER_FORMAT)
        for attempt in range(1, self.p.repairs + 1):
            todo = [i for i, (a, v) in enumerate(zip(answers, verdicts)) if a.ok and v is None]
            if not todo:
                break
            self.count("repair_prompts", len(todo))
            again = []
            for i in todo:
                r = requests[i]
                messages = [*r.message_dicts(), {"role": "assistant", "content": answers[i].text[:2000]},
                            {"role": "user", "content": repair}]
                params = r.params if r.params.seed is None else r.params.with_(seed=r.params.seed + attempt)
                again.append(LLMRequest.chat(messages, params, json_schema=r.json_schema))
            for i, a in zip(todo, self.generate(again)):
                answers[i] = a
                verdicts[i] = parse_verdict(a.text) if a.ok else None
                self.count("repaired", int(verdicts[i] is not None))
        self.count("unparsed", sum(v is None for v in verdicts))
        return verdicts

    def _batch(self, batch: Batch) -> Batch:
        p = self.p
        items = self._collect(batch)
        schema = rating_schema(p.sampling.max_tokens)
        requests, keys = [], []
        for record, instruction, responses in items:
            for j, (response, _) in enumerate(responses):
                for aspect in p.aspects:
                    prompt = self.templates[f"ultrafeedback_{aspect}"].render(
                        instruction=quote("instruction", instruction), response=quote("response", response),
                        answer_format=ANSWER_FORMAT)
                    requests.append(LLMRequest.chat(prompt, p.sampling.with_(
                        seed=self.request_seed("rate", record.id, j, aspect)), json_schema=schema))
                    keys.append((record.id, j, aspect))
        verdicts = dict(zip(keys, self._ask(requests)))
        self.count("ratings", sum(v is not None for v in verdicts.values()))
        out: Batch = []
        for record, instruction, responses in items:
            out.extend(self._records(record, instruction, responses, verdicts))
        return out

    def _records(self, parent: Record, instruction: str, responses: list[tuple[str, str]],
                 verdicts: dict[tuple[str, int, str], tuple[int, str] | None]) -> list[Record]:
        p = self.p
        ratings, rationales, means = [], [], []
        for j in range(len(responses)):
            got = {a: verdicts[(parent.id, j, a)] for a in p.aspects}
            ratings.append({a: v[0] if v else None for a, v in got.items()})
            rationales.append({a: v[1] if v else None for a, v in got.items()})
            complete = all(v is not None for v in got.values())
            means.append(round(sum(v[0] for v in got.values() if v) / len(got), 4) if complete else None)
        rated = [m for m in means if m is not None]
        self.count("responses", len(responses))
        self.count("responses_rated", len(rated))
        sortable = [m if m is not None else -1.0 for m in means]
        best = sortable.index(max(sortable))
        content = {**conversation(instruction, "", responses[best][0]),
                   "responses": [t for t, _ in responses], "models": [s for _, s in responses],
                   "ratings": ratings, "rationales": rationales, "mean_ratings": means}
        signals: dict[str, Any] = {"ultrafeedback.rated": len(rated)}
        if rated:
            signals.update({"ultrafeedback.best": max(rated),
                            "ultrafeedback.margin": round(max(rated) - min(rated), 4)})
        synth = self.synth_meta([f"ultrafeedback_{a}" for a in p.aspects], aspects=list(p.aspects),
                                judge_sampling=p.sampling.model_dump(mode="json"),
                                generators=[g.describe() for g in self.generators],
                                generation_sampling=p.generation_sampling.model_dump(mode="json")
                                if self.generators else None)
        rated_record = self.new_record(content, "conversation", [parent.id], "rated", synth, signals)
        out: list[Record] = []
        if not rated:
            self.count("no_verdict")
            if p.on_unparsed == "drop":
                self.reject(rated_record, "unparsed_verdict")
            else:
                rated_record.signals["ultrafeedback.flag"] = "unparsed_verdict"
        if p.keep_rated or p.pairs == "off":
            out.append(rated_record)
        if p.pairs != "off":
            pair = binarize(means, p.pairs, random.Random(f"{p.seed}:{parent.id}"))
            if isinstance(pair, str):
                self.count(f"pairs_skipped:{pair}")
            else:
                c, r = pair
                high, low = means[c], means[r]
                assert high is not None and low is not None  # binarize picks rated responses only
                pref = {"prompt": instruction, "chosen": responses[c][0], "rejected": responses[r][0],
                        "chosen_rating": high, "rejected_rating": low,
                        "chosen_model": responses[c][1], "rejected_model": responses[r][1]}
                out.append(Record(derive_id(parent.id, self.name, "pair"), pref, "preference",
                                  meta={"parents": [parent.id], "synth": {**synth, "binarized": p.pairs}},
                                  signals={"ultrafeedback.margin": round(high - low, 4)}))
                self.count("pairs")
        return out

    def report_usage(self) -> None:
        """The judge's usage as ``llm.*``, the generators' as ``llm.generator.*``."""
        super().report_usage()
        for i, backend in enumerate(self.generators):
            now = backend.usage.snapshot()
            for key in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "errors"):
                delta = now[key] - self._generator_usage[i].get(key, 0)
                if delta:
                    self.count(f"llm.generator.{key}", int(delta))
            self._generator_usage[i] = now

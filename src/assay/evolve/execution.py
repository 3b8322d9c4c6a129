"""Execution feedback for code: run solutions against tests in the sandbox, repair failures with the LLM (RLEF),
and keep one program per behaviour (AlphaCode-style clustering).

**Code tasks.** A record is a code task when its content (a dict) has a solution and tests:

* the problem text: ``prompt`` / ``instruction`` / ``problem`` / ``question`` (or the first user message);
* the solution: ``solution`` / ``completion`` / ``code`` / ``canonical_solution`` / ``output`` (or the assistant
  message); Markdown code fences are stripped;
* the tests: ``tests`` / ``test``: Python code that raises (``assert``) on a wrong answer; if it defines
  ``check(candidate)`` (HumanEval format) it is called with ``entry_point``.

When the solution does not itself define ``entry_point`` it is a *completion* of the prompt (HumanEval: the
prompt holds the signature and docstring, the solution the body), and the program is prompt + solution; else the
solution stands alone. The test program is: program, tests, ``check(entry_point)``.

**RLEF** (``execution_feedback`` step; Gehring et al., 2024, "RLEF: grounding code LLMs in execution feedback"):
each solution (or, with no solution, one the LLM writes) runs against its tests; on failure the LLM sees the code
and the error and writes a fix, up to ``max_repairs`` times. Passing solutions are kept with
``signals["exec.*"]`` and the whole trace ``meta["exec"]["trace"]`` = [(attempt, code, status, error), ...];
``emit_traces`` also emits each repaired trace as a multi-turn conversation record (attempt → error → fix), the
training data for learning from execution feedback. Solutions still failing are dropped (``failed_tests``).

**Behaviour clustering** (``behaviour_clustering`` step; Li et al., 2022, AlphaCode): candidate programs of the same
problem are run on the same inputs and grouped by what they output; programs that behave identically are
redundant, so one per cluster is kept (clusters ranked by size: the biggest behaviour is the most likely right).
Inputs come from the records (``inputs``: a list of argument lists) or are generated from the entry point's type
annotations (``int``, ``float``, ``str``, ``bool``, ``list[...]``, ``tuple[...]``, ``dict[...]``, ``set[...]``,
``Optional[...]``), seeded by the problem, so reruns generate the same inputs.
"""

from __future__ import annotations

import ast
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import xxhash
from pydantic import Field

from assay.core.record import Record, derive_id
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.evolve.common import EvolveLLMStep, EvolveParams
from assay.evolve.sandbox import DEFAULT_PYTHON, Limits, RunResult, Sandbox
from assay.models.llm.base import LLMRequest, SamplingParams
from assay.synthesize.common import clean_text

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
PROBLEM_KEYS = ("prompt", "instruction", "problem", "question")
SOLUTION_KEYS = ("solution", "completion", "code", "canonical_solution", "output", "response")
TEST_KEYS = ("tests", "test")


# -- code tasks ---------------------------------------------------------------------------------------------------
def extract_code(text: str) -> str:
    """The program in an LLM answer: the first ```python (or unlabelled) fenced block, else the whole text."""
    if not isinstance(text, str):
        return ""
    blocks = _FENCE.findall(text)
    for lang, body in blocks:
        if lang.lower() in ("python", "py", "python3", ""):
            return body.strip("\n")
    if blocks:
        return blocks[0][1].strip("\n")
    return text.strip("\n")


def defines(code: str, name: str) -> bool:
    """True if ``code`` defines a top-level function or class ``name`` (a regex look, so broken code works too)."""
    return bool(name) and re.search(rf"^(?:async\s+)?(?:def|class)\s+{re.escape(name)}\s*[(:]", code, re.M) is not None


def first_function(code: str) -> str | None:
    """The name of the first top-level function defined in ``code``."""
    m = re.search(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", code, re.M)
    return m.group(1) if m else None


@dataclass
class CodeTask:
    """A problem, a candidate solution and the tests that decide it."""

    problem: str
    solution: str
    tests: str
    entry_point: str | None = None
    prefix: str = ""  # code the solution completes (HumanEval prompt), "" when the solution stands alone

    def program(self, solution: str | None = None) -> str:
        """The solution as a runnable module (prefix + body for completions)."""
        code = self.solution if solution is None else solution
        if self.prefix and not (self.entry_point and defines(code, self.entry_point)):
            return self.prefix + code
        if self.prefix:  # a full function replacing the prompt's: keep the prompt's imports
            imports = "\n".join(line for line in self.prefix.splitlines()
                                if line.startswith(("import ", "from ")))
            return (imports + "\n\n" + code) if imports else code
        return code

    def test_program(self, solution: str | None = None) -> str:
        """Program + tests + ``check(entry_point)`` when the tests define ``check``."""
        parts = [self.program(solution), self.tests]
        if self.entry_point and re.search(r"^def\s+check\s*\(", self.tests, re.M):
            parts.append(f"check({self.entry_point})")
        return "\n\n".join(p.rstrip() for p in parts) + "\n"


def code_task_of(record: Record, max_chars: int = 20_000) -> CodeTask | str:
    """The :class:`CodeTask` a record holds, or the reason it holds none (``no_tests``, ``no_problem``...)."""
    c = record.content
    if not isinstance(c, dict):
        return "not_a_code_task"
    tests = next((c[k] for k in TEST_KEYS if isinstance(c.get(k), str) and c[k].strip()), None)
    if tests is None:
        return "no_tests"
    if len(tests) > max_chars:
        return "tests_too_long"
    problem = next((c[k] for k in PROBLEM_KEYS if isinstance(c.get(k), str) and c[k].strip()), "")
    solution = next((c[k] for k in SOLUTION_KEYS if isinstance(c.get(k), str) and c[k].strip()), "")
    messages = c.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                if m.get("role") == "user" and not problem:
                    problem = m["content"]
                elif m.get("role") == "assistant" and not solution:
                    solution = m["content"]
    entry = c.get("entry_point") if isinstance(c.get("entry_point"), str) else None
    # HumanEval layout: the prompt is code (signature + docstring) that the solution completes
    prefix = c["prompt"] if isinstance(c.get("prompt"), str) and entry and defines(c["prompt"], entry) else ""
    if not problem.strip():
        return "no_problem"
    if len(problem) > max_chars or len(solution) > max_chars:
        return "too_long"
    code = extract_code(solution) if solution else ""
    if "\x00" in code or "\x00" in tests:
        return "binary"
    return CodeTask(problem=problem, solution=code, tests=tests, entry_point=entry, prefix=prefix)


# -- mutation (wrong solutions for checking the checker) ---------------------------------------------------------
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Div: ast.Mult,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}


class _Mutator(ast.NodeTransformer):
    """Applies the ``target``-th applicable mutation of kind ``kind`` to nodes on lines >= ``first_line``."""

    def __init__(self, kind: str, target: int, first_line: int) -> None:
        self.kind, self.target, self.first_line = kind, target, first_line
        self.seen = 0
        self.done: str | None = None

    def _hit(self, node: ast.AST) -> bool:
        if getattr(node, "lineno", 0) < self.first_line or self.done:
            return False
        self.seen += 1
        return self.seen - 1 == self.target

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if self.kind == "compare" and type(node.ops[0]) in _CMP_SWAP and self._hit(node):
            new = _CMP_SWAP[type(node.ops[0])]()
            self.done = f"line {node.lineno}: {type(node.ops[0]).__name__} -> {type(new).__name__}"
            node.ops[0] = new
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if self.kind == "arith" and type(node.op) in _BIN_SWAP and self._hit(node):
            new = _BIN_SWAP[type(node.op)]()
            self.done = f"line {node.lineno}: {type(node.op).__name__} -> {type(new).__name__}"
            node.op = new
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if self.kind != "constant":
            return node
        v = node.value
        if isinstance(v, bool):
            if self._hit(node):
                self.done = f"line {node.lineno}: {v} -> {not v}"
                return ast.copy_location(ast.Constant(not v), node)
        elif isinstance(v, (int, float)) and self._hit(node):
            self.done = f"line {node.lineno}: {v!r} -> {v + 1!r}"
            return ast.copy_location(ast.Constant(v + 1), node)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        if self.kind == "boolean" and self._hit(node):
            new = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.done = f"line {node.lineno}: {type(node.op).__name__} -> {type(new).__name__}"
            node.op = new
        return node

    def visit_Return(self, node: ast.Return) -> ast.AST:
        self.generic_visit(node)
        if self.kind == "return" and node.value is not None and self._hit(node):
            self.done = f"line {node.lineno}: return value -> None"
            node.value = ast.Constant(None)
        return node


MUTATION_KINDS = ("compare", "arith", "constant", "boolean", "return")


def mutants(prefix: str, solution: str, limit: int = 50) -> Iterator[tuple[str, str]]:
    """Single-site mutants of a solution (comparison, arithmetic, constant, boolean operator, returned value), as
    ``(description, mutated program)``, in a fixed order. Only the solution part is mutated, never the prefix
    (HumanEval prompt). Mutants may be *equivalent* (still correct); the caller runs them to find out."""
    source = prefix + solution
    try:
        ast.parse(source)
    except SyntaxError:
        return
    first_line = prefix.count("\n") + 1 if prefix else 1
    made = 0
    for kind in MUTATION_KINDS:
        target = 0
        while made < limit:
            tree = ast.parse(source)
            m = _Mutator(kind, target, first_line)
            tree = ast.fix_missing_locations(m.visit(tree))
            if not m.done:
                break
            made += 1
            target += 1
            yield f"{kind}: {m.done}", ast.unparse(tree) + "\n"


# -- the checker --------------------------------------------------------------------------------------------------
class CodeChecker:
    """Runs test programs in a :class:`Sandbox` (several at a time)."""

    def __init__(self, sandbox: Sandbox | None = None, workers: int = 2) -> None:
        self.sandbox = sandbox or Sandbox(Limits(cpu_seconds=5, wall_seconds=15, memory_mb=1024))
        self.workers = workers

    def run_programs(self, programs: Sequence[str]) -> list[RunResult]:
        return self.sandbox.python_many(list(programs), workers=self.workers)

    def check(self, tasks: Sequence[CodeTask], solutions: Sequence[str] | None = None) -> list[RunResult]:
        sols = list(solutions) if solutions is not None else [t.solution for t in tasks]
        return self.run_programs([t.test_program(s) for t, s in zip(tasks, sols)])


# -- RLEF step ----------------------------------------------------------------------------------------------------
class ExecutionFeedbackParams(EvolveParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"code_solve": {"problem"},
                                                "code_repair": {"problem", "code", "error"}}

    #: repair rounds after the first attempt (0: just run the tests)
    max_repairs: int = Field(2, ge=0, le=10)
    #: sandboxes run at the same time
    workers: int = Field(2, ge=1, le=64)
    #: interpreter inside the sandbox, and extra read-only host paths (e.g. a venv with the libraries tests need)
    python: str = DEFAULT_PYTHON
    ro_binds: list[str] = Field(default_factory=list)
    cpu_seconds: float = Field(5.0, gt=0)
    wall_seconds: float = Field(15.0, gt=0)
    memory_mb: int = Field(1024, ge=64)
    #: also emit each repaired attempt → error → fix trace as a conversation record
    emit_traces: bool = True
    #: sampling for the solve and repair prompts
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.2, max_tokens=512))
    #: longest error text shown to the model, in characters
    max_error_chars: int = Field(1500, ge=100)


@dataclass
class _Attempt:
    code: str
    status: str = ""
    error: str = ""
    seconds: float = 0.0


@dataclass
class _Job:
    record: Record
    task: CodeTask
    attempts: list[_Attempt] = field(default_factory=list)


class ExecutionFeedback(EvolveLLMStep):
    """Run code solutions against their tests in a sandbox; feed failures back to the LLM for repair (RLEF)."""

    name = "execution_feedback"
    version = "1"
    Params: ClassVar[type[StepParams]] = ExecutionFeedbackParams

    @property
    def p(self) -> ExecutionFeedbackParams:
        assert isinstance(self.params, ExecutionFeedbackParams)
        return self.params

    def make_checker(self) -> CodeChecker:
        p = self.p
        limits = Limits(cpu_seconds=p.cpu_seconds, wall_seconds=p.wall_seconds, memory_mb=p.memory_mb)
        return CodeChecker(Sandbox(limits, python=p.python, ro_binds=p.ro_binds), workers=p.workers)

    def setup(self, ctx: StepContext) -> None:
        self.checker = self.make_checker()
        self.checker.sandbox.check()
        super().setup(ctx)

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        if not hasattr(self, "checker"):
            self.setup(ctx)
        p = self.p
        jobs: list[_Job] = []
        for r in batch:
            task = code_task_of(r, p.max_seed_chars * 5)
            if isinstance(task, str):
                self.count(f"skipped:{task}")
                self.reject(r, task)
                continue
            jobs.append(_Job(r, task))
        # attempt 0: the record's own solution, or one the model writes
        need = [j for j in jobs if not j.task.solution.strip()]
        if need:
            self.ensure_backend(ctx)
            reqs = [LLMRequest.chat(self.templates["code_solve"].render(problem=clean_text(j.task.problem,
                                                                                          p.max_seed_chars)),
                                    self.sampled(p.sampling, self.request_seed(j.record.id, "solve")))
                    for j in need]
            for j, c in zip(need, self.generate(reqs)):
                j.task.solution = extract_code(c.text) if c.ok else ""
            self.count("generated_solutions", len(need))
        pending = list(jobs)
        for attempt in range(p.max_repairs + 1):
            if not pending:
                break
            codes = [j.task.solution if attempt == 0 else j.attempts[-1].code for j in pending]
            results = self.checker.check([j.task for j in pending], codes)
            still: list[_Job] = []
            for j, code, res in zip(pending, codes, results):
                if attempt == 0:
                    j.attempts.append(_Attempt(code))
                a = j.attempts[-1]
                a.status, a.seconds = res.status, res.wall_seconds
                a.error = "" if res.ok else res.error_summary(p.max_error_chars)
                self.count(f"status:{res.status}")
                if res.status == "sandbox_error":
                    self.count("sandbox_errors")
                elif not res.ok:
                    still.append(j)
            pending = still
            if not pending or attempt == p.max_repairs:
                break
            self.ensure_backend(ctx)
            reqs = [LLMRequest.chat(
                self.templates["code_repair"].render(problem=clean_text(j.task.problem, p.max_seed_chars),
                                                     code=j.attempts[-1].code, error=j.attempts[-1].error),
                self.sampled(p.sampling, self.request_seed(j.record.id, "repair", attempt)))
                for j in pending]
            for j, c in zip(pending, self.generate(reqs)):
                j.attempts.append(_Attempt(extract_code(c.text) if c.ok else ""))
            self.count("repair_requests", len(pending))
        out: Batch = [r for r in batch if r.drop is not None]
        for j in jobs:
            out.extend(self._finish(j))
        self.report_usage()
        return out

    def _finish(self, job: _Job) -> list[Record]:
        r, attempts = job.record, job.attempts
        final = attempts[-1]
        passed = final.status == "ok"
        r.signals.update({"exec.passed": int(passed), "exec.attempts": len(attempts),
                          "exec.repairs": len(attempts) - 1, "exec.seconds": round(sum(a.seconds for a in attempts), 4)})
        r.meta["exec"] = {"trace": [{"attempt": i, "code": a.code, "status": a.status, "error": a.error}
                                    for i, a in enumerate(attempts)]}
        if not passed:
            self.count("failed")
            self.reject(r, "sandbox_error" if final.status == "sandbox_error" else "failed_tests")
            return [r]
        self.count("passed")
        if len(attempts) > 1:
            self.count("repaired")
        if isinstance(r.content, dict):
            c = dict(r.content)
            key = next((k for k in SOLUTION_KEYS if isinstance(c.get(k), str) and c[k].strip()), "solution")
            if attempts[0].code != final.code or not c.get(key):
                c[key] = final.code
                if isinstance(c.get("messages"), list):
                    c["messages"] = [dict(m, content=final.code) if isinstance(m, dict) and m.get("role") == "assistant"
                                     else m for m in c["messages"]]
            r.content = c
        out = [r]
        if self.p.emit_traces and len(attempts) > 1:
            out.append(self._trace_record(job))
        return out

    def _trace_record(self, job: _Job) -> Record:
        """The repair trace as a conversation: problem → attempt → error → fix → ... → passing code."""
        messages = [{"role": "user", "content": job.task.problem}]
        for i, a in enumerate(job.attempts):
            messages.append({"role": "assistant", "content": f"```python\n{a.code}\n```"})
            if a.status != "ok":
                messages.append({"role": "user", "content": f"The tests failed:\n```\n{a.error}\n```\n"
                                                            "Fix the program."})
        rid = derive_id(job.record.id, self.name, "trace")
        return Record(rid, {"messages": messages, "kind": "execution_feedback_trace"}, "conversation",
                      meta={"parents": [job.record.id], "exec": job.record.meta["exec"]},
                      signals={"exec.repairs": len(job.attempts) - 1})


# -- behaviour clustering -----------------------------------------------------------------------------------------
def _annotation_value(node: ast.expr | None, rng: random.Random, depth: int = 0) -> Any:
    """A random value of the type written in annotation ``node`` (small, so programs run fast)."""
    if node is None or depth > 3:
        return rng.randint(-10, 10)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation "List[int]"
        try:
            return _annotation_value(ast.parse(node.value, mode="eval").body, rng, depth)
        except SyntaxError:
            return rng.randint(-10, 10)
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    if name is not None:
        name = name.lower()
        if name == "int":
            return rng.choice([rng.randint(-10, 10), rng.randint(0, 100), 0, 1])
        if name == "float":
            return round(rng.uniform(-10, 10), 2)
        if name == "str":
            return "".join(rng.choice("abcab xyzAB01") for _ in range(rng.randint(0, 8)))
        if name == "bool":
            return rng.random() < 0.5
        if name in ("list", "sequence", "iterable"):
            return [rng.randint(-10, 10) for _ in range(rng.randint(0, 6))]
        if name == "dict":
            return {str(rng.randint(0, 5)): rng.randint(-5, 5) for _ in range(rng.randint(0, 4))}
        if name in ("none", "nonetype"):
            return None
        return rng.randint(-10, 10)
    if isinstance(node, ast.Subscript):
        base = node.value.id if isinstance(node.value, ast.Name) else node.value.attr \
            if isinstance(node.value, ast.Attribute) else ""
        base = base.lower()
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base in ("list", "sequence", "iterable", "set", "frozenset"):
            items = [_annotation_value(args[0], rng, depth + 1) for _ in range(rng.randint(0, 6))]
            if base in ("set", "frozenset"):
                try:
                    return set(items)
                except TypeError:
                    return items
            return items
        if base == "tuple":
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                return tuple(_annotation_value(args[0], rng, depth + 1) for _ in range(rng.randint(0, 4)))
            return tuple(_annotation_value(a, rng, depth + 1) for a in args)
        if base == "dict" and len(args) == 2:
            return {_hashable(_annotation_value(args[0], rng, depth + 1)): _annotation_value(args[1], rng, depth + 1)
                    for _ in range(rng.randint(0, 4))}
        if base == "optional":
            return None if rng.random() < 0.2 else _annotation_value(args[0], rng, depth + 1)
        if base == "union":
            return _annotation_value(rng.choice(args), rng, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # int | None
        return _annotation_value(rng.choice([node.left, node.right]), rng, depth + 1)
    return rng.randint(-10, 10)


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(v)
    if isinstance(v, (dict, set)):
        return str(v)
    return v


def generate_inputs(code: str, entry_point: str, n: int, seed: int | str = 0) -> list[list[Any]]:
    """``n`` argument lists for ``entry_point`` drawn from its type annotations (unannotated: small ints).

    Deterministic for a given (signature, seed). Returns [] when the function is not found or the code does not parse.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    fn = next((node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and node.name == entry_point), None)
    if fn is None:
        return []
    params = [a for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
    rng = random.Random(xxhash.xxh3_64_intdigest(f"{seed}\x00{ast.dump(fn.args)}".encode()))
    out = []
    for _ in range(n):
        out.append([_annotation_value(a.annotation, rng) for a in params])
    return out


_MARKER = "\x1e__assay_outputs__\x1e"
_HARNESS = r'''

def __assay_run():
    import contextlib, copy, io, json, sys
    inputs = json.loads(__ASSAY_INPUTS)
    outs = []
    fn = globals().get(__ASSAY_ENTRY)
    for args in inputs:
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink):
                value = fn(*copy.deepcopy(args))
            outs.append(repr(value)[:2000])
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                outs.append("!exit")
            else:
                outs.append("!" + type(e).__name__)
    sys.stdout.write(__ASSAY_MARKER + json.dumps(outs) + "\n")

__assay_run()
'''


def behaviour_program(program: str, entry_point: str, inputs: Sequence[Sequence[Any]]) -> str:
    """``program`` followed by a harness printing ``repr(entry_point(*args))`` (or the exception name) per input."""
    return (program.rstrip() + "\n\n__ASSAY_INPUTS = " + repr(json.dumps([list(a) for a in inputs], default=repr))
            + f"\n__ASSAY_ENTRY = {entry_point!r}\n__ASSAY_MARKER = {_MARKER!r}\n" + _HARNESS)


def parse_behaviour(result: RunResult) -> list[str] | None:
    """The outputs a behaviour program printed, or ``None`` if it did not get that far."""
    i = result.stdout.rfind(_MARKER)
    if i < 0:
        return None
    try:
        outs = json.loads(result.stdout[i + len(_MARKER):].strip())
    except ValueError:
        return None
    return [str(o) for o in outs] if isinstance(outs, list) else None


def cluster_by_behaviour(signatures: Sequence[Any]) -> list[list[int]]:
    """Indices grouped by equal signature, biggest cluster first (ties: first member first)."""
    groups: dict[str, list[int]] = {}
    for i, sig in enumerate(signatures):
        groups.setdefault(json.dumps(sig), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


class BehaviourClusteringParams(StepParams):
    #: random inputs per problem when the records carry none
    num_inputs: int = Field(20, ge=1, le=1000)
    #: keep representatives of at most this many clusters per problem (largest first); None keeps all
    max_clusters: int | None = Field(None, ge=1)
    #: drop programs that do not even run (syntax error, crash at import, time-out) instead of clustering them
    drop_broken: bool = True
    #: which record field says which problem a candidate solves (default: task_id / problem_id, else the problem)
    problem_key: str | None = None
    seed: int = 0
    workers: int = Field(2, ge=1, le=64)
    python: str = DEFAULT_PYTHON
    cpu_seconds: float = Field(5.0, gt=0)
    wall_seconds: float = Field(15.0, gt=0)


class BehaviourClustering(Step):
    """Cluster candidate programs of each problem by their outputs on the same inputs; keep one per cluster."""

    name = "behaviour_clustering"
    version = "1"
    Params: ClassVar[type[StepParams]] = BehaviourClusteringParams

    @property
    def p(self) -> BehaviourClusteringParams:
        assert isinstance(self.params, BehaviourClusteringParams)
        return self.params

    def setup(self, ctx: StepContext) -> None:
        p = self.p
        self.sandbox = Sandbox(Limits(cpu_seconds=p.cpu_seconds, wall_seconds=p.wall_seconds), python=p.python)
        self.sandbox.check()

    def problem_of(self, record: Record) -> str:
        c = record.content if isinstance(record.content, dict) else {}
        for key in ([self.p.problem_key] if self.p.problem_key else []) + ["task_id", "problem_id"]:
            v = c.get(key, record.meta.get(key))
            if v is not None:
                return str(v)
        problem = next((c[k] for k in PROBLEM_KEYS if isinstance(c.get(k), str)), "")
        return xxhash.xxh3_64_hexdigest(problem.encode("utf-8", "replace"))

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        """Buffers the shard (candidates of a problem must be in the same shard), then clusters per problem."""
        if not hasattr(self, "sandbox"):
            self.setup(ctx)
        groups: dict[str, list[Record]] = {}
        passthrough: Batch = []
        for batch in batches:
            for r in batch:
                c = r.content if isinstance(r.content, dict) else None
                code = next((extract_code(c[k]) for k in SOLUTION_KEYS if c and isinstance(c.get(k), str)), "")
                if not code.strip():
                    self.count("skipped:no_code")
                    passthrough.append(r)
                    continue
                groups.setdefault(self.problem_of(r), []).append(r)
        if passthrough:
            yield passthrough
        for key in sorted(groups):
            yield self._cluster(key, groups[key])

    def _cluster(self, key: str, records: list[Record]) -> Batch:
        p = self.p
        tasks = [code_task_of(r) for r in records]
        programs, entry = [], None
        for r, t in zip(records, tasks):
            c = r.content
            code = next((extract_code(c[k]) for k in SOLUTION_KEYS if isinstance(c.get(k), str)), "")
            if isinstance(t, CodeTask):
                code = t.program()
                entry = entry or t.entry_point
            entry = entry or (c.get("entry_point") if isinstance(c.get("entry_point"), str) else None)
            programs.append(code)
        entry = entry or next((f for f in map(first_function, programs) if f), None)
        if entry is None:
            self.count("skipped:no_function")
            return records
        inputs = next((r.content["inputs"] for r in records if isinstance(r.content.get("inputs"), list)), None)
        if inputs is None:
            inputs = next((x for x in (generate_inputs(prog, entry, p.num_inputs, f"{p.seed}:{key}")
                                       for prog in programs) if x), [])
        inputs = [a if isinstance(a, (list, tuple)) else [a] for a in inputs]
        results = self.sandbox.python_many([behaviour_program(prog, entry, inputs) for prog in programs],
                                           workers=p.workers)
        signatures: list[Any] = []
        broken = []
        for i, res in enumerate(results):
            outs = parse_behaviour(res)
            if outs is None:
                broken.append(i)
                signatures.append({"broken": res.status})
            else:
                signatures.append(outs)
        live = [i for i in range(len(records)) if i not in broken] if p.drop_broken else list(range(len(records)))
        clusters = cluster_by_behaviour([signatures[i] for i in live])
        clusters = [[live[i] for i in c] for c in clusters]
        for i in broken:
            if p.drop_broken:
                self.reject(records[i], "broken_program")
        for rank, members in enumerate(clusters):
            keep = min(members, key=lambda i: (len(programs[i]), i))  # the shortest program speaks for its cluster
            for i in members:
                r = records[i]
                r.signals.update({"cluster.rank": rank, "cluster.size": len(members), "cluster.count": len(clusters),
                                  "cluster.inputs": len(inputs)})
                if i != keep:
                    self.reject(r, "same_behaviour")
                elif p.max_clusters is not None and rank >= p.max_clusters:
                    self.reject(r, "small_cluster")
        self.count("problems")
        self.count("clusters", len(clusters))
        return records

"""``repo_pack``: repository-level training samples, files concatenated dependencies first.

First-generation code corpora were bags of files; a model never saw a module next to the modules it imports.
This step groups the code records of each repository (``meta.repo_location``, else ``meta.repo``), builds the
repository's file dependency graph (:mod:`.imports`: Python, JavaScript/TypeScript, Go, C/C++), orders the files
so that every file comes after the files it imports (:mod:`.graph`; cycles are broken deterministically), and
cuts that sequence into samples of at most ``max_tokens`` tokens (:mod:`.tokens`). Each sample is::

    <repo_name>{repo}            (repo_header, once per sample)
    <file_sep>{path}             (file_header, before each file)
    {content}

(StarCoder2's format by default; both headers are format strings with ``{repo}``, ``{path}`` and ``{language}``).
A file longer than the budget is split at line boundaries into consecutive parts, each with its header
(``{path}`` then reads ``path (part k/n)``), so nothing is cut mid-line or lost.

Records of a repository must arrive together, as ``code_ingest`` emits them (one repository per shard keeps
that true after dedup); a repository seen again after another one started is packed as a separate group
(counted in ``pack.repo_regrouped``).

Output: one record per sample, ``modality: code``, with ``meta``: ``repo``, ``repo_location``, ``commit``,
``license``, ``files`` (paths in order), ``parents`` (the file records' ids, in order), ``part``/``parts`` (the
sample's position among the repository's samples), ``tokens``, ``languages``; and ``signals``:
``pack.files``, ``pack.tokens``, ``pack.cycles`` (files of the repository in import cycles). With
``emit_files`` the file records are passed on too, after their repository's samples.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, ClassVar, Iterable, Iterator

from pydantic import Field

from assay.core.record import Record, derive_id
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.code.graph import dependency_order
from assay.harvest.code.imports import dependency_edges
from assay.harvest.code.tokens import TokenCounter, make_counter


class RepoPackParams(StepParams):
    #: context budget of one sample, in tokens
    max_tokens: int = Field(8192, gt=16)
    #: ``regex`` (default), ``chars4``, or the path of a local tokenizer.json
    tokenizer: str = "regex"
    repo_header: str = "<repo_name>{repo}\n"
    file_header: str = "<file_sep>{path}\n"
    #: text between files (after each file's content, which gets a final newline if it lacks one)
    separator: str = ""
    #: repositories with fewer files than this are not packed (their files are passed through)
    min_files: int = Field(1, ge=1)
    #: pass the file records on as well
    emit_files: bool = False


class RepoPack(Step):
    """Pack each repository's files into samples in dependency order (imports first) within a token budget."""

    name = "repo_pack"
    version = "1"
    Params: ClassVar = RepoPackParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._count_tokens: TokenCounter | None = None

    def setup(self, ctx: StepContext) -> None:
        self._counter()

    def _counter(self) -> TokenCounter:
        if self._count_tokens is None:
            self._count_tokens = make_counter(self.params.tokenizer)  # type: ignore[attr-defined]
        return self._count_tokens

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        current: str | None = None
        group: list[Record] = []
        done: set[str] = set()
        for batch in batches:
            passthrough: Batch = []
            for rec in batch:
                if rec.drop is not None:
                    passthrough.append(rec)
                    continue
                key = str(rec.meta.get("repo_location") or rec.meta.get("repo") or "")
                if key != current:
                    if group:
                        yield from self._flush(group)
                    if key in done:
                        self.count("pack.repo_regrouped")
                    if current is not None:
                        done.add(current)
                    current, group = key, []
                group.append(rec)
            if passthrough:
                yield passthrough
        if group:
            yield from self._flush(group)

    # -- one repository ------------------------------------------------------------------------------------------
    def _flush(self, records: list[Record]) -> Iterator[Batch]:
        p: RepoPackParams = self.params  # type: ignore[assignment]
        self.count("pack.repos")
        if len(records) < p.min_files:
            self.count("pack.repos_too_small")
            yield records
            return
        by_path: dict[str, Record] = {}
        for r in records:
            path = str(r.meta.get("path") or r.id)
            if path in by_path:  # two records claim the same path: keep the first, count it
                self.count("pack.duplicate_paths")
                path = f"{path}#{r.id[:8]}"
            by_path[path] = r
        first = records[0]
        repo_name = str(first.meta.get("repo") or "")
        files = {path: (r.meta.get("language"), r.text) for path, r in by_path.items()}
        edges = dependency_edges(files, repo_name or None)
        order, cycles = dependency_order(by_path, edges)
        n_edges = sum(len(v) for v in edges.values())
        self.count("pack.edges", n_edges)
        self.count("pack.cycles", len(cycles))
        in_cycle = sum(len(c) for c in cycles)

        pieces = list(self._pieces(order, by_path))
        samples = self._cut(pieces, repo_name)
        out: Batch = []
        for k, sample in enumerate(samples):
            out.append(self._sample_record(first, repo_name, sample, k, len(samples), in_cycle, n_edges))
        self.count("pack.samples", len(out))
        self.count("pack.files", len(by_path))
        if p.emit_files:
            out.extend(by_path[path] for path in order)
        yield out

    def _pieces(self, order: list[str], by_path: dict[str, Record]) -> Iterator[tuple[str, str, int, Record]]:
        """(header, body, tokens, record) per file, or per part of a file that exceeds the budget."""
        p: RepoPackParams = self.params  # type: ignore[assignment]
        count = self._counter()
        repo = str(next(iter(by_path.values())).meta.get("repo") or "")
        budget = p.max_tokens - count(p.repo_header.format(repo=repo, path="", language=""))
        for path in order:
            rec = by_path[path]
            lang = rec.meta.get("language") or ""
            body = rec.text if rec.text.endswith("\n") or not rec.text else rec.text + "\n"
            body += p.separator
            header = p.file_header.format(repo=repo, path=path, language=lang)
            tokens = count(header) + count(body)
            if tokens <= budget:
                yield header, body, tokens, rec
                continue
            widest = p.file_header.format(repo=repo, path=f"{path} (part 99999/99999)", language=lang)
            parts = _split_lines(body, budget - count(widest) - 2, count)
            self.count("pack.files_split")
            for k, part in enumerate(parts, 1):
                h = p.file_header.format(repo=repo, path=f"{path} (part {k}/{len(parts)})", language=lang)
                yield h, part, count(h) + count(part), rec

    def _cut(self, pieces: list[tuple[str, str, int, Record]], repo: str) -> list[list[tuple[str, str, int, Record]]]:
        """Greedy: fill a sample with consecutive pieces while the budget allows."""
        p: RepoPackParams = self.params  # type: ignore[assignment]
        budget = p.max_tokens - self._counter()(p.repo_header.format(repo=repo, path="", language=""))
        samples: list[list[tuple[str, str, int, Record]]] = []
        current: list[tuple[str, str, int, Record]] = []
        used = 0
        for piece in pieces:
            # +1 per piece: joining texts can add one token (a line break followed by indentation)
            if current and used + piece[2] + 1 > budget:
                samples.append(current)
                current, used = [], 0
            current.append(piece)
            used += piece[2] + 1
        if current:
            samples.append(current)
        return samples

    def _sample_record(self, first: Record, repo: str, sample: list[tuple[str, str, int, Record]], k: int,
                       n: int, in_cycle: int, n_edges: int) -> Record:
        p: RepoPackParams = self.params  # type: ignore[assignment]
        text = p.repo_header.format(repo=repo, path="", language="") + "".join(h + b for h, b, _, _ in sample)
        parents: list[str] = []
        files: list[str] = []
        for _, _, _, rec in sample:
            if not parents or parents[-1] != rec.id:
                parents.append(rec.id)
                files.append(str(rec.meta.get("path")))
        languages = Counter(str(rec.meta.get("language")) for _, _, _, rec in sample if rec.meta.get("language"))
        licenses = sorted({str(rec.meta.get("license")) for _, _, _, rec in sample if rec.meta.get("license")})
        tokens = self._counter()(text)
        meta: dict[str, Any] = {
            "repo": repo,
            "repo_location": first.meta.get("repo_location"),
            "files": files,
            "parents": parents,
            "part": k,
            "parts": n,
            "tokens": tokens,
            "languages": dict(languages.most_common()),
        }
        if first.meta.get("commit"):
            meta["commit"] = first.meta["commit"]
        if licenses:
            meta["license"] = licenses[0] if len(licenses) == 1 else " AND ".join(licenses)
        if len(languages) == 1:
            meta["language"] = next(iter(languages))
        rec = Record(derive_id(*parents, self.name, k), text, "code", meta)
        rec.signals["pack.files"] = len(files)
        rec.signals["pack.tokens"] = tokens
        rec.signals["pack.cycles"] = in_cycle
        rec.signals["pack.edges"] = n_edges
        return rec


def _split_lines(text: str, budget: int, count: TokenCounter) -> list[str]:
    """Consecutive chunks of whole lines, each within ``budget`` tokens (a single longer line is cut by characters)."""
    budget = max(budget, 8)
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    lines = text.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    for line, t in zip(lines, count.lines(lines)):
        if t > budget:  # one enormous line: cut it into character slices of about the budget
            if current:
                chunks.append("".join(current))
                current, used = [], 0
            step = max(1, len(line) * budget // max(t, 1) - 1)
            chunks.extend(line[i:i + step] for i in range(0, len(line), step))
            continue
        if current and used + t > budget:
            chunks.append("".join(current))
            current, used = [], 0
        current.append(line)
        used += t
    if current:
        chunks.append("".join(current))
    return chunks

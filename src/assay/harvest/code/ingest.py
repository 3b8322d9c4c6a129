"""``code_ingest``: turn records naming repositories into one record per source file.

A repository is not a file format of the run's input, so ingestion is a step: the run reads a small JSONL file
whose lines name repositories, and this step expands each into its files::

    {"repo": "/src/requests"}                       # a directory or git work tree
    {"repo": "/archives/flask-3.0.tar.gz"}          # a tar or zip archive (GitHub download or `git archive`)
    {"repo": "/lists/repos.txt"}                    # a text file listing repositories, one per line
    {"repo": "/src/x", "name": "org/x", "license": "MIT"}   # optional: display name, declared license

(the recipe reads these with ``input: {text_key: repo}``; the location may also be in ``meta[repo_key]``). One
line per repository gives the executor one repository per shard when ``input.shard_bytes`` is small, and keeps all
files of a repository in one shard, which repository-level packing (``repo_pack``) relies on.

Each file becomes a record with ``modality: code``, ``content`` its UTF-8 text, and in ``meta``: ``repo`` (name),
``repo_location``, ``path`` (repository-relative), ``commit`` (git HEAD or the archive's commit, when known),
``size`` (bytes), ``language`` and ``language_type`` (:mod:`.languages`), the repository's ``license``
(:mod:`.licenses`: SPDX expression or ``unknown``, plus ``license_source``: file, metadata or input) and, when the
file has one, its own ``spdx`` header. Ids are ``stable_id(location@commit, path)``.

Files that are not source code are emitted *dropped* (they go to ``rejected/`` with their reason, content left
empty when it was never read): ``vendored``, ``lock_file``, ``generated``, ``minified``, ``binary``,
``too_large`` (over ``max_file_bytes``, checked before reading), ``not_utf8``, ``empty``, ``unknown_language``,
``excluded_language``, ``symlink``, ``bad_path`` (a file name that is not UTF-8), ``duplicate_path`` (an archive
member whose normalised name another member already has: ``x.py`` and ``./../x.py``), ``unreadable``. A repository
that cannot be opened is itself rejected (``unreadable_repo``) and logged in ``errors.jsonl``.

Installed packages (a folder inside ``site-packages``) carry their license in the ``*.dist-info`` next to them:
with ``installed_package_licenses`` (default) its license files are read, and its declared
``License-Expression`` is used when there are none.

A repository's package manifest (``pyproject.toml``, ``setup.cfg``, ``package.json``, ``Cargo.toml``, see
:mod:`.package_license`; ``package_metadata_licenses``) is read too: the license files it names are read with the
top-level ones, and its declared license is reconciled with what the files show:

* no license file recognised: the declared expression is the license (``license_source: metadata``);
* files and declaration name the same licenses: the declaration's expression is used (``license_source: file``),
  since it says what full license texts do not (``GPL-3.0-or-later`` vs ``-only``, ``OR`` for dual licensing);
* they disagree: the license files win, the declaration stays in ``license_declared`` and the step counts
  ``repo.license_conflict``.

Every id is reported in current SPDX spelling (``GPL-3.0-only``, not the deprecated ``GPL-3.0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

from pydantic import Field

from assay.core.record import Record, stable_id
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.code import classify
from assay.harvest.code.languages import detect_language
from assay.harvest.code.licenses import (RepoLicense, canonical_spdx, detect_repo_license, dist_info_declared,
                                         dist_info_for, dist_info_license_files, is_primary_license_file,
                                         same_licenses, spdx_headers)
from assay.harvest.code.package_license import declared_license
from assay.harvest.code.sources import RepoSource, iter_repo_locations, open_repo

#: text files larger than this are not read to find a license
_LICENSE_READ_LIMIT = 1 << 20
_SPDX_SCAN_CHARS = 4000
#: flush a batch of file records at this many characters, whatever its length
_BATCH_CHARS = 8 << 20


class CodeIngestParams(StepParams):
    #: meta key holding the repository location (else the record's content, when it is a string)
    repo_key: str = "repo"
    #: files above this many bytes are dropped unread (The Stack v1.1: 1 MB)
    max_file_bytes: int = Field(1_000_000, gt=0)
    #: list a git work tree's tracked files only (git ls-files), and record HEAD's commit
    use_git: bool = True
    #: keep only these languages (None: every known language)
    languages: list[str] | None = None
    #: languages never kept (plain text and tabular data are not code)
    exclude_languages: list[str] = Field(default_factory=lambda: ["Text", "CSV", "Ignore List", "Git Attributes",
                                                                  "Diff"])
    #: drop files whose language is not recognised
    drop_unknown_language: bool = True
    #: drop vendored / generated / binary files (reasons as in the module docstring)
    drop_vendored: bool = True
    drop_generated: bool = True
    #: read an installed package's license from its *.dist-info
    installed_package_licenses: bool = True
    #: read the license a repository's pyproject.toml / setup.cfg / package.json / Cargo.toml declares
    package_metadata_licenses: bool = True
    #: records per emitted batch
    batch_size: int = Field(256, gt=0)


class CodeIngest(Step):
    """Expand records naming repositories (directory, git tree, tar/zip) into one code record per file."""

    name = "code_ingest"
    version = "1"
    Params: ClassVar = CodeIngestParams

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p: CodeIngestParams = self.params  # type: ignore[assignment]
        out: Batch = []
        chars = 0
        for batch in batches:
            for rec in batch:
                if rec.drop is not None:
                    yield [rec]
                    continue
                location = rec.meta.get(p.repo_key)
                if location is None and isinstance(rec.content, str):
                    location = rec.content.strip()
                if not isinstance(location, str) or not location:
                    self.count("repo.missing_location")
                    self.reject(rec, "no_repo_location")
                    yield [rec]
                    continue
                for loc in self._locations(location, rec, ctx):
                    if loc is None:
                        yield [rec]
                        continue
                    for file_rec in self._ingest_repo(loc, rec, ctx):
                        out.append(file_rec)
                        chars += len(file_rec.content)
                        if len(out) >= p.batch_size or chars >= _BATCH_CHARS:
                            yield out
                            out, chars = [], 0
        if out:
            yield out

    def _locations(self, location: str, rec: Record, ctx: StepContext) -> Iterator[str | None]:
        try:
            yield from iter_repo_locations(location)
        except (OSError, UnicodeDecodeError) as e:
            ctx.errors.add("unreadable_repo", location, None, f"{type(e).__name__}: {e}")
            self.count("repo.unreadable")
            self.reject(rec, "unreadable_repo")
            yield None

    # -- one repository ------------------------------------------------------------------------------------------
    def _ingest_repo(self, location: str, parent: Record, ctx: StepContext) -> Iterator[Record]:
        p: CodeIngestParams = self.params  # type: ignore[assignment]
        try:
            repo = open_repo(location, use_git=p.use_git)
        except (OSError, ValueError, EOFError) as e:
            ctx.errors.add("unreadable_repo", location, None, f"{type(e).__name__}: {e}")
            self.count("repo.unreadable")
            yield Record(stable_id(location, "repo"), "", "code", {"repo_location": location},
                         drop=(self.name, "unreadable_repo"))
            return
        with repo:
            self.count("repo.opened")
            self.count(f"repo.kind:{repo.kind}")
            name = str(parent.meta.get("name") or _repo_name(location))
            lic = self._license(repo, location, parent)
            self.count(f"repo.license:{lic.get('license', 'unknown')}")
            repo_key = f"{location}@{repo.commit or ''}"
            base_meta: dict[str, Any] = {"repo": name, "repo_location": location}
            if repo.commit:
                base_meta["commit"] = repo.commit
            base_meta.update(lic)
            for k, (path, reason) in enumerate(repo.problems):
                path = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # JSON-safe
                self.count(f"file.skipped:{reason.split(':', 1)[0]}")
                kind = reason if reason in ("symlink", "bad_path", "duplicate_path") else "unreadable"
                # a duplicate shares its path with the file kept: its id must not
                key = f"{path}\0duplicate {k}" if kind == "duplicate_path" else path
                yield Record(stable_id(repo_key, key), "", "code", {**base_meta, "path": path},
                             drop=(self.name, kind))
            for f in repo.files:
                yield self._file_record(repo, repo_key, base_meta, f.path, f.size, ctx)

    def _file_record(self, repo: RepoSource, repo_key: str, base_meta: dict[str, Any], path: str, size: int,
                     ctx: StepContext) -> Record:
        p: CodeIngestParams = self.params  # type: ignore[assignment]
        meta = {**base_meta, "path": path, "size": size}
        rec = Record(stable_id(repo_key, path), "", "code", meta)
        self.count("file.seen")
        self.count("file.bytes_seen", size)

        if p.drop_vendored and (reason := classify.vendored_reason(path)):
            self.reject(rec, reason)
            return rec
        if p.drop_generated and (reason := classify.generated_by_path(path)):
            self.reject(rec, reason)
            return rec
        if classify.binary_by_extension(path):
            self.reject(rec, "binary")
            return rec
        if size > p.max_file_bytes:
            self.reject(rec, "too_large")
            return rec
        try:
            data = repo.read(path, p.max_file_bytes + 1)
        except (OSError, KeyError, EOFError, RuntimeError) as e:  # zip/tar member errors included
            ctx.errors.add("unreadable_file", f"{repo.location}/{path}", None, f"{type(e).__name__}: {e}")
            self.reject(rec, "unreadable")
            return rec
        if len(data) > p.max_file_bytes:
            self.reject(rec, "too_large")
            return rec
        if not data.strip():
            self.reject(rec, "empty")
            return rec
        if classify.looks_binary(data):
            self.reject(rec, "binary")
            return rec
        lang = detect_language(path, data[:256])
        if lang is None:
            if p.drop_unknown_language:
                self.reject(rec, "unknown_language")
                return rec
        else:
            meta["language"] = lang.name
            meta["language_type"] = lang.type
            if lang.name in p.exclude_languages or (p.languages is not None and lang.name not in p.languages):
                self.reject(rec, "excluded_language")
                return rec
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.reject(rec, "not_utf8")
            return rec
        if text.startswith("\ufeff"):
            text = text[1:]
        rec.content = text
        if p.drop_generated and (reason := classify.generated_by_content(text, meta.get("language"))):
            self.reject(rec, reason)
            return rec
        if "SPDX-License-Identifier" in text[:_SPDX_SCAN_CHARS]:
            headers = spdx_headers(text[:_SPDX_SCAN_CHARS])
            if headers:
                meta["spdx"] = headers[0]
        self.count("file.kept")
        self.count("file.bytes_kept", size)
        return rec

    # -- license -------------------------------------------------------------------------------------------------
    def _license(self, repo: RepoSource, location: str, parent: Record) -> dict[str, Any]:
        """The repository's license: given in the input; else its license files, reconciled with what its package
        metadata declares (see the module docstring)."""
        p: CodeIngestParams = self.params  # type: ignore[assignment]
        given = parent.meta.get("license")
        if isinstance(given, str) and given.strip():
            return {"license": canonical_spdx(given.strip()), "license_source": "input"}
        texts: list[tuple[str, str]] = []
        wanted = [f.path for f in repo.files if is_primary_license_file(f.path) and f.size <= _LICENSE_READ_LIMIT]
        package = declared_license({f.path for f in repo.files}, lambda path: _read_text(repo, path)) \
            if p.package_metadata_licenses else None
        if package is not None:
            wanted += [path for path in package.files if path not in wanted]
        for path in wanted:
            text = _read_text(repo, path)
            if text is not None:
                texts.append((path, text))
        for extra in parent.meta.get("license_files") or ():
            try:
                texts.append((Path(extra).name, Path(extra).read_text(encoding="utf-8", errors="replace")))
            except OSError:
                continue
        declared, is_expression = None, False
        if p.installed_package_licenses and repo.kind in ("directory", "file"):
            info = dist_info_for(Path(location).expanduser().resolve())
            if info is not None:
                for lf in dist_info_license_files(info):
                    try:
                        texts.append((f"{info.name}/{lf.name}", lf.read_text(encoding="utf-8", errors="replace")))
                    except OSError:
                        continue
                declared, is_expression = dist_info_declared(info)
        declared_expression = declared if is_expression else None
        if declared is None and package is not None and package.text is not None:
            declared, declared_expression = package.text.strip()[:200], package.expression
        found: RepoLicense = detect_repo_license(texts)
        meta = found.as_meta()
        if found.expression is not None:
            meta["license_source"] = "file"
            if declared_expression is not None:
                if same_licenses(found.expression, declared_expression):  # it says -only/-or-later, AND/OR
                    meta["license"] = declared_expression
                else:
                    self.count("repo.license_conflict")
        elif declared_expression is not None:
            meta["license"] = declared_expression
            meta["license_source"] = "metadata"
        if declared is not None:
            meta["license_declared"] = declared
        if package is not None:
            meta["license_manifest"] = package.manifest
        return meta


def _read_text(repo: RepoSource, path: str) -> str | None:
    try:
        return repo.read(path, _LICENSE_READ_LIMIT).decode("utf-8", "replace")
    except (OSError, KeyError, EOFError, RuntimeError):
        return None


def _repo_name(location: str) -> str:
    name = location.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name

"""Reading repositories: a directory, a git work tree, or a tar/zip archive, as a list of files with their bytes.

:func:`open_repo` returns a :class:`RepoSource` that lists the repository's files (repository-relative POSIX
paths, sorted, so that every run sees them in the same order) and reads one file's bytes on demand, with a size
limit checked before reading. The commit is found where there is one:

* git work tree: ``git rev-parse HEAD``; the files are those git tracks (``git ls-files``), which leaves out
  build output and anything ignored, as on GitHub. Their content is read from the work tree.
* archive: the commit ``git archive`` records (the pax header ``comment`` of a tar, the comment of a zip). A
  single top-level folder (``project-1.2/``, as in GitHub downloads) is stripped from the paths.
* plain directory: none. Symbolic links are not followed (they would leave the tree or loop).

Nothing here raises on a bad file: unreadable entries are reported through :attr:`RepoSource.problems`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ZIP_SUFFIXES = (".zip",)
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


@dataclass
class RepoFile:
    path: str  # repository-relative, "/"-separated
    size: int


@dataclass
class RepoSource:
    """One repository: its files and how to read them."""

    location: str
    kind: str  # git | directory | tar | zip
    commit: str | None = None
    files: list[RepoFile] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def read(self, path: str, limit: int) -> bytes:
        """The first ``limit`` bytes of ``path`` (raises OSError when it cannot be read)."""
        raise NotImplementedError

    def _set_aside_bad_names(self) -> None:
        """Paths that are not valid UTF-8 (undecodable bytes in a file name) cannot be written to JSON: they are
        reported as problems (``bad_path``, with the bad bytes shown as U+FFFD) instead of listed."""
        good = []
        for f in self.files:
            try:
                f.path.encode("utf-8")
                good.append(f)
            except UnicodeEncodeError:
                safe = f.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                self.problems.append((safe, "bad_path"))
        self.files = good

    def close(self) -> None:
        pass

    def __enter__(self) -> "RepoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirectorySource(RepoSource):
    def __init__(self, root: Path, kind: str = "directory", commit: str | None = None,
                 tracked: list[str] | None = None) -> None:
        super().__init__(str(root), kind, commit)
        self.root = root
        if tracked is not None:
            self._stat_listed(tracked)
        else:
            self._walk()
        self._set_aside_bad_names()
        self.files.sort(key=lambda f: f.path)

    def _stat_listed(self, paths: list[str]) -> None:
        for rel in paths:
            try:
                st = os.lstat(self.root / rel)
            except OSError as e:
                self.problems.append((rel, f"unreadable: {e.strerror}"))
                continue
            if stat.S_ISREG(st.st_mode):
                self.files.append(RepoFile(rel, st.st_size))
            elif stat.S_ISLNK(st.st_mode):
                self.problems.append((rel, "symlink"))
            # directories (submodules) are skipped silently: they are other repositories

    def _walk(self) -> None:
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                full = os.path.join(dirpath, name)
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                try:
                    st = os.lstat(full)
                except OSError as e:
                    self.problems.append((rel, f"unreadable: {e.strerror}"))
                    continue
                if stat.S_ISREG(st.st_mode):
                    self.files.append(RepoFile(rel, st.st_size))
                elif stat.S_ISLNK(st.st_mode):
                    self.problems.append((rel, "symlink"))

    def read(self, path: str, limit: int) -> bytes:
        with open(self.root / path, "rb") as f:
            return f.read(limit)


class TarSource(RepoSource):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path), "tar")
        self._tar = tarfile.open(path, "r:*")
        self.commit = _commit_like(self._tar.pax_headers.get("comment"))
        members: dict[str, tarfile.TarInfo] = {}
        for m in self._tar.getmembers():
            if m.isfile():
                name = _clean_member_name(m.name)
                if name in members:  # "x.py" and "../x.py": the first one is the file, the other is reported
                    self.problems.append((m.name, "duplicate_path"))  # as spelled: its id must differ
                else:
                    members[name] = m
            elif m.issym() or m.islnk():
                self.problems.append((_clean_member_name(m.name), "symlink"))
        prefix = _common_folder(list(members))
        self._members = {}
        for name, m in members.items():
            rel = name[len(prefix):]
            if rel and not _in_skipped_dir(rel):
                self._members[rel] = m
                self.files.append(RepoFile(rel, m.size))
        self._set_aside_bad_names()
        self.files.sort(key=lambda f: f.path)

    def read(self, path: str, limit: int) -> bytes:
        f = self._tar.extractfile(self._members[path])
        if f is None:
            raise OSError(f"{path}: not a regular file")
        with f:
            return f.read(limit)

    def close(self) -> None:
        self._tar.close()


class ZipSource(RepoSource):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path), "zip")
        self._zip = zipfile.ZipFile(path)
        self.commit = _commit_like(self._zip.comment.decode("ascii", "replace"))
        infos: dict[str, zipfile.ZipInfo] = {}
        for i in self._zip.infolist():
            if not i.is_dir():
                name = _clean_member_name(i.filename)
                if name in infos:
                    self.problems.append((i.filename, "duplicate_path"))
                else:
                    infos[name] = i
        prefix = _common_folder(list(infos))
        self._infos = {}
        for name, info in infos.items():
            rel = name[len(prefix):]
            if rel and not _in_skipped_dir(rel):
                if stat.S_ISLNK(info.external_attr >> 16):
                    self.problems.append((rel, "symlink"))
                    continue
                self._infos[rel] = info
                self.files.append(RepoFile(rel, info.file_size))
        self._set_aside_bad_names()
        self.files.sort(key=lambda f: f.path)

    def read(self, path: str, limit: int) -> bytes:
        with self._zip.open(self._infos[path]) as f:
            return f.read(limit)

    def close(self) -> None:
        self._zip.close()


def _clean_member_name(name: str) -> str:
    """An archive member's name as a path inside the repository: ``./a``, ``/a``, ``../../a`` and ``b/../a`` are
    all ``a`` (an archive cannot place a file outside the repository, nor give it two spellings)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/".join(parts)


def _commit_like(value: str | None) -> str | None:
    value = (value or "").strip()
    if len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value):
        return value
    return None


def _common_folder(names: list[str]) -> str:
    """``"top/"`` if every name is inside the same single top-level folder, else ``""``."""
    if not names:
        return ""
    first = names[0].split("/", 1)
    if len(first) < 2:
        return ""
    top = first[0] + "/"
    return top if all(n.startswith(top) for n in names) else ""


def _in_skipped_dir(rel: str) -> bool:
    return any(part in _SKIP_DIRS for part in rel.split("/")[:-1])


def git_commit(root: Path) -> str | None:
    """HEAD's commit of the git work tree at ``root``, or None (not a repository, or git is missing)."""
    try:
        p = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return _commit_like(p.stdout) if p.returncode == 0 else None


def git_tracked_files(root: Path) -> list[str] | None:
    """The files git tracks under ``root`` (relative to it), or None when ``root`` is not in a git work tree."""
    try:
        p = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", "."], capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    return [n for n in p.stdout.decode("utf-8", "surrogateescape").split("\0") if n]


def is_git_root(root: Path) -> bool:
    return (root / ".git").exists()


def open_repo(location: str, use_git: bool = True) -> RepoSource:
    """Open the repository at ``location`` (directory, git work tree, or archive). Raises OSError/ValueError."""
    path = Path(location).expanduser()
    if path.is_dir():
        if use_git and is_git_root(path):
            tracked = git_tracked_files(path)
            if tracked is not None:
                return DirectorySource(path, "git", git_commit(path), tracked)
        return DirectorySource(path)
    if not path.exists():
        raise FileNotFoundError(f"no such repository: {location}")
    name = path.name.lower()
    if name.endswith(_ZIP_SUFFIXES):
        return ZipSource(path)
    if name.endswith(_TAR_SUFFIXES) or tarfile.is_tarfile(path):
        return TarSource(path)
    if zipfile.is_zipfile(path):
        return ZipSource(path)
    if path.is_file():  # a single-module project (six.py): a repository of one file
        return DirectorySource(path.parent, "file", None, [path.name])
    raise ValueError(f"not a directory, a file or a tar/zip archive: {location}")


def iter_repo_locations(path: str) -> Iterator[str]:
    """Repositories named by ``path``: itself, or one per line of a ``.txt`` list (blank lines and # skipped)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".txt":
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                yield line
    else:
        yield path

"""A folder on any filesystem fsspec knows: a local path or a URL such as ``s3://bucket/prefix`` or ``memory://x``.

It is the one place that turns a folder URL into (filesystem, path). ``fsspec.core.url_to_fs`` strips the scheme
(``s3://bucket/out`` → ``bucket/out``); a stripped path handed to anything that opens files by name again lands on
the local disk (``./bucket/out/…``). So a :class:`Folder` keeps its filesystem, names files inside it with
:meth:`path` (for calls on :attr:`fs`) and hands out :meth:`url` (scheme kept) to anything else.
"""

from __future__ import annotations

from typing import Any

import fsspec

from assay.core.errors import AssayError

# filesystems whose files live in the memory of one process: a run on several processes cannot share them
_IN_PROCESS = ("memory",)


def protocol_of(fs: Any) -> str:
    return fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol


def filesystem(url: str) -> tuple[Any, str]:
    """``(filesystem, path)`` of ``url``; a missing fsspec backend (s3fs for s3://…) is a one-line error."""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        scheme = url.split("://", 1)[0]
        extra = " (pip install 'assay[s3]')" if scheme in ("s3", "s3a") else ""
        raise AssayError(f"cannot open {url}: {e}{extra}") from None
    except ValueError as e:
        raise AssayError(f"cannot open {url}: {e}") from None


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a filesystem raises when storage cannot be reached: OSError, botocore's own errors (no credentials, no
    endpoint), which s3fs lets through, and the HTTP clients' errors of the filesystems that use one (hf:// raises
    httpx's ConnectError without a network; gcsfs and http:// raise aiohttp's), when those are loaded."""
    import sys

    errors: list[type[BaseException]] = [OSError]
    for module, name in (("botocore.exceptions", "BotoCoreError"), ("botocore.exceptions", "ClientError"),
                         ("httpx", "HTTPError"), ("httpx2", "HTTPError"), ("aiohttp", "ClientError")):
        if module.startswith("botocore"):
            try:
                __import__(module)
            except ImportError:
                continue
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errors.append(cls)
    return tuple(errors)


class Folder:
    """A folder and its filesystem. ``Folder("s3://b/out").child("data").url("train-0.jsonl")`` is
    ``s3://b/out/data/train-0.jsonl``; a local folder's URLs are plain paths."""

    def __init__(self, url: str, *, _fs: Any = None, _path: str | None = None) -> None:
        if _fs is None:
            _fs, _path = filesystem(url)
        self.fs: Any = _fs
        self.root: str = str(_path).rstrip("/") or str(_path)
        self.protocol = protocol_of(_fs)
        self.is_local = self.protocol in ("file", "local")
        self.in_process = self.protocol in _IN_PROCESS
        self.display = url  # as the user wrote it, for messages

    def path(self, *names: str) -> str:
        """A path inside the folder, for calls on :attr:`fs`."""
        return "/".join([self.root, *names]) if names else self.root

    def url(self, *names: str) -> str:
        """The same path as a URL that names its filesystem (a plain path for local files)."""
        return self.url_of(self.path(*names))

    def url_of(self, fs_path: str) -> str:
        """The URL of a path this folder's filesystem returned (from ``glob``, ``ls``…)."""
        return fs_path if self.is_local else self.fs.unstrip_protocol(fs_path)

    def child(self, *names: str) -> "Folder":
        sub = Folder(self.url(*names), _fs=self.fs, _path=self.path(*names))
        sub.display = f"{self.display.rstrip('/')}/{'/'.join(names)}"
        return sub

    def glob(self, pattern: str) -> list[str]:
        """Paths (for :attr:`fs`) matching ``pattern`` inside the folder, sorted. Listings are read afresh: other
        processes (workers) write into the folder, and s3fs would otherwise answer from its listings cache."""
        self.fs.invalidate_cache()
        return sorted(self.fs.glob(self.path(pattern)))

    def names(self) -> list[str]:
        """Names of the entries in the folder ([] when it does not exist yet: an object-store prefix with no
        objects). The folder's own entry (an S3 "folder" marker object ``prefix/``) is not one of them."""
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        own = self.root.rstrip("/")
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != own})

    def __repr__(self) -> str:
        return f"Folder({self.display!r})"

"""Opening files anywhere (local paths and fsspec URIs such as ``s3://``, ``hf://``), with compression by extension,
and expanding input globs."""

from __future__ import annotations

import gzip
import io
import os
from typing import IO, Any

import fsspec

FORMATS = ("jsonl", "parquet", "warc", "webdataset", "video", "lerobot")
_JSONL_EXT = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl.zst", ".json.zst",
              ".ndjson.zst", ".jsonl.zstd")
_WARC_EXT = (".warc", ".warc.gz", ".arc", ".arc.gz", ".warc.zst")
_WEBDATASET_EXT = (".tar",)  # WebDataset shards (img2dataset's "webdataset" output)
_VIDEO_EXT = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")


def detect_format(path: str) -> str:
    p = path.lower()
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith(_WARC_EXT):
        return "warc"
    if p.endswith(_WEBDATASET_EXT):
        return "webdataset"
    if p.endswith(_VIDEO_EXT):
        return "video"
    if p.endswith(_JSONL_EXT):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path!r} from its name; set input.format in the recipe "
                     f"(one of {', '.join(FORMATS)})")


def compression_of(path: str) -> str | None:
    p = path.lower()
    if p.endswith(".gz"):
        return "gzip"
    if p.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def open_binary(path: str) -> IO[bytes]:
    """Open ``path`` for reading raw bytes (no decompression)."""
    return fsspec.open(path, "rb").open()


def open_decompressed(path: str, raw: IO[bytes] | None = None) -> IO[bytes]:
    """Open ``path`` for reading, decompressing by extension. Errors of a damaged stream surface while reading
    (``EOFError`` for a truncated gzip, ``gzip.BadGzipFile``/``zlib.error``/``zstd.ZstdError`` for corruption)."""
    raw = raw if raw is not None else open_binary(path)
    comp = compression_of(path)
    if comp == "gzip":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=1 << 20)  # type: ignore[arg-type]
    if comp == "zstd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
                                 buffer_size=1 << 20)
    return raw


class TruncatedStream(EOFError):
    """The compressed stream ended before its end marker: everything before it has been delivered."""


def iter_decompressed(path: str, raw: IO[bytes], chunk_size: int = 1 << 20):  # noqa: ANN201
    """Yield decompressed chunks of ``raw`` (by ``path``'s extension). Unlike ``gzip.GzipFile``, a damaged stream
    yields everything decompressed before the damage, then raises :class:`TruncatedStream` (early end) or the
    decompressor's error (corruption). Concatenated gzip members and zstd frames are read through."""
    import zlib

    comp = compression_of(path)
    if comp is None:
        while chunk := raw.read(chunk_size):
            yield chunk
        return
    if comp == "gzip":
        new = lambda: zlib.decompressobj(31)  # noqa: E731
    else:
        import zstandard

        new = zstandard.ZstdDecompressor().decompressobj
    d = new()
    fresh = True  # no input fed to d yet
    while True:
        data = raw.read(chunk_size)
        if not data:
            if not fresh and not d.eof:
                raise TruncatedStream("compressed stream ended before its end marker")
            return
        while data:
            out = d.decompress(data)
            fresh = False
            if out:
                yield out
            if d.eof:
                data = d.unused_data
                d, fresh = new(), True
                if comp == "zstd":
                    continue
            else:
                data = b""


def expand_inputs(paths: list[str]) -> list[str]:
    """Expand globs and folders into a sorted, de-duplicated list of files, keeping each URI's protocol."""
    out: list[str] = []
    for p in paths:
        fs, _, expanded = fsspec.get_fs_token_paths(p)
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        found = []
        for e in expanded:
            if fs.isdir(e):
                # a folder contributes its data files (READMEs and licenses beside them are not input); an Assay
                # run folder its kept records only (not rejected/, nor its bookkeeping)
                found.extend(f for f in _folder_files(fs, e) if _is_data(f))
            elif fs.exists(e):
                found.append(e)
        if not found:
            offline = ""
            flags = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                     if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
            if p.startswith("hf://") and flags:
                offline = f" ({flags[0]} is set, so the Hugging Face Hub was not asked)"
            raise FileNotFoundError(f"no input files match {p!r}{offline}")
        for f in found:
            out.append(f if protocol in ("file", "local") else fs.unstrip_protocol(f))
    seen: set[str] = set()
    result = []
    for f in sorted(out):
        if f not in seen:
            seen.add(f)
            result.append(f)
    return result


def _is_data(path: str) -> bool:
    try:
        detect_format(path)
        return True
    except ValueError:
        return False


def _folder_files(fs: Any, folder: str) -> list[str]:
    """The files below ``folder`` outside hidden (``.``/``_``) folders; for an Assay run folder, its kept records."""
    from assay.run.layout import is_kept_record_path, is_run_path

    root = folder.rstrip("/")
    run = is_run_path(fs, root)
    found = []
    for f in fs.find(root):
        rel = f[len(root):].lstrip("/").split("/")
        if any(_hidden(part) for part in rel):
            continue
        if run and not is_kept_record_path(rel):
            continue
        found.append(f)
    return found


def _hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith((".", "_"))

"""Sharded output: a writer that rolls over to a new file every N records or bytes, writes each file under a
temporary name and renames it into place on close, so a killed run never leaves a half-written file under a real
name."""

from __future__ import annotations

from typing import Any

from assay.core.record import Record
from assay.io.files import compression_of
from assay.io.folder import Folder


def extension(fmt: str) -> str:
    if fmt == "webdataset":
        return ".tar"
    return ".parquet" if fmt == "parquet" else "." + fmt


class ShardWriter:
    """Writes ``{prefix}-{k:04d}{ext}`` files in ``folder`` (a :class:`Folder`, a local path or a URL); returns the
    final paths (on the folder's filesystem) from :meth:`close`. ``text_column`` names the content's column (JSONL
    and Parquet)."""

    def __init__(self, folder: Folder | str, prefix: str, fmt: str = "jsonl.gz", max_records: int = 100_000,
                 max_bytes: int = 512 << 20, text_column: str = "content") -> None:
        folder = folder if isinstance(folder, Folder) else Folder(folder)
        self.fs, self.folder = folder.fs, folder.path()
        self.fs.makedirs(self.folder, exist_ok=True)
        self.prefix, self.fmt = prefix, fmt
        self.max_records, self.max_bytes = max_records, max_bytes
        self.text_column = text_column
        self._writer: Any = None
        self._tmp = self._final = ""
        self._k = 0
        self._records = 0
        self.paths: list[str] = []
        self.records_written = 0

    def _open(self) -> None:
        name = f"{self.prefix}-{self._k:04d}{extension(self.fmt)}"
        self._final = f"{self.folder}/{name}"
        self._tmp = f"{self.folder}/.tmp-{name}"
        f = self.fs.open(self._tmp, "wb")
        if self.fmt == "parquet":
            from assay.io.parquet import ParquetWriter

            self._writer = ParquetWriter(f, text_column=self.text_column)
        elif self.fmt == "webdataset":
            from assay.io.webdataset import WebDatasetWriter

            self._writer = WebDatasetWriter(f)
        else:
            from assay.io.jsonl import JsonlWriter

            self._writer = JsonlWriter(f, compression_of(self._final), self.text_column)
        self._records = 0

    def write(self, record: Record) -> None:
        if self._writer is None:
            self._open()
        self._writer.write(record)
        self._records += 1
        self.records_written += 1
        if self._records >= self.max_records or self._writer.bytes_written >= self.max_bytes:
            self._finish()

    def write_many(self, records: list[Record]) -> None:
        i = 0
        while i < len(records):
            if self._writer is None:
                self._open()
            room = self.max_records - self._records
            chunk = records[i: i + room]
            self._writer.write_many(chunk)
            self._records += len(chunk)
            self.records_written += len(chunk)
            i += len(chunk)
            if self._records >= self.max_records or self._writer.bytes_written >= self.max_bytes:
                self._finish()

    def _finish(self) -> None:
        self._writer.close()
        self.fs.mv(self._tmp, self._final)
        self.paths.append(self._final)
        self._writer = None
        self._k += 1

    def close(self) -> list[str]:
        if self._writer is not None:
            self._finish()
        return self.paths

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self.fs.rm(self._tmp)
                self._writer = None

"""Token files for training: Megatron-LM's indexed dataset (``.bin``/``.idx``) and packed Parquet shards that
Hugging Face ``datasets`` loads. Token ids in, files out: which tokenizer made the ids is the caller's business
(``assay.lab.pack``).

Megatron's layout (``megatron.core.datasets.indexed_dataset``, the format ``tools/preprocess_data.py`` writes): the
``.bin`` is every document's tokens back to back; the ``.idx`` is the 9-byte magic ``MMIDIDX\\x00\\x00``, version 1
(``<Q``), the dtype code (``<B``: 8 = uint16, 4 = int32), the sequence count and the document-index count (``<Q``
each), then the sequence lengths (int32), the sequences' byte offsets into the ``.bin`` (int64) and the document
indices (int64: 0, then the number of sequences up to the end of each document). One document is one sequence.
"""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
#: Megatron's dtype codes (indexed_dataset.DType) for the two token widths written here
MEGATRON_DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocabularies up to 65,536), else int32 (Megatron's own rule)."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


class MegatronWriter:
    """Writes ``PREFIX.bin`` as documents arrive and ``PREFIX.idx`` on :meth:`close` (both under temporary names
    until then, so a crash leaves no half-written pair that loads)."""

    def __init__(self, prefix: str | Path, vocab_size: int) -> None:
        self.prefix = str(prefix)
        self.dtype = token_dtype(vocab_size)
        self._bin_tmp = f"{self.prefix}.bin.tmp"
        self._bin = open(self._bin_tmp, "wb")  # noqa: SIM115 - closed in close()
        self._lengths = array("i")  # int32, one per document: 4 bytes each is all this keeps in memory
        self.tokens = 0

    def write(self, ids: Sequence[int] | np.ndarray) -> None:
        """One document (its EOS included by the caller)."""
        arr = np.asarray(ids, dtype=self.dtype)
        self._bin.write(arr.tobytes(order="C"))
        self._lengths.append(len(arr))
        self.tokens += len(arr)

    def close(self) -> None:
        self._bin.close()
        lengths = np.frombuffer(self._lengths, dtype=np.int32) if self._lengths else np.zeros(0, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths):
            pointers[1:] = np.cumsum(lengths[:-1], dtype=np.int64) * self.dtype.itemsize
        doc_index = np.arange(len(lengths) + 1, dtype=np.int64)
        idx_tmp = f"{self.prefix}.idx.tmp"
        with open(idx_tmp, "wb") as f:
            f.write(MEGATRON_MAGIC)
            f.write(struct.pack("<Q", MEGATRON_VERSION))
            f.write(struct.pack("<B", MEGATRON_DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(doc_index)))
            f.write(lengths.tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(doc_index.tobytes(order="C"))
        os.replace(self._bin_tmp, f"{self.prefix}.bin")
        os.replace(idx_tmp, f"{self.prefix}.idx")

    def abort(self) -> None:
        self._bin.close()
        Path(self._bin_tmp).unlink(missing_ok=True)


class PackedParquetWriter:
    """Concatenates documents (EOS-terminated by the caller) into rows of exactly ``seq_len`` tokens; a document
    that does not fit continues in the next row. Columns: ``input_ids`` (list<int32>), ``attention_mask`` (list<int8>:
    0 on padding), and with ``position_ids=True`` positions that restart at 0 where a document starts and at the
    start of every row (what ``transformers``' packed-sequence attention reads as document boundaries).

    The tail (the last tokens, fewer than ``seq_len``) is dropped (``tail="drop"``) or padded with ``pad_id`` and
    masked (``tail="pad"``). Files: ``FOLDER/train-00000.parquet`` … with ``rows_per_file`` rows each.
    """

    def __init__(self, folder: str | Path, seq_len: int, *, pad_id: int, tail: str = "drop",
                 position_ids: bool = False, rows_per_file: int = 8192) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1 (got {seq_len})")
        if tail not in ("drop", "pad"):
            raise ValueError(f"tail must be 'drop' or 'pad' (got {tail!r})")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seq_len = seq_len
        self.pad_id = pad_id
        self.tail = tail
        self.position_ids = position_ids
        self.rows_per_file = rows_per_file
        self._buf: list[np.ndarray] = []  # pending tokens (< seq_len + one document)
        self._starts: list[np.ndarray] = []  # True on each document's first token
        self._buffered = 0
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.files: list[Path] = []
        self.sequences = 0
        self.padding = 0  # pad tokens written
        self.dropped = 0  # tail tokens left out

    def write(self, ids: Sequence[int] | np.ndarray) -> None:
        arr = np.asarray(ids, dtype=np.int32)
        if not len(arr):
            return
        self._buf.append(arr)
        if self.position_ids:
            first = np.zeros(len(arr), dtype=bool)
            first[0] = True
            self._starts.append(first)
        self._buffered += len(arr)
        if self._buffered >= self.seq_len:
            self._cut()

    def _cut(self) -> None:
        stream = np.concatenate(self._buf)
        starts = np.concatenate(self._starts) if self.position_ids else None
        n = len(stream) // self.seq_len
        ones = np.ones(self.seq_len, dtype=np.int8)
        for i in range(n):
            s = slice(i * self.seq_len, (i + 1) * self.seq_len)
            self._add_row(stream[s], ones, _positions(starts[s]) if starts is not None else None)
        rest = n * self.seq_len
        self._buf = [stream[rest:]] if rest < len(stream) else []
        self._starts = [starts[rest:]] if starts is not None and rest < len(stream) else []
        self._buffered = len(stream) - rest

    def _add_row(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray | None) -> None:
        self._rows.append((ids, mask, pos))
        self.sequences += 1
        if len(self._rows) >= self.rows_per_file:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        n, L = len(self._rows), self.seq_len
        offsets = pa.array(np.arange(0, (n + 1) * L, L, dtype=np.int32))
        columns = {
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate([r[0] for r in self._rows]))),
            "attention_mask": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate([r[1] for r in self._rows]))),
        }
        if self.position_ids:
            columns["position_ids"] = pa.ListArray.from_arrays(
                offsets, pa.array(np.concatenate([r[2] for r in self._rows])))
        path = self.folder / f"train-{len(self.files):05d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, path)
        self.files.append(path)
        self._rows = []

    def close(self) -> None:
        if self._buffered:
            stream = np.concatenate(self._buf)
            if self.tail == "pad":
                k = len(stream)
                ids = np.full(self.seq_len, self.pad_id, dtype=np.int32)
                ids[:k] = stream
                mask = np.zeros(self.seq_len, dtype=np.int8)
                mask[:k] = 1
                pos = None
                if self.position_ids:
                    pos = np.zeros(self.seq_len, dtype=np.int32)
                    pos[:k] = _positions(np.concatenate(self._starts))
                self._add_row(ids, mask, pos)
                self.padding += self.seq_len - k
            else:
                self.dropped += len(stream)
        self._buf, self._starts, self._buffered = [], [], 0
        self._flush()


def _positions(starts: np.ndarray) -> np.ndarray:
    """Positions within each document part of one row: 0 at a document's first token and at the row's start."""
    at = np.arange(len(starts), dtype=np.int32)
    starts = starts.copy()
    starts[0] = True
    return at - np.maximum.accumulate(np.where(starts, at, 0)).astype(np.int32)

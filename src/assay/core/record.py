"""The one record type that flows through every stage of Assay.

A :class:`Record` is a web page, a cleaned text, a code file, an image-text pair, a video clip, a conversation or a
preference pair. Whatever the modality, it has the same envelope:

* ``id``: stable, derived from where the record came from (source URI and position) so that a rerun gives the same
  ids; records derived from other records get ids derived from their parents (:func:`derive_id`).
* ``content``: ``str`` for text, code and HTML; a ``dict`` for structured modalities (conversation, preference,
  image-text, video). ``bytes`` values inside a dict (image bytes) survive JSONL round trips (base64-tagged).
* ``hash``: content hash, always computed from the current content (never stale).
* ``modality``: one of :data:`MODALITIES`.
* ``meta``: where it came from and descriptive facts (source URI, offset, url, language, license, ...).
* ``signals``: numbers computed by steps (quality scores, language confidence, dedup cluster, ...).
* ``lineage``: the ordered list of steps (name, version, params hash) that produced or changed it.

A record a step decides to drop carries ``drop = (step, reason)``; the pipeline moves it to the ``rejected/`` output.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import orjson
import xxhash

MODALITIES = ("text", "code", "html", "image_text", "video", "conversation", "preference", "trajectory")


class LineageEntry(NamedTuple):
    """One step in a record's history. Steps share one instance for all the records they touch."""

    step: str
    version: str
    params: str  # short hash of the step's parameters

    def as_dict(self) -> dict[str, str]:
        return {"step": self.step, "version": self.version, "params": self.params}


def stable_id(source: str, position: int | str) -> str:
    """The id of a record read from ``source`` at ``position`` (byte offset, row number, ...)."""
    return xxhash.xxh3_128_hexdigest(f"{source}\x00{position}".encode())


def derive_id(*parts: Any) -> str:
    """The id of a record made from other records (parents' ids, the step, an index)."""
    return xxhash.xxh3_128_hexdigest("\x00".join(str(p) for p in parts).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy arrays
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _restore_bytes(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and "$bytes" in obj:
            return base64.b64decode(obj["$bytes"])
        return {k: _restore_bytes(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_bytes(v) for v in obj]
    return obj


def dumps(obj: Any) -> bytes:
    """JSON-encode anything a record holds (bytes, numpy values included)."""
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def content_hash(content: Any) -> str:
    if isinstance(content, str):
        return xxhash.xxh3_128_hexdigest(content.encode("utf-8", "surrogatepass"))
    if isinstance(content, (bytes, bytearray)):
        return xxhash.xxh3_128_hexdigest(content)
    return xxhash.xxh3_128_hexdigest(orjson.dumps(content, default=_json_default, option=orjson.OPT_SORT_KEYS))


class Record:
    """A unit of data with its provenance. See the module docstring."""

    __slots__ = ("id", "content", "modality", "meta", "signals", "lineage", "drop")

    def __init__(
        self,
        id: str,
        content: Any,
        modality: str = "text",
        meta: dict[str, Any] | None = None,
        signals: dict[str, Any] | None = None,
        lineage: list[LineageEntry] | None = None,
        drop: tuple[str, str] | None = None,
    ) -> None:
        self.id = id
        self.content = content
        self.modality = modality
        self.meta = {} if meta is None else meta
        self.signals = {} if signals is None else signals
        self.lineage = [] if lineage is None else lineage
        self.drop = drop

    # -- derived -----------------------------------------------------------------------------------------------
    @property
    def hash(self) -> str:
        return content_hash(self.content)

    @property
    def text(self) -> str:
        """The record's main text: ``content`` for text-like records, the natural text field otherwise."""
        c = self.content
        if isinstance(c, str):
            return c
        if isinstance(c, dict):
            for key in ("text", "caption", "response", "prompt"):
                v = c.get(key)
                if isinstance(v, str):
                    return v
            if isinstance(c.get("messages"), list):
                return "\n".join(str(m.get("content", "")) for m in c["messages"] if isinstance(m, dict))
        return ""

    def nbytes(self) -> int:
        c = self.content
        if isinstance(c, str):
            return len(c)  # characters: cheap and close enough for throughput accounting
        if isinstance(c, (bytes, bytearray)):
            return len(c)
        if isinstance(c, dict):  # raw bytes (images) counted as they are, not base64-encoded into JSON to be measured
            raw = [len(v) for v in c.values() if isinstance(v, (bytes, bytearray, memoryview))]
            if raw:
                return sum(raw) + len(dumps({k: v for k, v in c.items()
                                             if not isinstance(v, (bytes, bytearray, memoryview))}))
        return len(dumps(c))

    # -- serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "hash": self.hash,
            "modality": self.modality,
            "content": self.content,
            "meta": self.meta,
            "signals": self.signals,
            "lineage": [e.as_dict() for e in self.lineage],
        }
        if self.drop is not None:
            d["drop"] = {"step": self.drop[0], "reason": self.drop[1]}
        return d

    def to_json(self, content_key: str = "content") -> bytes:
        """One JSON line; ``content_key="text"`` names the content ``text`` (JSONL output with ``text_column``)."""
        c = self.content
        d = {"id": self.id, "hash": content_hash(c), "modality": self.modality, content_key: c, "meta": self.meta,
             "signals": self.signals, "lineage": [e.as_dict() for e in self.lineage] if self.lineage else []}
        if self.drop is not None:
            d["drop"] = {"step": self.drop[0], "reason": self.drop[1]}
        return orjson.dumps(d, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        modality = d.get("modality", "text")
        content = d.get("content")
        if not isinstance(content, str) and content is not None:
            content = _restore_bytes(content)
        drop = d.get("drop")
        return cls(
            id=d["id"],
            content=content,
            modality=modality,
            meta=d.get("meta") or {},
            signals=d.get("signals") or {},
            lineage=[_lineage_entry(e) for e in d.get("lineage") or ()],
            drop=(drop["step"], drop["reason"]) if drop else None,
        )

    @staticmethod
    def is_record_dict(d: Any) -> bool:
        """True if ``d`` looks like a serialised Assay record (rather than foreign JSON such as ``{"text": ...}``)."""
        return isinstance(d, dict) and "id" in d and "content" in d and "modality" in d

    def copy(self) -> "Record":
        return Record(self.id, self.content, self.modality, dict(self.meta), dict(self.signals), list(self.lineage),
                      self.drop)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        preview = self.text[:60].replace("\n", " ")
        return f"Record(id={self.id[:12]}…, modality={self.modality}, content={preview!r})"


_LINEAGE_CACHE: dict[tuple[str, str, str], LineageEntry] = {}


def _lineage_entry(e: Any) -> LineageEntry:
    if isinstance(e, dict):
        key = (e["step"], str(e.get("version", "")), str(e.get("params", "")))
    else:
        key = (str(e[0]), str(e[1]), str(e[2]))
    entry = _LINEAGE_CACHE.get(key)
    if entry is None:
        if len(_LINEAGE_CACHE) > 10_000:
            _LINEAGE_CACHE.clear()
        entry = _LINEAGE_CACHE[key] = LineageEntry(*key)
    return entry

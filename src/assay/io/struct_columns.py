"""A record's ``meta`` and ``signals`` dicts as typed Arrow struct columns, and back.

Each top-level key becomes a struct field with the type of its values: ``bool``, ``int64``, ``double``, ``string``,
``binary``, lists of these, and structs for nested dicts. Types are unified across records (and across the row
groups and files of a run, :func:`unify_types`) with permissive promotion: an integer field that also holds
fractions is ``double``; a key missing from a record is null there. A key whose values cannot share one type (text in
one record and a number in another, a list mixing types, an integer beyond 64 bits, a value Arrow has no type for) is
stored as JSON text in its field, and named in the file's schema metadata (:data:`METADATA_KEY`) so that
:func:`decode_dicts` parses it back.

Reading drops ``None`` values from dicts at every depth (a null field and an absent key read the same); ``None``
items of lists are kept.
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson
import pyarrow as pa

from assay.core.record import _restore_bytes, dumps

#: the schema metadata key holding ``{"json": {"meta": [...], "signals": [...]}, "text_column": ...}``
METADATA_KEY = b"assay"
STRUCT_COLUMNS = ("meta", "signals")

_SCALAR_TYPES: dict[type, pa.DataType] = {
    bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(), bytes: pa.binary(),
    bytearray: pa.binary(), type(None): pa.null(),
}
_INT64 = (-(2 ** 63), 2 ** 63)


class Untypable(Exception):
    """Values that cannot share one Arrow type: their key is stored as JSON text."""


# -- types -------------------------------------------------------------------------------------------------------
def value_type(v: Any) -> pa.DataType:
    """The Arrow type of one value (raises :class:`Untypable`)."""
    t = _SCALAR_TYPES.get(type(v))
    if t is not None:
        if type(v) is int and not _INT64[0] <= v < _INT64[1]:
            raise Untypable
        return t
    if isinstance(v, dict):
        fields = []
        for k, x in v.items():
            if type(k) is not str:
                raise Untypable
            fields.append(pa.field(k, value_type(x)))
        return pa.struct(fields)
    if isinstance(v, (list, tuple)):
        item = pa.null()
        for x in v:
            item = unify_types(item, value_type(x))
        return pa.list_(item)
    if hasattr(v, "dtype") and hasattr(v, "tolist"):  # numpy scalars and arrays
        return value_type(v.tolist())
    raise Untypable


def unify_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """One type for values of types ``a`` and ``b`` (raises :class:`Untypable`)."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64()
    if _is_number(a) and _is_number(b):
        return pa.float64()
    if {_kind(a), _kind(b)} == {"string"} or {_kind(a), _kind(b)} == {"binary"}:
        return pa.large_string() if _kind(a) == "string" else pa.large_binary()
    if _is_list(a) and _is_list(b):
        item = unify_types(a.value_type, b.value_type)
        large = pa.types.is_large_list(a) or pa.types.is_large_list(b)
        return pa.large_list(item) if large else pa.list_(item)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            f = b.field(i)
            fields[f.name] = unify_types(fields[f.name], f.type) if f.name in fields else f.type
        return pa.struct(list(fields.items()))
    raise Untypable


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return str(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _has_empty_struct(t: pa.DataType) -> bool:
    """Parquet cannot store a struct without fields (a dict that was empty in every record)."""
    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_has_empty_struct(t.field(i).type) for i in range(t.num_fields))
    return _is_list(t) and _has_empty_struct(t.value_type)


class DictsType:
    """The column type of a list of dicts: the struct fields' types and the keys kept as JSON text."""

    __slots__ = ("fields", "json")

    def __init__(self, fields: dict[str, pa.DataType] | None = None, json: Iterable[str] = ()) -> None:
        self.fields = dict(fields or {})
        self.json = set(json)

    @classmethod
    def infer(cls, dicts: list[dict[str, Any]]) -> "DictsType":
        fields: dict[str, pa.DataType] = {}
        json: set[str] = set()
        seen: dict[str, type] = {}  # the Python type of a scalar key's last value: the common case costs one lookup
        for d in dicts:
            for k, v in d.items():
                pytype = type(v)
                if k in json or (seen.get(k) is pytype and (pytype is not int or _INT64[0] <= v < _INT64[1])):
                    continue
                try:
                    if type(k) is not str:
                        raise Untypable
                    t = value_type(v)
                    fields[k] = unify_types(fields[k], t) if k in fields else t
                    if pytype in _SCALAR_TYPES:
                        seen[k] = pytype
                except Untypable:
                    json.add(k)
                    seen.pop(k, None)
        for k, t in list(fields.items()):
            if _has_empty_struct(t):
                json.add(k)
        for k in json:
            fields[k] = pa.string()
        return cls(fields, json)

    def unify(self, other: "DictsType") -> "DictsType":
        fields = dict(self.fields)
        json = self.json | other.json
        for k, t in other.fields.items():
            if k in json:
                continue
            try:
                fields[k] = unify_types(fields[k], t) if k in fields else t
            except Untypable:
                json.add(k)
        for k in json:
            fields[k] = pa.string()
        return DictsType(fields, json)

    def arrow_type(self) -> pa.DataType:
        """A struct, or ``null`` when no record had a key (Parquet stores no struct without fields)."""
        return pa.struct(list(self.fields.items())) if self.fields else pa.null()

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DictsType) and self.json == other.json
                and list(self.fields) == list(other.fields) and self.arrow_type() == other.arrow_type())

    @classmethod
    def of_field(cls, t: pa.DataType, json: Iterable[str]) -> "DictsType":
        """The type of a column as read from a file's schema (``json`` from its metadata)."""
        if not pa.types.is_struct(t):
            return cls({}, ())
        return cls({t.field(i).name: t.field(i).type for i in range(t.num_fields)}, json)


# -- arrays ------------------------------------------------------------------------------------------------------
def dicts_to_arrow(dicts: list[dict[str, Any]]) -> tuple[DictsType, pa.Array]:
    """The type of ``dicts`` and their struct array. (Arrow's own inference is not used: it reads ``True`` beside a
    fraction as 1.0 and text beside bytes as bytes.)"""
    dtype = DictsType.infer(dicts)
    try:
        return dtype, encode_dicts(dicts, dtype)
    except _CONVERSION_ERRORS:  # an array type Arrow does not convert (a torch tensor): as Python lists, else JSON
        failing = {k for k, t in dtype.fields.items() if k not in dtype.json and not _converts(dicts, k, t)}
        dicts = [{k: (_to_python(v) if k in failing else v) for k, v in d.items()} for d in dicts]
        failing = {k for k in failing if not _converts(dicts, k, dtype.fields[k])}
        dtype = DictsType({k: (pa.string() if k in failing else t) for k, t in dtype.fields.items()},
                          dtype.json | failing)
        return dtype, encode_dicts(dicts, dtype)


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


def _to_python(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_python(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_python(x) for x in v]
    return v.tolist() if hasattr(v, "dtype") and hasattr(v, "tolist") else v


def _converts(dicts: list[dict[str, Any]], key: str, t: pa.DataType) -> bool:
    try:
        pa.array([d.get(key) for d in dicts], type=t)
        return True
    except _CONVERSION_ERRORS:
        return False


def encode_dicts(dicts: list[dict[str, Any]], dtype: DictsType) -> pa.Array:
    """The struct array of ``dicts`` (every dict non-null) in type ``dtype``."""
    t = dtype.arrow_type()
    if pa.types.is_null(t):
        return pa.nulls(len(dicts))
    if dtype.json:
        dicts = [{k: (_json_text(v) if k in dtype.json else v) for k, v in d.items()} for d in dicts]
    return pa.array(dicts, type=t)


def _json_text(v: Any) -> str | None:
    return None if v is None else dumps(v).decode()


def conform(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """``arr`` in the wider type ``target`` (see :func:`unify_types`): struct fields it lacks are null."""
    if arr.type == target:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    mask = arr.is_null() if arr.null_count else None
    if pa.types.is_struct(target):
        have = {arr.type.field(i).name for i in range(arr.type.num_fields)}
        children = [conform(arr.field(f.name), f.type) if f.name in have else pa.nulls(len(arr), f.type)
                    for f in (target.field(i) for i in range(target.num_fields))]
        return pa.StructArray.from_arrays(children, fields=[target.field(i) for i in range(target.num_fields)],
                                          mask=mask)
    if _is_list(target):
        cls = pa.LargeListArray if pa.types.is_large_list(target) else pa.ListArray
        offsets = arr.offsets if pa.types.is_large_list(arr.type) == pa.types.is_large_list(target) else \
            arr.offsets.cast(pa.int64() if pa.types.is_large_list(target) else pa.int32())
        return cls.from_arrays(offsets, conform(arr.values, target.value_type), type=target, mask=mask)
    return arr.cast(target)


def conform_dicts(arr: pa.Array, have: DictsType, target: DictsType) -> pa.Array:
    """A meta/signals column of type ``have`` in the run-wide type ``target``; keys that became JSON text there are
    encoded as JSON."""
    newly_json = [k for k in target.json if k in have.fields and k not in have.json]
    if newly_json:
        dicts = decode_dicts(arr, have)
        return encode_dicts(dicts, target)
    return conform(arr, target.arrow_type())


def decode_dicts(arr: pa.Array, dtype: DictsType) -> list[dict[str, Any]]:
    """The dicts of a struct column, ``None`` values dropped (see the module docstring)."""
    n = len(arr)
    if pa.types.is_null(arr.type) or arr.type.num_fields == 0:
        return [{} for _ in range(n)]
    names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
    columns, nullable = [], []
    for i, name in enumerate(names):
        child = arr.field(i)
        values = child.to_pylist()
        if name in dtype.json:
            values = [None if v is None else _drop_nulls(_restore_bytes(orjson.loads(v))) for v in values]
        elif _has_struct(child.type):
            values = [None if v is None else _drop_nulls(v) for v in values]
        columns.append(values)
        if child.null_count:
            nullable.append(name)
    rows = [dict(zip(names, v)) for v in zip(*columns)]
    for d in rows if nullable else ():
        for k in nullable:
            if d[k] is None:
                del d[k]
    if arr.null_count:
        rows = [{} if missing else d for d, missing in zip(rows, arr.is_null().to_pylist())]
    return rows


def _has_struct(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) or (_is_list(t) and _has_struct(t.value_type))


def _drop_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


# -- schema metadata ---------------------------------------------------------------------------------------------
def schema_metadata(types: dict[str, DictsType], text_column: str) -> dict[bytes, bytes]:
    info = {"json": {name: sorted(t.json) for name, t in types.items()}, "text_column": text_column}
    return {METADATA_KEY: orjson.dumps(info)}


def read_metadata(schema: pa.Schema) -> dict[str, Any]:
    """What :func:`schema_metadata` stored (``{}`` for files written before it, or by others)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return orjson.loads(raw) if raw else {}


def dicts_types(schema: pa.Schema) -> dict[str, DictsType]:
    """The meta/signals types of a file in the struct layout."""
    json = read_metadata(schema).get("json", {})
    return {name: DictsType.of_field(schema.field(name).type, json.get(name, ()))
            for name in STRUCT_COLUMNS if name in schema.names}

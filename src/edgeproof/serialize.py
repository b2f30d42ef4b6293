"""One way to turn edgeproof's typed results into JSON: :func:`to_json`.

A result is a dataclass; its JSON is its fields in declaration order, each converted by the same
rules, recursively:

* ``None``, ``bool``, ``str`` as they are; ``int`` as an int; a ``float`` that is NaN or ±∞ becomes
  ``null`` (JSON has neither);
* an object with its own ``to_json()`` (a file format with a version tag, a lazily drawn figure)
  is asked for it; any other dataclass becomes ``{field: value}`` — a field declared with
  ``field(metadata={"json": False})`` is left out, one with ``metadata={"as": float}`` is
  converted by that function first (a metric's value is a JSON number even when an int or a
  numpy bool was stored);
* mappings become objects with string keys; lists, tuples and sets become arrays; numpy scalars
  and arrays and torch tensors become their ``tolist()``; ``bytes`` become hex; paths and
  anything else become their ``str``.

A result class gets ``to_json`` by inheriting :class:`JsonFields`, so there is nothing to keep in
step by hand when a field is added.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["JsonFields", "fields_json", "to_json"]


def to_json(value: Any) -> Any:
    """``value`` as plain JSON types, by the rules of this module."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    own = getattr(value, "to_json", None)
    if callable(own) and not isinstance(value, type):
        return own()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return fields_json(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return to_json(value.tolist())
    return str(value)


def fields_json(obj: Any) -> dict[str, Any]:
    """The fields of dataclass instance ``obj``, in declaration order, each by :func:`to_json`
    (``metadata={"json": False}`` leaves a field out; ``metadata={"as": f}`` applies ``f``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.metadata.get("json", True):
            continue
        value = getattr(obj, f.name)
        conv = f.metadata.get("as")
        out[f.name] = to_json(conv(value) if conv is not None and value is not None else value)
    return out


class JsonFields:
    """Mixin for a result dataclass: ``to_json()`` is :func:`fields_json` of itself."""

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)

"""One way to turn edgeproof's typed results into JSON: :func:`to_json`.

A result is a dataclass; its JSON is its fields in declaration order, each converted by the same
rules, recursively:

* ``None``, ``bool``, ``str`` as they are; ``int`` as an int; a ``float`` that is NaN or ±∞ becomes
  ``null`` (JSON has neither);
* an object with its own ``to_json()`` (a file format with a version tag, a lazily drawn figure)
  is asked for it; any other dataclass becomes ``{field: value}`` (:func:`fields_json`);
* mappings become objects with string keys; lists, tuples and sets become arrays; numpy scalars
  and arrays and torch tensors become their ``tolist()``; ``bytes`` become hex; paths and
  anything else become their ``str``.

How a dataclass's fields become its object, all declared on the class, none by a hand-written
dict:

* a field declared with ``field(metadata={"json": False})`` is left out (the data itself, a
  model, a callback);
* ``metadata={"as": f}``: the value is converted by ``f`` first (a metric's value is a JSON
  number even when an int or a numpy bool was stored); ``None`` stays ``null``;
* ``metadata={"key": "metric"}``: the field's JSON key is ``metric``, not its name;
* ``metadata={"flatten": True}``: the field is a mapping whose keys take the field's place (a
  data set's summary between two fields of its own);
* the class attribute ``json_header`` (a mapping of constants: ``{"format": ..., "version":
  ...}``) gives the keys that come first, before any field: a file format's name and version;
* the class attribute ``json_order`` (a tuple of keys) places keys: they come in that order, and
  ``...`` in it stands for every field not named, in declaration order (with no ``...``, those
  fields come after the named keys). A name in ``json_order`` is a field's JSON key, a key of
  the ``extra`` mapping given to :func:`fields_json`, or else an attribute of the object — a
  property, a class constant, or a method taking no arguments, which is called — whose value
  is a *derived* key (``crashed``, ``passed``, ``regressions``);
* ``fields_json(obj, extra={...})`` adds keys that are computed, not read off an attribute (a
  count, a summary of a field); those not placed by ``json_order`` come last. A class whose
  JSON needs them keeps a ``to_json`` that is just that call, with a comment saying why.

A result class gets ``to_json`` by inheriting :class:`JsonFields`, so there is nothing to keep in
step by hand when a field is added.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

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


def fields_json(obj: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Dataclass instance ``obj`` as a JSON object, by the rules of this module: its class's
    ``json_header`` first, then its fields in declaration order, each by :func:`to_json`, placed
    by the class's ``json_order`` together with the derived keys that names and the computed
    keys of ``extra``."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.metadata.get("json", True):
            continue
        value = getattr(obj, f.name)
        conv = f.metadata.get("as")
        value = to_json(conv(value) if conv is not None and value is not None else value)
        if f.metadata.get("flatten", False):
            fields.update(value)
        else:
            fields[f.metadata.get("key", f.name)] = value
    cls = type(obj)
    computed = {} if extra is None else extra
    order: tuple[Any, ...] = getattr(cls, "json_order", ())
    named = {k for k in order if k is not ...}
    out = {str(k): to_json(v) for k, v in getattr(cls, "json_header", {}).items()}
    for key in order if ... in order else (*order, ...):
        if key is ...:
            out.update((k, v) for k, v in fields.items() if k not in named)
        elif key in fields:
            out[key] = fields[key]
        elif key in computed:
            out[key] = to_json(computed[key])
        else:
            out[key] = to_json(_derived(obj, key))
    out.update((k, to_json(v)) for k, v in computed.items() if k not in named)
    return out


def _derived(obj: Any, name: str) -> Any:
    value = getattr(obj, name)
    return value() if inspect.ismethod(value) else value


class JsonFields:
    """Mixin for a result dataclass: ``to_json()`` is :func:`fields_json` of itself.

    ``json_header`` and ``json_order`` are the class attributes of the module's rules (a file
    format's leading keys; the placement of keys, derived ones included)."""

    json_header: ClassVar[Mapping[str, Any]] = {}
    json_order: ClassVar[tuple[Any, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)

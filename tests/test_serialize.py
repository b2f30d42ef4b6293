"""One serialisation mechanism (:mod:`edgeproof.serialize`): each rule of its docstring, and a
guard that no result class goes back to a hand-written ``to_json`` listing its fields."""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from edgeproof.serialize import JsonFields, fields_json, to_json

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeproof"


# ----------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class _Inner:
    low: float
    high: float

    json_order = ("high", ...)


@dataclass(frozen=True)
class _Plain(JsonFields):
    name: str
    value: float
    count: int | np.int64
    flags: np.ndarray
    inner: _Inner
    blob: bytes = b"\x01\xff"
    path: Path = Path("a/b.json")
    parts: tuple[int, ...] = (1, 2)


def test_fields_come_in_declaration_order_with_plain_json_values() -> None:
    obj = _Plain("x", math.nan, np.int64(3), np.array([True, False]), _Inner(math.inf, 2.0))
    out = obj.to_json()
    assert list(out) == ["name", "value", "count", "flags", "inner", "blob", "path", "parts"]
    assert out["value"] is None  # NaN and ±∞ are null
    assert out["count"] == 3 and type(out["count"]) is int
    assert out["flags"] == [True, False]
    assert out["inner"] == {"high": 2.0, "low": None}  # a nested dataclass by its own rules
    assert out["blob"] == "01ff" and out["path"] == "a/b.json" and out["parts"] == [1, 2]
    json.dumps(out, allow_nan=False)


@dataclass(frozen=True)
class _Meta(JsonFields):
    name: str = field(metadata={"key": "metric"})
    value: int = field(metadata={"as": float})
    missing: int | None = field(default=None, metadata={"as": float})
    data: np.ndarray = field(default_factory=lambda: np.zeros(3), metadata={"json": False})


def test_field_metadata_renames_converts_and_leaves_out() -> None:
    out = _Meta("acc", 1).to_json()
    assert out == {"metric": "acc", "value": 1.0, "missing": None}
    assert type(out["value"]) is float


@dataclass(frozen=True)
class _Flat(JsonFields):
    role: str
    summary: dict[str, Any] = field(metadata={"flatten": True})
    split: str


def test_a_flattened_mapping_takes_the_place_of_its_field() -> None:
    out = _Flat("eval", {"name": "d", "records": 3, "x": math.nan}, "all").to_json()
    assert list(out.items()) == [
        ("role", "eval"),
        ("name", "d"),
        ("records", 3),
        ("x", None),
        ("split", "all"),
    ]


@dataclass(frozen=True)
class _Header(JsonFields):
    fpr: float

    json_header: ClassVar[dict[str, Any]] = {"format": "edgeproof-test", "version": 1}
    json_order = ("fpr", "first")  # placed after the header, however it is ordered

    first = "derived"


def test_the_header_comes_first() -> None:
    out = _Header(0.01).to_json()
    assert list(out.items()) == [
        ("format", "edgeproof-test"),
        ("version", 1),
        ("fpr", 0.01),
        ("first", "derived"),
    ]


@dataclass(frozen=True)
class _Ordered(JsonFields):
    a: int
    b: int
    c: int
    d: int

    note = "a class constant"
    json_order = ("d", "total", ..., "twice", "note")

    @property
    def total(self) -> int:
        return self.a + self.b + self.c + self.d

    def twice(self) -> list[int]:
        return [2 * self.a]


def test_json_order_places_fields_and_derived_keys_around_the_rest() -> None:
    out = _Ordered(1, 2, 3, 4).to_json()
    assert list(out.items()) == [
        ("d", 4),
        ("total", 10),  # a property
        ("a", 1),
        ("b", 2),
        ("c", 3),  # the fields not named, where ``...`` stands
        ("twice", [2]),  # a method, called
        ("note", "a class constant"),
    ]


@dataclass(frozen=True)
class _NoEllipsis(JsonFields):
    a: int
    b: int

    json_order = ("b", "extra_b")


def test_without_ellipsis_the_other_fields_follow_the_named_keys_and_extras_come_last() -> None:
    obj = _NoEllipsis(1, 2)
    out = fields_json(obj, extra={"extra_b": 20, "last": [math.nan]})
    assert list(out.items()) == [("b", 2), ("extra_b", 20), ("a", 1), ("last", [None])]


def test_to_json_asks_an_object_for_its_own_to_json() -> None:
    class Own:
        def to_json(self) -> dict[str, Any]:
            return {"own": True}

    assert to_json({"k": [Own()], 1: (np.float32(0.5),)}) == {"k": [{"own": True}], "1": [0.5]}


def test_a_name_in_json_order_that_is_nothing_is_an_error() -> None:
    @dataclass(frozen=True)
    class Bad(JsonFields):
        a: int

        json_order = ("nothing", ...)

    with pytest.raises(AttributeError):
        Bad(1).to_json()


# ----------------------------------------------------------------------------- the guard

# Classes whose ``to_json`` still builds a dict of its own fields by hand, and why. The list only
# shrinks: an entry that no longer does (or is gone) fails the test below.
_HAND_WRITTEN_ALLOWED: dict[str, str] = {
    # the seal file format: items written beside their Merkle roots (computed, not fields) and
    # the format's constants (hash, tree); the schema and every seal already written fix it
    "integrity/sealfile.py:Seal": "the seal file format",
    # ``verify --json``: a view of derived values (ok, change messages, element ranges), not a
    # field dump
    "integrity/verify_result.py:ItemVerification": "a view of derived values",
    "integrity/verify_result.py:VerifyResult": "a view of derived values",
    # the diff's findings are one object of two fields ({"new": ..., "resolved": ...})
    "report/diff.py:ReportDiff": "groups two fields under one key",
}

# calls that only convert a value (``list(self.x)``, ``self.x.hex()``, ``self.x.to_json()``)
_CONVERTERS = {"list", "dict", "tuple", "float", "int", "str", "bool", "sorted"}


def _own_fields(cls: ast.ClassDef) -> set[str]:
    return {
        s.target.id
        for s in cls.body
        if isinstance(s, ast.AnnAssign)
        and isinstance(s.target, ast.Name)
        and "ClassVar" not in ast.unparse(s.annotation)
    }


def _field_read(node: ast.expr, fields: set[str]) -> str | None:
    """The field ``node`` is, possibly converted (``self.x``, ``list(self.x)``,
    ``self.x.to_json()``, ``None if self.x is None else self.x.to_json()``); else ``None``."""
    if isinstance(node, ast.IfExp):
        for branch in (node.body, node.orelse):
            if not (isinstance(branch, ast.Constant) and branch.value is None):
                return _field_read(branch, fields)
        return None
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in _CONVERTERS and len(node.args) == 1:
            return _field_read(node.args[0], fields)
        if isinstance(node.func, ast.Attribute) and not node.args:
            return _field_read(node.func.value, fields)
        return None
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and node.attr in fields
    ):
        return node.attr
    return None


def _hand_written(cls: ast.ClassDef) -> bool:
    """``cls`` defines ``to_json`` with a dict literal holding two or more of its own fields."""
    fields = _own_fields(cls)
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "to_json":
            for node in ast.walk(fn):
                if isinstance(node, ast.Dict):
                    read = {_field_read(v, fields) for v in node.values} - {None}
                    if len(read) >= 2:
                        return True
    return False


def _hand_written_classes(root: Path) -> set[str]:
    out = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and _hand_written(node):
                out.add(f"{rel}:{node.name}")
    return out


def test_the_guard_sees_a_hand_written_field_list(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "class A:\n"
        "    x: int\n"
        "    y: list[int]\n"
        "    z: bytes | None\n"
        "    def to_json(self):\n"
        "        return {'x': self.x, 'y': list(self.y),\n"
        "                'z': None if self.z is None else self.z.hex()}\n"
        "class B:\n"
        "    x: int\n"
        "    def to_json(self):\n"
        "        return fields_json(self, extra={'n': len(self.x), 'x2': self.x.double})\n",
        encoding="utf-8",
    )
    assert _hand_written_classes(tmp_path) == {"m.py:A"}


def test_results_serialise_through_the_mechanism_not_hand_written_field_lists() -> None:
    """No class in src/edgeproof has a ``to_json`` that lists its fields in a dict by hand
    (use :class:`~edgeproof.serialize.JsonFields` and the rules of :mod:`edgeproof.serialize`),
    except those in ``_HAND_WRITTEN_ALLOWED``; and each of those still does (the list only
    shrinks)."""
    found = _hand_written_classes(SRC)
    new = sorted(found - set(_HAND_WRITTEN_ALLOWED))
    assert not new, (
        "to_json written by hand as a dict of the class's fields: inherit "
        "edgeproof.serialize.JsonFields (field metadata json/as/key/flatten, json_header, "
        "json_order; fields_json(self, extra=...) for derived keys): " + "; ".join(new)
    )
    stale = sorted(set(_HAND_WRITTEN_ALLOWED) - found)
    assert not stale, (
        "these no longer hand-write their fields: remove them from _HAND_WRITTEN_ALLOWED in "
        "tests/test_serialize.py: " + "; ".join(stale)
    )

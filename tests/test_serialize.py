"""One serialisation mechanism (:mod:`edgeproof.serialize`): each rule of its docstring."""

from __future__ import annotations

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
    count: int
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

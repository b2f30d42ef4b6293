"""The exception tree as documented (``errors.py``'s docstring, the README) is the tree of the
classes themselves: every ``EdgeproofError`` subclass anywhere in the package, under its real
parent, with the exit code the tree states."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import edgeproof
from edgeproof import errors
from edgeproof.errors import EdgeproofError

ROOT = Path(__file__).resolve().parents[1]


def _live_tree() -> dict[str, str | None]:
    """class name → parent name, for every subclass of EdgeproofError in the package."""
    for info in pkgutil.walk_packages(edgeproof.__path__, "edgeproof."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    out: dict[str, str | None] = {"EdgeproofError": None}
    todo = [EdgeproofError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("edgeproof."):
                out[sub.__name__] = cls.__name__
                todo.append(sub)
    return out


def _drawn_tree(text: str) -> tuple[dict[str, str | None], dict[str, int]]:
    """The box-drawing tree in ``text`` (it starts at a line holding only ``EdgeproofError``):
    name → parent, and name → the exit code the line states."""
    start = re.search(r"^( *)EdgeproofError\s*$", text, re.M)
    assert start is not None, "no exception tree found"
    indent = start.group(1)
    parents: dict[str, str | None] = {}
    codes: dict[str, int] = {}
    stack: list[tuple[int, str]] = []
    for line in text[start.start() :].splitlines():
        m = re.match(r"^((?:[│├└─ ]{4})*)([A-Z]\w+)(.*)$", line.removeprefix(indent))
        if m is None:
            break
        depth = len(m.group(1)) // 4
        name = m.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
        code = re.search(r"exit code (\d)", m.group(3))
        if code:
            codes[name] = int(code.group(1))
    return parents, codes


def test_the_documented_tree_is_the_tree_of_the_classes() -> None:
    live = _live_tree()
    drawn, _ = _drawn_tree(errors.__doc__ or "")
    assert drawn == live


def test_the_readme_shows_the_same_tree() -> None:
    live = _live_tree()
    drawn, _ = _drawn_tree((ROOT / "README.md").read_text(encoding="utf-8"))
    assert drawn == live


def test_every_stated_exit_code_is_the_class_exit_code() -> None:
    classes: dict[str, type[EdgeproofError]] = {}
    todo: list[type[EdgeproofError]] = [EdgeproofError]
    while todo:
        cls = todo.pop()
        classes[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    _, codes = _drawn_tree(errors.__doc__ or "")
    assert codes, "the tree states exit codes"
    for name, code in codes.items():
        assert classes[name].exit_code == code, name

"""The public surface: every exported name resolves, and the README's Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edgeproof

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", edgeproof.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(edgeproof, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        edgeproof.nope  # noqa: B018


def test_readme_python_example_runs(digits_model_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has a Python example"
    code = blocks[0].replace('"model.safetensors"', repr(str(digits_model_path)))
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    report = namespace["report"]
    assert isinstance(report, edgeproof.Report)
    acc = report.metric_value("performance.accuracy")
    assert acc is not None and acc > 0.9


def test_readme_names_the_two_commands_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci

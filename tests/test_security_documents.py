"""Hostile documents and options: deep nesting, wrong types and bad values are one line, exit 2.

Covers the policy TOML, a baseline report, library parameters (threads, layers, batch sizes,
shapes) and the bounded JSON/TOML readers themselves. See docs/security.md ("Documents").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeproof import limits
from edgeproof.errors import InputFileError, OptionError, PolicyFileError, UserError
from edgeproof.methods.dnl import candidate_set
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.policy import load_policy
from edgeproof.report.report import Report
from edgeproof.runner import audit, resolve_threat
from edgeproof.structured import parse_json, parse_toml


def test_deeply_nested_policy_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(PolicyFileError, match=r"p\.toml: the policy file is nested") as err:
        load_policy(path)
    assert "\n" not in str(err.value)


def test_policy_without_thresholds_is_a_single_line(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[options]\nuse_confidence_bound = true\n")
    with pytest.raises(PolicyFileError, match=r"p\.toml: has no \[thresholds\] table") as err:
        load_policy(path)
    assert "\n" not in str(err.value)


def test_policy_option_that_is_not_a_boolean_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[thresholds]\n"performance.accuracy" = ">= 0.9"\n[options]\n'
                    'use_confidence_bound = "false"\n')  # fmt: skip
    with pytest.raises(PolicyFileError, match=r"use_confidence_bound is 'false', not true"):
        load_policy(path)


def test_non_utf8_policy_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b"[thresholds]\n\xff = 1\n")
    with pytest.raises(PolicyFileError, match=r"p\.toml: is not UTF-8"):
        load_policy(path)


def test_deeply_nested_baseline_report_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"schema_version": "1.0", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InputFileError, match=r"report\.json: the report file is nested"):
        Report.read_json(path)


def test_baseline_report_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("{}" + " " * 5000)
    with (
        limits.override(max_document_bytes=1000),
        pytest.raises(InputFileError, match=r"report\.json: the report file needs 5,002"),
    ):
        Report.read_json(path)


@pytest.mark.parametrize("text", ["[" * 3000 + "]" * 3000, '{"a": 1e999999, "b": NaN}', "1" * 5000])
def test_json_reader_converts_every_parse_failure(text: str) -> None:
    try:
        parse_json(text, "doc.json", allow_nan=False)
    except UserError as exc:
        assert str(exc).startswith("doc.json: ")


def test_toml_reader_converts_integers_python_cannot_parse() -> None:
    with pytest.raises(InputFileError, match=r"^t\.toml: "):
        parse_toml("a = " + "1" * 5000, "t.toml")


# ------------------------------------------------------------------------- library parameters


@pytest.fixture(scope="module")
def tiny_model() -> LoadedModel:
    torch.manual_seed(0)
    return from_module(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))


def test_batch_size_zero_is_an_option_error_naming_the_parameter(tiny_model: LoadedModel) -> None:
    with pytest.raises(OptionError, match=r"^batch_size: 0 is out of range"):
        audit(tiny_model, checks=[], batch_size=0)
    with pytest.raises(OptionError, match=r"^batch_size: "):
        tiny_model.predict_logits(np.zeros((2, 4), np.float32), batch_size=-1)


def test_negative_layer_count_is_an_option_error_naming_the_parameter() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(OptionError, match=r"^num_layers: -3 is out of range"):
        candidate_set(module, kind="dnl", num_layers=-3)


@pytest.mark.parametrize(
    ("shape", "text"),
    [((0,), r"^shape: \[0\] is not a sample shape"), ((1, 99999, 99999), "max_sample_elements")],
)
def test_bad_shape_names_the_shape_parameter(
    tiny_model: LoadedModel, shape: tuple[int, ...], text: str
) -> None:
    with pytest.raises(OptionError, match=text):
        resolve_threat(tiny_model, None, shape=shape)


def test_infinite_domain_names_the_domain_parameter(tiny_model: LoadedModel) -> None:
    with pytest.raises(OptionError, match=r"^domain: "):
        resolve_threat(tiny_model, None, shape=(4,), domain=(float("-inf"), float("inf")))


def test_every_test_the_security_doc_names_exists() -> None:
    import re

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_[a-z0-9_]+)(…)?`", doc))
    defined = "\n".join(p.read_text(encoding="utf-8") for p in (root / "tests").glob("test_*.py"))
    missing = [
        name
        for name, prefix in named
        if not re.search("def " + name + ("" if prefix else r"\("), defined)
    ]
    assert named and not missing, missing

"""Policy files: parsing, evaluation, and failure on missing metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproof.errors import PolicyFileError
from edgeproof.policy import load_policy
from edgeproof.report.report import Report
from edgeproof.results import CheckResult, Interval, Metric


def _report(acc: float, status: str = "ok") -> Report:
    perf = CheckResult(
        check="performance",
        title="Performance",
        status=status,  # type: ignore[arg-type]
        metrics=[Metric("accuracy", acc, "fraction", Interval(acc - 0.05, acc + 0.03))]
        if status == "ok"
        else [],
    )
    return Report(model={}, data=None, threat={}, checks=[perf], seed=0, created="x")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(text)
    return p


def test_rule_passes_and_fails_on_the_point_value(tmp_path: Path) -> None:
    pol = load_policy(_write(tmp_path, '[thresholds]\n"performance.accuracy" = ">= 0.9"\n'))
    assert pol.apply(_report(0.95)).passed
    out = pol.apply(_report(0.85))
    assert not out.passed
    assert "performance.accuracy = 0.85 >= 0.9: FAILED" in out.rules[0].message


def test_percent_thresholds_are_fractions(tmp_path: Path) -> None:
    pol = load_policy(_write(tmp_path, '[thresholds]\n"performance.accuracy" = ">= 90%"\n'))
    assert pol.rules[0].threshold == pytest.approx(0.9)


def test_confidence_bound_option_judges_the_pessimistic_side(tmp_path: Path) -> None:
    text = (
        '[thresholds]\n"performance.accuracy" = ">= 0.92"\n[options]\nuse_confidence_bound = true\n'
    )
    pol = load_policy(_write(tmp_path, text))
    # point value 0.95 passes, but the lower bound 0.90 does not
    assert not pol.apply(_report(0.95)).passed


def test_missing_metric_fails_and_says_why(tmp_path: Path) -> None:
    pol = load_policy(_write(tmp_path, '[thresholds]\n"performance.accuracy" = ">= 0.9"\n'))
    out = pol.apply(_report(0.0, status="skipped"))
    assert not out.passed
    assert "not available (the performance check was skipped)" in out.rules[0].message
    out = pol.apply(Report(model={}, data=None, threat={}, checks=[], seed=0, created="x"))
    assert "the performance check did not run" in out.rules[0].message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not toml [", "is not valid TOML"),
        ("[other]\nx = 1\n", "has no [thresholds] table"),
        ('[thresholds]\n"accuracy" = ">= 0.9"\n', "is not '<check>.<metric>'"),
        ('[thresholds]\n"performance.accuracy" = "at least 0.9"\n', "is not '<op> <number>'"),
    ],
)
def test_bad_policy_files_are_rejected_with_the_reason(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PolicyFileError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"nope\.toml: no such policy file\. check the path"):
        load_policy(tmp_path / "nope.toml")

"""The report: JSON Schema, lossless JSON round trip, strict reading, HTML, terminal summary."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from edgeproof.errors import InputFileError
from edgeproof.report import (
    SCHEMA_VERSION,
    PolicyOutcome,
    PolicyRuleResult,
    Report,
    format_estimate,
    format_number,
    load_schema,
    print_summary,
    render_html,
    write_html,
    write_report,
)
from edgeproof.report.charts import Axis, Chart
from edgeproof.results import CheckResult, Figure, Finding, Interval, Metric, Table
from edgeproof.spec import InputSpec, ThreatModel

MALICIOUS = "<script>alert('pwned')</script>"


def _figure_svg() -> str:
    chart = Chart(300, 200, x=Axis("ε"), y=Axis("robust accuracy"))
    chart.line([0.0, 0.01, 0.03, 0.1], [0.95, 0.9, 0.7, 0.2], marker="circle")
    return chart.svg()


def make_report(*, policy_passed: bool = False, error_message: str = "ValueError: boom") -> Report:
    """A report with one check of each status and every kind of content."""
    ok = CheckResult(
        check="performance",
        title="Performance",
        status="ok",
        summary="accuracy 95.3% on 360 records",
        headline=("accuracy", "macro_f1"),
        metrics=[
            Metric(
                "accuracy",
                0.953,
                unit="fraction",
                ci=Interval(0.93, 0.97, 0.95, "wilson"),
                description="top-1 accuracy",
                higher_is_better=True,
                settings={"records": 360},
            ),
            Metric("macro_f1", 0.948, unit="fraction", higher_is_better=True),
        ],
        findings=[
            Finding("warning", "class '8' recall is low", {"class": "8", "recall": 0.81}),
            Finding("critical", "backdoor trigger suspected", {"target": 3}),
            Finding("info", "intervals are wide for small classes"),
        ],
        tables=[
            Table(
                "per_class",
                "Per-class recall",
                ["class", "support", "recall"],
                [["0", 36, 1.0], ["8", 35, 0.81], ["9", 36, None]],
                description="recall per class",
            )
        ],
        figures=[Figure("curve", "Robust accuracy vs ε", _figure_svg(), "PGD, L∞")],
        settings={"level": 0.95, "min_support": 20},
        duration_s=0.42,
    )
    skipped = CheckResult(
        check="gradients",
        title="Gradient attacks",
        status="skipped",
        skip_reason="needs gradients, which an onnx model does not provide",
    )
    error = CheckResult(
        check="bitflip",
        title="Bit-flip fragility",
        status="error",
        error=error_message,
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom',
        duration_s=0.01,
    )
    threat = ThreatModel(InputSpec((1, 8, 8), (0.0, 1.0), "image", num_classes=10), "linf", (0.03,))
    policy = PolicyOutcome(
        "policy.toml",
        (
            PolicyRuleResult(
                "performance.accuracy", ">=", 0.9, 0.953, True, "performance.accuracy ok"
            ),
            PolicyRuleResult(
                "performance.macro_f1",
                ">=",
                0.5 if policy_passed else 0.99,
                0.948,
                policy_passed,
                "performance.macro_f1 = 0.948 >= 0.99: FAILED",
            ),
        ),
    )
    return Report(
        model={
            "name": "digits-lenet5",
            "path": "m.safetensors",
            "format": "safetensors",
            "arch": "zoo:lenet5",
            "parameters": 44426,
        },
        data={
            "name": "builtin:digits",
            "format": "builtin",
            "records": 360,
            "sample_shape": [1, 8, 8],
            "classes": [str(i) for i in range(10)],
        },
        threat=threat.to_json(),
        checks=[ok, skipped, error],
        seed=7,
        created="2025-01-31T12:00:00Z",
        duration_s=1.5,
        warnings=["model was in training mode; switched to eval()"],
        policy=policy,
    )


@pytest.fixture(scope="module")
def report() -> Report:
    return make_report()


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return render_html(report)


# ----------------------------------------------------------------------------- schema / JSON


def test_schema_is_valid_draft_2020_12_and_carries_the_version() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(SCHEMA_VERSION)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_report_with_ok_skipped_and_error_checks_validates(report: Report) -> None:
    report.validate()
    statuses = [c["status"] for c in report.to_json()["checks"]]
    assert statuses == ["ok", "skipped", "error"]


def test_report_without_data_and_policy_validates() -> None:
    r = make_report()
    r.data = None
    r.policy = None
    r.validate()


def test_json_round_trip_through_file_is_lossless(report: Report, tmp_path: Path) -> None:
    path = report.write_json(tmp_path / "report.json")
    back = Report.read_json(path)
    assert back == report
    assert back.to_json() == report.to_json()


def test_non_finite_metric_value_is_written_as_null_and_validates(tmp_path: Path) -> None:
    r = make_report()
    r.checks[0].metrics.append(Metric("ece", float("nan"), ci=Interval(float("nan"), 0.1)))
    path = r.write_json(tmp_path / "report.json")
    obj = json.loads(path.read_text())
    assert obj["checks"][0]["metrics"][-1]["value"] is None
    assert obj["checks"][0]["metrics"][-1]["ci"]["low"] is None


def _write(tmp_path: Path, obj: dict[str, Any]) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(obj))
    return path


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split("/")
    node: Any = obj
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("checks/0/metrics/0/value", "high", "'high' is not of type 'number', 'null'"),
        ("checks/0/title", _DELETE, "'title' is a required property"),
        ("checks/0/status", "done", "'done' is not one of ['ok', 'skipped', 'error']"),
        ("checks/0/findings/0/severity", "major", "'major' is not one of"),
        ("checks/1/skip_reason", None, "None is not of type 'string'"),
        ("checks/2/error", None, "None is not of type 'string'"),
        ("checks/0/metrics/0/colour", "red", "Additional properties are not allowed ('colour'"),
        ("checks/0/check", "perf.ormance", "does not match"),
        ("checks/0/metrics/0/ci/level", 95, "95 is greater than the maximum of 1"),
        ("seed", "7", "'7' is not of type 'integer'"),
        ("threat/norm", "l1", "'l1' is not one of ['linf', 'l2']"),
        ("policy/rules/0/passed", "yes", "'yes' is not of type 'boolean'"),
        ("checks/0/figures/0/svg", "<img src=x>", "does not match"),
    ],
)
def test_read_json_rejects_a_report_that_breaks_the_schema(
    report: Report, tmp_path: Path, where: str, value: Any, expected: str
) -> None:
    obj = copy.deepcopy(report.to_json())
    _set(obj, where, value)
    path = _write(tmp_path, obj)
    with pytest.raises(InputFileError) as info:
        Report.read_json(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: does not match the report schema")
    assert expected in msg


def test_read_json_rejects_unknown_schema_version_naming_both_versions(
    report: Report, tmp_path: Path
) -> None:
    obj = report.to_json()
    obj["schema_version"] = "2.0"
    with pytest.raises(
        InputFileError,
        match=r"report schema version '2\.0' is not supported "
        r"\(this edgeproof reads 1\.0\)",
    ):
        Report.read_json(_write(tmp_path, obj))


def test_read_json_rejects_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("{not json")
    with pytest.raises(InputFileError, match=r"report\.json: the report file is not valid JSON"):
        Report.read_json(path)


# ----------------------------------------------------------------------------- HTML


_NETWORK_REF = re.compile(
    r"""(?:\bsrc|\bhref|\baction|\bposter|\bdata)\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.IGNORECASE,
)


def test_html_references_no_network_resource(page: str) -> None:
    assert _NETWORK_REF.search(page) is None
    assert "<link" not in page.lower()
    # the figure's inline SVG is embedded (it only declares XML namespaces)
    assert "<svg" in page and "robust accuracy" in page


def test_html_escapes_user_text_in_messages_titles_and_findings() -> None:
    r = make_report(error_message=MALICIOUS)
    r.checks[0].title = "<b>Perf</b>"
    r.checks[0].findings.append(Finding("critical", MALICIOUS, {"x": MALICIOUS}))
    table = r.checks[0].tables[0]
    rows = [[MALICIOUS, *table.rows[0][1:]], *table.rows[1:]]
    r.checks[0].tables[0] = dataclasses.replace(table, rows=rows)
    page = render_html(r)
    assert MALICIOUS not in page
    assert "<b>Perf</b>" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;Perf&lt;/b&gt;" in page
    # the only script is the template's own optional one
    assert page.lower().count("<script") == 1


def test_html_shows_every_check_title_and_status_in_nav_and_section(
    report: Report, page: str
) -> None:
    nav = page[page.index('id="checks-nav"') : page.index("</nav>")]
    for i, c in enumerate(report.checks):
        assert c.title in nav
        section = re.search(
            rf'<section class="check" id="check-{i}-{c.check}">(.*?)</section>', page, re.S
        )
        assert section is not None, c.check
        assert f"<h2>{c.title}</h2>" in section.group(1)
        assert f'<span class="badge {c.status}">{c.status}</span>' in section.group(1)
        assert f'href="#check-{i}-{c.check}"' in nav


def test_html_shows_skip_reason_and_error_with_collapsible_traceback(page: str) -> None:
    assert "needs gradients, which an onnx model does not provide" in page
    assert "ValueError: boom" in page
    assert re.search(r"<details><summary>Traceback</summary><pre>Traceback \(most recent", page)


def test_html_summary_shows_verdict_counts_and_headline_estimate(page: str) -> None:
    verdict = page[page.index('id="verdict"') : page.index('<div class="grid">')]
    assert "FAIL" in verdict and "1 of 2 rules failed" in verdict
    assert re.search(r"Critical</div><div class=\"v\">1<", verdict)
    assert re.search(r"Warnings</div><div class=\"v\">1<", verdict)
    headline = page[page.index('id="headline"') :]
    assert "0.953 [0.93, 0.97]" in headline[: headline.index("</table>")]
    assert page.index('id="verdict"') < page.index('id="checks-nav"') < page.index("<section")


def test_html_verdict_says_pass_when_every_rule_is_met() -> None:
    page = render_html(make_report(policy_passed=True))
    verdict = page[page.index('id="verdict"') : page.index('<div class="grid">')]
    assert "PASS" in verdict and "all 2 rules met" in verdict


def test_html_orders_findings_by_severity_and_colours_them(page: str) -> None:
    section = page[page.index("<section") :]
    crit = section.index('<li class="critical"')
    warn = section.index('<li class="warning"')
    info = section.index('<li class="info"')
    assert crit < warn < info


def test_html_right_aligns_numeric_table_columns(page: str) -> None:
    table = re.search(r'<table class="data" data-name="per_class">(.*?)</table>', page, re.S)
    assert table is not None
    assert '<th>class</th><th class="num">support</th><th class="num">recall</th>' in (
        table.group(1)
    )
    assert '<td class="num">0.81</td>' in table.group(1)


def test_html_footer_records_seed_versions_and_threads(report: Report, page: str) -> None:
    footer = page[page.index('<footer id="provenance">') :]
    assert "<dt>seed</dt><dd>7</dd>" in footer
    assert "torch threads" in footer
    assert f"<td>torch</td><td>{report.environment['versions']['torch']}</td>" in footer


def test_html_refuses_to_embed_svg_with_script_or_external_link() -> None:
    r = make_report()
    r.checks[0].figures = [
        Figure("a", "A", '<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>'),
        Figure("b", "B", '<svg><image href="https://example.com/x.png"/></svg>'),
        Figure("c", "C", '<svg><rect onload="x()"/></svg>'),
        Figure("d", "D", '<svg><iframe srcdoc="&lt;b&gt;"></iframe></svg>'),
        Figure("e", "E", "<svg><style>@import 'https://example.com/a.css';</style></svg>"),
        Figure("f", "F", '<svg><rect style="fill: url(https://example.com/p)"/></svg>'),
    ]
    page = render_html(r)
    assert page.count("This figure was not embedded") == 6
    assert "example.com" not in page and "x()" not in page


def test_write_html_writes_the_rendered_page(report: Report, tmp_path: Path) -> None:
    path = write_html(report, tmp_path / "sub" / "report.html")
    assert path.read_text(encoding="utf-8") == render_html(report)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_write_report_writes_json_and_html_that_read_back(report: Report, tmp_path: Path) -> None:
    files = write_report(report, tmp_path / "out")
    assert Report.read_json(files.json) == report
    assert files.html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.953, "0.953"),
        (0.95277, "0.953"),
        (12.345, "12.3"),
        (1234.56, "1,234.6"),
        (44426, "44,426"),
        (3.0, "3"),
        (0.000123, "0.000123"),
        (None, "—"),
        (float("nan"), "—"),
        (0.0, "0"),
    ],
)
def test_format_number(value: float | None, text: str) -> None:
    assert format_number(value) == text


def test_format_estimate_with_and_without_interval() -> None:
    assert format_estimate(Metric("a", 0.953, ci=Interval(0.93, 0.97))) == "0.953 [0.93, 0.97]"
    assert format_estimate(Metric("a", 0.5)) == "0.5"


# ----------------------------------------------------------------------------- terminal


def _terminal(report: Report) -> str:
    console = Console(record=True, width=140, color_system=None)
    print_summary(report, console)
    return console.export_text()


def test_terminal_summary_lists_checks_findings_and_policy(report: Report) -> None:
    text = _terminal(report)
    for c in report.checks:
        assert c.check in text
    assert re.search(r"performance\s+│\s+ok", text)
    assert re.search(r"gradients\s+│\s+skipped", text)
    assert re.search(r"bitflip\s+│\s+error", text)
    assert re.search(r"│ accuracy 0\.953 \[0\.93, 0\.97\]\s+│\n.*│ macro_f1 0\.948\s+│", text)
    assert text.index("critical performance: backdoor") < text.index("warning  performance")
    assert "FAIL (1 of 2 rules failed)" in text
    assert "performance.macro_f1 = 0.948 >= 0.99: FAILED" in text


def test_terminal_summary_prints_markup_in_messages_literally() -> None:
    r = make_report(policy_passed=True, error_message="[bold red]not markup[/]")
    text = _terminal(r)
    assert "[bold red]not markup[/]" in text
    assert "PASS (all 2 rules met)" in text


def test_a_figure_is_drawn_once_and_only_when_its_svg_is_asked_for() -> None:
    calls: list[int] = []

    def draw() -> str:
        calls.append(1)
        return '<svg xmlns="http://www.w3.org/2000/svg"></svg>'

    fig = Figure("f", "F", draw)
    assert not fig.drawn and calls == []
    assert fig.to_json()["svg"].startswith("<svg") and fig.svg.startswith("<svg")
    assert fig.drawn and calls == [1]


def test_an_audit_without_a_written_report_draws_no_figure(digits_model, digits_test) -> None:  # type: ignore[no-untyped-def]
    from edgeproof.runner import audit

    report = audit(digits_model, digits_test, ["performance", "calibration", "spectral"])
    figures = [f for c in report.checks for f in c.figures]
    assert figures and not any(f.drawn for f in figures)

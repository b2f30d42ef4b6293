"""What a reader sees first in the HTML report: the declared headline metrics, every warning and
critical finding linked to its evidence, sections collapsed unless they need attention, decision
columns first, long tables scrolling, abbreviations defined, one parameter count."""

from __future__ import annotations

import re

import pytest

from edgeproof.checks.footprint import FootprintCheck
from edgeproof.models.loaded import LoadedModel
from edgeproof.report import render_html
from edgeproof.report.report import Report
from edgeproof.results import CheckResult, Finding, Interval, Metric, Table
from edgeproof.runner import audit
from edgeproof.spec import InputSpec, ThreatModel


def _report() -> Report:
    perf = CheckResult(
        "performance",
        "Performance",
        metrics=[
            Metric("accuracy", 0.953, "fraction", Interval(0.93, 0.97)),
            Metric("macro_f1", 0.95, "fraction"),
            Metric("min_class_recall", 0.81, "fraction", Interval(0.7, 0.9)),
        ],
        findings=[Finding("info", "all fine"), Finding("warning", "class 8 is weak")],
        headline=("min_class_recall", "accuracy"),
    )
    spectral = CheckResult(
        "spectral",
        "Spectra",
        metrics=[Metric("layers_analysed", 5, "layers"), Metric("mean_alpha", 3.6)],
        tables=[
            Table("layers", "Per layer", ["layer", "alpha", "N", "flags"], [["fc", 1.5, 10, "x"]]),
            Table("long", "Long", ["i", "v"], [[i, i * 0.5] for i in range(40)]),
        ],
        headline=("mean_alpha",),
    )
    bitflip = CheckResult(
        "bitflip",
        "Bit flips",
        metrics=[Metric("dnl_ar_10", 6.9, "%", description="AR after 10 flips")],
        findings=[Finding("critical", "10 flips destroy it")],
    )
    quiet = CheckResult("fisher", "Fisher", metrics=[Metric("rho", -0.9)])
    broken = CheckResult("smoothing", "Smoothing", "error", error="ValueError: boom")
    threat = ThreatModel(InputSpec((1, 8, 8), num_classes=10), "linf", (0.03,))
    return Report(
        model={"name": "m", "parameters": 10},
        data={"name": "d", "records": 360},
        threat=threat.to_json(),
        checks=[perf, spectral, bitflip, quiet, broken],
        seed=0,
        created="2025-01-31T12:00:00Z",
    )


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(_report())


def _top(page: str) -> str:
    return page[: page.index("<section")]


def test_headline_table_lists_the_declared_metrics_in_declared_order(page: str) -> None:
    table = re.search(r'<table id="headline">(.*?)</table>', page, re.S)
    assert table is not None
    names = re.findall(r"<code>([a-z_]+\.[a-z_0-9@]+)</code>", table.group(1))
    assert names == [
        "performance.min_class_recall",
        "performance.accuracy",
        "spectral.mean_alpha",
        "bitflip.dnl_ar_10",  # declares nothing: its first metric stands for it
        "fisher.rho",
    ]
    assert "spectral.layers_analysed" not in table.group(1)
    assert "0.81 [0.7, 0.9]" in table.group(1)


def test_top_lists_every_warning_critical_and_error_with_a_link_that_resolves(page: str) -> None:
    attention = re.search(r'<ul class="findings" id="attention">(.*?)</ul>', page, re.S)
    assert attention is not None
    text = attention.group(1)
    assert "10 flips destroy it" in text and "class 8 is weak" in text and "boom" in text
    assert "all fine" not in text  # info findings stay in their section
    # critical before warning
    assert text.index("10 flips destroy it") < text.index("class 8 is weak")
    for target in re.findall(r'href="#([^"]+)"', text):
        assert f'id="{target}"' in page, target


def test_sections_are_collapsed_unless_they_hold_a_warning_critical_or_error(page: str) -> None:
    opened = {}
    for m in re.finditer(r'<section class="check" id="check-\d+-([a-z]+)"><details([^>]*)>', page):
        opened[m.group(1)] = " open" in m.group(2)
    assert opened == {
        "performance": True,
        "spectral": False,
        "bitflip": True,
        "fisher": False,
        "smoothing": True,
    }


def test_decision_columns_come_right_after_the_first_column(page: str) -> None:
    table = re.search(r'<table class="data" data-name="layers">(.*?)</table>', page, re.S)
    assert table is not None
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", table.group(1))
    assert heads == ["layer", "flags", "alpha", "N"]
    assert re.search(r"<td>fc</td><td>x</td><td[^>]*>1.5</td>", table.group(1))


def test_long_tables_scroll_inside_their_section(page: str) -> None:
    assert '<div class="tablewrap long"><table class="data" data-name="long">' in page
    assert '<div class="tablewrap"><table class="data" data-name="layers">' in page


def test_abbreviations_are_defined_where_they_are_shown(page: str) -> None:
    top = _top(page)
    assert re.search(r'<dl class="terms">.*<dt>AR</dt><dd>accuracy reduction', top, re.S)
    bitflip = page[page.index('id="check-2-bitflip"') : page.index('id="check-3-fisher"')]
    assert "<dt>AR</dt>" in bitflip and "<dt>DNL</dt>" in bitflip
    fisher = page[page.index('id="check-3-fisher"') :]
    assert "<dt>AR</dt>" not in fisher[: fisher.index("</section>")]


def test_headline_survives_the_json_round_trip() -> None:
    report = _report()
    again = Report.from_json(report.to_json())
    assert again.checks[0].headline == ("min_class_recall", "accuracy")
    assert again.checks[0].headline_metrics()[0].name == "min_class_recall"
    older = report.to_json()
    for c in older["checks"]:
        del c["headline"]  # a report written before the field existed
    assert Report.from_json(older).checks[0].headline_metrics()[0].name == "accuracy"


def test_model_card_and_footprint_count_the_same_parameters(digits_model: LoadedModel) -> None:
    # LeNet-5 of the zoo carries its normalisation as two buffers (mean, std): not parameters
    check = FootprintCheck(**FootprintCheck.quick_settings)
    report = audit(digits_model, None, [check])
    footprint = report.checks[0]
    assert footprint.status == "ok"
    assert report.model["parameters"] == footprint.metric("parameters").value
    assert report.checks[0].headline == ("parameters", "macs", "latency_p50_b1_ms")

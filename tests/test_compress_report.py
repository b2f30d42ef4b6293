"""The compression's own report (ledger first, both data sets, artefacts), its terminal summary
and ``edgeproof compress --json``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from edgeproof.cli import build_parser
from edgeproof.compress.api import CompressionResult, compress, write_artefacts
from edgeproof.compress.ledger import Ledger, SkippedCandidate
from edgeproof.compress.search import Budget, default_recipes
from edgeproof.compress.terminal import print_summary, skipped_line
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel
from edgeproof.report.report import Report


@pytest.fixture(scope="module")
def result(digits_model: LoadedModel, digits_test: Dataset) -> CompressionResult:
    assert digits_model.module is not None and digits_model.spec is not None
    recipes = [r for r in default_recipes() if r.name in ("int8-percentile", "w4g32")]
    return compress(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_test,
        budget=Budget(max_drop=0.02, time_budget_s=60),
        recipes=recipes,
        checks=("calibration",),
        calib_size=128,
        arch="zoo:lenet5",
    )


def test_the_compress_report_leads_with_the_ledger_and_shows_both_data_sets(
    result: CompressionResult, digits_test: Dataset, tmp_path: Path
) -> None:
    write_artefacts(result, tmp_path, source="digits.safetensors", data=digits_test)
    report = Report.read_json(tmp_path / "report.json")  # validated against the schema
    assert report.kind == "compress"
    first = report.checks[0]
    assert first.check == "compress" and first.tables[0].name == "ledger"
    assert [f.name for f in first.figures] == ["pareto"]
    ledger = first.tables[0]
    assert ledger.columns[:3] == ["candidate", "verdict", "drop pts [95% CI]"]
    assert "ece" in ledger.columns
    verdicts = {r[0]: r[1] for r in ledger.rows}
    assert verdicts[result.selection.chosen.name] == "chosen"
    assert [c.check for c in report.checks[1:]] == [
        "candidate-fp32",
        "candidate-int8-percentile",
        "candidate-w4g32",
    ]
    roles = {d["role"]: d for d in report.datasets}
    assert roles["calibration"]["records"] == 128 and roles["evaluation"]["records"] == 232
    assert roles["evaluation"]["split"].startswith("records 128-359 (the other 232)")
    assert "no evaluation set was given" in roles["calibration"]["split"]
    assert report.data is not None and report.data["records"] == 232  # the evaluation set
    assert {"model.onnx", "model.safetensors", "compress.json"} <= set(report.model["artefacts"])
    assert report.model["path"] == "digits.safetensors"
    page = (tmp_path / "report.html").read_text()
    assert "<h1>edgeproof compression report</h1>" in page
    assert page.index('data-name="ledger"') < page.index("Calibration data")
    assert page.index("Calibration data") < page.index("Evaluation data")
    assert f'<tr class="chosen"><td>{result.selection.chosen.name}</td>' in page
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["budget"]["max_class_drop"] == pytest.approx(0.06)
    assert [d["role"] for d in meta["data"]] == ["calibration", "evaluation"]


def test_the_terminal_summary_has_the_trust_columns_and_the_selection(
    result: CompressionResult,
) -> None:
    con = Console(width=200, record=True)
    print_summary(result, con)
    text = con.export_text()
    assert "95% upper %" in text and "ece" in text
    assert "int8-percentile" in text and "chosen" in text
    assert result.selection.message.split(" (")[0] in text
    assert "no candidate skipped (2 measured)" in text


def test_the_skipped_line_counts_each_reason_once() -> None:
    ledger = Ledger(baseline=None, candidates=[])  # type: ignore[arg-type]
    why = "not started: the time budget of 60 s was spent"
    ledger.skipped = [
        SkippedCandidate("channels25", "channel-removal", why),
        SkippedCandidate("lowrank-mp", "mp-lowrank", why),
        SkippedCandidate("ec50+int8", "ec", "no Conv2d layer to compensate"),
    ]
    assert skipped_line(ledger) == (
        "3 of 3 candidates skipped: 2 not started: the time budget of 60 s was spent "
        "(channels25, lowrank-mp); 1 not applicable (ec50+int8)"
    )


@pytest.mark.slow
def test_cli_compress_json_prints_the_report_and_keeps_progress_off_stdout(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slow (~15 s on 1 thread): one real compress run through the CLI."""
    args = build_parser().parse_args(
        [
            "compress",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--max-drop",
            "2%",
            "--max-class-drop",
            "10%",
            "--time-budget",
            "0.01",
            "--json",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    obj = json.loads(out)
    assert obj["kind"] == "compress" and obj["checks"][0]["check"] == "compress"
    assert "candidates skipped" not in out and "wrote" in err
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["budget"]["max_class_drop"] == pytest.approx(0.10)
    assert meta["ledger"]["skipped"]  # the time budget was spent after the baseline

"""The compression search, the ledger, selection under a budget, artefacts and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli import build_parser
from edgeproof.cli.compress import parse_drop, parse_size
from edgeproof.compress.api import compress, write_artefacts
from edgeproof.compress.ledger import Candidate, Ledger, PairedDrop
from edgeproof.compress.search import Budget, default_recipes
from edgeproof.compress.selection import select
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.stats import paired_drop_interval, wilson_interval
from edgeproof.models.loaded import LoadedModel
from edgeproof.report.report import Report
from edgeproof.runtime.ort import make_session, run_session


def _cand(name: str, acc: float, size: int, n: int = 1000) -> Candidate:
    """A row scored on ``n`` records: below the 0.95 baseline by records it alone loses."""
    lost = max(round((0.95 - acc) * n), 0)
    return Candidate(
        name,
        "t",
        {},
        acc,
        wilson_interval(int(acc * n), n),
        (acc,),
        (acc - 0.95,),
        size,
        1.0,
        1.0,
        1,
        None,
        drop=PairedDrop(n, lost, 0, paired_drop_interval(lost, 0, n)),
    )


def test_pareto_front_holds_exactly_the_non_dominated_candidates() -> None:
    ledger = Ledger(
        _cand("fp32", 0.95, 1000),
        [_cand("a", 0.94, 300), _cand("b", 0.90, 400), _cand("c", 0.80, 100)],
    )
    assert [c.name for c in ledger.pareto()] == ["c", "a", "fp32"]


def test_pareto_figure_draws_every_candidate_labels_them_and_imports_no_matplotlib() -> None:
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    from edgeproof.report.charts import svg_text_boxes

    ledger = Ledger(
        _cand("fp32", 0.95, 100_000),
        [_cand("int8", 0.94, 26_000), _cand("prune50", 0.90, 60_000), _cand("c", 0.80, 9_000)],
    )
    fig = ledger.pareto_figure()
    svg = fig.svg
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg" and (fig.name, fig.title) == ("pareto", "Size vs accuracy")
    tips = [t.text or "" for e in root.iter(ns + "circle") for t in e.iter(ns + "title")]
    assert sorted(tips) == ["c", "fp32", "int8", "prune50"]  # every point, named
    boxes = svg_text_boxes(svg)
    texts = {b.text for b in boxes}
    assert {"fp32", "int8", "c", "Pareto front", "dominated", "ONNX size (KiB)"} <= texts
    assert {"10", "100"} <= texts  # sizes spanning more than 10x: decades on a log axis
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
    code = (
        "import sys\n"
        "import edgeproof.compress.ledger\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_selection_picks_the_smallest_candidate_within_budget() -> None:
    ledger = Ledger(_cand("fp32", 0.95, 1000), [_cand("a", 0.945, 300), _cand("c", 0.80, 100)])
    sel = select(ledger, 0.01, None)
    assert sel.met_budget and sel.chosen.name == "a"


def test_unmeetable_budget_says_so_and_keeps_the_best_found() -> None:
    ledger = Ledger(_cand("fp32", 0.95, 1000), [_cand("a", 0.90, 300), _cand("c", 0.80, 100)])
    sel = select(ledger, 0.001, 200)
    assert not sel.met_budget
    assert sel.chosen.name == "c"  # the only candidate within the size limit
    assert sel.message.startswith(
        "no candidate meets the budget (accuracy drop <= 0.10% at its upper bound and "
        "size <= 200 bytes); kept the best found: c"
    )


@pytest.mark.parametrize(("text", "value"), [("1%", 0.01), ("0.5%", 0.005), ("0.02", 0.02)])
def test_parse_drop_reads_percentages_and_fractions(text: str, value: float) -> None:
    assert parse_drop(text) == pytest.approx(value)


def test_parse_size_reads_units_and_rejects_garbage() -> None:
    assert parse_size("200KB") == 200_000
    assert parse_size("1.5MiB") == 1_572_864
    with pytest.raises(OptionError, match="max_size: '12 parsecs' is not a size"):
        parse_size("12 parsecs")
    with pytest.raises(OptionError, match="max_drop: '150%' is outside"):
        parse_drop("150%")


def test_search_measures_candidates_and_writes_the_chosen_artefacts(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset, tmp_path: Path
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    module = copy.deepcopy(digits_model.module)
    recipes = [
        r for r in default_recipes() if r.name in ("int8-percentile", "w4g32", "channels25+int8")
    ]
    result = compress(
        module,
        digits_model.spec,
        digits_train.subset(np.arange(128)),
        evaluation=digits_test,
        budget=Budget(max_drop=0.03, time_budget_s=60),
        recipes=recipes,
        checks=("calibration", "no-such-check"),
        arch="zoo:lenet5",
    )
    ledger = result.ledger
    assert [c.name for c in ledger.candidates] == ["int8-percentile", "w4g32", "channels25+int8"]
    int8 = ledger.candidates[0]
    assert int8.size_bytes < 0.4 * ledger.baseline.size_bytes
    assert int8.parity is not None and int8.parity.top1_agreement >= 0.99
    assert int8.accuracy_ci.low <= int8.accuracy <= int8.accuracy_ci.high
    assert int8.latency_p50_ms > 0 and int8.latency_p95_ms >= int8.latency_p50_ms
    assert int8.trust_value("calibration.ece") is not None
    assert any("no-such-check" in n for n in int8.notes)
    assert result.selection.met_budget
    for row in ledger.rows:  # the paired drop counts the same records as the accuracies
        assert row.drop is not None and row.drop.n == len(digits_test)
        assert row.drop.value == pytest.approx(ledger.baseline.accuracy - row.accuracy)
        assert row.drop.interval.low <= row.drop.value <= row.drop.interval.high
    paths = write_artefacts(result, tmp_path, source="digits", data=digits_train)
    names = {p.name for p in paths}
    assert {"model.onnx", "model.safetensors", "compress.json", "report.json"} <= names
    # The written graph is the chosen candidate: same accuracy as its ledger row.
    onnx_bytes = (tmp_path / "model.onnx").read_bytes()
    logits = run_session(make_session(onnx_bytes), digits_test.x)[0]
    assert float((logits.argmax(1) == digits_test.y).mean()) == pytest.approx(
        result.selection.chosen.accuracy
    )
    report = Report.read_json(tmp_path / "report.json")
    assert report.check("compress").tables[0].name == "ledger"
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["candidate"]["name"] == result.selection.chosen.name


def test_compress_rejects_data_of_the_wrong_shape(digits_model: LoadedModel) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    bad = Dataset(
        x=np.zeros((8, 1, 4, 4), np.float32),
        y=np.zeros(8),
        classes=["a"],
        name="bad.npz",
        format="npz",
    )
    with pytest.raises(SpecError, match=r"data: bad.npz has sample shape \(1, 4, 4\)"):
        compress(digits_model.module, digits_model.spec, bad)


def test_cli_parser_maps_options_and_has_an_example() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "compress",
            "m.safetensors",
            "--data",
            "builtin:digits/train",
            "--max-drop",
            "1%",
            "--max-size",
            "200KB",
            "--out",
            "o",
        ]
    )
    assert args.max_drop == "1%" and args.time_budget == 120.0 and callable(args.handler)
    sub = parser._subparsers._group_actions[0].choices["compress"]  # type: ignore[union-attr, index]
    assert "example: edgeproof compress" in sub.format_help()


@pytest.mark.slow
def test_cli_compress_writes_the_model_under_a_tight_budget(
    digits_model_path: Path, tmp_path: Path
) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "compress",
            str(digits_model_path),
            "--data",
            "builtin:digits/train",
            "--eval",
            "builtin:digits",
            "--max-size",
            "1KB",
            "--time-budget",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.handler(args) == 0
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["met_budget"] is False  # nothing fits in 1 KB: the best found is kept
    assert (tmp_path / "model.onnx").stat().st_size > 0

"""``edgeproof diff`` and ``edgeproof history`` over real audits of the session's LeNet-5.

The reports come from :func:`edgeproof.audit` (performance and calibration, a fraction of a
second each): the trained model, the same model audited again, and the model with noise added
to every weight (accuracy falls from about 97% to about 70%, far outside the interval); a zoo MLP
trained for one epoch is the "other model". Two small folder scans (one LeNet-5, data-free
``final-layer`` only, decisions pinned with ``--threshold``) give the scan diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from edgeproof import audit
from edgeproof.cli import main
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import load_model
from edgeproof.models.train import train_and_save
from edgeproof.report.changes import normalise_message
from edgeproof.report.diff import ReportDiff, ReportMismatchError, diff, diff_reports
from edgeproof.report.diff_html import validate_diff_json
from edgeproof.report.files import write_report
from edgeproof.report.history import history
from edgeproof.report.history_html import validate_history_json
from edgeproof.report.report import Report

CHECKS = ["performance", "calibration"]
SRC = Path(__file__).resolve().parents[1] / "src"


def _damaged(model_path: Path, dest: Path) -> Path:
    """The model with Gaussian noise (0.6 × each tensor's std) added to every weight, saved
    beside a copy of its sidecar (so it loads as the same architecture)."""
    model = load_model(model_path)
    assert model.module is not None
    g = torch.Generator().manual_seed(0)
    state = {
        k: (v + torch.randn(v.shape, generator=g) * v.float().std() * 0.6).contiguous()
        if v.is_floating_point() and v.numel() > 1
        else v.contiguous()
        for k, v in model.module.state_dict().items()
    }
    save_file(state, str(dest))
    shutil.copy(model_path.with_suffix(".json"), dest.with_suffix(".json"))
    return dest


def _audit(model: LoadedModel, data: Dataset, created: str) -> Report:
    report = audit(model, data, CHECKS)
    report.created = created
    return report


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    digits_model: LoadedModel,
    digits_model_path: Path,
    digits_train: Dataset,
    digits_test: Dataset,
) -> dict[str, Path]:
    """``good`` (the model), ``again`` (the model, audited again later), ``damaged``,
    ``subset`` (the model on 200 of the 360 test records), ``other`` (a zoo MLP): each the
    ``--out`` folder of its report."""
    root = tmp_path_factory.mktemp("diff")
    damaged = load_model(_damaged(digits_model_path, root / "damaged.safetensors"))
    mlp = train_and_save("zoo:mlp", digits_train, root / "mlp.safetensors", epochs=1, seed=0)
    reports = {
        "good": _audit(digits_model, digits_test, "2026-01-01T10:00:00Z"),
        "damaged": _audit(damaged, digits_test, "2026-01-02T10:00:00Z"),
        "again": _audit(digits_model, digits_test, "2026-01-03T10:00:00Z"),
        "subset": _audit(digits_model, digits_test.subset(np.arange(200)), "2026-01-04T10:00:00Z"),
        "other": _audit(load_model(mlp.path), digits_test, "2026-01-05T10:00:00Z"),
    }
    out = {}
    for name, report in reports.items():
        out[name] = root / "runs" / name
        write_report(report, out[name])
    return out


def _read(path: Path) -> Report:
    return Report.read_json(path / "report.json")


def _find(metrics: list[dict[str, Any]], check: str, name: str) -> dict[str, Any]:
    return next(m for m in metrics if m["check"] == check and m["metric"] == name)


def _metric(d: ReportDiff, key: str) -> dict[str, object]:
    return next(m.to_json() for m in d.metrics if m.key == key)


def test_diff_finds_the_significant_accuracy_regression_and_exits_1(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d"
    assert main(["diff", str(runs["good"]), str(runs["damaged"]), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    table = printed.splitlines()
    # the table starts with the significant changes; accuracy is one of them, marked worse
    first = next(i for i, line in enumerate(table) if line.startswith("metric"))
    assert "SIGNIFICANT" in table[first + 1]
    acc_line = next(line for line in table if line.startswith("performance.accuracy "))
    assert "SIGNIFICANT intervals do not overlap" in acc_line and acc_line.endswith("worse")
    assert "policy significant-regression: FAIL" in printed
    obj = json.loads((out / "diff.json").read_text())
    acc = _find(obj["metrics"], "performance", "accuracy")
    assert acc["significant"] is True and acc["regression"] is True
    assert acc["new"]["ci"]["high"] < acc["old"]["ci"]["low"]  # the rule, on the numbers
    assert acc["delta"] == pytest.approx(acc["new"]["value"] - acc["old"]["value"])
    assert obj["failed"] is True and any("performance.accuracy" in r for r in obj["regressions"])
    validate_diff_json(obj)
    with pytest.raises(jsonschema.ValidationError):  # the schema holds the file to its shape
        validate_diff_json({**obj, "failed": "yes"})
    page = (out / "diff.html").read_text()
    assert "FAIL" in page and "performance.accuracy" in page and "<script src" not in page


def test_diff_with_fail_on_never_exits_0_and_still_reports_the_regression(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["diff", str(runs["good"]), str(runs["damaged"]), "--fail-on", "never", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    obj = json.loads(captured.out)  # stdout is the JSON alone; the table went to stderr
    validate_diff_json(obj)
    assert obj["fail_on"] == "never" and obj["failed"] is False and obj["regressions"] == []
    assert any(m["significant"] and m["regression"] for m in obj["metrics"])
    assert "policy never: PASS" in captured.err


def test_an_audit_repeated_on_the_same_model_has_no_significant_change(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = diff(runs["good"], runs["again"], fail_on="any-regression")
    assert isinstance(d, ReportDiff)
    assert d.significant_changes == [] and d.significant_classes == []
    assert {m.judgement for m in d.metrics} == {"unchanged"}
    assert d.new_findings == d.resolved_findings == () and d.checks == () and d.warnings == ()
    assert not d.failed
    assert main(["diff", str(runs["good"]), str(runs["again"]), "--fail-on", "any-regression"]) == 0
    assert "0 significant change(s)" in capsys.readouterr().out


def test_a_metric_without_an_interval_is_not_judged_but_its_direction_is_kept(
    runs: dict[str, Path],
) -> None:
    d = diff_reports(_read(runs["good"]), _read(runs["damaged"]))
    f1 = _metric(d, "performance.macro_f1")  # no CI in the report
    assert f1["judgement"] == "no interval: not judged" and f1["significant"] is None
    assert f1["regression"] is True  # worse, but only any-regression counts it
    temperature = _metric(d, "calibration.temperature")  # higher_is_better None: change only
    assert temperature["regression"] is None
    only_any = set(d.regressions("any-regression")) - set(d.regressions())
    assert any(r.startswith("performance.macro_f1 got worse") for r in only_any)
    assert not any(r.startswith("calibration.temperature") for r in d.regressions("any-regression"))


def test_per_class_recall_shifts_are_significant_exactly_when_the_intervals_do_not_overlap(
    runs: dict[str, Path],
) -> None:
    d = diff_reports(_read(runs["good"]), _read(runs["damaged"]))
    assert len(d.classes) == 10
    for c in d.classes:
        apart = c.new.high < c.old.low or c.new.low > c.old.high
        assert c.significant == apart
    assert d.significant_classes and len(d.significant_classes) < 10  # some classes, not all
    assert any(r.startswith("class '") for r in d.regressions())


def test_findings_match_across_reports_with_their_numbers_normalised(
    runs: dict[str, Path],
) -> None:
    assert normalise_message("recall 85.7% [72%, 94.1%]") == normalise_message(
        "recall 84.1% [70%, 93.0%]"
    )
    assert normalise_message("class '3' recall 80%") != normalise_message("class '8' recall 80%")
    damaged = _read(runs["damaged"])
    assert any(c.findings for c in damaged.checks)
    renumbered = dataclasses.replace(
        damaged,
        checks=[
            dataclasses.replace(
                c,
                findings=[
                    dataclasses.replace(f, message=re.sub(r"\d+\.\d", "12.3", f.message))
                    for f in c.findings
                ],
            )
            for c in damaged.checks
        ],
    )
    d = diff_reports(damaged, renumbered)
    assert d.new_findings == d.resolved_findings == ()
    good = diff_reports(_read(runs["good"]), damaged)
    assert good.new_findings and all(f.change == "new" for f in good.new_findings)
    back = diff_reports(damaged, _read(runs["good"]))
    assert {f.message for f in back.resolved_findings} == {f.message for f in good.new_findings}


def test_a_check_that_ran_and_now_fails_is_a_significant_regression(
    runs: dict[str, Path],
) -> None:
    good = _read(runs["good"])
    broken = dataclasses.replace(
        good,
        checks=[
            dataclasses.replace(c, status="error", metrics=[], error="boom")
            if c.check == "calibration"
            else c
            for c in good.checks
        ],
    )
    d = diff_reports(good, broken)
    (change,) = d.checks
    assert (change.check, change.old, change.new) == ("calibration", "ok", "error")
    assert d.failed and "check calibration: ok → error" in d.regressions()
    calibration = [m.judgement for m in d.metrics if m.check == "calibration"]
    assert calibration and set(calibration) == {"only in the old report"}
    assert not diff_reports(good, broken, fail_on="never").failed


def test_diff_of_two_different_models_exits_2_in_one_line_naming_both_files(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = runs["good"] / "report.json", runs["other"] / "report.json"
    assert main(["diff", str(old), str(new)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(old) in err and str(new) in err and "different models" in err
    assert "arch zoo:lenet5 vs zoo:mlp" in err
    with pytest.raises(ReportMismatchError):
        diff_reports(_read(runs["good"]), _read(runs["other"]))


def test_a_real_process_refusing_two_different_models_prints_one_line_and_no_traceback(
    runs: dict[str, Path],
) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    argv = [sys.executable, "-m", "edgeproof", "diff", str(runs["good"]), str(runs["other"])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("edgeproof: error: ") and "different models" in proc.stderr


def test_diff_of_a_file_that_is_not_a_report_exits_2_naming_the_file(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("this is not JSON\n")
    assert main(["diff", str(junk), str(runs["good"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(junk) in err and "not valid JSON" in err
    sidecar = tmp_path / "model.json"
    sidecar.write_text(json.dumps({"format": "edgeproof-model", "arch": "zoo:lenet5"}))
    assert main(["diff", str(runs["good"]), str(sidecar)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(sidecar) in err and "is an edgeproof-model file, not an edgeproof audit" in err
    assert main(["diff", str(tmp_path), str(runs["good"])]) == 2  # a folder without report.json
    assert "without a report.json" in capsys.readouterr().err


def test_other_data_is_a_warning_in_the_diff_not_an_error(runs: dict[str, Path]) -> None:
    d = diff(runs["good"], runs["subset"])
    assert isinstance(d, ReportDiff)
    (warning,) = d.warnings
    assert "the data differ" in warning and "360 records" in warning and "200 records" in warning


def test_an_output_folder_holding_a_compared_report_is_refused(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", str(runs["good"]), str(runs["again"]), "--out", str(runs["good"])]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (runs["good"] / "diff.json").exists()


# ----------------------------------------------------------------------------- scans


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory, digits_model_path: Path) -> dict[str, Path]:
    """``a``: one LeNet-5, not flagged (final-layer threshold 100); ``b``: it and a copy, both
    flagged (threshold -100)."""
    root = tmp_path_factory.mktemp("scans")
    out = {}
    for name, copies, threshold in (("a", 1, "100"), ("b", 2, "-100")):
        folder = root / f"models-{name}"
        folder.mkdir()
        for i in range(copies):
            stem = "lenet" if i == 0 else f"lenet-{i}"
            shutil.copy(digits_model_path, folder / f"{stem}.safetensors")
            shutil.copy(digits_model_path.with_suffix(".json"), folder / f"{stem}.json")
        out[name] = root / f"scan-{name}"
        pinned = ["--detectors", "final-layer", "--threshold", f"final-layer={threshold}"]
        argv = ["scan", str(folder), "--out", str(out[name]), "--jobs", "1", "--quiet", *pinned]
        assert main(argv) == (1 if threshold == "-100" else 0)
    return out


def test_scan_diff_reports_a_newly_flagged_model_and_an_added_one(
    scans: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d"
    assert main(["diff", str(scans["a"]), str(scans["b"]), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert re.search(r"^lenet\.safetensors +newly flagged", printed, re.M)
    assert re.search(r"^lenet-1\.safetensors +added", printed, re.M)
    obj = json.loads((out / "diff.json").read_text())
    assert obj["kind"] == "scan" and obj["failed"] is True
    models = {m["file"]: m for m in obj["models"]}
    assert models["lenet.safetensors"]["change"] == "newly flagged"
    assert models["lenet.safetensors"]["old"]["flagged"] is False
    assert models["lenet-1.safetensors"]["change"] == "added"
    assert any("thresholds differ" in w for w in obj["warnings"])
    assert "newly flagged" in (out / "diff.html").read_text()
    # the other way round: no longer flagged and removed, which is no regression
    assert main(["diff", str(scans["b"]), str(scans["a"])]) == 0
    assert main(["diff", str(scans["a"]), str(scans["b"]), "--fail-on", "never"]) == 0


def test_diff_of_a_scan_and_an_audit_exits_2(
    scans: dict[str, Path], runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", str(scans["a"]), str(runs["good"])]) == 2
    err = capsys.readouterr().err
    assert "is a folder scan" in err and "is an audit report" in err


# ----------------------------------------------------------------------------- history


def test_history_orders_runs_by_created_time_and_draws_a_chart_per_metric(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "runs"
    # the names sort against the created times: z-first is the oldest run
    for name, run in (("z-first", "good"), ("m-second", "damaged"), ("a-third", "again")):
        shutil.copytree(runs[run], folder / name)
    shutil.copytree(runs["other"], folder / "other")  # another model: skipped, not fatal
    (folder / "notes.json").write_text('{"not": "a report"}')  # ignored, and so is a diff
    assert main(["diff", str(runs["good"]), str(runs["damaged"]), "--out", str(folder / "d")]) == 1
    out = folder / "history"
    assert main(["history", str(folder), "--out", str(out)]) == 0
    assert "skipped: a different model" in capsys.readouterr().out
    obj = json.loads((out / "history.json").read_text())
    validate_history_json(obj)
    labels = [r["label"] for r in obj["runs"] if r["included"]]
    assert labels == ["z-first", "m-second", "a-third"]
    (skipped,) = [r for r in obj["runs"] if not r["included"]]
    assert skipped["label"] == "other" and "arch zoo:mlp vs zoo:lenet5" in skipped["reason"]
    acc = _find(obj["metrics"], "performance", "accuracy")
    values = [p["value"] for p in acc["points"]]
    order = ("good", "damaged", "again")
    want = [_read(runs[r]).metric_value("performance.accuracy") for r in order]
    assert values == pytest.approx(want)
    assert values[1] < values[0] == values[2]
    assert all(p["ci"] is not None for p in acc["points"])
    page = (out / "history.html").read_text()
    figures = re.findall(r'<figure class="trend" data-metric="([^"]+)"><div class="svg"><svg', page)
    assert sorted(figures) == sorted(f"{m['check']}.{m['metric']}" for m in obj["metrics"])
    assert len(figures) == len(obj["metrics"]) >= 10
    assert "<script src" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    # findings over time: the damaged run's findings occur in the middle run only
    tracks = obj["findings"]
    assert tracks and all(t["messages"][1] is not None for t in tracks)
    assert any(t["messages"][0] is None and t["messages"][2] is None for t in tracks)


def test_history_of_a_folder_without_reports_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "model.json").write_text("{}")
    assert main(["history", str(tmp_path / "empty"), "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no edgeproof audit report" in err
    assert str(tmp_path / "empty") in err and not (tmp_path / "h").exists()


def test_history_library_call_keeps_the_majority_model_and_warns_on_other_data(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "runs"
    for name in ("good", "subset", "other"):
        shutil.copytree(runs[name], folder / name)
    h = history(folder)
    assert [r.label for r in h.included] == ["good", "subset"]
    assert [r.label for r in h.skipped] == ["other"]
    (warning,) = h.warnings
    assert warning.startswith("subset: the data differ")

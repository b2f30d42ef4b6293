"""``edgeproof explain`` run as a user runs it (``main([...])``), on conftest's digits LeNet-5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeproof.cli import main
from edgeproof.models.loading import load_model

FAST = ["--samples", "6", "--quiet"]


def _check(out: Path) -> Any:
    report = json.loads((out / "report.json").read_text())
    (check,) = report["checks"]
    assert isinstance(check, dict)
    return check


def test_explain_writes_class_maps_sample_maps_completeness_and_sanity(
    digits_model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x"
    code = main(
        [
            "explain",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--methods",
            "integrated_gradients,occlusion",
            "--n-steps",
            "8",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    check = _check(out)
    assert check["check"] == "attribution" and check["status"] == "ok"
    metrics = {m["name"]: m for m in check["metrics"]}
    assert "ig_relative_delta_median" in metrics and "ig_converged_fraction" in metrics
    assert metrics["ig_mean_steps"]["value"] >= 8
    assert "methods_flagged" in metrics
    tables = {t["name"] for t in check["tables"]}
    assert {"methods", "sanity"} <= tables  # the sanity tests ran
    assert check["settings"]["ig_steps"] == 8
    assert check["settings"]["max_samples"] == 6
    assert check["settings"]["target"] is None  # the predicted classes
    assert len(check["settings"]["explained_classes"]) >= 2
    figures = {f["name"] for f in check["figures"]}
    flagged = [
        f["evidence"]["method"]
        for f in check["findings"]
        if f["severity"] == "warning" and "not shown" in f["message"]
    ]
    for method in ("integrated_gradients", "occlusion"):  # per-class maps, unless flagged
        assert (f"class_means_{method}" in figures) == (method not in flagged)
    if len(flagged) < 2:
        assert "samples" in figures  # a few per-sample maps
    assert "<svg" in (out / "report.html").read_text()


def test_explain_target_class_is_explained_for_every_sample(
    digits_model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x"
    code = main(
        [
            "explain",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--methods",
            "occlusion",
            "--target",
            "3",
            "--no-sanity",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    check = _check(out)
    assert check["settings"]["target"] == 3
    assert check["settings"]["explained_classes"] == [3]
    messages = [f["message"] for f in check["findings"]]
    assert any("sanity tests were not run" in m for m in messages)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--target", "10"], "--target"),
        (["--n-steps", "0"], "--n-steps"),
        (["--n-steps", "-4"], "--n-steps"),
        (["--tolerance", "0"], "--tolerance"),
        (["--methods", "lime"], "--methods"),
        (["--baseline", "nothing-here.npy"], "--baseline"),
        (["--baseline", "WRONG_SHAPE"], "--baseline"),
    ],
)
def test_explain_refuses_bad_choices_in_one_line_with_exit_2_before_any_work(
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    flag: str,
) -> None:
    if "WRONG_SHAPE" in args:
        wrong = tmp_path / "b.npy"
        np.save(wrong, np.zeros((3, 8, 8), dtype=np.float32))  # digits are 1x8x8
        args = [str(wrong) if a == "WRONG_SHAPE" else a for a in args]
    out = tmp_path / "x"
    code = main(
        ["explain", str(digits_model_path), "--data", "builtin:digits", "--out", str(out), *args]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgeproof: error:") and flag in err[0]
    assert not out.exists()


def test_explain_of_a_model_without_gradients_skips_gradient_methods_and_still_occludes(
    digits_model_path: Path, tmp_path: Path
) -> None:
    from edgeproof.compress.onnx_export import export_onnx

    module = load_model(digits_model_path).module
    assert module is not None
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(export_onnx(module, (1, 8, 8)).SerializeToString())
    shutil.copy(digits_model_path.with_suffix(".json"), onnx_path.with_suffix(".json"))
    out = tmp_path / "x"
    code = main(
        [
            "explain",
            str(onnx_path),
            "--data",
            "builtin:digits",
            "--methods",
            "integrated_gradients,occlusion",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    check = _check(out)
    messages = [f["message"] for f in check["findings"]]
    assert any(m.startswith("Integrated Gradients skipped: needs gradients") for m in messages)
    assert any("sanity tests need to re-initialise the weights" in m for m in messages)
    figures = {f["name"] for f in check["figures"]}
    assert "class_means_occlusion" in figures

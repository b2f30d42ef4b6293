"""The command line: exit codes, one-line errors for bad input, policy gate, help with examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeproof.cli import main
from edgeproof.data.dataset import Dataset


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _npz(path: Path, data: Dataset, **override: np.ndarray) -> Path:
    arrays = {"x": data.x, "y": data.y}
    arrays.update(override)
    savez: Any = np.savez  # numpy's stubs type **kwds as its allow_pickle flag
    savez(path, **arrays)
    return path


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeproof: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_audit_writes_report_and_exits_zero(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, stdout, _ = _run(
        [
            "audit",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--checks",
            "performance,calibration",
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [c["check"] for c in report["checks"]] == ["performance", "calibration"]
    assert report["checks"][0]["status"] == "ok"
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert f"report: {out / 'report.html'}" in stdout


def test_policy_failure_exits_one_and_names_the_rule(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[thresholds]\n"performance.accuracy" = ">= 0.999"\n"calibration.ece" = "<= 1.0"\n'
    )
    code, _, err = _run(
        [
            "audit",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--checks",
            "performance,calibration",
            "--out",
            str(tmp_path / "o"),
            "--policy",
            str(policy),
            "--quiet",
        ],
        capsys,
    )
    assert code == 1
    assert "policy failed: performance.accuracy = " in err and ">= 0.999: FAILED" in err
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert saved["policy"]["passed"] is False
    assert [r["passed"] for r in saved["policy"]["rules"]] == [False, True]


def test_policy_pass_exits_zero(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[thresholds]\n"performance.accuracy" = ">= 0.5"\n')
    code, _, _ = _run(
        [
            "audit",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--checks",
            "performance",
            "--out",
            str(tmp_path / "o"),
            "--policy",
            str(policy),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.safetensors"
    code, _, err = _run(["audit", str(missing)], capsys)
    _assert_one_line_error(code, err, str(missing))


def test_wrong_model_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "model.txt"
    f.write_text("hello")
    code, _, err = _run(["audit", str(f)], capsys)
    _assert_one_line_error(code, err, str(f), ".safetensors")


def test_truncated_safetensors(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "cut.safetensors"
    f.write_bytes(digits_model_path.read_bytes()[:100])
    code, _, err = _run(["audit", str(f), "--arch", "zoo:lenet5"], capsys)
    _assert_one_line_error(code, err, str(f))


def test_corrupt_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.onnx"
    f.write_bytes(b"\x08\x07garbage" * 10)
    code, _, err = _run(["audit", str(f)], capsys)
    _assert_one_line_error(code, err, str(f))


def test_arch_that_does_not_match_the_weights_names_tensors(
    digits_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        ["audit", str(digits_model_path), "--arch", "zoo:resnet8", "--data", "builtin:digits"],
        capsys,
    )
    _assert_one_line_error(code, err, str(digits_model_path))
    assert "weight" in err  # names the offending tensors


def test_truncated_npz(
    digits_model_path: Path,
    digits_test: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = _npz(tmp_path / "good.npz", digits_test)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:200])
    code, _, err = _run(["audit", str(digits_model_path), "--data", str(bad)], capsys)
    _assert_one_line_error(code, err, str(bad))


def test_labels_out_of_range(
    digits_model_path: Path,
    digits_test: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    y = digits_test.y.copy()
    y[3] = 42
    f = _npz(tmp_path / "labels.npz", digits_test, y=y, classes=np.array(digits_test.classes))
    code, _, err = _run(["audit", str(digits_model_path), "--data", str(f)], capsys)
    _assert_one_line_error(code, err, "labels")


def test_nan_in_data(
    digits_model_path: Path,
    digits_test: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    x = digits_test.x.copy()
    x[5, 0, 2, 2] = np.nan
    f = _npz(tmp_path / "nan.npz", digits_test, x=x)
    code, _, err = _run(["audit", str(digits_model_path), "--data", str(f)], capsys)
    _assert_one_line_error(code, err, "NaN or Inf")


def test_input_shape_that_does_not_fit_the_model(
    digits_model_path: Path,
    digits_test: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = _npz(tmp_path / "shape.npz", digits_test, x=digits_test.x.reshape(len(digits_test), 64))
    code, _, err = _run(["audit", str(digits_model_path), "--data", str(f)], capsys)
    _assert_one_line_error(code, err, "shape")


def test_empty_dataset(
    digits_model_path: Path,
    digits_test: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = _npz(tmp_path / "empty.npz", digits_test, x=digits_test.x[:0], y=digits_test.y[:0])
    code, _, err = _run(["audit", str(digits_model_path), "--data", str(f)], capsys)
    _assert_one_line_error(code, err, "empty")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--eps", "abc"], "--eps: 'abc' is not a number"),
        (["--eps", "5"], "exceeds the linf diameter"),
        (["--norm", "l3"], "argument --norm: invalid choice: 'l3'"),
        (["--checks", "nonsense"], "--checks: unknown check 'nonsense'"),
        (["--shape", "1,x"], "--shape: '1,x' is not a comma-separated list of integers"),
    ],
)
def test_bad_options_name_the_option(
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    code, _, err = _run(
        [
            "audit",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            *argv,
        ],
        capsys,
    )
    _assert_one_line_error(code, err, needle)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["frobnicate"], capsys)
    _assert_one_line_error(code, err, "invalid choice")


def test_every_command_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeproof.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = list(sub.choices)  # type: ignore[arg-type]
    assert {"audit", "demo", "train", "checks", "compress", "seal", "verify"} <= set(commands)
    for command in commands:
        assert main([command, "--help"]) == 0
        assert "example" in capsys.readouterr().out, command


def test_errors_from_a_real_process_have_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeproof", "audit", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeproof", "--debug", "audit", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_weights_without_architecture_or_data_run_the_data_free_checks(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(digits_model_path)), str(bare))  # no header metadata, no sidecar
    code, _, _ = _run(["audit", str(bare), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    status = {c["check"]: c["status"] for c in report["checks"]}
    assert status["spectral"] == "ok"
    assert status["performance"] == "skipped" and status["footprint"] == "skipped"
    assert report["model"]["format"] == "weights-only"
    assert report["threat"]["input"]["shape"] == []


def test_nan_weights_exit_2_naming_the_tensor_after_the_report_is_written(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(digits_model_path))
    name = next(k for k, v in tensors.items() if k.endswith("weight") and v.dim() >= 2)
    tensors[name].view(-1)[3] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad))
    code, out, err = _run(["audit", str(bad), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    spectral_lines = [ln for ln in lines if ln.startswith("edgeproof: error: spectral: ")]
    assert len(spectral_lines) == 1 and name in spectral_lines[0] and "NaN" in spectral_lines[0]
    assert "Traceback" not in err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    status = {c["check"]: c["status"] for c in report["checks"]}
    assert status["spectral"] == "error"
    assert status["performance"] == "skipped"  # the others were still planned and recorded
    assert "report:" in out


def test_a_crashing_check_makes_the_audit_exit_3_with_the_report_written(
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgeproof.checks.spectral import SpectralCheck

    def crash(self: object, ctx: object) -> None:
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(SpectralCheck, "run", crash)
    out = str(tmp_path / "o")
    argv = ["audit", str(digits_model_path), "--data", "builtin:digits", "--out", out]
    code, _, err = _run([*argv, "--checks", "spectral,performance", "--quiet"], capsys)
    assert code == 3
    assert "edgeproof: error: spectral: ZeroDivisionError: deliberate" in err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    status = {c["check"]: c["status"] for c in report["checks"]}
    assert status == {"spectral": "error", "performance": "ok"}


def test_onnx_model_runs_forward_checks_and_skips_gradient_checks(
    digits_model: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import copy

    import torch

    module = copy.deepcopy(digits_model.module)  # type: ignore[attr-defined]
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        module,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    code, _, _ = _run(
        [
            "audit",
            str(path),
            "--data",
            "builtin:digits",
            "--out",
            str(tmp_path / "o"),
            "--checks",
            "performance,fisher,corruption",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    checks = {
        c["check"]: c for c in json.loads((tmp_path / "o" / "report.json").read_text())["checks"]
    }
    assert checks["performance"]["status"] == "ok"
    assert checks["performance"]["metrics"][0]["value"] > 0.9
    assert checks["corruption"]["status"] == "ok"
    # fisher differentiates the model (adversarial runs Square on ONNX: test_check_adversarial)
    assert checks["fisher"]["status"] == "skipped"
    assert "needs gradients" in checks["fisher"]["skip_reason"]


def test_threads_is_one_option_with_one_meaning_validated_at_parse_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edgeproof.cli import build_parser

    parser = build_parser()
    for argv in (
        ["audit", "m.pt2"],
        ["demo"],
        ["train", "--arch", "zoo:mlp", "--data", "d.npz", "--out", "m.safetensors"],
        ["compress", "m.pt2", "--data", "d.npz", "--out", "o"],
        ["protect", "m.pt2", "--out", "p.json"],
        ["seal", "m.pt2", "--out", "s.json"],
        ["verify", "s.json"],
    ):
        assert parser.parse_args([*argv, "--threads", "3"]).threads == 3
        assert parser.parse_args(argv).threads is None
    for bad in ("0", "-5", "two"):
        code, _, err = _run(["audit", "m.pt2", "--threads", bad], capsys)
        assert code == 2 and err.count("\n") == 1 and "--threads" in err, err

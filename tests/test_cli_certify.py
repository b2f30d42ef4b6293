"""``edgeproof certify``: the command on the digits LeNet-5, its TorchScript copy, the same network
with its normalisation outside (``--mean/--std``), exit codes, and bad input (one line, exit 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from edgeproof.cli import main
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import Normalize

QUICK = ["--max-samples", "16", "--methods", "ibp,crown", "--pgd-steps", "5", "--quiet"]


def _certify(argv: list[str], out: Path) -> int:
    return main(["certify", *argv, "--out", str(out), *QUICK])


def _result(out: Path) -> dict[str, Any]:
    report = json.loads((out / "report.json").read_text())
    assert [c["check"] for c in report["checks"]] == ["certify"]
    res: dict[str, Any] = report["checks"][0]
    assert res["status"] == "ok", res["error"]
    return res


def _verdicts(res: dict[str, Any]) -> list[list[Any]]:
    table = next(t for t in res["tables"] if t["name"] == "samples")
    return [row[: 1 + len(res["settings"]["eps"])] for row in table["rows"]]


def _metric(res: dict[str, Any], name: str) -> float:
    return float(next(m["value"] for m in res["metrics"] if m["name"] == name))


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], code: int, needle: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    return err


@pytest.fixture(scope="module")
def small_eps_run(digits_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certify") / "small"
    code = _certify([str(digits_model_path), "--data", "builtin:digits", "--eps", "0.002"], out)
    assert code == 0  # no counterexample within ε = 0.002, no gate
    return out


def test_certify_writes_a_report_with_only_the_certify_check(small_eps_run: Path) -> None:
    res = _result(small_eps_run)
    assert res["settings"]["eps"] == [0.002] and res["settings"]["samples"] == 16
    assert res["settings"]["methods"] == ["ibp", "crown"]
    assert (small_eps_run / "report.html").exists()
    assert 0.5 < _metric(res, "verified_accuracy") <= 1


def test_min_verified_gate_exits_1_below_and_0_at_the_verified_accuracy(
    digits_model_path: Path,
    small_eps_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v = _metric(_result(small_eps_run), "verified_accuracy")
    argv = [str(digits_model_path), "--data", "builtin:digits", "--eps", "0.002"]
    assert _certify([*argv, "--min-verified", f"{v}"], tmp_path / "at") == 0
    capsys.readouterr()
    assert _certify([*argv, "--min-verified", f"{min(1.0, v + 0.07)}"], tmp_path / "above") == 1
    assert "below --min-verified" in capsys.readouterr().err


def test_a_counterexample_for_a_correct_sample_exits_1(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "large"
    code = _certify([str(digits_model_path), "--data", "builtin:digits", "--eps", "0.15"], out)
    assert code == 1
    assert "counterexamples found" in capsys.readouterr().err
    table = next(t for t in _result(out)["tables"] if t["name"] == "verdicts")
    assert table["rows"][0][table["columns"].index("counterexamples")] > 0


def test_a_torchscript_copy_gets_the_same_verdicts(
    digits_model: LoadedModel, small_eps_run: Path, tmp_path: Path
) -> None:
    assert digits_model.module is not None
    path = tmp_path / "lenet.pt"
    torch.jit.save(torch.jit.script(copy.deepcopy(digits_model.module).eval()), str(path))
    out = tmp_path / "ts"
    argv = [str(path), "--shape", "1,8,8", "--data", "builtin:digits", "--eps", "0.002"]
    assert _certify(argv, out) == 0
    assert _verdicts(_result(out)) == _verdicts(_result(small_eps_run))


def test_normalisation_outside_the_model_gives_the_verdicts_of_the_network_with_it_inside(
    digits_model: LoadedModel,
    small_eps_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(digits_model.module, nn.Sequential)
    inside = digits_model.module[0]
    assert isinstance(inside, Normalize)
    (mean,), (std,) = inside.as_tuple()
    bare = copy.deepcopy(digits_model.module)
    bare[0] = nn.Identity()
    (tmp_path / "barenet.py").write_text(
        "from torch import nn\n\n"
        "def make(input_shape=None, num_classes=10, normalization=None):\n"
        "    return nn.Sequential(\n"
        "        nn.Identity(), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),\n"
        "        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),\n"
        "        nn.Linear(64, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),\n"
        "        nn.Linear(84, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "bare.pth"
    torch.save(bare.state_dict(), weights)
    out = tmp_path / "outside"
    argv = [str(weights), "--arch", "barenet:make", "--shape", "1,8,8", "--data"]
    argv += ["builtin:digits", "--eps", "0.002", "--mean", f"{mean}", "--std", f"{std}"]
    assert _certify(argv, out) == 0
    res = _result(out)
    assert res["settings"]["eps"] == [0.002]  # raw pixel units, not normalised ones
    assert _verdicts(res) == _verdicts(_result(small_eps_run))


def _user_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, act: str) -> Path:
    name = f"user{act.lower()}"
    (tmp_path / f"{name}.py").write_text(
        "from torch import nn\n\n"
        "def make(input_shape=None, num_classes=10, normalization=None):\n"
        f"    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.{act}(), "
        "nn.Linear(16, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), getattr(nn, act)(), nn.Linear(16, 10))
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return path


def test_negative_eps_is_one_line_exit_2(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "neg"
    code = _certify([str(digits_model_path), "--data", "builtin:digits", "--eps=-0.01"], out)
    _one_line_exit_2(capsys, code, "--eps")
    assert not out.exists()


def test_an_unsupported_operation_is_named_with_its_node_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _user_net(tmp_path, monkeypatch, "GELU")
    argv = [str(path), "--arch", "usergelu:make", "--shape", "1,8,8", "--data", "builtin:digits"]
    code = _certify([*argv, "--eps", "0.01"], tmp_path / "gelu")
    err = _one_line_exit_2(capsys, code, "cannot be bounded")
    assert "gelu" in err.lower() and "node '" in err


def test_branch_and_bound_on_a_model_that_is_not_piecewise_linear_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _user_net(tmp_path, monkeypatch, "Tanh")
    argv = [str(path), "--arch", "usertanh:make", "--shape", "1,8,8", "--data", "builtin:digits"]
    code = _certify([*argv, "--eps", "0.01", "--bab-budget", "1"], tmp_path / "tanh")
    err = _one_line_exit_2(capsys, code, "not piecewise-linear")
    assert "--bab-budget" in err and "tanh" in err.lower()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--methods", "crown,magic"], "unknown bound method(s) magic"),
        (["--bab-budget", "-1"], "--bab-budget"),
        (["--min-verified", "1.5"], "--min-verified"),
    ],
)
def test_bad_certification_options_are_one_line_exit_2(
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    needle: str,
) -> None:
    argv = ["certify", str(digits_model_path), "--data", "builtin:digits", "--out"]
    code = main([*argv, str(tmp_path / "o"), *flags])
    _one_line_exit_2(capsys, code, needle)
    assert not (tmp_path / "o").exists()

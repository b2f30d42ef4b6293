"""Normalisation outside the model (``--mean/--std``, ``InputSpec.outside_normalization``): the
torchvision convention of most published checkpoints. Data, domain, ε, attacks and corruptions
stay in raw input units; the numbers equal those of the same network with the normalisation
inside it."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.cli import main
from edgeproof.data.dataset import Dataset
from edgeproof.errors import SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module, load_model
from edgeproof.models.zoo import Normalize
from edgeproof.runner import audit, resolve_threat
from edgeproof.spec import InputSpec

CHECKS = ["performance", "calibration", "bitflip", "adversarial", "corruption", "fisher"]
QUICK: dict[str, dict[str, Any]] = {
    "calibration": {"resamples": 20},
    "bitflip": {"random_seeds": 2, "eval_samples": 60, "budgets": (1e-3,)},
    "adversarial": {"pgd_steps": 5, "apgd_steps": 5, "bisection_steps": 3, "max_samples": 40},
    "corruption": {"severities": (1, 3)},
    "fisher": {"pgd_steps": 3, "bisection_steps": 2, "max_samples": 20},
}


def _checks() -> list[object]:
    from edgeproof.checks import get_check

    return [get_check(c, **QUICK.get(c, {})) for c in CHECKS]


@pytest.fixture(scope="module")
def split(digits_model: LoadedModel) -> tuple[nn.Module, tuple[tuple[float, ...], ...]]:
    """The digits LeNet-5 without its first (Normalize) layer, and that layer's mean/std."""
    assert isinstance(digits_model.module, nn.Sequential)
    inside = digits_model.module[0]
    assert isinstance(inside, Normalize)
    bare = copy.deepcopy(digits_model.module)
    bare[0] = nn.Identity()
    return bare.eval(), inside.as_tuple()


def _metrics(report: object) -> dict[str, float]:
    out = {}
    for c in report.checks:  # type: ignore[attr-defined]
        assert c.status == "ok", (c.check, c.error)
        for m in c.metrics:
            if "latency" not in m.name and m.unit not in ("ms", "s"):
                out[f"{c.check}.{m.name}"] = m.value
    return out


def test_outside_normalisation_gives_the_numbers_of_the_same_network_with_it_inside(
    digits_model: LoadedModel, digits_test: Dataset, split: tuple[nn.Module, tuple]
) -> None:
    data = digits_test.subset(np.arange(120))
    bare, norm = split
    spec = digits_model.spec
    assert spec is not None
    inside = audit(digits_model, data, _checks(), seed=1)  # type: ignore[arg-type]
    outside_model = from_module(bare, spec.with_(normalization=None))
    threat = resolve_threat(outside_model, data, mean=norm[0], std=norm[1])
    assert threat.input.outside_normalization == norm
    assert list(threat.eps) == inside.threat["eps"]  # ε in raw units: 1/3/10 % of the [0, 1] domain
    outside = audit(outside_model, data, _checks(), threat=threat, seed=1)  # type: ignore[arg-type]
    a, b = _metrics(inside), _metrics(outside)
    assert a.keys() == b.keys()
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=1e-4, abs_tol=1e-5) or (
            math.isnan(a[k]) and math.isnan(b[k])
        ), (k, a[k], b[k])
    assert outside.threat["input"]["outside_normalization"] == {
        "mean": list(norm[0]),
        "std": list(norm[1]),
    }
    # the flipped tensors carry the network's own parameter names, not the wrapper's
    table = next(t for t in outside.check("bitflip").tables if t.name != "protect")
    assert not any(str(cell).startswith("model.") for row in table.rows for cell in row)


def _pretrained_state_dict(tmp_path: Path, bare: nn.Module) -> Path:
    """A user's checkpoint: a plain state dict saved with torch.save, plus the module file that
    builds the architecture (``--arch usernet:make``)."""
    (tmp_path / "usernet.py").write_text(
        "from torch import nn\n\n"
        "def make(input_shape=None, num_classes=10, normalization=None):\n"
        "    return nn.Sequential(\n"
        "        nn.Identity(), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),\n"
        "        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),\n"
        "        nn.Linear(64, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),\n"
        "        nn.Linear(84, num_classes))\n"
    )
    path = tmp_path / "usernet.pth"
    torch.save(bare.state_dict(), path)
    return path


def test_cli_audits_a_user_checkpoint_with_mean_and_std_and_records_them(
    split: tuple[nn.Module, tuple],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bare, norm = split
    template = _pretrained_state_dict(tmp_path, bare)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    code = main(
        [
            "audit",
            str(template),
            "--arch",
            "usernet:make",
            "--data",
            "builtin:digits",
            "--shape",
            "1,8,8",
            "--mean",
            f"{norm[0][0]}",
            "--std",
            f"{norm[1][0]}",
            "--checks",
            "performance,adversarial",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    spec = report["threat"]["input"]
    assert spec["outside_normalization"]["mean"] == [norm[0][0]]
    assert report["threat"]["eps"] == [0.01, 0.03, 0.1]  # raw units of the [0, 1] pixels
    acc = next(c for c in report["checks"] if c["check"] == "performance")["metrics"][0]
    assert acc["name"] == "accuracy" and acc["value"] > 0.9


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--mean", "0.1,0.2", "--std", "0.3,0.4"], "--mean/--std give 2 values but the input"),
        (["--mean", "0.1", "--std", "0"], "every std > 0"),
        (["--mean", "0.1"], "--mean was given without --std"),
        (["--std", "x"], "--std: 'x' is not comma-separated numbers"),
    ],
)
def test_bad_mean_or_std_is_one_line_naming_the_option(
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    code = main(
        [
            "audit",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            *argv,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_onnx_and_torchscript_forms_take_the_same_outside_normalisation(
    split: tuple[nn.Module, tuple], digits_test: Dataset, tmp_path: Path
) -> None:
    bare, norm = split
    x = torch.rand(2, 1, 8, 8)
    ts = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.trace(copy.deepcopy(bare), x), str(ts))
    onnx_path = tmp_path / "bare.onnx"
    torch.onnx.export(
        copy.deepcopy(bare),
        (x,),
        str(onnx_path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    data = digits_test.subset(np.arange(100))
    spec = InputSpec(shape=(1, 8, 8), num_classes=10, outside_normalization=norm)
    accs = []
    for path in (ts, onnx_path):
        model = load_model(path, spec=spec)
        report = audit(model, data, ["performance"])
        assert report.checks[0].status == "ok"
        accs.append(report.metric_value("performance.accuracy"))
    with torch.no_grad():
        ref = bare((torch.from_numpy(data.x) - norm[0][0]) / norm[1][0]).argmax(1).numpy()
    assert accs[0] == accs[1] == pytest.approx(float((ref == data.y).mean()))


def test_the_normalisation_is_validated_on_the_spec() -> None:
    with pytest.raises(SpecError, match="every std > 0"):
        InputSpec(shape=(3, 4, 4), outside_normalization=((0.5,), (-1.0,)))
    with pytest.raises(SpecError, match="give 3 values, or one"):
        InputSpec(shape=(3, 4, 4), outside_normalization=((0.5, 0.5), (1.0, 1.0)))

"""The "every model a user brings" acceptance run, as a user would do it: a CNN the project has
never seen, trained elsewhere on real MNIST with the torchvision-style normalisation outside the
model and saved from a GPU (a ``torch.save`` state dict whose storages are tagged ``cuda:0``);
audited with ``--mean/--std`` (every default check ok), the same net as TorchScript and as a
``torch.export`` program (every check ok), compressed to ONNX and audited again at the accuracy
compress reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.serialization
from torch import nn

from edgeproof.checks import default_checks
from edgeproof.cli import main
from edgeproof.data.loading import load_data

USER_MODULE = """
from torch import nn


def make() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10),
    )
"""
MEAN, STD = 0.1307, 0.3081
NORM = ["--mean", str(MEAN), "--std", str(STD)]


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("user")
    (folder / "usercnn.py").write_text(USER_MODULE)
    namespace: dict[str, object] = {}
    exec(compile(USER_MODULE, "usercnn.py", "exec"), namespace)  # the user's own code
    net: nn.Module = namespace["make"]()  # type: ignore[operator]
    train = load_data("builtin:mnist/train")
    x = (torch.from_numpy(train.x) - MEAN) / STD
    y = torch.from_numpy(train.y).long()
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    state = folder / "cnn.pth"
    tag = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"  # saved on a GPU
    try:
        torch.save(net.state_dict(), state)
    finally:
        torch.serialization.location_tag = tag
    with pytest.raises(RuntimeError, match="CUDA"):  # as plain torch.load sees it here
        torch.load(state, weights_only=True)
    script = folder / "cnn.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), str(script))
    program = folder / "cnn.pt2"
    batch = torch.export.Dim("batch", max=4096)
    exported = torch.export.export(net, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    torch.export.save(exported, program)
    test = load_data("builtin:mnist")
    data = folder / "mnist-300.npz"
    np.savez(data, x=test.x[:300], y=test.y[:300])  # raw [0, 1] pixels, as published
    return {"folder": folder, "state": state, "script": script, "program": program, "data": data}


def _checks(out: Path) -> dict[str, dict]:
    return {c["check"]: c for c in json.loads((out / "report.json").read_text())["checks"]}


@pytest.mark.slow  # ~100 s: every default check on a 28×28 CNN, three times
def test_a_gpu_saved_state_dict_its_torchscript_and_pt2_pass_every_check_with_outside_norm(
    user_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.syspath_prepend(str(user_files["folder"]))
    data = ["--data", str(user_files["data"])]
    runs = {
        "state dict": [str(user_files["state"]), "--arch", "usercnn:make", "--shape", "1,28,28"],
        "torchscript": [str(user_files["script"])],
        "torch.export": [str(user_files["program"])],
    }
    for name, model in runs.items():
        out = tmp_path / name.replace(" ", "-")
        code = main(["audit", *model, *data, *NORM, "--out", str(out), "--quiet"])
        assert code == 0, (name, capsys.readouterr().err)
        checks = _checks(out)
        assert set(checks) == set(default_checks())
        bad = {c: (r["status"], r["error"] or r["skip_reason"]) for c, r in checks.items()
               if r["status"] != "ok"}  # fmt: skip
        assert not bad, (name, bad)
        acc = next(m["value"] for m in checks["performance"]["metrics"] if m["name"] == "accuracy")
        assert acc > 0.85, name
        report = json.loads((out / "report.json").read_text())
        assert report["threat"]["input"]["outside_normalization"]["mean"] == [MEAN]
        assert report["threat"]["eps"] == [0.01, 0.03, 0.1]  # raw pixel units


@pytest.mark.slow  # ~40 s: a time-boxed compression sweep, then one audit
def test_the_compressed_onnx_audits_again_within_a_point(
    user_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.syspath_prepend(str(user_files["folder"]))
    out = tmp_path / "c"
    code = main(["compress", str(user_files["state"]), "--arch", "usercnn:make", "--shape",
                 "1,28,28", *NORM, "--data", "builtin:mnist/train", "--eval",
                 str(user_files["data"]), "--max-drop", "1%", "--time-budget", "30",
                 "--quiet", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    picked = json.loads((out / "compress.json").read_text())["candidate"]
    code = main(["audit", str(out / "model.onnx"), "--data", str(user_files["data"]), *NORM,
                 "--checks", "performance", "--out", str(tmp_path / "a"), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    perf = _checks(tmp_path / "a")["performance"]
    acc = next(m["value"] for m in perf["metrics"] if m["name"] == "accuracy")
    assert abs(acc - picked["accuracy"]) <= 0.01

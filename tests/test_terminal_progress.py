"""What a user sees in the terminal: training reports each epoch, long checks count their units,
``--json`` prints the written file to stdout, a closed pipe ends quietly, a clean baseline
comparison says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeproof.checks.adversarial import AdversarialCheck
from edgeproof.checks.base import AuditContext
from edgeproof.checks.bitflip import BitflipCheck
from edgeproof.cli import main
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.train import EpochStats, train_model
from edgeproof.runner import resolve_threat

SRC = Path(__file__).resolve().parents[1] / "src"


class Recorder:
    """A Progress that records what a check reports: each stage's total and units advanced."""

    def __init__(self) -> None:
        self.stages: list[list[object]] = []  # [description, total, advanced]

    def start(self, total: int, description: str = "") -> None:
        self.stages.append([description, total, 0])

    def advance(self, n: int = 1) -> None:
        assert self.stages, "advance before start"
        self.stages[-1][2] = int(self.stages[-1][2]) + n  # type: ignore[call-overload]


def _ctx(model: LoadedModel, data: Dataset) -> tuple[AuditContext, Recorder]:
    threat = resolve_threat(model, data)
    rec = Recorder()
    ctx = AuditContext(model=model.for_spec(threat.input), data=data, threat=threat, progress=rec)
    return ctx, rec


def test_train_reports_every_epoch_and_the_weights_do_not_change(digits_train: Dataset) -> None:
    small = digits_train.subset(slice(0, 200))
    seen: list[EpochStats] = []
    a = train_model("zoo:mlp", small, epochs=3, seed=0, on_epoch=seen.append)
    b = train_model("zoo:mlp", small, epochs=3, seed=0)
    assert [s.epoch for s in seen] == [1, 2, 3] and {s.epochs for s in seen} == {3}
    assert seen[-1].loss < seen[0].loss
    assert all(0.0 <= s.accuracy <= 1.0 for s in seen)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name  # reporting changes nothing in the training


def test_train_command_prints_one_line_per_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.safetensors"
    argv = ["train", "--arch", "zoo:mlp", "--data", "builtin:digits/train", "--epochs", "2"]
    code = main([*argv, "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0
    lines = [ln for ln in stderr.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    assert all("loss" in ln and "train acc" in ln for ln in lines)
    assert "wrote" in stdout


def test_adversarial_counts_attack_batches_and_bisection_rounds(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    ctx, rec = _ctx(digits_model, digits_test)
    settings = dict(AdversarialCheck.quick_settings)
    AdversarialCheck(**settings).run(ctx)
    names = [s[0] for s in rec.stages]
    assert names == ["attacks × ε", "minimal ε"]
    for desc, total, advanced in rec.stages:
        assert advanced == total, desc  # every stage ends full, never past it
    # 3 attacks × (3 ε + the sanity ε) × 1 batch; (1 + 2 bisection rounds) × 1 batch
    assert [s[1] for s in rec.stages] == [12, 3]


def test_bitflip_counts_each_flipped_model_it_evaluates(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    ctx, rec = _ctx(digits_model, digits_test)
    check = BitflipCheck(**BitflipCheck.quick_settings)
    res = check.run(ctx)
    assert len(rec.stages) == 1
    desc, total, advanced = rec.stages[0]
    assert desc == "bit flips" and advanced == total
    layers = len(res.settings["candidate_tensors"])
    k = check.max_k
    assert total == k * (2 + 2 + 1) + 2 * layers  # DNL, 1P-DNL, 2 random seeds, 1 budget


def _audit_argv(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "audit",
        str(model),
        "--data",
        "builtin:digits",
        "--checks",
        "performance",
        "--out",
        str(out),
        *extra,
    ]


def test_audit_json_prints_report_json_to_stdout_and_the_summary_to_stderr(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_audit_argv(digits_model_path, tmp_path / "a", "--json"))
    stdout, stderr = capsys.readouterr()
    assert code == 0
    assert json.loads(stdout) == json.loads((tmp_path / "a" / "report.json").read_text())
    assert "report:" in stderr and "edgeproof audit" in stderr


def test_seal_json_prints_the_seal_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc" * 100)
    seal = tmp_path / "s.seal.json"
    code = main(["seal", str(tmp_path / "a.bin"), "--out", str(seal), "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 0
    assert json.loads(stdout) == json.loads(seal.read_text())
    assert "seal root" in stderr


def test_baseline_with_nothing_flagged_says_so(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_audit_argv(digits_model_path, tmp_path / "base", "--quiet")) == 0
    capsys.readouterr()
    baseline = tmp_path / "base" / "report.json"
    code = main(_audit_argv(digits_model_path, tmp_path / "again", "--baseline", str(baseline)))
    stdout, _ = capsys.readouterr()
    assert code == 0
    row = [ln for ln in stdout.splitlines() if "baseline" in ln and "│" in ln]
    assert row and "nothing flagged" in " ".join(stdout.split())


def _python() -> list[str]:
    return [sys.executable, "-m", "edgeproof"]


def test_verify_json_into_a_closed_pipe_ends_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # enough items that the JSON (~0.13 MB) overflows the pipe buffer after the reader is gone
    files = []
    for i in range(400):
        f = tmp_path / f"f{i}.txt"
        f.write_text(str(i))
        files.append(str(f))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    seal = tmp_path / "s.seal.json"
    assert main(["seal", *files, "--out", str(seal), "--threads", "1"]) == 0
    proc = subprocess.Popen(
        [*_python(), "verify", str(seal), "--json", "--threads", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(10)  # `| head -c 10`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    rc = proc.wait(timeout=120)
    assert head.startswith(b"{")
    assert rc in (0, 1), err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err

"""One model audited on several data sets (:func:`edgeproof.audit_datasets`): each report is
the report a plain ``audit`` of that data set gives, number for number, in this process, on two
worker processes and on Ray; ONNX and TorchScript models travel to the workers; the CLI writes
one folder per data set and exits with the worst code.

One Ray instance serves the module (``ray_executor``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgeproof import audit, audit_datasets
from edgeproof.audit_many import dataset_folders
from edgeproof.checks import get_check
from edgeproof.checks.base import Check
from edgeproof.cli import main
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.execute import Executor, make_executor
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import load_model
from edgeproof.report.report import Report

QUICK = ("performance", "calibration", "adversarial", "bitflip", "spectral")


def _checks() -> list[Check]:
    return [get_check(n, **dict(type(get_check(n)).quick_settings)) for n in QUICK]


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[Executor]:
    ex = make_executor("ray", 2)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def two_sets(digits_test: Dataset) -> list[Dataset]:
    """The test split in two parts (a third, the rest), each under its own name."""
    n = len(digits_test)
    return [
        replace(digits_test.subset(np.arange(n // 3)), name="/data/first.npz"),
        replace(digits_test.subset(np.arange(n // 3, n)), name="/data/second.npz"),
    ]


def _numbers(report: Report) -> dict[str, Any]:
    """The report's JSON without when it was made and how long it took."""
    obj = report.to_json()
    obj.pop("created")
    obj.pop("duration_s")
    for c in obj["checks"]:
        c.pop("duration_s")
    return obj


@pytest.fixture(scope="module")
def reports(
    digits_model: LoadedModel, two_sets: list[Dataset], ray_executor: Executor
) -> dict[str, list[Report]]:
    torch.set_num_threads(2)  # the caller's thread count, which every worker must take
    try:
        plain = [audit(digits_model, d, _checks(), seed=3) for d in two_sets]
        got = {
            str(ex): audit_datasets(digits_model, two_sets, _checks(), executor=ex, jobs=2, seed=3)
            for ex in ("inprocess", "processes", ray_executor)
        }
    finally:
        torch.set_num_threads(1)
    return {"plain": plain, **dict(zip(("inprocess", "processes", "ray"), got.values()))}


def test_each_data_set_gets_the_report_a_plain_audit_of_it_gives_on_every_backend(
    reports: dict[str, list[Report]],
) -> None:
    want = [json.dumps(_numbers(r), sort_keys=True) for r in reports["plain"]]
    assert [r.data["name"] for r in reports["plain"] if r.data] == [
        "/data/first.npz",
        "/data/second.npz",
    ]
    assert all(c.status == "ok" for r in reports["plain"] for c in r.checks)
    for kind in ("inprocess", "processes", "ray"):
        got = [json.dumps(_numbers(r), sort_keys=True) for r in reports[kind]]
        assert got == want, kind


def test_each_report_is_of_its_own_data_set_in_the_order_given(
    reports: dict[str, list[Report]],
) -> None:
    first, second = reports["ray"]
    assert first.data is not None and second.data is not None
    assert (first.data["name"], first.data["records"]) == ("/data/first.npz", 120)
    assert (second.data["name"], second.data["records"]) == ("/data/second.npz", 240)
    assert first.metric_value("calibration.nll") != second.metric_value("calibration.nll")
    assert first.environment["torch_threads"] == 2  # the caller's, not the worker's default


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_onnx_and_torchscript_models_travel_to_the_workers(
    fmt: str,
    digits_model: LoadedModel,
    two_sets: list[Dataset],
    ray_executor: Executor,
    tmp_path: Path,
) -> None:
    assert digits_model.module is not None
    x = torch.zeros(1, 1, 8, 8)
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    if fmt == "onnx":
        torch.onnx.export(
            digits_model.module, (x,), str(path), dynamic_axes={"input": {0: "b"}},
            input_names=["input"], dynamo=False,
        )  # fmt: skip
    else:
        torch.jit.save(torch.jit.trace(digits_model.module, x), str(path))
    model = load_model(path)
    assert model.format == fmt
    checks = ["performance", "calibration"]
    plain = [audit(model, d, checks) for d in two_sets]
    got = audit_datasets(model, two_sets, checks, executor=ray_executor)
    assert [_numbers(r) for r in got] == [_numbers(r) for r in plain]


def test_a_torch_export_program_is_refused_before_any_work_on_worker_processes(
    digits_model: LoadedModel, two_sets: list[Dataset], tmp_path: Path
) -> None:
    assert digits_model.module is not None
    batch = {0: torch.export.Dim("batch")}
    program = torch.export.export(
        digits_model.module, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=(batch,)
    )
    torch.export.save(program, str(tmp_path / "m.pt2"))
    model = load_model(tmp_path / "m.pt2")
    with pytest.raises(OptionError, match=r"executor: the model cannot be sent to the processes "
                       r"workers .*a torch.export program's module cannot be sent"):  # fmt: skip
        audit_datasets(model, two_sets, ["performance"], executor="processes", jobs=2)
    (report,) = audit_datasets(model, two_sets[:1], ["performance"])  # in process it runs
    assert report.check("performance").status == "ok"


def test_a_data_set_that_does_not_fit_is_refused_before_any_audit(
    digits_model: LoadedModel, two_sets: list[Dataset], ray_executor: Executor
) -> None:
    bad = Dataset(np.zeros((4, 1, 4, 4), np.float32), np.zeros(4, int), ["0"], "bad.npz", "npz")
    with pytest.raises(SpecError, match=r"bad.npz: samples have shape \[1, 4, 4\]"):
        audit_datasets(digits_model, [two_sets[0], bad], ["performance"], executor=ray_executor)
    with pytest.raises(OptionError, match="threat: 1 threat models for 2 data sets"):
        audit_datasets(digits_model, two_sets, threat=[object()])  # type: ignore[list-item]
    with pytest.raises(OptionError, match="datasets: no data set was given"):
        audit_datasets(digits_model, [])


def test_data_sets_of_the_same_name_get_distinct_folders(two_sets: list[Dataset]) -> None:
    a, b = two_sets
    digits = replace(a, name="builtin:digits/train")
    odd = replace(a, name="C:\\runs\\Val Set (2).CSV")
    assert dataset_folders([a, b, replace(b, name="/other/first.npz"), digits, odd]) == [
        "first",
        "second",
        "first-2",
        "digits-train",
        "val-set-2",
    ]


def test_cli_audits_each_data_set_into_its_folder_and_exits_with_the_worst_code(
    digits_model_path: Path,
    digits_test: Dataset,
    ray_executor: Executor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, shuffled = tmp_path / "a" / "val.npz", tmp_path / "b" / "val.npz"
    for path in (good, shuffled):
        path.parent.mkdir()
    np.savez(good, x=digits_test.x, y=digits_test.y)
    np.savez(shuffled, x=digits_test.x, y=np.random.default_rng(0).permutation(digits_test.y))
    policy = tmp_path / "policy.toml"
    policy.write_text('[thresholds]\n"performance.accuracy" = ">= 0.9"\n')
    out = tmp_path / "out"
    argv = ["audit", str(digits_model_path), "--checks", "performance", "--policy", str(policy),
            "--out", str(out), "--quiet"]  # fmt: skip
    # Ray is already running in this process (the module's): the CLI joins it
    code = main([*argv, "--data", str(good), "--data", str(shuffled), "--executor", "ray"])
    assert code == 1  # the shuffled labels fail the policy; the good set passes
    err = capsys.readouterr().err
    assert f"{shuffled}: policy failed" in err and f"{good}: policy failed" not in err
    for folder, acc_ok in (("val", True), ("val-2", False)):
        doc = json.loads((out / folder / "report.json").read_text())
        assert (doc["policy"]["passed"]) is acc_ok, folder
        assert (out / folder / "report.html").is_file()
    assert not (out / "report.json").exists()
    # one --data: the report in --out itself, as ever
    assert main([*argv, "--data", str(good)]) == 0
    assert (out / "report.json").is_file()

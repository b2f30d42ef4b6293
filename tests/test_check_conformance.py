"""The conformance suite every registered check passes (scikit-learn's ``check_estimator``,
captum's ``test_config``): parametrised over :func:`edgeproof.checks.available_checks`, so a new
check gets it for free.

For each check:

* its registry entry (:class:`~edgeproof.checks.CheckInfo`) says what its class says;
* it declares its needs honestly: without data, without gradients (ONNX) or without a forward
  pass (weights only) it is skipped with a reason, never run and failed;
* it is deterministic under a seed (timings aside) and returns a schema-valid typed result;
* NaN weights are refused with a clear message (status ``error`` without a traceback), never a
  crash;
* it leaves the model's parameters and mode unchanged;
* it runs on the safetensors, TorchScript (scripted), ``torch.export`` and ONNX forms of the
  same model wherever its needs allow, and the forms agree on its headline numbers.

Each check runs with its :attr:`~edgeproof.checks.base.Check.quick_settings` on 48 digits.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeproof.checks import available_checks, check_class, check_info, get_check
from edgeproof.checks.base import Check
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module, load_model
from edgeproof.report.report import Report
from edgeproof.results import CheckResult
from edgeproof.runner import audit, resolve_threat

CHECKS = available_checks()
FORMATS = ("safetensors", "torchscript", "torch-export", "onnx")
_TIMING_UNITS = {"ms", "s", "samples/s", "MiB"}


def _cls(name: str) -> type[Check]:
    cls = check_class(name)
    assert isinstance(cls, type) and issubclass(cls, Check)
    return cls


def _quick(name: str) -> Check:
    cls = check_class(name)
    return get_check(name, **dict(getattr(cls, "quick_settings", {})))


def _numbers(result: CheckResult) -> dict[str, float | str]:
    """The check's metrics that do not measure time or memory (NaN as a string, so that two
    NaNs compare equal)."""
    return {
        m.name: "nan" if math.isnan(m.value) else m.value
        for m in result.metrics
        if m.unit not in _TIMING_UNITS and "latency" not in m.name and "time" not in m.name
    }


@pytest.fixture(scope="module")
def small(digits_test: Dataset) -> Dataset:
    return digits_test.subset(np.arange(48))


@pytest.fixture(scope="module")
def forms(digits_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits LeNet-5 in every format edgeproof reads."""
    assert digits_model.module is not None and digits_model.path is not None
    folder = tmp_path_factory.mktemp("forms")
    module = copy.deepcopy(digits_model.module).eval()
    x = torch.rand(2, 1, 8, 8)
    out = {"safetensors": digits_model.path}
    out["torchscript"] = folder / "lenet.pt"
    torch.jit.save(torch.jit.script(copy.deepcopy(module)), str(out["torchscript"]))
    out["torch-export"] = folder / "lenet.pt2"
    program = torch.export.export(
        copy.deepcopy(module), (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},)
    )
    torch.export.save(program, str(out["torch-export"]))
    out["onnx"] = folder / "lenet.onnx"
    torch.onnx.export(
        copy.deepcopy(module),
        (x,),
        str(out["onnx"]),
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}},
    )
    return out


def _load(forms: dict[str, Path], fmt: str, digits_model: LoadedModel) -> LoadedModel:
    # the foreign forms carry no sidecar: give them the spec the safetensors sidecar declares
    return load_model(forms[fmt], spec=digits_model.spec)


def _audit(model: LoadedModel, data: Dataset | None, name: str, seed: int = 0) -> Report:
    return audit(model, data, [_quick(name)], threat=resolve_threat(model, data), seed=seed)


def _run(model: LoadedModel, data: Dataset | None, name: str, seed: int = 0) -> CheckResult:
    return _audit(model, data, name, seed).checks[0]


@pytest.mark.parametrize("name", CHECKS)
def test_the_registry_entry_says_what_the_check_class_says(name: str) -> None:
    info, cls = check_info(name), check_class(name)
    assert isinstance(cls, type) and issubclass(cls, Check)
    assert (cls.name, cls.title) == (info.name, info.title)
    for need in ("needs_data", "needs_forward", "needs_gradients", "needs_architecture"):
        assert getattr(cls, need) == getattr(info, need), need
    headline = cls.headline
    assert isinstance(headline, tuple) and len(headline) <= 3


@pytest.mark.parametrize("name", CHECKS)
def test_needs_are_declared_honestly_with_a_skip_reason(
    name: str, digits_model: LoadedModel, small: Dataset, forms: dict[str, Path]
) -> None:
    info = check_info(name)
    if info.needs_data:
        res = _run(digits_model, None, name)
        assert res.status == "skipped" and res.skip_reason and "data" in res.skip_reason
    onnx = _load(forms, "onnx", digits_model)
    res = _run(onnx, small, name)
    if info.needs_gradients:
        assert res.status == "skipped" and res.skip_reason and "gradients" in res.skip_reason
    else:
        assert res.status == "ok", res.error
    weights = LoadedModel(path=None, format="weights-only", weights=digits_model.weights)
    res = _run(weights, None, name)
    if info.needs_forward or info.needs_data:
        assert res.status == "skipped" and res.skip_reason
    else:
        assert res.status == "ok", res.error


@pytest.mark.parametrize("name", CHECKS)
def test_deterministic_under_a_seed_with_a_schema_valid_result(
    name: str, digits_model: LoadedModel, small: Dataset
) -> None:
    report = _audit(digits_model, small, name, seed=3)
    first = report.checks[0]
    again = _run(digits_model, small, name, seed=3)
    assert first.status == "ok", first.error
    assert _numbers(first) == _numbers(again)
    assert [f.message for f in first.findings] == [f.message for f in again.findings]
    assert first.metrics, "a check that runs reports at least one metric"
    for headline in _cls(name).headline:
        assert any(m.name == headline for m in first.metrics), headline
    report.validate()
    assert Report.from_json(report.to_json()).to_json() == report.to_json()


@pytest.mark.parametrize("name", CHECKS)
def test_nan_weights_are_refused_with_a_message_not_a_crash(
    name: str, digits_model: LoadedModel, small: Dataset
) -> None:
    assert digits_model.module is not None
    broken = copy.deepcopy(digits_model.module)
    with torch.no_grad():
        next(p for p in broken.parameters() if p.dim() > 1).view(-1)[0] = float("nan")
    model = from_module(broken, digits_model.spec, arch=digits_model.arch)
    res = _run(model, small, name)
    assert not res.crashed, res.traceback
    if res.status == "error":
        assert res.error and "nan" in res.error.lower(), res.error


@pytest.mark.parametrize("name", CHECKS)
def test_the_model_is_left_as_it_was(name: str, digits_model: LoadedModel, small: Dataset) -> None:
    assert digits_model.module is not None
    module = copy.deepcopy(digits_model.module)
    model = from_module(module, digits_model.spec, arch=digits_model.arch)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    modes = [m.training for m in module.modules()]
    grads = [p.requires_grad for p in module.parameters()]
    res = _run(model, small, name)
    assert res.status == "ok", res.error
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in module.modules()] == modes
    assert [p.requires_grad for p in module.parameters()] == grads
    assert all(p.grad is None for p in module.parameters())


def _close(a: float | str, b: float | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(a, b, rel_tol=0.02, abs_tol=0.02)


@pytest.mark.parametrize("fmt", FORMATS[1:])
@pytest.mark.parametrize("name", CHECKS)
def test_runs_on_every_model_format_and_the_forms_agree(
    name: str,
    fmt: str,
    digits_model: LoadedModel,
    small: Dataset,
    forms: dict[str, Path],
) -> None:
    info = check_info(name)
    model = _load(forms, fmt, digits_model)
    res = _run(model, small, name)
    if info.needs_gradients and not model.has_gradients:
        assert res.status == "skipped"
        return
    assert res.status == "ok", f"{fmt}: {res.error}"
    ref = _run(digits_model, small, name)
    reference = _numbers(ref)
    ours = _numbers(res)
    if res.settings.get("attacks_run") != ref.settings.get("attacks_run") or set(ours) != set(
        reference
    ):
        return  # another method for this form (e.g. Square on a forward-only graph, fewer
        # detectors on a compiled module): not comparable
    for headline in _cls(name).headline:
        if headline in reference and name != "footprint":
            assert _close(ours[headline], reference[headline]), (headline, ours, reference)

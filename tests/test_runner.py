"""The runner: spec resolution, planning with stated skip reasons, failure isolation, probing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.checks.base import AuditContext, FunctionCheck
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.results import CheckResult, Metric
from edgeproof.runner import audit, resolve_threat


def _model(in_features: int = 4, classes: int = 3) -> LoadedModel:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes)).eval()
    return LoadedModel(
        path=None, format="safetensors", module=module, weights=dict(module.state_dict())
    )


def _data(n: int = 30, features: int = 4, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        x=rng.random((n, features)),
        y=np.arange(n) % classes,
        classes=[f"c{i}" for i in range(classes)],
        name="mem",
        format="npz",
        kind="tabular",
        domain=(0.0, 1.0),
    )


def _ok(ctx: AuditContext) -> CheckResult:
    acc = float((ctx.clean_logits().argmax(1) == ctx.require_data().y).mean())
    return CheckResult(check="ok", title="ok", metrics=[Metric("accuracy", acc)])


def _boom(ctx: AuditContext) -> CheckResult:
    raise ZeroDivisionError("deliberate")


def test_a_crashing_check_is_recorded_and_the_others_still_run() -> None:
    checks = [
        FunctionCheck("boom", _boom, needs_data=True),
        FunctionCheck("ok", _ok, needs_data=True),
    ]
    report = audit(_model(), _data(), checks)
    boom, ok = report.checks
    assert boom.status == "error"
    assert boom.error == "ZeroDivisionError: deliberate"
    assert boom.traceback is not None and "deliberate" in boom.traceback
    assert boom.crashed and not ok.crashed
    assert ok.status == "ok"
    assert 0.0 <= ok.metric("accuracy").value <= 1.0


def test_checks_that_need_data_are_skipped_without_it_with_the_reason() -> None:
    report = audit(
        _model(),
        None,
        [FunctionCheck("ok", _ok, needs_data=True)],
        threat=resolve_threat(_model(), None, shape=(4,)),
    )
    assert report.checks[0].status == "skipped"
    assert report.checks[0].skip_reason == "needs labelled data (pass data)"


def test_weights_only_model_skips_forward_checks() -> None:
    m = _model()
    weights_only = LoadedModel(path=None, format="weights-only", weights=m.weights)
    check = FunctionCheck("fwd", _ok, needs_data=False, needs_forward=True)
    report = audit(
        weights_only, None, [check], threat=resolve_threat(weights_only, None, shape=(4,))
    )
    assert "only weights were given" in (report.checks[0].skip_reason or "")


def test_onnx_like_model_skips_gradient_checks_naming_the_format() -> None:
    m = _model()
    fake_onnx = LoadedModel(path=None, format="onnx", weights=m.weights)
    fake_onnx.session = object()  # can_forward, no gradients
    check = FunctionCheck("grad", _ok, needs_gradients=True, needs_forward=False)
    ctx = AuditContext(
        model=fake_onnx, data=None, threat=resolve_threat(fake_onnx, None, shape=(4,))
    )
    assert check.skip_reason(ctx) == "needs gradients, which an onnx model does not provide"


def test_spec_is_inferred_from_data_and_flags_take_precedence() -> None:
    threat = resolve_threat(_model(), _data())
    assert threat.input.shape == (4,)
    assert threat.input.domain == (0.0, 1.0)
    assert threat.input.kind == "tabular"
    assert threat.input.num_classes == 3
    assert threat.eps == (0.01, 0.03, 0.1)
    over = resolve_threat(_model(), _data(), domain=(-1.0, 1.0), eps=(0.2,), norm="l2")
    assert over.input.domain == (-1.0, 1.0) and over.eps == (0.2,) and over.norm == "l2"


def test_data_whose_shape_does_not_fit_the_model_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"samples have shape \[5\] but the model expects \[4\]"):
        resolve_threat(
            LoadedModel(
                path=None,
                format="safetensors",
                module=_model().module,
                spec=resolve_threat(_model(), _data()).input,
            ),
            _data(features=5),
        )


def test_probe_rejects_an_input_shape_the_model_cannot_take() -> None:
    with pytest.raises(SpecError, match=r"an input of shape \[5\] does not fit the model"):
        audit(_model(in_features=4), _data(features=5), [FunctionCheck("ok", _ok)])


def test_probe_rejects_a_model_with_fewer_outputs_than_classes() -> None:
    with pytest.raises(SpecError, match="outputs 2 logits but the data mem has 3 classes"):
        audit(_model(classes=2), _data(classes=3), [FunctionCheck("ok", _ok)])


def test_eps_beyond_the_domain_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="exceeds the linf diameter 1 of the input domain"):
        resolve_threat(_model(), _data(), eps=(1.5,))


def test_report_records_seed_versions_and_durations() -> None:
    report = audit(_model(), _data(), [FunctionCheck("ok", _ok, needs_data=True)], seed=7)
    assert report.seed == 7
    assert report.environment["versions"]["torch"] == torch.__version__
    assert report.environment["torch_threads"] >= 1
    assert report.checks[0].duration_s > 0
    assert report.data is not None and report.data["records"] == 30

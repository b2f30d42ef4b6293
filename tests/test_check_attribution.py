"""The attribution check: methods by data kind, δ statistics, sanity verdicts, figures, ONNX."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeproof.checks import available_checks, get_check
from edgeproof.checks.attribution import AttributionCheck, methods_for_kind
from edgeproof.checks.base import AuditContext
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.models.train import spec_from_data
from edgeproof.runner import audit
from edgeproof.spec import InputSpec, ThreatModel

#: small budgets: every part runs, in a few seconds
FAST: dict[str, Any] = {
    "max_samples": 24,
    "sanity_samples": 8,
    "ig_steps": 8,
    "ig_max_steps": 32,
    "smoothgrad_samples": 8,
    "gradient_shap_samples": 8,
    "sanity_stages": 3,
    "label_epochs": 5,
    "label_samples": 48,
    "figure_samples": 2,
    "kernel_shap_samples": 64,
    "kernel_shap_max_samples": 8,
}


def _ctx(model: LoadedModel, data: Dataset) -> AuditContext:
    spec = model.spec if model.spec is not None else spec_from_data(data)
    return AuditContext(model=model, data=data, threat=ThreatModel(spec))


def _onnx_linear(spec: InputSpec, k: int) -> LoadedModel:
    """A Flatten → MatMul ONNX model (forward only)."""
    w = np.random.default_rng(0).normal(size=(spec.numel, k)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("MatMul", ["f", "W"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *spec.shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return LoadedModel(path=None, format="onnx", session=sess, spec=spec)


def test_digits_check_reports_delta_verdicts_and_shows_only_methods_that_pass(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    report = audit(digits_model, digits_test, [AttributionCheck(**FAST)])
    report.validate()  # the result fits the report schema
    (res,) = report.checks
    assert res.status == "ok", res.error
    names = {m.name for m in res.metrics}
    assert set(AttributionCheck.headline) <= names
    ig_delta = res.metric("ig_relative_delta_median")
    assert ig_delta.ci is not None and ig_delta.ci.low <= ig_delta.value <= ig_delta.ci.high
    assert res.metric("ig_converged_fraction").ci is not None
    tested = methods_for_kind("image")
    for name in tested:
        rho = res.metric(f"rank_correlation_abs@{name}")
        assert rho.ci is not None and -1.0 <= rho.value <= 1.0
    methods = {row[0]: row for row in res.tables[0].rows}
    assert set(methods) == set(tested) and all(row[1] == "ran" for row in methods.values())
    flagged = [n for n, row in methods.items() if row[5] == "flagged"]
    assert res.metric("methods_flagged").value == len(flagged)
    figures = {f.name for f in res.figures}
    for name in tested:
        # a method that fails the sanity tests is not shown as an explanation
        assert (f"class_means_{name}" in figures) == (name not in flagged)
    warnings = [f.message for f in res.findings if f.severity == "warning"]
    assert sum("is not shown as an explanation" in w for w in warnings) == len(flagged)
    sanity_rows = res.tables[1].rows
    assert {r[1] for r in sanity_rows} >= {"labels shuffled"}
    assert res.settings["label_train_accuracy"] is not None


def test_onnx_model_skips_gradient_methods_with_the_reason_and_still_occludes(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    model = _onnx_linear(digits_model.spec, 10)
    res = AttributionCheck(**FAST).run(_ctx(model, digits_test))
    methods = {row[0]: row for row in res.tables[0].rows}
    for name in ("integrated_gradients", "smoothgrad", "gradient_shap"):
        assert methods[name][1] == "skipped"
        assert methods[name][2] == "needs gradients, which an onnx model does not provide"
    assert methods["occlusion"][1] == "ran"
    assert {f.name for f in res.figures} == {"class_means_occlusion", "samples"}
    assert any("sanity tests need to re-initialise the weights" in f.message for f in res.findings)
    assert np.isnan(res.metric("methods_flagged").value)  # untested is unknown, not "0 flagged"


def test_time_series_check_adds_frequency_bands_in_hertz() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(64) / 50.0
    y = rng.integers(0, 2, size=40)
    freq = np.where(y == 0, 3.0, 12.0)
    x = np.sin(2 * np.pi * freq[:, None] * t)[:, None, :] + 0.1 * rng.normal(size=(40, 1, 64))
    data = Dataset(
        x=np.clip(x, -2, 2),
        y=y,
        classes=["slow", "fast"],
        name="mem",
        format="npz",
        kind="timeseries",
        domain=(-2.0, 2.0),
        metadata={"sample_rate_hz": 50.0},
    )
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv1d(1, 4, 7), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    model = from_module(module, spec=spec_from_data(data))
    res = AttributionCheck(**FAST, sanity=False, bands=4).run(_ctx(model, data))
    methods = {row[0]: row for row in res.tables[0].rows}
    assert set(methods) == set(methods_for_kind("timeseries"))
    assert methods["frequency_occlusion"][1] == "ran"
    bands = {f.name: f for f in res.figures}["class_means_frequency_occlusion"]
    assert "0–6.25 Hz" in bands.svg
    assert any("sanity=False" in f.message for f in res.findings)


def test_tabular_check_runs_kernel_shap_and_names_the_features() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((60, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 3] > 1.0).astype(np.int64)
    feats = ["age", "dose", "weight", "marker", "height", "score"]
    data = Dataset(
        x=x,
        y=y,
        classes=["no", "yes"],
        name="mem",
        format="csv",
        kind="tabular",
        domain=(0.0, 1.0),
        metadata={"features": feats},
    )
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    model = from_module(module, spec=spec_from_data(data))
    res = AttributionCheck(**FAST).run(_ctx(model, data))
    methods = {row[0]: row for row in res.tables[0].rows}
    assert methods["kernel_shap"][1] == "ran" and methods["feature_ablation"][1] == "ran"
    assert res.metric("kernel_shap_abs_delta_max").value < 1e-6  # efficiency is exact
    shown = [f for f in res.figures if f.name.startswith("class_means_")]
    assert shown and all("marker" in f.svg for f in shown)


def test_check_is_registered_with_its_headline_and_rejects_unknown_methods() -> None:
    assert "attribution" in available_checks()
    check = get_check("attribution", max_samples=10)
    assert isinstance(check, AttributionCheck)
    assert check.settings["max_samples"] == 10 and check.needs_data and not check.needs_gradients
    assert check.headline == ("methods_flagged", "ig_relative_delta_median")
    with pytest.raises(OptionError, match=r"^methods: unknown method 'lime'"):
        AttributionCheck(methods=["lime"])
    with pytest.raises(OptionError, match=r"^max_samples: 0 is too few"):
        AttributionCheck(max_samples=0)

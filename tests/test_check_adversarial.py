"""The adversarial check: curve, metrics, gradient-masking findings, bad input, and the Square
Attack on forward-only (ONNX) models."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeproof.checks import get_check
from edgeproof.checks.adversarial import AdversarialCheck, AttackData
from edgeproof.checks.base import AuditContext
from edgeproof.compress.onnx_export import export_onnx
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attacks.curve import RobustnessCurve
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.runner import audit
from edgeproof.runtime.ort import make_session
from edgeproof.spec import InputSpec, ThreatModel


def _ctx(model: LoadedModel, data: Dataset, eps: tuple[float, ...] = (0.03, 0.1)) -> AuditContext:
    assert model.spec is not None
    return AuditContext(model=model, data=data, threat=ThreatModel(model.spec, "linf", eps))


def onnx_linear_model(spec: InputSpec, k: int) -> LoadedModel:
    """A Flatten → MatMul ONNX model (forward only) built directly with onnx.helper."""
    d = spec.numel
    w = np.random.default_rng(0).normal(size=(d, k)).astype(np.float32)
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
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return LoadedModel(path=None, format="onnx", session=sess, spec=spec)


def test_adversarial_check_on_digits_reports_a_falling_curve_and_no_masking(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    res = AdversarialCheck().run(_ctx(digits_model, digits_test, (0.01, 0.03, 0.1)))
    robust = [res.metric(f"robust_accuracy@{e:g}") for e in (0.01, 0.03, 0.1)]
    clean = res.metric("clean_accuracy").value
    values = [m.value for m in robust]
    assert clean >= values[0] >= values[1] >= values[2]
    for m in robust:
        assert m.ci is not None and m.ci.low <= m.value <= m.ci.high and m.ci.method == "wilson"
    assert res.metric("robust_accuracy").value == values[-1]
    table = res.tables[0]
    assert table.rows[-1][0] == 1.0  # the sanity ε: the domain's diameter
    worst = table.rows[-1][table.columns.index("worst-case robust acc")]
    assert isinstance(worst, float) and worst <= 0.1
    assert all(f.severity == "info" for f in res.findings)
    assert "no sign of gradient masking" in res.findings[-1].message
    mins = res.metric("median_minimal_eps")
    assert 0 < mins.value < 1 and mins.ci is not None
    assert res.figures[0].svg.startswith("<svg")


class _Saturated(nn.Module):
    """Logits × 1e4: the softmax is exactly one-hot in float32, so input gradients vanish."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x) * 1e4
        return out


def test_gradient_masking_model_gets_the_chance_level_warning(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    masked = from_module(_Saturated(copy.deepcopy(digits_model.module)), digits_model.spec)
    check = AdversarialCheck(
        attacks=("fgsm", "pgd"), pgd_random_start=False, bisection_steps=0, max_samples=120
    )
    res = check.run(_ctx(masked, digits_test))
    warnings = [f for f in res.findings if f.severity == "warning"]
    assert len(warnings) == 1
    assert "any input in the domain is reachable" in warnings[0].message
    assert "gradient masking" in warnings[0].message


def _attack_data(k: int) -> AttackData:
    return AttackData(
        model=nn.Identity(),
        x=torch.zeros(1),
        y=torch.zeros(1),
        index=np.arange(1),
        num_classes=k,
        norm="linf",
        domain=(0.0, 1.0),
        diameter=1.0,
    )


def test_sanity_findings_flag_rising_accuracy_and_pgd_weaker_than_fgsm() -> None:
    n = 100
    clean = np.ones(n, dtype=bool)
    fooled = np.zeros((2, 3, n), dtype=bool)  # attacks (fgsm, pgd) × ε (0.1, 0.2, 1.0)
    fooled[0, 0, :40] = True  # FGSM fools 40 at ε=0.1 ...
    fooled[1, 0, :10] = True  # ... PGD only 10: PGD weaker than FGSM
    fooled[0, 1, :20] = True  # at ε=0.2 both fool only 20: robust accuracy rises 0.6 → 0.8
    fooled[1, 1, :20] = True
    fooled[:, 2, :] = True
    curve = RobustnessCurve("linf", (0.1, 0.2, 1.0), ("fgsm", "pgd"), clean, fooled)
    findings = AdversarialCheck()._sanity(curve, _attack_data(10), (0.1, 0.2, 1.0))
    messages = [f.message for f in findings if f.severity == "warning"]
    assert len(messages) == 2
    assert messages[0].startswith("robust accuracy increases with ε (60/100 robust at ε=0.1, 80")
    assert messages[1].startswith("PGD is weaker than FGSM at ε=0.1")
    assert "30 samples fooled by FGSM but not PGD" in messages[1]


def test_adversarial_check_rejects_data_outside_the_declared_domain(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    wide = copy.copy(digits_test)
    wide.x = digits_test.x * 2.0
    with pytest.raises(
        SpecError,
        match=r"of the input values lie outside the input domain \[0, 1\].*the data span "
        r"\[0, 2\]; rescale the data into \[0, 1\] \(e\.g\. multiply by 0\.5\)",
    ):
        AdversarialCheck().run(_ctx(digits_model, wide))


def test_adversarial_check_rejects_a_model_whose_output_is_not_logits_of_the_classes(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    torch.manual_seed(0)
    five = from_module(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).eval(), digits_model.spec)
    with pytest.raises(
        SpecError,
        match=r"outputs of shape \[360, 5\], but logits of the 10 "
        r"declared classes must have shape \[batch, 10\]",
    ):
        AdversarialCheck().run(_ctx(five, digits_test))


def test_onnx_model_gets_square_and_skips_only_the_gradient_checks_with_the_reason(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    model = onnx_linear_model(digits_model.spec, 10)
    adversarial = AdversarialCheck(square_queries=30, bisection_steps=2, max_samples=60)
    report = audit(
        model,
        digits_test,
        [adversarial, "fisher", "corruption"],
        threat=ThreatModel(digits_model.spec, "linf", (0.03,)),
    )
    by_name = {r.check: r for r in report.checks}
    assert by_name["fisher"].status == "skipped"
    assert by_name["fisher"].skip_reason == "needs gradients, which an onnx model does not provide"
    adv = by_name["adversarial"]
    assert adv.status == "ok"
    assert adv.settings["attacks_run"] == ["square"]
    why = "needs gradients, which an onnx model does not provide"
    assert adv.settings["attacks_not_run"] == {"fgsm": why, "pgd": why, "apgd": why}
    assert adv.findings[0].message.startswith(
        "forward-only model: ran Square(n_queries=30, p_init=0.8, n_restarts=1, loss='margin')"
    )
    assert "fgsm, pgd, apgd need gradients" in adv.findings[0].message
    assert "no gradients: score-based attack only" in adv.summary
    assert "Square succeeded" in adv.metric("median_minimal_eps").description
    assert by_name["corruption"].status == "ok"
    assert by_name["corruption"].tables[0].rows


def test_adversarial_check_is_skipped_without_a_forward_pass_or_without_data(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    weights = LoadedModel(
        path=None, format="weights-only", weights=dict(digits_model.weights), spec=digits_model.spec
    )
    threat = ThreatModel(digits_model.spec, "linf", (0.03,))
    no_forward = audit(weights, digits_test, ["adversarial"], threat=threat).checks[0]
    assert no_forward.status == "skipped"
    assert no_forward.skip_reason is not None and "needs a runnable model" in no_forward.skip_reason
    no_data = audit(digits_model, None, ["adversarial"], threat=threat).checks[0]
    assert no_data.status == "skipped" and no_data.skip_reason == "needs labelled data (pass data)"


@pytest.fixture(scope="module")
def digits_onnx(digits_model: LoadedModel) -> LoadedModel:
    """The digits LeNet-5 exported to ONNX, loaded as a forward-only model."""
    assert digits_model.module is not None and digits_model.spec is not None
    proto = export_onnx(copy.deepcopy(digits_model.module), digits_model.spec.shape)
    return LoadedModel(
        path=None, format="onnx", session=make_session(proto), spec=digits_model.spec
    )


def test_square_on_the_onnx_export_gives_the_robust_accuracy_of_the_pytorch_model(
    digits_model: LoadedModel, digits_onnx: LoadedModel, digits_test: Dataset
) -> None:
    def check(attacks: tuple[str, ...]) -> AdversarialCheck:
        return AdversarialCheck(
            attacks=attacks, square_queries=150, bisection_steps=0, max_samples=150
        )

    on_onnx = check(("fgsm", "pgd", "apgd")).run(_ctx(digits_onnx, digits_test, (0.05, 0.1)))
    on_torch = check(("square",)).run(_ctx(digits_model, digits_test, (0.05, 0.1)))
    assert on_onnx.settings["attacks_run"] == ["square"] and "attacks_run" not in on_torch.settings
    for name in ("clean_accuracy", "robust_accuracy@0.05", "robust_accuracy@0.1"):
        a, b = on_onnx.metric(name), on_torch.metric(name)
        assert abs(a.value - b.value) <= 2 / 150  # float32 rounding may flip a step or two
        assert a.ci is not None and a.ci.low <= b.value <= a.ci.high
    clean = on_onnx.metric("clean_accuracy").value
    assert clean > on_onnx.metric("robust_accuracy@0.1").value  # the attack does something
    queries = on_onnx.metric("square_mean_queries")
    assert queries.unit == "queries" and 1 <= queries.value <= 150 and queries.ci is not None
    table = on_onnx.tables[0]
    assert table.columns[1] == "square robust acc" and table.columns[-1].startswith("square mean")
    worst = table.rows[-1][table.columns.index("worst-case robust acc")]
    assert isinstance(worst, float) and worst <= 0.1
    assert "no sign of a failing attack" in on_onnx.findings[-1].message


def test_square_next_to_gradient_attacks_flags_gradient_masking(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    masked = from_module(_Saturated(copy.deepcopy(digits_model.module)), digits_model.spec)
    check = AdversarialCheck(
        attacks=("fgsm", "pgd", "square"),
        pgd_random_start=False,
        square_queries=100,
        bisection_steps=0,
        max_samples=80,
    )
    res = check.run(_ctx(masked, digits_test, (0.1,)))
    warnings = [f.message for f in res.findings if f.severity == "warning"]
    assert any(
        m.startswith("square (gradient-free) fooled") and "gradient masking" in m for m in warnings
    )
    # with Square in the worst case, accuracy reaches chance at the diameter: no chance warning
    assert not any("any input in the domain is reachable" in m for m in warnings)


def test_square_settings_errors_name_the_check_setting() -> None:
    with pytest.raises(OptionError, match=r"^square_queries: 0 is not a positive number"):
        AdversarialCheck(square_queries=0)
    with pytest.raises(OptionError, match=r"^square_p_init: 2\.0 is outside \(0, 1\]"):
        AdversarialCheck(square_p_init=2.0)


def test_adversarial_check_is_registered_with_its_settings() -> None:
    check = get_check("adversarial", pgd_steps=3, attacks=["pgd", "square"], square_queries=50)
    assert isinstance(check, AdversarialCheck)
    assert check.settings["pgd_steps"] == 3 and check.settings["square_queries"] == 50
    # forward-only models get Square: a forward pass and data are needed, gradients are not
    assert check.needs_data and check.needs_forward and not check.needs_gradients
    assert [a.name for a in check.attacks] == ["pgd", "square"]

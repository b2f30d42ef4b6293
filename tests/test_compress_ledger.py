"""The trust re-audit of compression candidates and the trust columns of the ledger table."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgeproof.checks import get_check
from edgeproof.checks.base import AuditContext
from edgeproof.compress.ledger import TRUST_COLUMNS, Ledger
from edgeproof.compress.quantize import QuantConfig, quantize
from edgeproof.compress.reaudit import StraightThrough, reaudit, straight_through
from edgeproof.compress.search import Budget, default_recipes, search
from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.models.train import accuracy, spec_from_data, train_model
from edgeproof.models.zoo import build_model
from edgeproof.runner import resolve_threat
from edgeproof.spec import ThreatModel


@pytest.fixture(scope="module")
def int8_sim(digits_model: LoadedModel, digits_train: Dataset) -> torch.nn.Module:
    assert digits_model.module is not None and digits_model.spec is not None
    q = quantize(
        digits_model.module, digits_model.spec.shape, digits_train.x[:128], QuantConfig("int8")
    )
    return q.sim


def _input_grad(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    module(x).logsumexp(1).sum().backward()
    assert x.grad is not None
    return x.grad


def test_straight_through_keeps_the_forward_and_unmasks_the_input_gradient(
    int8_sim: torch.nn.Module, digits_test: Dataset
) -> None:
    ste, wrapped = straight_through(int8_sim)
    assert wrapped > 0
    assert any(isinstance(m, StraightThrough) for m in ste.modules())
    x = torch.from_numpy(digits_test.x[:32])
    with torch.no_grad():
        assert torch.equal(ste(x), int8_sim(x))
    # Rounding has zero gradient: the plain fake-quant simulation gives the attacker nothing.
    assert float(_input_grad(copy.deepcopy(int8_sim), x).abs().sum()) == 0.0
    assert float(_input_grad(ste, x).abs().sum()) > 0.0


def test_straight_through_leaves_a_float_model_alone(digits_model: LoadedModel) -> None:
    assert digits_model.module is not None
    same, wrapped = straight_through(digits_model.module)
    assert same is digits_model.module and wrapped == 0


def test_reaudit_gives_ece_robust_accuracy_and_dnl_ar10_for_an_int8_candidate(
    int8_sim: torch.nn.Module, digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    audit = digits_test.subset(np.arange(100))
    result = reaudit(
        int8_sim,
        resolve_threat(digits_model, audit),
        audit,
        checks=("calibration", "adversarial", "bitflip", "certify-not-registered"),
    )
    metrics, notes = result.metrics, result.notes
    by_name = {m.name: m.value for m in metrics}
    for col in TRUST_COLUMNS[:3]:
        assert col.metric in by_name, col.metric
    clean = by_name["adversarial.clean_accuracy"]
    # With the straight-through estimator the attack finds adversarial inputs at ε = 0.1.
    assert by_name["adversarial.robust_accuracy"] < clean - 0.2
    assert 0.0 <= by_name["calibration.ece"] <= 1.0
    assert any("straight-through" in n for n in notes)
    assert "not re-audited (check not registered): certify-not-registered" in notes


def test_a_refusing_check_is_a_failed_check_of_the_candidate_and_the_others_still_run(
    int8_sim: torch.nn.Module, digits_model: LoadedModel, digits_test: Dataset
) -> None:
    audit = digits_test.subset(np.arange(50))
    result = reaudit(
        int8_sim,
        resolve_threat(digits_model, audit),
        audit,
        checks=("bitflip", "calibration"),
        settings={"bitflip": {"max_k": 0}, "calibration": {"resamples": 20}},
    )
    [failed] = result.errored
    assert failed.check == "bitflip" and failed.message is not None
    assert failed.message.startswith("bitflip.max_k") and not failed.crashed
    assert [c.status for c in result.checks] == ["error", "ok"]
    assert any(m.name == "calibration.ece" for m in result.metrics)


def test_batchnorm_models_are_reaudited_with_the_exported_folded_weights(
    digits_test: Dataset,
) -> None:
    torch.manual_seed(0)
    module = build_model("resnet8", (1, 8, 8), 10).eval()
    spec = spec_from_data(digits_test)
    audit = digits_test.subset(np.arange(40))
    result = reaudit(
        module,
        ThreatModel(spec, eps=(0.1,)),
        audit,
        checks=("calibration",),
        settings={"calibration": {"resamples": 20}},
    )
    metrics = result.metrics
    assert (
        "trust re-audit on the BatchNorm-folded module (the weights the ONNX holds)" in result.notes
    )
    direct = get_check("calibration", resamples=20).run(
        AuditContext(from_module(module, spec), audit, ThreatModel(spec))
    )
    ece = next(m.value for m in direct.metrics if m.name == "ece")
    assert next(m.value for m in metrics if m.name == "calibration.ece") == pytest.approx(
        ece, abs=1e-5
    )


def test_ledger_table_shows_the_trust_columns_with_their_method(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    recipes = [r for r in default_recipes() if r.name == "int8-percentile"]
    ledger: Ledger = search(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_train.subset(np.arange(128)),
        digits_test.subset(np.arange(120)),
        Budget(time_budget_s=60),
        recipes=recipes,
        checks=("calibration", "adversarial", "bitflip"),
    )
    table = ledger.table()
    for col in ("ece", "robust_acc", "dnl_ar10_pct"):
        assert col in table.columns
    idx = {c: i for i, c in enumerate(table.columns)}
    assert [r[idx["candidate"]] for r in table.rows] == ["fp32", "int8-percentile"]
    for row in table.rows:
        assert row[idx["robust_acc"]] is not None and row[idx["ece"]] is not None
    assert "straight-through estimator" in table.description
    assert "verified_acc" not in table.columns  # no certify check registered in this run


def test_cnn_lstm_learns_the_synthetic_ecg_rhythms() -> None:
    train = load_data("builtin:synth-ecg/train")
    test = load_data("builtin:synth-ecg")
    model = train_model("zoo:cnn-lstm", train, epochs=10, seed=0)
    # Logistic regression on FFT magnitudes reaches ~0.92; the old one-pool CNN-LSTM ~0.57.
    assert accuracy(model, test) >= 0.85


def test_non_contiguous_weights_such_as_low_rank_factors_still_get_a_bitflip_audit(
    digits_test: Dataset,
) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    module[1].weight = torch.nn.Parameter(torch.randn(64, 10).t())  # a transposed view
    spec = spec_from_data(digits_test)
    result = reaudit(
        module,
        ThreatModel(spec, eps=(0.1,)),
        digits_test.subset(np.arange(40)),
        checks=("bitflip",),
        settings={"bitflip": {"max_k": 2, "random_seeds": 1, "budgets": ()}},
    )
    assert [c.status for c in result.checks] == ["ok"], result.checks
    assert any(m.name == "bitflip.dnl_ar_2" for m in result.metrics)
    assert not module[1].weight.is_contiguous()  # the candidate itself is untouched


def test_reaudit_measures_the_hessian_top_eigenvalue_and_nc1_within_its_budget(
    int8_sim: torch.nn.Module, digits_model: LoadedModel, digits_test: Dataset
) -> None:
    """The ledger's flatness columns: λ₁ and NC1 only (no trace, TIC or conflict), the same
    numbers the generalization check gives with the re-audit's settings, for fp32 and int8."""
    from edgeproof.compress.reaudit import REAUDIT_SETTINGS

    assert digits_model.module is not None and digits_model.spec is not None
    audit = digits_test.subset(np.arange(100))
    threat = resolve_threat(digits_model, audit)
    fp32 = reaudit(digits_model.module, threat, audit, checks=("generalization",))
    int8 = reaudit(int8_sim, threat, audit, checks=("generalization",))
    for result in (fp32, int8):
        assert [c.status for c in result.checks] == ["ok"], result.checks
        by_name = {m.name: m for m in result.metrics}
        lam = by_name["generalization.top_eigenvalue"]
        assert lam.value > 0 and lam.settings["iterations"] <= 30
        assert 0 < by_name["generalization.nc1"].value < 10
        assert "generalization.hessian_trace" not in by_name
        assert "generalization.tic" not in by_name
    settings = REAUDIT_SETTINGS["generalization"]
    direct = get_check("generalization", **settings).run(
        AuditContext(from_module(digits_model.module, digits_model.spec), audit, threat)
    )
    fp32_values = {m.name: m.value for m in fp32.metrics}
    assert fp32_values["generalization.top_eigenvalue"] == pytest.approx(
        direct.metric("top_eigenvalue").value, rel=1e-6
    )
    assert fp32_values["generalization.nc1"] == pytest.approx(direct.metric("nc1").value, rel=1e-9)
    # int8 moves the weights onto a grid: λ₁ changes, but stays of the same order
    int8_lam = next(m.value for m in int8.metrics if m.name == "generalization.top_eigenvalue")
    assert 0.2 < int8_lam / fp32_values["generalization.top_eigenvalue"] < 5


def test_ledger_table_has_hessian_and_nc1_columns_for_every_candidate(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    recipes = [r for r in default_recipes() if r.name == "int8-percentile"]
    ledger: Ledger = search(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_train.subset(np.arange(128)),
        digits_test.subset(np.arange(120)),
        Budget(time_budget_s=60),
        recipes=recipes,
        checks=("generalization",),
    )
    table = ledger.table()
    idx = {c: i for i, c in enumerate(table.columns)}
    assert "hessian_top_eig" in idx and "nc1" in idx
    for row in table.rows:
        lam, nc1 = row[idx["hessian_top_eig"]], row[idx["nc1"]]
        assert isinstance(lam, float) and isinstance(nc1, float)
        assert lam > 0 and nc1 > 0
    assert "Hessian of the mean cross-entropy" in table.description
    assert "ece" not in idx  # only the columns whose check ran

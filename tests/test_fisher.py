"""Exact λ_max of the input-space Fisher; Spearman interval; the fisher check."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from edgeproof.checks.base import AuditContext
from edgeproof.checks.fisher import FisherCheck
from edgeproof.data.dataset import Dataset
from edgeproof.methods.fisher import (
    fisher_lambda_max,
    fisher_matrix_lambda_max,
    input_jacobian,
    spearman_with_ci,
)
from edgeproof.models.loaded import LoadedModel
from edgeproof.spec import ThreatModel


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).double().eval()
    )


def _brute_force_lambda_max(model: nn.Module, x: torch.Tensor) -> float:
    """Full d×d Fisher from the full Jacobian, then a dense eigendecomposition."""
    jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0))[0], x)
    j = jac.reshape(jac.shape[0], -1)  # K × d
    p = torch.softmax(model(x.unsqueeze(0))[0], dim=0)
    fisher = j.T @ (torch.diag(p) - torch.outer(p, p)) @ j  # d × d
    return float(np.linalg.eigvalsh(fisher.detach().numpy())[-1])


def test_exact_lambda_max_matches_brute_force_eigendecomposition_of_the_full_fisher() -> None:
    model = _small_model()
    x = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    ours = fisher_lambda_max(model, x, batch_size=3)
    brute = np.array([_brute_force_lambda_max(model, xi) for xi in x])
    np.testing.assert_allclose(ours, brute, rtol=1e-5, atol=1e-12)
    assert np.all(brute > 0)


def test_random_rayleigh_quotients_underestimate_the_exact_lambda_max() -> None:
    model = _small_model()
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logits, jac = input_jacobian(model, x)
    exact = fisher_matrix_lambda_max(logits, jac).numpy()
    p = torch.softmax(logits, 1)
    a = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    v = torch.randn(6, 12, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    jv = jac @ v  # (N, K, 20)
    rayleigh = torch.einsum("nkr,nkl,nlr->nr", jv, a, jv).amax(dim=1).numpy()
    assert np.all(rayleigh <= exact * (1 + 1e-9))
    assert np.all(rayleigh < 0.99 * exact)


def test_spearman_interval_contains_rho_and_rho_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = -a + rng.normal(size=200)
    corr = spearman_with_ci(a, b)
    assert corr.rho == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
    assert corr.ci.low < corr.rho < corr.ci.high < 0
    assert corr.n == 200
    assert np.isnan(spearman_with_ci(np.ones(10), b[:10]).rho)


def test_fisher_check_on_digits_reports_a_negative_correlation_with_minimal_eps(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    ctx = AuditContext(
        model=digits_model,
        data=digits_test,
        threat=ThreatModel(digits_model.spec, "linf", (0.03, 0.1)),
    )
    res = FisherCheck(max_samples=150, bisection_steps=6).run(ctx)
    rho = res.metric("spearman_lambda_max_vs_minimal_eps")
    assert rho.ci is not None and rho.ci.low <= rho.value <= rho.ci.high
    assert rho.value < 0 and rho.ci.high < 0  # sensitive samples break first
    lam = res.metric("median_lambda_max")
    assert lam.value > 0 and lam.ci is not None
    assert res.figures and res.figures[0].svg.startswith("<svg")
    assert res.tables[0].name == "lambda_max_quantiles"


def test_fisher_check_is_skipped_for_a_model_without_gradients(digits_test: Dataset) -> None:
    from edgeproof.models.train import spec_from_data

    spec = spec_from_data(digits_test)
    onnx_like = LoadedModel(path=None, format="onnx", session=object(), spec=spec)
    ctx = AuditContext(model=onnx_like, data=digits_test, threat=ThreatModel(spec))
    assert FisherCheck().skip_reason(ctx) == "needs gradients, which an onnx model does not provide"

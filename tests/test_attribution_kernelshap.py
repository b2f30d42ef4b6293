"""KernelSHAP: exact Shapley values by enumeration, and agreement with SHAP 0.51's
KernelExplainer (shap is not in the test extra: its numba/llvmlite dependencies add ~210 MB and a
~20 s import for one comparison; the test skips without it, docs/benchmarks/attribution.md
records the comparison)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.methods.attribution import KernelShap
from edgeproof.methods.attribution.kernel_shap import kernel_coalitions, solve_constrained


def _model(m: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(m, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def _brute_force_shapley(
    model: nn.Module, x: torch.Tensor, background: torch.Tensor, target: int
) -> np.ndarray:
    """φ_j = Σ_S |S|!(M−|S|−1)!/M! (v(S∪j) − v(S)), v(S) = mean_b f(x_S, b_S̄)[target]."""
    m = x.numel()

    def v(members: tuple[int, ...]) -> float:
        rows = background.clone()
        rows[:, list(members)] = x[list(members)]
        with torch.no_grad():
            return float(model(rows)[:, target].double().mean())

    phi = np.zeros(m)
    for j in range(m):
        others = [i for i in range(m) if i != j]
        for size in range(m):
            w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for s in itertools.combinations(others, size):
                phi[j] += w * (v((*s, j)) - v(s))
    return phi


def test_kernel_shap_with_every_coalition_is_the_exact_shapley_value() -> None:
    m = 5
    model = _model(m)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, m, generator=g)
    background = torch.randn(3, m, generator=g)
    att = KernelShap().attribute(model, x, baseline=background, target=2)
    assert att.converged is not None and bool(att.converged.all())
    for i in range(2):
        exact = _brute_force_shapley(model, x[i], background, 2)
        np.testing.assert_allclose(att.values[i].numpy(), exact, atol=1e-6, rtol=1e-6)
    assert att.delta is not None and float(att.delta.abs().max()) < 1e-9


def test_sampled_coalitions_keep_efficiency_exactly_and_weights_sum_to_the_kernel_mass() -> None:
    co = kernel_coalitions(12, 300, np.random.default_rng(0))
    assert not co.exact and co.z.shape == (300, 12)
    assert float(co.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    # every sampled coalition is proper (neither empty nor full)
    sizes = co.z.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 11
    phi = solve_constrained(co.z, co.weights, np.random.default_rng(1).normal(size=300), 2.5)
    assert float(phi.sum()) == pytest.approx(2.5, abs=1e-12)


def test_grouped_players_share_their_value_and_delta_is_over_groups() -> None:
    m = 6
    model = _model(m)
    x = torch.randn(3, m, generator=torch.Generator().manual_seed(2))
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    att = KernelShap(groups=groups).attribute(model, x, baseline=torch.zeros(m))
    vals = att.values
    assert torch.equal(vals[:, 0], vals[:, 1]) and torch.equal(vals[:, 4], vals[:, 5])
    assert att.delta is not None and att.reference_score is not None
    per_group = vals[:, ::2].sum(dim=1)
    torch.testing.assert_close(per_group, att.score - att.reference_score)


@pytest.mark.slow  # importing shap compiles numba code (~20 s on this machine)
def test_kernel_shap_agrees_with_shap_kernel_explainer() -> None:
    shap = pytest.importorskip("shap", reason="shap==0.51.0 is not installed (not a test extra)")
    m, target, budget, repeats = 12, 1, 300, 20
    model = _model(m)

    def f(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.as_tensor(a, dtype=torch.float32)).double().numpy()
        return out

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, m, generator=g)
    background = torch.randn(5, m, generator=g)

    def shap_values(nsamples: int, seed: int) -> np.ndarray:
        np.random.seed(seed)  # KernelExplainer draws from numpy's global generator
        explainer = shap.KernelExplainer(f, background.numpy(), link="identity")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = explainer.shap_values(x.numpy(), nsamples=nsamples, l1_reg=False, silent=True)
        return np.asarray(v)[..., target]

    # with every coalition both are the exact Shapley values
    exact = KernelShap(n_samples=2**m).attribute(model, x, baseline=background, target=target)
    np.testing.assert_allclose(exact.values.numpy(), shap_values(2**m, 0), atol=1e-6, rtol=0)
    # sampled: the same estimator, so the same mean and spread over seeds
    theirs = np.stack([shap_values(budget, r) for r in range(repeats)])
    ours = np.stack(
        [
            KernelShap(n_samples=budget)
            .attribute(
                model, x, baseline=background, target=target, generator=np.random.default_rng(r)
            )
            .values.numpy()
            for r in range(repeats)
        ]
    )
    se = np.sqrt(theirs.var(axis=0) / repeats + ours.var(axis=0) / repeats)
    assert np.all(np.abs(ours.mean(axis=0) - theirs.mean(axis=0)) <= 4 * se + 1e-9)
    ratio = ours.std(axis=0) / theirs.std(axis=0)
    assert ratio.min() > 1 / 3 and ratio.max() < 3
    # and both estimate the exact values without bias
    truth = exact.values.numpy()
    assert np.all(np.abs(ours.mean(axis=0) - truth) <= 4 * ours.std(axis=0) / np.sqrt(repeats))

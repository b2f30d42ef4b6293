"""Hessian of the data loss: products, Lanczos, Hutchinson with CI, SLQ, TIC, gradient conflict,
the generalization check and its PyHessian parity."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeproof.checks import get_check
from edgeproof.checks.base import AuditContext
from edgeproof.checks.generalization import GeneralizationCheck
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.methods.flatness import Flatness, FlatnessBudget, flatness, subsample
from edgeproof.methods.hessian import (
    DenseOperator,
    HessianOperator,
    exact_hessian,
    hutchinson_trace,
    slq_density,
    top_eigenvalues,
)
from edgeproof.methods.tic import (
    conjugate_gradient,
    gradient_conflict,
    per_sample_gradients,
    tic,
)
from edgeproof.models.loaded import LoadedModel
from edgeproof.spec import ThreatModel


def _mlp_683(dtype: torch.dtype = torch.float64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The 6-8-3 tanh MLP of the PyHessian trace report, on seeded random data (83 parameters)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 6, generator=g).to(dtype)  # float32 draws: the same data in every dtype
    y = torch.randint(0, 3, (100,), generator=g)
    return model, x, y


@pytest.fixture(scope="module")
def mlp_hessian() -> torch.Tensor:
    model, x, y = _mlp_683()
    return exact_hessian(model, x, y)


# ---------------------------------------------------------------------------------------------
# Products and the exact Hessian


@pytest.mark.parametrize("batch_size, retain", [(256, None), (32, False), (32, True)])
def test_hessian_vector_products_equal_the_exact_hessian_times_the_vector(
    mlp_hessian: torch.Tensor, batch_size: int, retain: bool | None
) -> None:
    model, x, y = _mlp_683()
    v = torch.randn(83, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with HessianOperator(model, x, y, batch_size=batch_size, retain_graph=retain) as op:
        assert op.size == 83
        hv = op.matvec(v)
        loss = op.loss
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-12)
    torch.testing.assert_close(hv, mlp_hessian @ v, rtol=1e-10, atol=1e-12)


def test_exact_hessian_matches_central_differences_of_the_mean_loss_gradient(
    mlp_hessian: torch.Tensor,
) -> None:
    model, x, y = _mlp_683()
    params = list(model.parameters())
    theta = torch.cat([p.detach().reshape(-1) for p in params])

    def grad_at(flat: torch.Tensor) -> torch.Tensor:
        torch.nn.utils.vector_to_parameters(flat, params)
        loss = F.cross_entropy(model(x), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    h = 1e-5
    for i in (0, 17, 50, 82):
        e = torch.zeros_like(theta)
        e[i] = h
        fd = (grad_at(theta + e) - grad_at(theta - e)) / (2 * h)
        torch.testing.assert_close(fd, mlp_hessian[:, i], rtol=1e-5, atol=1e-8)
    torch.nn.utils.vector_to_parameters(theta, params)
    torch.testing.assert_close(mlp_hessian, mlp_hessian.T)


def test_the_operator_restores_requires_grad_and_training_mode() -> None:
    model, x, y = _mlp_683()
    model.train()
    params = list(model.parameters())
    first, last = params[0], params[-1]
    first.requires_grad_(False)
    with HessianOperator(model, x, y) as op:
        assert not model.training
        assert all(p.requires_grad for p in op.params)
    assert model.training
    assert not first.requires_grad and last.requires_grad


# ---------------------------------------------------------------------------------------------
# Lanczos


def test_top_k_eigenvalues_equal_the_exact_spectrum_to_1e_4(mlp_hessian: torch.Tensor) -> None:
    exact = np.linalg.eigvalsh(mlp_hessian.numpy())[::-1]
    model, x, y = _mlp_683()
    with HessianOperator(model, x, y) as op:
        top = top_eigenvalues(op, k=3, tol=1e-6)
    assert top.converged and top.iterations < 83
    np.testing.assert_allclose(top.values, exact[:3], atol=1e-4)
    # Ritz vectors are orthonormal eigenvectors
    torch.testing.assert_close(top.vectors @ top.vectors.T, torch.eye(3, dtype=torch.float64))
    for val, vec, res in zip(top.values, top.vectors, top.residuals):  # the residual is true
        assert float((mlp_hessian @ vec - val * vec).norm()) == pytest.approx(res, rel=1e-4)


def test_lanczos_residual_bounds_the_eigenvalue_error_when_stopped_early(
    mlp_hessian: torch.Tensor,
) -> None:
    exact = np.linalg.eigvalsh(mlp_hessian.numpy())
    op = DenseOperator(mlp_hessian)
    top = top_eigenvalues(op, k=2, tol=1e-12, max_iter=6)
    assert not top.converged and top.iterations == 6
    for theta, res in zip(top.values, top.residuals):
        assert np.min(np.abs(exact - theta)) <= res + 1e-12
    assert op.products == 6


@pytest.mark.parametrize("second", [0.5, 0.95, 0.999])
def test_lanczos_stopping_rule_bounds_the_eigenvalue_error_by_tol(second: float) -> None:
    """With a top gap from wide to nearly degenerate: at the stop an eigenvalue lies within
    tol·θ of θ (the residual bound, always), and that eigenvalue is λ₁ in almost every run (a
    start vector nearly orthogonal to λ₁'s eigenvector can stop on λ₂ first: Krylov methods
    cannot detect an eigenvalue they have not seen)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    spectrum = np.concatenate([[1.0, second], rng.uniform(-0.3, 0.45, 298)])
    a = torch.from_numpy(q @ np.diag(spectrum) @ q.T)
    found = 0
    for seed in range(10):
        for tol in (1e-2, 1e-3, 1e-5):
            top = top_eigenvalues(DenseOperator(a), k=1, tol=tol, max_iter=300, seed=seed)
            theta, r = top.values[0], top.residuals[0]
            assert top.converged and r <= tol * theta
            assert np.min(np.abs(spectrum - theta)) <= r
            found += abs(theta - 1.0) <= tol * theta
    assert found >= 29


def test_lanczos_on_a_matrix_with_few_distinct_eigenvalues_stops_exactly() -> None:
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(0)).double())
    a = q @ torch.diag(torch.tensor([5.0, 3.0] + [1.0] * 38, dtype=torch.float64)) @ q.T
    top = top_eigenvalues(DenseOperator(a), k=2, tol=1e-9)
    assert top.converged and top.iterations <= 4  # the Krylov space is invariant after 3 steps
    np.testing.assert_allclose(top.values, [5.0, 3.0], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Hutchinson


@pytest.mark.parametrize("deflated", [False, True])
def test_hutchinson_interval_covers_the_exact_trace_at_about_the_nominal_rate(
    mlp_hessian: torch.Tensor, deflated: bool
) -> None:
    exact = float(mlp_hessian.trace())
    op = DenseOperator(mlp_hessian)
    v = top_eigenvalues(op, k=3, tol=1e-8).vectors if deflated else None
    runs = 200
    hits, probes = 0, []
    for seed in range(runs):
        est = hutchinson_trace(op, tol=0.3, min_probes=10, max_probes=5000, seed=seed, deflate=v)
        assert est.converged
        assert est.half_width <= 0.3 * abs(est.value) + 1e-12
        hits += est.ci.low <= exact <= est.ci.high
        probes.append(est.probes)
    coverage = hits / runs
    assert 0.88 <= coverage <= 0.99, coverage
    assert min(probes) >= 10


def test_deflation_by_the_top_eigenvectors_needs_fewer_probes(mlp_hessian: torch.Tensor) -> None:
    op = DenseOperator(mlp_hessian)
    v = top_eigenvalues(op, k=3, tol=1e-8).vectors
    plain = [hutchinson_trace(op, tol=0.2, max_probes=5000, seed=s).probes for s in range(10)]
    defl = [
        hutchinson_trace(op, tol=0.2, max_probes=5000, seed=s, deflate=v).probes for s in range(10)
    ]
    assert np.median(defl) < 0.7 * np.median(plain)


def test_hutchinson_through_the_model_covers_the_exact_trace(mlp_hessian: torch.Tensor) -> None:
    model, x, y = _mlp_683()
    with HessianOperator(model, x, y) as op:
        est = hutchinson_trace(op, tol=0.2, max_probes=3000, seed=0)
    assert est.converged and est.probes > 20  # far more than PyHessian's typical stop
    assert est.ci.low <= float(mlp_hessian.trace()) <= est.ci.high
    assert est.ci.method == "student-t" and est.ci.level == 0.95


def test_hutchinson_stops_at_max_probes_and_says_it_did_not_converge(
    mlp_hessian: torch.Tensor,
) -> None:
    est = hutchinson_trace(DenseOperator(mlp_hessian), tol=1e-6, min_probes=3, max_probes=12)
    assert est.probes == 12 and not est.converged


# ---------------------------------------------------------------------------------------------
# SLQ density


def test_slq_density_integrates_to_one(mlp_hessian: torch.Tensor) -> None:
    d = slq_density(DenseOperator(mlp_hessian), iterations=30, runs=3, seed=0)
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, rtol=1e-10)
    for sigma in (None, 0.02):
        t = d.grid(20000, sigma)
        assert np.trapezoid(d.density(t, sigma), t) == pytest.approx(1.0, abs=1e-6)


def test_slq_with_a_full_krylov_space_reproduces_the_spectral_measure_of_its_probe(
    mlp_hessian: torch.Tensor,
) -> None:
    """With P Lanczos steps the Gauss quadrature is exact: Σ τⱼθⱼᵏ = vᵀHᵏv for every k."""
    from edgeproof.methods.hessian import rademacher

    d = slq_density(DenseOperator(mlp_hessian), iterations=83, runs=1, seed=5)
    v = rademacher(83, torch.Generator().manual_seed(5))
    v = v / v.norm()
    for k in (1, 2, 3, 4):
        exact = float(v @ torch.linalg.matrix_power(mlp_hessian, k) @ v)
        assert d.moment(k) == pytest.approx(exact, rel=1e-8, abs=1e-12)


def test_slq_moments_match_the_exact_spectrum_moments(mlp_hessian: torch.Tensor) -> None:
    ev = np.linalg.eigvalsh(mlp_hessian.numpy())
    d = slq_density(DenseOperator(mlp_hessian), iterations=12, runs=150, seed=0)
    per_run = [np.sum(d.weights * d.nodes**k, axis=1) for k in (1, 2)]
    for k, samples in zip((1, 2), per_run):
        se = samples.std(ddof=1) / np.sqrt(samples.size)
        assert abs(samples.mean() - np.mean(ev**k)) < 4 * se
    # the broadened density has the same mean and σ² more variance
    sigma = 0.05
    t = d.grid(8000, sigma)
    phi = d.density(t, sigma)
    assert np.trapezoid(t * phi, t) == pytest.approx(d.moment(1), abs=1e-6)
    assert np.trapezoid(t * t * phi, t) == pytest.approx(d.moment(2) + sigma**2, abs=1e-6)
    # extremes: the outer Ritz values lie inside the spectrum and near its ends
    assert ev[0] - 1e-9 <= d.nodes.min() < ev[0] + 0.05
    assert ev[-1] - 0.05 < d.nodes.max() <= ev[-1] + 1e-9


# ---------------------------------------------------------------------------------------------
# TIC and gradient conflict


def _logistic() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    lin = nn.Linear(3, 4).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=g)
    return lin, x, y


def _hand_tic(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor, damping: float) -> float:
    """Multinomial logistic regression by hand (numpy): per-sample gradients
    ``[vec((p − e_y) xᵀ), p − e_y]`` and Hessian ``mean[A ⊗ x̃x̃ᵀ]`` with ``A = diag p − ppᵀ``."""
    w = lin.weight.detach().numpy()
    b = lin.bias.detach().numpy()
    xs, ys = x.numpy(), y.numpy()
    n, d = xs.shape
    k = w.shape[0]
    z = xs @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    size = k * d + k
    h = np.zeros((size, size))
    grads = np.zeros((n, size))
    for i in range(n):
        r = p[i] - np.eye(k)[ys[i]]
        grads[i] = np.concatenate([np.outer(r, xs[i]).ravel(), r])
        a = np.diag(p[i]) - np.outer(p[i], p[i])
        h[: k * d, : k * d] += np.kron(a, np.outer(xs[i], xs[i]))
        h[: k * d, k * d :] += np.kron(a, xs[i][:, None])
        h[k * d :, : k * d] += np.kron(a, xs[i][None, :])
        h[k * d :, k * d :] += a
    h /= n
    gc = grads - grads.mean(axis=0)
    c = gc.T @ gc / n
    return float(np.trace(np.linalg.solve(h + damping * np.eye(size), c)) / n)


def test_exact_tic_equals_a_hand_computation_on_logistic_regression() -> None:
    lin, x, y = _logistic()
    hand = _hand_tic(lin, x, y, 1e-2)
    est = tic(lin, x, y, damping=1e-2, method="exact")
    assert est.method == "exact" and est.positive_definite and est.samples == 40
    assert est.tic == pytest.approx(hand, rel=1e-9)
    assert est.complexity == pytest.approx(hand * 40, rel=1e-9)
    assert est.min_eigenvalue == pytest.approx(1e-2, rel=1e-6)  # softmax shift invariance


def test_stochastic_tic_interval_covers_the_exact_value() -> None:
    lin, x, y = _logistic()
    hand = _hand_tic(lin, x, y, 1e-2)
    est = tic(lin, x, y, damping=1e-2, method="stochastic", tol=0.1, max_probes=2000, cg_tol=1e-10)
    assert est.method == "stochastic" and est.converged and est.cg_unconverged == 0
    assert est.tic_ci is not None and est.tic_ci.low <= hand <= est.tic_ci.high
    assert est.ci is not None and est.ci.low == pytest.approx(est.tic_ci.low * 40)


def test_tic_is_undefined_when_the_damped_hessian_is_indefinite(mlp_hessian: torch.Tensor) -> None:
    model, x, y = _mlp_683()
    lmin = float(torch.linalg.eigvalsh(mlp_hessian)[0])
    assert lmin < -0.1  # random weights: not at a minimum
    exact = tic(model, x, y, damping=0.0, method="exact")
    assert not exact.positive_definite and np.isnan(exact.tic)
    stoch = tic(model, x, y, damping=0.0, method="stochastic", max_probes=20)
    assert not stoch.positive_definite and np.isnan(stoch.tic)
    ok = tic(model, x, y, damping=-lmin + 0.05, method="exact")
    assert ok.positive_definite and ok.tic > 0


def test_conjugate_gradient_solves_spd_systems_and_detects_indefinite_ones() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(20, 20, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(20, dtype=torch.float64)
    b = torch.randn(20, generator=g, dtype=torch.float64)
    sol = conjugate_gradient(lambda v: a @ v, b, tol=1e-12, max_iter=200)
    assert sol.converged and sol.positive_definite
    torch.testing.assert_close(sol.solution, torch.linalg.solve(a, b))
    bad = conjugate_gradient(lambda v: -a @ v, b)
    assert not bad.positive_definite


def test_per_sample_gradients_match_one_backward_pass_per_sample() -> None:
    model, x, y = _mlp_683()
    g = per_sample_gradients(model, x[:7], y[:7], batch_size=3)
    params = list(model.parameters())
    for i in range(7):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(g[i], ref)


def test_gradient_conflict_matrix_is_symmetric_with_unit_diagonal_and_matches_class_gradients() -> (
    None
):
    lin, x, y = _logistic()
    conf = gradient_conflict(lin, x, y, batch_size=7)
    k = len(conf.classes)
    assert conf.cosine.shape == (k, k)
    np.testing.assert_array_equal(conf.cosine, conf.cosine.T)
    np.testing.assert_array_equal(np.diag(conf.cosine), 1.0)
    assert np.all(np.abs(conf.cosine) <= 1.0)
    params = list(lin.parameters())
    ref = []
    for c in conf.classes:
        sel = y == c
        loss = F.cross_entropy(lin(x[sel]), y[sel])
        ref.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]))
    r = torch.nn.functional.normalize(torch.stack(ref), dim=1)
    np.testing.assert_allclose(conf.cosine, (r @ r.T).numpy(), atol=1e-12)
    assert sum(conf.counts) == 40
    _, _, worst = conf.most_conflicting(1)[0]
    assert worst == pytest.approx(float(conf.off_diagonal().min()))


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"max_samples": 0}, "max_samples"),
        ({"probes": 0}, "probes"),
        ({"tic_probes": -1}, "tic_probes"),
        ({"iterations": 0}, "iterations"),
        ({"damping": -1e-3}, "damping"),
        ({"tol": 0.0}, "tol"),
        ({"parts": ("trace", "hessian")}, "parts"),
    ],
)
def test_bad_check_settings_raise_one_line_option_errors_naming_the_parameter(
    kwargs: dict[str, float], parameter: str
) -> None:
    with pytest.raises(OptionError) as e:
        GeneralizationCheck(**kwargs)  # type: ignore[arg-type]
    assert e.value.option == parameter
    assert str(e.value).startswith(f"{parameter}: ") and "\n" not in str(e.value)


def test_bad_method_arguments_raise_option_errors(mlp_hessian: torch.Tensor) -> None:
    model, x, y = _mlp_683()
    op = DenseOperator(mlp_hessian)
    with pytest.raises(OptionError, match=r"^max_probes: "):
        hutchinson_trace(op, max_probes=0)
    with pytest.raises(OptionError, match=r"^damping: "):
        tic(model, x, y, damping=-1.0)
    with pytest.raises(OptionError, match=r"^max_samples: "):
        FlatnessBudget(max_samples=0)
    with pytest.raises(OptionError, match=r"^max_samples: "):
        subsample(10, 0, 0)


def test_the_check_is_skipped_with_the_reason_for_a_model_without_gradients(
    digits_test: Dataset,
) -> None:
    from edgeproof.models.train import spec_from_data

    spec = spec_from_data(digits_test)
    onnx_like = LoadedModel(path=None, format="onnx", session=object(), spec=spec)
    ctx = AuditContext(model=onnx_like, data=digits_test, threat=ThreatModel(spec))
    reason = get_check("generalization").skip_reason(ctx)
    assert reason == "needs gradients, which an onnx model does not provide"


# ---------------------------------------------------------------------------------------------
# The check and flatness() on the digits LeNet-5


def test_generalization_check_on_digits_reports_curvature_collapse_tic_and_conflict(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    ctx = AuditContext(model=digits_model, data=digits_test, threat=ThreatModel(digits_model.spec))
    check = GeneralizationCheck(max_samples=120, iterations=20, probes=12, tic_probes=3)
    res = check.run(ctx)
    assert res.status == "ok"
    for name in check.headline:
        res.metric(name)
    lam1 = res.metric("top_eigenvalue")
    trace = res.metric("hessian_trace")
    assert lam1.value > 0 and trace.ci is not None
    assert trace.ci.low <= trace.value <= trace.ci.high
    assert trace.value > lam1.value  # the top eigenvalue is a small part of a PSD-ish spectrum
    nc1 = res.metric("nc1")
    assert 0 < nc1.value < 1  # a 97%-accurate model: partly collapsed
    assert 0 <= res.metric("nc4_ncc_mismatch").value < 0.2
    tic_m = res.metric("tic")
    assert tic_m.settings["positive_definite"] and tic_m.value > 0
    assert -1 <= res.metric("gradient_conflict_min_cosine").value <= 1
    assert all(m.description for m in res.metrics)
    assert {f.name for f in res.figures} == {"hessian_density", "gradient_conflict"}
    assert all(f.svg.startswith("<svg") for f in res.figures)
    assert res.settings["samples"] == 120 and res.settings["damping_used"] > 0
    assert any("neural collapse" in f.message for f in res.findings)
    assert any("TIC" in f.message for f in res.findings)
    res.to_json()  # serialisable
    # the module is left as it was
    assert not digits_model.module.training  # type: ignore[union-attr]


def test_flatness_returns_the_top_eigenvalue_and_nc1_on_a_seeded_subset(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    module = digits_model.module
    assert module is not None
    budget = FlatnessBudget(max_samples=100, max_iterations=30, seed=3)
    f = flatness(module, digits_test.x, digits_test.y, budget)
    assert isinstance(f, Flatness) and f.samples == 100 and f.converged
    assert f.top_eigenvalue > 0 and f.residual <= 1e-3 * f.top_eigenvalue
    assert 0 < f.nc1 < 1
    idx = torch.from_numpy(subsample(len(digits_test), 100, 3))
    x, y = torch.from_numpy(digits_test.x)[idx], torch.from_numpy(digits_test.y)[idx]
    with HessianOperator(module, x, y) as op:
        again = top_eigenvalues(op, 1, tol=1e-8, max_iter=60)
    assert f.top_eigenvalue == pytest.approx(float(again.values[0]), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# PyHessian parity (amirgholami/PyHessian clone; EDGEPROOF_PYHESSIAN = its path)


def _pyhessian() -> ModuleType:
    try:
        return importlib.import_module("pyhessian")
    except ImportError:
        pass
    root = os.environ.get("EDGEPROOF_PYHESSIAN")
    if not root:
        pytest.skip("PyHessian not importable: set EDGEPROOF_PYHESSIAN to a PyHessian clone")
    init = Path(root) / "pyhessian" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "pyhessian", init, submodule_search_locations=[str(init.parent)]
    )
    if spec is None or spec.loader is None or not init.is_file():
        pytest.skip(f"PyHessian not importable: no pyhessian package under {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pyhessian"] = module
    spec.loader.exec_module(module)
    return module


def test_top_eigenvalue_agrees_with_pyhessian_to_1e_3() -> None:
    pyhessian = _pyhessian()
    model, x, y = _mlp_683(torch.float32)
    with HessianOperator(model, x, y) as op:
        ours = top_eigenvalues(op, k=2, tol=1e-6)
    import copy

    peer = pyhessian.hessian(copy.deepcopy(model), nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    torch.manual_seed(0)
    values, _ = peer.eigenvalues(maxIter=1000, tol=1e-7, top_n=2)
    np.testing.assert_allclose(ours.values, values, rtol=1e-3)

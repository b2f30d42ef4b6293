"""IBP, CROWN, CROWN-IBP and α-CROWN: exactness where it must hold, agreement with LP
references, ordering, and soundness for every operator and input set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from certify_exact import exact_min, fixed_lines_lp, mlp, triangle_lp
from edgeproof.certify import ops as O
from edgeproof.certify.bounds import (
    AlphaSettings,
    Method,
    backward,
    compute_bounds,
    margin_spec,
    prepare,
)
from edgeproof.certify.graph import Builder, Node, trace
from edgeproof.certify.graph import register_module as register_certify_module
from edgeproof.certify.sets import InputSet, box, l2_ball, linf_ball, segment
from edgeproof.errors import OptionError
from edgeproof.models.zoo import Normalize

METHOD_NAMES: tuple[Method, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")


def _relu_inputs(g_nodes: list[Node]) -> list[int]:
    return [n.inputs[0] for n in g_nodes if isinstance(n.op, O.ReLU)]


# --------------------------------------------------------------------------------------------
# exactness and LP references (float64, small MLPs)


def test_ibp_and_crown_are_exact_on_an_affine_model() -> None:
    first, second = nn.Linear(4, 3).double(), nn.Linear(3, 2).double()
    model = nn.Sequential(first, second).eval()
    g = trace(model, (4,)).to(torch.float64)
    x = torch.rand(3, 4, dtype=torch.float64)
    s = linf_ball(x, 0.1, (-5.0, 5.0))
    with torch.no_grad():
        w = second.weight @ first.weight
        b = second.weight @ first.bias + second.bias
    exact_lo = x @ w.T + b - 0.1 * w.abs().sum(1)
    methods: tuple[Method, ...] = ("crown", "crown-ibp", "alpha-crown")
    for method in methods:
        r = compute_bounds(g, s, None, method, upper=True)
        assert r.upper is not None
        assert torch.allclose(r.lower, exact_lo, atol=1e-12)
        assert torch.allclose(r.upper, exact_lo + 0.2 * w.abs().sum(1), atol=1e-12)
    # IBP over two affine layers is exact only up to |W2||W1| >= |W2 W1|: sound, looser
    ibp = compute_bounds(g, s, None, "ibp")
    assert bool((ibp.lower <= exact_lo + 1e-12).all())
    l2 = compute_bounds(g, l2_ball(x, 0.1, (-5.0, 5.0)), None, "crown")
    assert torch.allclose(l2.lower, x @ w.T + b - 0.1 * w.norm(dim=1), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crown_equals_the_lp_over_its_own_lines_on_one_hidden_layer(seed: int) -> None:
    model = mlp([3, 8, 3], seed)
    g = trace(model, (3,)).to(torch.float64)
    x = torch.rand(1, 3, dtype=torch.float64)
    s = linf_ball(x, 0.4, (-1.0, 2.0))
    spec = margin_spec(model(x).argmax(1), 3, torch.float64)
    r = compute_bounds(g, s, spec, "crown")
    (pre,) = _relu_inputs(g.nodes)
    lo, hi = (t[0].numpy() for t in r.state.bounds[pre])  # type: ignore[union-attr]
    relu = next(n.index for n in g.nodes if isinstance(n.op, O.ReLU))
    slopes = r.state.relaxation(relu).lower_slope[0].numpy()  # type: ignore[union-attr]
    assert ((lo < 0) & (hi > 0)).any()  # the relaxation is exercised
    for row in range(2):
        ref = fixed_lines_lp(
            model, spec[0, row].numpy(), s.lo[0].numpy(), s.hi[0].numpy(), [(lo, hi)], [slopes]
        )
        assert float(r.lower[0, row]) == pytest.approx(ref, abs=1e-7)


@pytest.mark.parametrize("seed", [3, 4])
def test_bounds_are_ordered_ibp_crown_alpha_lp_exact(seed: int) -> None:
    model = mlp([2, 4, 4, 3], seed)
    g = trace(model, (2,)).to(torch.float64)
    x = torch.rand(1, 2, dtype=torch.float64)
    s = linf_ball(x, 0.3, (-1.0, 2.0))
    spec = margin_spec(model(x).argmax(1), 3, torch.float64)
    crown = compute_bounds(g, s, spec, "crown")
    ibp = compute_bounds(g, s, spec, "ibp")
    # α-CROWN on the final layer only: same intermediate bounds as CROWN, so the triangle LP
    # with those bounds is its limit
    alpha = compute_bounds(
        g, s, spec, "alpha-crown", alpha=AlphaSettings(iterations=60, intermediate=False)
    )
    pre = [crown.state.bounds[i] for i in _relu_inputs(g.nodes)]
    pre_np = [(b[0][0].numpy(), b[1][0].numpy()) for b in pre]  # type: ignore[index]
    lo, hi = s.lo[0].numpy(), s.hi[0].numpy()
    for row in range(2):
        c = spec[0, row].numpy()
        lp = triangle_lp(model, c, lo, hi, pre_np)
        exact, _ = exact_min(model, c, lo, hi)
        cr, al, ib = (
            float(crown.lower[0, row]),
            float(alpha.lower[0, row]),
            float(ibp.lower[0, row]),
        )
        assert cr <= al + 1e-9
        assert al <= lp + 1e-7
        assert lp <= exact + 1e-7
        assert ib <= exact + 1e-9


@pytest.mark.parametrize("seed", [5, 6])
def test_optimised_alpha_reaches_the_triangle_lp_on_one_hidden_layer(seed: int) -> None:
    # with fixed pre-activation bounds, the best lower slopes give the LP optimum of the
    # triangle relaxation (Salman et al. 2019); projected Adam gets within 1e-4 here
    model = mlp([3, 10, 3], seed)
    g = trace(model, (3,)).to(torch.float64)
    x = torch.rand(1, 3, dtype=torch.float64)
    s = linf_ball(x, 0.5, (-1.0, 2.0))
    spec = margin_spec(model(x).argmax(1), 3, torch.float64)
    r = compute_bounds(
        g, s, spec, "alpha-crown", alpha=AlphaSettings(iterations=300, lr=0.1, intermediate=False)
    )
    pre = r.state.bounds[_relu_inputs(g.nodes)[0]]
    lo, hi = (t[0].numpy() for t in pre)  # type: ignore[union-attr]
    for row in range(2):
        lp = triangle_lp(model, spec[0, row].numpy(), s.lo[0].numpy(), s.hi[0].numpy(), [(lo, hi)])
        assert float(r.lower[0, row]) == pytest.approx(lp, abs=1e-4)
        assert float(r.lower[0, row]) <= lp + 1e-9


def test_crown_with_zero_lower_slopes_is_never_looser_than_ibp_on_one_hidden_layer() -> None:
    # min over x of Σ_j (W2_j⁺·0 + W2_j⁻·upper line_j) ≥ Σ_j min over x: each term's minimum is
    # the IBP term, so with lower slope 0 CROWN ≥ IBP (the adaptive slope may be looser)
    for seed in range(4):
        model = mlp([4, 12, 5], seed)
        g = trace(model, (4,)).to(torch.float64)
        x = torch.rand(2, 4, dtype=torch.float64)
        s = linf_ball(x, 0.3, (-2.0, 2.0))
        spec = margin_spec(model(x).argmax(1), 5, torch.float64)
        ibp = compute_bounds(g, s, spec, "ibp").lower
        state = prepare(g, s, "crown")
        relu = next(n.index for n in g.nodes if isinstance(n.op, O.ReLU))
        zero = torch.zeros(2, 4, 12, dtype=torch.float64)
        lb, _ = backward(state, g.output, spec, alpha={relu: zero})
        assert bool((lb >= ibp - 1e-12).all())


def test_alpha_crown_is_never_looser_than_crown() -> None:
    torch.manual_seed(0)
    models = {
        "mlp": (
            nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)),
            (1, 4, 4),
        ),
        "lenet": (
            nn.Sequential(
                nn.Conv2d(1, 3, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(12, 8),
                nn.ReLU(),
                nn.Linear(8, 4),
            ),
            (1, 4, 4),
        ),
    }
    for model, shape in models.values():
        model.eval()
        g = trace(model, shape)
        x = torch.rand(3, *shape)
        spec = margin_spec(model(x).argmax(1), 4)
        s = linf_ball(x, 0.1)
        crown = compute_bounds(g, s, spec, "crown").lower
        alpha = compute_bounds(g, s, spec, "alpha-crown", alpha=AlphaSettings(iterations=8)).lower
        assert bool((alpha >= crown - 1e-6).all())
        assert float((alpha - crown).max()) > 0  # the optimisation did something


# --------------------------------------------------------------------------------------------
# soundness for every operator, method and input set


class FakeQuant(nn.Module):
    """A uint8 fake quantizer (registered with the engine below, as a user would)."""

    def __init__(self, scale: float, zero_point: int) -> None:
        super().__init__()
        self.scale, self.zero_point = scale, zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x / self.scale) + self.zero_point, 0, 255)
        return (q - self.zero_point) * self.scale


def _fake_quant_builder(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, FakeQuant)
    return b.add(O.UniformQuantizer(m.scale, m.zero_point, 0, 255), [args[0]])


register_certify_module(FakeQuant, _fake_quant_builder)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = torch.relu(h + x)
        h = nn.functional.avg_pool2d(h, 2)
        return self.head(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


class NormCatClamp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize([0.4, 0.5], [0.2, 0.3])
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).flatten(1)
        return self.fc(torch.cat([torch.relu(h), torch.clamp(h, -0.5, 0.5)], dim=1))


def _op_models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(1)
    m: dict[str, tuple[nn.Module, tuple[int, ...]]] = {
        "relu": (
            nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)),
            (3,),
        ),
        "leaky_relu": (nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.1), nn.Linear(8, 4)), (3,)),
        "sigmoid_tanh": (
            nn.Sequential(
                nn.Linear(3, 6), nn.Sigmoid(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 4)
            ),
            (3,),
        ),
        "conv_bn_maxpool": (
            nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16, 4),
            ),
            (1, 4, 4),
        ),
        "overlapping_maxpool": (
            nn.Sequential(
                nn.Conv2d(1, 2, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=1, padding=1),
                nn.Flatten(),
                nn.Linear(32, 4),
            ),
            (1, 4, 4),
        ),
        "residual_avgpool": (Residual(), (3, 4, 4)),
        "normalize_cat_clamp": (NormCatClamp(), (2, 3)),
        "conv1d": (
            nn.Sequential(
                nn.Conv1d(2, 3, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool1d(2),
                nn.Flatten(),
                nn.Linear(9, 4),
            ),
            (2, 6),
        ),
        "fake_quant": (nn.Sequential(nn.Linear(3, 6), FakeQuant(0.05, 128), nn.Linear(6, 4)), (3,)),
    }
    for model, _ in m.values():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
        model.eval()
    return m


OP_MODELS = _op_models()


def _points(model: nn.Module, s: InputSet, spec: torch.Tensor, n: int = 10_000) -> torch.Tensor:
    """``spec·f(x)`` ``(P, B, R)`` at random points of the sets, box corners and PGD points."""
    gen = torch.Generator().manual_seed(0)
    lo, hi = s.box()
    b = lo.shape[0]
    per = n // b
    pts = lo + (hi - lo) * torch.rand((per, *lo.shape), generator=gen)
    corners = torch.where(torch.rand((per // 4, *lo.shape), generator=gen) < 0.5, lo, hi)
    cand = torch.cat([pts, corners]).flatten(0, 1)  # (P·B, *shape), sample-major per draw
    cand = s.select(torch.arange(b).repeat(cand.shape[0] // b)).project(cand)
    found = [cand]
    # PGD on each row, towards its minimum and its maximum
    r = spec.shape[1]
    for sign in (1.0, -1.0):
        for row in range(r):
            z = s.anchor().clone().requires_grad_(True)
            step = (hi - lo).clamp(min=1e-3) / 10
            for _ in range(15):
                val = (spec[:, row] * model(z)).sum()
                (g,) = torch.autograd.grad(sign * val, z)
                with torch.no_grad():
                    z = s.project(z - step * g.sign()).requires_grad_(True)
            found.append(z.detach())
    allx = torch.cat(found)
    with torch.no_grad():
        out = model(allx)
    reps = allx.shape[0] // b
    specs = spec.repeat(reps, 1, 1)
    return torch.einsum("prk,pk->pr", specs, out).view(reps, b, r)


@pytest.mark.parametrize("eps", [0.05, 0.3])
@pytest.mark.parametrize("name", list(OP_MODELS))
def test_no_bound_is_violated_by_random_corner_or_pgd_points(name: str, eps: float) -> None:
    model, shape = OP_MODELS[name]
    g = trace(model, shape)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        spec = margin_spec(model(x).argmax(1), 4)
    s = linf_ball(x, eps)
    vals = _points(model, s, spec)
    lo, hi = s.box()
    inner = (lo + (hi - lo) * torch.rand(2000, *lo.shape)).flatten(0, 1)
    for method in METHOD_NAMES:
        r = compute_bounds(g, s, spec, method, upper=True, alpha=AlphaSettings(iterations=4))
        assert r.upper is not None
        tol = 1e-5 * (1 + vals.abs())
        assert bool((vals >= r.lower - tol).all()), f"{name}/{method}: lower bound violated"
        assert bool((vals <= r.upper + tol).all()), f"{name}/{method}: upper bound violated"
        assert bool((r.lower <= r.upper + 1e-6).all())
        # every intermediate bound holds too
        for n in g.nodes:
            b = r.state.bounds[n.index]
            if b is None:
                continue
            with torch.no_grad():
                v = g.forward(inner, upto=n.index).view(2000, 2, *n.shape)
            t = 1e-5 * (1 + v.abs())
            assert bool((v >= b[0] - t).all()) and bool((v <= b[1] + t).all()), (
                f"{name}/{method}: bounds of node {n.name} violated"
            )


def test_relaxation_lines_enclose_each_activation_on_its_interval() -> None:
    gen = torch.Generator().manual_seed(0)
    lo = torch.randn(4000, generator=gen) * 3
    hi = lo + torch.rand(4000, generator=gen) * 4
    hi[:50] = lo[:50]  # degenerate intervals
    t = torch.linspace(0, 1, 201).view(-1, 1)
    xs = lo + t * (hi - lo)
    ops: list[O.Activation] = [
        O.ReLU(),
        O.LeakyReLU(0.2),
        O.SShaped("sigmoid"),
        O.SShaped("tanh"),
        O.UniformQuantizer(0.1, 20, 0, 60),
    ]
    for op in ops:
        rel = op.relax(lo, hi)
        f = op.forward(xs)
        low = rel.lower_slope * xs + (0 if rel.lower_bias is None else rel.lower_bias)
        up = rel.upper_slope * xs + (0 if rel.upper_bias is None else rel.upper_bias)
        tol = 1e-6 * (1 + f.abs())
        assert bool((low <= f + tol).all()), f"{op.kind}: lower line above the function"
        assert bool((up >= f - tol).all()), f"{op.kind}: upper line below the function"


def test_maxpool_lines_enclose_the_maximum_of_each_window() -> None:
    gen = torch.Generator().manual_seed(1)
    op = O.MaxPool((2, 2), (2, 2), (0, 0), (3, 4, 4), (3, 2, 2))
    lo = torch.randn(5, 3, 4, 4, generator=gen)
    hi = lo + torch.rand(5, 3, 4, 4, generator=gen) * torch.tensor([0.1, 1.0, 3.0]).view(1, 3, 1, 1)
    pr = op.relax_windows(lo, hi)
    assert 0 < float(pr.upper.sum()) < pr.upper.shape[0] * pr.upper.shape[1] * pr.upper.shape[3]
    for _ in range(50):
        x = lo + (hi - lo) * torch.rand(lo.shape, generator=gen)
        y = op.forward(x).flatten(2)  # (B, C, L)
        win = op._unfold(x, float("-inf"))  # (B, C, window, L)
        low = (pr.lower * win).sum(2)
        up = (pr.upper * win).sum(2) + pr.upper_const
        assert bool((low <= y + 1e-6).all()) and bool((up >= y - 1e-6).all())


@pytest.mark.parametrize("name", ["relu", "conv_bn_maxpool", "residual_avgpool", "sigmoid_tanh"])
def test_l2_ball_bounds_hold_inside_the_ball_and_the_domain(name: str) -> None:
    model, shape = OP_MODELS[name]
    g = trace(model, shape)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        spec = margin_spec(model(x).argmax(1), 4)
    s = l2_ball(x, 0.4)
    vals = _points(model, s, spec)
    l2_methods: tuple[Method, ...] = ("ibp", "crown", "alpha-crown")
    for method in l2_methods:
        r = compute_bounds(g, s, spec, method, upper=True, alpha=AlphaSettings(iterations=4))
        assert r.upper is not None
        assert bool((vals >= r.lower - 1e-5).all()) and bool((vals <= r.upper + 1e-5).all())


def test_segment_bounds_hold_along_the_segment_and_are_exact_for_an_affine_model() -> None:
    model, shape = OP_MODELS["relu"]
    g = trace(model, shape)
    a, b = torch.rand(2, *shape), torch.rand(2, *shape)
    seg = segment(a, b)
    t = torch.linspace(0, 1, 2001).view(-1, 1, 1)
    pts = (a + t * (b - a)).flatten(0, 1)
    with torch.no_grad():
        out = model(pts).view(2001, 2, 4)
    for method in METHOD_NAMES:
        r = compute_bounds(g, seg, None, method, upper=True, alpha=AlphaSettings(iterations=4))
        assert r.upper is not None
        assert bool((out >= r.lower - 1e-5).all()) and bool((out <= r.upper + 1e-5).all())
    # a segment is much tighter than its bounding box
    boxed = compute_bounds(g, box(*seg.box()), None, "crown", upper=True)
    assert boxed.upper is not None and r.upper is not None
    assert float((r.upper - r.lower).sum()) < float((boxed.upper - boxed.lower).sum())
    lin = nn.Linear(3, 2).eval()
    exact = compute_bounds(trace(lin, (3,)), seg, None, "crown", upper=True)
    with torch.no_grad():
        ends = torch.stack([lin(a), lin(b)])
    assert torch.allclose(exact.lower, ends.min(0).values, atol=1e-6)
    assert exact.upper is not None and torch.allclose(exact.upper, ends.max(0).values, atol=1e-6)


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda x: linf_ball(x, -0.1), r"eps: ε=-0\.1 is negative"),
        (lambda x: l2_ball(x, float("nan")), "eps: .*not finite"),
        (lambda x: box(x + 0.1, x), r"lower: lower > upper at 6 position"),
        (lambda x: box(x, x[:, :2]), "upper: shape"),
        (lambda x: segment(x, x[:1]), "end: shape"),
        (lambda x: linf_ball(x, 0.1, (1.0, 0.0)), "domain"),
    ],
)
def test_bad_input_sets_are_refused_with_the_parameter_named(
    make: Callable[[torch.Tensor], object], match: str
) -> None:
    with pytest.raises(OptionError, match=match):
        make(torch.rand(2, 3))


def test_unknown_method_and_wrong_input_shape_are_refused() -> None:
    g = trace(nn.Linear(3, 2), (3,))
    with pytest.raises(OptionError, match="method: unknown bound method 'deepoly'"):
        compute_bounds(g, linf_ball(torch.rand(1, 3), 0.1), None, "deepoly")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"x: inputs of shape \[4\]"):
        compute_bounds(g, linf_ball(torch.rand(1, 4), 0.1), None, "crown")
    with pytest.raises(OptionError, match="alpha_iterations"):
        AlphaSettings(iterations=0)


def test_margin_spec_rows_are_true_class_minus_each_other_class() -> None:
    spec = margin_spec(torch.tensor([2, 0]), 3)
    assert spec.shape == (2, 2, 3)
    assert spec[0].tolist() == [[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]]  # f_2 - f_0, f_2 - f_1
    assert spec[1].tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]
    assert np.allclose(spec.sum(2).numpy(), 0)

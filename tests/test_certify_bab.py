"""Branch-and-bound: agreement with exhaustive enumeration, checked counterexamples, input
splitting on segments, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from certify_exact import exact_min, mlp
from edgeproof.certify.bab import BabSettings, branch_and_bound
from edgeproof.certify.bounds import AlphaSettings, compute_bounds, margin_spec
from edgeproof.certify.graph import maxpool_as_relus, trace
from edgeproof.certify.sets import linf_ball, segment
from edgeproof.errors import OptionError


def _case(seed: int, eps: float) -> tuple[nn.Sequential, torch.Tensor, float]:
    model = mlp([2, 8, 8, 2], seed)
    torch.manual_seed(seed)
    x = torch.rand(1, 2).double()
    return model, x, eps


# (seed, eps) pairs where α-CROWN alone cannot decide (its bound is negative): verified ones
# need branching, falsified ones a counterexample; the exact answers come from enumeration
HARD = [(2, 0.8), (35, 0.8), (36, 0.8), (4, 0.8), (9, 0.8), (16, 0.8), (18, 0.4)]


@pytest.mark.parametrize(("seed", "eps"), HARD)
def test_branch_and_bound_agrees_with_exhaustive_enumeration(seed: int, eps: float) -> None:
    model, x, eps = _case(seed, eps)
    spec = margin_spec(model(x).argmax(1), 2, torch.float64)
    s = linf_ball(x, eps, (-2.0, 3.0))
    exact, _ = exact_min(model, spec[0, 0].numpy(), s.lo[0].numpy(), s.hi[0].numpy())
    g = trace(model, (2,)).to(torch.float64)
    alpha = compute_bounds(
        g, s, spec, "alpha-crown", alpha=AlphaSettings(iterations=40, lr=0.1, intermediate=False)
    )
    assert float(alpha.lower.min()) < 0  # not decided without branching
    # no PGD: the verdict must come from branch-and-bound itself
    res = branch_and_bound(
        g, model, s, spec, BabSettings(budget_s=30, input_split_dims=0, pgd_steps=0, pgd_restarts=1)
    )
    assert res.verdict == ("verified" if exact > 0 else "falsified")
    assert res.strategy in ("relu-split", "pgd")
    if res.verdict == "verified":
        assert 0 <= res.lower_bound <= exact + 1e-7
        assert res.domains > 1
    else:
        assert res.counterexample is not None and res.margin is not None
        assert res.margin < 0
        assert bool(
            ((res.counterexample >= s.lo - 1e-9) & (res.counterexample <= s.hi + 1e-9)).all()
        )
        with torch.no_grad():
            out = model(res.counterexample)
        assert float(spec[0, 0] @ out[0]) == pytest.approx(res.margin)


def test_branch_and_bound_on_a_maxpool_network_splits_the_rewritten_relus() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)
    ).eval()
    g = trace(model, (1, 3, 3))
    g2 = maxpool_as_relus(g)
    x = torch.rand(6, 1, 3, 3)
    with torch.no_grad():
        assert torch.allclose(g2.forward(x), model(x), atol=1e-6)
    assert sum(n.op is not None and n.op.kind == "relu" for n in g2.nodes) == 4  # 1 + 3 per pool
    spec = margin_spec(model(x[:1]).argmax(1), 2)
    res = branch_and_bound(
        g, model, linf_ball(x[:1], 0.05), spec, BabSettings(budget_s=10, input_split_dims=0)
    )
    assert res.verdict in ("verified", "falsified")


def test_a_segment_is_decided_by_input_splitting_even_for_a_sigmoid_network() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Sigmoid(), nn.Linear(16, 2)).eval()
    g = trace(model, (3,))
    a, b = torch.zeros(1, 3), torch.ones(1, 3)
    t = torch.linspace(0, 1, 20001).view(-1, 1)
    with torch.no_grad():
        out = model(a + t * (b - a))
    y = out[0].argmax().view(1)
    spec = margin_spec(y, 2)
    margins = out @ spec[0].T
    res = branch_and_bound(g, model, segment(a, b), spec, BabSettings(budget_s=20))
    assert res.strategy in ("input-split", "pgd")
    assert res.verdict == ("verified" if float(margins.min()) > 0 else "falsified")
    if res.verdict == "verified":
        assert res.lower_bound <= float(margins.min()) + 1e-6


def test_branch_and_bound_refuses_a_network_that_is_not_piecewise_linear() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    g = trace(model, (6,))
    x = torch.rand(1, 6)
    spec = margin_spec(model(x).argmax(1), 2)
    with pytest.raises(
        OptionError, match=r"bab_budget_s: .*node '_1' \(tanh\) is not piecewise-linear"
    ):
        branch_and_bound(g, model, linf_ball(x, 0.2), spec, BabSettings(budget_s=1, pgd_steps=1))


def test_branch_and_bound_returns_unknown_with_a_sound_bound_when_the_budget_ends() -> None:
    model, x, eps = _case(36, 0.8)
    spec = margin_spec(model(x).argmax(1), 2, torch.float64)
    s = linf_ball(x, eps, (-2.0, 3.0))
    exact, _ = exact_min(model, spec[0, 0].numpy(), s.lo[0].numpy(), s.hi[0].numpy())
    g = trace(model, (2,)).to(torch.float64)
    res = branch_and_bound(
        g,
        model,
        s,
        spec,
        BabSettings(budget_s=0.0, input_split_dims=0, pgd_steps=0, pgd_restarts=1),
    )
    assert res.verdict == "unknown"
    assert res.lower_bound <= exact


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget_s": -1.0}, "bab_budget_s"),
        ({"batch_domains": 0}, "bab_batch"),
        ({"iterations": 0}, "bab_iterations"),
    ],
)
def test_bad_branch_and_bound_settings_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        BabSettings(**kwargs)  # type: ignore[arg-type]

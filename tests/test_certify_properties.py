"""Property checks: monotonicity over a box (two-copy graph) and decision stability along
segments of transformed inputs, on tiny networks with known answers and on the digits model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.certify.properties import (
    blur,
    brightness,
    contrast,
    darken,
    monotonicity,
    segment_stability,
)
from edgeproof.certify.sets import segment
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.models.loaded import LoadedModel

TAU = 1e-5


def _linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


class _Bump(nn.Module):
    """``f(x) = relu(x) − 2·relu(x − 0.5)``: increasing on [0, 0.5], decreasing after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - 2 * torch.relu(x - 0.5)


def _assert_counterexample(
    model: nn.Module, res: object, lo: torch.Tensor, hi: torch.Tensor, feature: int, k: int
) -> None:
    assert res.verdict == "falsified" and res.counterexample is not None  # type: ignore[attr-defined]
    x, x2 = (torch.from_numpy(a) for a in res.counterexample)  # type: ignore[attr-defined]
    assert bool(((x >= lo - 1e-6) & (x <= hi + 1e-6)).all())
    assert bool(((x2 >= lo - 1e-6) & (x2 <= hi + 1e-6)).all())
    diff = (x2 - x).reshape(-1)
    assert float(diff[feature]) > 0 and float(diff.abs().sum() - diff[feature]) < 1e-6
    with torch.no_grad():
        drop = float(model(x2.unsqueeze(0))[0, k] - model(x.unsqueeze(0))[0, k])
    assert drop < -TAU  # checked by a forward pass: the output went down


def test_a_linear_network_is_proved_monotone_where_its_weights_say_and_refuted_elsewhere() -> None:
    model = _linear([[2.0, 1.0], [-1.0, 0.5]], [0.0, 0.1]).eval()
    lo, hi = torch.zeros(2), torch.ones(2)
    up = monotonicity(model, lo, hi, [0, 1], 0)
    assert up.verdict == "verified" and up.decided_by == "crown"
    down = monotonicity(model, lo, hi, [0], 1, increasing=False)
    assert down.verdict == "verified"
    res = monotonicity(model, lo, hi, [0], 1)
    _assert_counterexample(model, res, lo, hi, 0, 1)


def test_a_bump_is_monotone_before_its_peak_and_refuted_with_a_checked_pair_across_it() -> None:
    model = _Bump()
    before = monotonicity(model, torch.zeros(1), torch.full((1,), 0.4), [0], 0)
    assert before.verdict == "verified"
    lo, hi = torch.zeros(1), torch.ones(1)
    across = monotonicity(model, lo, hi, [0], 0)
    _assert_counterexample(model, across, lo, hi, 0, 0)
    # without the attack, the bound alone cannot prove it (the claim is false): never verified
    unproved = monotonicity(model, lo, hi, [0], 0, pgd_steps=0)
    assert unproved.verdict == "unknown" and unproved.lower_bound <= 0


@pytest.mark.slow  # ~10 s on a loaded core: branch-and-bound over two twin boxes
def test_a_monotone_relu_network_with_unstable_neurons_needs_branch_and_bound() -> None:
    # non-negative weights from the inputs through output 0: monotone in both features, but
    # the ReLUs switch inside the box, so the two copies' relaxations do not cancel
    model = nn.Sequential(
        _linear([[1.0, 1.0], [1.0, 0.0], [0.5, 2.0]], [-0.5, -0.3, -1.0]),
        nn.ReLU(),
        _linear([[1.0, 0.5, 0.7], [-1.0, 1.0, 0.0]], [0.0, 0.0]),
    ).eval()
    lo, hi = torch.zeros(2), torch.ones(2)
    bound_only = monotonicity(model, lo, hi, [0], 0, pieces=2)
    assert bound_only.verdict == "unknown"
    complete = monotonicity(model, lo, hi, [0], 0, pieces=2, bab_budget_s=60)
    assert complete.verdict == "verified" and complete.decided_by == "branch-and-bound"


def test_bad_monotonicity_arguments_name_the_parameter() -> None:
    model = _linear([[1.0, 1.0]], [0.0])
    lo, hi = torch.zeros(2), torch.ones(2)
    with pytest.raises(OptionError, match="features"):
        monotonicity(model, lo, hi, [2], 0)
    with pytest.raises(OptionError, match="output"):
        monotonicity(model, lo, hi, [0], 3)
    with pytest.raises(OptionError, match="pieces"):
        monotonicity(model, lo, hi, [0], 0, pieces=1)
    with pytest.raises(OptionError, match="lower > upper"):
        monotonicity(model, hi, lo - 1, [0], 0)
    with pytest.raises(OptionError, match="methods"):
        monotonicity(model, lo, hi, [0], 0, methods=("magic",))


class _Dip(nn.Module):
    """Logits ``(0.5 − 100·tri(x), 0)``: class 0 except on (0.51, 0.52), where the margin dips
    to −0.5 between the points of a 33-point grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tri = torch.relu(x - 0.505) - 2 * torch.relu(x - 0.515) + torch.relu(x - 0.525)
        return torch.cat([0.5 - 100 * tri, 0 * x], dim=1)


def test_segment_stability_verifies_a_safe_segment_and_branch_and_bound_finds_a_narrow_dip() -> (
    None
):
    model = _Dip()
    safe = segment(torch.zeros(1, 1), torch.full((1, 1), 0.45))
    [res] = segment_stability(model, safe, bab_budget_s=0)
    assert res.verdict == "verified" and res.decided_by == "crown"
    across = segment(torch.zeros(1, 1), torch.ones(1, 1))
    [open_] = segment_stability(model, across, bab_budget_s=0)
    assert open_.verdict == "unknown"  # the grid misses the dip and bounds cannot prove it
    [found] = segment_stability(model, across, bab_budget_s=10)
    assert found.verdict == "falsified" and found.decided_by == "branch-and-bound"
    assert found.counterexample is not None
    x = torch.from_numpy(found.counterexample[0]).reshape(1, 1)
    assert 0.505 < float(x) < 0.525
    assert float(model(x)[0, 0] - model(x)[0, 1]) < 0  # checked by a forward pass


def test_transform_segments_stay_in_the_domain_and_start_or_pass_at_the_input() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, 8, 8)
    for seg in (blur(x, 1.0), darken(x, 0.5), brightness(x, 0.3), contrast(x, 0.5, 1.5)):
        lo, hi = seg.box()
        assert lo.shape == x.shape and float(lo.min()) >= 0 and float(hi.max()) <= 1
    assert torch.equal(blur(x, 1.0).start, x) and torch.equal(darken(x, 0.5).end, 0.5 * x)
    assert torch.allclose(brightness(x, 0.3).end, (x + 0.3).clamp(max=1))
    m = x.flatten(1).mean(1).view(-1, 1, 1, 1)
    c = contrast(x, 1.0, 1.5)
    assert torch.allclose(c.start, x) and torch.allclose(c.end, (m + 1.5 * (x - m)).clamp(0, 1))
    with pytest.raises(OptionError, match="amount"):
        darken(x, 1.5)
    with pytest.raises(OptionError, match="sigma"):
        blur(x, 0.0)


def test_the_digits_model_is_stable_under_slight_darkening_and_not_under_total_darkening(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None
    x = torch.from_numpy(digits_test.x[:12])
    y = torch.from_numpy(digits_test.y[:12])
    slight = segment_stability(digits_model.module, darken(x, 0.02), labels=y, bab_budget_s=0)
    correct = (digits_model.module(x).argmax(1) == y).numpy()
    verdicts = np.array([r.verdict for r in slight])
    assert (verdicts[~correct] == "falsified").all()
    assert (verdicts[correct] == "verified").mean() >= 0.75
    assert all(r.decided_by in ("crown", "alpha-crown") for r in slight if r.verdict == "verified")
    black = segment_stability(digits_model.module, darken(x, 1.0), bab_budget_s=0)
    # a black image is one class: every sample of another class changes its decision on the way
    with torch.no_grad():
        black_class = int(digits_model.module(torch.zeros(1, 1, 8, 8)).argmax(1))
    pred = digits_model.module(x).argmax(1).numpy()
    for r, p in zip(black, pred, strict=True):
        if p != black_class:
            assert r.verdict == "falsified" and r.decided_by == "grid" and r.t is not None

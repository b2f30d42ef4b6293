"""FGSM / PGD / APGD: agreement with torchattacks 3.5.1, budgets, determinism, minimal ε."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from torch import nn

from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.methods.attacks import (
    APGD,
    FGSM,
    PGD,
    Budget,
    frozen_copy,
    get_attack,
    minimal_eps,
    robustness_curve,
)
from edgeproof.methods.attacks.base import as_layout, input_layout
from edgeproof.methods.stats import wilson_interval
from edgeproof.models.loaded import LoadedModel


@pytest.fixture(scope="module")
def digits(
    digits_model: LoadedModel, digits_test: Dataset
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    assert digits_model.module is not None
    model = frozen_copy(digits_model.module)
    return model, torch.from_numpy(digits_test.x), torch.from_numpy(digits_test.y)


def _wrong(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(x).argmax(1) != y
    return out


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_pgd_linf_without_random_start_reproduces_torchattacks_examples(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor], eps: float
) -> None:
    model, x, y = digits
    ref = torchattacks.PGD(model, eps=eps, alpha=eps * 0.25, steps=10, random_start=False)(x, y)
    ours = PGD(steps=10, step=0.25, random_start=False, keep="last").perturb(
        model, x, y, Budget("linf", eps)
    )
    # Number for number, except where a gradient is within float rounding of 0: its sign then
    # depends on the order of the loss's sums (seen on one host: 1 pixel of 23,040, a step of
    # the opposite sign, so two steps apart).
    diff = (ours.x_adv - ref).abs()
    step = eps * 0.25
    assert int((diff > 1e-6).sum()) <= 2
    assert float(diff.max()) <= 2 * step + 1e-6
    ref_fooled = _wrong(model, ref, y)
    assert int((ours.success != ref_fooled).sum()) <= int((diff > 1e-6).flatten(1).any(1).sum())


def test_pgd_l2_without_random_start_reproduces_torchattacks_pgdl2(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    eps = 0.75
    # torchattacks differentiates the batch *mean* loss and adds 1e-10 to the gradient norm; we
    # use the sum. g_mean/(‖g_mean‖ + δ) = g_sum/(‖g_sum‖ + Nδ), so δ = 1e-10/N makes them equal.
    ref = torchattacks.PGDL2(
        model,
        eps=eps,
        alpha=eps * 0.25,
        steps=10,
        random_start=False,
        eps_for_division=1e-10 / x.shape[0],
    )(x, y)
    ours = PGD(steps=10, step=0.25, random_start=False, keep="last").perturb(
        model, x, y, Budget("l2", eps)
    )
    torch.testing.assert_close(ours.x_adv, ref, rtol=0, atol=1e-4)
    assert int(ours.success.sum()) == int(_wrong(model, ref, y).sum())


def _colour_conv_net() -> nn.Module:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():  # non-trivial running statistics for the eval-mode batch norm
        bn.running_mean = torch.linspace(-0.2, 0.2, 8)
        bn.running_var = torch.linspace(0.5, 2.0, 8)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        bn,
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 5),
    )
    return frozen_copy(net)


@pytest.mark.parametrize("keep", ["last", "first"])
def test_pgd_on_a_colour_conv_net_fed_channels_last_reproduces_torchattacks(keep: str) -> None:
    model = _colour_conv_net()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(48, 3, 12, 12, generator=gen)
    y = model(x).argmax(1)
    assert input_layout(model, x) == torch.channels_last
    eps = 0.03
    ref = torchattacks.PGD(model, eps=eps, alpha=eps * 0.25, steps=10, random_start=False)(x, y)
    ours = PGD(steps=10, step=0.25, random_start=False, keep=keep).perturb(  # type: ignore[arg-type]
        model, x, y, Budget("linf", eps)
    )
    assert ours.x_adv.is_contiguous()
    ref_fooled = _wrong(model, ref, y)
    assert bool(ref_fooled.any()) and not bool(ref_fooled.all())
    if keep == "last":
        torch.testing.assert_close(ours.x_adv, ref, rtol=0, atol=1e-6)
        assert torch.equal(ours.success, ref_fooled)
    else:  # stopping at the first success keeps every sample torchattacks fools fooled
        assert bool(ours.success[ref_fooled].all())
        assert torch.equal(ours.success, _wrong(model, ours.x_adv, y))


def test_input_layout_is_channels_last_only_for_images_into_conv_nets() -> None:
    x = torch.rand(4, 1, 8, 8)
    conv = _colour_conv_net()
    mlp = _Mlp(64, 3)
    assert input_layout(conv, x) == torch.channels_last
    assert input_layout(mlp, x) == torch.contiguous_format
    assert input_layout(conv, torch.rand(4, 64)) == torch.contiguous_format
    # one channel: the same memory viewed with NHWC strides, so convolutions take that path
    one = as_layout(x, torch.channels_last)
    assert one.data_ptr() == x.data_ptr() and one.stride() == (64, 1, 8, 1)
    assert torch.equal(one, x)
    three = as_layout(torch.rand(4, 3, 8, 8), torch.channels_last)
    assert three.is_contiguous(memory_format=torch.channels_last)


def test_fgsm_reproduces_torchattacks_fgsm(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    ref = torchattacks.FGSM(model, eps=0.1)(x, y)
    ours = FGSM().perturb(model, x, y, Budget("linf", 0.1))
    torch.testing.assert_close(ours.x_adv, ref, rtol=0, atol=1e-6)
    assert torch.equal(ours.success, _wrong(model, ref, y))


def test_pgd_with_random_start_agrees_with_torchattacks_within_wilson_ci(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    eps, n = 0.08, x.shape[0]
    torch.manual_seed(123)
    ref = torchattacks.PGD(model, eps=eps, alpha=eps * 0.25, steps=10, random_start=True)(x, y)
    ref_robust = int((~_wrong(model, ref, y)).sum())
    g = torch.Generator().manual_seed(7)
    ours = PGD(steps=10, step=0.25, keep="last").perturb(
        model, x, y, Budget("linf", eps), generator=g
    )
    ours_robust = int((~ours.success).sum())
    ci = wilson_interval(ref_robust, n)
    assert ci.low <= ours_robust / n <= ci.high


def test_apgd_agrees_with_torchattacks_apgd_within_wilson_ci(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    eps, n = 0.08, x.shape[0]
    ref = torchattacks.APGD(model, norm="Linf", eps=eps, steps=20, seed=0)(x, y)
    ref_robust = int((~_wrong(model, ref, y)).sum())
    ours = APGD(steps=20).perturb(
        model, x, y, Budget("linf", eps), generator=torch.Generator().manual_seed(0)
    )
    ci = wilson_interval(ref_robust, n)
    assert ci.low <= int((~ours.success).sum()) / n <= ci.high
    # the examples it reports as fooling really fool the model
    assert torch.equal(_wrong(model, ours.x_adv, y)[ours.success], ours.success[ours.success])


class _Mlp(nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=5, restarts=2), APGD(steps=8)])
def test_attacks_stay_inside_the_budget_and_the_domain(norm: str, attack: object) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, 3, 3, generator=gen) * 3 - 1  # domain [-1, 2]
    y = torch.randint(0, 4, (40,), generator=gen)
    model = frozen_copy(_Mlp(18, 4))
    eps = torch.linspace(0.1, 1.5, 40, dtype=torch.float64)  # per-sample ε
    budget = Budget(norm, eps, domain=(-1.0, 2.0))  # type: ignore[arg-type]
    res = attack.perturb(model, x, y, budget, generator=gen)  # type: ignore[attr-defined]
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps.float() * (1 + 1e-5) + 1e-6).all())
    assert float(res.x_adv.min()) >= -1.0 and float(res.x_adv.max()) <= 2.0
    assert torch.equal(res.success, _wrong(model, res.x_adv, y))


def test_attacks_are_deterministic_under_a_seed_and_vary_with_it(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    x, y = x[:64], y[:64]
    for attack in (PGD(steps=3), APGD(steps=5)):
        runs = [
            attack.perturb(
                model, x, y, Budget("linf", 0.1), generator=torch.Generator().manual_seed(s)
            ).x_adv
            for s in (1, 1, 2)
        ]
        assert torch.equal(runs[0], runs[1])
        assert not torch.equal(runs[0], runs[2])


def test_pgd_with_restarts_but_no_random_start_is_rejected() -> None:
    with pytest.raises(OptionError, match="restarts without a random start"):
        PGD(restarts=3, random_start=False)


def test_budget_rejects_unknown_norm_and_bad_eps() -> None:
    with pytest.raises(OptionError, match="norm: unknown norm 'l1'"):
        Budget("l1", 0.1)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="must be positive"):
        Budget("linf", -0.1)
    with pytest.raises(OptionError, match="exceeds the linf diameter 1"):
        Budget("linf", 1.5).check_within_diameter(64)


def test_unknown_attack_name_lists_the_known_ones() -> None:
    with pytest.raises(OptionError, match=r"unknown attack 'cw'\. choose from fgsm, pgd, apgd"):
        get_attack("cw")


class _Linear2(nn.Module):
    """Two logits [0, w·x + b]: the optimal L∞/L2 attack is known in closed form."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(m), m], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_eps_finds_the_analytic_margin_of_a_linear_model(norm: str) -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(12, generator=gen)
    model = _Linear2(w, 0.1)
    x = torch.rand(50, 12, generator=gen) * 2 - 1
    margin = x @ w + 0.1
    y = (margin > 0).long()
    dual = w.abs().sum() if norm == "linf" else w.norm()
    exact = (margin.abs() / dual).double().numpy()
    res = minimal_eps(
        model,
        x,
        y,
        norm=norm,  # type: ignore[arg-type]
        domain=(-10.0, 10.0),
        attack=PGD(steps=10, random_start=False),
        upper=4.0,
        iterations=12,
    )
    assert res.clean_correct.all() and not res.censored.any()
    # the bisection returns the smallest tested ε that succeeded: within one resolution above
    assert np.all(res.values >= exact - 1e-5)
    assert np.all(res.values <= exact + res.resolution + 1e-5)


def test_robustness_curve_worst_case_is_the_union_of_attack_successes(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    curve = robustness_curve(
        model,
        x,
        y,
        norm="linf",
        eps=(0.03, 0.1),
        domain=(0.0, 1.0),
        attacks=[FGSM(), PGD(steps=5)],
        seed=0,
        batch_size=128,
    )
    union = curve.fooled.any(axis=0)
    assert np.array_equal(curve.robust, curve.clean_correct[None, :] & ~union)
    assert np.all(curve.robust_count() <= curve.robust_count("pgd"))
    assert np.all(curve.robust_count() <= curve.robust_count("fgsm"))
    assert curve.robust_accuracy()[1] <= curve.robust_accuracy()[0]
    again = robustness_curve(
        model,
        x,
        y,
        norm="linf",
        eps=(0.03, 0.1),
        domain=(0.0, 1.0),
        attacks=[FGSM(), PGD(steps=5)],
        seed=0,
        batch_size=128,
    )
    assert np.array_equal(curve.fooled, again.fooled)

"""Pruning, elimination-compensation, channel removal, BatchNorm recalibration, MP low-rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.compress.lowrank import factorize_lowrank, mp_rank
from edgeproof.compress.prune import (
    prune_n_m,
    prune_unstructured,
    recalibrate_batchnorm,
    remove_channels,
    sparsity,
)
from edgeproof.errors import OptionError
from edgeproof.models.zoo import build_model


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("ratio", [0.3, 0.75])
def test_unstructured_magnitude_pruning_reaches_the_ratio(ratio: float) -> None:
    pruned = prune_unstructured(_mlp(), ratio)
    assert sparsity(pruned) == pytest.approx(ratio, abs=0.02)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_pruning_ratio_outside_unit_interval_names_the_option(bad: float) -> None:
    with pytest.raises(OptionError, match=r"ratio: pruning ratio .* is outside \[0, 1\)"):
        prune_unstructured(_mlp(), bad)
    with pytest.raises(OptionError, match="ratio"):
        remove_channels(_mlp(), bad, np.zeros((4, 16), np.float32))


def test_two_four_pruning_keeps_at_most_two_of_every_four() -> None:
    pruned = prune_n_m(_mlp(), 2, 4)
    for mod in pruned.modules():
        if isinstance(mod, nn.Linear):
            groups = (mod.weight != 0).reshape(mod.weight.shape[0], -1, 4).sum(-1)
            assert int(groups.max()) <= 2


def test_elimination_compensation_moves_constant_inputs_into_the_bias() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 2)
    x = np.random.default_rng(0).standard_normal((256, 4)).astype(np.float32)
    x[:, 1] = 3.0  # a constant input: Var = 0, so EC removes its weights first, losslessly
    before = lin(torch.from_numpy(x)).detach()
    pruned = prune_unstructured(lin, 0.25, method="ec", x_calib=x)
    assert isinstance(pruned, nn.Linear)
    assert torch.all(pruned.weight[:, 1] == 0)
    assert torch.allclose(pruned(torch.from_numpy(x)), before, atol=1e-5)
    plain = prune_unstructured(lin, 0.25, method="magnitude")
    assert not torch.allclose(plain(torch.from_numpy(x)), before, atol=1e-3)


def test_channel_removal_really_shrinks_tensors_and_keeps_the_output_shape() -> None:
    torch.manual_seed(0)
    model = build_model("cnn1d", (1, 64), 4).eval()
    x = np.random.default_rng(0).standard_normal((32, 1, 64)).astype(np.float32)
    small, done = remove_channels(model, 0.5, x)
    assert [(d.kept, d.removed) for d in done] == [(16, 16), (32, 32)]
    assert small.get_submodule("features.0").weight.shape == (16, 1, 5)
    assert small.get_submodule("features.3").weight.shape == (32, 16, 5)
    assert small.get_submodule("fc").weight.shape == (4, 32)
    n_small = sum(p.numel() for p in small.parameters())
    n_full = sum(p.numel() for p in model.parameters())
    assert n_small < 0.4 * n_full
    assert small(torch.from_numpy(x)).shape == (32, 4)


def test_batchnorm_recalibration_matches_the_data_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4)).eval()
    x = np.random.default_rng(0).standard_normal((64, 1, 20)).astype(np.float32) * 3 + 1
    recalibrate_batchnorm(model, x, batch_size=16)
    with torch.no_grad():
        act = model[0](torch.from_numpy(x))
    mean = act.mean(dim=(0, 2))
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_mean is not None
    assert torch.allclose(bn.running_mean, mean, atol=1e-4)
    assert not model[1].training


def test_mp_rank_recovers_a_planted_low_rank_signal() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(64, 3, generator=g)
    v = torch.randn(3, 128, generator=g)
    w = u @ v + 0.05 * torch.randn(64, 128, generator=g)
    r, sigma2, _ = mp_rank(w)
    assert r == 3
    assert sigma2 == pytest.approx(0.05**2, rel=0.2)


def test_lowrank_factorization_saves_parameters_and_approximates_the_layer() -> None:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(128, 64)
    with torch.no_grad():
        lin.weight.copy_(
            torch.randn(64, 4, generator=g) @ torch.randn(4, 128, generator=g)
            + 0.01 * torch.randn(64, 128, generator=g)
        )
    model = nn.Sequential(lin).eval()
    fact, report = factorize_lowrank(model)
    assert report[0].factored and report[0].rank_kept == 4
    assert report[0].params_after < report[0].params_before
    x = torch.randn(8, 128, generator=g)
    with torch.no_grad():
        err = (fact(x) - model(x)).norm() / model(x).norm()
    assert float(err) < 0.01  # only the noise part (≈0.3% of the norm) was dropped

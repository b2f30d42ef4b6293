"""Sanity checks for explanations (Adebayo et al. 2018): randomisation, correlations, verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from edgeproof.errors import OptionError
from edgeproof.methods.attribution import Attribution, IntegratedGradients, SmoothGrad
from edgeproof.methods.attribution.sanity import (
    cascading_randomization,
    label_randomized_model,
    randomizable_layers,
    sanity_check,
    sanity_checks,
    spearman_rows,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    ).eval()


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_layers_are_randomised_from_the_top_down_one_more_at_a_time() -> None:
    model = _net()
    assert randomizable_layers(model) == ["0", "3", "5"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for layers, m in cascading_randomization(model, seed=3):
        changed = {
            name.split(".")[0]
            for name, v in m.state_dict().items()
            if not torch.equal(v, before[name])
        }
        assert changed == set(layers)
        seen.append(layers)
    assert seen == [("5",), ("5", "3"), ("5", "3", "0")]
    for k, v in model.state_dict().items():  # the trained model is untouched
        assert torch.equal(v, before[k])


def test_stages_pick_evenly_spaced_cumulative_counts_ending_with_all_layers() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(7)])
    counts = [len(layers) for layers, _ in cascading_randomization(model, stages=3)]
    assert counts == [2, 5, 7]
    with pytest.raises(OptionError, match=r"^stages: 0 is too few"):
        list(cascading_randomization(model, stages=0))


def test_randomisation_is_seeded() -> None:
    model = _net()
    a = [m.state_dict() for _, m in cascading_randomization(model, seed=5)]
    b = [m.state_dict() for _, m in cascading_randomization(model, seed=5)]
    for sa, sb in zip(a, b):
        for k in sa:
            assert torch.equal(sa[k], sb[k])


def test_label_randomised_model_fits_shuffled_labels_and_reports_its_accuracy() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    x, y = _data(24)
    out = label_randomized_model(model, x, y, epochs=200, lr=3e-2, target_accuracy=0.95)
    assert out.train_accuracy >= 0.95 and out.epochs < 200  # stopped once it fitted
    assert not any(p.requires_grad for p in out.module.parameters())
    short = label_randomized_model(model, x, y, epochs=1, lr=1e-2)
    assert short.epochs == 1 and 0.0 <= short.train_accuracy <= 1.0


def test_spearman_rows_matches_scipy_and_is_undefined_for_constant_maps() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 30))
    b = a + rng.normal(size=(5, 30))
    a[1, :10] = 0.0  # ties
    b[1, :10] = 0.0
    rho = spearman_rows(a, b)
    for i in range(5):
        assert rho[i] == pytest.approx(spearmanr(a[i], b[i]).statistic, abs=1e-12)
    b[2] = 1.0
    assert np.isnan(spearman_rows(a, b)[2])


def _fixed(values: torch.Tensor) -> Attribution:
    n = values.shape[0]
    zero = torch.zeros(n, dtype=torch.float64)
    return Attribution("fixed", values, torch.zeros(n, dtype=torch.int64), "logit", zero)


def test_a_map_that_ignores_the_model_is_flagged_and_gradients_pass() -> None:
    model = _net()
    x, y = _data()
    t = torch.zeros(x.shape[0], dtype=torch.int64)
    method = SmoothGrad(n_samples=8, sigma=0.1)

    def smoothgrad(m: nn.Module) -> Attribution:
        return method.attribute(m, x, target=t, generator=torch.Generator().manual_seed(0))

    verdicts = sanity_checks(
        # the input itself as a "map": the same whatever the weights
        {"blind": lambda m: _fixed(x.double()), "smoothgrad": smoothgrad},
        model,
        labels=(x, y),
        label_epochs=3,
    )
    blind = verdicts["blind"]
    assert not blind.depends_on_weights
    assert blind.cascade[-1].abs_corr.mean == pytest.approx(1.0)
    assert "does not depend on the weights" in blind.reason
    verdict = verdicts["smoothgrad"]
    assert verdict.depends_on_weights
    assert [s.label for s in verdict.cascade] == ["5", "5 … 3 (2 of 3)", "5 … 0 (all 3)"]
    assert verdict.label is not None and verdict.label_epochs == 3
    assert verdict.label_train_accuracy is not None
    final = verdict.cascade[-1]
    assert final.abs_corr.ci.low <= final.abs_corr.mean <= final.abs_corr.ci.high
    assert final.abs_corr.ci.high < 0.5


def test_input_times_gradient_magnitudes_follow_the_input_and_the_reason_says_so() -> None:
    model = _net()
    x, _ = _data()
    x[:, :, :4] = 0.0  # half of every input is exactly the baseline: IG is 0 there
    ig = IntegratedGradients(n_steps=8)
    t = torch.zeros(x.shape[0], dtype=torch.int64)
    verdict = sanity_check(lambda m: ig.attribute(m, x, target=t), model, seed=1)
    assert not verdict.depends_on_weights and verdict.label is None
    assert "magnitudes of its maps follow the input" in verdict.reason


def test_threshold_outside_minus_one_to_one_is_an_option_error() -> None:
    model = _net()
    x, _ = _data(4)
    with pytest.raises(OptionError, match=r"^threshold: 1.5 is not a correlation"):
        sanity_check(lambda m: _fixed(x.double()), model, threshold=1.5)

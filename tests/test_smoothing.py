"""Randomised smoothing: agreement with Cohen et al.'s published tables, with statsmodels' bound,
with the analytic p_A of a linear model; determinism, abstention, bad input, and the check."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import beta, binom, norm
from torch import nn

from edgeproof.certify.smoothing import (
    ABSTAIN,
    CertifySettings,
    Smoothed,
    certification_limits,
    certified_accuracy,
    certified_accuracy_curve,
    certified_radius,
    certify_many,
    clopper_pearson_lower,
    min_samples_for_radius,
    paper_radii,
    sample_size_warning,
)
from edgeproof.checks import available_checks, get_check
from edgeproof.checks.base import AuditContext
from edgeproof.checks.smoothing import SmoothingCheck
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.report import render_html
from edgeproof.runner import audit
from edgeproof.spec import InputSpec, ThreatModel

_REPO = os.environ.get("EDGEPROOF_SMOOTHING_REPO")
#: Cohen et al.'s per-image certify logs, read from a clone of locuslab/smoothing named by
#: ``EDGEPROOF_SMOOTHING_REPO`` (the repository has no licence, so its data is not copied here)
LOGS = Path(_REPO) / "data" / "certify" if _REPO else None


def _log(path: str) -> dict[str, np.ndarray]:
    """One of core.py's certify logs (tab-separated: idx label predict radius correct time)."""
    if LOGS is None or not (LOGS / path).is_file():
        pytest.skip(
            "set EDGEPROOF_SMOOTHING_REPO to a clone of locuslab/smoothing to compare with its "
            "published logs (not redistributed: the repository has no licence)"
        )
    with (LOGS / path).open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {
        "label": np.array([int(r["label"]) for r in rows]),
        "predict": np.array([int(r["predict"]) for r in rows]),
        "radius": np.array([float(r["radius"]) for r in rows]),
        "correct": np.array([int(r["correct"]) for r in rows]),
    }


def _table(path: str, radii: list[float]) -> list[str]:
    """Our certified accuracy from a log, formatted as analyze.py writes it ("{:.2f}")."""
    log = _log(path)
    correct = (log["predict"] == log["label"]) & (log["predict"] != ABSTAIN)
    np.testing.assert_array_equal(correct, log["correct"] == 1)  # their column, our definition
    acc = certified_accuracy(log["radius"], correct, radii)
    return [f"{a:.2f}" for a in acc.accuracy]


# ---------------------------------------------------------------------------------------------
# (a) the published tables, recomputed from the published per-image logs


def test_imagenet_sigma_1_table_equals_the_readme_table() -> None:
    # README.md, "ImageNet results", row σ = 1.00, radii 0.0 … 3.0 (asterisks dropped).
    readme = ["0.44", "0.38", "0.33", "0.26", "0.19", "0.15", "0.12"]
    radii = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert _table("imagenet/resnet50/noise_1.00/test/sigma_1.00", radii) == readme


def test_imagenet_sigma_050_table_equals_their_generated_table_and_the_readme_where_it_agrees() -> (
    None
):
    # analysis/markdown/vary_noise_imagenet (written by their analyze.py), row σ = 0.50.
    generated = ["0.46", "0.37", "0.29", "0.00", "0.00", "0.00"]
    assert _table("imagenet/resnet50/noise_0.50/test/sigma_0.50", [0.5, 1, 1.5, 2, 2.5, 3]) == (
        generated
    )
    # The README's hand-made row reads 0.57 0.46 0.38 0.28 0.00 0.00 0.00: the cells at r = 1.0
    # and 1.5 are 186/500 = 0.372 and 143/500 = 0.286 in the log (and in their own generated
    # table); every other cell agrees.
    ours = _table("imagenet/resnet50/noise_0.50/test/sigma_0.50", [0, 0.5, 2, 2.5, 3])
    assert ours == ["0.57", "0.46", "0.00", "0.00", "0.00"]
    log = _log("imagenet/resnet50/noise_0.50/test/sigma_0.50")
    exact = certified_accuracy(log["radius"], log["correct"] == 1, [1.0, 1.5])
    assert exact.certified.tolist() == [186, 143] and exact.samples == 500


def test_cifar10_sigma_025_table_equals_their_generated_table() -> None:
    # analysis/markdown/vary_noise_cifar10, row σ = 0.25 (the README's CIFAR-10 table is commented
    # out and stale; this is the table their analyze.py writes from this log).
    generated = ["0.60", "0.43", "0.27", "0.00", "0.00", "0.00"]
    radii = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert _table("cifar10/resnet110/noise_0.25/test/sigma_0.25", radii) == generated


def test_certified_accuracy_counts_radius_at_least_r_with_wilson_intervals() -> None:
    radius = np.array([0.0, 0.5, 0.5, 1.0, 2.0, 0.0])
    correct = np.array([True, True, False, True, True, False])  # the last: an abstention
    acc = certified_accuracy(radius, correct, [0.0, 0.5, 0.75, 2.0, 2.5])
    assert acc.certified.tolist() == [4, 3, 2, 1, 0]
    np.testing.assert_allclose(acc.accuracy, np.array([4, 3, 2, 1, 0]) / 6)
    assert np.all(acc.ci_low <= acc.accuracy) and np.all(acc.accuracy <= acc.ci_high)
    assert acc.ci_low[-1] == 0.0 and acc.ci_high[-1] > 0.0
    assert acc.at(0.5) == pytest.approx(0.5)


def test_step_curve_drops_just_after_each_certified_radius() -> None:
    radius = np.array([0.0, 0.5, 1.0, 1.0])
    correct = np.array([True, True, True, False])
    curve = certified_accuracy_curve(radius, correct)
    # vertices: (r, acc(radius >= r)) then (r, acc(radius > r)) at each break 0, 0.5, 1.0
    assert curve.x.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    assert curve.y.tolist() == [0.75, 0.5, 0.5, 0.25, 0.25, 0.0]


def test_paper_radii_reach_the_first_step_at_or_beyond_the_largest_radius() -> None:
    assert paper_radii(0.616) == (0.0, 0.25, 0.5, 0.75)
    assert paper_radii(0.5) == (0.0, 0.25, 0.5)
    assert paper_radii(0.0) == (0.0, 0.25)
    assert paper_radii(3.0, 0.5) == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


# ---------------------------------------------------------------------------------------------
# (b) Clopper–Pearson against statsmodels (the bound core.py calls)


def test_clopper_pearson_lower_equals_statsmodels_beta_interval() -> None:
    proportion = pytest.importorskip(
        "statsmodels.stats.proportion",
        reason="statsmodels is the reference for the Clopper-Pearson bound (test extra)",
    )
    for n in (1, 2, 7, 10, 100, 1000, 100_000):
        ks = sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1)))
        for alpha in (0.001, 0.01, 0.05, 0.25):
            for k in ks:
                theirs = proportion.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
                assert clopper_pearson_lower(k, n, alpha) == pytest.approx(
                    float(theirs), rel=1e-13, abs=1e-300
                ), (k, n, alpha)


def test_clopper_pearson_lower_is_scipys_beta_quantile_bit_for_bit() -> None:
    for n in (1, 10, 1000, 100_000):
        for k in sorted({1, n // 2, n - 1, n} - {0}):
            for alpha in (0.001, 0.05):
                assert clopper_pearson_lower(k, n, alpha) == float(beta.ppf(alpha, k, n - k + 1))


def test_clopper_pearson_lower_is_vectorised_and_zero_without_successes() -> None:
    k = np.array([0, 5, 10])
    low = clopper_pearson_lower(k, 10, 0.05)
    assert low[0] == 0.0 and 0.0 < low[1] < 0.5 < low[2] < 1.0
    assert low[2] == pytest.approx(0.05 ** (1 / 10), rel=1e-12)  # all n: α^(1/n)


# ---------------------------------------------------------------------------------------------
# (c) a linear model: p_A = Φ(margin / (σ‖w‖)) and the true radius is the distance to the plane


def _linear(w: torch.Tensor, b: float) -> nn.Module:
    """Two-class linear model: logit 1 − logit 0 = w·x + b (on the flattened input)."""
    lin = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-w.flatten(), w.flatten()]) / 2)
        lin.bias.copy_(torch.tensor([-b / 2, b / 2]))
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_certify_radius_on_a_linear_model_matches_the_analytic_one_within_the_cp_slack(
    margin: float,
) -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn((1, 4, 4), generator=g)
    b = 0.1
    x0 = torch.rand((1, 4, 4), generator=g)
    wn = float(w.norm())
    # move x0 so that w·x + b = margin·‖w‖ (distance `margin` to the decision boundary)
    x = x0 + (margin * wn - (float((w * x0).sum()) + b)) * w / wn**2
    sigma, n, alpha = 0.25, 20_000, 0.001
    p_a = float(norm.cdf(margin / sigma))
    smoothed = Smoothed(_linear(w, b), 2, sigma)
    c = smoothed.certify(x, n0=100, n=n, alpha=alpha, batch_size=4096, generator=g)
    assert c.prediction == 1 and c.top_class == 1
    n_a = int(c.counts_estimation[1])
    assert abs(n_a / n - p_a) <= 5 * math.sqrt(p_a * (1 - p_a) / n)
    # sound: never above the true radius σΦ⁻¹(p_A) = margin; tight: no lower than the bound at a
    # count 5 binomial standard deviations below the mean (the Clopper–Pearson slack)
    k_low = binom.ppf(norm.cdf(-5), n, p_a)
    floor = certified_radius(clopper_pearson_lower(k_low, n, alpha), sigma)
    assert floor <= c.radius <= margin
    assert c.radius == pytest.approx(sigma * norm.ppf(clopper_pearson_lower(n_a, n, alpha)))


def test_certify_abstains_on_the_decision_boundary_of_a_linear_model() -> None:
    w = torch.ones((1, 2, 2))
    x = torch.full((1, 2, 2), -0.25)  # w·x + b = 0 with b = 1: p_A = 0.5
    c = Smoothed(_linear(w, 1.0), 2, 0.5).certify(
        x, n0=100, n=2000, generator=torch.Generator().manual_seed(0)
    )
    assert c.abstained and c.prediction == ABSTAIN and c.radius == 0.0 and c.p_a_lower < 0.5


# ---------------------------------------------------------------------------------------------
# (d) determinism by seed, (e) PREDICT abstains on a tie


def test_same_seed_gives_the_same_certificate_and_another_seed_other_noise() -> None:
    model = _linear(torch.tensor([[1.0, -2.0, 0.5]]), 0.0)
    x = torch.tensor([[0.3, -0.1, 0.2]])
    s = Smoothed(model, 2, 0.5)

    def run(seed: int) -> tuple[list[int], float]:
        c = s.certify(x, 50, 3000, 0.001, 256, torch.Generator().manual_seed(seed))
        return c.counts_estimation.tolist(), c.radius

    assert run(11) == run(11)
    assert run(11)[0] != run(12)[0]


def test_certify_many_keys_make_each_sample_independent_of_the_others() -> None:
    model = _linear(torch.tensor([[1.0, -2.0, 0.5]]), 0.0)
    s = Smoothed(model, 2, 0.5)
    x = torch.tensor([[[0.3, -0.1, 0.2]], [[0.0, 0.4, 0.1]], [[1.0, 1.0, 1.0]]])
    full = certify_many(s, x, [1, 0, 0], n0=20, n=500, batch_size=128, seed=5)
    part = certify_many(s, x[1:], [0, 0], n0=20, n=500, batch_size=128, seed=5, keys=[1, 2])
    np.testing.assert_array_equal(full.counts[1:], part.counts)
    np.testing.assert_array_equal(full.radii[1:], part.radii)
    assert full.settings == {
        "sigma": 0.5,
        "n0": 20,
        "n": 500,
        "alpha": 0.001,
        "batch_size": 128,
        "seed": 5,
    }


class _Alternating(nn.Module):
    """Votes class 0 for even rows of the batch and class 1 for odd rows: an exact tie."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 3)
        out[torch.arange(x.shape[0]) % 2 == 1, 1] = 1.0
        out[torch.arange(x.shape[0]) % 2 == 0, 0] = 1.0
        return out


def test_predict_abstains_when_the_top_two_classes_tie() -> None:
    p = Smoothed(_Alternating(), 3, 0.1).predict(torch.zeros(2), n=1000, batch_size=100)
    assert p.counts.tolist() == [500, 500, 0]
    assert p.abstained and p.prediction == ABSTAIN and p.p_value == pytest.approx(1.0)


def test_predict_returns_the_clear_winner_and_abstains_near_an_even_split() -> None:
    model = _linear(torch.tensor([[1.0, 0.0]]), 0.0)
    s = Smoothed(model, 2, 0.5)
    g = torch.Generator().manual_seed(0)
    clear = s.predict(torch.tensor([[2.0, 0.0]]), n=1000, alpha=0.001, generator=g)
    assert clear.prediction == 1 and clear.p_value < 1e-10
    close = s.predict(torch.tensor([[0.0, 0.0]]), n=1000, alpha=0.001, generator=g)
    assert close.abstained and close.p_value > 0.001


# ---------------------------------------------------------------------------------------------
# models: any callable, module modes, output shape


def test_a_numpy_callable_votes_like_the_module_it_wraps() -> None:
    module = _linear(torch.tensor([[1.0, -1.0, 0.5]]), 0.2)

    def as_numpy(t: torch.Tensor) -> np.ndarray:  # what an ONNX Runtime wrapper returns
        out: np.ndarray = module(t).detach().numpy()
        return out

    x = torch.tensor([[0.1, 0.2, 0.3]])
    a = Smoothed(module, 2, 0.3).sample_counts(x, 700, 64, torch.Generator().manual_seed(1))
    b = Smoothed(as_numpy, 2, 0.3).sample_counts(x, 700, 64, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)


def test_a_module_in_train_mode_is_sampled_in_eval_mode_and_left_as_it_was() -> None:
    module = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(2, 2)).train()
    s = Smoothed(module, 2, 0.1)
    x = torch.tensor([[1.0, 2.0]])
    a = s.sample_counts(x, 200, 50, torch.Generator().manual_seed(0))
    b = s.sample_counts(x, 200, 50, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)  # dropout off while sampling (else a ≠ b w.h.p.)
    assert all(m.training for m in module.modules())
    module.eval()
    module[1].train()  # mixed modes come back as they were
    s.sample_counts(x, 10, 10)
    assert [m.training for m in module.modules()] == [False, False, True, False]


def test_a_model_with_the_wrong_number_of_outputs_is_a_spec_error() -> None:
    s = Smoothed(_linear(torch.ones(1, 2), 0.0), 3, 0.1)
    with pytest.raises(SpecError, match=r"logits of shape \[batch, 3\]"):
        s.sample_counts(torch.zeros(1, 2), 10)


# ---------------------------------------------------------------------------------------------
# bad input, and the sample-size limits


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"n0": 200, "n": 100}, "n0"),
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n"),
        ({"n": -5}, "n"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_sampling_settings_are_one_line_option_errors(
    kwargs: dict[str, float], option: str
) -> None:
    settings = {"n0": 10, "n": 100, "alpha": 0.001, "batch_size": 10, **kwargs}
    s = Smoothed(_linear(torch.ones(1, 2), 0.0), 2, 0.1)
    with pytest.raises(OptionError) as info:
        s.certify(torch.zeros(1, 2), **settings)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"{option}: ") and "\n" not in str(info.value)
    assert info.value.option == option
    with pytest.raises(OptionError, match=f"^{option}: "):
        CertifySettings(**settings)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=f"^{option}: "):
        SmoothingCheck(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), float("inf")])
def test_a_non_positive_or_non_finite_sigma_is_an_option_error(sigma: float) -> None:
    with pytest.raises(OptionError, match=r"^sigma: .* must be a positive finite number"):
        Smoothed(_linear(torch.ones(1, 2), 0.0), 2, sigma)
    with pytest.raises(OptionError, match=r"^sigma: "):
        SmoothingCheck(sigma=sigma)


def test_predict_checks_n_alpha_and_batch_size_too() -> None:
    s = Smoothed(_linear(torch.ones(1, 2), 0.0), 2, 0.1)
    with pytest.raises(OptionError, match=r"^n: "):
        s.predict(torch.zeros(1, 2), n=0)
    with pytest.raises(OptionError, match=r"^alpha: "):
        s.predict(torch.zeros(1, 2), alpha=2.0)
    with pytest.raises(OptionError, match=r"^batch_size: "):
        s.predict(torch.zeros(1, 2), batch_size=-1)


def test_limits_all_votes_give_alpha_to_the_one_over_n() -> None:
    lim = certification_limits(1000, 0.001, 0.25)
    assert lim.max_p_a_lower == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    assert lim.max_radius == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 1000)), rel=1e-12)
    assert lim.can_certify and lim.min_n == 10


def test_too_few_samples_to_certify_anything_are_named_with_the_n_that_works() -> None:
    assert not certification_limits(9, 0.001, 0.25).can_certify  # 0.001^(1/9) = 0.464
    assert certification_limits(10, 0.001, 0.25).can_certify  # 0.001^(1/10) = 0.501
    msg = sample_size_warning(9, 0.001, 0.25, [0.0, 0.25])
    assert msg is not None and msg.startswith("n=9 ") and "use n >= 10" in msg
    c = Smoothed(_linear(torch.ones(1, 2), 0.0), 2, 0.25).certify(
        torch.full((1, 2), 5.0), n0=9, n=9, generator=torch.Generator().manual_seed(0)
    )
    assert c.counts_estimation.tolist() == [0, 9] and c.abstained  # all votes, still abstains


def test_a_radius_beyond_reach_is_named_with_the_samples_it_needs() -> None:
    msg = sample_size_warning(1000, 0.001, 0.25, [0.0, 0.75, 1.0])
    need = min_samples_for_radius(0.75, 0.25, 0.001)
    assert msg is not None and "0.616" in msg and "0.75" in msg and f"use n >= {need}" in msg
    assert certification_limits(need, 0.001, 0.25).max_radius >= 0.75
    assert certification_limits(need - 1, 0.001, 0.25).max_radius < 0.75
    assert sample_size_warning(1000, 0.001, 0.25, [0.0, 0.25, 0.5]) is None
    assert sample_size_warning(100_000, 0.001, 0.25, [0.75]) is None


# ---------------------------------------------------------------------------------------------
# the check


def _ctx(model: LoadedModel, data: Dataset, seed: int = 0) -> AuditContext:
    assert model.spec is not None
    return AuditContext(model=model, data=data, threat=ThreatModel(model.spec), seed=seed)


def test_smoothing_is_registered_and_needs_data_and_forward_but_no_gradients() -> None:
    assert "smoothing" in available_checks()
    c = get_check("smoothing")
    assert c.needs_data and c.needs_forward and not c.needs_gradients
    assert not c.needs_architecture
    assert "not trained with Gaussian noise" in c.description
    assert c.headline == ("average_certified_radius", "certified_accuracy@0", "abstention_rate")


def test_smoothing_check_on_digits_reports_a_falling_curve_with_cis(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    check = SmoothingCheck(n=400, max_samples=24, batch_size=500)
    res = check.run(_ctx(digits_model, digits_test))
    names = [m.name for m in res.metrics]
    assert names[:3] == list(check.headline)
    # default σ = 0.25 × domain width; default radii 0, 0.25, … up to the first one beyond reach
    lim = certification_limits(400, 0.001, 0.25)
    assert res.settings["sigma"] == 0.25 and res.settings["radii"] == [0.0, 0.25, 0.5, 0.75]
    assert lim.max_radius < 0.75
    accs = [res.metric(f"certified_accuracy@{r:g}") for r in (0, 0.25, 0.5, 0.75)]
    values = [m.value for m in accs]
    assert values == sorted(values, reverse=True) and values[0] > 0.5 and values[-1] == 0.0
    for m in accs:
        assert m.ci is not None and m.ci.low <= m.value <= m.ci.high
    assert res.metric("time_per_sample").unit == "ms" and res.metric("time_per_sample").value > 0
    table = next(t for t in res.tables if t.name == "certified_accuracy")
    assert [row[0] for row in table.rows] == [0.0, 0.25, 0.5, 0.75]
    certs = next(t for t in res.tables if t.name == "certificates")
    assert len(certs.rows) == 24
    assert any("0.75" in f.message and "by construction" in f.message for f in res.findings)
    assert res.figures and res.figures[0].svg.startswith("<svg")


def test_smoothing_check_is_deterministic_by_seed(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    check = SmoothingCheck(n=200, max_samples=8, radii=[0.1, 0.2])
    a = check.run(_ctx(digits_model, digits_test, seed=4))
    b = check.run(_ctx(digits_model, digits_test, seed=4))
    assert [t.rows for t in a.tables] == [t.rows for t in b.tables]
    assert a.settings["radii"] == [0.0, 0.1, 0.2]


def test_smoothing_check_warns_when_n_cannot_certify_and_when_it_abstains_a_lot(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    res = SmoothingCheck(n0=9, n=9, max_samples=10).run(_ctx(digits_model, digits_test))
    assert res.metric("abstention_rate").value == 1.0
    warnings = [f.message for f in res.findings if f.severity == "warning"]
    assert any(m.startswith("n=9 ") and "use n >= 10" in m for m in warnings)
    assert any("abstains on 100%" in m and "not trained with noise" in m for m in warnings)


def test_smoothing_check_at_a_large_sigma_flags_high_abstention(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    res = SmoothingCheck(sigma=1.5, n=200, max_samples=16).run(_ctx(digits_model, digits_test))
    rate = res.metric("abstention_rate").value
    assert rate >= 0.2
    found = [f for f in res.findings if "abstains" in f.message]
    assert found and found[0].severity == "warning" and "σ=1.5" in found[0].message


def _onnx_linear(spec: InputSpec, k: int) -> LoadedModel:
    """A Flatten → MatMul ONNX model (forward only)."""
    w = np.random.default_rng(0).normal(size=(spec.numel, k)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("MatMul", ["f", "W"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *spec.shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return LoadedModel(path=None, format="onnx", session=sess, spec=spec)


def test_smoothing_check_runs_on_an_onnx_session_in_an_audit_with_a_valid_report(
    digits_test: Dataset,
) -> None:
    spec = InputSpec((1, 8, 8), num_classes=10)
    model = _onnx_linear(spec, 10)
    report = audit(model, digits_test, [SmoothingCheck(n=100, max_samples=6, batch_size=64)])
    (res,) = report.checks
    assert res.status == "ok", res.error
    assert res.metric("certified_accuracy@0").value >= 0.0
    report.validate()
    page = render_html(report)
    assert "Randomised smoothing" in page and "Per-sample certificates" in page

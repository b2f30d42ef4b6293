"""Attribution methods: agreement with Captum 0.9.0, exact cases, adaptive IG, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attribution import (
    RULES,
    FeatureAblation,
    FrequencyOcclusion,
    GradientShap,
    GradientShapDraws,
    IntegratedGradients,
    KernelShap,
    Occlusion,
    Rule,
    SmoothGrad,
    explain,
    make_bands,
    method_names,
)
from edgeproof.methods.attribution.integrated_gradients import quadrature


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Agreement with the peer: 1e-5 absolute and relative."""
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    ).eval()


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [
        ("cnn", _cnn(), torch.rand(5, 1, 8, 8, generator=g)),
        ("mlp", _mlp(), torch.randn(7, 6, generator=g)),
    ]


@pytest.fixture(scope="module")
def captum() -> object:
    return pytest.importorskip("captum.attr", reason="captum==0.9.0 (test extra) is not installed")


def _targets(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


# --- agreement with Captum ----------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_integrated_gradients_equals_captum_for_every_rule(
    captum: object, cases: list[tuple[str, nn.Module, torch.Tensor]], rule: Rule
) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    for _, model, x in cases:
        t = _targets(model, x)
        ours = IntegratedGradients(n_steps=20, rule=rule, internal_batch_size=7).attribute(
            model, x, baseline=0.1
        )
        theirs, delta = CaptumIG(model).attribute(
            x, baselines=0.1, target=t, n_steps=20, method=rule, return_convergence_delta=True
        )
        # Captum's trapezoid weights sum to (n-1)/n, ours (the composite rule) to 1
        scale = 20 / 19 if rule == "riemann_trapezoid" else 1.0
        _close(ours.values, theirs.double() * scale)
        if rule != "riemann_trapezoid":
            torch.testing.assert_close(ours.delta, delta.double(), atol=1e-5, rtol=1e-4)


def test_trapezoid_is_the_composite_rule_and_integrates_a_line_exactly() -> None:
    a, w = quadrature("riemann_trapezoid", 5)
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(w, [0.125, 0.25, 0.25, 0.25, 0.125])
    assert float(np.sum(w * a)) == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize("absolute", [False, True])
def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(
    captum: object, cases: list[tuple[str, nn.Module, torch.Tensor]], absolute: bool
) -> None:
    from captum.attr import NoiseTunnel, Saliency

    ns, sigma = 6, 0.2
    for _, model, x in cases:
        torch.manual_seed(3)
        theirs = NoiseTunnel(Saliency(model)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=ns,
            stdevs=sigma,
            target=_targets(model, x),
            abs=absolute,
        )
        torch.manual_seed(3)  # Captum's draw, reproduced: one block, sample-major
        std = torch.tensor(sigma).repeat((x.shape[0] * ns, *x.shape[1:]))
        noise = torch.normal(0, std).view(x.shape[0], ns, *x.shape[1:])
        ours = SmoothGrad(
            n_samples=ns, sigma=sigma, absolute=absolute, internal_batch_size=5
        ).attribute(model, x, noise=noise)
        _close(ours.values, theirs.double())


def test_gradient_shap_equals_captum_with_the_same_draws(
    captum: object, cases: list[tuple[str, nn.Module, torch.Tensor]]
) -> None:
    from captum.attr import GradientShap as CaptumGS

    ns, sigma = 6, 0.1
    for _, model, x in cases:
        n = x.shape[0]
        dist = torch.rand(4, *x.shape[1:], generator=torch.Generator().manual_seed(4))
        np.random.seed(1)
        torch.manual_seed(2)
        theirs = CaptumGS(model).attribute(
            x, baselines=dist, n_samples=ns, stdevs=sigma, target=_targets(model, x)
        )
        # Captum's draws, reproduced in its order: numpy baseline indices, torch noise, numpy α
        np.random.seed(1)
        torch.manual_seed(2)
        index = torch.from_numpy(np.random.choice(4, ns * n)).view(n, ns)
        std = torch.tensor(sigma).repeat((n * ns, *x.shape[1:]))
        noise = torch.normal(0, std).view(n, ns, *x.shape[1:])
        alpha = torch.tensor(np.random.uniform(0, 1, n * ns), dtype=torch.float32).view(n, ns)
        ours = GradientShap(n_samples=ns, sigma=sigma, internal_batch_size=5).attribute(
            model, x, baseline=dist, draws=GradientShapDraws(index, alpha, noise)
        )
        _close(ours.values, theirs.double())


@pytest.mark.parametrize(
    ("window", "strides"),
    [((1, 3, 3), (1, 2, 2)), ((1, 2, 2), 1), ((3, 3), 1), ((1, 4, 3), (1, 3, 2))],
)
def test_occlusion_equals_captum_including_cropped_edge_windows(
    captum: object, window: tuple[int, ...], strides: int | tuple[int, ...]
) -> None:
    from captum.attr import Occlusion as CaptumOcclusion

    model = _cnn()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    full = (1, *window) if len(window) == 2 else window
    theirs = CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=full, strides=strides, baselines=0.3, target=_targets(model, x)
    )
    ours = Occlusion(window=window, strides=strides, internal_batch_size=13).attribute(
        model, x, baseline=0.3
    )
    _close(ours.values, theirs.double())


def test_occlusion_of_tabular_windows_equals_captum(captum: object) -> None:
    from captum.attr import Occlusion as CaptumOcclusion

    model = _mlp()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(6))
    theirs = CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=(2,), strides=1, baselines=0.0, target=_targets(model, x)
    )
    ours = Occlusion(window=2, strides=1).attribute(model, x)
    _close(ours.values, theirs.double())


def test_feature_ablation_equals_captum_with_and_without_groups(captum: object) -> None:
    from captum.attr import FeatureAblation as CaptumFA

    model = _mlp()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(7))
    t = _targets(model, x)
    groups = torch.tensor([0, 0, 1, 2, 2, 5])
    theirs = CaptumFA(model).attribute(x, baselines=0.5, target=t, feature_mask=groups.unsqueeze(0))
    ours = FeatureAblation(groups=groups, internal_batch_size=4).attribute(model, x, baseline=0.5)
    _close(ours.values, theirs.double())
    cnn = _cnn()
    xi = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    theirs = CaptumFA(cnn).attribute(xi, target=_targets(cnn, xi))
    _close(FeatureAblation().attribute(cnn, xi).values, theirs.double())


def test_kernel_shap_with_every_coalition_equals_captum_exact_shapley_values(
    captum: object,
) -> None:
    from captum.attr import ShapleyValues

    model = _mlp()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(9))
    baseline = torch.randn(1, 6, generator=torch.Generator().manual_seed(10))
    theirs = ShapleyValues(model).attribute(
        x, baselines=baseline, target=_targets(model, x), perturbations_per_eval=120
    )
    ours = KernelShap().attribute(model, x, baseline=baseline)  # 2^6 − 2 ≤ budget: exact
    assert ours.converged is not None and bool(ours.converged.all())
    _close(ours.values, theirs.double())
    assert ours.delta is not None and float(ours.delta.abs().max()) < 1e-9


# --- exact cases ----------------------------------------------------------------------------


def test_integrated_gradients_of_a_linear_model_is_weight_times_displacement() -> None:
    torch.manual_seed(11)
    model = nn.Linear(10, 4).eval()
    x = torch.randn(6, 10)
    x0 = torch.randn(10)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    for rule in ("gausslegendre", "riemann_middle", "riemann_trapezoid"):
        att = IntegratedGradients(n_steps=3, rule=rule).attribute(
            model, x, target=target, baseline=x0
        )
        expected = model.weight.detach().double()[target] * (x - x0).double()
        torch.testing.assert_close(att.values, expected, atol=1e-6, rtol=1e-6)
        assert att.delta is not None and float(att.delta.abs().max()) < 1e-5


def test_probability_output_explains_the_softmax_score_with_completeness() -> None:
    model = _mlp()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(22))
    att = IntegratedGradients(n_steps=64, output="probability").attribute(model, x)
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1).gather(1, att.target.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(att.score, p.double(), atol=1e-6, rtol=1e-6)
    assert att.delta is not None and float(att.delta.abs().max()) < 1e-5


def test_kernel_shap_gives_a_feature_equal_to_the_background_zero() -> None:
    model = _mlp()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(12))
    background = torch.randn(4, 6, generator=torch.Generator().manual_seed(13))
    background[:, 2] = x[0, 2]  # feature 2 of sample 0 equals every background value
    att = KernelShap().attribute(model, x, baseline=background)
    assert float(att.values[0, 2]) == 0.0
    assert float(att.values[1].abs().sum()) > 0
    assert att.delta is not None and float(att.delta.abs().max()) < 1e-9


def test_frequency_occlusion_finds_the_band_a_model_listens_to() -> None:
    t = torch.arange(64, dtype=torch.float32)
    probe = torch.cos(2 * math.pi * 10 * t / 64)  # bin 10 of 33: band 2 of 4 (0.125..0.25)

    class Tuned(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (x[:, 0] * probe).sum(dim=1, keepdim=True)
            return torch.cat([s, -s], dim=1)

    g = torch.Generator().manual_seed(14)
    x = (3 * probe + 0.3 * torch.randn(4, 1, 64, generator=g)).reshape(4, 1, 64)
    att = FrequencyOcclusion(bands=4).attribute(Tuned(), x, target=0)
    assert att.values.shape == (4, 4)
    assert [b.bins for b in att.bands][1] == tuple(range(8, 16))
    # removing the band that holds the probe's frequency removes (almost) the whole score
    drop = att.values[:, 1]
    torch.testing.assert_close(drop, att.score, rtol=0.05, atol=0.0)
    assert float(att.values[:, [0, 2, 3]].abs().max()) < 0.05 * float(att.score.abs().min())


def test_frequency_bands_in_hertz_and_per_channel() -> None:
    bands = make_bands(256, [(0.0, 5.0), (5.0, 50.0)], sample_rate=100.0)
    assert bands[0].label == "0–5 Hz" and bands[0].bins == tuple(range(13))
    assert bands[1].bins[-1] == 128  # the Nyquist bin is in the last band
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 32, 3)).eval()
    x = torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(15))
    att = FrequencyOcclusion(bands=4, per_channel=True).attribute(model, x)
    assert att.values.shape == (2, 2, 4)
    # a linear model: the drops of one band over the two channels add up to the joint drop
    joint = FrequencyOcclusion(bands=4).attribute(model, x)
    torch.testing.assert_close(att.values.sum(dim=1), joint.values, atol=1e-5, rtol=1e-5)


# --- adaptive IG and batching ---------------------------------------------------------------


def test_adaptive_integrated_gradients_meets_the_tolerance_with_fewer_steps_where_easy() -> None:
    model = _cnn()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(16))
    ig = IntegratedGradients(n_steps=4, tolerance=1e-2, max_steps=256, internal_batch_size=64)
    att = ig.attribute(model, x)
    assert att.converged is not None and att.n_steps is not None and att.delta is not None
    assert att.reference_score is not None
    assert bool(att.converged.all())
    change = (att.score - att.reference_score).abs()
    assert bool((att.delta.abs() <= 1e-2 * change + 1e-6).all())
    steps = att.n_steps
    assert int(steps.min()) == 4 and int(steps.max()) > 4  # easy samples stop early
    # only unconverged samples were integrated again: 4 + 8 + … + n_i = 2·n_i − 4 rows each
    assert att.evaluations == 2 * 6 + int((2 * steps - 4).sum())
    # each sample's estimate is the fixed-step IG at its final step count
    for k in steps.unique().tolist():
        rows = (steps == k).nonzero().squeeze(1)
        fixed = IntegratedGradients(n_steps=int(k)).attribute(model, x[rows])
        torch.testing.assert_close(att.values[rows], fixed.values, atol=1e-7, rtol=1e-6)


def test_adaptive_integrated_gradients_reports_samples_that_miss_the_cap() -> None:
    model = _cnn()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(17))
    att = IntegratedGradients(n_steps=2, tolerance=1e-9, abs_tolerance=0.0, max_steps=8).attribute(
        model, x
    )
    assert att.converged is not None and not bool(att.converged.any())
    assert att.n_steps is not None and att.n_steps.tolist() == [8, 8, 8]


@pytest.mark.parametrize("ibs", [1, 3, 1000])
def test_results_do_not_depend_on_the_internal_batch_size(ibs: int) -> None:
    model = _cnn()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(18))
    ref = IntegratedGradients(n_steps=5).attribute(model, x)
    got = IntegratedGradients(n_steps=5, internal_batch_size=ibs).attribute(model, x)
    torch.testing.assert_close(got.values, ref.values, atol=1e-6, rtol=1e-6)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = SmoothGrad(n_samples=4).attribute(model, x, generator=g1)
    b = SmoothGrad(n_samples=4, internal_batch_size=ibs).attribute(model, x, generator=g2)
    torch.testing.assert_close(a.values, b.values, atol=1e-6, rtol=1e-6)
    occ = Occlusion(window=(1, 3, 3), internal_batch_size=ibs).attribute(model, x).values
    torch.testing.assert_close(occ, Occlusion(window=(1, 3, 3)).attribute(model, x).values)


def test_gradient_shap_delta_shrinks_with_more_draws() -> None:
    model = _mlp()
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(19))
    dist = torch.randn(16, 6, generator=torch.Generator().manual_seed(20))
    few = GradientShap(n_samples=4).attribute(
        model, x, baseline=dist, generator=torch.Generator().manual_seed(0)
    )
    many = GradientShap(n_samples=400).attribute(
        model, x, baseline=dist, generator=torch.Generator().manual_seed(0)
    )
    assert few.delta is not None and many.delta is not None
    assert float(many.delta.abs().mean()) < 0.5 * float(few.delta.abs().mean())


def test_the_model_is_given_back_in_the_mode_it_came_in() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    x = torch.randn(3, 4)
    a = IntegratedGradients(n_steps=4).attribute(model, x)
    b = IntegratedGradients(n_steps=4).attribute(model, x)
    torch.testing.assert_close(a.values, b.values)  # dropout off during the call
    assert model.training


# --- explain() and bad input ----------------------------------------------------------------


def test_explain_runs_every_registered_method_on_a_time_series_model() -> None:
    torch.manual_seed(21)
    model = nn.Sequential(nn.Conv1d(1, 3, 5), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 28, 4))
    model.eval()
    x = torch.randn(2, 1, 32)
    for name in method_names():
        baseline = torch.randn(5, 1, 32) if name in ("gradient_shap", "kernel_shap") else None
        extra = {"n_samples": 40} if name == "kernel_shap" else {}
        att = explain(model, x, method=name, baseline=baseline, **extra)
        assert att.method == name
        assert att.values.shape[0] == 2 and att.values.dtype == torch.float64
        assert torch.equal(att.target, model(x).argmax(dim=1))


def test_explain_refuses_gradient_methods_without_a_module_but_occludes() -> None:
    model = _mlp()

    def forward(t: torch.Tensor) -> torch.Tensor:
        return model(t).detach()

    x = torch.randn(2, 6)
    with pytest.raises(OptionError, match=r"^method: integrated_gradients needs gradients"):
        explain(forward, x)
    att = explain(forward, x, method="feature_ablation")
    assert att.values.shape == (2, 6)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda m, x: IntegratedGradients(n_steps=0), r"^n_steps: 0 must be an integer >= 1"),
        (lambda m, x: IntegratedGradients(n_steps=-3), r"^n_steps: -3"),
        (
            lambda m, x: IntegratedGradients(rule="riemann_trapezoid", n_steps=1),
            r"^n_steps: 1 must be an integer >= 2",
        ),
        (
            lambda m, x: IntegratedGradients(rule="simpson"),  # type: ignore[arg-type]
            r"^rule: unknown rule 'simpson'",
        ),
        (
            lambda m, x: IntegratedGradients().attribute(m, x, baseline=torch.zeros(5)),
            r"^baseline: shape \[5\] does not fit inputs of shape \[3, 6\]",
        ),
        (
            lambda m, x: IntegratedGradients().attribute(m, x, target=3),
            r"^target: class 3 is outside the model's 3 classes",
        ),
        (
            lambda m, x: IntegratedGradients().attribute(m, x, target=[0, 1]),
            r"^target: got 2 value\(s\) of type int64 for 3 samples",
        ),
        (
            lambda m, x: GradientShap().attribute(m, x, baseline=torch.zeros(2, 5)),
            r"^baseline: shape \[2, 5\] does not fit",
        ),
        (
            lambda m, x: SmoothGrad().attribute(m, x, baseline=torch.zeros(6)),
            r"^baseline: smoothgrad takes no baseline",
        ),
        (lambda m, x: SmoothGrad(sigma=-1.0), r"^sigma: -1.0 must be >= 0"),
        (lambda m, x: Occlusion(window=(9,)).attribute(m, x), r"^window: size 9 does not fit"),
        (
            lambda m, x: Occlusion(window=2, strides=3).attribute(m, x),
            r"^strides: stride 3 with window 2 would skip elements",
        ),
        (lambda m, x: IntegratedGradients(internal_batch_size=0), r"^internal_batch_size: 0"),
        (lambda m, x: explain(m, x, method="lime"), r"^method: unknown attribution method"),
        (lambda m, x: explain(m, x, n_step=3), r"^settings: integrated_gradients: .*n_step"),
        (
            lambda m, x: FrequencyOcclusion(bands=5).attribute(m, torch.randn(2, 1, 6)),
            r"^bands: band .* holds no frequency bin of a 6-sample signal",
        ),
    ],
)
def test_bad_input_is_a_one_line_option_error_naming_the_parameter(
    call: object, pattern: str
) -> None:
    model, x = _mlp(), torch.randn(3, 6)
    with pytest.raises(OptionError, match=pattern) as info:
        call(model, x)  # type: ignore[operator]
    assert "\n" not in str(info.value)


def test_inputs_without_a_batch_or_a_model_without_logits_are_spec_errors() -> None:
    with pytest.raises(SpecError, match=r"no batch dimension"):
        IntegratedGradients().attribute(_mlp(), torch.randn(6))
    with pytest.raises(SpecError, match=r"must return logits of shape \[2, K\]"):
        Occlusion(window=2).attribute(lambda t: t.sum(dim=1), torch.randn(2, 6))

"""Neural collapse NC1–NC4 (Papyan, Han & Donoho 2020) on synthetic features and a real head."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.collapse import last_linear, neural_collapse, penultimate


def _simplex_etf(k: int, p: int, radius: float = 3.0, seed: int = 0) -> np.ndarray:
    """``K×p`` rows forming a simplex ETF: equal norms ``radius``, pairwise cosine ``−1/(K−1)``,
    rotated into ``p`` dimensions by a random orthonormal map."""
    rng = np.random.default_rng(seed)
    m = np.eye(k) - 1.0 / k  # centred one-hot vectors: a simplex ETF in R^K
    m *= radius / np.linalg.norm(m[0])
    q, _ = np.linalg.qr(rng.normal(size=(p, k)))
    out: np.ndarray = m @ q.T
    return out


def _features(
    means: np.ndarray, per_class: int, noise: float, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k, p = means.shape
    y = np.repeat(np.arange(k), per_class)
    h = means[y] + noise * rng.normal(size=(y.size, p))
    return h, y


def _reference_nc1(h: np.ndarray, y: np.ndarray) -> float:
    """NC1 as in Zhu et al. 2021's reference code (validate_NC.py): dense Σ_W, Σ_B and
    ``trace(Σ_W @ scipy.linalg.pinv(Σ_B)) / K``."""
    classes = np.unique(y)
    mu_g = h.mean(axis=0)
    sw = np.zeros((h.shape[1], h.shape[1]))
    sb = np.zeros_like(sw)
    for c in classes:
        hc = h[y == c]
        mu = hc.mean(axis=0)
        sw += (hc - mu).T @ (hc - mu)
        sb += np.outer(mu - mu_g, mu - mu_g)
    sw /= h.shape[0]
    sb /= classes.size
    return float(np.trace(sw @ scipy.linalg.pinv(sb)) / classes.size)


def test_a_perfect_simplex_etf_has_every_collapse_metric_at_zero() -> None:
    means = _simplex_etf(5, 12)
    h, y = _features(means, 8, noise=0.0)
    c = neural_collapse(h, y, weight=2.0 * means, predictions=y)
    assert c.nc1 == pytest.approx(0.0, abs=1e-20)
    for v in (
        c.nc2_equinorm_means,
        c.nc2_equiangular_means,
        c.nc2_maxangle_means,
        c.nc2_equinorm_classifier,
        c.nc2_equiangular_classifier,
        c.nc2_maxangle_classifier,
        c.nc3,
        c.nc4_mismatch,
    ):
        assert v == pytest.approx(0.0, abs=1e-12)
    assert c.classes == (0, 1, 2, 3, 4) and c.samples == 40 and c.dimension == 12


def test_nc1_of_an_etf_with_isotropic_noise_matches_its_closed_form() -> None:
    """Σ_B of a simplex ETF of radius r has K−1 eigenvalues r²/(K−1); with Σ_W ≈ σ²I,
    NC1 = σ²(K−1)²/(K r²)."""
    k, p, r, sigma = 4, 10, 3.0, 0.3
    h, y = _features(_simplex_etf(k, p, r), 3000, noise=sigma)
    c = neural_collapse(h, y)
    assert c.nc1 == pytest.approx(sigma**2 * (k - 1) ** 2 / (k * r**2), rel=0.05)
    assert c.nc2_equiangular_means < 0.02 and c.nc2_equinorm_means < 0.02


@pytest.mark.parametrize("noise", [0.1, 1.0, 10.0])
def test_nc1_equals_the_reference_formula_number_for_number(noise: float) -> None:
    h, y = _features(_simplex_etf(6, 9, seed=3), 20, noise=noise, seed=4)
    assert neural_collapse(h, y).nc1 == pytest.approx(_reference_nc1(h, y), rel=1e-9)


def test_random_features_show_no_collapse() -> None:
    rng = np.random.default_rng(0)
    h = rng.normal(size=(400, 16))
    y = rng.integers(0, 4, size=400)
    w = rng.normal(size=(4, 16))
    pred = np.argmax(h @ w.T, axis=1)
    c = neural_collapse(h, y, weight=w, predictions=pred)
    assert c.nc1 > 10  # within-class spread dwarfs the tiny spread of the class means
    assert c.nc3 > 0.5  # an unrelated classifier is far from the means
    assert c.nc4_mismatch > 0.4  # two unrelated classifiers mostly disagree


def test_equiangularity_and_self_duality_measure_their_own_defects() -> None:
    means = _simplex_etf(4, 8)
    skewed = means.copy()
    skewed[0] *= 2.0  # one class mean twice as far: unequal norms and angles
    h, y = _features(skewed, 5, noise=0.0)
    c = neural_collapse(h, y, weight=means)
    assert c.nc2_equinorm_means > 0.1
    assert c.nc2_equiangular_means > 0.01 and c.nc2_maxangle_means > 0.01
    assert c.nc2_equinorm_classifier == pytest.approx(0.0, abs=1e-12)  # W itself is an ETF
    assert c.nc3 > 0.01
    # NC3 is invariant to the scale of W
    c2 = neural_collapse(h, y, weight=7.0 * means)
    assert c2.nc3 == pytest.approx(c.nc3)


def test_nc4_counts_the_samples_where_nearest_class_mean_and_model_disagree() -> None:
    means = _simplex_etf(3, 5)
    h, y = _features(means, 10, noise=0.0)
    pred = y.copy()
    pred[:3] = (pred[:3] + 1) % 3
    assert neural_collapse(h, y, predictions=pred).nc4_mismatch == pytest.approx(3 / 30)


def test_absent_classes_are_left_out_and_the_classifier_rows_follow_the_labels() -> None:
    means = _simplex_etf(3, 6)
    h, y = _features(means, 6, noise=0.0)
    labels = np.array([0, 2, 5])[y]  # classes 1, 3 and 4 absent
    w = np.zeros((6, 6))
    w[[0, 2, 5]] = means
    c = neural_collapse(h, labels, weight=w, predictions=labels)
    assert c.classes == (0, 2, 5)
    assert c.nc3 == pytest.approx(0.0, abs=1e-12) and c.nc1 == pytest.approx(0.0, abs=1e-20)


def test_penultimate_features_are_the_input_of_the_last_linear_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)
    )
    model.train()
    x = torch.randn(11, 2, 3)
    f = penultimate(model, x, batch_size=4)
    with torch.no_grad():
        expect = model[:5](x)
        logits = model(x)
    np.testing.assert_allclose(f.features, expect.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.logits, logits.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.features @ f.weight.T + f.bias, f.logits, rtol=1e-5, atol=1e-6)
    assert f.layer == "5" and model.training  # mode restored
    assert last_linear(model)[0] == "5"


def test_a_model_without_a_linear_head_is_refused_with_the_reason() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(SpecError, match=r"no nn\.Linear layer"):
        penultimate(model, torch.zeros(2, 1, 5, 5))


def test_a_head_applied_twice_per_forward_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.head(x))
            return out

    with pytest.raises(SpecError, match="ran 2 times"):
        penultimate(Twice(), torch.zeros(2, 3))


def test_bad_shapes_raise_option_errors() -> None:
    with pytest.raises(OptionError, match=r"^features: "):
        neural_collapse(np.zeros((4, 3)), np.zeros(5))
    with pytest.raises(OptionError, match=r"^weight: "):
        neural_collapse(np.zeros((4, 3)), np.array([0, 0, 1, 1]), weight=np.zeros((2, 4)))

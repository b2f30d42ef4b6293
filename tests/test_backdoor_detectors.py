"""Backdoor detectors: invariants, refusals, and agreement with ART 1.20.1 where it is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.data.dataset import Dataset
from edgeproof.methods.backdoor import (
    ActivationClusteringConfig,
    FreeEagleConfig,
    NotAClassifierError,
    SpectralSignatureConfig,
    STRIPConfig,
    activation_clustering,
    final_layer,
    final_layer_scan,
    freeeagle,
    head_probe,
    quartile_anomaly,
    robust_z,
    spectral_signatures,
    split_model,
    strip_entropies,
    strip_threshold,
)
from edgeproof.methods.backdoor.freeeagle import class_tendency, optimise_dummies
from edgeproof.methods.backdoor.head import FinalLayer, HeadSplit, final_layer_of_tensors
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.spec import InputSpec

HAVE_ART = importlib.util.find_spec("art") is not None
needs_art = pytest.mark.skipif(
    not HAVE_ART,
    reason="adversarial-robustness-toolbox==1.20.1 is not installed (pip install the test extra)",
)


def test_robust_z_is_shift_and_scale_invariant_with_mad_fallbacks() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    z = robust_z(v)
    np.testing.assert_allclose(robust_z(3.0 * v + 7.0), z)
    assert np.argmax(z) == 4 and z[2] == 0.0
    # more than half equal: MAD = 0, the mean-absolute-deviation fallback still ranks the outlier
    z2 = robust_z(np.array([1.0, 1.0, 1.0, 1.0, 5.0]))
    assert z2[4] > 0 and np.all(z2[:4] == 0)
    assert np.all(robust_z(np.full(4, 2.5)) == 0)


def test_quartile_anomaly_follows_freeeagles_index_rule() -> None:
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 2.0])
    nz = np.sort(t[t != 0])  # 9 values: Q1 = nz[int(2.25)] = nz[2], Q3 = nz[int(6.75)] = nz[6]
    score, per = quartile_anomaly(t)
    assert score == pytest.approx((2.0 - nz[6]) / (nz[6] - nz[2]))
    assert per[-1] == pytest.approx(score)


def _mlp_head(k: int = 6, d: int = 16, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 12), nn.ReLU(), nn.Linear(12, k)).eval()


def test_last_layer_that_is_not_a_classifier_head_is_refused_with_the_reason() -> None:
    conv_head = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10), nn.Conv1d(1, 1, 1)
    )
    weights = {k: v for k, v in conv_head.state_dict().items()}
    with pytest.raises(NotAClassifierError, match=r"last weight tensor '3\.weight'"):
        final_layer_of_tensors(weights, "m.safetensors")
    two = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(NotAClassifierError, match="has 2 output") as info:
        final_layer(from_module(two))
    assert "Linear head with at least 3 outputs" in str(info.value)
    extra = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Unflatten(1, (2, 5)))
    spec = InputSpec(shape=(1, 8, 8), domain=(0.0, 1.0), kind="image", num_classes=10)
    with pytest.raises(NotAClassifierError, match=r"not a \(batch, classes\) tensor"):
        final_layer(from_module(extra, spec=spec))


def test_final_layer_scan_is_permutation_equivariant_and_finds_a_planted_row() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 32))
    b = rng.normal(scale=0.1, size=8)
    w[5] += 0.8  # a row that responds to every (non-negative) feature
    b[5] += 0.5
    res = final_layer_scan(FinalLayer("fc", w, b, True))
    assert res.suspected_target == 5
    perm = rng.permutation(8)
    res_p = final_layer_scan(FinalLayer("fc", w[perm], b[perm], True))
    np.testing.assert_allclose(res_p.per_class, res.per_class[perm])
    assert res_p.score == pytest.approx(res.score)


def _split_of(head: nn.Module, d: int) -> HeadSplit:
    return HeadSplit(lambda x: x, head, (d,), True, "test")


def test_freeeagle_matrix_invariants_and_batched_equals_per_class_loop() -> None:
    head = _mlp_head()
    split = _split_of(head, 16)
    cfg = FreeEagleConfig(steps=60)
    batched = optimise_dummies(split, 6, cfg, torch.Generator().manual_seed(1))
    loop = optimise_dummies(
        split, 6, FreeEagleConfig(steps=60, batched=False), torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-5)
    assert torch.all(batched >= 0)  # the non-negative bound after a ReLU
    m = class_tendency(split, batched)
    assert np.all(np.diag(m) == 0) and np.all(m >= 0) and np.all(m.sum(axis=1) <= 1 + 1e-9)
    a = freeeagle(split, 6, config=cfg, seed=3)
    b = freeeagle(split, 6, config=cfg, seed=3)
    np.testing.assert_array_equal(a.indicators["tendency_matrix"], b.indicators["tendency_matrix"])


def test_freeeagle_and_head_probe_point_at_a_planted_target() -> None:
    clean = _split_of(_mlp_head(k=6, d=16, seed=2), 16)
    head = _mlp_head(k=6, d=16, seed=2)
    first, last = head[0], head[2]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    with torch.no_grad():  # class 4 gets a feature that wins whatever else is active
        first.weight[0] = 0.0
        first.bias[0] = 0.0
        first.weight[0, 0] = 3.0
        last.weight[:, 0] = -1.0
        last.weight[4, 0] = 6.0
    split = _split_of(head, 16)
    cfg = FreeEagleConfig(steps=150)
    fe = freeeagle(split, 6, config=cfg)
    assert fe.suspected_target == 4
    assert fe.score > freeeagle(clean, 6, config=cfg).score
    hp = head_probe(split, 6)
    assert hp.suspected_target == 4


def test_split_model_reassembles_the_zoo_models(digits_model: LoadedModel) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    x = torch.rand((3, *digits_model.spec.shape))
    with torch.inference_mode():
        ref = digits_model.module(x)
        for kind in ("freeeagle", "probe"):
            s = split_model(digits_model.module, digits_model.spec.shape, kind=kind)
            torch.testing.assert_close(s.head(s.features(x)), ref)
            assert s.nonnegative
    from edgeproof.models.zoo import build_model

    for arch, shape in (("cnn1d", (1, 64)), ("cnn-lstm", (1, 64)), ("resnet8", (3, 16, 16))):
        m = build_model(arch, shape, 5)
        x = torch.rand((2, *shape))
        s = split_model(m, shape)
        with torch.inference_mode():
            torch.testing.assert_close(s.head(s.features(x)), m(x))


# ---------------------------------------------------------------------------------------------
# STRIP, activation clustering, spectral signatures


def _proba(module: nn.Module):  # type: ignore[no-untyped-def]
    def fn(b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(module(torch.from_numpy(b.astype(np.float32))), 1).numpy()

    return fn


def test_strip_threshold_sits_at_the_requested_fpr() -> None:
    h = np.random.default_rng(0).normal(2.0, 0.3, size=5000)
    thr = strip_threshold(h, STRIPConfig(fpr=0.05, threshold_rule="quantile"))
    assert np.mean(thr.flags(h)) == pytest.approx(0.05, abs=0.002)
    thr_n = strip_threshold(h, STRIPConfig(fpr=0.05))
    assert thr_n.value == pytest.approx(2.0 - 1.645 * 0.3, abs=0.02)


@needs_art
def test_strip_matches_art_on_the_same_model_and_draws(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    from art.estimators.poison_mitigation.strip import STRIPMixin

    assert digits_model.module is not None
    proba = _proba(digits_model.module)
    x_val = digits_test.x[:60]
    x_in = digits_test.x[60:80].copy()
    x_in[:10, :, 5:8, 5:8] = 1.0  # some patched inputs among clean ones

    class Defended(STRIPMixin):
        nb_classes = 10

    d = Defended(predict_fn=proba, num_samples=8, false_acceptance_rate=0.05)
    np.random.seed(11)
    d.mitigate(x_val)
    art_out = d.predict(x_in)
    # replay ART's draws: one np.random.choice per validation image, then one per input
    np.random.seed(11)
    idx_val = np.stack([np.random.choice(np.arange(60), 8) for _ in range(60)])
    idx_in = np.stack([np.random.choice(np.arange(60), 8) for _ in range(20)])
    cfg = STRIPConfig(num_samples=8, fpr=0.05, entropy="art")
    h_val = strip_entropies(proba, x_val, x_val, cfg, overlay_indices=idx_val)
    thr = strip_threshold(h_val, cfg)
    # equal to float32 rounding (the model's probabilities are float32 in both)
    assert thr.value == pytest.approx(d.entropy_threshold, rel=1e-6)
    h_in = strip_entropies(proba, x_in, x_val, cfg, overlay_indices=idx_in)
    art_abstained = np.all(art_out == 0, axis=1)
    np.testing.assert_array_equal(thr.flags(h_in), art_abstained)


def _planted_activations() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    k, n, d = 3, 120, 24
    acts, ys, poison = [], [], []
    for c in range(k):
        a = rng.normal(size=(n, d)) + 3.0 * np.eye(d)[c]
        p = np.zeros(n, dtype=bool)
        if c == 1:  # 20% of class 1 sits far away along another direction
            p[:24] = True
            a[:24] += 8.0 * np.eye(d)[10]
        acts.append(np.maximum(a, 0))
        ys.append(np.full(n, c))
        poison.append(p)
    return np.concatenate(acts), np.concatenate(ys), np.concatenate(poison)


def test_activation_clustering_and_spectral_signatures_find_planted_poison() -> None:
    acts, y, truth = _planted_activations()
    ac = activation_clustering(acts, y, 3)
    assert 1 in ac.suspicious_classes
    np.testing.assert_array_equal(ac.is_poison[y == 1], truth[y == 1])
    assert ac.smaller_fraction[1] == pytest.approx(0.2)
    ss = spectral_signatures(acts, y, 3, SpectralSignatureConfig(expected_poison=0.2))
    assert ss.is_poison[truth].all()
    assert ss.is_poison[y == 1].sum() == int(np.ceil(1.5 * 0.2 * 120))


class _Shim:
    def __init__(self, acts: np.ndarray, k: int) -> None:
        self.acts, self.nb_classes = acts, k
        self.layer_names = ["penultimate"]

    def get_activations(self, x: np.ndarray, layer: int = 0, batch_size: int = 128) -> np.ndarray:
        return self.acts


@needs_art
def test_poisoning_detectors_agree_with_art() -> None:
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    acts, y, _ = _planted_activations()
    onehot = np.eye(3)[y]
    sd = SpectralSignatureDefense(_Shim(acts, 3), acts, onehot)
    _, art_clean = sd.detect_poison()
    ours = spectral_signatures(acts, y, 3, SpectralSignatureConfig(mode="art"))
    np.testing.assert_array_equal(ours.is_poison, np.asarray(art_clean) == 0)
    ad = ActivationDefence(_Shim(acts, 3), acts, onehot)
    np.random.seed(0)
    _, art_ac = ad.detect_poison(
        nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller"
    )
    ours_ac = activation_clustering(acts, y, 3, ActivationClusteringConfig(analysis="smaller"))
    # the poisoned class splits the same way; a class without structure splits arbitrarily
    # (ART's k-means is unseeded), so only the poisoned class is compared exactly
    art_poison = np.asarray(art_ac) == 0
    np.testing.assert_array_equal(ours_ac.is_poison[y == 1], art_poison[y == 1])

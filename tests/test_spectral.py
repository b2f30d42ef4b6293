"""Spectral diagnostics: WeightWatcher 0.7.7 agreement, MP spikes, weights-only, bad input."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.checks.base import AuditContext
from edgeproof.checks.spectral import SpectralCheck
from edgeproof.diagnostics.layers import layers_from_module, layers_from_tensors
from edgeproof.diagnostics.spectral import (
    SpectralConfig,
    analyze_inventory,
    fit_marchenko_pastur,
    fit_power_law,
)
from edgeproof.errors import ModelFileError, OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import build_model
from edgeproof.spec import InputSpec, ThreatModel


def _ww_details(model: nn.Module):  # type: ignore[no-untyped-def]
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze()


def _trained_mlp() -> nn.Module:
    """A zoo MLP trained a few hundred steps on a synthetic task (so spectra are not random)."""
    torch.manual_seed(1)
    m = build_model("mlp", (1, 8, 8), 10)
    x = torch.rand(512, 1, 8, 8)
    y = x.flatten(1)[:, :10].argmax(1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


@pytest.mark.parametrize(
    "name,shape",
    [
        ("lenet5", (1, 8, 8)),
        ("resnet8", (3, 32, 32)),
        ("mlp", (1, 8, 8)),
        ("cnn1d", (3, 64)),
        ("trained-mlp", (1, 8, 8)),
    ],
)
def test_ww_compat_matches_weightwatcher_on_every_layer(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = _trained_mlp() if name == "trained-mlp" else build_model(name, shape, 10)
    details = _ww_details(model)
    ours = analyze_inventory(layers_from_module(model), SpectralConfig(mode="ww-compat"))
    by_name = {s.name: s for s in ours.layers}
    assert sorted(by_name) == sorted(details["longname"])
    for _, row in details.iterrows():
        s = by_name[row["longname"]]
        assert s.fit is not None
        for key, value in (
            ("alpha", s.fit.alpha),
            ("D", s.fit.D),
            ("xmin", s.fit.xmin),
            ("log_norm", s.log_norm),
            ("stable_rank", s.stable_rank),
        ):
            assert value == pytest.approx(float(row[key]), abs=1e-6), (row["longname"], key)
        assert s.num_evals == row["num_evals"]


def test_default_mode_gives_the_same_alpha_as_ww_compat_on_conv_layers() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (3, 32, 32), 10)
    a = analyze_inventory(layers_from_module(model), SpectralConfig(mode="ww-compat"))
    b = analyze_inventory(layers_from_module(model), SpectralConfig())
    alphas = {s.name: s.alpha for s in b.layers}
    for s in a.layers:
        assert alphas[s.name] == pytest.approx(s.alpha, abs=1e-9)


def test_rank3_planted_spike_gives_exactly_three_mp_spikes() -> None:
    g = torch.Generator().manual_seed(0)
    n, m = 1000, 500
    w = torch.randn(n, m, generator=g, dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(n, 3, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(m, 3, generator=g, dtype=torch.float64))[0]
    w = w + u @ torch.diag(torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64) * math.sqrt(n)) @ v.T
    ev = torch.linalg.eigvalsh(w.T @ w).numpy()
    fit = fit_marchenko_pastur(ev, n, m)
    assert fit.num_spikes == 3
    assert fit.sigma2 == pytest.approx(1.0, rel=0.02)
    assert fit.lambda_plus == pytest.approx((1 + math.sqrt(0.5)) ** 2, rel=0.03)


def test_pure_gaussian_matrix_has_no_spikes() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1000, 500, generator=g, dtype=torch.float64)
    assert fit_marchenko_pastur(torch.linalg.eigvalsh(w.T @ w).numpy(), 1000, 500).num_spikes == 0


def test_power_law_fit_recovers_the_exponent_of_pareto_samples() -> None:
    rng = np.random.default_rng(0)
    x = (1 - rng.random(4000)) ** (-1 / 2.5)  # Pareto, pdf exponent α = 3.5, xmin = 1
    fit = fit_power_law(x)
    assert fit.alpha == pytest.approx(3.5, abs=0.15)


def _ctx(weights: dict[str, torch.Tensor]) -> AuditContext:
    lm = LoadedModel(path=Path("w.safetensors"), format="weights-only", weights=weights)
    return AuditContext(model=lm, data=None, threat=ThreatModel(InputSpec(shape=(1, 8, 8))))


def test_weights_only_tensors_infer_kinds_and_report_skipped() -> None:
    torch.manual_seed(0)
    weights = {
        "conv.weight": torch.randn(16, 8, 3, 3),
        "conv.bias": torch.randn(16),
        "c1.weight": torch.randn(32, 16, 5),
        "rnn.weight_ih_l0": torch.randn(4 * 20, 12),
        "rnn.weight_hh_l0": torch.randn(4 * 20, 20),
        "gru.weight_hh_l0": torch.randn(3 * 20, 20),
        "attn.in_proj_weight": torch.randn(3 * 24, 24),
        "tok_embed.weight": torch.randn(100, 24),
        "fc.weight": torch.randn(10, 64),
        "tiny.weight": torch.randn(3, 4),
        "steps": torch.tensor([3], dtype=torch.int64),
    }
    inv = layers_from_tensors(weights)
    kinds = {layer.name: layer.kind for layer in inv.layers}
    assert kinds["conv"] == "conv2d" and kinds["c1"] == "conv1d"
    assert [n for n in kinds if n.startswith("rnn.weight_ih")] == [
        f"rnn.weight_ih_l0[{g}]" for g in "ifgo"
    ]
    assert [n for n in kinds if n.startswith("gru.")] == [f"gru.weight_hh_l0[{g}]" for g in "rzn"]
    assert [n for n in kinds if n.startswith("attn")] == [
        f"attn.in_proj_weight[{p}]" for p in "QKV"
    ]
    assert kinds["tok_embed"] == "embedding" and kinds["fc"] == "linear"
    skipped = {s.name: s.reason for s in inv.skipped}
    assert "1-D tensor" in skipped["conv.bias"] and "int64" in skipped["steps"]
    res = SpectralCheck().run(_ctx(weights))
    tiny = next(r for r in res.tables[0].rows if r[0] == "tiny")
    assert "too few eigenvalues" in tiny[-1]
    assert res.metric("too_few_eigenvalue_layers").value >= 1
    assert any(f.name == "esd" for f in res.figures) and any(f.name == "alpha" for f in res.figures)
    assert "no scaling" in " ".join(res.settings["normalisations"])


def test_module_discovery_splits_lstm_gates_and_qkv() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.att = nn.MultiheadAttention(16, 2)
            self.lstm = nn.LSTM(16, 8)
            self.norm = nn.LayerNorm(8)

    names = [layer.name for layer in layers_from_module(M()).layers]
    assert names[:4] == [
        "emb",
        "att.in_proj_weight[Q]",
        "att.in_proj_weight[K]",
        "att.in_proj_weight[V]",
    ]
    assert "att.out_proj" in names and "lstm.weight_hh_l0[o]" in names
    assert {s.name for s in layers_from_module(M()).skipped} >= {"norm.weight", "lstm.bias_ih_l0"}


def test_nan_weights_raise_an_error_naming_the_tensor() -> None:
    w = torch.randn(10, 10)
    w[2, 3] = float("nan")
    with pytest.raises(ModelFileError, match=r"'fc2.weight' contains 1 NaN/Inf"):
        SpectralCheck().run(_ctx({"fc1.weight": torch.randn(10, 10), "fc2.weight": w}))


def test_weights_without_any_matrix_raise_a_clear_error() -> None:
    with pytest.raises(ModelFileError, match="no 2-D or larger weight tensor found"):
        SpectralCheck().run(_ctx({"bn.weight": torch.ones(4), "bn.bias": torch.zeros(4)}))


def test_unknown_mode_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="--spectral-mode: unknown mode 'fast'"):
        SpectralConfig(mode="fast")  # type: ignore[arg-type]

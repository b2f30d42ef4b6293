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
from edgeproof.errors import ModelFileError, OptionError
from edgeproof.methods import esd as esd_mod
from edgeproof.methods import power_law as power_law_mod
from edgeproof.methods import spectral as spectral_mod
from edgeproof.methods.layers import (
    WeightLayer,
    check_finite,
    layers_from_module,
    layers_from_tensors,
)
from edgeproof.methods.spectral import (
    SpectralConfig,
    analyze_inventory,
    fit_marchenko_pastur,
    fit_power_law,
    layer_eigenvalues,
)
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
    assert "too few eigenvalues" in str(tiny[res.tables[0].columns.index("flags")])
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
    with pytest.raises(OptionError, match=r"spectral\.mode: unknown mode 'fast'"):
        SpectralConfig(mode="fast")  # type: ignore[arg-type]


def _brute_force_fit(evals: np.ndarray) -> tuple[int, float, float]:
    """WeightWatcher 0.7.7 WWFit (n ≥ 20) by the definition: every candidate, every tail point."""
    data = np.sort(evals[evals > 1e-5])
    n_data = data.size
    ds = np.ones(n_data - 1)
    alphas = np.zeros(n_data - 1)
    for i in range(n_data - 1):
        tail = data[i:]
        n = tail.size
        a = 1.0 + n / np.sum(np.log(tail / data[i]))
        alphas[i] = a
        if a > 1:
            ds[i] = np.max(np.abs(1 - (tail / data[i]) ** (1 - a) - np.arange(n) / n))
    j = int(np.argmin(ds))
    return j, float(alphas[j]), float(ds[j])


@pytest.mark.parametrize(("grid", "block"), [(2, 2), (8, 16), (64, 64)])
@pytest.mark.parametrize("seed", range(6))
def test_pruned_xmin_search_finds_the_same_argmin_as_brute_force(
    seed: int, grid: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact for any grid/block size (they only change how much work the pruning saves)."""
    monkeypatch.setattr(power_law_mod, "_KS_GRID", grid)
    monkeypatch.setattr(power_law_mod, "_KS_BLOCK", block)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 700))
    if seed % 3 == 0:
        ev = (1 - rng.random(n)) ** (-1 / rng.uniform(0.5, 4))
    elif seed % 3 == 1:
        ev = rng.lognormal(size=n)
    else:  # MP bulk with spikes, as a random conv slice
        w = rng.standard_normal((n, n // 2 + 10)) / math.sqrt(n)
        ev = np.linalg.eigvalsh(w.T @ w) * np.r_[np.ones(n // 2 + 5), np.linspace(3, 20, 5)]
    j, alpha, d = _brute_force_fit(ev)
    fit = fit_power_law(ev)
    data = np.sort(ev[ev > 1e-5])
    assert fit.xmin == data[j]
    assert fit.alpha == pytest.approx(alpha, abs=1e-12)
    ks_distance = fit.D
    assert ks_distance == pytest.approx(d, abs=1e-12)


def test_gram_eigenvalue_near_the_fit_threshold_is_recomputed_from_the_svd() -> None:
    # λmax = 1e4 makes the Gram error of a λ ≈ 1e-5 eigenvalue ~1e-12 absolute (1e-7 relative);
    # the guard recomputes such a matrix from its singular values (relative accuracy ~1e-12).
    gen = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))[0]
    s2 = torch.logspace(-3, 4, 32, dtype=torch.float64)
    s2[0] = 1e-5 * (1 + 1e-9)  # the smallest eigenvalue, just above the threshold
    w = u[:, :32] @ torch.diag(s2.sqrt()) @ v.T
    layer = WeightLayer("fc", "fc.weight", "linear", w, 0)
    ev, n, m, _ = layer_eigenvalues(layer, SpectralConfig())
    assert (n, m) == (64, 32)
    assert ev[0] == pytest.approx(float(s2[0]), rel=1e-10)
    assert np.count_nonzero(ev > 1e-5) == np.count_nonzero(s2.numpy() > 1e-5)


def test_layer_pool_gives_the_same_results_in_inventory_order() -> None:
    torch.manual_seed(0)
    inv = layers_from_module(build_model("resnet8", (3, 32, 32), 10))
    one = analyze_inventory(inv, SpectralConfig(), workers=1)
    two = analyze_inventory(inv, SpectralConfig(), workers=2)
    assert [s.name for s in two.layers] == [layer.name for layer in inv.layers]
    for a, b in zip(one.layers, two.layers):
        assert a.name == b.name and a.alpha == b.alpha and a.log_norm == b.log_norm
        assert np.array_equal(a.evals, b.evals)


@pytest.mark.parametrize("chunks_per_worker", [1, 1000])
def test_chunked_pool_gives_the_one_thread_spectra_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, chunks_per_worker: int
) -> None:
    """1000 chunks per worker cuts the multi-matrix layers into one chunk per matrix (kernel
    positions of conv2d/conv1d, WeightWatcher's conv1d rows); 1 gives the coarsest chunks."""
    torch.manual_seed(0)
    inv = layers_from_module(build_model("cnn-lstm", (2, 64), 5))
    inv2 = layers_from_module(build_model("resnet8", (3, 32, 32), 10))
    monkeypatch.setattr(spectral_mod, "_CHUNKS_PER_WORKER", chunks_per_worker)
    for inventory in (inv, inv2):
        for mode in ("default", "ww-compat"):
            config = SpectralConfig(mode=mode)
            one = analyze_inventory(inventory, config, workers=1)
            pooled = analyze_inventory(inventory, config, workers=2)
            assert [s.name for s in pooled.layers] == [s.name for s in one.layers]
            for a, b in zip(one.layers, pooled.layers):
                assert np.array_equal(a.evals, b.evals), (mode, a.name)
                assert (a.n, a.m, a.rf) == (b.n, b.m, b.rf)
                assert a.alpha == b.alpha or (math.isnan(a.alpha) and math.isnan(b.alpha))


def test_finite_check_accepts_huge_finite_weights_and_rejects_inf() -> None:
    check_finite("big.weight", torch.full((4, 4), 3e38), "m.safetensors")  # sum overflows
    w = torch.zeros(3, 3)
    w[1, 1] = -float("inf")
    with pytest.raises(ModelFileError, match=r"'w\.weight' contains 1 NaN/Inf value"):
        check_finite("w.weight", w, "m.safetensors")


def test_gram_guard_is_what_keeps_the_threshold_eigenvalue_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the guard the same eigenvalue is off by far more than the tolerance above."""
    gen = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))[0]
    s2 = torch.logspace(-3, 4, 32, dtype=torch.float64)
    s2[0] = 1e-5 * (1 + 1e-9)  # the smallest eigenvalue, just above the threshold
    w = u[:, :32] @ torch.diag(s2.sqrt()) @ v.T
    monkeypatch.setattr(esd_mod, "_GRAM_GUARD", 0.0)
    ev, *_ = layer_eigenvalues(WeightLayer("fc", "fc.weight", "linear", w, 0), SpectralConfig())
    assert abs(ev[0] / float(s2[0]) - 1) > 1e-10


def test_spectral_figures_are_drawn_when_the_report_is_written_as_an_eager_drawing(
    tmp_path: Path,
) -> None:
    import json

    from edgeproof.models.loading import from_module
    from edgeproof.report.files import write_report
    from edgeproof.runner import audit

    model = _trained_mlp()
    report = audit(from_module(model), checks=["spectral"], threads=1)
    (res,) = report.checks
    assert [f.name for f in res.figures] == ["alpha", "esd"]
    assert not any(f.drawn for f in res.figures)  # the check's run draws nothing

    check = SpectralCheck()
    eager = check.to_result(analyze_inventory(layers_from_module(model), check.config))
    eager_svgs = [f.svg for f in eager.figures]  # drawn at once, as a check drawing in run()
    assert all(s.startswith("<svg") for s in eager_svgs)

    files = write_report(report, tmp_path)
    assert all(f.drawn for f in res.figures)
    assert [f.svg for f in res.figures] == eager_svgs
    written = json.loads(files.json.read_text(encoding="utf-8"))
    (spectral,) = [c for c in written["checks"] if c["check"] == "spectral"]
    assert [f["svg"] for f in spectral["figures"]] == eager_svgs
    html = files.html.read_text(encoding="utf-8")
    assert all(svg in html for svg in eager_svgs)

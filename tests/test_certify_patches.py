"""The fast paths of the CROWN backward pass give the bounds of the plain one: patches
(periodic and gathered rows, lazy masking, channels-inner layouts, chunks) against dense rows,
lines applied only where they differ, transposed convolutions by kernel taps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeproof.certify import intermediate
from edgeproof.certify import ops as O
from edgeproof.certify.bounds import AlphaSettings, compute_bounds, margin_spec
from edgeproof.certify.graph import BoundGraph, trace
from edgeproof.certify.patches import Patches
from edgeproof.certify.sets import linf_ball
from edgeproof.models.zoo import build_model


def _resnet() -> tuple[nn.Module, BoundGraph, torch.Tensor]:
    """The zoo ResNet-8 (normalisation with a shift, strided convolutions, residual sums,
    BatchNorm with random statistics) on 3×8×8, random weights."""
    torch.manual_seed(0)
    model = build_model("resnet8", (3, 8, 8), 10, ((0.4, 0.5, 0.3), (0.2, 0.3, 0.25)))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(2, 3, 8, 8)
    return model, trace(model, (3, 8, 8)), x


def _crown(
    g: BoundGraph, x: torch.Tensor, spec: torch.Tensor, method: str = "crown"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    r = compute_bounds(
        g,
        linf_ball(x, 0.004),
        spec,
        method,  # type: ignore[arg-type]
        upper=method == "crown",
        alpha=AlphaSettings(iterations=2, intermediate=True),
    )
    inter = [t for b in r.state.bounds if b is not None for t in b]
    out = r.lower if r.upper is None else torch.stack([r.lower, r.upper])
    return out, inter


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = 1 + float(torch.maximum(a.abs(), b.abs()).max())
    assert float((a - b).abs().max()) <= 1e-5 * scale


def test_patch_rows_give_the_bounds_of_dense_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    model, g, x = _resnet()
    with torch.no_grad():
        spec = margin_spec(model(x).argmax(1), 10)
    runs = {}
    for name, patches, share in (
        ("periodic", True, 0.0),
        ("gathered", True, 2.0),
        ("default", True, intermediate._FULL_SHARE),
        ("dense", False, intermediate._FULL_SHARE),
    ):
        with monkeypatch.context() as mp:
            mp.setattr(intermediate, "_FULL_SHARE", share)
            if not patches:
                mp.setattr(intermediate, "_patch_start", lambda graph, idx: False)
            runs[name] = _crown(g, x, spec)
    ref, ref_inter = runs["dense"]
    unstable = sum(
        int(((lo < 0) & (hi > 0)).sum()) for lo, hi in zip(ref_inter[::2], ref_inter[1::2])
    )
    assert unstable > 100  # the patches paths are exercised on unstable neurons
    for out, inter in runs.values():
        _close(out, ref)
        for a, b in zip(inter, ref_inter):
            _close(a, b)


def test_small_chunks_and_joint_alpha_agree_across_row_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of a few rows (whole channels for periodic rows), and α-CROWN's joint
    intermediate slopes (more α rows for a full plan; the extra rows get no gradient)."""
    model, g, x = _resnet()
    with torch.no_grad():
        spec = margin_spec(model(x).argmax(1), 10)
    runs = {}
    for name, share in (("periodic", 0.0), ("gathered", 2.0)):
        with monkeypatch.context() as mp:
            mp.setattr(intermediate, "_FULL_SHARE", share)
            alpha = _crown(g, x, spec, "alpha-crown")[0]
            mp.setattr(intermediate, "_CHUNK_ELEMENTS", 1 << 14)
            runs[name] = (_crown(g, x, spec)[0], alpha)
    _close(runs["periodic"][0], runs["gathered"][0])
    _close(runs["periodic"][1], runs["gathered"][1])
    assert bool((runs["periodic"][1] >= runs["periodic"][0][0] - 1e-5).all())


@pytest.mark.parametrize(("stride", "pad", "size"), [(1, 1, 8), (2, 3, 16), (2, 1, 15)])
def test_periodic_and_gathered_patches_hold_the_same_coefficients(
    stride: int, pad: int, size: int
) -> None:
    torch.manual_seed(1)
    b, c, k, grid = 2, 3, 5, (8, 8)
    p = grid[0] * grid[1]
    data = torch.randn(b, 2 * p, c, k, k)
    pos = torch.arange(2 * p) % p
    pi, pj = (pos // grid[1]).expand(b, -1), (pos % grid[1]).expand(b, -1)
    periodic = Patches(data, pi, pj, (stride, stride), (pad, pad), grid, periodic=True, clean=False)
    gathered = Patches(data, pi, pj, (stride, stride), (pad, pad), grid, clean=False)
    m = torch.randn(b, c, size, size)
    assert torch.equal(periodic.window(m), gathered.window(m))
    wp = (periodic.blocks() * periodic.windows(m)).reshape(data.shape)
    wg = (gathered.blocks() * gathered.windows(m)).reshape(data.shape)
    assert torch.equal(wp, wg)
    dense = gathered.dense((c, size, size))
    assert torch.equal(periodic.dense((c, size, size)), dense)
    assert torch.equal(periodic.masked(size, size).data, gathered.masked(size, size).data)
    # the dense rows against a direct reconstruction (entries outside the map dropped)
    full = torch.zeros(b, 2 * p, c, size + 2 * (k + pad), size + 2 * (k + pad))
    for r in range(2 * p):
        top, left = int(pi[0, r]) * stride + k, int(pj[0, r]) * stride + k
        full[:, r, :, top : top + k, left : left + k] = data[:, r]
    cut = full[..., k + pad : k + pad + size, k + pad : k + pad + size]
    assert torch.allclose(dense, cut)


def test_patch_convolution_matches_the_dense_transposed_convolution() -> None:
    torch.manual_seed(2)
    b, c, grid = 1, 4, (6, 6)
    p = grid[0] * grid[1]
    pos = torch.arange(p)
    pi, pj = (pos // grid[1]).unsqueeze(0), (pos % grid[1]).unsqueeze(0)
    a = Patches(
        torch.randn(b, p, c, 3, 3), pi, pj, (1, 1), (1, 1), grid, periodic=True, clean=False
    )
    a = a.masked(6, 6)
    weight = torch.randn(c, 2, 3, 3)  # a conv 2 -> 4, stride 2, padding 1, on 12x12 -> 6x6
    new = a.conv_backward(weight, (2, 2), (1, 1), (1, 1), 1)
    dense_out = a.dense((c, 6, 6)).reshape(b * p, c, 6, 6)
    ref = F.conv_transpose2d(dense_out, weight, None, 2, 1, 1)
    assert torch.allclose(new.dense((2, 12, 12)).reshape(b * p, 2, 12, 12), ref, atol=1e-5)


@pytest.mark.parametrize("with_alpha", [False, True])
def test_sparse_lines_step_equals_the_full_step_and_its_gradient(with_alpha: bool) -> None:
    """Lines applied only where they differ give the full step's values and gradients (the
    same subgradient at a = 0), with α on the free entries."""
    from edgeproof.certify.relaxations import ReLU, apply_lines
    from edgeproof.certify.sparse_lines import apply_sparse, sparse_lines

    torch.manual_seed(3)
    b, g, p, f = 2, 3, 4, 40
    lo = torch.randn(b, p, f)
    hi = lo + torch.rand(b, p, f) * torch.where(torch.rand(b, p, f) < 0.1, 3.0, 0.01)
    rel = ReLU().relax(lo, hi)
    assert rel.unstable is not None and rel.upper_bias is not None
    a = torch.randn(b, g, p, f)
    a[:, :, :, :5] = 0.0  # ties at 0: the subgradient must agree
    a.requires_grad_(True)
    alpha = torch.rand(b, g, p, f, requires_grad=True) if with_alpha else None
    s = sparse_lines(
        rel.lower_slope,
        rel.upper_slope,
        None,
        rel.upper_bias,
        rel.unstable if alpha is not None else None,
    )
    assert s is not None
    new_s, c_s = apply_sparse(a, s, alpha)
    dl = rel.lower_slope.unsqueeze(1)
    if alpha is not None:
        dl = torch.where(rel.unstable.unsqueeze(1), alpha, dl)
    new_f, c_f = apply_lines(
        a, dl, None, rel.upper_slope.unsqueeze(1), rel.upper_bias.unsqueeze(1), feature_dims=1
    )
    assert c_s is not None and c_f is not None
    assert torch.allclose(new_s, new_f, atol=1e-6) and torch.allclose(c_s, c_f, atol=1e-5)
    w = torch.randn_like(new_f)
    params = [a] + ([alpha] if alpha is not None else [])
    g_s = torch.autograd.grad((new_s * w).sum() + c_s.sum(), params)
    g_f = torch.autograd.grad((new_f * w).sum() + c_f.sum(), params)
    for x, y in zip(g_s, g_f):
        assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.parametrize(
    ("cin", "stride", "padding", "out_pad", "dilation", "size"),
    [(1, 2, 1, 0, 1, 14), (3, 1, 1, 0, 1, 8), (2, 2, 1, 1, 1, 5), (3, 1, 0, 0, 2, 6)],
)
def test_transposed_convolution_by_taps_equals_the_kernel(
    cin: int, stride: int, padding: int, out_pad: int, dilation: int, size: int
) -> None:
    from edgeproof.certify.linear_ops import conv_transpose2d_fast

    torch.manual_seed(4)
    a = torch.randn(7, 5, size, size)
    weight = torch.randn(5, cin, 3, 3)
    ref = F.conv_transpose2d(a, weight, None, stride, padding, out_pad, 1, dilation)
    with torch.no_grad():
        got = conv_transpose2d_fast(
            a,
            weight,
            (stride,) * 2,
            (padding,) * 2,
            (out_pad,) * 2,
            1,
            (dilation,) * 2,
            ref.shape[2:],
        )
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "shape"),
    [
        ((2, 2), (2, 2), (0, 0), (3, 8, 8)),
        ((3, 3), (1, 1), (1, 1), (2, 5, 5)),
        ((3,), (2,), (1,), (2, 9)),
    ],
)
def test_max_pool_step_by_argmax_equals_the_window_step(
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    shape: tuple[int, ...],
) -> None:
    from edgeproof.certify.relaxations import MaxPool

    torch.manual_seed(5)
    dim = len(kernel)
    pool = (F.max_pool2d if dim == 2 else F.max_pool1d)(
        torch.zeros(1, *shape), kernel, stride, padding
    )
    op = MaxPool(kernel, stride, padding, shape, tuple(pool.shape[1:]))
    lo = torch.randn(2, *shape)
    hi = lo + torch.rand(2, *shape) * 2
    rel = op.relax_windows(lo, hi)
    a = torch.randn(2, 4, *pool.shape[1:])
    ref = op.backward_windows(a, rel.lower.unsqueeze(1), rel.upper, rel.upper_const)
    got = op.backward_argmax(a, rel)
    assert torch.allclose(got[0], ref[0], atol=1e-6) and torch.allclose(got[1], ref[1], atol=1e-6)


def test_backward_overwrites_only_its_own_coefficients() -> None:
    """In-place steps never touch the caller's tensors (the start rows, the extra terms) nor a
    tensor handed to both inputs of a residual sum."""
    from edgeproof.certify.backward import backward
    from edgeproof.certify.bounds import prepare

    _, g, x = _resnet()
    state = prepare(g, linf_ball(x, 0.004), "crown")
    out = g.nodes[g.output]
    a0 = torch.randn(2, 3, *out.shape)
    k = next(n.index for n in g.nodes if isinstance(n.op, O.ReLU))
    extra = {k: torch.randn(2, 3, *g.nodes[k].shape)}
    copies = (a0.clone(), extra[k].clone())
    with torch.no_grad():
        lb, _ = backward(state, g.output, a0, extra=extra)
        lb2, _ = backward(state, g.output, a0.clone(), extra={k: extra[k].clone()})
    assert torch.equal(a0, copies[0]) and torch.equal(extra[k], copies[1])
    assert torch.equal(lb, lb2)
    with torch.enable_grad():
        lb3, _ = backward(state, g.output, a0, extra=extra)
    assert torch.allclose(lb, lb3, atol=1e-5)


def test_one_channel_transposed_convolution_under_a_gradient_is_bitwise_mmfold() -> None:
    """Under a gradient the taps carry the gradient of ``fold(Wᵀ @ a)`` (α-CROWN's steps depend
    on these values bit for bit): the same outputs and input gradients as that form."""
    from edgeproof.certify.linear_ops import conv_transpose2d_fast

    torch.manual_seed(6)
    for n, cout, h, k, s, p in [(64, 6, 8, 5, 1, 2), (40, 16, 14, 4, 2, 1)]:
        w = torch.randn(cout, 1, k, k)
        base = torch.randn(n, cout, h, h)
        out_h = (h - 1) * s - 2 * p + k
        g = torch.randn(n, 1, out_h, out_h)
        a1 = base.clone().requires_grad_(True)
        cols = torch.matmul(w.reshape(cout, k * k).t(), a1.reshape(n, cout, -1))
        ref = F.fold(cols, (out_h, out_h), (k, k), padding=p, stride=s)
        ref.backward(g)
        a2 = base.clone().requires_grad_(True)
        got = conv_transpose2d_fast(a2, w, (s, s), (p, p), (0, 0), 1, (1, 1), (out_h, out_h))
        got.backward(g)
        assert torch.equal(got, ref) and a1.grad is not None and a2.grad is not None
        assert torch.equal(a2.grad, a1.grad)

"""The nonlinear operators and their relaxations (see :mod:`~edgeproof.certify.ops`): the
elementwise activations (ReLU, LeakyReLU, sigmoid/tanh, a uniform fake quantizer) and max pools."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproof.certify.op_base import (
    BoundOp,
    Interval,
)


@dataclass(frozen=True)
class Relaxation:
    """Two lines around an elementwise function on ``[l, u]``, shape ``(B, *shape)`` each.

    ``lower_slope·x + lower_bias ≤ f(x) ≤ upper_slope·x + upper_bias`` for ``x ∈ [l, u]``;
    ``None`` biases are zero. ``unstable`` marks the neurons whose lower slope α-CROWN may move
    (within ``[alpha_min, 1]``); ``None`` when the operator has none.
    """

    lower_slope: Tensor
    lower_bias: Tensor | None
    upper_slope: Tensor
    upper_bias: Tensor | None
    unstable: Tensor | None = None


@dataclass(frozen=True)
class PoolRelaxation:
    """A max pool's lines per window: one-hot lower coefficients ``lower`` and upper
    coefficients ``upper`` ``(B, C, window, L)``, the upper constant ``upper_const``
    ``(B, C, L)``, and ``valid`` ``(B, C, window, L)`` (False on padding); ``argmax`` ``(B, C,
    L)`` is the input (flat over the map) where ``lower`` is 1, ``dominant`` ``(B, C, L)``
    where the upper line is that input too."""

    lower: Tensor
    upper: Tensor
    upper_const: Tensor
    valid: Tensor
    argmax: Tensor | None = None
    dominant: Tensor | None = None


class Activation(BoundOp):
    """An elementwise nonlinearity with a linear relaxation on ``[l, u]``."""

    ibp_intermediate = True
    #: α-CROWN may optimise the lower slope of unstable neurons within [alpha_min, 1]
    optimisable: bool = False
    #: branch-and-bound may split a neuron at 0
    splittable: bool = False
    alpha_min: float = 0.0

    def relax(self, lo: Tensor, hi: Tensor) -> Relaxation:
        raise NotImplementedError


def backward_elementwise(
    a: Tensor, rel: Relaxation, alpha: Tensor | None = None, *, inplace: bool = False
) -> tuple[Tensor, Tensor | None]:
    """One lower-bound backward step through an elementwise relaxation.

    ``a`` is ``(B, R, *shape)``; the relaxation tensors are ``(B, *shape)`` and broadcast over
    rows. With ``alpha`` (``(B, R, *shape)``) the lower slope of unstable neurons is ``alpha``.
    Returns the new coefficients (written into ``a`` if ``inplace``) and the constant
    ``(B, R)``.
    """
    dl = rel.lower_slope.unsqueeze(1)
    du = rel.upper_slope.unsqueeze(1)
    if alpha is not None and rel.unstable is not None:
        dl = torch.where(rel.unstable.unsqueeze(1), alpha, dl)
    fd = a.dim() - 2
    return apply_lines(a, dl, rel.lower_bias, du, rel.upper_bias, feature_dims=fd, inplace=inplace)


def _channels_inner(x: Tensor) -> bool:
    """``(B, R, C, H, W)`` coefficients in channels-last order (the channel stride is 1)."""
    return x.dim() == 5 and x.stride(2) == 1 and not x.is_contiguous()


def _match_layout(m: Tensor, like: Tensor) -> Tensor:
    """A broadcast map ``(B|1, 1|R, C, H, W)`` in the memory order of ``like``: with channels
    innermost where ``like`` is channels-last, so elementwise steps stream both alike."""
    if m.dim() == 5 and _channels_inner(like) and m.stride(2) != 1:
        return m.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return m


def _rowdot(x: Tensor, w: Tensor, feature_dims: int) -> Tensor:
    """``Σ x·w`` over the last ``feature_dims`` dimensions; ``x`` is ``(B, R, ...)`` and ``w``
    broadcasts against it. A per-problem map ``(B|1, 1, ...)`` becomes one batched matrix
    product (no temporary); channels-last coefficients are read in their own order."""
    b, r = x.shape[0], x.shape[1]
    if w.dim() == x.dim() == feature_dims + 2 and w.shape[1] == 1:
        if _channels_inner(x):
            xv = x.permute(0, 1, 3, 4, 2)
            wv = w.expand(b, 1, *x.shape[2:]).permute(0, 1, 3, 4, 2)
        else:
            xv, wv = x, w.expand(b, 1, *x.shape[2:])
        if xv.is_contiguous():
            return torch.bmm(xv.reshape(b, r, -1), wv.reshape(b, -1, 1)).squeeze(-1)
    return (x * w).sum(tuple(range(x.dim() - feature_dims, x.dim())))


def apply_lines(
    a: Tensor,
    dl: Tensor,
    bl: Tensor | None,
    du: Tensor,
    bu: Tensor | None,
    *,
    feature_dims: int,
    inplace: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``a⁺·dl + a⁻·du`` and the constant ``Σ a⁺·bl + a⁻·bu`` over the last
    ``feature_dims`` dimensions. Written as ``a·dl + a⁻·(du − dl)`` and ``Σ a⁻·bu`` (``+ Σ a·bl
    − Σ a⁻·bl``) — one clamp, one product, one in-place fused multiply-add and batched dot
    products: these steps are memory-bound, and boolean masks are several times slower on CPU.
    Maps broadcast like the slopes; ``inplace``: the coefficients are written into ``a``."""
    dl, du = _match_layout(dl, a), _match_layout(du, a)
    # a⁻ by a clamp whose gradient at a = 0 is that of a⁺ (the clamp passes it): the
    # subgradient of the step there is dl, as for a·du + a⁺·(dl − du)
    neg = a - a.clamp(min=0) if a.requires_grad else a.clamp(max=0)
    bias: Tensor | None = None
    if bu is not None:
        bub = _match_layout(bu.unsqueeze(1) if bu.dim() == a.dim() - 1 else bu, a)
        bias = _rowdot(neg, bub, feature_dims)
    if bl is not None:
        blb = _match_layout(bl.unsqueeze(1) if bl.dim() == a.dim() - 1 else bl, a)
        lb = _rowdot(a, blb, feature_dims) - _rowdot(neg, blb, feature_dims)
        bias = lb if bias is None else bias + lb
    new = a.mul_(dl) if inplace else a * dl
    new.addcmul_(neg, du - dl)
    return new, bias


class ReLU(Activation):
    """``max(x, 0)`` (and LeakyReLU through :class:`LeakyReLU`).

    Relaxation exactly as auto_LiRPA 0.7.1 ``BoundRelu`` (``_relu_upper_bound``, adaptive
    lower bound): with ``l⁻ = min(l, 0)`` and ``u⁺ = max(max(u, 0), l⁻ + 1e-8)``, the upper line
    has slope ``u⁺/(u⁺ − l⁻)`` and intercept ``−l⁻·slope`` (the chord of the triangle, identity
    for ``l ≥ 0``, zero for ``u ≤ 0``); the lower slope is 1 where the upper slope exceeds 1/2
    (``u > −l``) and 0 otherwise (CROWN's adaptive choice, Zhang et al. 2018 §3.2).
    """

    kind = "relu"
    optimisable = True
    splittable = True
    negative_slope = 0.0

    def forward(self, *xs: Tensor) -> Tensor:
        return F.relu(xs[0])

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return F.relu(lo), F.relu(hi)

    def relax(self, lo: Tensor, hi: Tensor) -> Relaxation:
        lo_r = lo.clamp(max=0)
        hi_r = torch.maximum(hi.clamp(min=0), lo_r + 1e-8)
        du = hi_r / (hi_r - lo_r)
        bu = -lo_r * du
        dl = (du > 0.5).to(lo.dtype)
        unstable = (lo < 0) & (hi > 0)
        return Relaxation(dl, None, du, bu, unstable)


class LeakyReLU(ReLU):
    """``max(x, a·x)`` for ``0 ≤ a < 1``; relaxation as auto_LiRPA's leaky ``BoundRelu``:
    upper slope ``(u⁺ − a·l⁻)/(u⁺ − l⁻)``, intercept ``−l⁻·slope + a·l⁻``; lower slope 1 where
    the upper slope exceeds 1/2, ``a`` otherwise; α-CROWN moves it within ``[a, 1]``."""

    kind = "leaky_relu"

    def __init__(self, negative_slope: float) -> None:
        self.negative_slope = float(negative_slope)
        self.alpha_min = self.negative_slope

    def forward(self, *xs: Tensor) -> Tensor:
        return F.leaky_relu(xs[0], self.negative_slope)

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.forward(lo), self.forward(hi)

    def relax(self, lo: Tensor, hi: Tensor) -> Relaxation:
        a = self.negative_slope
        lo_r = lo.clamp(max=0)
        hi_r = torch.maximum(hi.clamp(min=0), lo_r + 1e-8)
        du = (hi_r - a * lo_r) / (hi_r - lo_r)
        bu = -lo_r * du + a * lo_r
        big = (du > 0.5).to(lo.dtype)
        dl = big + (1 - big) * a
        # stable neurons: exact lines
        dl = torch.where(
            lo >= 0, torch.ones_like(dl), torch.where(hi <= 0, torch.full_like(dl, a), dl)
        )
        unstable = (lo < 0) & (hi > 0)
        return Relaxation(dl, None, du, bu, unstable)

    def describe(self) -> str:
        return f"leaky_relu({self.negative_slope:g})"


class SShaped(Activation):
    """Sigmoid or tanh: ``f = g + c`` with ``g`` odd, convex on ``x ≤ 0`` and concave on
    ``x ≥ 0``. Relaxation of CROWN (Zhang et al. 2018, §3.3 and Table 1):

    * ``u ≤ 0`` (convex part): upper = chord, lower = tangent at the midpoint;
    * ``l ≥ 0`` (concave part): lower = chord, upper = tangent at the midpoint;
    * ``l < 0 < u``: upper = the line through ``(l, f(l))`` tangent to ``f`` at ``d ≥ 0``
      (the largest chord slope from ``l``), or the chord to ``u`` when ``d > u``; lower by the
      point symmetry ``g(−x) = −g(x)``. ``d`` solves ``f'(d)(d − l) = f(d) − f(l)`` by 40
      bisection steps; the slope used is ``f'`` at the bracket's lower end, which is never
      smaller than the exact tangent slope, so the line stays above ``f``.
    * ``u − l < 1e-6``: constant lines ``f(l)``, ``f(u)`` (``f`` is increasing).

    Every intercept is loosened by ``1e-6·(1 + |intercept|)`` against float rounding.
    """

    piecewise_linear = False

    def __init__(self, name: str) -> None:
        if name not in ("sigmoid", "tanh"):
            raise ValueError(name)
        self.kind = name
        self._offset = 0.5 if name == "sigmoid" else 0.0

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.sigmoid(xs[0]) if self.kind == "sigmoid" else torch.tanh(xs[0])

    def _deriv(self, x: Tensor) -> Tensor:
        if self.kind == "sigmoid":
            s = torch.sigmoid(x)
            return s * (1 - s)
        t = torch.tanh(x)
        return 1 - t * t

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.forward(lo), self.forward(hi)

    def _upper_through_left(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Slope of the tightest line through ``(lo, f(lo))`` above ``f`` on ``[lo, hi]``
        for ``lo < 0 < hi``."""
        f_lo = self.forward(lo)

        def gap(d: Tensor) -> Tensor:
            return self._deriv(d) * (d - lo) - (self.forward(d) - f_lo)

        chord = (self.forward(hi) - f_lo) / (hi - lo)
        d_lo = torch.zeros_like(lo)
        d_hi = torch.maximum(hi, -lo) + 1.0
        # grow the bracket until gap(d_hi) <= 0 (gap is decreasing on [0, inf))
        for _ in range(8):
            d_hi = torch.where(gap(d_hi) > 0, d_hi * 2, d_hi)
        for _ in range(40):
            mid = (d_lo + d_hi) / 2
            pos = gap(mid) > 0
            d_lo = torch.where(pos, mid, d_lo)
            d_hi = torch.where(pos, d_hi, mid)
        tangent = self._deriv(d_lo)
        use_chord = gap(hi) >= 0  # d >= hi: the chord to hi is the tightest valid line
        return torch.where(use_chord, chord, tangent)

    def relax(self, lo: Tensor, hi: Tensor) -> Relaxation:
        f_lo, f_hi = self.forward(lo), self.forward(hi)
        width = hi - lo
        tiny = width < 1e-6
        safe_w = torch.where(tiny, torch.ones_like(width), width)
        chord = (f_hi - f_lo) / safe_w
        mid = (lo + hi) / 2
        t_slope = self._deriv(mid)
        t_bias = self.forward(mid) - t_slope * mid
        c_bias_lo = f_lo - chord * lo
        # crossing: upper through (lo, f(lo)); lower through (hi, f(hi)) by symmetry
        cross = (lo < 0) & (hi > 0) & ~tiny
        lo_c = torch.where(cross, lo, torch.full_like(lo, -1.0))
        hi_c = torch.where(cross, hi, torch.full_like(hi, 1.0))
        up_cross = self._upper_through_left(lo_c, hi_c)
        low_cross = self._upper_through_left(-hi_c, -lo_c)
        convex = hi <= 0
        concave = lo >= 0
        du = torch.where(convex, chord, torch.where(concave, t_slope, up_cross))
        bu = torch.where(convex, c_bias_lo, torch.where(concave, t_bias, f_lo - up_cross * lo))
        dl = torch.where(convex, t_slope, torch.where(concave, chord, low_cross))
        bl = torch.where(convex, t_bias, torch.where(concave, c_bias_lo, f_hi - low_cross * hi))
        zero = torch.zeros_like(lo)
        du = torch.where(tiny, zero, du)
        dl = torch.where(tiny, zero, dl)
        bu = torch.where(tiny, f_hi, bu)
        bl = torch.where(tiny, f_lo, bl)
        bu = bu + 1e-6 * (1 + bu.abs())
        bl = bl - 1e-6 * (1 + bl.abs())
        return Relaxation(dl, bl, du, bu, None)


class UniformQuantizer(Activation):
    """A uniform fake quantizer ``q(x) = s·(clamp(round(x/s) + z, qmin, qmax) − z)``.

    ``q`` is nondecreasing, so IBP is ``[q(l), q(u)]``. Lines: where ``[l, u]`` lies inside
    ``[s(qmin − z − ½), s(qmax − z + ½)]`` (no clamping), ``x − s/2 ≤ q(x) ≤ x + s/2`` (rounding
    moves a value by at most half a step), used when that band (width ``s``) is narrower than
    ``q(u) − q(l)``; otherwise the constant lines ``q(l)`` and ``q(u)``. Not piecewise-linear
    (a staircase): branch-and-bound refuses such models.
    """

    kind = "fake_quant"
    piecewise_linear = False

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int) -> None:
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.qmin = int(qmin)
        self.qmax = int(qmax)

    def forward(self, *xs: Tensor) -> Tensor:
        s = self.scale
        q = torch.clamp(torch.round(xs[0] / s) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * s

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.forward(lo), self.forward(hi)

    def relax(self, lo: Tensor, hi: Tensor) -> Relaxation:
        s = self.scale
        q_lo, q_hi = self.forward(lo), self.forward(hi)
        lo_edge = s * (self.qmin - self.zero_point - 0.5)
        hi_edge = s * (self.qmax - self.zero_point + 0.5)
        band = (lo >= lo_edge) & (hi <= hi_edge) & (q_hi - q_lo > s)
        one = torch.ones_like(lo)
        zero = torch.zeros_like(lo)
        slack = 1e-6 * (1 + s)
        dl = torch.where(band, one, zero)
        du = dl
        bl = torch.where(band, torch.full_like(lo, -s / 2 - slack), q_lo)
        bu = torch.where(band, torch.full_like(lo, s / 2 + slack), q_hi)
        return Relaxation(dl, bl, du, bu, None)

    def describe(self) -> str:
        return f"fake_quant(scale={self.scale:g}, zero_point={self.zero_point})"


class MaxPool(BoundOp):
    """Max pooling (1-D or 2-D, any stride, zero or more ``-inf`` padding), as auto_LiRPA 0.7.1
    ``BoundMaxPool``.

    For each window, let ``i*`` be the input with the largest lower bound. Lower line:
    ``y ≥ x_{i*}`` (α-CROWN: ``y ≥ Σ αᵢ xᵢ`` with α on the probability simplex, any point of
    which is valid since the max is at least any convex combination). Upper line: ``y ≤ x_{i*}``
    when ``l_{i*} ≥ max_{j≠i*} u_j`` (the max is that input), else the constant ``max_j u_j``.
    Windows are handled by unfold/fold, so overlapping pools (stride < kernel) are supported.
    """

    kind = "maxpool"
    ibp_intermediate = True
    optimisable = True

    def __init__(
        self,
        kernel: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        in_shape: Sequence[int],
        out_shape: Sequence[int],
    ) -> None:
        self.dim = len(kernel)
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        # 1-D pools are run as 2-D pools of height 1
        if self.dim == 1:
            self.kernel = (1, int(kernel[0]))
            self.stride = (1, int(stride[0]))
            self.padding = (0, int(padding[0]))
        else:
            self.kernel = (int(kernel[0]), int(kernel[1]))
            self.stride = (int(stride[0]), int(stride[1]))
            self.padding = (int(padding[0]), int(padding[1]))
        self.window = self.kernel[0] * self.kernel[1]

    def _as2d(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-2) if self.dim == 1 else x

    def forward(self, *xs: Tensor) -> Tensor:
        y = F.max_pool2d(self._as2d(xs[0]), self.kernel, self.stride, self.padding)
        return y.squeeze(-2) if self.dim == 1 else y

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.forward(lo), self.forward(hi)

    def _unfold(self, x: Tensor, fill: float) -> Tensor:
        """``(B, C, *spatial)`` → ``(B, C, window, L)`` windows (padding filled with ``fill``)."""
        x2 = self._as2d(x)
        b, c = x2.shape[0], x2.shape[1]
        if self.tiles:
            (kh, kw) = self.kernel
            ho, wo = x2.shape[2] // kh, x2.shape[3] // kw
            t = x2[:, :, : ho * kh, : wo * kw].reshape(b, c, ho, kh, wo, kw)
            return t.permute(0, 1, 3, 5, 2, 4).reshape(b, c, kh * kw, ho * wo)
        ph, pw = self.padding
        if ph or pw:
            x2 = F.pad(x2, (pw, pw, ph, ph), value=fill)
        cols = F.unfold(x2, self.kernel, stride=self.stride)  # (B, C*win, L)
        return cols.view(b, c, self.window, -1)

    def relax_windows(self, lo: Tensor, hi: Tensor) -> PoolRelaxation:
        """The relaxation of every window from the input bounds ``(B, C, *spatial)``."""
        lw = self._unfold(lo, -math.inf)
        uw = self._unfold(hi, -math.inf)
        max_l, idx = lw.max(dim=2, keepdim=True)
        onehot = torch.zeros_like(lw).scatter_(2, idx, 1.0)
        others = uw.masked_fill(onehot.bool(), -math.inf)
        max_u_others = others.max(dim=2, keepdim=True).values
        dominant = max_l >= max_u_others
        upper = onehot * dominant.to(lw.dtype)
        upper_const = torch.where(
            dominant, torch.zeros_like(max_l), uw.max(dim=2, keepdim=True).values
        )
        valid = torch.isfinite(self._unfold(torch.zeros_like(lo), -math.inf))
        # the input of each window's lower maximum, flat over the (2-D) input map
        w = self.in_shape[-1]
        wo = self.out_shape[-1]
        pos = torch.arange(lw.shape[-1])
        k = idx.squeeze(2)
        rows = (pos // wo) * self.stride[0] - self.padding[0] + k // self.kernel[1]
        cols = (pos % wo) * self.stride[1] - self.padding[1] + k % self.kernel[1]
        argmax = rows * w + cols
        return PoolRelaxation(
            onehot, upper, upper_const.squeeze(2), valid, argmax, dominant.squeeze(2)
        )

    @property
    def tiles(self) -> bool:
        """Windows tile the input without overlap or padding (stride = kernel): unfold and
        fold are then reshapes."""
        return self.stride == self.kernel and self.padding == (0, 0)

    def fold(self, cols: Tensor) -> Tensor:
        """``(N, C, win, L)`` window coefficients → ``(N, *in_shape)`` (sums overlaps)."""
        n, c = cols.shape[0], cols.shape[1]
        h = self.in_shape[1] if self.dim == 2 else 1
        w = self.in_shape[-1]
        if self.tiles:
            (kh, kw) = self.kernel
            ho, wo = h // kh, w // kw
            t = cols.reshape(n, c, kh, kw, ho, wo).permute(0, 1, 4, 2, 5, 3)
            t = t.reshape(n, c, ho * kh, wo * kw)
            if ho * kh != h or wo * kw != w:
                t = F.pad(t, (0, w - wo * kw, 0, h - ho * kh))
            return t.reshape(n, *self.in_shape)
        out = F.fold(
            cols.reshape(n, c * self.window, -1),
            (h, w),
            self.kernel,
            padding=self.padding,
            stride=self.stride,
        )
        return out.view(n, *self.in_shape)

    def backward_windows(
        self,
        a: Tensor,
        lower: Tensor,
        upper: Tensor,
        upper_const: Tensor,
        rel: PoolRelaxation | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``a`` ``(B, R, C, *out)``; ``lower`` ``(B, 1 or R, C, win, L)``. With the
        relaxation ``rel`` and tiling windows, the upper line (one input of a window, or none)
        is scattered to its input instead of multiplied over the window (the same values)."""
        b, r = a.shape[0], a.shape[1]
        c = a.shape[2]
        aw = a.reshape(b, r, c, 1, -1)
        neg = aw.clamp(max=0)
        if rel is not None and rel.argmax is not None and rel.dominant is not None and self.tiles:
            coef = aw.clamp(min=0) * lower
            new = self.fold(coef.reshape(b * r, c, self.window, -1)).view(b, r, c, -1)
            up = neg.squeeze(3) * rel.dominant.unsqueeze(1).to(a.dtype)
            index = rel.argmax.unsqueeze(1).expand(b, r, *rel.argmax.shape[1:])
            new = new.scatter_add(3, index, up).view(b, r, *self.in_shape)
        else:
            coef = aw.clamp(min=0) * lower + neg * upper.unsqueeze(1)
            new = self.fold(coef.reshape(b * r, c, self.window, -1)).view(b, r, *self.in_shape)
        bias = (neg.squeeze(3) * upper_const.unsqueeze(1)).flatten(2).sum(2)
        return new, bias

    def backward_argmax(self, a: Tensor, rel: PoolRelaxation) -> tuple[Tensor, Tensor]:
        """:meth:`backward_windows` with the relaxation's own (one-hot) lower coefficients:
        each output's coefficient ``a⁺ + a⁻·[dominant]`` goes to its window's lower maximum
        (summed where windows share it), without window-sized temporaries."""
        assert rel.argmax is not None and rel.dominant is not None
        b, r, c = a.shape[0], a.shape[1], a.shape[2]
        av = a.reshape(b, r, c, -1)
        neg = av.clamp(max=0)
        coef = av - neg * (~rel.dominant).unsqueeze(1).to(a.dtype)
        h = self.in_shape[1] if self.dim == 2 else 1
        new = torch.zeros(b, r, c, h * self.in_shape[-1], dtype=a.dtype)
        index = rel.argmax.unsqueeze(1).expand(b, r, *rel.argmax.shape[1:])
        new.scatter_add_(3, index, coef)
        bias = (neg * rel.upper_const.unsqueeze(1)).flatten(2).sum(2)
        return new.view(b, r, *self.in_shape), bias

    def describe(self) -> str:
        return f"maxpool{self.dim}d(kernel={self.kernel}, stride={self.stride})"

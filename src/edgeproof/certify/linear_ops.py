"""The linear operators (see :mod:`~edgeproof.certify.ops`): dense and convolution layers,
elementwise affine maps, reshapes, permutations, sums, differences, concatenation, constants and
traced linear functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproof.certify.op_base import (
    Interval,
    LinearOp,
    _center_radius,
)


class Dense(LinearOp):
    """``y = x Wᵀ + b`` over the last dimension (``nn.Linear``, ``F.linear``, ``x @ M``)."""

    kind = "linear"

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight = weight
        self.bias = bias
        self.weight_abs = weight.abs()

    def forward(self, *xs: Tensor) -> Tensor:
        return F.linear(xs[0], self.weight, self.bias)

    def ibp(self, *bounds: Interval) -> Interval:
        c, r = _center_radius(bounds[0])
        c2 = F.linear(c, self.weight, self.bias)
        r2 = F.linear(r, self.weight_abs)
        return c2 - r2, c2 + r2

    def ibp_spec(self, bounds: Interval, c: Tensor) -> Interval:
        """IBP of ``C·y`` with ``C`` ``(B, R, out)`` folded into the layer: the interval of
        ``(C W) x + C b`` over the input box (tighter than ``C`` times the output box; the
        IBP of auto_LiRPA with a spec matrix). Needs a 2-D input ``(B, in)``."""
        xc, xr = _center_radius(bounds)
        w = torch.matmul(c, self.weight)  # (B, R, in)
        centre = torch.bmm(w, xc.unsqueeze(-1)).squeeze(-1)
        rad = torch.bmm(w.abs(), xr.unsqueeze(-1)).squeeze(-1)
        if self.bias is not None:
            centre = centre + torch.matmul(c, self.bias)
        return centre - rad, centre + rad

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        new = torch.matmul(a, self.weight)
        if self.bias is None:
            return [new], None
        bias = torch.matmul(a, self.bias)
        if bias.dim() > 1:
            bias = bias.flatten(1).sum(1)
        return [new], bias

    def describe(self) -> str:
        return f"linear {self.weight.shape[1]}→{self.weight.shape[0]}"


class Conv(LinearOp):
    """1-D or 2-D convolution (zero padding), backward by the transposed convolution."""

    kind = "conv"

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        *,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.weight_abs = weight.abs()
        self.dim = weight.dim() - 2
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = groups
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        k = weight.shape[2:]
        self.output_padding = tuple(
            self.in_shape[1 + i]
            - (
                (self.out_shape[1 + i] - 1) * self.stride[i]
                - 2 * self.padding[i]
                + self.dilation[i] * (k[i] - 1)
                + 1
            )
            for i in range(self.dim)
        )

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        fn = F.conv2d if self.dim == 2 else F.conv1d
        return fn(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, *xs: Tensor) -> Tensor:
        return self._conv(xs[0], self.weight, self.bias)

    def ibp(self, *bounds: Interval) -> Interval:
        c, r = _center_radius(bounds[0])
        c2 = self._conv(c, self.weight, self.bias)
        r2 = self._conv(r, self.weight_abs, None)
        return c2 - r2, c2 + r2

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        if self.dim == 2:
            new = conv_transpose2d_fast(
                a,
                self.weight,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
                self.in_shape[1:],
            )
        else:
            new = F.conv_transpose1d(
                a,
                self.weight,
                None,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        if self.bias is None:
            return [new], None
        return [new], a.flatten(2).sum(2) @ self.bias

    def describe(self) -> str:
        return f"conv{self.dim}d {self.weight.shape[1] * self.groups}→{self.weight.shape[0]}"


def conv_transpose2d_fast(
    a: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
    dilation: Sequence[int],
    out_hw: Sequence[int],
) -> Tensor:
    """``conv_transpose2d`` of many rows, by the faster of two equal computations on one CPU
    thread (measured for the shapes bound propagation produces): for 1–3 output channels (a
    model's first layer) one matrix product over all rows and positions followed by one shifted
    sum per kernel tap (:func:`_conv_transpose_by_taps`; oneDNN's kernel is several times slower
    there; where a gradient is recorded, for one output channel only, through
    :class:`_TapsConvTranspose`, whose gradient is that of a matrix product and ``fold``);
    otherwise the channels-last kernel (2–5× oneDNN's default layout), whose output stays
    channels-last: the elementwise steps that follow keep that layout, so the next transposed
    convolution needs no conversion."""
    cin = weight.shape[1] * groups
    if groups == 1 and cin <= 3:
        geometry = (
            tuple(stride),
            tuple(padding),
            tuple(dilation),
            (int(out_hw[0]), int(out_hw[1])),
        )
        if not (torch.is_grad_enabled() and (a.requires_grad or weight.requires_grad)):
            return _conv_transpose_by_taps(a, weight, *geometry)
        if cin == 1 and not weight.requires_grad:
            out: Tensor = _TapsConvTranspose.apply(a, weight, geometry)  # type: ignore[no-untyped-call]
            return out
    a = a.contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(
        a,
        weight,
        None,
        tuple(stride),
        tuple(padding),
        tuple(output_padding),
        groups,
        tuple(dilation),
    )


class _TapsConvTranspose(torch.autograd.Function):
    """The transposed convolution to one channel by taps, with the gradient (to the input
    only) of ``fold(Wᵀ @ a)``: ``W @ unfold(grad)``, the computation autograd records for that
    form, whose forward values the taps reproduce bitwise (the same products, the same order of
    sums)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, weight: Tensor, geometry: tuple[Any, ...]) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.geometry = geometry
        ctx.in_shape = tuple(a.shape)
        return _conv_transpose_by_taps(a, weight, *geometry)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, _ = ctx.geometry
        cout = ctx.in_shape[1]
        k1, k2 = weight.shape[2], weight.shape[3]
        cols = _unfold(grads[0], (k1, k2), stride, padding, dilation, ctx.in_shape[2:])
        grad = torch.matmul(weight.reshape(cout, k1 * k2), cols)
        return grad.reshape(ctx.in_shape), None, None


def _unfold(
    x: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: Sequence[int],
) -> Tensor:
    """``F.unfold`` (the same copy, ``(N, C·Kh·Kw, L)``) by strided views of the padded map,
    about twice as fast on one thread; ``F.unfold`` itself for dilated kernels."""
    if tuple(dilation) != (1, 1):
        return F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    (ph, pw), (sh, sw) = padding, stride
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    views = xp.unfold(2, kernel[0], sh).unfold(3, kernel[1], sw)[:, :, : out_hw[0], : out_hw[1]]
    n, c = x.shape[0], x.shape[1]
    return views.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kernel[0] * kernel[1], -1)


def _conv_transpose_by_taps(
    a: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    out_hw: Sequence[int],
) -> Tensor:
    """``conv_transpose2d`` (no groups) as ``(taps·C_in, C_out) @ (C_out, N·H·W)`` and a sum of
    each tap's shifted plane into an uncropped canvas, then cut to ``out_hw``; the result is a
    view ``(N, C_in, H_out, W_out)`` of a channels-first ``(C_in, N, ·, ·)`` canvas."""
    n, cout, h, w = a.shape
    cin, k1, k2 = weight.shape[1], weight.shape[2], weight.shape[3]
    rows = a.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    taps = weight.permute(2, 3, 1, 0).reshape(k1 * k2 * cin, cout)
    cols = torch.mm(taps, rows.reshape(n * h * w, cout).t()).view(k1, k2, cin, n, h, w)
    (sh, sw), (dh, dw), (ph, pw) = tuple(stride), tuple(dilation), tuple(padding)
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    span_h, span_w = sh * (h - 1) + 1, sw * (w - 1) + 1
    canvas = torch.zeros(
        cin,
        n,
        max(span_h + dh * (k1 - 1), ph + out_h),
        max(span_w + dw * (k2 - 1), pw + out_w),
        dtype=a.dtype,
    )
    for i in range(k1):
        for j in range(k2):
            top, left = i * dh, j * dw
            canvas[:, :, top : top + span_h : sh, left : left + span_w : sw] += cols[i, j]
    return canvas[:, :, ph : ph + out_h, pw : pw + out_w].permute(1, 0, 2, 3)


class Elementwise(LinearOp):
    """``y = x·scale + shift`` elementwise (BatchNorm in eval mode, ``Normalize``, constants).

    ``scale`` and ``shift`` broadcast against the per-sample shape (they carry a leading batch
    dimension of size 1).
    """

    kind = "affine"
    box_exact = True

    def __init__(self, scale: Tensor | None, shift: Tensor | None) -> None:
        self.scale = scale
        self.shift = shift

    def forward(self, *xs: Tensor) -> Tensor:
        y = xs[0]
        if self.scale is not None:
            y = y * self.scale
        if self.shift is not None:
            y = y + self.shift
        return y

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        if self.scale is not None:
            a, b = lo * self.scale, hi * self.scale
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        if self.shift is not None:
            lo, hi = lo + self.shift, hi + self.shift
        return lo, hi

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        new = a * self.scale if self.scale is not None else a
        if self.shift is None:
            return [new], None
        return [new], (a * self.shift).flatten(1).sum(1)

    def then(self, other: Elementwise) -> Elementwise:
        """The composition ``other ∘ self`` as one elementwise map."""
        s1 = self.scale
        t1 = self.shift
        s2 = other.scale
        t2 = other.shift
        scale = s1 if s2 is None else (s2 if s1 is None else s1 * s2)
        shift = None if t1 is None else (t1 if s2 is None else t1 * s2)
        if t2 is not None:
            shift = t2 if shift is None else shift + t2
        return Elementwise(scale, shift)


class Reshape(LinearOp):
    """A per-sample reshape (flatten, view, squeeze, unsqueeze)."""

    kind = "reshape"
    box_exact = True
    ibp_intermediate = True

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].reshape(xs[0].shape[0], *self.out_shape)

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.forward(lo), self.forward(hi)

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        return [a.reshape(a.shape[0], *self.in_shape)], None


class Permute(LinearOp):
    """A per-sample permutation of dimensions (``permute``/``transpose`` keeping the batch)."""

    kind = "permute"
    box_exact = True
    ibp_intermediate = True

    def __init__(self, dims: Sequence[int]) -> None:
        self.dims = tuple(dims)  # per-sample dims (0-based after the batch)
        inv = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inv[d] = i
        self.inverse = tuple(inv)

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].permute(0, *(d + 1 for d in self.dims))

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.forward(lo), self.forward(hi)

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        return [a.permute(0, *(d + 1 for d in self.inverse))], None


class Add(LinearOp):
    """``x + y`` of two input-dependent tensors of the same shape (residual connections)."""

    kind = "add"
    arity = 2

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0] + xs[1]

    def ibp(self, *bounds: Interval) -> Interval:
        return bounds[0][0] + bounds[1][0], bounds[0][1] + bounds[1][1]

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        return [a, a], None


class Sub(LinearOp):
    """``x - y`` of two input-dependent tensors of the same shape."""

    kind = "sub"
    arity = 2

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0] - xs[1]

    def ibp(self, *bounds: Interval) -> Interval:
        return bounds[0][0] - bounds[1][1], bounds[0][1] - bounds[1][0]

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        return [a, -a], None


class Cat(LinearOp):
    """Concatenation along a per-sample dimension."""

    kind = "cat"

    def __init__(self, dim: int, sizes: Sequence[int]) -> None:
        self.dim = dim  # per-sample dimension
        self.sizes = tuple(sizes)
        self.arity = len(self.sizes)

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=self.dim + 1)

    def ibp(self, *bounds: Interval) -> Interval:
        return (
            torch.cat([b[0] for b in bounds], dim=self.dim + 1),
            torch.cat([b[1] for b in bounds], dim=self.dim + 1),
        )

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        return list(torch.split(a, list(self.sizes), dim=self.dim + 1)), None


class Constant(LinearOp):
    """A tensor that does not depend on the input (broadcast over the batch)."""

    kind = "constant"
    arity = 0

    def __init__(self, value: Tensor) -> None:
        self.value = value  # (1, *shape)

    def forward(self, *xs: Tensor) -> Tensor:
        return self.value

    def ibp(self, *bounds: Interval) -> Interval:
        return self.value, self.value

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        return [], (a * self.value).flatten(1).sum(1)


class LinearFn(LinearOp):
    """A per-sample linear map with nonnegative coefficients given as a function (average
    pooling, means, slicing, zero padding). Backward by the vector–Jacobian product of ``fn``
    (one forward and one backward of ``fn`` on a zero tensor: exact, since ``fn`` is linear)."""

    kind = "linear-fn"
    ibp_intermediate = False

    def __init__(self, fn: Callable[[Tensor], Tensor], in_shape: Sequence[int], name: str) -> None:
        self.fn = fn
        self.in_shape = tuple(in_shape)
        self.kind = name

    def forward(self, *xs: Tensor) -> Tensor:
        return self.fn(xs[0])

    def ibp(self, *bounds: Interval) -> Interval:
        lo, hi = bounds[0]
        return self.fn(lo), self.fn(hi)

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        z = torch.zeros((a.shape[0], *self.in_shape), dtype=a.dtype, requires_grad=True)
        with torch.enable_grad():
            out = self.fn(z)
            (g,) = torch.autograd.grad(out, z, a, create_graph=a.requires_grad)
        return [g], None

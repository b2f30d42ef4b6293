"""Patches: sparse backward coefficients for intermediate neurons of convolutional layers.

Bounding a neuron at position ``(i, j)`` of a convolutional layer needs a coefficient tensor on
every earlier layer, but only its receptive field is nonzero. As auto_LiRPA's
``conv_mode='patches'`` (Xu et al. 2020, §3.3 and Appendix), each row's coefficients on a layer
of spatial size ``H×W`` are kept as one window ``(C, Kh, Kw)`` whose top-left corner sits at
``(i·sh − ph, j·sw − pw)``: the stride ``s`` and padding ``p`` are shared by all rows (the
composition of the convolutions between the two layers), the position ``(i, j)`` is the row's.

Invariant: window entries outside the ``H×W`` map (the zero padding of a convolution) are zero,
so sums over a window only count real neurons. Backward through a convolution is a transposed
convolution of the window *without* cropping (the window grows to ``(K − 1)s + d(k − 1) + 1``),
followed by zeroing the entries that fall outside the input map. Elementwise relaxations multiply
by the matching window of their slope maps (gathered per row). Where a window would cover the
whole map, or an operator has no patch form (linear layers, reshapes, max pooling), the patches
become an ordinary dense tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproof.certify.ops import conv_transpose2d_fast

__all__ = ["Patches"]

#: largest transfer matrix (values) used for the transposed convolution of windows
_TRANSFER_LIMIT = 1 << 21
_TRANSFERS: dict[tuple[object, ...], Tensor] = {}


def _transfer(
    weight: Tensor,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    kernel: tuple[int, int],
) -> Tensor:
    """The matrix ``(C_out·Kh·Kw, C_in·K'h·K'w)`` of the uncropped transposed convolution of a
    ``Kh×Kw`` window (the transposed convolution of the identity basis), cached per weight."""
    key = (
        weight.data_ptr(),
        tuple(weight.shape),
        weight.dtype,
        tuple(stride),
        tuple(dilation),
        groups,
        kernel,
    )
    t = _TRANSFERS.get(key)
    if t is None:
        c = weight.shape[0]
        n = c * kernel[0] * kernel[1]
        eye = torch.eye(n, dtype=weight.dtype).view(n, c, *kernel)
        t = F.conv_transpose2d(eye, weight, None, tuple(stride), 0, 0, groups, tuple(dilation))
        t = t.reshape(n, -1).contiguous()
        if len(_TRANSFERS) > 64:
            _TRANSFERS.clear()
        _TRANSFERS[key] = t
    return t


@dataclass
class Patches:
    """Per-row windows ``data`` ``(B, R, C, Kh, Kw)`` at ``pos·stride − pad`` on the map.

    Attributes:
        data: the window coefficients.
        pos_i, pos_j: ``(B, R)`` grid positions of the rows' start neurons.
        stride, pad: the shared geometry (top-left corner = ``pos·stride − pad``).
    """

    data: Tensor
    pos_i: Tensor
    pos_j: Tensor
    stride: tuple[int, int]
    pad: tuple[int, int]

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.data.shape[3]), int(self.data.shape[4])

    def offsets(self) -> tuple[Tensor, Tensor]:
        return self.pos_i * self.stride[0] - self.pad[0], self.pos_j * self.stride[1] - self.pad[1]

    def with_data(
        self,
        data: Tensor,
        stride: tuple[int, int] | None = None,
        pad: tuple[int, int] | None = None,
    ) -> Patches:
        return Patches(
            data,
            self.pos_i,
            self.pos_j,
            self.stride if stride is None else stride,
            self.pad if pad is None else pad,
        )

    def _grid(self, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
        """Row/column indices of every window entry ``(B, R, Kh)``, ``(B, R, Kw)`` and the
        mask of entries inside the map ``(B, R, 1, Kh, Kw)``."""
        kh, kw = self.kernel
        oi, oj = self.offsets()
        rows = oi.unsqueeze(-1) + torch.arange(kh)
        cols = oj.unsqueeze(-1) + torch.arange(kw)
        inside = ((rows >= 0) & (rows < h)).unsqueeze(-1) & ((cols >= 0) & (cols < w)).unsqueeze(-2)
        return rows, cols, inside.unsqueeze(2)

    def mask_outside(self, h: int, w: int) -> Patches:
        """Zero the window entries outside an ``h×w`` map."""
        _, _, inside = self._grid(h, w)
        if bool(inside.all()):
            return self
        return self.with_data(self.data * inside.to(self.data.dtype))

    def window(self, m: Tensor) -> Tensor:
        """The values of the per-problem map ``m`` ``(B or 1, C, H, W)`` under each row's
        window, ``(B, R, C, Kh, Kw)`` (zero outside the map). A map constant over space
        (``(·, C, 1, 1)``) is broadcast without gathering."""
        b, r = self.data.shape[0], self.data.shape[1]
        if m.shape[-1] == 1 and m.shape[-2] == 1:
            return m.unsqueeze(1)  # (B|1, 1, C, 1, 1)
        h, w = int(m.shape[-2]), int(m.shape[-1])
        kh, kw = self.kernel
        rows, cols, inside = self._grid(h, w)
        flat = rows.clamp(0, h - 1).unsqueeze(-1) * w + cols.clamp(0, w - 1).unsqueeze(-2)
        idx = flat.reshape(b, r, 1, kh * kw)
        c = int(m.shape[1])
        src = m.reshape(m.shape[0], 1, c, h * w).expand(b, r, c, h * w)
        out = torch.gather(src, 3, idx.expand(b, r, c, kh * kw)).view(b, r, c, kh, kw)
        return out * inside.to(out.dtype)

    def dense(self, shape: tuple[int, ...]) -> Tensor:
        """The full coefficient tensor ``(B, R, C, H, W)``."""
        b, r, c, kh, kw = self.data.shape
        h, w = int(shape[-2]), int(shape[-1])
        rows, cols, inside = self._grid(h, w)
        flat = rows.clamp(0, h - 1).unsqueeze(-1) * w + cols.clamp(0, w - 1).unsqueeze(-2)
        idx = flat.reshape(b, r, 1, kh * kw).expand(b, r, c, kh * kw)
        vals = (self.data * inside.to(self.data.dtype)).reshape(b, r, c, kh * kw)
        out = torch.zeros(b, r, c, h * w, dtype=self.data.dtype)
        out = out.scatter_add(3, idx, vals)
        return out.view(b, r, c, h, w)

    def add(self, other: Patches) -> Patches | None:
        """The sum of two patch sets of the same rows and stride (``None`` if the strides
        differ): both windows are placed in their union."""
        if self.stride != other.stride:
            return None
        ph, pw = max(self.pad[0], other.pad[0]), max(self.pad[1], other.pad[1])
        kh = max(ph - self.pad[0] + self.kernel[0], ph - other.pad[0] + other.kernel[0])
        kw = max(pw - self.pad[1] + self.kernel[1], pw - other.pad[1] + other.kernel[1])

        def placed(p: Patches) -> Tensor:
            top, left = ph - p.pad[0], pw - p.pad[1]
            bottom, right = kh - top - p.kernel[0], kw - left - p.kernel[1]
            if top == left == bottom == right == 0:
                return p.data
            b, r, c = p.data.shape[:3]
            d = F.pad(p.data.reshape(b * r, c, *p.kernel), (left, right, top, bottom))
            return d.view(b, r, c, kh, kw)

        return self.with_data(placed(self) + placed(other), pad=(ph, pw))

    def conv_backward(
        self,
        weight: Tensor,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
        in_hw: tuple[int, int],
    ) -> Patches:
        """Move the windows back through a 2-D convolution (no bias)."""
        b, r, c, kh, kw = self.data.shape
        d = self.data.reshape(b * r, c, kh, kw)
        k1, k2 = weight.shape[2], weight.shape[3]
        out = (
            (kh - 1) * stride[0] + dilation[0] * (k1 - 1) + 1,
            (kw - 1) * stride[1] + dilation[1] * (k2 - 1) + 1,
        )
        cin = weight.shape[1] * groups
        if kh == 1 and kw == 1 and groups == 1 and tuple(dilation) == (1, 1):
            # one position: the transposed convolution is a matrix product
            new = torch.matmul(d.reshape(b * r, c), weight.reshape(c, cin * k1 * k2))
            new = new.view(b * r, cin, k1, k2)
        elif (
            c * kh * kw * cin * out[0] * out[1] <= _TRANSFER_LIMIT
            and out[0] * out[1] <= 4 * k1 * k2
        ):
            # no cropping, so every row's window maps through the same matrix: one product
            # (dense, so at most ~4x the flops of the convolution; no per-row overhead)
            t = _transfer(weight, stride, dilation, groups, (kh, kw))
            new = torch.matmul(d.reshape(b * r, -1), t).view(b * r, cin, *out)
        else:
            new = conv_transpose2d_fast(d, weight, stride, (0, 0), (0, 0), groups, dilation, out)
        new = new.view(b, r, *new.shape[1:])
        st = (self.stride[0] * stride[0], self.stride[1] * stride[1])
        pd = (self.pad[0] * stride[0] + padding[0], self.pad[1] * stride[1] + padding[1])
        return self.with_data(new, stride=st, pad=pd).mask_outside(*in_hw)

    def covers(self, h: int, w: int) -> bool:
        """True if a window has at least half as many positions as the map (dense is then as
        cheap, without the gathers)."""
        kh, kw = self.kernel
        return 2 * kh * kw >= h * w

"""Patches: sparse backward coefficients for intermediate neurons of convolutional layers.

Bounding a neuron at position ``(i, j)`` of a convolutional layer needs a coefficient tensor on
every earlier layer, but only its receptive field is nonzero. As auto_LiRPA's
``conv_mode='patches'`` (Xu et al. 2020, §3.3 and Appendix), each row's coefficients on a layer
of spatial size ``H×W`` are kept as one window ``(C, Kh, Kw)`` whose top-left corner sits at
``(i·sh − ph, j·sw − pw)``: the stride ``s`` and padding ``p`` are shared by all rows (the
composition of the convolutions between the two layers), the position ``(i, j)`` is the row's.

Invariant: window entries outside the ``H×W`` map (the zero padding of a convolution) are zero,
so sums over a window only count real neurons. Backward through a convolution is a transposed
convolution of the window *without* cropping (the window grows to ``(K − 1)s + d(k − 1) + 1``);
the entries that fall outside the input map are zeroed lazily, only before what would read them
(the next transposed convolution, a conversion to dense): a relaxation multiplies by windows of
its slope maps, which are zero outside the map, and so restores the invariant for free.

When a node's rows are every neuron (channel-major, the grid positions row-major within a
channel), the patches are *periodic*: the window of a map at a grid position is the same for every
channel block, so a map's windows are extracted once per position (``unfold``) and broadcast over
the blocks, and a conversion to dense is one ``fold``. Otherwise windows are gathered per row
from the same per-position table. Where a window would cover the whole map, or an operator has no
patch form (linear layers, reshapes, max pooling), the patches become an ordinary dense tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproof.certify.ops import conv_transpose2d_fast

__all__ = ["Patches", "TableCache"]

#: window tables of maps (see :meth:`Patches.windows`), keyed by map and geometry; the map is
#: kept beside its table so that its ``id`` cannot be reused while the entry lives
TableCache = dict[tuple[object, ...], tuple[object, object]]

#: largest transfer matrix (values) used for the transposed convolution of windows (a matrix
#: product then beats the channels-last kernel: small windows, few channels)
_TRANSFER_LIMIT = 1 << 17
_TRANSFERS: dict[tuple[object, ...], Tensor] = {}


def _transfer(
    weight: Tensor,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    kernel: tuple[int, int],
) -> Tensor:
    """The matrix ``(Kh·Kw·C_out, K'h·K'w·C_in)`` of the uncropped transposed convolution of a
    ``Kh×Kw`` window (the transposed convolution of the identity basis), cached per weight;
    both sides in channels-inner order."""
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
        # rows and columns in channels-inner order (window position, then channel)
        t = t.permute(0, 2, 3, 1).reshape(c, kernel[0], kernel[1], -1)
        t = t.permute(1, 2, 0, 3).reshape(n, -1).contiguous()
        if len(_TRANSFERS) > 64:
            _TRANSFERS.clear()
        _TRANSFERS[key] = t
    return t


def channels_inner(x: Tensor) -> Tensor:
    """``x`` ``(..., C, H, W)`` with its channel dimension innermost in memory (the layout every
    coefficient tensor of a convolutional region keeps: the transposed convolutions are several
    times faster on it, and elementwise steps stream operands of one layout); a copy unless it
    is already so."""
    n = x.dim()
    if x.stride(n - 3) == 1 or x.shape[n - 3] == 1:
        return x
    inner = x.permute(*range(n - 3), n - 2, n - 1, n - 3).contiguous()
    return inner.permute(*range(n - 3), n - 1, n - 3, n - 2)


@dataclass
class Patches:
    """Per-row windows ``data`` ``(B, R, C, Kh, Kw)`` at ``pos·stride − pad`` on the map.

    Attributes:
        data: the window coefficients.
        pos_i, pos_j: ``(B, R)`` grid positions of the rows' start neurons.
        stride, pad: the shared geometry (top-left corner = ``pos·stride − pad``).
        grid: the start node's spatial size ``(Hs, Ws)`` (positions index its grid).
        periodic: the rows are blocks of every grid position in row-major order (row ``r`` at
            position ``r mod Hs·Ws``, the same in every problem): a map's windows are then one
            per position and broadcast over the blocks instead of being gathered per row.
        clean: the invariant holds (entries outside the map are zero); a transposed
            convolution leaves it unset, and it is restored only where it matters (see
            :meth:`masked`).
    """

    data: Tensor
    pos_i: Tensor
    pos_j: Tensor
    stride: tuple[int, int]
    pad: tuple[int, int]
    grid: tuple[int, int]
    periodic: bool = False
    clean: bool = True

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.data.shape[3]), int(self.data.shape[4])

    @property
    def positions(self) -> int:
        return self.grid[0] * self.grid[1]

    def offsets(self) -> tuple[Tensor, Tensor]:
        return self.pos_i * self.stride[0] - self.pad[0], self.pos_j * self.stride[1] - self.pad[1]

    def with_data(
        self,
        data: Tensor,
        stride: tuple[int, int] | None = None,
        pad: tuple[int, int] | None = None,
        *,
        clean: bool | None = None,
    ) -> Patches:
        return Patches(
            data,
            self.pos_i,
            self.pos_j,
            self.stride if stride is None else stride,
            self.pad if pad is None else pad,
            self.grid,
            self.periodic,
            self.clean if clean is None else clean,
        )

    def blocks(self, x: Tensor | None = None) -> Tensor:
        """``x`` (default: the data) ``(B, R, C, Kh, Kw)`` viewed as ``(B, G, P, C, Kh, Kw)``:
        ``P`` grid positions per block when periodic (``G·P = R``), else ``P = 1``; the maps of
        :meth:`windows` broadcast against it."""
        x = self.data if x is None else x
        b, r = x.shape[0], x.shape[1]
        if self.periodic:
            p = self.positions
            return x.view(b, r // p, p, *x.shape[2:])
        return x.unsqueeze(2)

    def unblock(self, x: Tensor) -> Tensor:
        """The inverse of :meth:`blocks` for a result of the data's shape: ``(B, R, ...)``."""
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])

    def flat(self, x: Tensor | None = None) -> Tensor:
        """``x`` (default: the data) ``(B, R, C, Kh, Kw)`` in memory order with the window
        flattened, ``(B, G, P, Kh·Kw·C)`` (blocks as :meth:`blocks`, but ``(B, 1, R, ·)`` when
        not periodic: each row its own position); channels-inner (copied unless it is)."""
        x = channels_inner(self.data if x is None else x)
        b, r = x.shape[0], x.shape[1]
        phys = x.permute(0, 1, 3, 4, 2).reshape(b, r, -1)
        if self.periodic:
            p = self.positions
            return phys.view(b, r // p, p, -1)
        return phys.unsqueeze(1)

    def unflat(self, x: Tensor) -> Tensor:
        """The inverse of :meth:`flat`: ``(B, R, C, Kh, Kw)``, channels-inner."""
        b = x.shape[0]
        kh, kw = self.kernel
        r = x.shape[1] * x.shape[2]
        return x.reshape(b, r, kh, kw, -1).permute(0, 1, 4, 2, 3)

    def flat_table(self, m: Tensor, cache: TableCache | None = None) -> Tensor:
        """The window of map ``m`` at every grid position in the order of :meth:`flat`,
        ``(B or 1, Hs·Ws, Kh·Kw·C)``."""
        t = self._table(m, cache)
        return t.permute(0, 1, 3, 4, 2).reshape(t.shape[0], t.shape[1], -1)

    def flat_positions(self) -> Tensor:
        """``(B, R)`` each row's grid position as an index into :meth:`flat_table`."""
        return self.pos_i * self.grid[1] + self.pos_j

    def _table(self, m: Tensor, cache: TableCache | None = None) -> Tensor:
        """The window of map ``m`` ``(B or 1, C, H, W)`` at every grid position,
        ``(B or 1, Hs·Ws, C, Kh, Kw)`` (zero outside the map); kept in ``cache`` if given (per
        map and geometry: the chunks of a node's rows, and the rows of every node that reach
        the map in the same geometry, share it)."""
        key = (id(m), self.kernel, self.stride, self.pad, self.grid)
        if cache is not None:
            hit = cache.get(key)
            if hit is not None and hit[0] is m:
                assert isinstance(hit[1], Tensor)
                return hit[1]
        table = self._build_table(m)
        if cache is not None:
            cache[key] = (m, table)
        return table

    def _build_table(self, m: Tensor) -> Tensor:
        h, w = int(m.shape[-2]), int(m.shape[-1])
        kh, kw = self.kernel
        (sh, sw), (ph, pw), (gh, gw) = self.stride, self.pad, self.grid
        bottom = max(0, (gh - 1) * sh - ph + kh - h)
        right = max(0, (gw - 1) * sw - pw + kw - w)
        mp = F.pad(m, (pw, right, ph, bottom)) if (ph or pw or bottom or right) else m
        t = mp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :gh, :gw]  # (Bm, C, gh, gw, kh, kw)
        t = t.permute(0, 2, 3, 4, 5, 1).reshape(m.shape[0], gh * gw, kh, kw, m.shape[1])
        return t.permute(0, 1, 4, 2, 3)  # channels innermost in memory

    def windows(self, m: Tensor, cache: TableCache | None = None) -> Tensor:
        """The values of the per-problem map ``m`` ``(B or 1, C, H, W)`` under each row's
        window, shaped to broadcast against :meth:`blocks` (zero outside the map): one window
        per grid position ``(B or 1, 1, P, C, Kh, Kw)`` when periodic, gathered per row
        ``(B, R, 1, C, Kh, Kw)`` otherwise. A map constant over space (``(·, C, 1, 1)``) is
        broadcast as ``(B or 1, 1, 1, C, 1, 1)``."""
        if m.shape[-1] == 1 and m.shape[-2] == 1:
            return m.view(m.shape[0], 1, 1, m.shape[1], 1, 1)
        table = self._table(m, cache)
        if self.periodic:
            return table.unsqueeze(1)
        return self._gather(table).unsqueeze(2)

    def _gather(self, table: Tensor) -> Tensor:
        """Per-row windows ``(B, R, C, Kh, Kw)`` from a table of :meth:`_table`."""
        b, r = self.data.shape[0], self.data.shape[1]
        flat = self.pos_i * self.grid[1] + self.pos_j  # (B, R)
        phys = table.permute(0, 1, 3, 4, 2)  # the table's memory order
        if table.shape[0] == 1:
            out = phys[0].index_select(0, flat.reshape(-1)).view(b, r, *phys.shape[2:])
        else:
            out = phys[torch.arange(b).unsqueeze(1), flat]
        return out.permute(0, 1, 4, 2, 3)

    def window(self, m: Tensor) -> Tensor:
        """The values of the per-problem map ``m`` ``(B or 1, C, H, W)`` under each row's
        window, ``(B, R, C, Kh, Kw)`` (zero outside the map). A map constant over space
        (``(·, C, 1, 1)``) is broadcast without gathering."""
        if m.shape[-1] == 1 and m.shape[-2] == 1:
            return m.unsqueeze(1)  # (B|1, 1, C, 1, 1)
        table = self._table(m)
        if self.periodic:
            b, r = self.data.shape[0], self.data.shape[1]
            phys = table.permute(0, 1, 3, 4, 2).unsqueeze(1)
            rep = phys.expand(b, r // self.positions, *phys.shape[2:])
            return rep.reshape(b, r, *phys.shape[3:]).permute(0, 1, 4, 2, 3)
        return self._gather(table)

    def _inside(self, h: int, w: int) -> Tensor:
        """1 on window entries inside an ``h×w`` map, 0 outside; broadcasts like
        :meth:`windows`."""
        return self.windows(torch.ones(1, 1, h, w, dtype=self.data.dtype))

    def masked(self, h: int, w: int) -> Patches:
        """These patches with the entries outside an ``h×w`` map zeroed (the invariant)."""
        if self.clean:
            return self
        kh, kw = self.kernel
        oi, oj = self.offsets()
        if bool((oi.min() >= 0) & (oj.min() >= 0) & (oi.max() + kh <= h) & (oj.max() + kw <= w)):
            return self.with_data(self.data, clean=True)
        data = self.unblock(self.blocks() * self._inside(h, w))
        return self.with_data(data, clean=True)

    def dense(self, shape: tuple[int, ...]) -> Tensor:
        """The full coefficient tensor ``(B, R, C, H, W)``."""
        b, r, c, kh, kw = self.data.shape
        h, w = int(shape[-2]), int(shape[-1])
        if self.periodic:
            return self._place(h, w)
        a = self.masked(h, w)
        oi, oj = a.offsets()
        rows = oi.unsqueeze(-1) + torch.arange(kh)
        cols = oj.unsqueeze(-1) + torch.arange(kw)
        flat = rows.clamp(0, h - 1).unsqueeze(-1) * w + cols.clamp(0, w - 1).unsqueeze(-2)
        idx = flat.reshape(b, r, 1, kh * kw).expand(b, r, c, kh * kw)
        vals = a.data.reshape(b, r, c, kh * kw)
        out = torch.zeros(b, r, c, h * w, dtype=self.data.dtype)
        out = out.scatter_add(3, idx, vals)
        return out.view(b, r, c, h, w)

    def _place(self, h: int, w: int) -> Tensor:
        """:meth:`dense` of periodic patches: the part inside the map of the window of each
        grid position copied into the rows of that position (one strided copy per position,
        for every block and channel at once)."""
        b, r, c, kh, kw = self.data.shape
        (sh, sw), (ph, pw), (gh, gw) = self.stride, self.pad, self.grid
        n = b * (r // self.positions)
        src = self.data.view(n, gh, gw, c, kh, kw)
        out = torch.zeros(n, gh, gw, h, w, c, dtype=self.data.dtype).permute(0, 1, 2, 5, 3, 4)
        for i in range(gh):
            top = i * sh - ph
            y0, y1 = max(0, top), min(h, top + kh)
            if y0 >= y1:
                continue
            for j in range(gw):
                left = j * sw - pw
                x0, x1 = max(0, left), min(w, left + kw)
                if x0 < x1:
                    out[:, i, j, :, y0:y1, x0:x1] = src[
                        :, i, j, :, y0 - top : y1 - top, x0 - left : x1 - left
                    ]
        return out.view(b, r, c, h, w)

    def add(self, other: Patches, *, own: tuple[bool, bool] = (False, False)) -> Patches | None:
        """The sum of two patch sets of the same rows and stride (``None`` if the strides
        differ): both windows are placed in their union. ``own``: whether the data of ``self``
        and of ``other`` may be overwritten (a window holding the other is then added into)."""
        if self.stride != other.stride:
            return None
        ph, pw = max(self.pad[0], other.pad[0]), max(self.pad[1], other.pad[1])
        kh = max(ph - self.pad[0] + self.kernel[0], ph - other.pad[0] + other.kernel[0])
        kw = max(pw - self.pad[1] + self.kernel[1], pw - other.pad[1] + other.kernel[1])

        for big, small, mine in ((self, other, own[0]), (other, self, own[1])):
            if big.pad == (ph, pw) and big.kernel == (kh, kw):
                # one window holds the other: add it into (a copy of) the larger one
                top, left = ph - small.pad[0], pw - small.pad[1]
                out = big.data if mine else big.data.clone()
                sk = small.kernel
                out[..., top : top + sk[0], left : left + sk[1]] += small.data
                return self.with_data(out, pad=(ph, pw), clean=self.clean and other.clean)

        def placed(p: Patches) -> Tensor:
            top, left = ph - p.pad[0], pw - p.pad[1]
            bottom, right = kh - top - p.kernel[0], kw - left - p.kernel[1]
            if top == left == bottom == right == 0:
                return p.data
            b, r, c = p.data.shape[:3]
            d = F.pad(p.data.reshape(b * r, c, *p.kernel), (left, right, top, bottom))
            return d.view(b, r, c, kh, kw)

        both = placed(self) + placed(other)
        return self.with_data(both, pad=(ph, pw), clean=self.clean and other.clean)

    def conv_backward(
        self,
        weight: Tensor,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> Patches:
        """Move the (clean) windows back through a 2-D convolution (no bias); the result's
        entries outside the input map are left as they come (not clean)."""
        b, r, c, kh, kw = self.data.shape
        d = channels_inner(self.data).reshape(b * r, c, kh, kw)
        k1, k2 = weight.shape[2], weight.shape[3]
        out = (
            (kh - 1) * stride[0] + dilation[0] * (k1 - 1) + 1,
            (kw - 1) * stride[1] + dilation[1] * (k2 - 1) + 1,
        )
        cin = weight.shape[1] * groups
        if kh == 1 and kw == 1 and groups == 1 and tuple(dilation) == (1, 1):
            # one position: the transposed convolution is a matrix product
            w_inner = weight.permute(0, 2, 3, 1).reshape(c, k1 * k2 * cin)
            new = torch.matmul(d.reshape(b * r, c), w_inner)
            new = new.view(b * r, k1, k2, cin).permute(0, 3, 1, 2)
        elif c * kh * kw * cin * out[0] * out[1] <= _TRANSFER_LIMIT:
            # no cropping, so every row's window maps through the same matrix: one product
            # (dense, so more flops than the convolution, but no per-row overhead)
            t = _transfer(weight, stride, dilation, groups, (kh, kw))
            new = torch.matmul(d.permute(0, 2, 3, 1).reshape(b * r, -1), t)
            new = new.view(b * r, *out, cin).permute(0, 3, 1, 2)
        else:
            new = conv_transpose2d_fast(d, weight, stride, (0, 0), (0, 0), groups, dilation, out)
        new = new.view(b, r, *new.shape[1:])
        st = (self.stride[0] * stride[0], self.stride[1] * stride[1])
        pd = (self.pad[0] * stride[0] + padding[0], self.pad[1] * stride[1] + padding[1])
        return self.with_data(new, stride=st, pad=pd, clean=False)

    def covers(self, h: int, w: int) -> bool:
        """True if a window has at least as many positions as the map (dense is then as
        cheap). Depends on the geometry alone, so the form in which rows reach a node does not
        depend on which rows they are (α-CROWN's slopes are shaped by it)."""
        kh, kw = self.kernel
        return kh * kw >= h * w

"""Relaxation steps applied only where a relaxation's two lines differ.

A backward step through an elementwise relaxation maps coefficients ``a`` to ``a⁺·dl + a⁻·du``
plus the constant ``Σ a⁺·bl + a⁻·bu`` (:func:`~edgeproof.certify.relaxations.apply_lines`).
Where the lines coincide (``dl = du``, both intercepts zero, no free α slope: every stable ReLU
neuron) the step is the product ``a·dl``, exactly. After CROWN most neurons of most layers are
stable, so the step becomes one product over all entries and the sign-dependent lines on the
few others: their indices (per window position of patches, per problem for dense coefficients)
are found once per relaxation and geometry, those entries gathered, and their lines scattered
back. It is used where the densest position has at most :data:`SPARSE_SHARE` of its entries to
treat so (the full step is cheaper beyond, measured on one CPU thread).

All tensors here are in the coefficients' memory order with the features flattened: ``a`` is
``(B, G, P, F)`` (``G`` blocks of rows over ``P`` positions, as
:meth:`~edgeproof.certify.patches.Patches.blocks`; ``P = 1`` for dense coefficients) and the
lines ``(B or 1, P, ·)``, broadcast over the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SPARSE_SHARE", "SparseLines", "apply_sparse", "sparse_lines"]

#: the largest share of a position's entries whose lines differ for the sparse step
SPARSE_SHARE = 0.3


@dataclass(frozen=True)
class SparseLines:
    """The entries of each position where the lines differ, padded to the largest count ``U``.

    Attributes:
        index: ``(Bm, P, U)`` feature indices of those entries (padding points at entry 0).
        valid: ``(Bm, P, U)`` 1 on real entries, 0 on padding.
        base: ``(Bm, P, F)`` the common slope where the lines coincide, 0 at the entries.
        dl, du: ``(Bm, P, U)`` the slopes at the entries.
        bl, bu: ``(Bm, P, U)`` the intercepts at the entries (0 on padding), or ``None``.
        free: ``(Bm, P, U)`` entries whose lower slope an α replaces, or ``None``.
    """

    index: Tensor
    valid: Tensor
    base: Tensor
    dl: Tensor
    du: Tensor
    bl: Tensor | None
    bu: Tensor | None
    free: Tensor | None

    def rows(self, flat: Tensor) -> SparseLines:
        """The lines of rows at positions ``flat`` ``(B, R)`` (patches whose rows each have
        their own position): every tensor ``(B, R, ·)``."""
        b, r = int(flat.shape[0]), int(flat.shape[1])

        def pick(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            if t.shape[0] == 1:
                return t[0].index_select(0, flat.reshape(-1)).view(b, r, *t.shape[2:])
            return t[torch.arange(b).unsqueeze(1), flat]

        index, valid, base = pick(self.index), pick(self.valid), pick(self.base)
        dl, du = pick(self.dl), pick(self.du)
        assert index is not None and valid is not None and base is not None
        assert dl is not None and du is not None
        bl, bu, free = pick(self.bl), pick(self.bu), pick(self.free)
        return SparseLines(index, valid, base, dl, du, bl, bu, free)


def sparse_lines(
    dl: Tensor,
    du: Tensor,
    bl: Tensor | None,
    bu: Tensor | None,
    free: Tensor | None,
) -> SparseLines | None:
    """The sparse form of lines given as ``(Bm, P, F)`` maps (``free``: bool, the entries an α
    may move), or ``None`` when some position has more than :data:`SPARSE_SHARE` of its
    entries where the lines differ."""
    differ = dl != du
    if bl is not None:
        differ |= bl != 0
    if bu is not None:
        differ |= bu != 0
    if free is not None:
        differ |= free
    f = int(differ.shape[-1])
    counts = differ.sum(-1)
    u = int(counts.max()) if counts.numel() else 0
    if u > SPARSE_SHARE * f:
        return None
    u = max(u, 1)
    order = torch.sort((~differ).to(torch.int8), dim=-1, stable=True).indices[..., :u]
    valid = (torch.arange(u) < counts.unsqueeze(-1)).to(dl.dtype)
    index = torch.where(valid > 0, order, torch.zeros_like(order))
    base = torch.where(differ, torch.zeros_like(dl), dl)

    def at(t: Tensor | None, mask: bool = False) -> Tensor | None:
        if t is None:
            return None
        g = t.gather(-1, index)
        return g * valid if mask else g

    dl_u, du_u = at(dl), at(du)
    assert dl_u is not None and du_u is not None
    free_u = None if free is None else free.gather(-1, index) & (valid > 0)
    return SparseLines(index, valid, base, dl_u, du_u, at(bl, True), at(bu, True), free_u)


def apply_sparse(
    a: Tensor, s: SparseLines, alpha: Tensor | None = None, *, inplace: bool = False
) -> tuple[Tensor, Tensor | None]:
    """``a⁺·dl + a⁻·du`` ``(B, G, P, F)`` and the constant ``(B, G, P)`` (``None`` when the
    lines have no intercepts), with the lower slope ``alpha`` ``(B, G, P, F)`` on the free
    entries if given; ``inplace``: written into ``a``."""
    b, g, p, _ = a.shape
    u = int(s.index.shape[-1])
    index = s.index.unsqueeze(1).expand(b, g, p, u)
    a_u = a.gather(3, index)
    new = a.mul_(s.base.unsqueeze(1)) if inplace else a * s.base.unsqueeze(1)
    dl = s.dl.unsqueeze(1)
    if alpha is not None and s.free is not None:
        dl = torch.where(s.free.unsqueeze(1), alpha.gather(3, index), dl)
    # as apply_lines: a⁻ by a clamp whose gradient at 0 is that of a⁺ (subgradient dl)
    neg = a_u - a_u.clamp(min=0) if a_u.requires_grad else a_u.clamp(max=0)
    lines = a_u * dl + neg * (s.du.unsqueeze(1) - dl)
    new.scatter_add_(3, index, lines * s.valid.unsqueeze(1))
    bias: Tensor | None = None
    if s.bu is not None:
        bias = (neg * s.bu.unsqueeze(1)).sum(-1)
    if s.bl is not None:
        lb = ((a_u - neg) * s.bl.unsqueeze(1)).sum(-1)
        bias = lb if bias is None else bias + lb
    return new, bias

"""The base of every bound operator (:class:`BoundOp`, :class:`LinearOp`) and the interval type
(see :mod:`~edgeproof.certify.ops`)."""

from __future__ import annotations

from torch import Tensor

Interval = tuple[Tensor, Tensor]


def _center_radius(b: Interval) -> tuple[Tensor, Tensor]:
    lo, hi = b
    return (hi + lo) / 2, (hi - lo) / 2


class BoundOp:
    """Base of every operator. Class attributes describe what the engine may assume.

    Attributes:
        kind: short name used in messages (``"linear"``, ``"relu"``, …).
        arity: number of graph inputs.
        box_exact: IBP maps an input box onto exactly the output box (elementwise affine maps,
            reshapes, permutations), so bounds after one general linear layer stay exact.
        piecewise_linear: the operator is continuous piecewise-linear (branch-and-bound on
            ReLU splits is complete only for such networks).
        ibp_intermediate: when this node's bounds are needed, they are computed from its inputs'
            bounds by interval arithmetic (activations, reshapes; as auto_LiRPA does).
    """

    kind: str = "op"
    arity: int = 1
    box_exact: bool = False
    piecewise_linear: bool = True
    ibp_intermediate: bool = False

    def forward(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def ibp(self, *bounds: Interval) -> Interval:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


class LinearOp(BoundOp):
    """An operator affine in its inputs. ``backward`` maps output coefficients to inputs."""

    def backward(self, a: Tensor) -> tuple[list[Tensor | None], Tensor | None]:
        """``a`` of shape ``(N, *out_shape)`` → per-input coefficients ``(N, *in_shape)`` and
        the constant term ``(N,)`` (``None`` when the operator has no constant)."""
        raise NotImplementedError

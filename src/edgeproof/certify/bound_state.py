"""The settings and state of a bound computation (see :mod:`~edgeproof.certify.bounds`): the
methods, :class:`AlphaSettings`, :class:`BoundState` (the bounds per node), :class:`BoundResult`
and :func:`margin_spec`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.graph import BoundGraph
from edgeproof.certify.patches import TableCache
from edgeproof.certify.sets import InputSet
from edgeproof.errors import OptionError

Method = Literal["ibp", "crown-ibp", "crown", "alpha-crown"]


METHODS: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")


Interval = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class AlphaSettings:
    """α-CROWN optimisation settings (defaults: auto_LiRPA 0.7.1's).

    Attributes:
        iterations: bound evaluations (the last one without a gradient step).
        lr: Adam learning rate of the slopes.
        lr_decay: multiplicative decay of the learning rate per step.
        intermediate: also optimise the slopes of every intermediate bound, jointly through
            the final bound, as auto_LiRPA's ``alpha-CROWN`` does (tighter; about ten times the
            cost of the default, which optimises the slopes of the final backward pass only,
            with the intermediate bounds of CROWN).
    """

    iterations: int = 20
    lr: float = 0.5
    lr_decay: float = 0.98
    intermediate: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise OptionError("alpha_iterations", f"{self.iterations} is < 1", "use >= 1")
        if not self.lr > 0:
            raise OptionError("alpha_lr", f"{self.lr} is not positive", "use e.g. 0.5")


@dataclass
class BoundState:
    """Everything one bound computation keeps for a batch of problems.

    Attributes:
        graph: the graph.
        iset: the input sets.
        bounds: per node, its ``(lower, upper)`` bounds ``(B, *shape)`` (or ``None``).
        splits: per splittable activation node, ``(B, numel)`` int8: ``+1`` the neuron is
            forced active (input ``≥ 0``), ``-1`` inactive (``≤ 0``), ``0`` free.
        infeasible: ``(B,)`` bool: the splits contradict the bounds (an empty subdomain).
    """

    graph: BoundGraph
    iset: InputSet
    bounds: list[Interval | None]
    splits: dict[int, Tensor] = field(default_factory=dict)
    infeasible: Tensor | None = None
    max_elements: int = 1 << 25
    #: per CROWN-bounded node, the form coefficients reach each nonlinear node in (see backward)
    forms: dict[int, dict[int, tuple[object, ...]]] = field(default_factory=dict)
    _relax: dict[int, O.Relaxation | O.PoolRelaxation] = field(default_factory=dict)
    #: windows of the relaxation maps in the patch geometries that read them (see
    #: :meth:`~edgeproof.certify.patches.Patches.windows`)
    tables: TableCache = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.iset.batch

    def subset(self, index: Tensor) -> BoundState:
        """The state of the problems ``index`` (bounds, splits and cached relaxations sliced)."""
        sub = BoundState(
            graph=self.graph,
            iset=self.iset.select(index),
            bounds=[None if b is None else (b[0][index], b[1][index]) for b in self.bounds],
            splits={k: v[index] for k, v in self.splits.items()},
            max_elements=self.max_elements,
            forms=self.forms,
        )
        for k, rel in self._relax.items():
            sliced = {
                f.name: (None if getattr(rel, f.name) is None else getattr(rel, f.name)[index])
                for f in dataclasses.fields(rel)
            }
            sub._relax[k] = dataclasses.replace(rel, **sliced)  # type: ignore[arg-type]
        return sub

    def relaxation(self, idx: int) -> O.Relaxation | O.PoolRelaxation:
        """The relaxation of nonlinear node ``idx`` from its input's bounds (cached)."""
        if idx not in self._relax:
            node = self.graph.nodes[idx]
            b = self.bounds[node.inputs[0]]
            if b is None:
                raise RuntimeError(f"bounds of the input of node {node.name} were not computed")
            op = node.op
            if isinstance(op, O.Activation):
                self._relax[idx] = op.relax(*b)
            elif isinstance(op, O.MaxPool):
                self._relax[idx] = op.relax_windows(*b)
            else:
                raise AssertionError(type(op))
        return self._relax[idx]


@dataclass(frozen=True)
class BoundResult:
    """Bounds of ``C·f(x)`` (or of ``f(x)`` when no spec is given), ``(B, R)`` each.

    Attributes:
        lower: the lower bounds.
        upper: the upper bounds (``None`` when only lower bounds were asked for).
        state: the intermediate bounds (for reuse by branch-and-bound).
    """

    lower: Tensor
    upper: Tensor | None
    state: BoundState


def margin_spec(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The spec matrix ``C`` ``(B, K − 1, K)`` of the margins ``f_y − f_j`` for ``j ≠ y``."""
    b = int(y.shape[0])
    eye = torch.eye(num_classes, dtype=dtype)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row j = e_y - e_j
    keep = torch.ones(b, num_classes, dtype=torch.bool)
    keep[torch.arange(b), y] = False
    return c[keep].view(b, num_classes - 1, num_classes)

"""The bound graph: nodes holding :mod:`~edgeproof.certify.ops`, the :class:`Builder` that adds
them while a model is traced (:func:`~edgeproof.certify.graph.trace`), and the builder registries
(:func:`register_module`, :func:`register_function`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from edgeproof.certify import ops as O
from edgeproof.errors import OptionError

_EXAMPLE_BATCH = 2


@dataclass
class Node:
    """One node of a bound graph.

    Attributes:
        index: position in topological order (the input is 0).
        name: the traced node's name (a module path such as ``layers_0_conv1``).
        op: the operator (``None`` for the input).
        inputs: indices of the input nodes.
        shape: per-sample output shape.
    """

    index: int
    name: str
    op: O.BoundOp | None
    inputs: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class BoundGraph:
    """A traced model: nodes in topological order, node 0 the input, ``output`` the logits.

    Attributes:
        nodes: the nodes.
        output: index of the output node.
        consumers: for each node, the nodes that read it.
        source: how it was traced (``fx`` or ``export``).
    """

    nodes: list[Node]
    output: int
    source: str = "fx"
    consumers: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumers = [[] for _ in self.nodes]
        for n in self.nodes:
            for i in n.inputs:
                self.consumers[i].append(n.index)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[self.output].shape

    @property
    def piecewise_linear(self) -> bool:
        return all(n.op is None or n.op.piecewise_linear for n in self.nodes)

    def nonlinear(self) -> list[Node]:
        """The nodes whose operator needs a relaxation (activations and max pools)."""
        return [n for n in self.nodes if n.op is not None and not isinstance(n.op, O.LinearOp)]

    def forward(self, x: Tensor, *, upto: int | None = None) -> Tensor:
        """Evaluate the graph on ``x`` ``(B, *input_shape)`` (the value of ``upto`` if given)."""
        last = self.output if upto is None else upto
        vals: dict[int, Tensor] = {0: x}
        for n in self.nodes[1 : last + 1]:
            assert n.op is not None
            if isinstance(n.op, O.Constant):
                vals[n.index] = n.op.value.expand(x.shape[0], *n.shape)
            else:
                vals[n.index] = n.op.forward(*(vals[i] for i in n.inputs))
        return vals[last]

    def to(self, dtype: torch.dtype) -> BoundGraph:
        """A copy whose operator tensors have ``dtype``."""
        out = copy.copy(self)
        out.nodes = []
        for n in self.nodes:
            op = n.op
            if op is not None:
                op = copy.copy(op)
                for k, v in vars(op).items():
                    if isinstance(v, Tensor) and v.is_floating_point():
                        setattr(op, k, v.to(dtype))
            out.nodes.append(Node(n.index, n.name, op, n.inputs, n.shape))
        out.__post_init__()
        return out

    def summary(self) -> str:
        return "\n".join(
            f"{n.index:3d} {n.name:30s} {'input' if n.op is None else n.op.describe():35s} "
            f"{list(n.shape)} <- {list(n.inputs)}"
            for n in self.nodes
        )


@dataclass(frozen=True)
class Var:
    """An input-dependent value during interpretation (a bound-graph node)."""

    index: int


def _has_var(v: Any) -> bool:
    if isinstance(v, Var):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_var(x) for x in v)
    if isinstance(v, dict):
        return any(_has_var(x) for x in v.values())
    return False


class Builder:
    """What a builder may do while the traced graph is interpreted."""

    def __init__(self, input_shape: Sequence[int], example: Tensor) -> None:
        self.nodes: list[Node] = [Node(0, "input", None, (), tuple(input_shape))]
        self.examples: list[Tensor] = [example]
        self.current = "input"
        self.current_op = "placeholder"

    def fail(self, why: str, fix: str = "") -> OptionError:
        """The error for the node being built (raise it)."""
        return OptionError(
            "module",
            f"node '{self.current}' ({self.current_op}) cannot be bounded: {why}",
            fix
            or "replace it by a supported operation (Linear, Conv1d/2d, ReLU, LeakyReLU, "
            "sigmoid, tanh, pooling, BatchNorm, Normalize, reshape, add, cat, constant "
            "arithmetic) or register a builder with edgeproof.certify.register_module",
        )

    def example(self, v: Var) -> Tensor:
        return self.examples[v.index]

    def shape(self, v: Var) -> tuple[int, ...]:
        return self.nodes[v.index].shape

    def add(self, op: O.BoundOp, inputs: Sequence[Var], name: str | None = None) -> Var:
        """Append a node computing ``op`` on ``inputs``; returns its value."""
        if isinstance(op, O.Constant):
            ex = op.value.expand(_EXAMPLE_BATCH, *op.value.shape[1:])
        else:
            ex = op.forward(*(self.examples[v.index] for v in inputs))
        if ex.dim() == 0 or ex.shape[0] != _EXAMPLE_BATCH:
            raise self.fail("it does not keep the batch as its first dimension")
        idx = len(self.nodes)
        self.nodes.append(
            Node(idx, name or self.current, op, tuple(v.index for v in inputs), tuple(ex.shape[1:]))
        )
        self.examples.append(ex.detach())
        return Var(idx)

    def constant(self, value: Tensor, like: Var) -> Var:
        """A constant node broadcast to the per-sample shape of ``like``."""
        shape = self.shape(like)
        v = torch.as_tensor(value, dtype=self.example(like).dtype)
        try:
            v = torch.broadcast_to(v, (1, *shape)).clone()
        except RuntimeError:
            raise self.fail(
                f"a constant of shape {list(v.shape)} does not broadcast to {list(shape)}"
            ) from None
        return self.add(O.Constant(v), [], name=f"{self.current}_const")

    def per_sample(self, value: Any, like: Var) -> Tensor:
        """``value`` (a number or tensor) as a per-sample broadcastable constant ``(1, ...)``."""
        ex = self.example(like)
        t = torch.as_tensor(value, dtype=ex.dtype).detach()
        shape = self.shape(like)
        if t.dim() > len(shape) + 1 or (t.dim() == len(shape) + 1 and t.shape[0] != 1):
            raise self.fail(f"a constant of shape {list(t.shape)} varies over the batch")
        try:
            out_shape = torch.broadcast_shapes(t.shape, (1, *shape))
        except RuntimeError:
            raise self.fail(
                f"a constant of shape {list(t.shape)} does not broadcast to {list(shape)}"
            ) from None
        if tuple(out_shape) != (1, *shape):
            raise self.fail(f"a constant of shape {list(t.shape)} changes the shape {list(shape)}")
        while t.dim() < len(shape) + 1:
            t = t.unsqueeze(0)
        return t


ModuleBuilder = Callable[[Builder, nn.Module, list[Any]], Any]


FunctionBuilder = Callable[[Builder, list[Any], dict[str, Any]], Any]


_MODULES: dict[type, ModuleBuilder] = {}


_FUNCTIONS: dict[Any, FunctionBuilder] = {}


def register_module(cls: type, builder: ModuleBuilder) -> None:
    """Bound modules of class ``cls`` (and subclasses) with ``builder(b, module, args)``.

    The tracer keeps such modules whole. ``args`` are the interpreted arguments: :class:`Var` for
    input-dependent values, plain Python/tensor values otherwise. The builder returns the value
    (usually ``b.add(op, [var])``).
    """
    _MODULES[cls] = builder


def register_function(target: Any, builder: FunctionBuilder) -> None:
    """Bound calls of ``target`` (a function, a method name such as ``"view"``, or an ATen
    operator) with ``builder(b, args, kwargs)``."""
    _FUNCTIONS[target] = builder


def _module_builder(m: nn.Module) -> ModuleBuilder | None:
    for cls in type(m).__mro__:
        if cls in _MODULES:
            return _MODULES[cls]
    return None

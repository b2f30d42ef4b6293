"""Trace a PyTorch module into a bound graph: nodes holding :mod:`~edgeproof.certify.ops`.

The model is traced with ``torch.fx`` (symbolic tracing; modules the engine knows — ``nn.Linear``,
convolutions, BatchNorm, pools, activations, the zoo's ``Normalize`` — are kept whole), or, where
fx cannot trace it (data-dependent Python control flow on shapes, for instance), exported with
``torch.export`` and read at the ATen level. The traced graph is then *interpreted* once on an
example batch: every value is either a constant (it does not depend on the input: parameters,
buffers, shapes — evaluated on the spot) or a node of the bound graph; each operation on an
input-dependent value is turned into an operator by a builder chosen by the module type or the
function. Constant arithmetic folds into the operators (``(x − mean)/std`` becomes one elementwise
affine node), ``clamp``/``hardtanh``/``relu6`` become ReLUs (``clamp(x, a, b) = a + relu(x − a)
− relu(x − b)``), and BatchNorm following a convolution or linear layer is folded into its
weights. An operation without a builder raises :class:`~edgeproof.errors.OptionError` naming the
node and the operation — never a silent approximation. Finally the graph's forward pass is
compared with the module's on the example batch.

Builders are registered with :func:`register_module` (by module class) and
:func:`register_function` (by function, method name or ATen operator); a registered module class
is kept whole by the tracer.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from edgeproof.certify import ops as O
from edgeproof.errors import InternalError, ModelError, OptionError
from edgeproof.models.modules import eval_mode, is_scripted, set_training

__all__ = [
    "BoundGraph",
    "Builder",
    "Node",
    "maxpool_as_relus",
    "register_function",
    "register_module",
    "trace",
]

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


# --------------------------------------------------------------------------------------------
# Interpretation


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


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if _module_builder(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _resolve(v: Any, env: dict[str, Any]) -> Any:
    if isinstance(v, fx.Node):
        return env[v.name]
    if isinstance(v, (list, tuple)):
        return type(v)(_resolve(x, env) for x in v)
    if isinstance(v, dict):
        return {k: _resolve(x, env) for k, x in v.items()}
    return v


def _fetch_attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _op_label(node: fx.Node, gm: nn.Module) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    return getattr(t, "__name__", None) or str(t)


def _interpret(
    gm: fx.GraphModule, input_shape: Sequence[int], example: Tensor, source: str
) -> BoundGraph:
    b = Builder(input_shape, example)
    env: dict[str, Any] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out_value: Any = None
    for node in gm.graph.nodes:
        b.current = node.name
        b.current_op = _op_label(node, gm) if node.op.startswith("call") else node.op
        if node.op == "placeholder":
            if node is placeholders[0]:
                env[node.name] = Var(0)
            elif node.args:  # a defaulted argument
                env[node.name] = node.args[0]
            else:
                raise b.fail(
                    "the model takes more than one input", "bound a model of one tensor input"
                )
            continue
        if node.op == "get_attr":
            val = _fetch_attr(gm, str(node.target))
            env[node.name] = val.detach() if isinstance(val, Tensor) else val
            continue
        if node.op == "output":
            out_value = _resolve(node.args[0], env)
            continue
        if not node.users:
            continue  # dead code (e.g. the guard module torch.export adds)
        args = list(_resolve(node.args, env))
        kwargs = dict(_resolve(node.kwargs, env))
        if not _has_var(args) and not _has_var(kwargs):
            env[node.name] = _evaluate(gm, node, args, kwargs)
            continue
        env[node.name] = _build(b, gm, node, args, kwargs)
    if isinstance(out_value, (list, tuple)) and len(out_value) == 1:
        out_value = out_value[0]
    if not isinstance(out_value, Var):
        b.current, b.current_op = "output", "output"
        raise b.fail(
            "the model's output is not one tensor that depends on the input",
            "bound a model returning one logits tensor",
        )
    nodes = _prune(b.nodes, out_value.index)
    return BoundGraph(nodes=nodes, output=len(nodes) - 1, source=source)


def _evaluate(gm: nn.Module, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
    with torch.no_grad():
        if node.op == "call_module":
            return gm.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_method":
            self_, *rest = args
            return getattr(self_, str(node.target))(*rest, **kwargs)
        fn = node.target
        assert callable(fn)
        return fn(*args, **kwargs)


def _build(
    b: Builder, gm: nn.Module, node: fx.Node, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        mb = _module_builder(mod)
        if mb is None:
            raise b.fail(f"{type(mod).__name__} has no bound (unsupported operation)")
        if kwargs:
            args = args + list(kwargs.values())
        return mb(b, mod, args)
    key: Any = str(node.target) if node.op == "call_method" else node.target
    fb = _FUNCTIONS.get(key)
    if fb is None and node.op == "call_function":
        # ATen overloads: look up the overload packet too (aten.add.Tensor -> aten.add)
        packet = getattr(node.target, "overloadpacket", None)
        fb = _FUNCTIONS.get(packet) if packet is not None else None
    if fb is None:
        raise b.fail("the operation has no bound (unsupported operation)")
    return fb(b, args, kwargs)


def _prune(nodes: list[Node], out: int) -> list[Node]:
    """Keep the ancestors of ``out`` (and the input), renumbered in order."""
    keep = {0, out}
    for n in reversed(nodes[: out + 1]):
        if n.index in keep:
            keep.update(n.inputs)
    order = sorted(keep)
    new_index = {old: i for i, old in enumerate(order)}
    return [
        Node(new_index[n.index], n.name, n.op, tuple(new_index[i] for i in n.inputs), n.shape)
        for n in (nodes[i] for i in order)
    ]


# --------------------------------------------------------------------------------------------
# Optimisation passes


def _per_channel(
    t: Tensor | None, shape: tuple[int, ...], channels: int, conv: bool
) -> Tensor | None:
    """``t`` (broadcast to ``(1, *shape)``) as one value per output channel, or ``None`` when it
    varies within a channel (then it cannot fold into the layer's bias)."""
    if t is None:
        return None
    full = torch.broadcast_to(t, (1, *shape))
    if conv:
        flat = full.reshape(1, channels, -1)
        if not bool((flat == flat[:, :, :1]).all()):
            return None
        return flat[0, :, 0]
    if len(shape) != 1:
        return None
    return full.reshape(-1)


def _fold_affine_into_linear(g: BoundGraph) -> BoundGraph:
    """Fold an elementwise per-channel affine node (BatchNorm) into the Conv/Dense feeding it
    when that layer has no other consumer: ``W' = s·W``, ``b' = s·b + t`` (exact)."""
    nodes = list(g.nodes)
    consumers = g.consumers
    replaced: dict[int, int] = {}
    for n in g.nodes:
        if not isinstance(n.op, O.Elementwise) or len(n.inputs) != 1:
            continue
        src = nodes[n.inputs[0]]
        if not isinstance(src.op, (O.Conv, O.Dense)) or len(consumers[src.index]) != 1:
            continue
        if src.index == g.output:
            continue
        channels = src.op.weight.shape[0]
        scale, shift = n.op.scale, n.op.shift

        conv = isinstance(src.op, O.Conv)
        s = _per_channel(scale, n.shape, channels, conv)
        t = _per_channel(shift, n.shape, channels, conv)
        if (scale is not None and s is None) or (shift is not None and t is None):
            continue
        w = src.op.weight
        bias = src.op.bias if src.op.bias is not None else torch.zeros(channels, dtype=w.dtype)
        if s is not None:
            w = w * s.view(-1, *([1] * (w.dim() - 1)))
            bias = bias * s
        if t is not None:
            bias = bias + t
        new_op: O.BoundOp
        if isinstance(src.op, O.Conv):
            new_op = O.Conv(
                w,
                bias,
                stride=src.op.stride,
                padding=src.op.padding,
                dilation=src.op.dilation,
                groups=src.op.groups,
                in_shape=src.op.in_shape,
                out_shape=src.op.out_shape,
            )
        else:
            new_op = O.Dense(w, bias)
        nodes[n.index] = Node(n.index, n.name, new_op, src.inputs, n.shape)
        replaced[src.index] = n.index
    if not replaced:
        return g
    pr = _prune(nodes, g.output)
    return BoundGraph(nodes=pr, output=len(pr) - 1, source=g.source)


def _merge_elementwise(g: BoundGraph) -> BoundGraph:
    """Merge chains of elementwise affine nodes (``(x − mean) / std`` is two at trace time)."""
    nodes = list(g.nodes)
    changed = False
    for n in g.nodes:
        if not isinstance(n.op, O.Elementwise):
            continue
        src = nodes[n.inputs[0]]
        if isinstance(src.op, O.Elementwise) and len(g.consumers[src.index]) == 1:
            nodes[n.index] = Node(n.index, n.name, src.op.then(n.op), src.inputs, n.shape)
            changed = True
    if not changed:
        return g
    pr = _prune(nodes, g.output)
    return BoundGraph(nodes=pr, output=len(pr) - 1, source=g.source)


# --------------------------------------------------------------------------------------------
# Entry point


def _has_scripted(module: nn.Module) -> bool:
    return any(is_scripted(m) for m in module.modules())


def _capture(module: nn.Module, example: Tensor) -> tuple[fx.GraphModule, str]:
    """The module's graph: by ``torch.fx`` symbolic tracing; a module that is or holds
    TorchScript (which fx cannot trace and ``torch.export`` does not take) by recording the ATen
    operations its interpreter dispatches on ``example`` (``make_fx``, concrete shapes: the
    builders read per-sample shapes from the example, whose batch is ``_EXAMPLE_BATCH``). A
    TorchScript branch on the input's *values* would be recorded for the example only; the
    recorded graph is compared with the program on 64 more random inputs (:func:`trace`)."""
    if _has_scripted(module):
        from torch.fx.experimental.proxy_tensor import make_fx

        with torch.no_grad():
            return make_fx(module)(example), "torchscript"
    return fx.GraphModule(module, _Tracer().trace(module)), "fx"


def trace(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    fold_batchnorm: bool = True,
    check_tol: float = 1e-4,
) -> BoundGraph:
    """Trace ``module`` (evaluated in eval mode; it is not modified) into a bound graph.

    Args:
        module: a PyTorch module of one tensor input returning one tensor.
        input_shape: the per-sample input shape (no batch dimension).
        fold_batchnorm: fold BatchNorm into the preceding Conv/Linear (exact; fewer nodes).
        check_tol: tolerance of the forward comparison with the module (relative to the
            output's scale).

    Raises:
        OptionError: an operation cannot be bounded (the message names the node and the op),
            or the model has several inputs or outputs.
    """
    shape = _validated_trace_input(module, input_shape)
    was_training = module.training
    eval_mode(module)
    try:
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        gen = torch.Generator().manual_seed(0)
        example = torch.rand((_EXAMPLE_BATCH, *shape), generator=gen, dtype=dtype)
        gm, source = _capture_or_export(module, example)
        graph = _interpret(gm, shape, example, source)
        graph = _merge_elementwise(graph)
        if fold_batchnorm:
            graph = _fold_affine_into_linear(graph)
        _check_reproduces(module, graph, example, check_tol)
        if source == "torchscript":
            probe = torch.rand((64, *shape), generator=gen, dtype=dtype)
            _check_recording_holds(module, graph, probe, check_tol)
        return graph
    finally:
        set_training(module, was_training)


def _validated_trace_input(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The per-sample shape as ints, after checking ``module`` is a module and the shape is
    non-empty and positive."""
    if not isinstance(module, nn.Module):
        raise OptionError("module", f"expected a torch.nn.Module, got {type(module).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise OptionError(
            "input_shape", f"{list(shape)} is not a valid per-sample shape", "give e.g. (1, 28, 28)"
        )
    return shape


def _capture_or_export(module: nn.Module, example: Tensor) -> tuple[fx.GraphModule, str]:
    """The module's graph by :func:`_capture`, or where that fails by ``torch.export`` (read at
    the ATen level); neither working is an :class:`OptionError` naming both failures."""
    try:
        return _capture(module, example)
    except Exception as fx_error:  # fx raises many types for untraceable code
        try:
            ep = torch.export.export(module, (example,))
            return ep.module(), "export"
        except Exception as exc:
            raise OptionError(
                "module",
                f"the model cannot be traced by torch.fx ({type(fx_error).__name__}: "
                f"{str(fx_error).splitlines()[0] if str(fx_error) else ''}) nor exported "
                f"({type(exc).__name__})",
                "give a model whose forward has no data-dependent control flow",
            ) from exc


def _check_reproduces(module: nn.Module, graph: BoundGraph, example: Tensor, tol: float) -> None:
    """The graph's forward pass equals the module's on ``example`` (within ``tol`` of the
    output's scale); a model returning NaN/Inf is a :class:`ModelError`, a mismatch a bug."""
    with torch.no_grad():
        want = module(example)
        got = graph.forward(example)
    if isinstance(want, Tensor) and not bool(torch.isfinite(want).all()):
        raise ModelError(
            "the model returns NaN or Inf on inputs inside its domain (broken weights?); "
            "nothing can be certified about it: check the weights file"
        )
    if not isinstance(want, Tensor) or want.shape != got.shape:
        raise InternalError(f"bound graph output shape {list(got.shape)} differs from the model's")
    scale = float(want.abs().max()) + 1.0
    err = float((want - got).abs().max())
    if not err <= tol * scale:
        raise InternalError(
            f"the bound graph does not reproduce the model (max difference {err:.3g}); "
            "this is a bug in edgeproof.certify"
        )


def _check_recording_holds(module: nn.Module, graph: BoundGraph, probe: Tensor, tol: float) -> None:
    """A graph recorded from TorchScript agrees with the program on the ``probe`` points.

    make_fx records the operations one input ran: a branch on the input's values would be
    baked in. Compare on more points (evidence, not a proof; stated).
    """
    with torch.no_grad():
        want, got = module(probe), graph.forward(probe)
    err = float((want - got).abs().max())
    if not err <= tol * (float(want.abs().max()) + 1.0):
        raise OptionError(
            "module",
            "the TorchScript program computes something else on other inputs than "
            f"the operations recorded for one (max difference {err:.3g}): it branches "
            "on its input's values",
            "give the model as a PyTorch module or a torch.export program",
        )


# --------------------------------------------------------------------------------------------
# Builders


def _arg(args: list[Any], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    return t * n if len(t) == 1 and n > 1 else t


def _need_var(b: Builder, v: Any, what: str = "its input") -> Var:
    if not isinstance(v, Var):
        raise b.fail(f"{what} is not a traced tensor")
    return v


def _elementwise(b: Builder, x: Var, scale: Any = None, shift: Any = None) -> Var:
    s = None if scale is None else b.per_sample(scale, x)
    t = None if shift is None else b.per_sample(shift, x)
    return b.add(O.Elementwise(s, t), [x])


def _relu(b: Builder, x: Var, slope: float = 0.0) -> Var:
    if slope == 0.0:
        return b.add(O.ReLU(), [x])
    if not 0.0 <= slope < 1.0:
        raise b.fail(f"LeakyReLU slope {slope} is outside [0, 1)")
    return b.add(O.LeakyReLU(slope), [x])


def _clamp(b: Builder, x: Var, lo: float | None, hi: float | None) -> Var:
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        raise b.fail("clamp bounds must be numbers")
    if lo is None and hi is None:
        return x
    if lo is not None and hi is not None:
        if lo > hi:
            raise b.fail(f"clamp range [{lo}, {hi}] is empty")
        r1 = _relu(b, _elementwise(b, x, shift=-float(lo)))
        r2 = _relu(b, _elementwise(b, x, shift=-float(hi)))
        d = b.add(O.Sub(), [r1, r2])
        return _elementwise(b, d, shift=float(lo))
    if lo is not None:
        return _elementwise(b, _relu(b, _elementwise(b, x, shift=-float(lo))), shift=float(lo))
    assert hi is not None
    r = _relu(b, _elementwise(b, x, scale=-1.0, shift=float(hi)))
    return _elementwise(b, r, scale=-1.0, shift=float(hi))


def _dense(b: Builder, x: Var, weight: Tensor, bias: Tensor | None) -> Var:
    if not isinstance(weight, Tensor) or _has_var(weight) or isinstance(bias, Var):
        raise b.fail("the weights depend on the input")
    w = weight.detach()
    if w.dim() != 2:
        raise b.fail(f"a weight of shape {list(w.shape)} is not a matrix")
    return b.add(O.Dense(w, None if bias is None else bias.detach()), [x])


def _conv(
    b: Builder,
    x: Var,
    weight: Tensor,
    bias: Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
) -> Var:
    d = weight.dim() - 2
    if d not in (1, 2):
        raise b.fail(f"{d}-D convolution is not supported")
    in_shape = b.shape(x)
    k = weight.shape[2:]
    dil = _tuple(dilation, d)
    if isinstance(padding, str):
        if padding == "valid":
            pad = (0,) * d
        elif padding == "same":
            total = [dil[i] * (k[i] - 1) for i in range(d)]
            if any(t % 2 for t in total):
                raise b.fail("padding='same' with an even kernel pads asymmetrically")
            pad = tuple(t // 2 for t in total)
        else:
            raise b.fail(f"padding={padding!r} is not supported")
    else:
        pad = _tuple(padding, d)
    st = _tuple(stride, d)
    fn = F.conv2d if d == 2 else F.conv1d
    with torch.no_grad():
        ex = fn(
            b.example(x),
            weight.detach(),
            None if bias is None else bias.detach(),
            st,
            pad,
            dil,
            groups,
        )
    op = O.Conv(
        weight.detach(),
        None if bias is None else bias.detach(),
        stride=st,
        padding=pad,
        dilation=dil,
        groups=int(groups),
        in_shape=in_shape,
        out_shape=tuple(ex.shape[1:]),
    )
    return b.add(op, [x])


def _batchnorm(
    b: Builder,
    x: Var,
    mean: Tensor | None,
    var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    training: bool,
) -> Var:
    if training or mean is None or var is None:
        raise b.fail(
            "BatchNorm in training mode (batch statistics) has no per-sample bound",
            "put the model in eval mode",
        )
    shape = b.shape(x)
    c = shape[0]
    view = (1, c) + (1,) * (len(shape) - 1)
    inv = torch.rsqrt(var.detach() + eps)
    scale = inv if weight is None else weight.detach() * inv
    shift = -mean.detach() * scale
    if bias is not None:
        shift = shift + bias.detach()
    return b.add(O.Elementwise(scale.view(view), shift.view(view)), [x])


def _reshape_like(b: Builder, x: Var, fn: Callable[[Tensor], Tensor]) -> Var:
    with torch.no_grad():
        ex = fn(b.example(x))
    if ex.dim() == 0 or ex.shape[0] != _EXAMPLE_BATCH:
        raise b.fail("the reshape mixes the batch dimension")
    out_shape = tuple(ex.shape[1:])
    if out_shape == b.shape(x):
        return x
    return b.add(O.Reshape(b.shape(x), out_shape), [x])


def _linear_fn(b: Builder, x: Var, fn: Callable[[Tensor], Tensor], name: str) -> Var:
    return b.add(O.LinearFn(fn, b.shape(x), name), [x])


def _maxpool(
    b: Builder, x: Var, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
) -> Var:
    d = len(b.shape(x)) - 1
    if d not in (1, 2):
        raise b.fail(f"{d}-D max pooling is not supported")
    k = _tuple(kernel, d)
    st = _tuple(stride if stride not in (None, []) else kernel, d)
    pad = _tuple(padding, d)
    if any(v != 1 for v in _tuple(dilation, d)):
        raise b.fail("dilated max pooling is not supported")
    if ceil_mode:
        raise b.fail("max pooling with ceil_mode=True is not supported")
    fn = F.max_pool2d if d == 2 else F.max_pool1d
    with torch.no_grad():
        ex = fn(b.example(x), k, st, pad)
    return b.add(O.MaxPool(k, st, pad, b.shape(x), tuple(ex.shape[1:])), [x])


def _binary(b: Builder, kind: str, x: Any, y: Any, alpha: Any = 1) -> Any:
    """``x (+|-|*|/) y`` where at least one side is a traced tensor."""
    if alpha != 1:
        y = _elementwise(b, y, scale=float(alpha)) if isinstance(y, Var) else y * alpha
    xv, yv = isinstance(x, Var), isinstance(y, Var)
    if kind == "add":
        if xv and yv:
            return _same_shape_pair(b, O.Add(), x, y)
        v, c = (x, y) if xv else (y, x)
        return _elementwise(b, v, shift=c)
    if kind == "sub":
        if xv and yv:
            return _same_shape_pair(b, O.Sub(), x, y)
        if xv:
            return _elementwise(b, x, shift=-torch.as_tensor(y))
        return _elementwise(b, y, scale=-1.0, shift=x)
    if kind == "mul":
        if xv and yv:
            raise b.fail("a product of two input-dependent tensors is not supported")
        v, c = (x, y) if xv else (y, x)
        return _elementwise(b, v, scale=c)
    if kind == "div":
        if yv:
            raise b.fail("division by an input-dependent tensor is not supported")
        c = torch.as_tensor(y, dtype=b.example(x).dtype)
        if bool((c == 0).any()):
            raise b.fail("division by zero")
        return _elementwise(b, x, scale=1.0 / c)
    raise AssertionError(kind)


def _same_shape_pair(b: Builder, op: O.BoundOp, x: Var, y: Var) -> Var:
    sx, sy = b.shape(x), b.shape(y)
    if sx != sy:
        out = torch.broadcast_shapes((1, *sx), (1, *sy))[1:]
        if sx != tuple(out):
            x = _broadcast(b, x, tuple(out))
        if sy != tuple(out):
            y = _broadcast(b, y, tuple(out))
    return b.add(op, [x, y])


def _broadcast(b: Builder, x: Var, shape: tuple[int, ...]) -> Var:
    def expand(t: Tensor) -> Tensor:
        return t.expand(t.shape[0], *shape)

    return _linear_fn(b, x, expand, "expand")


# --- module builders


def _linear_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.Linear)
    return _dense(b, _need_var(b, args[0]), m.weight, m.bias)


def _conv_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    if m.padding_mode != "zeros":
        raise b.fail(f"padding_mode={m.padding_mode!r} is not supported (only zeros)")
    return _conv(
        b, _need_var(b, args[0]), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups
    )


def _bn_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    if not m.track_running_stats or m.running_mean is None:
        raise b.fail("BatchNorm without running statistics uses batch statistics")
    w = m.weight if m.affine else None
    bias = m.bias if m.affine else None
    return _batchnorm(
        b, _need_var(b, args[0]), m.running_mean, m.running_var, w, bias, m.eps, False
    )


def _normalize_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    from edgeproof.models.zoo import Normalize

    assert isinstance(m, Normalize)
    x = _need_var(b, args[0])
    shape = b.shape(x)
    view = (1, -1) + (1,) * (len(shape) - 1)
    std = m.std.detach().view(view)
    mean = m.mean.detach().view(view)
    return b.add(O.Elementwise(1.0 / std, -mean / std), [x])


def _relu_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return _relu(b, _need_var(b, args[0]))


def _leaky_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.LeakyReLU)
    return _relu(b, _need_var(b, args[0]), float(m.negative_slope))


def _sigmoid_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return b.add(O.SShaped("sigmoid"), [_need_var(b, args[0])])


def _tanh_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return b.add(O.SShaped("tanh"), [_need_var(b, args[0])])


def _hardtanh_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.Hardtanh)
    return _clamp(b, _need_var(b, args[0]), float(m.min_val), float(m.max_val))


def _identity_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return args[0]


def _flatten_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, (nn.Flatten, nn.Unflatten))
    return _reshape_like(b, _need_var(b, args[0]), m)


def _avgpool_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return _linear_fn(b, _need_var(b, args[0]), m, type(m).__name__)


def _maxpool_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))
    if m.return_indices:
        raise b.fail("max pooling returning indices is not supported")
    return _maxpool(
        b, _need_var(b, args[0]), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
    )


def _module_table() -> list[tuple[type, ModuleBuilder]]:
    """The module classes bounded (and kept whole by the tracer) and their builders."""
    from edgeproof.models.zoo import Normalize

    return [
        (nn.Linear, _linear_m),
        (nn.Conv1d, _conv_m),
        (nn.Conv2d, _conv_m),
        (nn.BatchNorm1d, _bn_m),
        (nn.BatchNorm2d, _bn_m),
        (Normalize, _normalize_m),
        (nn.ReLU, _relu_m),
        (nn.LeakyReLU, _leaky_m),
        (nn.Sigmoid, _sigmoid_m),
        (nn.Tanh, _tanh_m),
        (nn.Hardtanh, _hardtanh_m),  # ReLU6 is a Hardtanh
        (nn.Identity, _identity_m),
        (nn.Dropout, _identity_m),
        (nn.Dropout1d, _identity_m),
        (nn.Dropout2d, _identity_m),
        (nn.Flatten, _flatten_m),
        (nn.Unflatten, _flatten_m),
        (nn.AvgPool1d, _avgpool_m),
        (nn.AvgPool2d, _avgpool_m),
        (nn.AdaptiveAvgPool1d, _avgpool_m),
        (nn.AdaptiveAvgPool2d, _avgpool_m),
        (nn.MaxPool1d, _maxpool_m),
        (nn.MaxPool2d, _maxpool_m),
    ]


# --- function builders: arithmetic

_aten = torch.ops.aten
FunctionTable = list[tuple[Any, FunctionBuilder]]


def _arith_f(kind: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return _binary(b, kind, args[0], _arg(args, kwargs, 1, "other"), kwargs.get("alpha", 1))

    return build


def _rsub_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _binary(b, "sub", _arg(args, kwargs, 1, "other"), args[0])


def _neg_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _elementwise(b, _need_var(b, args[0]), scale=-1.0)


def _arithmetic_table() -> FunctionTable:
    """``+ − × ÷`` (operators, in place, torch and ATen spellings), ``rsub`` and negation."""
    aten = _aten
    table: FunctionTable = []
    for kind, targets in (
        ("add", (operator.add, operator.iadd, torch.add, "add", "add_", aten.add)),
        ("sub", (operator.sub, operator.isub, torch.sub, "sub", "sub_", aten.sub)),
        ("mul", (operator.mul, operator.imul, torch.mul, "mul", "mul_", aten.mul)),
        ("div", (operator.truediv, operator.itruediv, torch.div, "div", "div_", aten.div)),
    ):
        table += [(t, _arith_f(kind)) for t in targets]
    table.append((aten.rsub, _rsub_f))
    table += [(t, _neg_f) for t in (operator.neg, torch.neg, "neg", aten.neg)]
    return table


# --- function builders: activations


def _relu_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _relu(b, _need_var(b, args[0]))


def _leaky_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _relu(b, _need_var(b, args[0]), float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


def _s_shaped_f(name: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return b.add(O.SShaped(name), [_need_var(b, args[0])])

    return build


def _clamp_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _clamp(
        b, _need_var(b, args[0]), _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
    )


def _hardtanh_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    lo = _arg(args, kwargs, 1, "min_val", -1.0)
    hi = _arg(args, kwargs, 2, "max_val", 1.0)
    return _clamp(b, _need_var(b, args[0]), float(lo), float(hi))


def _relu6_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _clamp(b, _need_var(b, args[0]), 0.0, 6.0)


def _activation_table() -> FunctionTable:
    """ReLU, LeakyReLU, sigmoid, tanh and the clamps (``clamp``, ``hardtanh``, ``relu6``)."""
    aten = _aten
    table: FunctionTable = []
    table += [(t, _relu_f) for t in (F.relu, torch.relu, "relu", "relu_", aten.relu, aten.relu_)]
    table += [(t, _leaky_f) for t in (F.leaky_relu, aten.leaky_relu, aten.leaky_relu_)]
    table += [
        (t, _s_shaped_f("sigmoid")) for t in (torch.sigmoid, F.sigmoid, "sigmoid", aten.sigmoid)
    ]
    table += [(t, _s_shaped_f("tanh")) for t in (torch.tanh, F.tanh, "tanh", aten.tanh)]
    clamps = (torch.clamp, torch.clip, "clamp", "clip", aten.clamp, aten.clip)
    table += [(t, _clamp_f) for t in clamps]
    table += [(t, _hardtanh_f) for t in (F.hardtanh, aten.hardtanh)]
    table += [(t, _relu6_f) for t in (F.relu6, aten.relu6)]
    return table


# --- function builders: shape operations


def _reshape_f(method: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        rest, kw = args[1:], kwargs
        return _reshape_like(b, x, lambda t: getattr(t, method)(*rest, **kw))

    return build


def _same_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return args[0]


def _dropout_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if _arg(args, kwargs, 2, "training", False):
        raise b.fail("dropout in training mode is random")
    return args[0]


def _permute_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    dims = (
        args[1:]
        if len(args) > 2 or isinstance(_arg(args, kwargs, 1, "dims"), int)
        else _arg(args, kwargs, 1, "dims")
    )
    nd = len(b.shape(x)) + 1
    dims = [int(d) % nd for d in dims]
    if dims[0] != 0:
        raise b.fail("the permutation moves the batch dimension")
    return b.add(O.Permute([d - 1 for d in dims[1:]]), [x])


def _transpose_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    nd = len(b.shape(x)) + 1
    d0 = int(_arg(args, kwargs, 1, "dim0")) % nd
    d1 = int(_arg(args, kwargs, 2, "dim1")) % nd
    if 0 in (d0, d1):
        raise b.fail("the transpose moves the batch dimension")
    dims = list(range(nd - 1))
    dims[d0 - 1], dims[d1 - 1] = dims[d1 - 1], dims[d0 - 1]
    return b.add(O.Permute(dims), [x])


def _cat_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    parts = list(args[0])
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    like = next(p for p in parts if isinstance(p, Var))
    nd = len(b.shape(like)) + 1
    dim %= nd
    if dim == 0:
        raise b.fail("concatenation along the batch dimension")
    vars_: list[Var] = []
    for p in parts:
        if isinstance(p, Var):
            vars_.append(p)
        else:
            t = torch.as_tensor(p, dtype=b.example(like).dtype)
            if t.shape[0] != 1:
                t = t[:1]
            vars_.append(b.add(O.Constant(t.clone()), [], name=f"{b.current}_const"))
    sizes = [b.shape(v)[dim - 1] for v in vars_]
    return b.add(O.Cat(dim - 1, sizes), vars_)


def _getitem_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, idx = args[0], args[1]
    if not isinstance(x, Var):
        return operator.getitem(x, idx)
    key = idx if isinstance(idx, tuple) else (idx,)
    keeps_batch = bool(key) and (key[0] == slice(None) or (key[0] is Ellipsis and len(key) > 1))
    if not keeps_batch:
        raise b.fail("indexing that selects along the batch dimension")
    if any(isinstance(k, (Tensor, Var)) or k is None for k in key):
        raise b.fail("indexing by tensors or None is not supported")

    def select(t: Tensor) -> Tensor:
        return t[idx]

    return _linear_fn(b, x, select, "slice")


def _slice_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    if dim % (len(b.shape(x)) + 1) == 0:
        raise b.fail("slicing along the batch dimension")
    rest = args[1:]

    def sliced(t: Tensor) -> Tensor:
        out: Tensor = _aten.slice.Tensor(t, *rest)
        return out

    return _linear_fn(b, x, sliced, "slice")


def _pad_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    pad = tuple(_arg(args, kwargs, 1, "pad"))
    mode = _arg(args, kwargs, 2, "mode", "constant")
    value = _arg(args, kwargs, 3, "value", 0.0)
    if mode != "constant" or (value or 0.0) != 0.0:
        raise b.fail("only zero constant padding is supported")

    def padded(t: Tensor) -> Tensor:
        return F.pad(t, pad)

    return _linear_fn(b, x, padded, "pad")


def _shape_table() -> FunctionTable:
    """Reshapes, no-ops (``contiguous``, ``clone``, eval dropout), permutations, ``cat``,
    indexing, slicing and zero padding."""
    aten = _aten
    table: FunctionTable = []
    for name in ("view", "reshape", "flatten", "squeeze", "unsqueeze"):
        table.append((name, _reshape_f(name)))
    table.append((torch.flatten, _reshape_f("flatten")))
    table.append((torch.reshape, _reshape_f("reshape")))
    table.append((torch.squeeze, _reshape_f("squeeze")))
    table.append((torch.unsqueeze, _reshape_f("unsqueeze")))
    for t, meth in (
        (aten.view, "view"),
        (aten.reshape, "reshape"),
        (aten._unsafe_view, "reshape"),
        (aten.flatten, "flatten"),
        (aten.squeeze, "squeeze"),
        (aten.unsqueeze, "unsqueeze"),
    ):
        table.append((t, _reshape_f(meth)))
    same = ("contiguous", "clone", "detach", aten.clone, aten.contiguous, aten.alias, aten.detach)
    table += [(t, _same_f) for t in same]
    table += [(t, _dropout_f) for t in (F.dropout, aten.dropout)]
    table += [(t, _permute_f) for t in ("permute", torch.permute, aten.permute)]
    table += [(t, _transpose_f) for t in ("transpose", torch.transpose, aten.transpose)]
    table += [(t, _cat_f) for t in (torch.cat, torch.concat, aten.cat)]
    table.append((operator.getitem, _getitem_f))
    table.append((aten.slice, _slice_f))
    table += [(t, _pad_f) for t in (F.pad, aten.constant_pad_nd, aten.pad)]
    return table


# --- function builders: reductions and pools


def _reduce_f(kind: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        dim = _arg(args, kwargs, 1, "dim")
        keep = bool(_arg(args, kwargs, 2, "keepdim", False))
        nd = len(b.shape(x)) + 1
        if dim is None:
            raise b.fail(f"{kind} over every dimension mixes the batch")
        dims = [dim] if isinstance(dim, int) else list(dim)
        if any(int(d) % nd == 0 for d in dims):
            raise b.fail(f"{kind} over the batch dimension")
        dims_t = tuple(int(d) for d in dims)
        if kind == "mean":
            return _linear_fn(b, x, lambda t: t.mean(dim=dims_t, keepdim=keep), "mean")
        return _linear_fn(b, x, lambda t: t.sum(dim=dims_t, keepdim=keep), "sum")

    return build


def _fn_pool_f(fn: Callable[..., Tensor], name: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        rest, kw = args[1:], kwargs
        return _linear_fn(b, x, lambda t: fn(t, *rest, **kw), name)

    return build


def _maxpool_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    k = _arg(args, kwargs, 1, "kernel_size")
    st = _arg(args, kwargs, 2, "stride")
    pad = _arg(args, kwargs, 3, "padding", 0)
    dil = _arg(args, kwargs, 4, "dilation", 1)
    ceil = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    if _arg(args, kwargs, 6, "return_indices", False):
        raise b.fail("max pooling returning indices is not supported")
    return _maxpool(b, x, k, st, pad, dil, ceil)


def _maxpool_indices_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # ATen's pooling with indices (what TorchScript dispatches for MaxPool2d): the values
    # are bounded; the indices (unused by the models this sees) are not a tensor we bound
    x = _need_var(b, args[0])
    k = _arg(args, kwargs, 1, "kernel_size")
    st = _arg(args, kwargs, 2, "stride")
    pad = _arg(args, kwargs, 3, "padding", 0)
    dil = _arg(args, kwargs, 4, "dilation", 1)
    ceil = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    return (_maxpool(b, x, k, st, pad, dil, ceil), None)


def _reduction_and_pool_table() -> FunctionTable:
    """``mean``/``sum`` over non-batch dimensions, average pools (linear) and max pools."""
    aten = _aten
    table: FunctionTable = []
    table += [(t, _reduce_f("mean")) for t in ("mean", torch.mean, aten.mean)]
    table += [(t, _reduce_f("sum")) for t in ("sum", torch.sum, aten.sum)]
    for t, name in (
        (F.avg_pool1d, "avg_pool1d"),
        (F.avg_pool2d, "avg_pool2d"),
        (F.adaptive_avg_pool1d, "adaptive_avg_pool1d"),
        (F.adaptive_avg_pool2d, "adaptive_avg_pool2d"),
        (aten.avg_pool1d, "avg_pool1d"),
        (aten.avg_pool2d, "avg_pool2d"),
        (aten.adaptive_avg_pool1d, "adaptive_avg_pool1d"),
        (aten.adaptive_avg_pool2d, "adaptive_avg_pool2d"),
        (aten._adaptive_avg_pool2d, "adaptive_avg_pool2d"),
    ):
        assert callable(t)
        table.append((t, _fn_pool_f(t, name)))
    table += [
        (t, _maxpool_f) for t in (F.max_pool1d, F.max_pool2d, aten.max_pool1d, aten.max_pool2d)
    ]
    with_indices = (aten.max_pool1d_with_indices, aten.max_pool2d_with_indices)
    table += [(t, _maxpool_indices_f) for t in with_indices]
    return table


# --- function builders: linear layers


def _linear_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _dense(
        b, _need_var(b, args[0]), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    )


def _matmul_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, w = args[0], args[1]
    if isinstance(w, Var) or not isinstance(x, Var):
        raise b.fail("a matrix product with an input-dependent right factor is not supported")
    w = torch.as_tensor(w)
    if w.dim() != 2:
        raise b.fail(f"a matrix product with a factor of shape {list(w.shape)}")
    return _dense(b, x, w.t(), None)


def _addmm_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    bias, x, w = args[0], args[1], args[2]
    if not isinstance(x, Var) or isinstance(w, Var) or isinstance(bias, Var):
        raise b.fail("addmm with input-dependent weights")
    beta = kwargs.get("beta", 1)
    alpha = kwargs.get("alpha", 1)
    return _dense(b, x, alpha * torch.as_tensor(w).t(), beta * torch.as_tensor(bias))


def _conv_f(dims: int) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        return _conv(
            b,
            x,
            _arg(args, kwargs, 1, "weight"),
            _arg(args, kwargs, 2, "bias"),
            _arg(args, kwargs, 3, "stride", 1),
            _arg(args, kwargs, 4, "padding", 0),
            _arg(args, kwargs, 5, "dilation", 1),
            int(_arg(args, kwargs, 6, "groups", 1)),
        )

    return build


def _convolution_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, w, bias, stride, padding, dilation, transposed, _out_pad, groups = args[:9]
    if transposed:
        raise b.fail("transposed convolution is not supported")
    return _conv(b, _need_var(b, x), w, bias, stride, padding, dilation, int(groups))


def _bn_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    return _batchnorm(
        b,
        x,
        _arg(args, kwargs, 1, "running_mean"),
        _arg(args, kwargs, 2, "running_var"),
        _arg(args, kwargs, 3, "weight"),
        _arg(args, kwargs, 4, "bias"),
        float(_arg(args, kwargs, 7, "eps", 1e-5)),
        bool(_arg(args, kwargs, 5, "training", False)),
    )


def _aten_bn_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # aten.batch_norm(input, weight, bias, running_mean, running_var, training, momentum,
    # eps, cudnn_enabled)
    x = _need_var(b, args[0])
    return _batchnorm(b, x, args[3], args[4], args[1], args[2], float(args[7]), bool(args[5]))


def _aten_bn_legit_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # (input, weight, bias, running_mean, running_var, momentum, eps)
    # -> (out, save_mean, save_rstd)
    x = _need_var(b, args[0])
    out = _batchnorm(b, x, args[3], args[4], args[1], args[2], float(args[6]), False)
    return (out, None, None)


def _aten_native_bn_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum,
    # eps) -> (out, save_mean, save_invstd); what TorchScript dispatches for BatchNorm
    x = _need_var(b, args[0])
    out = _batchnorm(b, x, args[3], args[4], args[1], args[2], float(args[7]), bool(args[5]))
    return (out, None, None)


def _linear_layer_table() -> FunctionTable:
    """``linear``, matrix products, ``addmm``, convolutions and functional/ATen BatchNorm."""
    aten = _aten
    table: FunctionTable = []
    table += [(t, _linear_f) for t in (F.linear, aten.linear)]
    matmuls = (operator.matmul, torch.matmul, torch.mm, "matmul", "mm", aten.matmul, aten.mm)
    table += [(t, _matmul_f) for t in matmuls]
    table.append((aten.addmm, _addmm_f))
    table += [(t, _conv_f(1)) for t in (F.conv1d, aten.conv1d)]
    table += [(t, _conv_f(2)) for t in (F.conv2d, aten.conv2d)]
    # aten._convolution: what a traced TorchScript program records for its convolutions
    table += [(t, _convolution_f) for t in (aten.convolution, aten._convolution)]
    table.append((F.batch_norm, _bn_f))
    table.append((aten.batch_norm, _aten_bn_f))
    table.append((aten._native_batch_norm_legit_no_training, _aten_bn_legit_f))
    table.append((aten.native_batch_norm, _aten_native_bn_f))
    return table


# --- function builders: tensor queries


def _size_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    return b.example(x).size(*args[1:])


def _dim_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return len(b.shape(_need_var(b, args[0]))) + 1


def _getattr_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, name = args[0], args[1]
    if isinstance(x, Var) and name in ("shape", "dtype", "device", "ndim"):
        return getattr(b.example(x), name)
    raise b.fail(f"attribute {name!r} of a traced tensor")


def _query_table() -> FunctionTable:
    """``size()``, ``dim()`` and the ``shape``/``dtype``/``device``/``ndim`` attributes, read
    from the example (they are constants of the traced graph)."""
    return [("size", _size_f), ("dim", _dim_f), (getattr, _getattr_f)]


_FUNCTION_TABLES: tuple[Callable[[], FunctionTable], ...] = (
    _arithmetic_table,
    _activation_table,
    _shape_table,
    _reduction_and_pool_table,
    _linear_layer_table,
    _query_table,
)


def _register_builtins() -> None:
    """Register the built-in builders: the module table, then each op family's function table
    (in this order; a later registration of the same target would win)."""
    for cls, mb in _module_table():
        register_module(cls, mb)
    for table in _FUNCTION_TABLES:
        for target, fb in table():
            register_function(target, fb)


_register_builtins()


def maxpool_as_relus(graph: BoundGraph) -> BoundGraph:
    """An equivalent graph whose max pools are trees of ReLUs, ``max(a, b) = b + relu(a − b)``.

    Each window element becomes a strided slice of the pool's input (a linear node); the k·k
    slices are reduced pairwise, so a k×k pool costs ``k² − 1`` ReLU layers. The result is a
    ReLU network (where the original was one with max pools), on which branch-and-bound on ReLU
    splits is complete. Only pools without padding are rewritten (padded ones are refused).
    """
    if not any(isinstance(n.op, O.MaxPool) for n in graph.nodes):
        return graph
    nodes: list[Node] = []
    remap: dict[int, int] = {}

    def add(
        name: str, op: O.BoundOp | None, inputs: tuple[int, ...], shape: tuple[int, ...]
    ) -> int:
        idx = len(nodes)
        nodes.append(Node(idx, name, op, inputs, shape))
        return idx

    for n in graph.nodes:
        ins = tuple(remap[i] for i in n.inputs)
        op = n.op
        if not isinstance(op, O.MaxPool):
            remap[n.index] = add(n.name, op, ins, n.shape)
            continue
        if op.padding != (0, 0):
            raise OptionError(
                "module",
                f"node '{n.name}' (max pooling with padding) cannot be rewritten into ReLUs",
                "use a pool without padding for branch-and-bound",
            )
        (kh, kw), (sh, sw) = op.kernel, op.stride
        in_shape = graph.nodes[n.inputs[0]].shape
        out_sp = n.shape[1:]
        ho = out_sp[0] if op.dim == 2 else 1
        wo = out_sp[-1]
        parts: list[int] = []
        for i in range(kh):
            for j in range(kw):

                def window(
                    t: Tensor,
                    i: int = i,
                    j: int = j,
                    one_d: bool = op.dim == 1,
                    geometry: tuple[int, int, int, int] = (sh, sw, ho, wo),
                ) -> Tensor:
                    s_h, s_w, h_o, w_o = geometry
                    t2 = t.unsqueeze(-2) if one_d else t
                    out = t2[
                        ..., i : i + s_h * (h_o - 1) + 1 : s_h, j : j + s_w * (w_o - 1) + 1 : s_w
                    ]
                    return out.squeeze(-2) if one_d else out

                lf = O.LinearFn(window, in_shape, "pool_window")
                parts.append(add(f"{n.name}_w{i}{j}", lf, ins, n.shape))
        level = 0
        while len(parts) > 1:
            nxt: list[int] = []
            for a, b in zip(parts[0::2], parts[1::2]):
                d = add(f"{n.name}_d{level}", O.Sub(), (a, b), n.shape)
                r = add(f"{n.name}_r{level}", O.ReLU(), (d,), n.shape)
                nxt.append(add(f"{n.name}_m{level}", O.Add(), (b, r), n.shape))
                level += 1
            if len(parts) % 2:
                nxt.append(parts[-1])
            parts = nxt
        remap[n.index] = parts[0]
    return BoundGraph(nodes=nodes, output=remap[graph.output], source=graph.source)

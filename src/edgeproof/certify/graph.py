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

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from edgeproof.certify import ops as O
from edgeproof.certify.bound_graph import (
    _EXAMPLE_BATCH,
    _FUNCTIONS,
    BoundGraph,
    Builder,
    Node,
    Var,
    _has_var,
    _module_builder,
    register_function,
    register_module,
)
from edgeproof.certify.function_builders import _register_builtins
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


# --------------------------------------------------------------------------------------------
# Interpretation


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


# The built-in builders (certify/builders.py, certify/function_builders.py).
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

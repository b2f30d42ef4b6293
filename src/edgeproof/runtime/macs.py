"""MAC counting: per-layer multiply-accumulates of a PyTorch module or an ONNX graph.

Rules (one per layer type, in a registry extended with :func:`register_mac_rule`):

- Conv1d/2d/3d: ``out.numel() · (C_in / groups) · prod(kernel)``; ConvTranspose:
  ``in.numel() · (C_out / groups) · prod(kernel)``; bias adds are not counted;
- Linear: ``out.numel() · in_features``;
- BatchNorm: ``out.numel()`` (one fused multiply-add per element at inference);
- LSTM / GRU / RNN: the gate matrix products only, ``T · B · dirs · Σ_layers
  gates · H · (in_l + H_r)`` with gates = 4 / 3 / 1 (plus ``H · H_r`` for an LSTM projection);
  element-wise gate arithmetic is not counted;
- every other layer (activations, pooling, additions) counts 0.

The same convention as ptflops/thop for Conv and Linear. :func:`flop_counter_macs` gives the
``torch.utils.flop_counter.FlopCounterMode`` total (FLOPs / 2) for graphs without hookable
layers; :func:`onnx_layer_costs` reads Conv/ConvTranspose/Gemm/MatMul nodes of an ONNX graph
after shape inference with the batch dimension set to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeproof.extras import needs_extra

__all__ = [
    "LayerCost",
    "MacRule",
    "count_macs",
    "flop_counter_macs",
    "onnx_layer_costs",
    "register_mac_rule",
]

MacRule = Callable[[nn.Module, tuple[Any, ...], Any], int]
"""``rule(module, inputs, output) -> MACs`` of one call (inputs as the forward hook sees them)."""

_MAC_RULES: dict[type[nn.Module], MacRule] = {}


def register_mac_rule(module_type: type[nn.Module], rule: MacRule) -> None:
    """Count MACs of ``module_type`` (and subclasses without their own rule) with ``rule``."""
    _MAC_RULES[module_type] = rule


def _rule_for(module: nn.Module) -> MacRule | None:
    for cls in type(module).__mro__:
        rule = _MAC_RULES.get(cls)
        if rule is not None:
            return rule
    return None


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, nn.utils.rnn.PackedSequence):
        return obj.data
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _conv_macs(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    assert isinstance(m, nn.modules.conv._ConvNd)
    o = _first_tensor(out)
    if o is None:
        return 0
    per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
    return int(o.numel()) * per_output


def _conv_transpose_macs(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    assert isinstance(m, nn.modules.conv._ConvTransposeNd)
    x = _first_tensor(inputs)
    if x is None:
        return 0
    return int(x.numel()) * (m.out_channels // m.groups) * math.prod(m.kernel_size)


def _linear_macs(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    assert isinstance(m, nn.Linear)
    o = _first_tensor(out)
    return 0 if o is None else int(o.numel()) * m.in_features


def _elementwise_macs(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    o = _first_tensor(out)
    return 0 if o is None else int(o.numel())


def _rnn_macs(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    assert isinstance(m, nn.RNNBase)
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    x = inputs[0] if inputs else None
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])  # sum of sequence lengths over the batch
    elif isinstance(x, torch.Tensor):
        # (T, F) unbatched, else (T, B, F) or (B, T, F): steps = T·B either way
        steps = int(x.shape[0]) if x.dim() == 2 else int(x.shape[0]) * int(x.shape[1])
    else:
        return 0
    h = m.hidden_size
    proj = int(getattr(m, "proj_size", 0) or 0)
    h_r = proj or h  # size of the recurrent state fed back
    dirs = 2 if m.bidirectional else 1
    per_step = 0
    for layer in range(m.num_layers):
        in_l = m.input_size if layer == 0 else h_r * dirs
        per_step += gates * h * (in_l + h_r) + (h * proj if proj else 0)
    return steps * dirs * per_step


register_mac_rule(nn.modules.conv._ConvNd, _conv_macs)
register_mac_rule(nn.modules.conv._ConvTransposeNd, _conv_transpose_macs)
register_mac_rule(nn.Linear, _linear_macs)
register_mac_rule(nn.modules.batchnorm._BatchNorm, _elementwise_macs)
register_mac_rule(nn.RNNBase, _rnn_macs)


@dataclass(frozen=True)
class LayerCost:
    """One layer's share: its output shape (batch 1), own parameters and MACs per sample.

    ``macs`` is ``None`` for a layer that holds parameters but has no MAC rule.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int | None


def count_macs(module: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """Per-layer MACs of one forward call of ``module`` on ``example`` (give a batch of 1).

    Layers are the submodules with a MAC rule plus leaf modules that own parameters; a module
    called twice (shared weights) sums its calls. Returns them in first-call order. Raises
    ``RuntimeError`` if hooks cannot be attached (TorchScript modules).
    """
    records: dict[str, dict[str, Any]] = {}
    handles = []

    def make_hook(name: str, rule: MacRule | None) -> Callable[..., None]:
        def hook(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
            o = _first_tensor(out)
            rec = records.setdefault(name, {"macs": 0, "shape": ()})
            if rule is not None:
                rec["macs"] += int(rule(m, inputs, out))
            rec["shape"] = tuple(int(s) for s in o.shape) if o is not None else ()

        return hook

    candidates: list[tuple[str, nn.Module, MacRule | None]] = []
    for name, m in module.named_modules():
        rule = _rule_for(m)
        own = any(True for _ in m.parameters(recurse=False))
        leaf = not any(True for _ in m.children())
        if rule is not None or (own and leaf):
            candidates.append((name or type(m).__name__, m, rule))
    try:
        for name, m, rule in candidates:
            handles.append(m.register_forward_hook(make_hook(name, rule)))
        with torch.no_grad():
            module(example)
    finally:
        for hd in handles:
            hd.remove()
    out: list[LayerCost] = []
    for name, m, rule in candidates:
        if name not in records:
            continue
        out.append(
            LayerCost(
                name=name,
                type=type(m).__name__,
                output_shape=records[name]["shape"],
                params=int(sum(p.numel() for p in m.parameters(recurse=False))),
                macs=records[name]["macs"] if rule is not None else None,
            )
        )
    return out


def flop_counter_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Total MACs by ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example)
    return int(counter.get_total_flops()) // 2


def _onnx_dims(vi: Any) -> tuple[int, ...] | None:
    dims = vi.type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def onnx_layer_costs(path: Path, input_shape: Sequence[int]) -> list[LayerCost]:
    """MACs per Conv/ConvTranspose/Gemm/MatMul node of an ONNX graph (batch dimension 1).

    The graph inputs' first dimension is set to 1 and ONNX shape inference fills in every
    intermediate shape. Nodes whose shapes stay unknown get ``macs=None``. BatchNormalization
    counts one MAC per output element; Add/Sub/Mul/Div holding initializers count 0; other nodes
    holding initializers are listed with their parameters and ``macs=None``.
    """
    with needs_extra("onnx", "to count the MACs of an ONNX graph"):
        import onnx
        from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for inp in graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == len(input_shape) + 1:
            for d, v in zip(dims, (1, *input_shape)):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...] | None] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[vi.name] = _onnx_dims(vi)
    for name, arr in inits.items():
        shapes[name] = tuple(int(s) for s in arr.shape)

    out: list[LayerCost] = []
    zero_cost = {"Add", "Sub", "Mul", "Div"}
    for i, node in enumerate(model.graph.node):
        params = int(sum(inits[n].size for n in node.input if n in inits))
        op = node.op_type
        oshape = shapes.get(node.output[0]) if node.output else None
        macs: int | None = None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Conv" and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if oshape is not None and w is not None:
                macs = math.prod(oshape) * math.prod(w[1:])
        elif op == "ConvTranspose" and len(node.input) > 1:
            w, x = shapes.get(node.input[1]), shapes.get(node.input[0])
            if x is not None and w is not None:
                macs = math.prod(x) * math.prod(w[1:])
        elif op == "Gemm":
            a = shapes.get(node.input[0])
            if oshape is not None and a is not None:
                k = a[0] if attrs.get("transA", 0) else a[-1]
                macs = math.prod(oshape) * int(k)
        elif op == "MatMul":
            a = shapes.get(node.input[0])
            if oshape is not None and a is not None:
                macs = math.prod(oshape) * int(a[-1])
        elif op == "BatchNormalization":
            macs = None if oshape is None else math.prod(oshape)
        elif op in zero_cost and params:
            macs = 0
        elif not params:
            continue
        out.append(
            LayerCost(
                name=node.name or f"{op}_{i}",
                type=op,
                output_shape=oshape or (),
                params=params,
                macs=macs,
            )
        )
    return out

"""ONNX export and the placement of activation quantizers on the exported graph.

Export: ``torch.onnx.export(dynamo=False, opset_version=17)`` with a dynamic batch axis, after
BatchNorm is folded into the preceding convolution (:func:`edgeproof.compress.folding.
fold_batchnorm`), so each PyTorch Conv/Linear becomes exactly one ONNX ``Conv``/``Gemm``/
``MatMul``.

Quantization placement (the same rule is applied to the PyTorch simulation in
:mod:`edgeproof.compress.simulate`, so the two can be compared):

* *quantizable ops*: ``Conv``, ``Gemm`` and ``MatMul`` whose weight is a constant initializer;
* *activation points* (:func:`activation_points`): the activation input of every quantizable
  op, and its output — or, when the op's only consumer is a ``Relu``, the ``Relu``'s output;
  the output of an ``Add`` / average pool whose inputs are all quantized; never the graph output
  (logits stay float). A point reached from another through ``MaxPool``/``Flatten``/… only
  reuses that point's scale (:func:`shared_points`), so ONNX Runtime runs the pool on uint8.
  Each tensor is quantized once (``QuantizeLinear`` → ``DequantizeLinear``, uint8, asymmetric,
  per tensor).

The QDQ graph itself (weights, biases, INT4 packing) is built by :mod:`edgeproof.compress.qdq`.
ONNX Runtime fuses ``DQ → Conv → Q`` into ``QLinearConv`` (and ``MatMul``/``Gemm`` likewise) when
it loads the graph; :func:`float_nodes` lists the nodes the *optimised* graph still runs in float.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
import torch
from onnx import TensorProto, helper

from edgeproof.runtime.ort import make_session

__all__ = [
    "RANGE_PRESERVING_OPS",
    "FloatNode",
    "QuantOp",
    "activation_points",
    "consumers",
    "export_onnx",
    "float_nodes",
    "quantizable_ops",
    "shared_points",
    "with_outputs",
]

_QUANT_OP_TYPES = ("Conv", "Gemm", "MatMul")


def export_onnx(
    module: torch.nn.Module, input_shape: Sequence[int], *, opset: int = 17
) -> onnx.ModelProto:
    """Export ``module`` (eval mode) to an fp32 ONNX model with input ``input`` and output
    ``logits`` (dynamic batch); Identity-of-initializer nodes are replaced by initializers."""
    module = module.eval()
    buf = io.BytesIO()
    dummy = torch.zeros(1, *input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        # nn.LSTM's input-size check warns while tracing; the check is static for a fixed shape.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # no h0/c0 inputs: ONNX LSTM starts from zeros at any batch size, which is what we want
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        torch.onnx.export(
            module,
            (dummy,),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    model = onnx.load_from_string(buf.getvalue())
    _inline_identity_initializers(model)
    return model


def _inline_identity_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            g.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)


@dataclass(frozen=True)
class QuantOp:
    """One quantizable node: its activation input, constant weight and (optional) bias."""

    node: str
    op_type: str
    activation: str
    weight: str
    bias: str | None
    out_axis: int
    output: str


def quantizable_ops(model: onnx.ModelProto) -> list[QuantOp]:
    """Conv/Gemm/MatMul nodes with an initializer weight, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    ops: list[QuantOp] = []
    for node in model.graph.node:
        if node.op_type not in _QUANT_OP_TYPES or len(node.input) < 2:
            continue
        w = node.input[1]
        if w not in inits or node.input[0] in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            out_axis = 0
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0):
                continue
            out_axis = 0 if attrs.get("transB", 0) else 1
        else:
            if len(inits[w].dims) != 2:
                continue
            out_axis = 1
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        ops.append(
            QuantOp(node.name, node.op_type, node.input[0], w, bias, out_axis, node.output[0])
        )
    return ops


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name → the nodes that read it."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


#: Ops whose output takes only values of their (first) input: a quantized input stays on the same
#: grid, so their output point shares the input's scale and zero point and ONNX Runtime runs them
#: on the integers (its QDQ transformers drop a ``DQ → op → Q`` pair with equal parameters).
RANGE_PRESERVING_OPS = (
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
)
#: Ops ONNX Runtime executes on quantized inputs (``QLinearAdd``, ``QLinearGlobalAveragePool``,
#: ``QLinearAveragePool``) when every input is quantized: their output becomes a point too.
_INT_CAPABLE_OPS = ("Add", "GlobalAveragePool", "AveragePool")


def activation_points(model: onnx.ModelProto, ops: Sequence[QuantOp]) -> list[str]:
    """Tensors to quantize (uint8, per tensor), in the order found.

    1. the activation input of every quantizable op, and its output — or, when the op's only
       consumer is a ``Relu``, the ``Relu``'s output;
    2. the (Relu-extended) output of an ``Add``, ``GlobalAveragePool`` or ``AveragePool`` whose
       every non-constant input is already a point (repeated until nothing changes), so ONNX
       Runtime fuses it into ``QLinearAdd`` / ``QLinearGlobalAveragePool``;
    3. never a graph output: the logits stay float (the last Gemm becomes a ``QGemm`` with float
       output), as NNCF and ONNX Runtime's own QDQ quantizer leave the model output.

    Points produced by a range-preserving op (``MaxPool``, ``Flatten``, …) from another point
    share that point's range: see :func:`shared_points`.
    """
    cons = consumers(model)
    inits = {i.name for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    producers = _producers(model)
    points: list[str] = []

    def extended(out: str) -> str:
        users = cons.get(out, [])
        if len(users) == 1 and users[0].op_type == "Relu" and out not in graph_outputs:
            return str(users[0].output[0])
        return out

    def add(t: str) -> bool:
        if t in graph_outputs or t in points:
            return False
        points.append(t)
        return True

    for op in ops:
        add(op.activation)
        add(extended(op.output))
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if node.op_type not in _INT_CAPABLE_OPS:
                continue
            data = [i for i in node.input if i and i not in inits]
            if data and all(_point_source(producers, i, points) is not None for i in data):
                changed |= add(extended(node.output[0]))
    return points


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _point_source(
    producers: Mapping[str, onnx.NodeProto], t: str, points: Sequence[str]
) -> str | None:
    """``t`` if it is a point, else the point it is derived from through range-preserving ops."""
    seen = 0
    while t not in points:
        prod = producers.get(t)
        if prod is None or prod.op_type not in RANGE_PRESERVING_OPS or seen > 64:
            return None
        t, seen = prod.input[0], seen + 1
    return t


def shared_points(model: onnx.ModelProto, points: Sequence[str]) -> dict[str, str]:
    """Point → the earlier point whose range it must reuse: ``t`` produced from point ``s``
    through range-preserving ops only (e.g. ``Relu → MaxPool → Conv``: the Conv's input reuses
    the Relu output's scale, so ``MaxPool`` runs on uint8 in ONNX Runtime)."""
    producers = _producers(model)
    out: dict[str, str] = {}
    for t in points:
        prod = producers.get(t)
        if prod is None or prod.op_type not in RANGE_PRESERVING_OPS:
            continue
        src = _point_source(producers, prod.input[0], points)
        if src is not None and src != t:
            out[t] = out.get(src, src)
    return out


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the intermediate tensors ``names`` (calibration)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    return m


@dataclass(frozen=True)
class FloatNode:
    """A node ONNX Runtime still executes in float after its QDQ fusions."""

    name: str
    op_type: str


_INT_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearAdd",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearMul",
    "QLinearConcat",
    "MatMulIntegerToFloat",
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "QLinearSoftmax",
    "MatMulNBits",
}
_SHAPE_OPS = {
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Reshape",
    "Flatten",
    "Transpose",
    "Identity",
    "Slice",
    "Cast",
}


def float_nodes(model: onnx.ModelProto, path: str) -> list[FloatNode]:
    """Compute nodes of ``model`` that ONNX Runtime runs in float after optimisation.

    The session writes its optimised graph to ``path`` (basic + extended fusions, CPU EP);
    layout/shape-only ops (Reshape, Transpose, Gather, …) are not counted.
    """
    make_session(model, optimized_path=path)
    opt = onnx.load(path)
    out = []
    for node in opt.graph.node:
        if node.op_type in _INT_OPS or node.op_type in _SHAPE_OPS:
            continue
        out.append(FloatNode(node.name, node.op_type))
    return out

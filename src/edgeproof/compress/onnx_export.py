"""ONNX export and QDQ graph building (written with the ``onnx.helper`` API, our own scales).

Export: ``torch.onnx.export(dynamo=False, opset_version=17)`` with a dynamic batch axis, after
BatchNorm is folded into the preceding convolution (``torch.fx`` ``fuse``), so each PyTorch
Conv/Linear becomes exactly one ONNX ``Conv``/``Gemm``/``MatMul``.

Quantization placement (the same rule is applied to the PyTorch simulation in
:mod:`edgeproof.compress.quantize`, so the two can be compared):

* *quantizable ops*: ``Conv``, ``Gemm`` and ``MatMul`` whose weight is a constant initializer;
* *activation points* (:func:`activation_points`): the activation input of every quantizable
  op, and its output — or, when the op's only consumer is a ``Relu``, the ``Relu``'s output;
  the output of an ``Add`` / average pool whose inputs are all quantized; never the graph output
  (logits stay float). A point reached from another through ``MaxPool``/``Flatten``/… only
  reuses that point's scale (:func:`shared_points`), so ONNX Runtime runs the pool on uint8.
  Each tensor is quantized once (``QuantizeLinear`` → ``DequantizeLinear``, uint8, asymmetric,
  per tensor);
* weights: int8 symmetric per output channel (``DequantizeLinear`` with ``axis``); biases of
  ``Conv``/``Gemm`` as int32 with ``scale = s_x · s_w[c]``, zero point 0;
* weight-only modes (int8 per channel, int4 with group scales via opset-21 blocked
  ``DequantizeLinear``) also cover ``LSTM`` ``W``/``R`` weights; activations stay float. In a
  mixed 4/8-bit graph the 8-bit weights keep per-channel scales (:func:`weight_qdq`);
* INT4 integers are stored packed two per byte in ``raw_data`` (low nibble first, the ONNX
  spec's INT4 layout, :func:`pack_int4`), so a 4-bit weight takes half the bytes of an 8-bit one.

ONNX Runtime fuses ``DQ → Conv → Q`` into ``QLinearConv`` (and ``MatMul``/``Gemm`` likewise) when
it loads the graph; :func:`float_nodes` lists the nodes the *optimised* graph still runs in float.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeproof.compress.weights import as_matrix, quantize_groups, quantize_per_channel
from edgeproof.errors import InternalError
from edgeproof.runtime.ort import make_session

__all__ = [
    "INT4_ONNX_OPSET",
    "INT8_ONNX_OPSET",
    "RANGE_PRESERVING_OPS",
    "FloatNode",
    "QuantOp",
    "WeightQDQ",
    "activation_points",
    "build_qdq_model",
    "export_onnx",
    "float_nodes",
    "pack_int4",
    "quantizable_ops",
    "shared_points",
    "weight_qdq",
    "weight_qdq_bytes",
    "with_outputs",
]

INT8_ONNX_OPSET = 17
INT4_ONNX_OPSET = 21
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


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
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
    cons = _consumers(model)
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


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    """An initializer holding ``arr`` (raw little-endian bytes)."""
    # np.ascontiguousarray would turn a 0-d scalar into shape (1,): keep scalars scalar.
    return numpy_helper.from_array(np.array(arr, copy=True, order="C"), name)


def pack_int4(values: np.ndarray) -> bytes:
    """Signed 4-bit integers packed two per byte, element ``2i`` in the low nibble and ``2i+1``
    in the high nibble (an odd count pads the last high nibble with 0): the ``raw_data`` layout
    of ``TensorProto.INT4`` in the ONNX spec (IR version 10)."""
    v = np.asarray(values).astype(np.int64).ravel()
    if v.size and (v.min() < -8 or v.max() > 7):
        raise InternalError(f"int4 values must lie in [-8, 7], got [{v.min()}, {v.max()}]")
    nib = (v & 0x0F).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def _int_init(name: str, arr: np.ndarray, bits: int) -> onnx.TensorProto:
    """An int8 initializer, or an INT4 one with its values packed into ``raw_data``."""
    if bits > 4:  # 8-bit, or 7-bit (reduced range) values stored as int8
        return _init(name, np.asarray(arr).astype(np.int8))
    t = onnx.TensorProto()
    t.name = name
    t.data_type = TensorProto.INT4
    t.dims.extend(int(d) for d in np.shape(arr))
    t.raw_data = pack_int4(arr)
    return t


@dataclass(frozen=True)
class WeightQDQ:
    """What replaces one float weight initializer in the QDQ graph.

    ``initializers`` (integers ``<name>__q``, scales, zero points, maybe a shape) and ``nodes``
    (a ``DequantizeLinear``, maybe followed by a ``Reshape``/``Transpose``) recreate the tensor
    ``<name>``; ``channel_scales`` are the per-output-channel scales (``None`` when grouped).
    """

    initializers: tuple[onnx.TensorProto, ...]
    nodes: tuple[onnx.NodeProto, ...]
    channel_scales: np.ndarray | None

    @property
    def nbytes(self) -> int:
        """Serialised bytes these add to a ``GraphProto`` (each one a length-delimited field)."""
        sizes = [t.ByteSize() for t in self.initializers] + [n.ByteSize() for n in self.nodes]
        return sum(_field_bytes(n) for n in sizes)


def _field_bytes(size: int) -> int:
    """A length-delimited protobuf field with a one-byte tag: tag + varint(size) + size."""
    n = 1
    while size >= 0x80 << (7 * (n - 1)):
        n += 1
    return 1 + n + size


def weight_qdq(
    name: str, w: np.ndarray, out_axis: int, bits: int, group_size: int | None = None
) -> WeightQDQ:
    """Quantize the float weight ``w`` (initializer ``name``) to ``bits`` (8 or 4).

    8-bit weights always get symmetric per-output-channel scales (``DequantizeLinear`` with
    ``axis=out_axis``, the uniform int8 layout). 4-bit weights get per-channel scales when
    ``group_size`` is None, else per-group scales over ``group_size`` consecutive inputs of the
    ``(out, reduce)`` matrix (opset-21 blocked ``DequantizeLinear``) followed by a ``Reshape``
    (or ``Transpose`` for a ``(in, out)`` MatMul weight) back to ``w``'s layout. INT4 integers
    and zero points are stored packed, two per byte, in ``raw_data``.
    """
    w = np.asarray(w, dtype=np.float32)
    q_name, s_name, z_name = f"{name}__q", f"{name}__scale", f"{name}__zp"
    inits: tuple[onnx.TensorProto, ...]
    if bits > 4 or group_size is None:
        q, s = quantize_per_channel(w, out_axis, bits)
        inits = (
            _int_init(q_name, q, bits),
            _init(s_name, s),
            _int_init(z_name, np.zeros(s.shape, np.int8), bits),
        )
        dq = helper.make_node(
            "DequantizeLinear", [q_name, s_name, z_name], [name], name=f"{name}__DQ", axis=out_axis
        )
        return WeightQDQ(inits, (dq,), s)
    mat = as_matrix(w, out_axis)
    q, s = quantize_groups(mat, group_size, bits)
    deq = f"{name}__mat"
    nodes = [
        helper.make_node(
            "DequantizeLinear",
            [q_name, s_name, z_name],
            [deq],
            name=f"{name}__DQ",
            axis=1,
            block_size=group_size,
        )
    ]
    extra: list[onnx.TensorProto] = []
    if out_axis == 0 or all(d == 1 for d in w.shape[:out_axis]):
        extra.append(_init(f"{name}__shape", np.array(w.shape, np.int64)))
        nodes.append(
            helper.make_node("Reshape", [deq, f"{name}__shape"], [name], name=f"{name}__Reshape")
        )
    elif w.ndim == 2:
        nodes.append(helper.make_node("Transpose", [deq], [name], name=f"{name}__T", perm=[1, 0]))
    else:
        raise InternalError(f"cannot group-quantize {name} with shape {w.shape}")
    inits = (
        _int_init(q_name, q, bits),
        _init(s_name, s),
        _int_init(z_name, np.zeros(s.shape, np.int8), bits),
        *extra,
    )
    return WeightQDQ(inits, tuple(nodes), None)


def weight_qdq_bytes(
    name: str, w: np.ndarray, out_axis: int, bits: int, group_size: int | None = None
) -> int:
    """Serialised bytes :func:`build_qdq_model` spends on weight ``name`` (:func:`weight_qdq`)."""
    return weight_qdq(name, w, out_axis, bits, group_size).nbytes


def build_qdq_model(
    model: onnx.ModelProto,
    *,
    activation_ranges: Mapping[str, tuple[float, float]] | None,
    weight_bits: Mapping[str, int],
    group_size: int | None = None,
    extra_weights: Mapping[str, int] | None = None,
    opset: int | None = None,
) -> onnx.ModelProto:
    """The QDQ graph of ``model``.

    Args:
        activation_ranges: tensor name → ``(lo, hi)`` for every activation point (static int8);
            ``None`` for weight-only quantization.
        weight_bits: quantizable node name → bits (8 or 4); nodes not listed stay float.
        group_size: group (block) size along the reduction axis of 4-bit weights, None for
            per-channel 4-bit scales; 8-bit weights are always per output channel
            (see :func:`weight_qdq`).
        extra_weights: other initializers to quantize weight-only (e.g. LSTM ``W``/``R``) →
            bits; their output-channel axis is 1 (ONNX LSTM ``(dirs, 4H, in)``).
        opset: the opset to convert the graph to (never lowered); any 4-bit weight needs
            :data:`INT4_ONNX_OPSET` (INT4 and blocked ``DequantizeLinear``) and gets it anyway.
    """
    from edgeproof.compress.calibrate import activation_qparams

    target = max(
        opset or 0,
        INT4_ONNX_OPSET
        if any(b == 4 for b in [*weight_bits.values(), *(extra_weights or {}).values()])
        else 0,
    )
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if _opset(m) < target:
        from onnx import version_converter

        m = version_converter.convert_version(m, target)
        # The converter stores inferred shapes of every intermediate tensor (metadata only,
        # ~2.7 KB for a ResNet-20): keep the source's value_info instead.
        del m.graph.value_info[:]
        m.graph.value_info.extend(model.graph.value_info)
    needs21 = _opset(m) >= INT4_ONNX_OPSET
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    ops = {op.node: op for op in quantizable_ops(m)}
    new_nodes: list[onnx.NodeProto] = []
    act_scale: dict[str, float] = {}

    # Activations: rename the producer's output, insert Q -> DQ producing the original name.
    if activation_ranges is not None:
        producers = {o: n for n in g.node for o in n.output}
        graph_inputs = {i.name for i in g.input}
        cons = _consumers(m)
        for t, (lo, hi) in activation_ranges.items():
            scale, zp = activation_qparams(lo, hi)
            act_scale[t] = scale
            s_name, z_name = f"{t}__act_scale", f"{t}__act_zp"
            g.initializer.append(_init(s_name, np.array(scale, np.float32)))
            g.initializer.append(_init(z_name, np.array(zp, np.uint8)))
            if t in producers:  # producer now writes src; DQ produces the original name
                src, dst = f"{t}__f32", t
                prod = producers[t]
                prod.output[:] = [src if o == t else o for o in prod.output]
            elif t in graph_inputs:  # the input feeds Q; consumers read the DQ output
                src, dst = t, f"{t}__dq"
                for node in cons.get(t, []):
                    node.input[:] = [dst if i == t else i for i in node.input]
            else:
                raise InternalError(f"activation point {t!r} is neither produced nor a graph input")
            new_nodes.append(
                helper.make_node(
                    "QuantizeLinear", [src, s_name, z_name], [f"{t}__q"], name=f"{t}__Q"
                )
            )
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear", [f"{t}__q", s_name, z_name], [dst], name=f"{t}__DQ"
                )
            )

    def quantize_weight(name: str, out_axis: int, bits: int) -> np.ndarray | None:
        """Replace initializer ``name`` by integers + DQ producing ``name``; returns the
        per-channel scales (None for grouped 4-bit)."""
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        _remove_init(g, name)
        part = weight_qdq(name, w, out_axis, bits, group_size)
        g.initializer.extend(part.initializers)
        new_nodes.extend(part.nodes)
        return part.channel_scales

    for node_name, bits in weight_bits.items():
        op = ops[node_name]
        s_w = quantize_weight(op.weight, op.out_axis, bits)
        if op.bias is not None and activation_ranges is not None and s_w is not None:
            s_x = act_scale.get(op.activation)
            if s_x is not None:
                b = numpy_helper.to_array(inits[op.bias]).astype(np.float32)
                bs = (np.float32(s_x) * s_w).astype(np.float32)
                qb = np.round(b / bs).astype(np.int32)
                _remove_init(g, op.bias)
                g.initializer.append(_init(f"{op.bias}__q", qb))
                g.initializer.append(_init(f"{op.bias}__scale", bs))
                g.initializer.append(_init(f"{op.bias}__zp", np.zeros_like(qb)))
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{op.bias}__q", f"{op.bias}__scale", f"{op.bias}__zp"],
                        [op.bias],
                        name=f"{op.bias}__DQ",
                        axis=0,
                    )
                )
    for name, bits in (extra_weights or {}).items():
        quantize_weight(name, 1, bits)

    nodes = list(g.node) + new_nodes
    del g.node[:]
    g.node.extend(_toposort(nodes, {i.name for i in g.initializer} | {i.name for i in g.input}))
    if needs21:
        m.ir_version = max(m.ir_version, 10)
    return m


def _opset(m: onnx.ModelProto) -> int:
    return max((i.version for i in m.opset_import if i.domain in ("", "ai.onnx")), default=0)


def _remove_init(g: onnx.GraphProto, name: str) -> None:
    for i, t in enumerate(g.initializer):
        if t.name == name:
            del g.initializer[i]
            return


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    have = set(available) | {""}
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in have})[:5]
            raise InternalError(f"QDQ graph has unresolved inputs {missing}")
        pending = rest
    return out


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

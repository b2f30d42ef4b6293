"""The QDQ graph: quantized weights, biases and activations written into an fp32 ONNX graph.

Written with the ``onnx.helper`` API and edgeproof's own scales (:mod:`edgeproof.compress.weights`,
:func:`edgeproof.compress.calibrate.activation_qparams`), on the placement of
:mod:`edgeproof.compress.onnx_export`:

* weights: int8 symmetric per output channel (``DequantizeLinear`` with ``axis``); biases of
  ``Conv``/``Gemm`` as int32 with ``scale = s_x · s_w[c]``, zero point 0;
* activations: ``QuantizeLinear`` → ``DequantizeLinear`` (uint8, asymmetric, per tensor) at each
  activation point;
* weight-only modes (int8 per channel, int4 with group scales via opset-21 blocked
  ``DequantizeLinear``) also cover ``LSTM`` ``W``/``R`` weights; activations stay float. In a
  mixed 4/8-bit graph the 8-bit weights keep per-channel scales (:func:`weight_qdq`);
* INT4 integers are stored packed two per byte in ``raw_data`` (low nibble first, the ONNX
  spec's INT4 layout, :func:`pack_int4`), so a 4-bit weight takes half the bytes of an 8-bit one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeproof.compress.calibrate import activation_qparams
from edgeproof.compress.onnx_export import QuantOp, consumers, quantizable_ops
from edgeproof.compress.weights import as_matrix, quantize_groups, quantize_per_channel
from edgeproof.errors import InternalError

__all__ = [
    "INT4_ONNX_OPSET",
    "INT8_ONNX_OPSET",
    "WeightQDQ",
    "build_qdq_model",
    "pack_int4",
    "weight_qdq",
    "weight_qdq_bytes",
]

INT8_ONNX_OPSET = 17
INT4_ONNX_OPSET = 21


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
    """The QDQ graph of ``model`` (a copy; ``model`` is not changed).

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
    four = any(b == 4 for b in [*weight_bits.values(), *(extra_weights or {}).values()])
    m = _converted(model, max(opset or 0, INT4_ONNX_OPSET if four else 0))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    ops = {op.node: op for op in quantizable_ops(m)}
    new_nodes: list[onnx.NodeProto] = []
    act_scale: dict[str, float] = {}
    if activation_ranges is not None:
        act_scale = _quantize_activations(m, activation_ranges, new_nodes)
    for node_name, bits in weight_bits.items():
        op = ops[node_name]
        s_w = _quantize_weight(g, inits, op.weight, op.out_axis, bits, group_size, new_nodes)
        s_x = act_scale.get(op.activation)
        if op.bias is not None and s_w is not None and s_x is not None:
            _quantize_bias(g, inits, op, s_x, s_w, new_nodes)
    for name, bits in (extra_weights or {}).items():
        _quantize_weight(g, inits, name, 1, bits, group_size, new_nodes)
    nodes = list(g.node) + new_nodes
    del g.node[:]
    g.node.extend(_toposort(nodes, {i.name for i in g.initializer} | {i.name for i in g.input}))
    if _opset(m) >= INT4_ONNX_OPSET:
        m.ir_version = max(m.ir_version, 10)
    return m


def _converted(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """A copy of ``model`` at opset ``target`` or above (never lowered)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if _opset(m) < target:
        from onnx import version_converter

        m = version_converter.convert_version(m, target)
        # The converter stores inferred shapes of every intermediate tensor (metadata only,
        # ~2.7 KB for a ResNet-20): keep the source's value_info instead.
        del m.graph.value_info[:]
        m.graph.value_info.extend(model.graph.value_info)
    return m


def _quantize_activations(
    m: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    new_nodes: list[onnx.NodeProto],
) -> dict[str, float]:
    """Insert ``Q → DQ`` at every activation point (the producer's output is renamed, the DQ
    produces the original name; a graph input feeds Q and its consumers read the DQ output).
    Returns point → scale."""
    g = m.graph
    producers = {o: n for n in g.node for o in n.output}
    graph_inputs = {i.name for i in g.input}
    cons = consumers(m)
    act_scale: dict[str, float] = {}
    for t, (lo, hi) in ranges.items():
        scale, zp = activation_qparams(lo, hi)
        act_scale[t] = scale
        s_name, z_name = f"{t}__act_scale", f"{t}__act_zp"
        g.initializer.append(_init(s_name, np.array(scale, np.float32)))
        g.initializer.append(_init(z_name, np.array(zp, np.uint8)))
        if t in producers:
            src, dst = f"{t}__f32", t
            prod = producers[t]
            prod.output[:] = [src if o == t else o for o in prod.output]
        elif t in graph_inputs:
            src, dst = t, f"{t}__dq"
            for node in cons.get(t, []):
                node.input[:] = [dst if i == t else i for i in node.input]
        else:
            raise InternalError(f"activation point {t!r} is neither produced nor a graph input")
        new_nodes.append(
            helper.make_node("QuantizeLinear", [src, s_name, z_name], [f"{t}__q"], name=f"{t}__Q")
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear", [f"{t}__q", s_name, z_name], [dst], name=f"{t}__DQ"
            )
        )
    return act_scale


def _quantize_weight(
    g: onnx.GraphProto,
    inits: Mapping[str, onnx.TensorProto],
    name: str,
    out_axis: int,
    bits: int,
    group_size: int | None,
    new_nodes: list[onnx.NodeProto],
) -> np.ndarray | None:
    """Replace initializer ``name`` by integers + DQ producing ``name``; returns the
    per-channel scales (None for grouped 4-bit)."""
    w = numpy_helper.to_array(inits[name]).astype(np.float32)
    _remove_init(g, name)
    part = weight_qdq(name, w, out_axis, bits, group_size)
    g.initializer.extend(part.initializers)
    new_nodes.extend(part.nodes)
    return part.channel_scales


def _quantize_bias(
    g: onnx.GraphProto,
    inits: Mapping[str, onnx.TensorProto],
    op: QuantOp,
    s_x: float,
    s_w: np.ndarray,
    new_nodes: list[onnx.NodeProto],
) -> None:
    """The bias of ``op`` as int32 with scale ``s_x · s_w[c]`` and zero point 0."""
    assert op.bias is not None
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

"""Post-training quantization: PyTorch fake-quant simulation + real ONNX Runtime QDQ execution.

Schemes (:class:`QuantConfig`):

* ``int8`` — static W8A8: weights int8 symmetric per output channel, activations uint8 asymmetric
  per tensor with ranges from :mod:`edgeproof.compress.calibrate` (``minmax``, ``percentile``,
  ``entropy``, ``mse``), biases int32. Placement rule: see :mod:`edgeproof.compress.onnx_export`.
* ``w8`` / ``w4`` — weight-only: int8 per channel / int4 symmetric with per-group scales (group of
  ``group_size`` consecutive inputs), activations float; also covers LSTM weights.
* mixed precision: ``bits_per_layer`` maps quantizable layers to 4 or 8 (weight-only; 4-bit
  layers with group scales, 8-bit layers per channel as in ``w8``), see
  :mod:`edgeproof.compress.mixed`.

The same model is quantized twice, independently: in PyTorch (BatchNorm folded with
``torch.fx.experimental.optimization.fuse``, fake-quant modules inserted with ``torch.fx`` at the
same activation points, weights replaced by their dequantized values, ranges calibrated on the
PyTorch activations) and as an ONNX QDQ graph (ranges calibrated on ONNX Runtime's intermediate
tensors with the same estimator). :class:`Parity` compares the two on the evaluation data: top-1
agreement and the largest logit difference.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from torch import fx, nn

from edgeproof.compress.calibrate import (
    CALIBRATION_METHODS,
    ActivationRange,
    RangeObserver,
    activation_qparams,
)
from edgeproof.compress.onnx_export import (
    INT4_ONNX_OPSET,
    FloatNode,
    activation_points,
    build_qdq_model,
    export_onnx,
    float_nodes,
    make_session,
    quantizable_ops,
    run_session,
    with_outputs,
)
from edgeproof.compress.weights import fake_quantize_weight
from edgeproof.errors import OptionError, SpecError

__all__ = [
    "SCHEMES",
    "ActFakeQuant",
    "Parity",
    "QuantConfig",
    "QuantizedModel",
    "UnquantizableLayer",
    "fold_batchnorm",
    "quantize",
    "simulate",
]

Scheme = Literal["int8", "w8", "w4", "mixed"]
SCHEMES: tuple[str, ...] = ("int8", "w8", "w4", "mixed")
_QMODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize.

    Attributes:
        scheme: ``int8`` (W8A8 static), ``w8``/``w4`` (weight-only) or ``mixed``.
        calibration: activation range method (``int8`` only).
        percentile: the percentile for ``calibration="percentile"``.
        group_size: group size of int4 scales.
        bits_per_layer: for ``mixed``: PyTorch module name → 4 or 8 (others stay 8).
        calibration_samples: at most this many calibration records are used.
    """

    scheme: Scheme = "int8"
    calibration: str = "percentile"
    percentile: float = 99.99
    group_size: int = 32
    bits_per_layer: Mapping[str, int] = field(default_factory=dict)
    calibration_samples: int = 256

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise OptionError(
                "--scheme", f"unknown scheme {self.scheme!r}", f"use one of {', '.join(SCHEMES)}"
            )
        if self.calibration not in CALIBRATION_METHODS:
            raise OptionError(
                "--calibration",
                f"unknown method {self.calibration!r}",
                f"use one of {', '.join(CALIBRATION_METHODS)}",
            )
        if self.group_size < 1:
            raise OptionError("--group-size", f"must be >= 1, got {self.group_size}")
        for name, b in self.bits_per_layer.items():
            if b not in (4, 8):
                raise OptionError("bits_per_layer", f"layer {name!r}: {b} bits", "use 4 or 8")

    @property
    def label(self) -> str:
        if self.scheme == "int8":
            return f"int8[{self.calibration}]"
        if self.scheme == "w4":
            return f"w4g{self.group_size}"
        if self.scheme == "mixed":
            n4 = sum(1 for b in self.bits_per_layer.values() if b == 4)
            return f"mixed[{n4}x4bit]"
        return self.scheme


@dataclass(frozen=True)
class Parity:
    """PyTorch simulation vs ONNX Runtime on the same inputs."""

    top1_agreement: float
    max_abs_logit_diff: float
    samples: int


@dataclass(frozen=True)
class UnquantizableLayer:
    """A layer left in float and why."""

    name: str
    kind: str
    reason: str


@dataclass
class QuantizedModel:
    """The result of :func:`quantize`: the simulated module, the QDQ graph and their agreement."""

    config: QuantConfig
    sim: nn.Module
    onnx_model: onnx.ModelProto
    ranges: dict[str, ActivationRange]
    float_nodes: list[FloatNode]
    unquantized: list[UnquantizableLayer]
    parity: Parity | None = None

    def onnx_bytes(self) -> bytes:
        return self.onnx_model.SerializeToString()


class ActFakeQuant(nn.Module):
    """uint8 asymmetric fake quantization of one activation; observes while ``observing``."""

    def __init__(self, method: str, percentile: float) -> None:
        super().__init__()
        self.observer: RangeObserver | None = RangeObserver(method, percentile=percentile)
        self.scale = 1.0
        self.zero_point = 0
        self.range: ActivationRange | None = None

    def freeze(self) -> None:
        assert self.observer is not None
        self.range = self.observer.range()
        self.scale, self.zero_point = activation_qparams(self.range.lo, self.range.hi)
        self.observer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x.detach().cpu().numpy())
            return x
        s = torch.tensor(self.scale, dtype=x.dtype)
        q = torch.clamp(torch.round(x / s) + self.zero_point, 0, 255)
        return (q - self.zero_point) * s


def _not(node: fx.Node) -> Callable[[fx.Node], bool]:
    def keep(user: fx.Node) -> bool:
        return user is not node

    return keep


def _weight(mod: nn.Module) -> torch.Tensor:
    w = mod.weight
    assert isinstance(w, torch.Tensor)
    return w


def fold_batchnorm(module: nn.Module) -> fx.GraphModule:
    """A copy of ``module`` as a ``torch.fx`` graph with BatchNorm folded into Conv/Linear."""
    from torch.fx.experimental.optimization import fuse

    m = copy.deepcopy(module).eval()
    try:
        fused = fuse(m)
    except Exception as exc:  # torch.fx raises many types for untraceable code
        raise SpecError(
            f"the model cannot be traced with torch.fx ({type(exc).__name__}: {exc}); compression "
            "needs a traceable forward (no data-dependent control flow)"
        ) from exc
    assert isinstance(fused, fx.GraphModule)
    return fused


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), nn.ReLU)
    return node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)


def _weight_layers(gm: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in gm.named_modules() if isinstance(m, (*_QMODULES, nn.LSTM))]


def simulate(
    module: nn.Module, x_calib: np.ndarray, config: QuantConfig
) -> tuple[fx.GraphModule, dict[str, ActivationRange]]:
    """The PyTorch fake-quant simulation of ``config`` calibrated on ``x_calib``."""
    gm = fold_batchnorm(module)
    ranges: dict[str, ActivationRange] = {}
    fq_by_point: dict[str, ActFakeQuant] = {}
    qnodes = [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), _QMODULES)
    ]
    if config.scheme == "int8":
        points: list[fx.Node] = []
        for n in qnodes:
            out = n
            users = list(n.users)
            if len(users) == 1 and _is_relu(gm, users[0]):
                out = users[0]
            act = n.args[0]
            assert isinstance(act, fx.Node)
            for p in (act, out):
                if p not in points:
                    points.append(p)
        for i, p in enumerate(points):
            fq = ActFakeQuant(config.calibration, config.percentile)
            name = f"actq_{i}"
            gm.add_submodule(name, fq)
            fq_by_point[p.name] = fq
            with gm.graph.inserting_after(p):
                newn = gm.graph.call_module(name, (p,))
            p.replace_all_uses_with(newn, delete_user_cb=_not(newn))
        gm.recompile()
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x_calib, np.float32))
            for i in range(0, xt.shape[0], 128):
                gm(xt[i : i + 128])
        for key, fq in fq_by_point.items():
            fq.freeze()
            assert fq.range is not None
            ranges[key] = fq.range
    # Weights (and int8 biases) replaced by their dequantized values.
    input_scale: dict[str, float] = {}
    if config.scheme == "int8":
        for n in qnodes:
            act = n.args[0]
            # the fake-quant inserted after `act` now feeds this node
            assert isinstance(act, fx.Node)
            if act.op == "call_module" and str(act.target).startswith("actq_"):
                fq_mod = gm.get_submodule(str(act.target))
                assert isinstance(fq_mod, ActFakeQuant)
                input_scale[str(n.target)] = fq_mod.scale
    with torch.no_grad():
        for name, mod in _weight_layers(gm):
            bits = _bits_for(name, mod, config)
            if bits is None:
                continue
            group = config.group_size if bits == 4 else None
            if isinstance(mod, nn.LSTM):
                for pname, p in mod.named_parameters():
                    if pname.startswith("weight_"):
                        p.copy_(torch.from_numpy(fake_quantize_weight(p.numpy(), 0, bits, group)))
                continue
            w = _weight(mod).detach().numpy()
            _weight(mod).copy_(torch.from_numpy(fake_quantize_weight(w, 0, bits, group)))
            bias = getattr(mod, "bias", None)
            if config.scheme == "int8" and isinstance(bias, torch.Tensor) and name in input_scale:
                from edgeproof.compress.weights import quantize_per_channel

                _, s_w = quantize_per_channel(w, 0, 8)
                bs = (np.float32(input_scale[name]) * s_w).astype(np.float32)
                b = bias.detach().numpy()
                bias.copy_(torch.from_numpy((np.round(b / bs) * bs).astype(np.float32)))
    return gm, ranges


def _bits_for(name: str, mod: nn.Module, config: QuantConfig) -> int | None:
    if config.scheme == "int8":
        return None if isinstance(mod, nn.LSTM) else 8
    if config.scheme == "w8":
        return 8
    if config.scheme == "w4":
        return 4
    return config.bits_per_layer.get(name, 8)


def _check_calibration(x: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise SpecError(
            f"--data: calibration data has sample shape {tuple(x.shape[1:])} but the model expects "
            f"{tuple(input_shape)}; pass calibration records shaped like the model input"
        )
    if x.shape[0] == 0:
        raise SpecError("--data: calibration data is empty; pass at least one record")
    return x


def quantize(
    module: nn.Module,
    input_shape: Sequence[int],
    x_calib: np.ndarray,
    config: QuantConfig,
    *,
    x_eval: np.ndarray | None = None,
    threads: int = 1,
) -> QuantizedModel:
    """Quantize ``module`` by ``config``: PyTorch simulation, ONNX QDQ graph, parity on ``x_eval``.

    Raises:
        SpecError: if ``x_calib`` does not have the model's sample shape (message names --data).
    """
    x_calib = _check_calibration(x_calib, input_shape)[: config.calibration_samples]
    sim, _ = simulate(module, x_calib, config)
    folded = fold_batchnorm(module)
    fp32 = export_onnx(folded, input_shape)
    ops = quantizable_ops(fp32)
    # Map PyTorch module names to ONNX nodes by order (BN folded: one node per Conv/Linear).
    qmods = [(n, m) for n, m in folded.named_modules() if isinstance(m, _QMODULES)]
    unquantized: list[UnquantizableLayer] = []
    name_of_node: dict[str, str] = {}
    if len(qmods) == len(ops):
        name_of_node = {op.node: qmods[i][0] for i, op in enumerate(ops)}
    lstm_weights: dict[str, int] = {}
    lstm_bits = {"int8": None, "w8": 8, "w4": 4}.get(config.scheme)
    recurrent = [n for n in fp32.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    lstm_name = _lstm_module_name(folded)
    for k, node in enumerate(recurrent):
        # The exporter names W/R "onnx::LSTM_<n>"; use the PyTorch parameter names instead.
        for slot, param in ((1, f"weight_ih_l{k}"), (2, f"weight_hh_l{k}")):
            if len(node.input) > slot:
                _rename_initializer(fp32, node.input[slot], f"{lstm_name}.{param}")
        if config.scheme == "mixed":
            lstm_bits = config.bits_per_layer.get(lstm_name, 8)
        if lstm_bits is None:
            unquantized.append(
                UnquantizableLayer(
                    node.name,
                    node.op_type,
                    "recurrent cell: no static-int8 QDQ kernel in ONNX Runtime; runs in float "
                    "(use the w8/w4 weight-only schemes to quantize its weights)",
                )
            )
        else:
            for w in node.input[1:3]:
                lstm_weights[w] = lstm_bits
    ranges: dict[str, ActivationRange] = {}
    if config.scheme == "int8":
        points = activation_points(fp32, ops)
        ranges = _calibrate_onnx(fp32, points, x_calib, config)
        weight_bits = {op.node: 8 for op in ops}
        qdq = build_qdq_model(
            fp32,
            activation_ranges={k: (r.lo, r.hi) for k, r in ranges.items()},
            weight_bits=weight_bits,
        )
    else:
        if config.scheme == "mixed":
            weight_bits = {
                op.node: config.bits_per_layer.get(name_of_node.get(op.node, ""), 8) for op in ops
            }
        else:
            weight_bits = {op.node: (4 if config.scheme == "w4" else 8) for op in ops}
        # 4-bit weights get group scales, 8-bit ones per-channel scales (as `simulate` does);
        # a mixed graph is opset 21 whatever its plan, so its size is additive over layers.
        qdq = build_qdq_model(
            fp32,
            activation_ranges=None,
            weight_bits=weight_bits,
            group_size=config.group_size,
            extra_weights=lstm_weights,
            opset=INT4_ONNX_OPSET if config.scheme == "mixed" else None,
        )
    with tempfile.TemporaryDirectory() as tmp:
        fnodes = float_nodes(qdq, str(Path(tmp) / "opt.onnx"))
    result = QuantizedModel(config, sim, qdq, ranges, fnodes, unquantized)
    if x_eval is not None:
        result.parity = parity(sim, qdq, x_eval, threads=threads)
    return result


def _rename_initializer(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename initializer ``old`` to ``new`` (and every use), unless ``new`` is already taken."""
    g = model.graph
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    if new in taken or old not in {t.name for t in g.initializer}:
        return
    for t in g.initializer:
        if t.name == old:
            t.name = new
    for n in g.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def _lstm_module_name(m: nn.Module) -> str:
    for n, mod in m.named_modules():
        if isinstance(mod, nn.LSTM):
            return n
    return "lstm"


def _calibrate_onnx(
    model: onnx.ModelProto, points: Sequence[str], x: np.ndarray, config: QuantConfig
) -> dict[str, ActivationRange]:
    probe = with_outputs(model, points)
    sess = make_session(probe, disable_optimizations=True)
    names = [o.name for o in sess.get_outputs()]  # type: ignore[attr-defined]
    observers = {p: RangeObserver(config.calibration, percentile=config.percentile) for p in points}
    for i in range(0, x.shape[0], 128):
        outs = run_session(sess, x[i : i + 128], batch_size=128)
        for n, arr in zip(names, outs):
            if n in observers:
                observers[n].observe(arr)
    return {p: o.range() for p, o in observers.items()}


def parity(sim: nn.Module, qdq: onnx.ModelProto, x: np.ndarray, *, threads: int = 1) -> Parity:
    """Top-1 agreement and max |logit difference| between the simulation and ONNX Runtime."""
    with torch.no_grad():
        a = sim(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
    sess = make_session(qdq, threads=threads)
    b = run_session(sess, x)[0]
    agree = float(np.mean(a.argmax(1) == b.argmax(1))) if len(x) else 1.0
    return Parity(agree, float(np.max(np.abs(a - b))) if len(x) else 0.0, len(x))

"""Post-training quantization: PyTorch fake-quant simulation + real ONNX Runtime QDQ execution.

Schemes (:class:`QuantConfig`):

* ``int8`` — static W8A8: weights int8 symmetric per output channel, activations uint8 asymmetric
  per tensor with ranges from :mod:`edgeproof.compress.calibrate` (``minmax``, ``percentile``,
  ``entropy``, ``mse``, or ``auto``: the one whose simulation has the smallest KL to fp32 on the
  calibration records, :func:`choose_calibration`), biases int32. Placement rule: see
  :mod:`edgeproof.compress.onnx_export`.
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
import operator
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    quantizable_ops,
    shared_points,
    with_outputs,
)
from edgeproof.compress.weights import fake_quantize_weight
from edgeproof.errors import OptionError, SpecError, param
from edgeproof.runtime.cpu import has_vnni
from edgeproof.runtime.ort import make_session, run_session

__all__ = [
    "QUANT_CALIBRATIONS",
    "SCHEMES",
    "ActFakeQuant",
    "CalibrationChoice",
    "Parity",
    "QuantConfig",
    "QuantizedModel",
    "UnquantizableLayer",
    "choose_calibration",
    "fold_batchnorm",
    "quantize",
    "simulate",
]

Scheme = Literal["int8", "w8", "w4", "mixed"]
#: Calibration choices of :class:`QuantConfig`: the range estimators, or ``auto``.
QUANT_CALIBRATIONS: tuple[str, ...] = ("auto", *CALIBRATION_METHODS)
#: ``auto``'s tie-break order (equal KL on the calibration records).
_AUTO_PREFERENCE: tuple[str, ...] = ("percentile", "mse", "entropy", "minmax")
SCHEMES: tuple[str, ...] = ("int8", "w8", "w4", "mixed")
_QMODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize.

    Attributes:
        scheme: ``int8`` (W8A8 static), ``w8``/``w4`` (weight-only) or ``mixed``.
        calibration: activation range method (``int8`` only): one of
            :data:`~edgeproof.compress.calibrate.CALIBRATION_METHODS`, or ``auto`` (the default):
            the method whose simulation is closest to fp32 on the calibration records
            (:func:`choose_calibration`).
        percentile: the percentile for ``calibration="percentile"``.
        group_size: group size of int4 scales.
        bits_per_layer: for ``mixed``: PyTorch module name → 4 or 8 (others stay 8).
        calibration_samples: at most this many calibration records are used.
        reduce_range: ``int8`` only: quantize weights to 7 bits (``[-63, 63]``) instead of 8, ONNX
            Runtime's ``reduce_range``. Its x86 uint8×int8 kernels (``VPMADDUBSW``) saturate
            the 16-bit sum of two products on CPUs without VNNI, so full-range weights can
            change the integer graph's outputs by whole logits; with 7-bit weights the sum
            cannot overflow. ``None`` (the default) decides by the CPU this runs on
            (:func:`int8_needs_reduced_range`).
    """

    scheme: Scheme = "int8"
    calibration: str = "auto"
    percentile: float = 99.99
    group_size: int = 32
    bits_per_layer: Mapping[str, int] = field(default_factory=dict)
    calibration_samples: int = 256
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise OptionError(
                "scheme", f"unknown scheme {self.scheme!r}", f"use one of {', '.join(SCHEMES)}"
            )
        if self.calibration not in QUANT_CALIBRATIONS:
            raise OptionError(
                "calibration",
                f"unknown method {self.calibration!r}",
                f"use one of {', '.join(QUANT_CALIBRATIONS)}",
            )
        if self.group_size < 1:
            raise OptionError("group_size", f"must be >= 1, got {self.group_size}")
        for name, b in self.bits_per_layer.items():
            if b not in (4, 8):
                raise OptionError("bits_per_layer", f"layer {name!r}: {b} bits", "use 4 or 8")

    @property
    def int8_weight_bits(self) -> int:
        """Weight bits of the static ``int8`` scheme: 7 with a reduced range, else 8."""
        reduce = int8_needs_reduced_range() if self.reduce_range is None else self.reduce_range
        return 7 if reduce else 8

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


@dataclass(frozen=True)
class CalibrationChoice:
    """How ``calibration="auto"`` chose: per method, the mean ``KL(p_fp32 ‖ p_q)`` (nats) of its
    PyTorch simulation over the calibration records, and the method with the smallest."""

    chosen: str
    kl: Mapping[str, float]
    samples: int


@dataclass
class QuantizedModel:
    """The result of :func:`quantize`: the simulated module, the QDQ graph and their agreement.

    ``config`` is the configuration applied (``auto`` resolved to the chosen method, which
    ``calibration_choice`` explains).
    """

    config: QuantConfig
    sim: nn.Module
    onnx_model: onnx.ModelProto
    ranges: dict[str, ActivationRange]
    float_nodes: list[FloatNode]
    unquantized: list[UnquantizableLayer]
    parity: Parity | None = None
    calibration_choice: CalibrationChoice | None = None

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


_RANGE_PRESERVING_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Identity)
_RANGE_PRESERVING_FUNCTIONS = (
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.transpose,
    torch.permute,
    nn.functional.max_pool1d,
    nn.functional.max_pool2d,
)
_RANGE_PRESERVING_METHODS = (
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "squeeze",
    "unsqueeze",
)
_POOL_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d)
_POOL_FUNCTIONS = (
    nn.functional.adaptive_avg_pool1d,
    nn.functional.adaptive_avg_pool2d,
    nn.functional.avg_pool1d,
    nn.functional.avg_pool2d,
)


def _range_preserving(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _RANGE_PRESERVING_MODULES)
    if node.op == "call_function":
        return node.target in _RANGE_PRESERVING_FUNCTIONS
    return node.op == "call_method" and node.target in _RANGE_PRESERVING_METHODS


def _int_capable_inputs(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node] | None:
    """The data inputs of an elementwise add of two tensors or an average pool, else None."""
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        args = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        return args if len(args) == 2 else None
    is_pool = (
        node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), _POOL_MODULES)
    ) or (node.op == "call_function" and node.target in _POOL_FUNCTIONS)
    if is_pool and node.args and isinstance(node.args[0], fx.Node):
        return [node.args[0]]
    return None


def _fx_points(
    gm: fx.GraphModule, qnodes: Sequence[fx.Node]
) -> tuple[list[fx.Node], dict[str, str]]:
    """The activation points of :func:`edgeproof.compress.onnx_export.activation_points` on the
    ``torch.fx`` graph, and the shared ones (point name → point whose range it reuses)."""

    def is_output(n: fx.Node) -> bool:
        return any(u.op == "output" for u in n.users)

    def extended(n: fx.Node) -> fx.Node:
        users = list(n.users)
        if len(users) == 1 and _is_relu(gm, users[0]) and not is_output(n):
            return users[0]
        return n

    points: list[fx.Node] = []

    def add(n: fx.Node) -> bool:
        if is_output(n) or n in points:
            return False
        points.append(n)
        return True

    def source(n: fx.Node) -> fx.Node | None:
        for _ in range(64):
            if n in points:
                return n
            if not _range_preserving(gm, n) or not n.args or not isinstance(n.args[0], fx.Node):
                return None
            n = n.args[0]
        return None

    for n in qnodes:
        act = n.args[0]
        assert isinstance(act, fx.Node)
        add(act)
        add(extended(n))
    changed = True
    while changed:
        changed = False
        for node in gm.graph.nodes:
            data = _int_capable_inputs(gm, node)
            if data and all(source(a) is not None for a in data):
                changed |= add(extended(node))
    shared: dict[str, str] = {}
    for p in points:
        if _range_preserving(gm, p) and p.args and isinstance(p.args[0], fx.Node):
            src = source(p.args[0])
            if src is not None and src is not p:
                shared[p.name] = shared.get(src.name, src.name)
    return points, shared


def _share(fq: ActFakeQuant, src: ActFakeQuant, src_name: str) -> None:
    """Give ``fq`` the scale and zero point of ``src`` (a point after MaxPool/Flatten/…)."""
    assert fq.range is not None and src.range is not None
    fq.scale, fq.zero_point = src.scale, src.zero_point
    fq.range = _shared_range(fq.range, src.range, src_name)


def _shared_range(own: ActivationRange, src: ActivationRange, src_name: str) -> ActivationRange:
    return ActivationRange(
        src.lo,
        src.hi,
        f"{src.method} (shared with {src_name})",
        own.observed_min,
        own.observed_max,
    )


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
        points, shared = _fx_points(gm, qnodes)
        for i, pt in enumerate(points):
            fq = ActFakeQuant(config.calibration, config.percentile)
            name = f"actq_{i}"
            gm.add_submodule(name, fq)
            fq_by_point[pt.name] = fq
            with gm.graph.inserting_after(pt):
                newn = gm.graph.call_module(name, (pt,))
            pt.replace_all_uses_with(newn, delete_user_cb=_not(newn))
        gm.recompile()
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x_calib, np.float32))
            for i in range(0, xt.shape[0], 128):
                gm(xt[i : i + 128])
        for fq in fq_by_point.values():
            fq.freeze()
        for key, src in shared.items():
            _share(fq_by_point[key], fq_by_point[src], src)
        for key, fq in fq_by_point.items():
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

                _, s_w = quantize_per_channel(w, 0, config.int8_weight_bits)
                bs = (np.float32(input_scale[name]) * s_w).astype(np.float32)
                b = bias.detach().numpy()
                bias.copy_(torch.from_numpy((np.round(b / bs) * bs).astype(np.float32)))
    return gm, ranges


def _bits_for(name: str, mod: nn.Module, config: QuantConfig) -> int | None:
    if config.scheme == "int8":
        return None if isinstance(mod, nn.LSTM) else config.int8_weight_bits
    if config.scheme == "w8":
        return 8
    if config.scheme == "w4":
        return 4
    return config.bits_per_layer.get(name, 8)


def int8_needs_reduced_range() -> bool:
    """True unless this is an x86-64 CPU known to have VNNI, or not an x86-64 CPU at all.

    ONNX Runtime's uint8×int8 GEMM/conv kernels on x86-64 without VNNI use ``VPMADDUBSW``, whose
    16-bit sum of two products saturates with full-range int8 weights (ONNX Runtime's
    quantization docs, "saturation issues"); VNNI's ``VPDPBUSD`` accumulates in 32 bits. An x86
    CPU whose flags cannot be read gets the reduced range, which is exact everywhere."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return has_vnni() is not True


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def choose_calibration(
    module: nn.Module, x_calib: np.ndarray, config: QuantConfig
) -> CalibrationChoice:
    """The activation range method for ``calibration="auto"``, chosen on calibration data only.

    Each method of :data:`~edgeproof.compress.calibrate.CALIBRATION_METHODS` is calibrated on
    ``x_calib`` and its PyTorch simulation run on the same records; the method with the smallest
    mean ``KL(p_fp32 ‖ p_q)`` of the softmax outputs wins (ties: percentile, mse, entropy,
    minmax). No labels and no evaluation data are used, so the choice cannot leak the test set.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x_calib, np.float32))
    with torch.no_grad():
        p = _softmax(fold_batchnorm(module)(xt).numpy())
    kl: dict[str, float] = {}
    for method in _AUTO_PREFERENCE:
        sim, _ = simulate(module, x_calib, replace(config, calibration=method))
        with torch.no_grad():
            q = _softmax(sim(xt).numpy())
        kl[method] = float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))
    chosen = min(_AUTO_PREFERENCE, key=lambda m: (kl[m], _AUTO_PREFERENCE.index(m)))
    return CalibrationChoice(chosen, kl, int(xt.shape[0]))


def _check_calibration(x: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise SpecError(
            f"{param('x_calib')}: calibration data has sample shape {tuple(x.shape[1:])} but the "
            f"model expects {tuple(input_shape)}; pass calibration records shaped like the "
            "model input"
        )
    if x.shape[0] == 0:
        raise SpecError(f"{param('x_calib')}: calibration data is empty; pass at least one record")
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
        SpecError: if ``x_calib`` does not have the model's sample shape.
    """
    x_calib = _check_calibration(x_calib, input_shape)[: config.calibration_samples]
    choice = None
    if config.scheme == "int8" and config.calibration == "auto":
        choice = choose_calibration(module, x_calib, config)
    if config.calibration == "auto":
        # weight-only schemes have no activation ranges: any method gives the same graph
        config = replace(config, calibration=choice.chosen if choice else "percentile")
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
        for slot, tensor in ((1, f"weight_ih_l{k}"), (2, f"weight_hh_l{k}")):
            if len(node.input) > slot:
                _rename_initializer(fp32, node.input[slot], f"{lstm_name}.{tensor}")
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
        for t, src in shared_points(fp32, points).items():
            ranges[t] = _shared_range(ranges[t], ranges[src], src)
        weight_bits = {op.node: config.int8_weight_bits for op in ops}
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
    result = QuantizedModel(
        config, sim, qdq, ranges, fnodes, unquantized, calibration_choice=choice
    )
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

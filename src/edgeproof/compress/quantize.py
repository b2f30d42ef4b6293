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

The same model is quantized twice, independently: in PyTorch (:mod:`edgeproof.compress.simulate`:
BatchNorm folded, fake-quant modules inserted with ``torch.fx`` at the same activation points,
weights replaced by their dequantized values, ranges calibrated on the PyTorch activations) and
as an ONNX QDQ graph (:mod:`edgeproof.compress.qdq`; ranges calibrated on ONNX Runtime's
intermediate tensors with the same estimator). :class:`Parity` compares the two on the evaluation
data: top-1 agreement and the largest logit difference.

What every quantization of one module shares — the folded module, its fp32 graph, the activation
values of the calibration records on both sides — is computed once in a :class:`Prepared` and
read by every method and every configuration (pass ``prepared=`` to :func:`quantize`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from torch import fx, nn

from edgeproof.compress.calibrate import CALIBRATION_METHODS, ActivationRange, ActivationStats
from edgeproof.compress.folding import fold_batchnorm
from edgeproof.compress.onnx_export import (
    FloatNode,
    QuantOp,
    activation_points,
    export_onnx,
    float_nodes,
    quantizable_ops,
    shared_points,
    with_outputs,
)
from edgeproof.compress.qdq import INT4_ONNX_OPSET, build_qdq_model
from edgeproof.compress.simulate import QMODULES, Simulator, shared_range
from edgeproof.errors import OptionError, SpecError, param
from edgeproof.runtime.cpu import has_vnni
from edgeproof.runtime.ort import make_session, run_session

__all__ = [
    "QUANT_CALIBRATIONS",
    "SCHEMES",
    "CalibrationChoice",
    "Parity",
    "Prepared",
    "QuantConfig",
    "QuantizedModel",
    "UnquantizableLayer",
    "choose_calibration",
    "fold_batchnorm",
    "int8_needs_reduced_range",
    "parity",
    "quantize",
    "simulate",
]

Scheme = Literal["int8", "w8", "w4", "mixed"]
#: Calibration choices of :class:`QuantConfig`: the range estimators, or ``auto``.
QUANT_CALIBRATIONS: tuple[str, ...] = ("auto", *CALIBRATION_METHODS)
#: ``auto``'s tie-break order (equal KL on the calibration records).
_AUTO_PREFERENCE: tuple[str, ...] = ("percentile", "mse", "entropy", "minmax")
SCHEMES: tuple[str, ...] = ("int8", "w8", "w4", "mixed")


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
        if self.calibration_samples < 1:
            raise OptionError(
                "calibration_samples", f"must be >= 1, got {self.calibration_samples}"
            )
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

    def weight_bits(self, name: str, mod: nn.Module) -> int | None:
        """The weight bits of layer ``name`` (``None``: float; an LSTM under static int8)."""
        if self.scheme == "int8":
            return None if isinstance(mod, nn.LSTM) else self.int8_weight_bits
        if self.scheme == "w8":
            return 8
        if self.scheme == "w4":
            return 4
        return self.bits_per_layer.get(name, 8)


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
        result: bytes = self.onnx_model.SerializeToString()
        return result


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


# --------------------------------------------------------------------------------------------
# What every quantization of one module shares


class Prepared:
    """One module, ready to be quantized any number of ways on one set of calibration records.

    Holds the BatchNorm-folded module, its fp32 ONNX graph (LSTM weights renamed after their
    PyTorch parameters), its quantizable ops and activation points, the PyTorch
    :class:`~edgeproof.compress.simulate.Simulator` and ONNX Runtime's activation values at every
    point — each computed on first use, once. Nothing here is changed by a quantization.
    ``keep_values=False`` keeps only each point's min and max: enough for ``minmax``, the
    other methods then cannot be asked for.

    Raises:
        SpecError: ``x_calib`` is not shaped like ``input_shape`` or is empty.
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        x_calib: np.ndarray,
        *,
        keep_values: bool = True,
    ) -> None:
        self.module = module
        self.input_shape = tuple(int(s) for s in input_shape)
        self.x_calib = _check_calibration(x_calib, self.input_shape)
        self.keep_values = keep_values
        self.folded: fx.GraphModule = fold_batchnorm(module)
        self.simulator = Simulator(self.folded, self.x_calib, keep_values=keep_values)
        self._fp32: onnx.ModelProto | None = None
        self._onnx_stats: dict[str, ActivationStats] | None = None

    @property
    def fp32(self) -> onnx.ModelProto:
        """The fp32 graph of the folded module (do not change it: copy first)."""
        if self._fp32 is None:
            g = export_onnx(self.folded, self.input_shape)
            lstm = _lstm_module_name(self.folded)
            for k, node in enumerate(n for n in g.graph.node if n.op_type in _RECURRENT):
                # The exporter names W/R "onnx::LSTM_<n>"; use the PyTorch parameter names.
                for slot, tensor in ((1, f"weight_ih_l{k}"), (2, f"weight_hh_l{k}")):
                    if len(node.input) > slot:
                        _rename_initializer(g, node.input[slot], f"{lstm}.{tensor}")
            self._fp32 = g
        return self._fp32

    @property
    def ops(self) -> list[QuantOp]:
        return quantizable_ops(self.fp32)

    def onnx_stats(self) -> dict[str, ActivationStats]:
        """Activation point → ONNX Runtime's values there on the calibration records."""
        if self._onnx_stats is None:
            self._onnx_stats = onnx_activation_stats(
                self.fp32, self.x_calib, keep_values=self.keep_values
            )
        return self._onnx_stats

    def simulate(self, config: QuantConfig) -> tuple[fx.GraphModule, dict[str, ActivationRange]]:
        """The PyTorch simulation of ``config`` (calibration already resolved, not ``auto``)."""
        return self.simulator.build(
            config.weight_bits,
            calibration=config.calibration if config.scheme == "int8" else None,
            percentile=config.percentile,
            group_size=config.group_size,
            bias_bits=config.int8_weight_bits if config.scheme == "int8" else 8,
        )


def onnx_activation_stats(
    fp32: onnx.ModelProto, x: np.ndarray, *, keep_values: bool = True
) -> dict[str, ActivationStats]:
    """Activation point (:func:`~edgeproof.compress.onnx_export.activation_points`) → ONNX
    Runtime's values there on the records ``x`` (batches of 128, the graph's first input)."""
    points = activation_points(fp32, quantizable_ops(fp32))
    sess = make_session(with_outputs(fp32, points), disable_optimizations=True)
    names = [o.name for o in sess.get_outputs()]  # type: ignore[attr-defined]
    stats = {p: ActivationStats(keep_values=keep_values) for p in points}
    inp = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    for i in range(0, x.shape[0], 128):
        outs = sess.run(None, {inp: x[i : i + 128]})  # type: ignore[attr-defined]
        for n, arr in zip(names, outs):
            if n in stats:
                stats[n].observe(arr)
    return stats


def activation_ranges(
    fp32: onnx.ModelProto,
    stats: dict[str, ActivationStats],
    calibration: str,
    percentile: float,
) -> dict[str, ActivationRange]:
    """Each point's range by ``calibration``; a point after a range-preserving op shares its
    source's (:func:`~edgeproof.compress.onnx_export.shared_points`)."""
    shared = shared_points(fp32, list(stats))
    own = {p: s.range(calibration, percentile) for p, s in stats.items() if p not in shared}
    return {
        p: own[p] if p not in shared else shared_range(own[shared[p]], shared[p], s.extremes)
        for p, s in stats.items()
    }


_RECURRENT = ("LSTM", "GRU", "RNN")


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
    for name, mod in m.named_modules():
        if isinstance(mod, nn.LSTM):
            return str(name)
    return "lstm"


# --------------------------------------------------------------------------------------------
# Quantization


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def choose_calibration(
    module: nn.Module,
    x_calib: np.ndarray,
    config: QuantConfig,
    *,
    prepared: Prepared | None = None,
) -> CalibrationChoice:
    """The activation range method for ``calibration="auto"``, chosen on calibration data only.

    Each method of :data:`~edgeproof.compress.calibrate.CALIBRATION_METHODS` is calibrated on
    ``x_calib`` and its PyTorch simulation run on the same records; the method with the smallest
    mean ``KL(p_fp32 ‖ p_q)`` of the softmax outputs wins (ties: percentile, mse, entropy,
    minmax). No labels and no evaluation data are used, so the choice cannot leak the test set.
    The records run through the module once (``prepared``'s simulator: its calibration pass,
    whose outputs are the fp32 reference); each point's values are read once for the four
    ranges; each method's simulation is the same template with that method's ranges, run once
    over the records in cache-sized chunks (:attr:`Simulator.chunk
    <edgeproof.compress.simulate.Simulator.chunk>`).
    """
    prep = _prepared_for(prepared, module, x_calib, config)
    sim = prep.simulator
    p = _softmax(sim.fp32_outputs)
    sim.estimate(_AUTO_PREFERENCE, config.percentile)
    template = sim.template()
    kl: dict[str, float] = {}
    for method in _AUTO_PREFERENCE:
        sim.configure(
            template,
            config.weight_bits,
            method,
            config.percentile,
            config.group_size,
            config.int8_weight_bits,
        )
        q = _softmax(sim.outputs(template))
        kl[method] = float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))
    chosen = min(_AUTO_PREFERENCE, key=lambda m: (kl[m], _AUTO_PREFERENCE.index(m)))
    return CalibrationChoice(chosen, kl, int(prep.x_calib.shape[0]))


def _prepared_for(
    prepared: Prepared | None, module: nn.Module, x_calib: np.ndarray, config: QuantConfig
) -> Prepared:
    x = np.asarray(x_calib)
    if prepared is None:
        shape = tuple(x.shape[1:]) if x.ndim > 1 else ()
        only_minmax = config.scheme == "int8" and config.calibration == "minmax"
        return Prepared(module, shape, x[: config.calibration_samples], keep_values=not only_minmax)
    if prepared.module is not module:
        raise OptionError(
            "prepared", "was built for another module", "build it with Prepared(module, ...)"
        )
    if config.scheme == "int8" and config.calibration != "minmax" and not prepared.keep_values:
        raise OptionError(
            "prepared",
            f"keeps only min/max, but calibration {config.calibration!r} needs the values",
            "build it with keep_values=True",
        )
    return prepared


def simulate(
    module: nn.Module, x_calib: np.ndarray, config: QuantConfig
) -> tuple[fx.GraphModule, dict[str, ActivationRange]]:
    """The PyTorch fake-quant simulation of ``config`` calibrated on ``x_calib`` (a fixed
    method; for ``auto`` use :func:`quantize`)."""
    x = np.asarray(x_calib, np.float32)
    return Prepared(module, x.shape[1:], x[: config.calibration_samples]).simulate(config)


def quantize(
    module: nn.Module,
    input_shape: Sequence[int],
    x_calib: np.ndarray,
    config: QuantConfig,
    *,
    x_eval: np.ndarray | None = None,
    threads: int = 1,
    prepared: Prepared | None = None,
) -> QuantizedModel:
    """Quantize ``module`` by ``config``: PyTorch simulation, ONNX QDQ graph, parity on ``x_eval``.

    ``prepared``: a :class:`Prepared` of ``module`` to reuse (its calibration records are used
    instead of ``x_calib``); every candidate built on the same module shares one.

    Raises:
        SpecError: if ``x_calib`` does not have the model's sample shape.
    """
    x = _check_calibration(x_calib, input_shape)[: config.calibration_samples]
    prep = _prepared_for(prepared, module, x, config)
    choice = None
    if config.scheme == "int8" and config.calibration == "auto":
        choice = choose_calibration(module, x, config, prepared=prep)
    if config.calibration == "auto":
        # weight-only schemes have no activation ranges: any method gives the same graph
        config = replace(config, calibration=choice.chosen if choice else "percentile")
    sim, _ = prep.simulate(config)
    qdq, ranges, unquantized = _qdq_graph(prep, config)
    with tempfile.TemporaryDirectory() as tmp:
        fnodes = float_nodes(qdq, str(Path(tmp) / "opt.onnx"))
    result = QuantizedModel(
        config, sim, qdq, ranges, fnodes, unquantized, calibration_choice=choice
    )
    if x_eval is not None:
        result.parity = parity(sim, qdq, x_eval, threads=threads)
    return result


def _qdq_graph(
    prep: Prepared, config: QuantConfig
) -> tuple[onnx.ModelProto, dict[str, ActivationRange], list[UnquantizableLayer]]:
    """The QDQ graph of ``config``, its activation ranges, and the layers left in float."""
    fp32, ops = prep.fp32, prep.ops
    lstm_weights, unquantized = _recurrent_weights(prep, config)
    if config.scheme == "int8":
        ranges = activation_ranges(fp32, prep.onnx_stats(), config.calibration, config.percentile)
        qdq = build_qdq_model(
            fp32,
            activation_ranges={k: (r.lo, r.hi) for k, r in ranges.items()},
            weight_bits={op.node: config.int8_weight_bits for op in ops},
        )
        return qdq, ranges, unquantized
    if config.scheme == "mixed":
        # Map PyTorch module names to ONNX nodes by order (BN folded: one node per Conv/Linear).
        qmods = [n for n, m in prep.folded.named_modules() if isinstance(m, QMODULES)]
        name_of_node = dict(zip([op.node for op in ops], qmods)) if len(qmods) == len(ops) else {}
        weight_bits = {
            op.node: config.bits_per_layer.get(name_of_node.get(op.node, ""), 8) for op in ops
        }
    else:
        weight_bits = {op.node: (4 if config.scheme == "w4" else 8) for op in ops}
    # 4-bit weights get group scales, 8-bit ones per-channel scales (as the simulation does);
    # a mixed graph is opset 21 whatever its plan, so its size is additive over layers.
    qdq = build_qdq_model(
        fp32,
        activation_ranges=None,
        weight_bits=weight_bits,
        group_size=config.group_size,
        extra_weights=lstm_weights,
        opset=INT4_ONNX_OPSET if config.scheme == "mixed" else None,
    )
    return qdq, {}, unquantized


def _recurrent_weights(
    prep: Prepared, config: QuantConfig
) -> tuple[dict[str, int], list[UnquantizableLayer]]:
    """Recurrent cells: their W/R initializers → bits (weight-only schemes), or left in float
    (static int8: ONNX Runtime has no QDQ kernel for them)."""
    lstm_weights: dict[str, int] = {}
    unquantized: list[UnquantizableLayer] = []
    lstm_name = _lstm_module_name(prep.folded)
    for node in (n for n in prep.fp32.graph.node if n.op_type in _RECURRENT):
        bits = {"int8": None, "w8": 8, "w4": 4}.get(config.scheme)
        if config.scheme == "mixed":
            bits = config.bits_per_layer.get(lstm_name, 8)
        if bits is None:
            unquantized.append(
                UnquantizableLayer(
                    node.name,
                    node.op_type,
                    "recurrent cell: no static-int8 QDQ kernel in ONNX Runtime; runs in float "
                    "(use the w8/w4 weight-only schemes to quantize its weights)",
                )
            )
            continue
        for w in node.input[1:3]:
            lstm_weights[w] = bits
    return lstm_weights, unquantized


def parity(sim: nn.Module, qdq: onnx.ModelProto, x: np.ndarray, *, threads: int = 1) -> Parity:
    """Top-1 agreement and max |logit difference| between the simulation and ONNX Runtime."""
    with torch.no_grad():
        a = sim(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
    sess = make_session(qdq, threads=threads)
    b = run_session(sess, x)[0]
    agree = float(np.mean(a.argmax(1) == b.argmax(1))) if len(x) else 1.0
    return Parity(agree, float(np.max(np.abs(a - b))) if len(x) else 0.0, len(x))

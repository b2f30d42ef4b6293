"""The PyTorch fake-quant simulation of a quantization, calibrated once per module.

The BatchNorm-folded module (:func:`edgeproof.compress.folding.fold_batchnorm`) gets a uint8
asymmetric per-tensor fake quantizer (:class:`ActFakeQuant`) inserted with ``torch.fx`` at every
activation point — the rule of :func:`edgeproof.compress.onnx_export.activation_points`, applied
to the ``torch.fx`` graph (:func:`fx_points`) — and its weights replaced by their dequantized
values (:func:`edgeproof.compress.weights.fake_quantize_weight`; int8 biases rounded to the
int32 grid ``s_x · s_w[c]``). A point after MaxPool/Flatten/… reuses its source's scale.

:class:`Simulator` runs the calibration records through the module **once** and keeps each
point's values (:class:`~edgeproof.compress.calibrate.ActivationStats`); every range method and
every configuration built on the same module reads them (``calibration="auto"`` compares all
four methods on one calibration pass, whose outputs — the fake quantizers only observe — are the
fp32 reference it compares them with).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from edgeproof.certify.bound_graph import Builder, register_module
from edgeproof.certify.ops import UniformQuantizer
from edgeproof.compress.calibrate import ActivationRange, ActivationStats, activation_qparams
from edgeproof.compress.weights import fake_quantize_weight, quantize_per_channel

__all__ = ["QMODULES", "ActFakeQuant", "Simulator", "fx_points", "shared_range"]

QMODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)
"""The layer types whose weights (and, for int8, inputs and outputs) are quantized."""


class ActFakeQuant(nn.Module):
    """uint8 asymmetric fake quantization of one activation; observes while ``observing``.

    Made with a range method (``ActFakeQuant("percentile", 99.99)``) it observes the values it
    sees until :meth:`freeze`; :meth:`set_range` calibrates it from a range found elsewhere.
    """

    def __init__(self, method: str = "minmax", percentile: float = 99.99) -> None:
        super().__init__()
        self.method = method
        self.percentile = percentile
        self.observer: ActivationStats | None = ActivationStats(keep_values=method != "minmax")
        self.scale = 1.0
        self.zero_point = 0
        self.range: ActivationRange | None = None

    def freeze(self) -> None:
        """Calibrate from the observed values with the method given at construction."""
        if self.observer is None:
            return
        self.set_range(self.observer.range(self.method, self.percentile))

    def set_range(self, r: ActivationRange) -> None:
        self.range = r
        self.scale, self.zero_point = activation_qparams(r.lo, r.hi)
        self.observer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x.detach().cpu().numpy())
            return x
        # clamp(round(x / s) + zp, 0, 255) - zp, times s: in place on the fresh quotient (the
        # same float operations in the same order as ONNX QuantizeLinear/DequantizeLinear)
        s = torch.tensor(self.scale, dtype=x.dtype)
        q = torch.div(x, s)
        q.round_().add_(self.zero_point).clamp_(0, 255).sub_(self.zero_point)
        return q.mul_(s)


# --------------------------------------------------------------------------------------------
# Placement on the torch.fx graph (the rule of onnx_export.activation_points)

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


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), nn.ReLU)
    return node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)


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


def quantized_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The ``call_module`` nodes of Conv1d/Conv2d/Linear layers, in graph order."""
    return [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), QMODULES)
    ]


def fx_points(
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


def shared_range(
    src: ActivationRange, src_name: str, observed: tuple[float, float]
) -> ActivationRange:
    """``src``'s range, labelled as shared, with the point's own ``observed`` extremes (a shared
    point's range is never estimated: it is its source's)."""
    return ActivationRange(
        src.lo, src.hi, f"{src.method} (shared with {src_name})", observed[0], observed[1]
    )


def _not(node: fx.Node) -> Callable[[fx.Node], bool]:
    def keep(user: fx.Node) -> bool:
        return user is not node

    return keep


# --------------------------------------------------------------------------------------------
# The simulator


WeightBits = Callable[[str, nn.Module], "int | None"]
"""``bits(layer name, layer)``: the weight bits of a layer (``None``: it stays float)."""


class Simulator:
    """Fake-quant simulations of one BatchNorm-folded module.

    ``Simulator(folded, x_calib)``; :meth:`build` returns an independent simulated module for
    one configuration (``folded`` itself is never changed). With ``x_calib`` the activation
    points are observed on the first call that needs them, once; fake-quantized weights are
    cached per (layer, bits, group size).
    """

    def __init__(
        self, folded: fx.GraphModule, x_calib: np.ndarray | None = None, *, keep_values: bool = True
    ) -> None:
        self.folded = folded
        self._x = x_calib
        self._keep = keep_values
        self._template: fx.GraphModule | None = None
        self._fq_of_point: dict[str, str] = {}
        self._shared: dict[str, str] = {}
        self._stats: dict[str, ActivationStats] = {}
        self._input_fq: dict[str, str] = {}
        self._orig: dict[str, list[tuple[str, np.ndarray]]] = {
            name: [(p, t.detach().numpy().copy()) for p, t in _weight_tensors(mod)]
            for name, mod in _weight_layers(folded)
        }
        self._bias: dict[str, np.ndarray] = {
            name: b.detach().numpy().copy()
            for name, mod in _weight_layers(folded)
            if isinstance(b := getattr(mod, "bias", None), torch.Tensor)
        }
        self._wq: dict[tuple[str, str, int, int | None], torch.Tensor] = {}
        self._fp32_out: np.ndarray | None = None
        self._chunk = _CALIB_BATCH

    @property
    def stats(self) -> dict[str, ActivationStats]:
        """Point name → the values observed there (calibrating on first use)."""
        self.template()
        return self._stats

    @property
    def fp32_outputs(self) -> np.ndarray:
        """The folded module's outputs on the calibration records: those of the calibration
        pass, whose fake quantizers only observe (calibrating on first use)."""
        self.template()
        assert self._fp32_out is not None
        return self._fp32_out

    def outputs(self, gm: fx.GraphModule) -> np.ndarray:
        """``gm``'s outputs on the calibration records, in chunks of :attr:`chunk` records."""
        assert self._x is not None
        xt = torch.from_numpy(np.ascontiguousarray(self._x, np.float32))
        with torch.no_grad():
            parts = [gm(xt[i : i + self.chunk]) for i in range(0, xt.shape[0], self.chunk)]
        return torch.cat(parts).numpy()

    @property
    def chunk(self) -> int:
        """Records per forward pass of :meth:`outputs`: the power of two (at most 256) whose
        largest activation fits in :data:`_CHUNK_BYTES` (about an L2 cache), so the passes run
        from cache — ResNet-20 on 3×32×32 runs 256 records ~1.7× faster in chunks of 32 than at
        once on one thread. Known after the calibration pass (which runs batches of 128)."""
        self.template()
        return self._chunk

    def estimate(self, methods: Sequence[str], percentile: float = 99.99) -> None:
        """Every point's range by each of ``methods`` (shared points excepted: they take their
        source's), computed now, each point's values read once for all the methods."""
        for pt, stats in self.stats.items():
            if pt not in self._shared:
                stats.ranges(methods, percentile)

    def build(
        self,
        bits: WeightBits,
        *,
        calibration: str | None = None,
        percentile: float = 99.99,
        group_size: int = 32,
        bias_bits: int = 8,
    ) -> tuple[fx.GraphModule, dict[str, ActivationRange]]:
        """A new simulated module: weights at ``bits``; with ``calibration`` (static int8) every
        activation point quantized with that method's range and biases on the int32 grid of
        ``bias_bits``-bit weights. Returns the module and point → range."""
        gm = copy.deepcopy(self.template() if calibration else self.folded)
        ranges = self.configure(gm, bits, calibration, percentile, group_size, bias_bits)
        return gm, ranges

    def configure(
        self,
        gm: fx.GraphModule,
        bits: WeightBits,
        calibration: str | None,
        percentile: float = 99.99,
        group_size: int = 32,
        bias_bits: int = 8,
    ) -> dict[str, ActivationRange]:
        """Set ``gm`` (this simulator's template or a copy of it) to one configuration, in
        place: activation ranges, every weight (fp32 where ``bits`` says ``None``), every bias."""
        ranges: dict[str, ActivationRange] = {}
        if calibration is not None:
            fqs = {pt: _fq(gm, name) for pt, name in self._fq_of_point.items()}
            for pt, fq in fqs.items():
                if pt not in self._shared:
                    fq.set_range(self._stats[pt].range(calibration, percentile))
            for key, src in self._shared.items():
                src_range = fqs[src].range
                assert src_range is not None
                fqs[key].set_range(shared_range(src_range, src, self._stats[key].extremes))
            ranges = {pt: fq.range for pt, fq in fqs.items() if fq.range is not None}
        with torch.no_grad():
            for name, mod in _weight_layers(gm):
                b = bits(name, mod)
                group = group_size if b == 4 else None
                for (pname, tensor), (_, orig) in zip(_weight_tensors(mod), self._orig[name]):
                    fake = None if b is None else self._fake(name, pname, b, group)
                    tensor.copy_(torch.from_numpy(orig) if fake is None else fake)
                self._set_bias(gm, name, mod, bias_bits if calibration is not None else None)
        return ranges

    def _set_bias(self, gm: fx.GraphModule, name: str, mod: nn.Module, w_bits: int | None) -> None:
        bias = getattr(mod, "bias", None)
        if not isinstance(bias, torch.Tensor) or name not in self._bias:
            return
        b = self._bias[name]
        fq_name = self._input_fq.get(name)
        if w_bits is not None and fq_name is not None and not isinstance(mod, nn.LSTM):
            _, s_w = quantize_per_channel(self._orig[name][0][1], 0, w_bits)
            bs = (np.float32(_fq(gm, fq_name).scale) * s_w).astype(np.float32)
            b = (np.round(b / bs) * bs).astype(np.float32)
        bias.copy_(torch.from_numpy(b))

    def _fake(self, layer: str, pname: str, bits: int, group: int | None) -> torch.Tensor:
        key = (layer, pname, bits, group)
        if key not in self._wq:
            orig = dict(self._orig[layer])[pname]
            self._wq[key] = torch.from_numpy(fake_quantize_weight(orig, 0, bits, group))
        return self._wq[key]

    def template(self) -> fx.GraphModule:
        """The template: a copy of the folded module with an (uncalibrated) fake quantizer at
        every activation point, after the calibration records ran through it once."""
        if self._template is not None:
            return self._template
        if self._x is None:
            raise ValueError("Simulator: static int8 needs calibration records (x_calib)")
        gm = copy.deepcopy(self.folded)
        qnodes = quantized_nodes(gm)
        points, self._shared = fx_points(gm, qnodes)
        for i, pt in enumerate(points):
            name = f"actq_{i}"
            fq = ActFakeQuant("percentile")
            fq.observer = ActivationStats(keep_values=self._keep)
            gm.add_submodule(name, fq)
            self._fq_of_point[pt.name] = name
            with gm.graph.inserting_after(pt):
                newn = gm.graph.call_module(name, (pt,))
            pt.replace_all_uses_with(newn, delete_user_cb=_not(newn))
        gm.recompile()
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(self._x, np.float32))
            out = [gm(xt[i : i + _CALIB_BATCH]) for i in range(0, xt.shape[0], _CALIB_BATCH)]
        if all(isinstance(o, torch.Tensor) for o in out):
            self._fp32_out = torch.cat(out).numpy()
        for point, fq_name in self._fq_of_point.items():
            fq = _fq(gm, fq_name)
            assert fq.observer is not None
            self._stats[point] = fq.observer
            fq.observer = None
        self._chunk = _chunk_for(self._stats.values(), xt.shape[0])
        for n in qnodes:  # the fake quantizer inserted after `act` now feeds this node
            act = n.args[0]
            if isinstance(act, fx.Node) and str(act.target).startswith("actq_"):
                self._input_fq[str(n.target)] = str(act.target)
        self._template = gm
        return gm


_CALIB_BATCH = 128
"""Records per batch of the calibration pass (each point observes one batch at a time)."""
_CHUNK_BYTES = 2 << 20
"""The largest activation of a chunk of :meth:`Simulator.outputs` stays under this size."""


def _chunk_for(stats: Iterable[ActivationStats], records: int) -> int:
    """The chunk of :attr:`Simulator.chunk` for points that observed ``stats`` on ``records``."""
    per_record = max((s.count for s in stats), default=0) * 4 / max(records, 1)
    chunk = 256
    while chunk > 1 and chunk * per_record > _CHUNK_BYTES:
        chunk //= 2
    return chunk


def _fq(gm: fx.GraphModule, name: str) -> ActFakeQuant:
    fq = gm.get_submodule(name)
    assert isinstance(fq, ActFakeQuant)
    return fq


def _weight_layers(gm: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in gm.named_modules() if isinstance(m, (*QMODULES, nn.LSTM))]


def _weight_tensors(mod: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights the QDQ path quantizes: ``weight``, or an LSTM's ``weight_*`` matrices."""
    if isinstance(mod, nn.LSTM):
        return [(n, p) for n, p in mod.named_parameters() if n.startswith("weight_")]
    w = mod.weight
    assert isinstance(w, torch.Tensor)
    return [("weight", w)]


def _bound_fake_quant(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    """How the bound engine (:mod:`edgeproof.certify`) treats an :class:`ActFakeQuant`: a
    uniform quantizer to uint8 with its scale and zero point (the identity while it is still
    calibrating)."""
    assert isinstance(m, ActFakeQuant)
    if m.observer is not None:
        return args[0]
    return b.add(UniformQuantizer(m.scale, m.zero_point, 0, 255), [args[0]])


register_module(ActFakeQuant, _bound_fake_quant)

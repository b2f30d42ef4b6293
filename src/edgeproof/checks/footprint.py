"""Footprint: parameters, bytes, MACs per layer, latency and peak memory on this CPU.

What is counted, and how (stated because tools differ):

* **Parameters** — elements of the module's parameters (shared tensors once), by dtype; buffers
  (e.g. BatchNorm running statistics) are listed apart. For ONNX and weights-only models, the
  named tensors the loader exposes (ONNX initializers).
* **Weight bytes** — ``numel × element size`` of parameters and buffers; the model file's size on
  disk when the model came from a file.
* **MACs** — multiply-accumulates for one sample, counted by forward hooks on a batch-1 dummy input
  of the threat model's input shape (values uniform in its domain). Rules (one per layer type, in
  a registry extended with :func:`register_mac_rule`):

  - Conv1d/2d/3d: ``out.numel() · (C_in / groups) · prod(kernel)``; ConvTranspose:
    ``in.numel() · (C_out / groups) · prod(kernel)``; bias adds are not counted;
  - Linear: ``out.numel() · in_features``;
  - BatchNorm: ``out.numel()`` (one fused multiply-add per element at inference);
  - LSTM / GRU / RNN: the gate matrix products only, ``T · B · dirs · Σ_layers
    gates · H · (in_l + H_r)`` with gates = 4 / 3 / 1 (plus ``H · H_r`` for an LSTM projection);
    element-wise gate arithmetic is not counted;
  - every other layer (activations, pooling, additions) counts 0.

  The same convention as ptflops/thop for Conv and Linear; the total is cross-checked against
  ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC on matmul/conv ops),
  which is also the fallback total when the model has no hookable layers (``torch.export``
  programs). For ONNX models the MACs come from the graph: Conv, ConvTranspose, Gemm and MatMul
  nodes after ONNX shape inference with the batch dimension set to 1.
* **Latency** — wall time of one forward call (``time.perf_counter``) at batch 1 and batch 32:
  a few warm-up calls, then as many timed calls as fit the time budget (bounded below and above),
  p50 and p95 over the timed calls. PyTorch runs under ``torch.inference_mode`` with the stated
  thread count; ONNX models run in an ONNX Runtime session with the stated intra-op threads.
* **Memory** — the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, which
  includes Python, torch and everything loaded before this check), and how much that peak rose
  during the latency runs (0 when an earlier peak was higher: a lower bound on inference memory).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeproof.checks.base import AuditContext, Check, torch_threads
from edgeproof.errors import OptionError
from edgeproof.results import CheckResult, Finding, Metric, Table

__all__ = [
    "FootprintCheck",
    "LatencyStats",
    "LayerCost",
    "MacRule",
    "count_macs",
    "cpu_name",
    "flop_counter_macs",
    "measure_latency",
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


@dataclass(frozen=True)
class LatencyStats:
    """Timings of one forward call at one batch size, in milliseconds."""

    batch: int
    runs: int
    warmup: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float


def measure_latency(
    fn: Callable[[], object],
    *,
    batch: int,
    budget_s: float = 1.0,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 1000,
) -> LatencyStats:
    """Time ``fn`` with ``time.perf_counter``, adapting the number of calls to a time budget.

    ``warmup`` untimed calls come first (stopping early once they alone used the budget); the
    last one estimates the cost ``t`` of a call. Then ``budget_s / t`` timed calls, clamped to
    ``[min_runs, max_runs]`` — except that a model so slow that ``min_runs`` calls would take
    more than three budgets gets ``max(3, budget_s / t)`` calls (its p95 is then close to its
    maximum). p50/p95 by linear interpolation."""
    est = 0.0
    done = 0
    spent = 0.0
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
        spent += est
        done += 1
        if spent > budget_s:
            break
    fit = budget_s / max(est, 1e-7)
    floor = min_runs if est * min_runs <= 3 * budget_s else 3
    runs = int(min(max_runs, max(floor, fit)))
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    p50, p95 = np.percentile(ms, [50, 95])
    return LatencyStats(
        batch, runs, done, float(p50), float(p95), float(ms.mean()), float(ms.min())
    )


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform``), with core count."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({os.cpu_count()} logical cores)"


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _path_bytes(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


class FootprintCheck(Check):
    """Parameters, weight bytes, MACs per layer, p50/p95 latency (batch 1 and 32), peak RSS.

    Settings:
        budget_s: timing budget per batch size in seconds (default 1.0); the number of timed
            calls adapts to it, at least ``min_runs`` (10; 3 for a model too slow for that) and
            at most ``max_runs`` (1000); see :func:`measure_latency`.
        batch_sizes: batch sizes to time (default ``(1, 32)``).
        threads: intra-op threads for PyTorch / ONNX Runtime (default: PyTorch's current count).
        warmup: untimed calls before timing (default 3).
    """

    name = "footprint"
    title = "Footprint"
    description = "Size, MACs, latency and memory of the model on this machine."
    needs_data = False
    needs_forward = True

    def __init__(
        self,
        *,
        budget_s: float = 1.0,
        batch_sizes: Sequence[int] = (1, 32),
        threads: int | None = None,
        warmup: int = 3,
        min_runs: int = 10,
        max_runs: int = 1000,
    ) -> None:
        if not budget_s > 0:
            raise OptionError("footprint.budget_s", f"{budget_s} is not positive", "use e.g. 1.0")
        if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
            raise OptionError(
                "footprint.batch_sizes", f"{list(batch_sizes)} is invalid", "use e.g. 1,32"
            )
        if threads is not None and int(threads) < 1:
            raise OptionError("footprint.threads", f"{threads} threads", "use 1 or more")
        if int(min_runs) < 1 or int(max_runs) < int(min_runs):
            raise OptionError(
                "footprint.min_runs", f"need 1 <= min_runs ({min_runs}) <= max_runs ({max_runs})"
            )
        super().__init__(
            budget_s=budget_s,
            batch_sizes=list(batch_sizes),
            threads=threads,
            warmup=warmup,
            min_runs=min_runs,
            max_runs=max_runs,
        )
        self.budget_s = float(budget_s)
        self.batch_sizes = tuple(int(b) for b in batch_sizes)
        self.threads = None if threads is None else int(threads)
        self.warmup = int(warmup)
        self.min_runs = int(min_runs)
        self.max_runs = int(max_runs)

    # -- size ---------------------------------------------------------------------------------

    def _size(self, ctx: AuditContext, res: CheckResult) -> None:
        rows: dict[tuple[str, str], list[int]] = {}
        module = ctx.model.module
        if module is not None:
            for _, p in module.named_parameters():
                r = rows.setdefault(("parameter", str(p.dtype).replace("torch.", "")), [0, 0, 0])
                r[0] += 1
                r[1] += p.numel()
                r[2] += p.numel() * p.element_size()
            for _, b in module.named_buffers():
                r = rows.setdefault(("buffer", str(b.dtype).replace("torch.", "")), [0, 0, 0])
                r[0] += 1
                r[1] += b.numel()
                r[2] += b.numel() * b.element_size()
            source = "module parameters and buffers"
        else:
            for t in ctx.model.weights.values():
                r = rows.setdefault(("tensor", str(t.dtype).replace("torch.", "")), [0, 0, 0])
                r[0] += 1
                r[1] += t.numel()
                r[2] += t.numel() * t.element_size()
            source = f"named tensors of the {ctx.model.format} model"
        n_params = sum(v[1] for (kind, _), v in rows.items() if kind != "buffer")
        n_bytes = sum(v[2] for v in rows.values())
        by_dtype: dict[str, int] = {}
        for (kind, dt), v in rows.items():
            if kind != "buffer":
                by_dtype[dt] = by_dtype.get(dt, 0) + v[1]
        res.metrics.append(
            Metric(
                "parameters",
                float(n_params),
                unit="count",
                description=f"number of parameter elements ({source}; buffers excluded)",
                higher_is_better=False,
                settings={"by_dtype": by_dtype},
            )
        )
        res.metrics.append(
            Metric(
                "weight_bytes",
                float(n_bytes),
                unit="bytes",
                description=f"numel × element size summed over {source}",
                higher_is_better=False,
            )
        )
        if ctx.model.path is not None:
            size = _path_bytes(Path(ctx.model.path))
            if size is not None:
                res.metrics.append(
                    Metric(
                        "file_bytes",
                        float(size),
                        unit="bytes",
                        description=f"size on disk of {Path(ctx.model.path).name}",
                        higher_is_better=False,
                        settings={"path": str(ctx.model.path)},
                    )
                )
        res.tables.append(
            Table(
                "tensors_by_dtype",
                "Tensors by kind and dtype",
                ["kind", "dtype", "tensors", "elements", "bytes"],
                [[k, d, v[0], v[1], v[2]] for (k, d), v in sorted(rows.items())],
            )
        )

    # -- MACs ---------------------------------------------------------------------------------

    def _macs(self, ctx: AuditContext, res: CheckResult, example: torch.Tensor) -> None:
        model = ctx.model
        layers: list[LayerCost] = []
        total: int | None = None
        source = ""
        reason = ""
        if model.module is not None:
            try:
                layers = count_macs(model.module, example)
            except RuntimeError as exc:  # TorchScript modules refuse Python hooks
                reason = f"forward hooks are not supported by this {model.format} module ({exc})"
            counted = [c.macs for c in layers if c.macs is not None]
            if counted:
                total = int(sum(counted))
                source = "forward hooks (rules in edgeproof.checks.footprint)"
            else:
                reason = reason or (
                    f"no Conv/Linear/BatchNorm/RNN submodule of the {model.format} module ran "
                    "as a Python module (traced and exported graphs inline their layers)"
                )
                try:
                    total = flop_counter_macs(model.module, example)
                    source = "torch.utils.flop_counter.FlopCounterMode (FLOPs / 2)"
                except RuntimeError as exc:
                    reason += f"; FlopCounterMode failed too ({exc})"
        elif model.session is not None:
            if model.path is not None and Path(model.path).suffix == ".onnx":
                layers = onnx_layer_costs(Path(model.path), ctx.threat.input.shape)
                counted = [c.macs for c in layers if c.macs is not None]
                if counted:
                    total = int(sum(counted))
                    source = "ONNX graph (Conv/ConvTranspose/Gemm/MatMul after shape inference)"
                else:
                    reason = "no Conv/Gemm/MatMul node with inferable shapes in the ONNX graph"
            else:
                reason = "the ONNX session has no model file to read the graph from"
        if total is not None:
            res.metrics.append(
                Metric(
                    "macs",
                    float(total),
                    unit="MAC",
                    description="multiply-accumulates per sample (batch 1) over Conv, Linear, "
                    "BatchNorm and RNN layers; activations and pooling count 0",
                    higher_is_better=False,
                    settings={"source": source, "input_shape": list(ctx.threat.input.shape)},
                )
            )
        if layers:
            res.tables.append(
                Table(
                    "layers",
                    "MACs per layer",
                    ["layer", "type", "output shape", "params", "MACs"],
                    [
                        [c.name, c.type, "×".join(map(str, c.output_shape)), c.params, c.macs]
                        for c in layers
                    ],
                    description="per sample, batch 1; MACs empty where the layer type has no "
                    "rule (its work is not in the total)",
                )
            )
            unruled = [c for c in layers if c.macs is None and c.params]
            if unruled:
                names = ", ".join(f"{c.name} ({c.type})" for c in unruled[:8])
                res.findings.append(
                    Finding(
                        "info",
                        f"{len(unruled)} layer(s) with parameters have no MAC rule and are not in "
                        f"the MAC total: {names}. Register one with "
                        "edgeproof.checks.footprint.register_mac_rule",
                        {"layers": [c.name for c in unruled]},
                    )
                )
        if reason and not layers:
            res.findings.append(
                Finding("info", f"no per-layer MAC table: {reason}", {"format": model.format})
            )

    # -- latency ------------------------------------------------------------------------------

    def _runner(
        self, ctx: AuditContext, threads: int
    ) -> tuple[Callable[[np.ndarray], Callable[[], object]], dict[str, Any], int | None]:
        """A factory ``inputs -> zero-arg call``, the backend settings, and a fixed batch size."""
        model = ctx.model
        if model.module is not None:
            module = model.module

            def torch_call(x: np.ndarray) -> Callable[[], object]:
                xt = torch.from_numpy(x)

                def call() -> object:
                    with torch.inference_mode():
                        return module(xt)

                return call

            return torch_call, {"backend": "torch", "torch_version": torch.__version__}, None
        import onnxruntime as ort

        session = model.session
        assert session is not None
        intra: int | str = session.get_session_options().intra_op_num_threads or "ORT default"
        if model.path is not None and Path(model.path).suffix == ".onnx":
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(model.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            intra = threads
        inp = session.get_inputs()[0]
        fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) else None
        name = inp.name
        sess = session

        def ort_call(x: np.ndarray) -> Callable[[], object]:
            def call() -> object:
                return sess.run(None, {name: x})

            return call

        settings = {
            "backend": "onnxruntime",
            "onnxruntime_version": ort.__version__,
            "intra_op_threads": intra,
        }
        return ort_call, settings, fixed

    def _latency(self, ctx: AuditContext, res: CheckResult) -> None:
        spec = ctx.threat.input
        lo, hi = spec.domain
        gen = np.random.default_rng(ctx.seed * 7919 + 41)
        threads = self.threads or torch.get_num_threads()
        with torch_threads(threads) as in_force:
            factory, backend, fixed = self._runner(ctx, in_force)
            common = {
                **backend,
                "torch_threads": in_force,
                "cpu": cpu_name(),
                "python": platform.python_version(),
                "budget_s": self.budget_s,
            }
            rss_before = _peak_rss_mib()
            for b in self.batch_sizes:
                if fixed is not None and fixed != b:
                    res.findings.append(
                        Finding(
                            "info",
                            f"batch {b} not timed: the ONNX graph's input has a fixed batch "
                            f"dimension of {fixed}; export with a dynamic batch axis to time it",
                            {"batch": b, "fixed_batch": fixed},
                        )
                    )
                    continue
                x = gen.uniform(lo, hi, size=(b, *spec.shape)).astype(np.float32)
                call = factory(x)
                if b != 1:
                    # Graphs exported with a static batch size (torch.export, ONNX) reject
                    # other batches; probe once so that costs a note, not the check.
                    try:
                        call()
                    except Exception as exc:
                        res.findings.append(
                            Finding(
                                "info",
                                f"batch {b} not timed: the model rejected a batch of {b} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                "export it with a dynamic batch dimension to time it",
                                {"batch": b},
                            )
                        )
                        continue
                stats = measure_latency(
                    call,
                    batch=b,
                    budget_s=self.budget_s,
                    warmup=self.warmup,
                    min_runs=self.min_runs,
                    max_runs=self.max_runs,
                )
                settings = {**common, "batch": b, "runs": stats.runs, "warmup": stats.warmup}
                few = (
                    " (fewer than 20 calls: p95 is close to the maximum)" if stats.runs < 20 else ""
                )
                res.metrics.append(
                    Metric(
                        f"latency_p50_b{b}_ms",
                        stats.p50_ms,
                        unit="ms",
                        description=f"median wall time of one forward call at batch {b} over "
                        f"{stats.runs} timed calls after {stats.warmup} warm-up calls",
                        higher_is_better=False,
                        settings=settings,
                    )
                )
                res.metrics.append(
                    Metric(
                        f"latency_p95_b{b}_ms",
                        stats.p95_ms,
                        unit="ms",
                        description=f"95th-percentile wall time of one forward call at batch {b} "
                        f"over {stats.runs} timed calls{few}",
                        higher_is_better=False,
                        settings=settings,
                    )
                )
                if b > 1:
                    res.metrics.append(
                        Metric(
                            f"throughput_b{b}",
                            b / (stats.p50_ms / 1e3),
                            unit="samples/s",
                            description=f"batch {b} divided by its median call time",
                            higher_is_better=True,
                            settings=settings,
                        )
                    )
            rss_after = _peak_rss_mib()
        res.metrics.append(
            Metric(
                "peak_rss_mib",
                rss_after,
                unit="MiB",
                description="peak resident set size of the whole process so far "
                "(getrusage ru_maxrss: includes Python, torch and everything loaded before)",
                higher_is_better=False,
            )
        )
        res.metrics.append(
            Metric(
                "peak_rss_increase_mib",
                rss_after - rss_before,
                unit="MiB",
                description="rise of the process's peak RSS during the latency runs "
                "(0 when an earlier peak was higher, so a lower bound on inference memory)",
                higher_is_better=False,
            )
        )
        res.settings["timing"] = common

    def run(self, ctx: AuditContext) -> CheckResult:
        res = self.new_result()
        spec = ctx.threat.input
        self._size(ctx, res)
        gen = torch.Generator().manual_seed(ctx.seed * 7919 + 43)
        lo, hi = spec.domain
        example = lo + (hi - lo) * torch.rand((1, *spec.shape), generator=gen)
        self._macs(ctx, res, example)
        self._latency(ctx, res)
        parts = [f"{res.metric('parameters').value:,.0f} parameters"]
        parts.append(f"{res.metric('weight_bytes').value / 2**20:.2f} MiB of weights")
        for m in res.metrics:
            if m.name == "macs":
                parts.append(f"{m.value / 1e6:.2f} M MACs per sample")
            if m.name == "latency_p50_b1_ms":
                parts.append(f"p50 latency {m.value:.2f} ms at batch 1")
        res.summary = "; ".join(parts)
        return res

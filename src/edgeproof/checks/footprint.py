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

import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edgeproof.checks.base import AuditContext, Check
from edgeproof.errors import OptionError
from edgeproof.results import CheckResult, Finding, Metric, Table
from edgeproof.runtime.cpu import cpu_name
from edgeproof.runtime.latency import LatencyStats, measure_latency
from edgeproof.runtime.macs import LayerCost, count_macs, flop_counter_macs, onnx_layer_costs
from edgeproof.runtime.memory import path_bytes, peak_rss_mib
from edgeproof.runtime.threads import torch_threads

__all__ = ["FootprintCheck"]


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
    headline = ("parameters", "macs", "latency_p50_b1_ms")
    quick_settings: ClassVar[Mapping[str, Any]] = {
        "budget_s": 0.02,
        "warmup": 1,
        "min_runs": 3,
        "max_runs": 20,
    }
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
            size = path_bytes(Path(ctx.model.path))
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
                        "edgeproof.runtime.macs.register_mac_rule",
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
            rss_before = peak_rss_mib()
            for b in self.batch_sizes:
                if fixed is not None and fixed != b:
                    res.findings.append(_fixed_batch_note(b, fixed))
                    continue
                x = gen.uniform(lo, hi, size=(b, *spec.shape)).astype(np.float32)
                call = factory(x)
                if b != 1:
                    # Graphs exported with a static batch size (torch.export, ONNX) reject
                    # other batches; probe once so that costs a note, not the check.
                    rejected = _rejected_batch(call, b)
                    if rejected is not None:
                        res.findings.append(rejected)
                        continue
                stats = measure_latency(
                    call,
                    batch=b,
                    budget_s=self.budget_s,
                    warmup=self.warmup,
                    min_runs=self.min_runs,
                    max_runs=self.max_runs,
                )
                res.metrics += _batch_metrics(b, stats, common)
            rss_after = peak_rss_mib()
        res.metrics += _memory_metrics(rss_before, rss_after)
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


def _fixed_batch_note(b: int, fixed: int) -> Finding:
    """Batch ``b`` is not timed: the ONNX graph's batch dimension is fixed to ``fixed``."""
    return Finding(
        "info",
        f"batch {b} not timed: the ONNX graph's input has a fixed batch "
        f"dimension of {fixed}; export with a dynamic batch axis to time it",
        {"batch": b, "fixed_batch": fixed},
    )


def _rejected_batch(call: Callable[[], object], b: int) -> Finding | None:
    """Call once; a note that batch ``b`` is not timed if the model rejects it, else ``None``."""
    try:
        call()
    except Exception as exc:
        return Finding(
            "info",
            f"batch {b} not timed: the model rejected a batch of {b} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "export it with a dynamic batch dimension to time it",
            {"batch": b},
        )
    return None


def _batch_metrics(b: int, stats: LatencyStats, common: dict[str, Any]) -> list[Metric]:
    """Median and p95 latency at batch ``b`` and, above batch 1, its throughput."""
    settings = {**common, "batch": b, "runs": stats.runs, "warmup": stats.warmup}
    few = " (fewer than 20 calls: p95 is close to the maximum)" if stats.runs < 20 else ""
    out = [
        Metric(
            f"latency_p50_b{b}_ms",
            stats.p50_ms,
            unit="ms",
            description=f"median wall time of one forward call at batch {b} over "
            f"{stats.runs} timed calls after {stats.warmup} warm-up calls",
            higher_is_better=False,
            settings=settings,
        ),
        Metric(
            f"latency_p95_b{b}_ms",
            stats.p95_ms,
            unit="ms",
            description=f"95th-percentile wall time of one forward call at batch {b} "
            f"over {stats.runs} timed calls{few}",
            higher_is_better=False,
            settings=settings,
        ),
    ]
    if b > 1:
        out.append(
            Metric(
                f"throughput_b{b}",
                b / (stats.p50_ms / 1e3),
                unit="samples/s",
                description=f"batch {b} divided by its median call time",
                higher_is_better=True,
                settings=settings,
            )
        )
    return out


def _memory_metrics(rss_before: float, rss_after: float) -> list[Metric]:
    """The process's peak RSS and its rise during the latency runs."""
    return [
        Metric(
            "peak_rss_mib",
            rss_after,
            unit="MiB",
            description="peak resident set size of the whole process so far "
            "(getrusage ru_maxrss: includes Python, torch and everything loaded before)",
            higher_is_better=False,
        ),
        Metric(
            "peak_rss_increase_mib",
            rss_after - rss_before,
            unit="MiB",
            description="rise of the process's peak RSS during the latency runs "
            "(0 when an earlier peak was higher, so a lower bound on inference memory)",
            higher_is_better=False,
        ),
    ]

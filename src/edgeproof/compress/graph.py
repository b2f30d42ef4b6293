"""Compressing a graph edgeproof did not build: a third-party ONNX model.

There is no PyTorch module to simulate, prune or factor, so the candidates are the quantizations
that can be written into the given graph itself, with edgeproof's own calibration and QDQ
placement (:mod:`edgeproof.compress.onnx_export`, :mod:`edgeproof.compress.qdq`):

* ``int8-<method>`` — static int8: weights int8 symmetric per output channel (7-bit on CPUs
  without VNNI, as for PyTorch models:
  :func:`~edgeproof.compress.quantize.int8_needs_reduced_range`),
  activations uint8 per tensor at every activation point, each range estimated from ONNX
  Runtime's own values there on the calibration records (:class:`~edgeproof.compress.calibrate.
  ActivationStats`: ``minmax``, ``percentile`` (99.99), ``entropy``, ``mse``);
* ``w8`` — weight-only int8 per output channel (activations stay float);
* ``w4g32`` — weight-only int4, groups of 32 along the reduction axis (opset 21 blocked
  ``DequantizeLinear``, INT4 packed two per byte).

Only ``Conv``/``Gemm``/``MatMul`` nodes whose weight is an initializer are quantized; a graph
without one has no candidate (:class:`~edgeproof.errors.NotApplicableError`). Every candidate is
measured like a PyTorch one (:func:`~edgeproof.compress.measure.measure`: accuracy with a Wilson
interval, size, batch-1 latency, peak RSS) and re-audited **on the graph itself** with the
forward-only checks (:func:`~edgeproof.compress.reaudit.reaudit_graph`: checks that need
gradients are skipped with their reason; ``adversarial`` runs its gradient-free attack on the
quantized graph). Parity is the candidate's agreement with the source graph.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from edgeproof.compress.artefacts import (
    Artefact,
    Outputs,
    graph_latency,
    graph_outputs,
    logit_parity,
)
from edgeproof.compress.calibrate import ActivationStats
from edgeproof.compress.ledger import Candidate, Ledger
from edgeproof.compress.measure import MeasureSettings, measure_artefact
from edgeproof.compress.onnx_export import (
    float_nodes,
    quantizable_ops,
)
from edgeproof.compress.qdq import build_qdq_model
from edgeproof.compress.quantize import (
    Parity,
    QuantConfig,
    activation_ranges,
    onnx_activation_stats,
)
from edgeproof.compress.reaudit import TRUST_CHECKS, at_largest_eps, at_smallest_eps
from edgeproof.compress.search import Budget, Progress, progress_teller
from edgeproof.compress.tasks import (
    Measured,
    Planned,
    TaskCommon,
    WorkerCache,
    candidate_executor,
    run_candidates,
    run_task,
)
from edgeproof.data.dataset import Dataset
from edgeproof.errors import NotApplicableError, SpecError, param
from edgeproof.execute import Executor
from edgeproof.runtime.ort import make_session, run_session
from edgeproof.runtime.threads import compute_threads
from edgeproof.spec import ThreatModel

__all__ = ["GRAPH_RECIPES", "GraphRecipe", "OnnxGraphArtefact", "graph_candidate", "search_graph"]


@dataclass(frozen=True)
class GraphRecipe:
    """One quantization of a given graph: ``scheme`` ``int8`` (static, with ``calibration``),
    ``w8`` or ``w4`` (weight-only; ``group_size`` for 4-bit)."""

    name: str
    scheme: str
    calibration: str | None = None
    group_size: int | None = None

    @property
    def technique(self) -> str:
        return {"int8": "ptq-int8", "w8": "weight-only-int8", "w4": "weight-only-int4"}[self.scheme]


GRAPH_RECIPES: tuple[GraphRecipe, ...] = (
    GraphRecipe("int8-percentile", "int8", "percentile"),
    GraphRecipe("int8-entropy", "int8", "entropy"),
    GraphRecipe("int8-minmax", "int8", "minmax"),
    GraphRecipe("w8", "w8"),
    GraphRecipe("w4g32", "w4", group_size=32),
)
"""The candidates tried on a third-party graph, in order."""


class OnnxGraphArtefact(Artefact):
    """A graph with no PyTorch form: run and timed as :class:`~edgeproof.compress.artefacts.
    GraphArtefact` is, parity is its agreement with the source graph, and the re-audit runs on
    the graph (:attr:`module` is ``None``)."""

    kind = "graph"

    def __init__(
        self,
        onnx_bytes: bytes,
        reference: bytes,
        *,
        float_nodes: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> None:
        self.module = None
        self.onnx_bytes = onnx_bytes
        self.reference = reference
        self.float_nodes = tuple(float_nodes)
        self.notes = tuple(notes)

    def run(self, x: np.ndarray, *, threads: int) -> Outputs:
        return graph_outputs(self.onnx_bytes, x, threads=threads)

    def latency(self, x: np.ndarray, outputs: Outputs, *, threads: int) -> tuple[float, float]:
        return graph_latency(self.onnx_bytes, x, threads=threads)

    def parity(self, x: np.ndarray, outputs: Outputs) -> Parity:
        if not len(x):
            return Parity(1.0, 0.0, 0)
        return logit_parity(graph_outputs(self.reference, x, threads=1).logits, outputs.logits)


def graph_candidate(
    model: onnx.ModelProto,
    recipe: GraphRecipe,
    stats: dict[str, ActivationStats] | None,
    *,
    percentile: float = 99.99,
) -> onnx.ModelProto:
    """``model`` with ``recipe``'s quantization written into it (a copy).

    ``stats`` (:func:`~edgeproof.compress.quantize.onnx_activation_stats` on the calibration
    records) is needed for static int8.

    Raises:
        NotApplicableError: the graph has no ``Conv``/``Gemm``/``MatMul`` with a constant weight.
    """
    ops = quantizable_ops(model)
    if not ops:
        raise NotApplicableError(
            "the graph has no Conv/Gemm/MatMul node with an initializer weight to quantize"
        )
    if recipe.scheme == "int8":
        assert stats is not None and recipe.calibration is not None
        ranges = activation_ranges(model, stats, recipe.calibration, percentile)
        return build_qdq_model(
            model,
            activation_ranges={k: (r.lo, r.hi) for k, r in ranges.items()},
            weight_bits={op.node: QuantConfig("int8").int8_weight_bits for op in ops},
        )
    bits = 4 if recipe.scheme == "w4" else 8
    return build_qdq_model(
        model,
        activation_ranges=None,
        weight_bits={op.node: bits for op in ops},
        group_size=recipe.group_size,
    )


def _float_nodes(model: onnx.ModelProto) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return [f"{n.op_type}:{n.name}" for n in float_nodes(model, str(Path(tmp) / "opt.onnx"))]


def _check_runs(src: bytes, calib: Dataset) -> None:
    try:
        run_session(make_session(src), np.ascontiguousarray(calib.x[:2], np.float32))
    except Exception as exc:  # ONNX Runtime's own error types: a shape/rank mismatch
        raise SpecError(
            f"{param('data')}: the graph cannot run on records of shape {calib.sample_shape} "
            f"({str(exc).splitlines()[0][:200]}); pass data shaped like the graph's input"
        ) from None


_NOTE = "quantized in the given graph (no PyTorch form); re-audited on the graph"


def search_graph(
    model: onnx.ModelProto,
    calib: Dataset,
    evaluation: Dataset,
    budget: Budget,
    threat: ThreatModel,
    *,
    audit_evaluation: Dataset | None = None,
    recipes: Sequence[GraphRecipe] = GRAPH_RECIPES,
    threads: int = 1,
    checks: tuple[str, ...] = TRUST_CHECKS,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    executor: str | Executor = "inprocess",
    jobs: int = 1,
    ray_address: str | None = None,
) -> Ledger:
    """Build and measure the source graph (the baseline) and every recipe within the budget.

    ``calib`` and ``evaluation`` are in the units the graph takes; ``audit_evaluation``
    (default ``evaluation``) holds the same records in the threat model's raw units, for the
    re-audit (the graph wrapped as the audit wraps it). The baseline is measured here, the
    recipes are one task each on ``executor`` (as :func:`~edgeproof.compress.search.search`:
    ``jobs``, ``ray_address``; the activation statistics of the int8 recipes are computed once
    per worker).

    Raises:
        SpecError: the graph does not take the data's sample shape.
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    src = model.SerializeToString()
    _check_runs(src, calib)
    settings = MeasureSettings(threat, tuple(checks), threads, seed, confidence=budget.confidence)
    audit = evaluation if audit_evaluation is None else audit_evaluation
    tell = progress_teller(progress, len(recipes) + 1)
    ex, own = candidate_executor(executor, jobs, ray_address, len(recipes))
    try:
        common = TaskCommon.of(ex, model, threads=threads, seed=seed, checks=checks, tell=tell)
        base = OnnxGraphArtefact(src, src, notes=("the source graph, unchanged",))
        with compute_threads(threads):
            baseline = measure_artefact(
                "fp32",
                "baseline",
                base,
                evaluation,
                settings,
                notes=base.notes,
                audit_data=audit,
                on_stage=partial(tell, "fp32", 0),
            )
        ledger = Ledger(
            baseline,
            threat=at_largest_eps(threat),
            classes=tuple(evaluation.classes),
            certify_threat=at_smallest_eps(threat),
        )
        ledger.artefacts["fp32"] = base
        x_calib = np.ascontiguousarray(calib.x, np.float32)
        shared = _GraphShared(common, model, src, x_calib, evaluation, audit, settings, baseline)
        plans = [Planned(r.name, r.technique) for r in recipes]
        run_candidates(
            ex,
            _graph_task,
            shared,
            list(recipes),
            plans,
            ledger,
            time_budget_s=budget.time_budget_s,
            t0=t0,
            say=say,
            tell=tell,
        )
    finally:
        if own:
            ex.close()
    return ledger


@dataclass(frozen=True)
class _GraphShared:
    """What every recipe task of a graph search reads (sent to each worker once)."""

    common: TaskCommon
    model: onnx.ModelProto
    src: bytes
    x_calib: np.ndarray
    data: Dataset
    audit_data: Dataset
    settings: MeasureSettings
    baseline: Candidate
    stats: WorkerCache = field(default_factory=WorkerCache)
    """The activation statistics of the source graph on the calibration records, computed by
    the first int8 recipe of each process."""


def _graph_task(shared: _GraphShared, item: tuple[int, GraphRecipe]) -> Measured:
    """Build and measure one recipe (module-level: it travels by reference)."""
    return run_task(shared.common, shared, partial(_quantize_and_measure, item=item))


def _quantize_and_measure(shared: _GraphShared, item: tuple[int, GraphRecipe]) -> Measured:
    i, recipe = item
    tell = shared.common.tell
    tb = time.perf_counter()
    try:
        stats = None
        if recipe.scheme == "int8":
            if "stats" not in shared.stats:
                shared.stats["stats"] = onnx_activation_stats(shared.model, shared.x_calib)
            stats = shared.stats["stats"]
        q = graph_candidate(shared.model, recipe, stats)
    except NotApplicableError as exc:
        return Measured(skipped=str(exc))
    built = OnnxGraphArtefact(
        q.SerializeToString(), shared.src, float_nodes=_float_nodes(q), notes=(_NOTE,)
    )
    cand = measure_artefact(
        recipe.name,
        recipe.technique,
        built,
        shared.data,
        shared.settings,
        row_settings=dict(
            scheme=recipe.scheme, calibration=recipe.calibration, group_size=recipe.group_size
        ),
        notes=built.notes,
        baseline=shared.baseline,
        build_s=time.perf_counter() - tb,
        audit_data=shared.audit_data,
        on_stage=None if tell is None else partial(tell, recipe.name, i),
    )
    return Measured(cand, built)

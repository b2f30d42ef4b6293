"""What a compression candidate ships, and how it runs: one graph, or an early-exit cascade.

Every candidate ends as an :class:`Artefact`; :func:`edgeproof.compress.measure.measure` asks it
the same questions for every kind — its logits in ONNX Runtime, its batch-1 latency, how its
PyTorch form (the module that is re-audited and written as ``model.safetensors``) agrees with
what runs, and, where the cost depends on the input, its expected MACs:

* :class:`GraphArtefact` — one ONNX graph (fp32, QDQ, pruned, factored): logits of one session
  over the records; latency by :func:`edgeproof.runtime.ort.session_latency` (batch 1 on the
  first record, 5 warm-up calls then 50 timed); parity of the PyTorch module against it.
* :class:`CascadeArtefact` — an early-exit cascade (:mod:`edgeproof.compress.earlyexit`): the
  ONNX Runtime cascade of per-segment graphs, one record at a time, each record timed
  (p50/p95 over the records); parity of predictions against the PyTorch cascade (logits compared
  where both took the same exit); expected MACs over the exits actually taken. ``model.onnx`` is
  the all-exits graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgeproof.compress.earlyexit.backbone import EarlyExitModel
from edgeproof.compress.earlyexit.cascade import CascadeModule, OrtCascade
from edgeproof.compress.earlyexit.thresholds import ExitRule, cascade_predict, exit_costs, mac_costs
from edgeproof.compress.onnx_export import export_onnx
from edgeproof.compress.quantize import Parity
from edgeproof.runtime.ort import make_session, per_record_latency_ms, run_session, session_latency

__all__ = [
    "Artefact",
    "CascadeArtefact",
    "GraphArtefact",
    "Outputs",
    "graph_latency",
    "graph_outputs",
    "logit_parity",
]


@dataclass(frozen=True)
class Outputs:
    """An artefact's outputs on some records: logits ``(N, K)``, and where the artefact has
    them, each record's latency (ms) and the exit it took."""

    logits: np.ndarray
    latency_ms: np.ndarray | None = None
    exit_index: np.ndarray | None = None


class Artefact(ABC):
    """What a candidate ships (``onnx_bytes``) and its PyTorch form (``module``).

    Attributes:
        kind: ``graph`` or ``cascade``.
        module: the PyTorch module that is re-audited and whose state dict is written;
            ``None`` for a graph with no PyTorch form (a third-party ONNX model).
        onnx_bytes: the graph written as ``model.onnx``; its size is the candidate's size and
            a fresh process running it gives the peak RSS.
        float_nodes: ``op_type:name`` of the nodes ONNX Runtime still runs in float.
        notes: what a reader of the ledger should know about this kind of artefact.
    """

    kind: ClassVar[str]
    module: nn.Module | None
    onnx_bytes: bytes
    float_nodes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @abstractmethod
    def run(self, x: np.ndarray, *, threads: int) -> Outputs:
        """Run the shipped form (ONNX Runtime) on every record of ``x``."""

    @abstractmethod
    def latency(self, x: np.ndarray, outputs: Outputs, *, threads: int) -> tuple[float, float]:
        """``(p50, p95)`` latency in ms of one record at batch 1."""

    @abstractmethod
    def parity(self, x: np.ndarray, outputs: Outputs) -> Parity:
        """How the PyTorch form agrees with the shipped form on ``x``."""

    def expected_macs(self, outputs: Outputs) -> float | None:
        """Mean MACs per record where the cost depends on the input, else ``None``."""
        return None

    def settings(
        self, x: np.ndarray, y: np.ndarray, outputs: Outputs, *, threads: int
    ) -> dict[str, Any]:
        """Kind-specific facts for the ledger row (e.g. exit rates)."""
        return {}


def _torch_logits(module: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    module.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xt = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], np.float32))
            parts.append(module(xt).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class GraphArtefact(Artefact):
    """One ONNX graph and the PyTorch module it was exported from (or simulates)."""

    kind = "graph"

    module: nn.Module

    def __init__(
        self,
        module: nn.Module,
        onnx_bytes: bytes,
        *,
        float_nodes: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.onnx_bytes = onnx_bytes
        self.float_nodes = tuple(float_nodes)
        self.notes = tuple(notes)

    def run(self, x: np.ndarray, *, threads: int) -> Outputs:
        return graph_outputs(self.onnx_bytes, x, threads=threads)

    def latency(self, x: np.ndarray, outputs: Outputs, *, threads: int) -> tuple[float, float]:
        return graph_latency(self.onnx_bytes, x, threads=threads)

    def parity(self, x: np.ndarray, outputs: Outputs) -> Parity:
        if not len(x):
            return Parity(1.0, 0.0, 0)
        return logit_parity(_torch_logits(self.module, x), outputs.logits)


def graph_outputs(onnx_bytes: bytes, x: np.ndarray, *, threads: int) -> Outputs:
    """The first output of one ONNX Runtime session of the graph over every record of ``x``."""
    return Outputs(run_session(make_session(onnx_bytes, threads=threads), x)[0])


def graph_latency(onnx_bytes: bytes, x: np.ndarray, *, threads: int) -> tuple[float, float]:
    """``(p50, p95)`` ms of one batch-1 call on the first record
    (:func:`~edgeproof.runtime.ort.session_latency`)."""
    lat = session_latency(onnx_bytes, x[0], threads=threads)
    return lat.p50_ms, lat.p95_ms


def logit_parity(ref: np.ndarray, got: np.ndarray) -> Parity:
    """Top-1 agreement and the largest absolute logit difference of two forms, same records."""
    agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return Parity(agree, float(np.max(np.abs(ref - got))), len(ref))


class CascadeArtefact(Artefact):
    """An early-exit cascade: per-segment graphs run by :class:`OrtCascade`, and the all-exits
    graph written as ``model.onnx``; its PyTorch form is the :class:`CascadeModule`."""

    kind = "cascade"

    def __init__(
        self,
        model: EarlyExitModel,
        rule: ExitRule,
        segments: Sequence[bytes],
        all_exits: bytes,
    ) -> None:
        self.model = model
        self.rule = rule
        self.segments = tuple(segments)
        self.module = CascadeModule(model, rule)
        self.onnx_bytes = all_exits
        self.notes = (
            "latency: ONNX Runtime cascade of per-segment graphs, per record over the evaluation "
            "data",
            "model.onnx is the all-exits graph; the exit decision runs between segment graphs",
            "peak RSS of the all-exits graph (an upper bound for the cascade)",
            "trust re-audit on the PyTorch cascade: each record answered by the exit the rule "
            "picks, gradients through that exit's logits",
        )

    def run(self, x: np.ndarray, *, threads: int) -> Outputs:
        out = OrtCascade(self.segments, self.rule, threads=threads).run(x)
        return Outputs(out.logits, out.latency_ms, out.exit_index)

    def latency(self, x: np.ndarray, outputs: Outputs, *, threads: int) -> tuple[float, float]:
        assert outputs.latency_ms is not None
        p50, p95 = np.percentile(outputs.latency_ms, [50, 95])
        return float(p50), float(p95)

    def parity(self, x: np.ndarray, outputs: Outputs) -> Parity:
        ref = cascade_predict(self.model, self.rule, x)
        if not len(x):
            return Parity(1.0, 0.0, 0)
        same = np.asarray(outputs.exit_index == ref.exit_index)
        diff = float(np.abs(outputs.logits[same] - ref.logits[same]).max()) if same.any() else 0.0
        agree = float(np.mean(outputs.logits.argmax(1) == ref.pred))
        return Parity(agree, diff, len(x))

    def expected_macs(self, outputs: Outputs) -> float | None:
        assert outputs.exit_index is not None
        return float(exit_costs(self.model)[outputs.exit_index].mean())

    def settings(
        self, x: np.ndarray, y: np.ndarray, outputs: Outputs, *, threads: int
    ) -> dict[str, Any]:
        assert outputs.exit_index is not None
        exits = outputs.exit_index
        correct = outputs.logits.argmax(1) == y
        rates, accs = [], []
        for i in range(self.model.num_exits):
            mask = exits == i
            rates.append(round(float(mask.mean()), 4) if len(exits) else 0.0)
            accs.append(round(float(correct[mask].mean()), 4) if mask.any() else None)
        full = float(mac_costs(self.model)[2])
        expected = self.expected_macs(outputs) or 0.0
        ref = cascade_predict(self.model, self.rule, x)
        backbone = export_onnx(self.model.backbone, self.model.input_shape).SerializeToString()
        full_lat = per_record_latency_ms(backbone, x, threads=threads)
        return {
            "exits": list(self.model.exit_names),
            "exit_rates": rates,
            "exit_accuracy": accs,
            "exit_agreement": float(np.mean(ref.exit_index == exits)) if len(x) else 1.0,
            "expected_macs": expected,
            "full_macs": full,
            "mac_ratio": round(expected / full, 4) if full else None,
            "full_latency_p50_ms": float(np.percentile(full_lat, 50)),
            "segment_bytes": [len(s) for s in self.segments],
        }

"""The cascade in ONNX Runtime: one graph per segment, run one sample at a time; its evaluation.

One graph per segment — stage i + head i with outputs ``features`` and ``logits`` — and the final
stage alone (:func:`export_segments`). :class:`OrtCascade` runs the sessions at batch 1, deciding in
NumPy between sessions; each sample's latency (sessions + decisions) is timed with
``time.perf_counter``. :class:`CascadeModule` is the same cascade in PyTorch as one module (the
exit chosen per sample by the rule), what the compression ledger re-audits. Parity: ORT cascade
predictions and exits vs the PyTorch cascade on the same inputs.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn

from edgeproof.compress.earlyexit.backbone import EarlyExitModel
from edgeproof.compress.earlyexit.thresholds import (
    CascadeOutput,
    ExitRule,
    all_exit_logits,
    cascade_from,
    exit_costs,
    exit_scores,
    mac_costs,
)
from edgeproof.compress.onnx_export import export_onnx
from edgeproof.data.dataset import Dataset
from edgeproof.errors import InternalError, OptionError, SpecError
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import Interval, Table
from edgeproof.runtime.ort import make_session, per_record_latency_ms
from edgeproof.serialize import JsonFields

__all__ = [
    "CascadeModule",
    "CascadeParity",
    "EarlyExitReport",
    "ExitStats",
    "OrtCascade",
    "evaluate_early_exit",
    "export_all_exits",
    "export_segments",
]


class _Segment(nn.Module):
    def __init__(self, stage: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stage = stage
        self.head = head

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.stage(h)
        return f, self.head(f)


class _AllExits(nn.Module):
    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return (out[-1], *out[:-1])


def _export(module: nn.Module, shape: Sequence[int], outputs: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in ("input", *outputs)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # nn.LSTM's static shape check
        # no h0/c0 inputs: ONNX LSTM starts from zeros at any batch size, which is what we want
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, *shape),),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes=dynamic,
        )
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    return buf.getvalue()


def export_segments(model: EarlyExitModel) -> tuple[bytes, ...]:
    """One ONNX graph per segment: stage i + head i (outputs ``features``, ``logits``) for each
    early exit, then the final stage (output ``logits``); opset 17, dynamic batch."""
    out = []
    for i, (_, stage) in enumerate(model.stages):
        shape = model.stage_input_shapes[i]
        if i < len(model.heads):
            out.append(_export(_Segment(stage, model.heads[i]), shape, ("features", "logits")))
        else:
            out.append(_export(stage, shape, ("logits",)))
    return tuple(out)


def export_all_exits(model: EarlyExitModel) -> bytes:
    """One graph computing every exit: outputs ``logits`` (final) then ``exit<i>_logits``; its
    metadata names output 0 as the one an audit reads (:data:`~edgeproof.models.interface.
    SCORES_OUTPUT_KEY`)."""
    import onnx

    from edgeproof.models.interface import SCORES_OUTPUT_KEY

    names = ("logits", *[f"exit{i}_logits" for i in range(len(model.heads))])
    graph = onnx.load_from_string(_export(_AllExits(model), model.input_shape, names))
    # which output an audit reads (the final exit: the full network), for edgeproof audit
    onnx.helper.set_model_props(graph, {SCORES_OUTPUT_KEY: "0"})
    result: bytes = graph.SerializeToString()
    return result


class OrtCascade:
    """The cascade in ONNX Runtime: one session per segment, one sample at a time."""

    def __init__(self, segments: Sequence[bytes], rule: ExitRule, *, threads: int = 1) -> None:
        if len(segments) != len(rule.thresholds) + 1:
            raise OptionError(
                "thresholds",
                f"{len(rule.thresholds)} thresholds for {len(segments) - 1} exits",
                "give one threshold per early exit",
            )
        self.rule = rule
        self.threads = threads
        self.sessions = [make_session(s, threads=threads) for s in segments]
        self._inputs = [s.get_inputs()[0].name for s in self.sessions]  # type: ignore[attr-defined]
        self._thr = rule.score_thresholds()

    def run_one(self, x: np.ndarray) -> tuple[int, np.ndarray]:
        """``(exit index, logits)`` of one sample (``x`` shaped ``(1, *input_shape)``)."""
        h = x
        last = len(self.sessions) - 1
        for i, (sess, name) in enumerate(zip(self.sessions, self._inputs)):
            outs = sess.run(None, {name: h})  # type: ignore[attr-defined]
            if i == last:
                return i, outs[0]
            h, logits = outs
            if exit_scores(logits, self.rule.criterion)[0] >= self._thr[i]:
                return i, logits
        raise InternalError("the cascade has no final segment")  # pragma: no cover

    def run(self, x: np.ndarray, *, warmup: int = 5) -> CascadeOutput:
        """Run every sample of ``x`` through the cascade; latency per sample in ms."""
        xs = np.ascontiguousarray(x, np.float32)
        for j in range(min(warmup, len(xs))):
            self.run_one(xs[j : j + 1])
        n = len(xs)
        exits = np.zeros(n, np.int64)
        logits: list[np.ndarray] = []
        lat = np.zeros(n, np.float64)
        for j in range(n):
            t0 = time.perf_counter()
            e, lg = self.run_one(xs[j : j + 1])
            lat[j] = (time.perf_counter() - t0) * 1000.0
            exits[j] = e
            logits.append(lg[0])
        stacked = np.stack(logits) if logits else np.zeros((0, 0), np.float32)
        return CascadeOutput(stacked.argmax(1), exits, stacked, lat)


# --------------------------------------------------------------------------------------------
# Evaluation report


@dataclass(frozen=True)
class CascadeParity:
    """ONNX Runtime cascade vs PyTorch cascade on the same inputs."""

    prediction_agreement: float
    exit_agreement: float
    max_abs_logit_diff: float
    samples: int


@dataclass(frozen=True)
class ExitStats(JsonFields):
    """One exit over the evaluation data (exits measured in the ONNX Runtime cascade)."""

    index: int
    name: str
    threshold: float | None
    exits: int
    exit_rate: float
    accuracy: float | None
    accuracy_ci: Interval | None
    macs: float
    mean_latency_ms: float | None
    p50_latency_ms: float | None


@dataclass(frozen=True)
class EarlyExitReport(JsonFields):
    """The cascade on evaluation data: accuracy, exits, expected MACs, per-sample ORT latency."""

    rule: ExitRule
    samples: int
    full_accuracy: float
    accuracy: float
    accuracy_ci: Interval
    exits: tuple[ExitStats, ...]
    expected_macs: float
    full_macs: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_mean_ms: float
    full_latency_p50_ms: float
    full_latency_mean_ms: float
    threads: int
    parity: CascadeParity
    predictions: np.ndarray = field(metadata={"json": False})
    exit_index: np.ndarray = field(metadata={"json": False})

    #: each ratio after the two numbers it divides
    json_order = (
        "rule",
        "samples",
        "full_accuracy",
        "accuracy",
        "accuracy_ci",
        "exits",
        "expected_macs",
        "full_macs",
        "mac_ratio",
        ...,
        "latency_ratio",
        "threads",
        "parity",
    )

    @property
    def mac_ratio(self) -> float:
        """Expected MACs / full-model MACs."""
        return self.expected_macs / self.full_macs if self.full_macs else float("nan")

    @property
    def latency_ratio(self) -> float:
        """Mean cascade latency / mean full-model latency (both ORT, batch 1, same data)."""
        return self.latency_mean_ms / self.full_latency_mean_ms

    def table(self) -> Table:
        rows = [
            [
                e.name,
                e.threshold,
                e.exits,
                round(e.exit_rate, 4),
                None if e.accuracy is None else round(e.accuracy, 4),
                int(e.macs),
                None if e.mean_latency_ms is None else round(e.mean_latency_ms, 4),
                None if e.p50_latency_ms is None else round(e.p50_latency_ms, 4),
            ]
            for e in self.exits
        ]
        return Table(
            "early_exits",
            "Early exits",
            ["exit", "threshold", "samples", "exit_rate", "accuracy", "MACs", "mean_ms", "p50_ms"],
            rows,
            f"{self.rule.criterion} rule; ONNX Runtime cascade, batch 1, {self.threads} thread(s); "
            f"expected MACs {self.expected_macs:.0f} of {self.full_macs:.0f}.",
        )


def evaluate_early_exit(
    model: EarlyExitModel,
    rule: ExitRule,
    data: Dataset,
    *,
    threads: int = 1,
    segments: Sequence[bytes] | None = None,
) -> EarlyExitReport:
    """Run the cascade in ONNX Runtime over ``data`` (per-sample latency) and check its parity
    with the PyTorch cascade; the full model's ORT latency is measured on the same samples."""
    if len(data) == 0:
        raise SpecError(f"{data.name}: no records to evaluate the early-exit cascade on")
    segments = tuple(segments) if segments is not None else export_segments(model)
    all_logits = all_exit_logits(model, data.x)
    torch_out = cascade_from(all_logits, rule)
    ort_out = OrtCascade(segments, rule, threads=threads).run(data.x)
    assert ort_out.latency_ms is not None
    same_exit = ort_out.exit_index == torch_out.exit_index
    diff = (
        float(np.abs(ort_out.logits[same_exit] - torch_out.logits[same_exit]).max())
        if same_exit.any()
        else float("nan")
    )
    parity = CascadeParity(
        float((ort_out.pred == torch_out.pred).mean()), float(same_exit.mean()), diff, len(data)
    )
    with warnings.catch_warnings():  # nn.LSTM without h0/c0: zeros at any batch size (fine)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        base_onnx = export_onnx(model.backbone, model.input_shape).SerializeToString()
    full_lat = per_record_latency_ms(base_onnx, data.x, threads=threads)
    costs = exit_costs(model)
    y = data.y
    correct = ort_out.pred == y
    stats = []
    thresholds: list[float | None] = [t if math.isfinite(t) else None for t in rule.thresholds]
    for i in range(model.num_exits):
        mask = ort_out.exit_index == i
        k = int(mask.sum())
        stats.append(
            ExitStats(
                index=i,
                name=model.exit_names[i],
                threshold=thresholds[i] if i < len(thresholds) else None,
                exits=k,
                exit_rate=k / len(data),
                accuracy=float(correct[mask].mean()) if k else None,
                accuracy_ci=wilson_interval(int(correct[mask].sum()), k) if k else None,
                macs=float(costs[i]),
                mean_latency_ms=float(ort_out.latency_ms[mask].mean()) if k else None,
                p50_latency_ms=float(np.median(ort_out.latency_ms[mask])) if k else None,
            )
        )
    n_correct = int(correct.sum())
    backbone_macs = mac_costs(model)[2]
    return EarlyExitReport(
        rule=rule,
        samples=len(data),
        full_accuracy=float((all_logits[-1].argmax(1) == y).mean()),
        accuracy=n_correct / len(data),
        accuracy_ci=wilson_interval(n_correct, len(data)),
        exits=tuple(stats),
        expected_macs=float(costs[ort_out.exit_index].mean()),
        full_macs=float(backbone_macs),
        latency_p50_ms=float(np.percentile(ort_out.latency_ms, 50)),
        latency_p95_ms=float(np.percentile(ort_out.latency_ms, 95)),
        latency_mean_ms=float(ort_out.latency_ms.mean()),
        full_latency_p50_ms=float(np.percentile(full_lat, 50)),
        full_latency_mean_ms=float(full_lat.mean()),
        threads=threads,
        parity=parity,
        predictions=ort_out.pred,
        exit_index=ort_out.exit_index,
    )


class CascadeModule(nn.Module):
    """The cascade as one PyTorch module: what the compression ledger re-audits.

    Every exit's logits are computed; each sample is answered by the exit ``rule`` picks (scores
    as :func:`~edgeproof.compress.earlyexit.thresholds.exit_scores`, in float64 from the
    logits). The choice is piecewise constant in the input, so gradients flow through the chosen
    exit's logits (as through the active branch of a ReLU): a gradient attack on this module
    attacks the cascade that ships, not the backbone alone.
    """

    def __init__(self, model: EarlyExitModel, rule: ExitRule) -> None:
        super().__init__()
        if len(rule.thresholds) != model.num_exits - 1:
            raise OptionError(
                "thresholds",
                f"{len(rule.thresholds)} thresholds for {model.num_exits - 1} exits",
                "give one threshold per early exit",
            )
        self.model = model.eval()
        self.rule = rule
        self._thr = [float(t) for t in rule.score_thresholds()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.model(x)
        n = outs[-1].shape[0]
        exit_at = torch.full((n,), len(outs) - 1, dtype=torch.long)
        undecided = torch.ones(n, dtype=torch.bool)
        for i, (logits, thr) in enumerate(zip(outs[:-1], self._thr)):
            go = undecided & (_scores(logits.detach(), self.rule.criterion) >= thr)
            exit_at[go] = i
            undecided &= ~go
        return torch.stack(outs)[exit_at, torch.arange(n)]


def _scores(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """:func:`exit_scores` in torch (float64)."""
    z = logits.double()
    p = torch.softmax(z - z.max(dim=1, keepdim=True).values, dim=1)
    if criterion == "max_softmax":
        return p.max(dim=1).values
    return (p * torch.log(p.clamp_min(1e-300))).sum(dim=1)

"""Compression as a library call: search candidates, select one, write it and its ledger.

:func:`compress` returns a :class:`CompressionResult`; ``edgeproof compress``
(:mod:`edgeproof.cli.compress`) maps each option onto one of its arguments.
:func:`write_artefacts` writes, each file atomically, into ``out``:

* ``model.onnx`` — the chosen candidate's graph (QDQ for quantized candidates; the all-exits
  graph for an early-exit cascade);
* ``model.safetensors`` — its PyTorch state dict (for quantized candidates: the dequantized
  weights of the simulation) with edgeproof model metadata in the header: the source
  architecture, and ``arch`` itself only when this state dict loads into it;
* ``compress.json`` — chosen candidate, budget, selection message, threat model, where the
  candidates ran (``execution``: the executor and its workers) and the whole ledger;
* ``report.json`` (+ ``report.html`` when the HTML renderer is available) — a Report with one
  ``compress`` check holding the ledger table and the Pareto figure. A report that does not match
  its schema is an internal error (raised), never a silent omission.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgeproof.atomic import atomic_write_bytes, atomic_write_text
from edgeproof.compress.earlyexit.build import EarlyExitConfig
from edgeproof.compress.ledger import Ledger
from edgeproof.compress.reaudit import TRUST_CHECKS, TrustCheck
from edgeproof.compress.recipes import EarlyExit, default_recipes, with_budget_drop
from edgeproof.compress.search import Budget, Progress, resolve_compress_threat, search
from edgeproof.compress.selection import Selection, select
from edgeproof.compress.steps import Chain
from edgeproof.data.dataset import Dataset
from edgeproof.errors import InternalError, OptionError, SpecError, param
from edgeproof.execute import Executor
from edgeproof.models.interface import ModelInterface
from edgeproof.serialize import JsonFields
from edgeproof.spec import InputSpec, ThreatModel

if TYPE_CHECKING:
    from edgeproof.models.loaded import LoadedModel

__all__ = [
    "ARTEFACT_FILES",
    "CompressionResult",
    "DataPart",
    "compress",
    "compress_graph",
    "compress_report",
    "data_parts",
    "write_artefacts",
]

ARTEFACT_FILES: tuple[str, ...] = (
    "model.onnx",
    "model.safetensors",
    "compress.json",
    "report.json",
    "report.html",
)
"""The files :func:`write_artefacts` writes into its folder."""


@dataclass(frozen=True)
class DataPart(JsonFields):
    """One data set of a compression: ``role`` (``calibration`` or ``evaluation``), its summary
    (:meth:`Dataset.to_json`) and how it was drawn from what the caller gave (``split``)."""

    role: str
    summary: dict[str, Any] = field(metadata={"flatten": True})
    split: str


def data_parts(
    data: Dataset, calib: Dataset, evaluation: Dataset, given: bool
) -> tuple[DataPart, ...]:
    """The calibration and evaluation parts, each with a sentence saying how it was split."""
    k, n = len(calib), len(data)
    if given:
        c_split = f"the first {k} of the {n} records of {data.name}"
        e_split = f"all {len(evaluation)} records of {evaluation.name}, given as the evaluation set"
    else:
        c_split = (
            f"records 0-{k - 1} (the first {k}) of the {n} records of {data.name}: no "
            "evaluation set was given, so the first min(calib_size, N/2) records calibrate"
        )
        e_split = (
            f"records {k}-{n - 1} (the other {n - k}) of {data.name}; calibration and "
            "evaluation share no record"
        )
    return (
        DataPart("calibration", calib.to_json(), c_split),
        DataPart("evaluation", evaluation.to_json(), e_split),
    )


@dataclass
class CompressionResult:
    """The ledger, the selection, the chosen module and graph, and what produced them.

    ``threat`` is the threat model of the re-audit (attacked at its largest ε); ``arch`` the
    source model's architecture (``zoo:lenet5``), if known. ``module`` is ``None`` when the
    source was a graph with no PyTorch form (:func:`compress_graph`): no ``model.safetensors``
    is written then.
    """

    ledger: Ledger
    selection: Selection
    module: nn.Module | None
    onnx_bytes: bytes
    budget: Budget
    spec: InputSpec
    threat: ThreatModel
    arch: str | None = None
    data: tuple[DataPart, ...] = ()
    """The calibration and evaluation sets and how they were split (:func:`data_parts`)."""
    interface: str | None = None
    """For a graph with several inputs or outputs, how it was called (which input the data fed,
    the other inputs' values, the output read; :mod:`edgeproof.compress.bind`)."""

    def choose(self, name: str) -> CompressionResult:
        """This result with candidate ``name`` as the one written (e.g. an early-exit cascade
        that is larger but faster than the budget's pick).

        Raises:
            OptionError: no candidate of that name (the message lists them).
        """
        rows = {c.name: c for c in self.ledger.rows}
        if name not in rows:
            raise OptionError(
                "name", f"no candidate {name!r} in the ledger", f"use one of {', '.join(rows)}"
            )
        art = self.ledger.artefact(name)
        cand = rows[name]
        base = self.ledger.baseline.accuracy
        msg = (
            f"{name} chosen by the caller (accuracy {cand.accuracy:.4f} vs baseline "
            f"{base:.4f}, {cand.size_bytes} bytes)"
        )
        met = self.selection.met_budget and cand is self.selection.chosen
        sel = replace(self.selection, chosen=cand, met_budget=met, message=msg)
        return replace(self, selection=sel, module=art.module, onnx_bytes=art.onnx_bytes)

    def errored_checks(self) -> list[tuple[str, TrustCheck]]:
        """``(candidate, check)`` for every re-audit check that refused its input or crashed."""
        return [
            (c.name, t) for c in self.ledger.rows for t in c.trust_checks if t.status == "error"
        ]


def _split(data: Dataset, calib_size: int) -> tuple[Dataset, Dataset]:
    n = len(data)
    if n < 4:
        raise SpecError(
            f"{param('data')}: {data.name} has {n} records; compression needs at least 4 "
            "(half calibrate, half evaluate)"
        )
    k = min(calib_size, n // 2)
    return data.subset(np.arange(k)), data.subset(np.arange(k, n))


def _calib_and_eval(
    data: Dataset, evaluation: Dataset | None, calib_size: int
) -> tuple[Dataset, Dataset, tuple[DataPart, ...]]:
    """The calibration and evaluation sets and how they were drawn: without ``evaluation`` the
    first ``min(calib_size, N/2)`` records of ``data`` and the rest, with it the first
    ``calib_size`` records and ``evaluation`` itself."""
    if evaluation is None:
        calib, held_out = _split(data, calib_size)
    else:
        calib, held_out = data.subset(np.arange(min(calib_size, len(data)))), evaluation
    return calib, held_out, data_parts(data, calib, held_out, evaluation is not None)


def compress(
    module: nn.Module,
    spec: InputSpec,
    data: Dataset,
    *,
    evaluation: Dataset | None = None,
    budget: Budget | None = None,
    threat: ThreatModel | None = None,
    threads: int = 1,
    calib_size: int = 256,
    checks: tuple[str, ...] = TRUST_CHECKS,
    seed: int = 0,
    recipes: Sequence[Chain] | None = None,
    early_exit: EarlyExitConfig | None = None,
    arch: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    executor: str | Executor = "inprocess",
    jobs: int = 1,
    ray_address: str | None = None,
) -> CompressionResult:
    """Search, measure and select: the library form of ``edgeproof compress``.

    Without ``evaluation`` the first ``min(calib_size, N/2)`` records of ``data`` calibrate and
    the rest evaluate (so calibration and evaluation never share a record). ``threat``: the
    re-audit's threat model; ``None`` means what ``edgeproof audit`` resolves for this model and
    the evaluation data (ε = 1, 3, 10 % of the domain width), attacked at its largest ε.
    ``recipes``: the chains to try (default :func:`~edgeproof.compress.recipes.default_recipes`);
    ``early_exit`` puts ``Chain(EarlyExit(early_exit))`` first (its ``max_drop`` defaults to the
    budget's, 1 % without one). ``log`` is told one line per candidate, ``progress`` every
    stage of every candidate (:data:`~edgeproof.compress.search.Progress`).
    ``executor``, ``jobs``, ``ray_address``: where the candidates run, one task each, with the
    same ledger everywhere (:func:`~edgeproof.compress.search.search`; compress.json says where).
    """
    budget = budget or Budget()
    if tuple(data.sample_shape) != tuple(spec.shape):
        raise SpecError(
            f"{param('data')}: {data.name} has sample shape {data.sample_shape} but the model "
            f"expects {spec.shape}; pass data shaped like the model input"
        )
    calib, evaluation, parts = _calib_and_eval(data, evaluation, calib_size)
    threat = resolve_compress_threat(module, spec, evaluation, threat)
    if threat.input.shape != tuple(spec.shape):
        raise SpecError(
            f"{param('shape')}: the threat model's input shape {threat.input.shape} is not the "
            f"model's {spec.shape}; build the threat model on the model's input specification"
        )
    chains = list(default_recipes() if recipes is None else recipes)
    if early_exit is not None:
        chains.insert(0, Chain(EarlyExit(with_budget_drop(early_exit, budget.max_drop))))
    ledger = search(
        module,
        spec,
        calib,
        evaluation,
        budget,
        recipes=chains,
        threat=threat,
        threads=threads,
        checks=checks,
        seed=seed,
        log=log,
        progress=progress,
        executor=executor,
        jobs=jobs,
        ray_address=ray_address,
    )
    sel = select(ledger, budget.max_drop, budget.max_size, max_class_drop=budget.class_drop_limit)
    art = ledger.artefact(sel.chosen.name)
    return CompressionResult(
        ledger, sel, art.module, art.onnx_bytes, budget, spec, threat, arch, parts
    )


def compress_graph(
    model: bytes,
    spec: InputSpec,
    data: Dataset,
    *,
    evaluation: Dataset | None = None,
    budget: Budget | None = None,
    threat: ThreatModel | None = None,
    threads: int = 1,
    calib_size: int = 256,
    checks: tuple[str, ...] = TRUST_CHECKS,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    interface: ModelInterface | None = None,
    name: str = "the ONNX graph",
    executor: str | Executor = "inprocess",
    jobs: int = 1,
    ray_address: str | None = None,
) -> CompressionResult:
    """:func:`compress` for a graph with no PyTorch form: a third-party ONNX model (serialised
    bytes). A graph with several inputs or outputs is called as ``interface`` says (the input
    the data feeds, the other inputs' values, the output holding the scores), as the audit
    calls it (:func:`~edgeproof.compress.bind.bind_graph`); the model written keeps all of the
    source's inputs and outputs. The candidates are the quantizations written into that graph
    (:mod:`edgeproof.compress.graph`), each measured on the evaluation records and re-audited
    on the graph with the forward-only checks. ``data``/``evaluation`` are in raw input units;
    with a normalisation outside the model or per-feature ranges in ``threat``, the graph is fed
    the transformed records, as the audit feeds it. ``executor``, ``jobs``, ``ray_address``: as
    :func:`compress`.

    Raises:
        SpecError: the data do not have the graph's sample shape, or too few records.
        ModelError: ONNX Runtime cannot load the graph.
    """
    import onnx

    from edgeproof.compress.bind import bind_graph
    from edgeproof.compress.graph import search_graph
    from edgeproof.models.loaded import LoadedModel
    from edgeproof.runner import resolve_threat
    from edgeproof.runtime.ort import make_session

    budget = budget or Budget()
    bound = bind_graph(onnx.load_from_string(model), interface or ModelInterface(), name)
    proto = bound.model
    model = proto.SerializeToString() if bound.is_bound else model
    calib, evaluation, parts = _calib_and_eval(data, evaluation, calib_size)
    loaded = LoadedModel(path=None, format="onnx", session=make_session(model), spec=spec)
    if threat is None:
        threat = resolve_threat(loaded, evaluation)
    view = loaded.for_spec(threat.input)
    ledger = search_graph(
        proto,
        _network_units(view, threat, calib),
        _network_units(view, threat, evaluation),
        budget,
        threat,
        audit_evaluation=evaluation,
        threads=threads,
        checks=checks,
        seed=seed,
        log=log,
        progress=progress,
        executor=executor,
        jobs=jobs,
        ray_address=ray_address,
    )
    if bound.is_bound:  # what is written keeps the source graph's inputs and outputs
        for name in ledger.artefacts:
            art = ledger.artefact(name)
            art.onnx_bytes = bound.unbind(onnx.load_from_string(art.onnx_bytes)).SerializeToString()
    sel = select(ledger, budget.max_drop, budget.max_size, max_class_drop=budget.class_drop_limit)
    onnx_bytes = ledger.artefact(sel.chosen.name).onnx_bytes
    described = bound.described if bound.is_bound else None
    return CompressionResult(
        ledger, sel, None, onnx_bytes, budget, spec, threat, None, parts, interface=described
    )


def _network_units(view: LoadedModel, threat: ThreatModel, data: Dataset) -> Dataset:
    """``data`` as the graph takes it: the audit's input transform (outside normalisation,
    per-feature ranges) applied to the raw records."""
    x = torch.from_numpy(np.ascontiguousarray(data.in_units_of(threat.input).x, np.float32))
    return data if view.input_affine is None else _with_x(data, view.preprocess(x).numpy())


def _with_x(data: Dataset, x: np.ndarray) -> Dataset:
    return replace(data, x=np.ascontiguousarray(x, np.float32), domain=None)


def write_artefacts(
    result: CompressionResult,
    out: str | Path,
    *,
    source: str,
    data: Dataset,
    seed: int = 0,
    duration_s: float = 0.0,
) -> list[Path]:
    """Write model.onnx, model.safetensors, compress.json and report.json (+ html), each
    atomically.

    Raises:
        InternalError: the report does not match its schema (a bug: the other files are
            written, the message says which field).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_bytes(out / "model.onnx", result.onnx_bytes)]
    if result.module is not None:
        paths.append(atomic_write_bytes(out / "model.safetensors", _safetensors(result)))
    meta = _compress_json(result, source)
    paths.append(atomic_write_text(out / "compress.json", json.dumps(meta, indent=2, default=str)))
    written = [p.name for p in paths] + ["report.json", "report.html"]
    report = compress_report(result, source, data, seed, duration_s, artefacts=written)
    try:
        paths.append(report.write_json(out / "report.json"))
    except Exception as exc:  # jsonschema.ValidationError: our own bug, said as such
        raise InternalError(
            f"report.json of the compression does not match the report schema ({exc}); the "
            f"other files were written to {out}"
        ) from exc
    try:
        from edgeproof.report.html import write_html
    except ImportError:  # the HTML renderer is optional
        return paths
    paths.append(write_html(report, out / "report.html"))
    return paths


def _arch_fits(result: CompressionResult, tensors: dict[str, torch.Tensor]) -> bool:
    """Whether the chosen state dict loads into the source architecture unchanged."""
    if result.arch is None:
        return False
    from edgeproof.models.zoo import arch_from_string

    spec = result.spec
    try:
        ref = arch_from_string(result.arch, spec.shape, spec.num_classes or 1, spec.normalization)
    except Exception:  # an architecture we cannot rebuild here cannot be claimed to fit
        return False
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    return want == {k: tuple(v.shape) for k, v in tensors.items()}


def _safetensors(result: CompressionResult) -> bytes:
    from safetensors.torch import save as st_save

    assert result.module is not None
    tensors = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in result.module.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    spec = result.spec
    header = {
        "format": "edgeproof-model",
        "version": 1,
        "arch": result.arch if _arch_fits(result, tensors) else None,
        "source_arch": result.arch,
        "spec": spec.to_json(),
        "classes": None if spec.class_names is None else list(spec.class_names),
        "candidate": result.selection.chosen.name,
    }
    return st_save(tensors, metadata={"edgeproof": json.dumps(header)})


def _compress_json(result: CompressionResult, source: str) -> dict[str, Any]:
    sel = result.selection
    return {
        "format": "edgeproof-compressed",
        "source_model": source,
        "arch": result.arch,
        "interface": result.interface,
        "candidate": sel.chosen.to_json(),
        "budget": {
            "max_drop": result.budget.max_drop,
            "max_class_drop": result.budget.class_drop_limit,
            "max_size": result.budget.max_size,
            "time_budget_s": result.budget.time_budget_s,
            "confidence": result.budget.confidence,
        },
        "met_budget": sel.met_budget,
        "selection": sel.message,
        "refusals": [r.to_json() for r in sel.refusals],
        "records_needed": sel.records_needed,
        "data": [d.to_json() for d in result.data],
        "spec": result.spec.to_json(),
        "threat": result.threat.to_json(),
        "execution": result.ledger.execution,
        "ledger": result.ledger.to_json(),
    }


def compress_report(
    result: CompressionResult,
    source: str,
    data: Dataset,
    seed: int = 0,
    duration_s: float = 0.0,
    *,
    artefacts: Sequence[str] = (),
) -> Any:
    """The compression's :class:`~edgeproof.report.report.Report` (``kind="compress"``): first
    the ``compress`` section (the selection, the ledger table with its verdict and paired drop
    interval, the Pareto figure, refused and skipped candidates one row each, the notes), then
    one ``candidate-<name>`` section per measured candidate (its accuracy, drop, size, latency
    and every trust metric, per-class accuracy, how each re-audit check ended). The model card
    holds the source model and the ``artefacts`` written; ``datasets`` both data sets."""
    from edgeproof.compress.report import candidate_section, ledger_section
    from edgeproof.report.report import Report

    sel = result.selection
    parts = result.data or (DataPart("evaluation", data.to_json(), "as given"),)
    evaluation = next((p for p in parts if p.role == "evaluation"), parts[-1])
    return Report(
        model={
            "path": source,
            "arch": result.arch,
            "source_size_bytes": result.ledger.baseline.size_bytes,
            "chosen": sel.chosen.name,
            "chosen_size_bytes": sel.chosen.size_bytes,
            "artefacts": list(artefacts),
        },
        data=evaluation.summary,
        threat=result.threat.to_json(),
        checks=[
            ledger_section(result, duration_s),
            *[candidate_section(c, result) for c in result.ledger.rows],
        ],
        seed=seed,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=duration_s,
        kind="compress",
        datasets=[p.to_json() for p in parts],
    )

"""The results of a folder scan (see :mod:`~edgeproof.scan`): :class:`ScanSettings`, one
:class:`ModelScan` per model file, and the :class:`ScanReport` that ranks them, summarises them
and writes them as JSON."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from edgeproof._version import __version__
from edgeproof.checks.backdoor import BackdoorCheck
from edgeproof.errors import render_text
from edgeproof.methods.backdoor import (
    DATA_FREE_DETECTORS,
    BackdoorScan,
    DetectorVerdict,
    Thresholds,
)
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import CheckResult, Table
from edgeproof.serialize import JsonFields, fields_json

SCAN_FORMAT = "edgeproof-scan"


SCAN_SCHEMA_VERSION = "1.0"


#: how one file of the folder ended: scanned; not a classifier (its last layer is no classifier
#: head); unreadable (the file could not be loaded); refused (loaded, but the scan refused the
#: model, e.g. NaN weights); crashed (an internal failure, traceback kept)
ScanStatus = Literal["scanned", "not-a-classifier", "unreadable", "refused", "crashed"]


@dataclass(frozen=True)
class ScanSettings(JsonFields):
    """What every worker runs (picklable: it travels to the worker processes).

    Attributes:
        detectors: data-free detectors (of :data:`~edgeproof.methods.backdoor.DATA_FREE_DETECTORS`).
        thresholds: the thresholds the scores are compared with.
        freeeagle_steps: FreeEagle optimisation steps per class (the ``backdoor`` check's default).
        nc_epochs, nc_max_seconds: Neural Cleanse budget per model (with clean samples).
        strip_samples, strip_fpr: STRIP superimpositions per input and its false-positive rate.
        max_clean_samples: at most this many clean samples per model (seeded subsample).
        trust_code: let model files run code (TorchScript outside the allowlist, pickles).
        seed: seeds every detector.
        name_of: how the reasons name a library parameter (the CLI: its flag); a module-level
            function, so that it travels to the workers.
    """

    detectors: tuple[str, ...] = DATA_FREE_DETECTORS
    thresholds: Thresholds | None = field(default=None, metadata={"json": False})
    freeeagle_steps: int = 1000
    nc_epochs: int = 20
    nc_max_seconds: float | None = 30.0
    strip_samples: int = 20
    strip_fpr: float = 0.01
    max_clean_samples: int = 128
    trust_code: bool = False
    seed: int = 0
    name_of: Callable[[str], str] | None = field(default=None, metadata={"json": False})


@dataclass(frozen=True)
class ModelScan:
    """One file of the folder: how it ended and, if scanned, what the detectors found.

    Attributes:
        file: the file name, relative to the scanned folder.
        status: :data:`ScanStatus`.
        reason: why it was not scanned (``None`` when scanned).
        arch: its architecture (``None``: unknown, e.g. a weights-only or ONNX file).
        format: the loader that read it (``None`` when unreadable).
        classes: the class names (indices as text when the model names none).
        scan: the detectors' results (scanned models only).
        used_data: whether the clean samples were used (Neural Cleanse and STRIP ran).
        notes: what the report should say about this model (e.g. why the data was not used).
        duration_s: load and scan time in the worker.
        traceback: kept for a crash only.
    """

    file: str
    status: ScanStatus
    reason: str | None = None
    arch: str | None = None
    format: str | None = None
    classes: tuple[str, ...] = ()
    scan: BackdoorScan | None = None
    used_data: bool = False
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    traceback: str | None = None

    @property
    def verdicts(self) -> tuple[DetectorVerdict, ...]:
        return () if self.scan is None else self.scan.verdicts

    @property
    def flagged_by(self) -> list[str]:
        return [] if self.scan is None else self.scan.flagged_by

    @property
    def flagged(self) -> bool:
        return bool(self.flagged_by)

    @property
    def ratio(self) -> float | None:
        """The threshold ratio (module docstring); ``None`` without a thresholded detector."""
        ratios = [_ratio(v) for v in self.verdicts if v.threshold is not None]
        return max(ratios) if ratios else None

    @property
    def suspected_target(self) -> int | None:
        return None if self.scan is None else self.scan.suspected_target

    @property
    def group(self) -> str:
        """The architecture group it is reported in."""
        return self.arch or f"unknown architecture ({self.format or 'unreadable'})"


def _ratio(v: DetectorVerdict) -> float:
    s, t = float(v.result.score), float(v.threshold if v.threshold is not None else math.nan)
    if math.isnan(s):
        return math.inf
    if t > 0:
        return s / t
    return math.inf if s > t else 0.0


def _rank_key(m: ModelScan) -> tuple[int, float, str]:
    r = m.ratio
    return (1, 0.0, m.file) if r is None else (0, -r, m.file)


@dataclass
class ScanReport(JsonFields):
    """The scan of one folder: every file's outcome, ranked, with the provenance of the decisions.

    Attributes:
        folder: the scanned folder.
        models: one entry per model file, ranked (:func:`_rank_key`: threshold ratio, highest
            first; not-scanned files last, by name).
        ignored: files in the folder that are not model files (sidecar ``.json`` files excluded).
        settings: what every worker ran.
        thresholds: the thresholds used (with the population they were calibrated on).
        overrides: thresholds the caller gave, by detector (every architecture).
        data: summary of the clean samples, or ``None`` for a data-free scan.
        jobs: workers used.
        execution: where the models were scanned (``executor``, ``workers``, on Ray its
            ``address`` and ``nodes``) and what the result cache did (``cache``).
        created, duration_s, environment: when, how long, on what.
    """

    folder: str
    models: list[ModelScan] = field(metadata={"json": False})
    ignored: list[str]
    settings: ScanSettings
    thresholds: Thresholds
    overrides: dict[str, float] = field(metadata={"key": "threshold_overrides"})
    data: dict[str, Any] | None
    jobs: int
    created: str
    duration_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict, metadata={"json": False})
    notes: list[str] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    _evidence: dict[str, CheckResult] = field(
        default_factory=dict, repr=False, metadata={"json": False}
    )

    json_header: ClassVar[Mapping[str, Any]] = {
        "format": SCAN_FORMAT,
        "schema_version": SCAN_SCHEMA_VERSION,
        "tool": "edgeproof",
        "tool_version": __version__,
    }
    json_order = (
        "created",
        "duration_s",
        "seed",
        "jobs",
        "execution",
        "environment",
        ...,
        "summary",
        "architectures",
        "models",
        "ignored",
        "notes",
        "ground_truth",
    )

    @property
    def scanned(self) -> list[ModelScan]:
        return [m for m in self.models if m.status == "scanned"]

    @property
    def flagged(self) -> list[ModelScan]:
        return [m for m in self.models if m.flagged]

    @property
    def not_scanned(self) -> list[ModelScan]:
        return [m for m in self.models if m.status != "scanned"]

    @property
    def crashed(self) -> list[ModelScan]:
        return [m for m in self.models if m.status == "crashed"]

    def groups(self) -> dict[str, list[ModelScan]]:
        """Scanned models by architecture (ranked within each group), groups by name."""
        out: dict[str, list[ModelScan]] = {}
        for m in sorted(self.scanned, key=lambda m: m.group):
            out.setdefault(m.group, []).append(m)
        return {g: sorted(ms, key=_rank_key) for g, ms in out.items()}

    def evidence(self, m: ModelScan) -> CheckResult | None:
        """The ``backdoor`` check's result for one scanned model (metrics, findings, per-class
        table, figures drawn when first rendered)."""
        if m.scan is None:
            return None
        if m.file not in self._evidence:
            res = BackdoorCheck().to_result(m.scan, list(m.classes))
            name_of = self.settings.name_of
            res.findings = [
                replace(f, message=render_text(f.message, name_of)) for f in res.findings
            ]
            res.summary = render_text(res.summary, name_of)
            res.title = f"{m.file} ({m.group})"
            res.duration_s = m.duration_s
            res.settings = {"file": m.file, "used_data": m.used_data, **self.settings.to_json()}
            self._evidence[m.file] = res
        return self._evidence[m.file]

    def ranking_table(self) -> Table:
        """The ranked table (every scanned model, then the files not scanned)."""
        rows: list[list[Any]] = []
        for i, m in enumerate(self.models, 1):
            scores = {v.result.detector: float(v.result.score) for v in m.verdicts}
            target = m.suspected_target
            rows.append(
                [
                    i if m.status == "scanned" else None,
                    m.file,
                    m.group if m.status == "scanned" else (m.arch or ""),
                    m.status,
                    _num(m.ratio),
                    ", ".join(m.flagged_by),
                    None if target is None else m.classes[target],
                    *[_num(scores.get(d)) for d in self.settings.detectors],
                    m.reason or "; ".join(m.notes),
                ]
            )
        return Table(
            "ranking",
            "Models ranked by threshold ratio",
            [
                "rank",
                "file",
                "architecture",
                "status",
                "ratio",
                "flagged by",
                "suspected target",
                *[f"{d} score" for d in self.settings.detectors],
                "reason / notes",
            ],
            rows,
            description="ratio: the largest score / threshold over the detectors that have a "
            "threshold (> 1: flagged). Thresholds are per architecture (pooled for an "
            "architecture the calibration population did not contain).",
        )

    def groups_table(self) -> Table:
        rows: list[list[Any]] = []
        for g, ms in self.groups().items():
            sources: dict[str, str] = {}
            for m in ms:
                for v in m.verdicts:
                    sources.setdefault(v.result.detector, v.threshold_source)
            rows.append(
                [
                    g,
                    len(ms),
                    sum(m.flagged for m in ms),
                    "; ".join(f"{d}: {s}" for d, s in sources.items()),
                ]
            )
        return Table(
            "architectures",
            "Scanned models by architecture",
            ["architecture", "models", "flagged", "thresholds"],
            rows,
        )

    def truth_rows(self) -> list[dict[str, Any]]:
        """Per detector (and ``any`` detector): TPR, FPR with Wilson intervals and AUROC on the
        scanned models the folder's ``population.json`` labels (empty without labels)."""
        if not self.labels:
            return []
        labelled = [
            (m, self.labels[m.file])
            for m in self.scanned
            if self.labels.get(m.file) in ("clean", "backdoored")
        ]
        rows: list[dict[str, Any]] = []
        for det in (*self.settings.detectors, "neural-cleanse", "any"):
            pos: list[float] = []
            neg: list[float] = []
            tp = fp = 0
            for m, label in labelled:
                if det == "any":
                    score: float | None = m.ratio
                    flagged: bool | None = m.flagged
                else:
                    v = next((v for v in m.verdicts if v.result.detector == det), None)
                    if v is None or v.flagged is None:
                        continue
                    score, flagged = float(v.result.score), bool(v.flagged)
                if score is None:
                    continue
                score = math.inf if math.isnan(score) else score
                (pos if label == "backdoored" else neg).append(score)
                tp += int(label == "backdoored" and bool(flagged))
                fp += int(label == "clean" and bool(flagged))
            if not pos and not neg:
                continue
            tpr = wilson_interval(tp, len(pos)) if pos else None
            fpr = wilson_interval(fp, len(neg)) if neg else None
            rows.append(
                {
                    "detector": det,
                    "backdoored": len(pos),
                    "true_positives": tp,
                    "tpr": tp / len(pos) if pos else None,
                    "tpr_ci": None if tpr is None else [tpr.low, tpr.high],
                    "clean": len(neg),
                    "false_positives": fp,
                    "fpr": fp / len(neg) if neg else None,
                    "fpr_ci": None if fpr is None else [fpr.low, fpr.high],
                    "auroc": _auroc(pos, neg),
                }
            )
        return rows

    def truth_table(self) -> Table | None:
        rows = self.truth_rows()
        if not rows:
            return None

        def rate(k: int, n: int, ci: list[float] | None) -> str:
            return "—" if ci is None else f"{k}/{n} = {k / n:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"

        return Table(
            "ground_truth",
            "Measured on this folder's population.json labels",
            ["detector", "TPR [95% Wilson]", "FPR [95% Wilson]", "AUROC"],
            [
                [
                    r["detector"],
                    rate(r["true_positives"], r["backdoored"], r["tpr_ci"]),
                    rate(r["false_positives"], r["clean"], r["fpr_ci"]),
                    r["auroc"],
                ]
                for r in rows
            ],
            description="TPR over the models labelled backdoored, FPR over those labelled "
            "clean, at the thresholds used; attack-failed models are left out. 'any': flagged "
            "by at least one detector, AUROC of the threshold ratio.",
        )

    def to_json(self) -> dict[str, Any]:
        # derived: the settings' seed, the counts, the groups, the ranked models, the truth
        return fields_json(
            self,
            extra={
                "seed": self.settings.seed,
                "summary": self._summary_json(),
                "architectures": [
                    {
                        "arch": g,
                        "models": [m.file for m in ms],
                        "flagged": sum(m.flagged for m in ms),
                    }
                    for g, ms in self.groups().items()
                ],
                "models": [self._model_json(i, m) for i, m in enumerate(self.models, 1)],
                "ground_truth": None
                if not self.labels
                else {
                    "source": "population.json",
                    "labels": self.labels,
                    "detectors": self.truth_rows(),
                },
            },
        )

    def _summary_json(self) -> dict[str, int]:
        return {
            "files": len(self.models),
            "scanned": len(self.scanned),
            "flagged": len(self.flagged),
            **{
                s: sum(m.status == s for m in self.models)
                for s in ("not-a-classifier", "unreadable", "refused", "crashed")
            },
        }

    def _model_json(self, rank: int, m: ModelScan) -> dict[str, Any]:
        target = m.suspected_target
        ev = self.evidence(m)
        return {
            "file": m.file,
            "rank": rank if m.status == "scanned" else None,
            "status": m.status,
            "reason": m.reason,
            "arch": m.arch,
            "format": m.format,
            "ratio": _num(m.ratio),
            "flagged": m.flagged,
            "flagged_by": m.flagged_by,
            "suspected_target": target,
            "suspected_target_name": None if target is None else m.classes[target],
            "detectors": [
                {
                    "detector": v.result.detector,
                    "score": _num(v.result.score),
                    "threshold": _num(v.threshold),
                    "threshold_source": v.threshold_source,
                    "flagged": v.flagged,
                    "suspected_target": v.result.suspected_target,
                    "per_class": [_num(float(a)) for a in v.result.per_class],
                }
                for v in m.verdicts
            ],
            "detectors_skipped": {} if m.scan is None else dict(m.scan.skipped),
            "used_data": m.used_data,
            "notes": list(m.notes),
            "duration_s": m.duration_s,
            "traceback": m.traceback,
            "evidence": None if ev is None else ev.to_json(),
        }


def _auroc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(score of a backdoored model > score of a clean one), ties ½ (Mann–Whitney U / n₁n₀)."""
    if not pos or not neg:
        return None
    p = np.asarray(pos, dtype=np.float64)[:, None]
    n = np.asarray(neg, dtype=np.float64)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None

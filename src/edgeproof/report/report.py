"""The Report: every check's result plus the provenance to trace each number.

``report.json`` is validated against ``report.schema.json`` shipped in this package; its
``schema_version`` is the single source of truth for the file format.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgeproof._version import __version__
from edgeproof.atomic import atomic_write_text
from edgeproof.errors import InputFileError
from edgeproof.results import CheckResult, Metric
from edgeproof.serialize import JsonFields
from edgeproof.structured import read_json

__all__ = [
    "SCHEMA_VERSION",
    "PolicyOutcome",
    "PolicyRuleResult",
    "Report",
    "environment",
    "load_schema",
]

SCHEMA_VERSION = "1.0"


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded in every report."""
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "edgeproof": __version__,
            "torch": torch.__version__,
            "numpy": _pkg_version("numpy"),
            "onnx": _pkg_version("onnx"),
            "onnxruntime": _pkg_version("onnxruntime"),
            "safetensors": _pkg_version("safetensors"),
            "scikit-learn": _pkg_version("scikit-learn"),
        },
    }


@dataclass(frozen=True)
class PolicyRuleResult(JsonFields):
    """One policy threshold and whether the report met it."""

    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    message: str


@dataclass(frozen=True)
class PolicyOutcome(JsonFields):
    """The policy file applied to a report."""

    source: str
    rules: tuple[PolicyRuleResult, ...]

    json_order = ("source", "passed", ...)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)


@dataclass
class Report(JsonFields):
    """An audit's full result.

    Attributes:
        model: summary of the model (path, format, arch, parameters).
        data: summary of the data, or ``None`` for a data-free audit.
        threat: the InputSpec and ThreatModel every check used.
        checks: one result per planned check (ok, skipped or error), in order.
        seed: the audit seed.
        created: ISO-8601 UTC timestamp.
        duration_s: wall time of the whole audit.
        environment: versions and machine facts (:func:`environment`).
        warnings: things noticed while loading (e.g. model switched to eval mode).
        policy: the policy outcome, if a policy was applied.
        kind: ``audit``, or ``compress`` for the report of a compression (its HTML leads with
            the ledger, :mod:`edgeproof.report.compress_html`).
        datasets: every data set the run used, each a data summary with its ``role`` (a
            compression: ``calibration`` and ``evaluation``, and how they were split).
    """

    model: dict[str, Any]
    data: dict[str, Any] | None
    threat: dict[str, Any]
    checks: list[CheckResult]
    seed: int
    created: str
    duration_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=environment)
    warnings: list[str] = field(default_factory=list)
    policy: PolicyOutcome | None = None
    kind: str = "audit"
    datasets: list[dict[str, Any]] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    tool: str = "edgeproof"
    tool_version: str = __version__

    #: the file format's version and who wrote it first, then when and how the audit ran
    json_order = (
        "schema_version",
        "tool",
        "tool_version",
        "created",
        "duration_s",
        "seed",
        "environment",
        ...,
        "warnings",
        "checks",
        "policy",
        "kind",
        "datasets",
    )

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.check == name:
                return c
        raise KeyError(f"the report has no check {name!r}")

    def metric_value(self, dotted: str) -> float | None:
        """Value of ``<check>.<metric>`` or ``None`` if absent or the check did not run."""
        check, _, metric = dotted.partition(".")
        try:
            c = self.check(check)
        except KeyError:
            return None
        if c.status != "ok":
            return None
        try:
            return c.metric(metric).value
        except KeyError:
            return None

    def all_metrics(self) -> dict[str, Metric]:
        """Every metric keyed by ``<check>.<metric>``."""
        return {f"{c.check}.{m.name}": m for c in self.checks for m in c.metrics}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Report:
        pol = obj.get("policy")
        return cls(
            model=dict(obj["model"]),
            data=obj.get("data"),
            threat=dict(obj["threat"]),
            checks=[CheckResult.from_json(c) for c in obj["checks"]],
            seed=int(obj["seed"]),
            created=obj["created"],
            duration_s=float(obj.get("duration_s", 0.0)),
            environment=dict(obj.get("environment", {})),
            warnings=list(obj.get("warnings", [])),
            policy=None
            if pol is None
            else PolicyOutcome(
                source=pol["source"],
                rules=tuple(
                    PolicyRuleResult(
                        r["metric"], r["op"], r["threshold"], r["value"], r["passed"], r["message"]
                    )
                    for r in pol["rules"]
                ),
            ),
            kind=str(obj.get("kind", "audit")),
            datasets=list(obj.get("datasets", [])),
            schema_version=obj["schema_version"],
            tool=obj.get("tool", "edgeproof"),
            tool_version=obj.get("tool_version", __version__),
        )

    def validate(self) -> None:
        """Validate against the shipped JSON Schema (raises ``jsonschema.ValidationError``)."""
        import jsonschema

        jsonschema.validate(self.to_json(), load_schema())

    def write_json(self, path: str | Path) -> Path:
        """Validate, then write ``report.json`` atomically."""
        self.validate()
        return atomic_write_text(path, json.dumps(self.to_json(), indent=2, allow_nan=False))

    @classmethod
    def read_json(cls, path: str | Path) -> Report:
        """Load and validate a ``report.json`` (e.g. a baseline) written by edgeproof.

        Read within the document limits (size, nesting; :mod:`edgeproof.limits`), checked
        against the schema; every problem is one :class:`InputFileError` line naming the file.
        """
        import jsonschema

        p = Path(path)
        obj = read_json(p, error=InputFileError, what="report file")
        version_ = obj.get("schema_version") if isinstance(obj, dict) else None
        if version_ != SCHEMA_VERSION:
            raise InputFileError(
                p,
                f"report schema version {str(version_)[:20]!r} is not supported (this edgeproof "
                f"reads {SCHEMA_VERSION})",
                "re-run the audit with this version",
            )
        try:
            jsonschema.validate(obj, load_schema())
        except jsonschema.ValidationError as exc:
            raise InputFileError(
                p,
                f"does not match the report schema at {exc.json_path}: "
                f"{exc.message.splitlines()[0][:160]}",
            ) from None
        try:
            return cls.from_json(obj)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise InputFileError(
                p, f"is not a readable report ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None


def load_schema() -> dict[str, Any]:
    """The report JSON Schema shipped in the package."""
    text = resources.files("edgeproof.report").joinpath("report.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema

"""Decision thresholds of the data-free detectors, calibrated on a population of clean models.

A threshold is the ``1 − fpr`` quantile (``numpy.quantile(..., method="higher")``: an observed
score, so at most a fraction ``fpr`` of the calibration models lie strictly above it) of the
detector's scores on known-clean models; a model is flagged when its score is strictly above it.
Thresholds are kept per architecture (``zoo:lenet5``) and pooled over all calibration models
(``"*"``, used for an architecture the calibration population did not contain — the report says
so). They ship as package data, ``thresholds.json``, with the population spec and the FPR they
came from; :func:`calibrate` rebuilds them (``benchmarks/bench_backdoor.py`` does, from its
calibration population).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeproof.atomic import atomic_write_text
from edgeproof.errors import InputFileError, OptionError
from edgeproof.serialize import JsonFields, fields_json

__all__ = [
    "POOLED",
    "Threshold",
    "Thresholds",
    "calibrate",
    "load_thresholds",
    "shipped_thresholds",
]

POOLED = "*"
FORMAT = "edgeproof-backdoor-thresholds"
_RULE = "flag when score > the (1 - fpr) quantile (method 'higher') of clean scores"


@dataclass(frozen=True)
class Threshold:
    """One detector's threshold for one architecture (``inf``: no clean score was finite;
    ``n_clean`` 0: a value the caller gave instead of a calibrated one)."""

    value: float
    n_clean: int
    fpr: float
    arch: str

    def describe(self) -> str:
        if self.n_clean == 0:  # given by the caller (scan_folder's threshold_overrides)
            return f"{self.value:.4g} (given, not calibrated)"
        where = "all architectures pooled" if self.arch == POOLED else self.arch
        return f"{self.value:.4g} ({where}: {self.n_clean} clean models, FPR {self.fpr:g})"


@dataclass(frozen=True)
class Thresholds(JsonFields):
    """Calibrated thresholds by detector and architecture, with their provenance."""

    fpr: float
    by_detector: Mapping[str, Mapping[str, Threshold]] = field(metadata={"json": False})
    settings: Mapping[str, Mapping[str, Any]] = field(metadata={"json": False})
    population: Mapping[str, Any]

    json_header: ClassVar[Mapping[str, Any]] = {"format": FORMAT, "version": 1}
    json_order = ("fpr", "rule", ...)

    def lookup(self, detector: str, arch: str | None) -> Threshold | None:
        """The threshold for ``arch`` (or the pooled one), ``None`` if the detector has none."""
        table = self.by_detector.get(detector)
        if not table:
            return None
        if arch is not None and arch in table:
            return table[arch]
        return table.get(POOLED)

    def to_json(self) -> dict[str, Any]:
        # the rule is stated, and the thresholds are grouped by detector with its settings
        return fields_json(self, extra={"rule": _RULE, "detectors": self._detectors_json()})

    def _detectors_json(self) -> dict[str, Any]:
        return {
            d: {
                "settings": dict(self.settings.get(d, {})),
                "thresholds": {
                    a: {"value": t.value, "n_clean": t.n_clean} for a, t in table.items()
                },
            }
            for d, table in self.by_detector.items()
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Thresholds:
        fpr = float(obj["fpr"])
        by: dict[str, dict[str, Threshold]] = {}
        settings: dict[str, dict[str, Any]] = {}
        for d, entry in obj["detectors"].items():
            settings[d] = dict(entry.get("settings", {}))
            by[d] = {
                a: Threshold(
                    math.inf if t["value"] is None else float(t["value"]), int(t["n_clean"]), fpr, a
                )
                for a, t in entry["thresholds"].items()
            }
        return cls(fpr, by, settings, dict(obj.get("population", {})))

    def write(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")


def _quantile(scores: Sequence[float], fpr: float) -> float:
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), np.inf, s)  # a detector that failed counts as suspicious
    return float(np.quantile(s, 1.0 - fpr, method="higher"))


def calibrate(
    clean_scores: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    fpr: float,
    population: Mapping[str, Any],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Thresholds:
    """Thresholds from clean models' scores ``{detector: {arch: [score, ...]}}`` at ``fpr``."""
    if not 0.0 < fpr < 1.0:
        raise OptionError("fpr", f"false-positive rate {fpr} is not in (0, 1)")
    by: dict[str, dict[str, Threshold]] = {}
    for det, per_arch in clean_scores.items():
        table: dict[str, Threshold] = {}
        pooled: list[float] = []
        for arch, scores in per_arch.items():
            if len(scores) == 0:
                raise OptionError(
                    "clean_scores", f"{det}/{arch}: no clean scores (empty population)"
                )
            table[arch] = Threshold(_quantile(scores, fpr), len(scores), fpr, arch)
            pooled.extend(scores)
        if not pooled:
            raise OptionError("clean_scores", f"{det}: no clean scores (empty population)")
        table[POOLED] = Threshold(_quantile(pooled, fpr), len(pooled), fpr, POOLED)
        by[det] = table
    return Thresholds(fpr, by, dict(settings or {}), dict(population))


def load_thresholds(path: str | Path) -> Thresholds:
    """Read a thresholds file written by :meth:`Thresholds.write`."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
        if obj.get("format") != FORMAT:
            raise ValueError(f"format is {obj.get('format')!r}, not {FORMAT!r}")
        return Thresholds.from_json(obj)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(
            p, f"not a backdoor thresholds file ({exc})", "recalibrate with bench_backdoor.py"
        ) from None


@cache
def shipped_thresholds() -> Thresholds:
    """The thresholds shipped with edgeproof (``methods/backdoor/thresholds.json``)."""
    ref = resources.files("edgeproof.methods.backdoor").joinpath("thresholds.json")
    return Thresholds.from_json(json.loads(ref.read_text(encoding="utf-8")))

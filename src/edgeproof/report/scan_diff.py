"""What changed between two folder scans (``edgeproof scan --out``): :func:`diff_scans` →
:class:`ScanDiff`.

Models are matched by file name. For each: its status (``scanned`` → ``crashed``, ...), whether
a detector flags it (newly flagged, no longer flagged), its threshold ratio (the largest score /
threshold over the thresholded detectors; > 1 is flagged) and which detectors flag it; and the
models only one scan has (added, removed).

A scan has no confidence intervals: the threshold is the decision, so crossing it is what
counts. The policy (``fail_on``):

* ``significant-regression``: a model is newly flagged (an added model that is flagged counts),
  or a model that was scanned now crashes;
* ``any-regression``: also a ratio that rose, and a model that was scanned and now is not (or
  is gone);
* ``never``: never fails.

Scans with other detectors or other thresholds are compared all the same, with a warning: the
ratios are then measured against different yardsticks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from edgeproof._version import __version__
from edgeproof.report.diff import DIFF_FORMAT, DIFF_SCHEMA_VERSION, FailOn, check_fail_on
from edgeproof.serialize import JsonFields, fields_json

__all__ = ["ModelChange", "ModelState", "ScanDiff", "diff_scans"]


@dataclass(frozen=True)
class ModelState(JsonFields):
    """One model file in one scan (from the scan's ``report.json``)."""

    status: str
    flagged: bool
    flagged_by: tuple[str, ...]
    ratio: float | None
    arch: str | None
    suspected_target: str | None

    @classmethod
    def from_json(cls, m: Mapping[str, Any]) -> ModelState:
        flagged_by = tuple(str(d) for d in m.get("flagged_by") or ())
        ratio = m.get("ratio")
        if ratio is None and flagged_by:
            ratio = math.inf  # written as null: not finite (a score over a threshold ≤ 0)
        return cls(
            status=str(m.get("status")),
            flagged=bool(m.get("flagged")),
            flagged_by=flagged_by,
            ratio=None if ratio is None else float(ratio),
            arch=m.get("arch"),
            suspected_target=m.get("suspected_target_name"),
        )


@dataclass(frozen=True)
class ModelChange(JsonFields):
    """One model file in the two scans (``old``/``new`` ``None``: not in that scan)."""

    file: str
    old: ModelState | None
    new: ModelState | None

    json_order = ("file", "change", ..., "ratio_delta", "regression", "significant_regression")

    @property
    def change(self) -> str:
        """``added``, ``removed``, ``newly flagged``, ``no longer flagged``, ``status``
        (its status changed), ``ratio`` (only its ratio changed) or ``unchanged``."""
        a, b = self.old, self.new
        if a is None:
            return "added"
        if b is None:
            return "removed"
        if b.flagged and not a.flagged:
            return "newly flagged"
        if a.flagged and not b.flagged:
            return "no longer flagged"
        if a.status != b.status:
            return "status"
        if a.ratio != b.ratio or a.flagged_by != b.flagged_by:
            return "ratio"
        return "unchanged"

    @property
    def delta(self) -> float | None:
        """The ratio's change; ``None`` unless both are finite."""
        if self.old is None or self.new is None:
            return None
        a, b = self.old.ratio, self.new.ratio
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return None
        return b - a

    @property
    def significant_regression(self) -> bool:
        """Newly flagged (or added and flagged), or scanned before and crashed now."""
        if self.new is None:
            return False
        if self.new.flagged and (self.old is None or not self.old.flagged):
            return True
        return (
            self.old is not None and self.old.status == "scanned" and self.new.status == "crashed"
        )

    @property
    def regression(self) -> bool:
        """Any change for the worse: a significant regression, a ratio that rose, or a model
        that was scanned and is not (or is gone)."""
        if self.significant_regression:
            return True
        was_scanned = self.old is not None and self.old.status == "scanned"
        if was_scanned and (self.new is None or self.new.status != "scanned"):
            return True
        d = self.delta
        return d is not None and d > 0

    def to_json(self) -> dict[str, Any]:
        # the ratio's change is derived (as :attr:`delta`)
        return fields_json(self, extra={"ratio_delta": self.delta})


@dataclass(frozen=True)
class ScanSide(JsonFields):
    """One of the two scans: where it came from."""

    path: str
    folder: str
    created: str
    detectors: tuple[str, ...]


@dataclass(frozen=True)
class ScanDiff(JsonFields):
    """What changed from the ``old`` folder scan to the ``new`` one (module docstring).

    ``models``: every file of either scan, the old scan's order (its ranking) first.
    """

    old: ScanSide
    new: ScanSide
    models: tuple[ModelChange, ...]
    warnings: tuple[str, ...]
    fail_on: FailOn = "significant-regression"

    kind = "scan"
    rule = (
        "significant: a model newly over a detector's threshold (flagged), or newly crashed; "
        "scans have no confidence intervals"
    )

    json_header: ClassVar[Mapping[str, Any]] = {
        "format": DIFF_FORMAT,
        "schema_version": DIFF_SCHEMA_VERSION,
        "tool": "edgeproof",
        "tool_version": __version__,
    }
    json_order = ("kind", ..., "fail_on", "failed", "regressions", "warnings", "rule", "models")

    @property
    def changed(self) -> list[ModelChange]:
        return [m for m in self.models if m.change != "unchanged"]

    def regressions(self, fail_on: FailOn | None = None) -> list[str]:
        """What fails the policy ``fail_on`` (default :attr:`fail_on`), one line each."""
        policy = fail_on or self.fail_on
        if policy == "never":
            return []
        anyr = policy == "any-regression"
        out: list[str] = []
        for m in self.models:
            if m.significant_regression or (anyr and m.regression):
                out.append(f"{m.file}: {m.change} ({_state(m.old)} → {_state(m.new)})")
        return out

    @property
    def failed(self) -> bool:
        return bool(self.regressions())


def _state(s: ModelState | None) -> str:
    if s is None:
        return "absent"
    ratio = "-" if s.ratio is None else "inf" if s.ratio == math.inf else f"{s.ratio:.3g}"
    flag = f", flagged by {','.join(s.flagged_by)}" if s.flagged else ""
    return f"{s.status}, ratio {ratio}{flag}"


def _side(obj: Mapping[str, Any], path: str) -> ScanSide:
    return ScanSide(
        path=path,
        folder=str(obj.get("folder")),
        created=str(obj.get("created")),
        detectors=tuple(str(d) for d in (obj.get("settings") or {}).get("detectors", ())),
    )


def _warnings(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    da = (a.get("settings") or {}).get("detectors")
    db = (b.get("settings") or {}).get("detectors")
    if da != db:
        out.append(
            f"the detectors differ ({_names(da)} vs {_names(db)}): ratios and flags are not "
            "comparable"
        )
    ta = (a.get("thresholds"), a.get("threshold_overrides"))
    tb = (b.get("thresholds"), b.get("threshold_overrides"))
    if ta != tb:
        out.append(
            "the thresholds differ (another calibration, or thresholds given): a ratio "
            "change can come from the threshold, not the model"
        )
    return out


def _names(detectors: object) -> str:
    return ", ".join(map(str, detectors)) if isinstance(detectors, list) else str(detectors)


def diff_scans(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    fail_on: FailOn = "significant-regression",
    names: tuple[str, str] = ("old scan", "new scan"),
) -> ScanDiff:
    """Compare two folder scans (their ``report.json`` objects, as
    :func:`edgeproof.report.diff.read_input` returns them; module docstring: the policy)."""
    policy = check_fail_on(fail_on)
    ma = {str(m["file"]): ModelState.from_json(m) for m in old.get("models", [])}
    mb = {str(m["file"]): ModelState.from_json(m) for m in new.get("models", [])}
    files = [*ma, *(f for f in mb if f not in ma)]
    return ScanDiff(
        old=_side(old, names[0]),
        new=_side(new, names[1]),
        models=tuple(ModelChange(f, ma.get(f), mb.get(f)) for f in files),
        warnings=tuple(_warnings(old, new)),
        fail_on=policy,
    )

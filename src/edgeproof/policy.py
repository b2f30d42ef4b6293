"""Policy files: TOML thresholds on report metrics that turn an audit into a CI gate.

Format (``policy.toml``)::

    # every rule: "<check>.<metric>" = "<op> <number>", op one of >=, >, <=, <, ==
    [thresholds]
    "performance.accuracy" = ">= 0.95"
    "performance.min_class_recall" = ">= 0.80"
    "calibration.ece" = "<= 0.05"

    # optional: judge an estimate by its confidence bound instead of its point value
    [options]
    use_confidence_bound = false

A rule whose metric is absent (the check was skipped or failed) fails, saying so: a gate must not
pass because a check did not run. ``edgeproof audit --policy policy.toml`` exits 1 when any rule
fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import PolicyFileError
from edgeproof.report.report import PolicyOutcome, PolicyRuleResult, Report
from edgeproof.structured import read_toml

__all__ = ["Policy", "PolicyRule", "load_policy"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_RULE = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")
_METRIC = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-@.]+$")


@dataclass(frozen=True)
class PolicyRule:
    """``metric op threshold``, e.g. ``performance.accuracy >= 0.95``."""

    metric: str
    op: str
    threshold: float

    def evaluate(self, report: Report, use_bound: bool = False) -> PolicyRuleResult:
        metrics = report.all_metrics()
        m = metrics.get(self.metric)
        check_name = self.metric.split(".", 1)[0]
        if m is None or math.isnan(m.value):
            try:
                status = report.check(check_name).status
                why = f"the {check_name} check was {status}" if status != "ok" else "no such metric"
            except KeyError:
                why = f"the {check_name} check did not run"
            return PolicyRuleResult(
                self.metric,
                self.op,
                self.threshold,
                None,
                False,
                f"{self.metric} is not available ({why})",
            )
        value = m.value
        if use_bound and m.ci is not None:
            # judge by the pessimistic side of the interval
            value = (
                m.ci.low
                if self.op in (">=", ">")
                else m.ci.high
                if self.op in ("<=", "<")
                else value
            )
        ok = _OPS[self.op](value, self.threshold)
        verdict = "ok" if ok else "FAILED"
        return PolicyRuleResult(
            self.metric,
            self.op,
            self.threshold,
            value,
            ok,
            f"{self.metric} = {value:.6g} {self.op} {self.threshold:g}: {verdict}",
        )


@dataclass(frozen=True)
class Policy:
    """A set of rules read from a TOML file."""

    source: str
    rules: tuple[PolicyRule, ...]
    use_confidence_bound: bool = False

    def apply(self, report: Report) -> PolicyOutcome:
        return PolicyOutcome(
            source=self.source,
            rules=tuple(r.evaluate(report, self.use_confidence_bound) for r in self.rules),
        )


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy TOML file (see the module docstring for the format).

    The file is read within the document limits (size, nesting; :mod:`edgeproof.limits`);
    every problem is one :class:`PolicyFileError` line naming the file.
    """
    p = Path(path)
    raw = read_toml(p, error=PolicyFileError, what="policy file")
    table = raw.get("thresholds")
    if not isinstance(table, dict) or not table:
        raise PolicyFileError(
            p,
            "has no [thresholds] table",
            'add a [thresholds] table with rules such as "performance.accuracy" = ">= 0.95"',
        )
    rules: list[PolicyRule] = []
    for metric, text in table.items():
        if not _METRIC.match(metric):
            raise PolicyFileError(
                p,
                f"rule key {metric[:80]!r} is not '<check>.<metric>'",
                'write e.g. "performance.accuracy"',
            )
        match = _RULE.match(text) if isinstance(text, str) and len(text) <= 100 else None
        if match is None:
            shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
            raise PolicyFileError(
                p,
                f"rule {metric} = {shown} is not '<op> <number>'",
                'write e.g. ">= 0.95" with op one of >=, >, <=, <, ==',
            )
        op, num, pct = match.groups()
        value = float(num) / (100.0 if pct else 1.0)
        if not math.isfinite(value):
            raise PolicyFileError(p, f"rule {metric} has a threshold that is not finite")
        rules.append(PolicyRule(metric, op, value))
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise PolicyFileError(
            p, "[options] is not a table", "write [options] with key = value lines"
        )
    unknown = [k for k in options if k != "use_confidence_bound"]
    if unknown:
        raise PolicyFileError(
            p, f"[options] has an unknown key {unknown[0][:40]!r}", "known: use_confidence_bound"
        )
    use_bound = options.get("use_confidence_bound", False)
    if not isinstance(use_bound, bool):
        raise PolicyFileError(
            p,
            f"options.use_confidence_bound is {use_bound!r}, not true or false",
            "write use_confidence_bound = true (no quotes)",
        )
    return Policy(source=str(p), rules=tuple(rules), use_confidence_bound=use_bound)

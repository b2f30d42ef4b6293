"""The audit's work budget: default sample counts scaled to what one forward pass costs.

An expensive check (attacks, bit flips, smoothing, attributions, the Hessian) spends a fixed
number of forward-pass equivalents per sample (a backward pass counts as two forwards). Its
default sample count, ``"auto"``, takes every record up to the check's cap on a small model and
fewer on a costly one::

    n = clamp(WORK_BUDGET_MACS / (MACs per forward pass × passes per sample), floor, cap)

so the default audit of a 4 M-MAC MNIST CNN stays near a minute on one core while an 8×8 LeNet
still uses every record. The rule depends only on the model's MAC count and the check's
settings, never on a clock: the same model, data and seed give the same samples on every
machine. A check that takes fewer records than it was given says so in an ``info`` finding
naming the setting that takes them all (``--set CHECK.SETTING=N`` on the command line).
Without a MAC count (a graph with no countable layer) the cap applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgeproof.errors import OptionError, param
from edgeproof.results import Finding

if TYPE_CHECKING:
    from edgeproof.checks.base import AuditContext

__all__ = [
    "AUTO",
    "WORK_BUDGET_MACS",
    "SampleCount",
    "SampleSetting",
    "forward_macs",
    "resolve_samples",
]

#: forward-pass MACs one check may spend on its default sample count (≈ 3–10 s on one core of
#: the 2-core Zen 3 benchmark machine, docs/benchmarks/mnist_audit.md)
WORK_BUDGET_MACS = 4.0e10

AUTO: Literal["auto"] = "auto"

SampleSetting = int | None | Literal["auto"]
"""A sample-count setting: a number, ``None`` (every record) or ``"auto"`` (the work budget)."""

_MACS_KEY = "budget:forward_macs"


@dataclass(frozen=True)
class SampleCount:
    """How many of ``available`` records a check uses, and why (``rule``, said in settings)."""

    n: int
    available: int
    rule: str
    macs: int | None = None

    @property
    def limited_by_budget(self) -> bool:
        """True when the work budget (not the user, not the cap) left records out."""
        return self.rule.startswith("auto") and self.n < self.available

    def finding(self, check: str, setting: str, what: str = "records") -> Finding | None:
        """An ``info`` finding when the budget took fewer records than given (else ``None``)."""
        if not self.limited_by_budget:
            return None
        macs = f"{self.macs / 1e6:.3g} M MACs" if self.macs is not None else "unknown MACs"
        return Finding(
            "info",
            f"{check} used {self.n} of the {self.available} {what}, the default work budget "
            f"for a model of {macs} per forward pass (intervals are wider accordingly); pass "
            f"{param(f'{check}.{setting}')}={self.available} to use them all",
            {"samples": self.n, "available": self.available, "rule": self.rule},
        )


def forward_macs(ctx: AuditContext) -> int | None:
    """MACs of one forward pass at batch 1 (Conv/Linear/BatchNorm/RNN rules; FlopCounterMode
    for TorchScript and exported programs; the graph for ONNX), computed once per audit."""
    if _MACS_KEY not in ctx.cache:
        ctx.cache[_MACS_KEY] = _count(ctx)
    value: int | None = ctx.cache[_MACS_KEY]
    return value


def _count(ctx: AuditContext) -> int | None:
    import torch

    from edgeproof.runtime.macs import count_macs, flop_counter_macs, onnx_layer_costs

    model = ctx.model
    shape = ctx.threat.input.shape
    if model.module is not None:
        example = torch.zeros((1, *shape), dtype=torch.float32)
        try:
            total = sum(c.macs or 0 for c in count_macs(model.module, example))
        except RuntimeError:  # TorchScript modules refuse Python hooks
            total = 0
        if total > 0:
            return int(total)
        try:
            return int(flop_counter_macs(model.module, example)) or None
        except (RuntimeError, TypeError, ValueError):
            return None
    path = model.path
    if model.session is not None and path is not None and Path(path).suffix == ".onnx":
        try:
            total = sum(c.macs or 0 for c in onnx_layer_costs(Path(path), shape))
        except Exception:  # a graph that shape inference cannot read: no count
            return None
        return int(total) or None
    return None


def resolve_samples(
    ctx: AuditContext,
    requested: SampleSetting,
    available: int,
    *,
    passes: float,
    setting: str = "max_samples",
    cap: int = 1000,
    floor: int = 64,
) -> SampleCount:
    """The sample count for setting ``setting`` = ``requested`` of ``available`` records.

    ``passes``: forward-pass equivalents the check spends per sample at its settings.
    """
    if requested is None:
        return SampleCount(available, available, "every record")
    if requested == AUTO:
        macs = forward_macs(ctx)
        if macs is None:
            n = min(cap, available)
            return SampleCount(n, available, f"auto: no MAC count, at most {cap}")
        fit = int(WORK_BUDGET_MACS // max(1.0, macs * passes))
        n = min(available, cap, max(floor, fit))
        rule = (
            f"auto: {WORK_BUDGET_MACS:.3g} MACs / ({macs:,} MACs × {passes:g} passes) = {fit}, "
            f"within [{floor}, {cap}]"
        )
        return SampleCount(n, available, rule, macs)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise OptionError(
            setting, f"{requested!r} is not a sample count", "use >= 1, None or 'auto'"
        )
    return SampleCount(min(requested, available), available, f"at most {requested}")

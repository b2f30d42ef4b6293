"""SigmaQuant-style 4/8-bit allocation under size and accuracy budgets, executed for real.

σ clustering gives the initial bits; the KL-guided refinement (:class:`_Refiner`) moves layers
between 4 and 8 bits until the budgets of :class:`AllocationSettings` hold; the plan is then
quantized (:func:`edgeproof.compress.quantize.quantize`, ``QuantConfig("mixed")``) and run in
ONNX Runtime, whose accuracy and serialised size decide whether the budgets were met. See
:mod:`edgeproof.compress.mixed` for the method and its stated deviations.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgeproof.compress.mixed.sensitivity import (
    BITS,
    PlanSimulator,
    SensitivityReport,
    check_group,
    kl_to,
    prepare_records,
    sensitivity,
    sigma_clusters,
)
from edgeproof.compress.mixed.size import SizeModel, check_applied
from edgeproof.compress.quantize import QuantConfig, QuantizedModel, quantize
from edgeproof.errors import OptionError, SpecError
from edgeproof.results import Table
from edgeproof.runtime.ort import make_session, run_session
from edgeproof.serialize import JsonFields

__all__ = [
    "Allocation",
    "AllocationSettings",
    "Reason",
    "RefinementStep",
    "allocate",
    "allocate_between",
]

Reason = Literal["size", "fill", "accuracy", "shrink"]


@dataclass(frozen=True)
class AllocationSettings:
    """The budgets and settings of one allocation (validated here, once).

    Attributes:
        max_size: bytes of the serialised ONNX graph (``None``: no size budget).
        max_drop: absolute top-1 drop vs fp32 allowed (``None``: no accuracy budget).
        group_size: group size of the 4-bit weights' scales.
        samples: at most this many calibration records (a seeded random subset when more).
        seed: seed of that subset.
    """

    max_size: int | None = None
    max_drop: float | None = None
    group_size: int = 32
    samples: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_size is not None and self.max_size <= 0:
            raise OptionError(
                "max_size", f"{self.max_size} bytes is not positive", "use e.g. 200KB"
            )
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise OptionError("max_drop", f"{self.max_drop} is not in [0, 1]", "use e.g. 1%")
        check_group(self.group_size)
        if self.samples < 1:
            raise OptionError("samples", f"{self.samples} is not positive", "use e.g. 256")


@dataclass(frozen=True)
class RefinementStep:
    """One move of the KL-guided refinement and the plan's state after it."""

    layer: str
    from_bits: int
    to_bits: int
    reason: Reason
    estimated_size: int
    kl: float
    accuracy: float


@dataclass(frozen=True)
class Allocation(JsonFields):
    """The chosen bit map, executed in ONNX Runtime, and how the budgets fared.

    ``accuracy`` is measured in ONNX Runtime on the evaluation records (``accuracy_on`` says
    which), ``accuracy_sim``/``kl`` on the calibration records by the PyTorch simulation.
    ``met_size``/``met_accuracy`` are judged on the real serialised size and the ONNX Runtime
    accuracy; ``message`` says what held and, if a budget cannot be met, the best found.
    """

    bits: Mapping[str, int]
    initial_bits: Mapping[str, int]
    sigma_threshold: float
    estimated_size: int
    size_bytes: int
    accuracy: float
    fp32_accuracy: float
    accuracy_on: str
    accuracy_sim: float
    kl: float
    met_size: bool
    met_accuracy: bool
    message: str
    max_size: int | None
    max_drop: float | None
    steps: tuple[RefinementStep, ...]
    sensitivity: SensitivityReport
    quantized: QuantizedModel = field(repr=False, compare=False, metadata={"json": False})

    @property
    def met_budget(self) -> bool:
        return self.met_size and self.met_accuracy

    @property
    def low_bit_layers(self) -> tuple[str, ...]:
        return tuple(n for n, b in self.bits.items() if b == 4)

    def settings(self) -> dict[str, object]:
        """Settings for a ledger row."""
        return {
            "scheme": "mixed",
            "allocator": "sigmaquant-ptq",
            "group_size": self.sensitivity.group_size,
            "bits": dict(self.bits),
            "max_size": self.max_size,
            "max_drop": self.max_drop,
        }

    def table(self) -> Table:
        init = self.initial_bits
        return Table(
            "mixed.allocation",
            "Mixed-precision bit map (σ clustering → KL-guided refinement)",
            ["layer", "σ cluster bits", "final bits", "KL₄ − KL₈"],
            [
                [
                    n,
                    init.get(n),
                    b,
                    self.sensitivity.kl(n, 4) - self.sensitivity.kl(n, 8),
                ]
                for n, b in self.bits.items()
            ],
            self.message,
        )


class _Refiner:
    def __init__(
        self,
        sim: PlanSimulator,
        sizes: SizeModel,
        sens: SensitivityReport,
        x: np.ndarray,
        p0: np.ndarray,
        y: np.ndarray,
    ) -> None:
        self.sim, self.sizes, self.sens = sim, sizes, sens
        self.xt = torch.from_numpy(np.ascontiguousarray(x))
        self.p0, self.y = p0, y
        self.steps: list[RefinementStep] = []
        self.names = [layer.name for layer in sim.layers]
        self.dkl = {n: max(sens.kl(n, 4) - sens.kl(n, 8), 0.0) for n in self.names}

    def measure(self, plan: Mapping[str, int]) -> tuple[float, float]:
        z, _ = self.sim.logits(plan, self.xt)
        return kl_to(self.p0, z), float(np.mean(z.argmax(1) == self.y))

    def ratio(self, n: str) -> float:
        return self.dkl[n] / max(self.sizes.saving(n), 1)

    def move(self, plan: dict[str, int], n: str, to: int, reason: Reason) -> tuple[float, float]:
        frm = plan[n]
        plan[n] = to
        kl, acc = self.measure(plan)
        self.steps.append(RefinementStep(n, frm, to, reason, self.sizes.estimate(plan), kl, acc))
        return kl, acc

    def lowerable(self, plan: Mapping[str, int]) -> list[str]:
        """8-bit layers whose 4-bit form is smaller: lowering any other one only adds bytes."""
        return [n for n in self.names if plan[n] == 8 and self.sizes.saving(n) > 0]

    def to_size(self, plan: dict[str, int], budget: int) -> None:
        for n in self.names:
            if plan[n] == 4 and self.sizes.saving(n) <= 0:
                self.move(plan, n, 8, "fill")  # free: 8 bits is no larger here
        while self.sizes.estimate(plan) > budget:
            eights = self.lowerable(plan)
            if not eights:
                return
            self.move(plan, min(eights, key=self.ratio), 4, "size")
        while True:
            room = budget - self.sizes.estimate(plan)
            fits = [n for n in self.names if plan[n] == 4 and self.sizes.saving(n) <= room]
            if not fits:
                return
            self.move(plan, max(fits, key=self.ratio), 8, "fill")

    def to_accuracy(self, plan: dict[str, int], floor: float) -> None:
        _, acc = self.measure(plan)
        while acc < floor:
            fours = [n for n in self.names if plan[n] == 4]
            if not fours:
                return
            _, acc = self.move(plan, max(fours, key=self.ratio), 8, "accuracy")
        for n in sorted(self.lowerable(plan), key=self.ratio):
            plan[n] = 4
            _, a = self.measure(plan)
            plan[n] = 8
            if a < floor:
                return
            self.move(plan, n, 4, "shrink")


def allocate(
    module: nn.Module,
    input_shape: Sequence[int],
    x: np.ndarray,
    y: np.ndarray | None = None,
    settings: AllocationSettings | None = None,
    *,
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    size_model: SizeModel | None = None,
    threads: int = 1,
) -> Allocation:
    """SigmaQuant-style 4/8-bit allocation under ``settings.max_size`` (bytes of the ONNX graph)
    and ``settings.max_drop`` (absolute top-1 drop vs fp32), executed in ONNX Runtime.

    Args:
        x, y: calibration records for sensitivity, KL and simulated accuracy (``y=None``: fp32
            predictions are the labels).
        settings: budgets, group size, record subset (default: no budget).
        x_eval, y_eval: records on which the executed graph's accuracy is reported and the
            accuracy budget judged (default: the calibration records).
        size_model: a fitted :class:`SizeModel` to reuse (else one is fitted).

    A budget no plan meets does not raise: the result has ``met_size``/``met_accuracy`` False,
    keeps the best plan found and says so in ``message``.

    Raises:
        OptionError: a ``size_model`` fitted for another model or group size.
        SpecError: calibration records not shaped like ``input_shape``; a model without a
            quantizable layer.
    """
    s = settings or AllocationSettings()
    x, y = prepare_records(x, y, input_shape, s.samples, s.seed)
    module = copy.deepcopy(module).eval()
    sim = PlanSimulator(module, s.group_size)
    if not sim.layers:
        raise SpecError(
            "the model has no Conv1d/Conv2d/Linear/LSTM layer: nothing to quantize; mixed "
            "precision needs at least one such layer"
        )
    sens, p0, yy = sensitivity(sim, x, y, BITS)
    sizes = _size_model(size_model, module, input_shape, x, s.group_size, sim)
    labels, thr = sigma_clusters([layer.sigma for layer in sim.layers])
    initial = {layer.name: (8 if hi else 4) for layer, hi in zip(sim.layers, labels)}
    plan = dict(initial)
    ref = _Refiner(sim, sizes, sens, x, p0, yy)
    if s.max_size is not None:
        ref.to_size(plan, s.max_size)
    elif s.max_drop is not None:
        ref.to_accuracy(plan, sens.fp32_accuracy - s.max_drop)
    kl, acc_sim = ref.measure(plan)
    run = _execute(module, input_shape, x, plan, s, sim, (x_eval, y_eval, y, yy), threads)
    check_applied(run.quantized, plan, sim.layers)
    met_size = s.max_size is None or run.size <= s.max_size
    met_acc = s.max_drop is None or run.fp32_accuracy - run.accuracy <= s.max_drop + 1e-12
    return Allocation(
        bits=plan,
        initial_bits=initial,
        sigma_threshold=thr,
        estimated_size=sizes.estimate(plan),
        size_bytes=run.size,
        accuracy=run.accuracy,
        fp32_accuracy=run.fp32_accuracy,
        accuracy_on=run.accuracy_on,
        accuracy_sim=acc_sim,
        kl=kl,
        met_size=met_size,
        met_accuracy=met_acc,
        message=_message(plan, s, sizes, run),
        steps=tuple(ref.steps),
        sensitivity=sens,
        max_size=s.max_size,
        max_drop=s.max_drop,
        quantized=run.quantized,
    )


def _size_model(
    given: SizeModel | None,
    module: nn.Module,
    input_shape: Sequence[int],
    x: np.ndarray,
    group_size: int,
    sim: PlanSimulator,
) -> SizeModel:
    """``given`` if it was fitted for this model and group size (else an error), or a new one."""
    sizes = given or SizeModel.fit(module, input_shape, x, group_size)
    if sizes.group_size != group_size or set(sizes.layer_bytes) != {ly.name for ly in sim.layers}:
        raise OptionError(
            "size_model",
            "was fitted for another model or group size",
            "fit it with SizeModel.fit on the same module and group_size",
        )
    return sizes


@dataclass(frozen=True)
class _Executed:
    """The plan's QDQ graph and what ONNX Runtime measured on the evaluation records."""

    quantized: QuantizedModel
    size: int
    accuracy: float
    fp32_accuracy: float
    accuracy_on: str


def _execute(
    module: nn.Module,
    input_shape: Sequence[int],
    x: np.ndarray,
    plan: Mapping[str, int],
    s: AllocationSettings,
    sim: PlanSimulator,
    labels: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray],
    threads: int,
) -> _Executed:
    """Quantize ``plan`` for real and measure its top-1 accuracy (and fp32's) in ONNX Runtime.

    ``labels`` is ``(x_eval, y_eval, y, yy)``: the evaluation records and labels, the
    calibration labels given and those used (fp32 predictions when none were given)."""
    x_eval, y_eval, y, yy = labels
    xe = x if x_eval is None else np.asarray(x_eval, np.float32)
    ye = yy if x_eval is None else y_eval
    q = quantize(
        module,
        input_shape,
        x,
        QuantConfig("mixed", bits_per_layer=plan, group_size=s.group_size),
        x_eval=xe[:256],
        threads=threads,
    )
    z_ort = run_session(make_session(q.onnx_model, threads=threads), xe)[0]
    with torch.no_grad():
        z_fp = sim.logits({}, torch.from_numpy(np.ascontiguousarray(xe)))[0]
    if ye is None:
        ye = z_fp.argmax(1)
        on = "evaluation records, fp32 predictions as labels"
    else:
        on = "evaluation records" if x_eval is not None else "calibration records"
        if y is None and x_eval is None:
            on += ", fp32 predictions as labels"
    return _Executed(
        q,
        len(q.onnx_bytes()),
        float(np.mean(z_ort.argmax(1) == ye)),
        float(np.mean(z_fp.argmax(1) == ye)),
        on,
    )


def _message(
    plan: Mapping[str, int], s: AllocationSettings, sizes: SizeModel, run: _Executed
) -> str:
    """What held and, where a budget cannot be met, the best found and what to change."""
    size, acc, acc_fp = run.size, run.accuracy, run.fp32_accuracy
    parts = []
    if s.max_size is not None:
        if size <= s.max_size:
            parts.append(f"size {size} B within max_size {s.max_size} B")
        elif sizes.smallest > s.max_size:
            parts.append(
                f"max_size {s.max_size} B cannot be met: the smallest plan (4 bits "
                f"wherever that saves bytes) is {size} B; kept it; raise max_size or "
                "prune/factor first"
            )
        else:
            parts.append(
                f"size {size} B exceeds max_size {s.max_size} B "
                f"(estimate {sizes.estimate(plan)} B); lower the budget by the difference"
            )
    if s.max_drop is not None:
        drop = acc_fp - acc
        if drop <= s.max_drop + 1e-12:
            parts.append(f"accuracy drop {drop:.4f} within max_drop {s.max_drop:.4f}")
        else:
            parts.append(
                f"max_drop {s.max_drop:.4f} not met: best found drops {drop:.4f} "
                f"({acc:.4f} vs fp32 {acc_fp:.4f}) at {size} B; kept it — raise "
                "max_size or max_drop"
            )
    if not parts:
        parts.append("no budget given: σ-clustering plan")
    n4 = sum(1 for b in plan.values() if b == 4)
    return f"{n4}/{len(plan)} layers at 4 bits; " + "; ".join(parts)


def allocate_between(
    module: nn.Module,
    input_shape: Sequence[int],
    x: np.ndarray,
    *,
    size_fraction: float | None = None,
    max_drop: float | None = None,
    x_eval: np.ndarray | None = None,
    group_size: int = 32,
    threads: int = 1,
) -> Allocation:
    """:func:`allocate` with the size budget placed at ``size_fraction`` of the way from the
    smallest plan (:attr:`SizeModel.smallest`) to the all-8-bit size (for the compression
    search, which has no labels: the fp32 predictions are the labels)."""
    if size_fraction is not None and not 0.0 <= size_fraction <= 1.0:
        raise OptionError("size_fraction", f"{size_fraction} is not in [0, 1]", "use e.g. 0.5")
    sizes = SizeModel.fit(module, input_shape, x, group_size)
    max_size = None
    if size_fraction is not None:
        lo, hi = sizes.smallest, sizes.estimate({})
        max_size = int(lo + size_fraction * (hi - lo))
    return allocate(
        module,
        input_shape,
        x,
        settings=AllocationSettings(max_size=max_size, max_drop=max_drop, group_size=group_size),
        x_eval=x_eval,
        size_model=sizes,
        threads=threads,
    )

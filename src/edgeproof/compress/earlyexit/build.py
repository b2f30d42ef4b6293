"""End to end: attach exits, train the heads, calibrate the thresholds, evaluate the cascade."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from edgeproof.compress.earlyexit.backbone import EarlyExitModel, attach_exits
from edgeproof.compress.earlyexit.cascade import (
    EarlyExitReport,
    evaluate_early_exit,
    export_segments,
)
from edgeproof.compress.earlyexit.heads import HeadFit, train_exit_heads
from edgeproof.compress.earlyexit.thresholds import (
    CRITERIA,
    Calibration,
    Criterion,
    calibrate_thresholds,
)
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError

__all__ = ["EarlyExitConfig", "EarlyExitResult", "build_early_exit"]


@dataclass(frozen=True)
class EarlyExitConfig:
    """Settings of the early-exit candidate.

    ``max_drop`` ``None`` = the compression budget's (or 1 % without one); ``fit_fraction`` of
    the calibration records train the heads, the rest calibrate the thresholds.
    """

    criterion: Criterion = "max_softmax"
    max_drop: float | None = None
    epochs: int = 50
    lr: float = 1e-2
    batch_size: int = 64
    fit_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise OptionError(
                "criterion",
                f"unknown criterion {self.criterion!r}",
                "use max-softmax or entropy",
            )
        if not 0.0 < self.fit_fraction < 1.0:
            raise OptionError(
                "fit_fraction", f"{self.fit_fraction} is not in (0, 1)", "use e.g. 0.5"
            )


@dataclass
class EarlyExitResult:
    """Everything :func:`build_early_exit` produced."""

    model: EarlyExitModel
    heads: tuple[HeadFit, ...]
    calibration: Calibration
    report: EarlyExitReport
    segments: tuple[bytes, ...]


def build_early_exit(
    module: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    train: Dataset,
    calib: Dataset,
    evaluation: Dataset,
    *,
    max_drop: float = 0.01,
    config: EarlyExitConfig | None = None,
    seed: int = 0,
    threads: int = 1,
) -> EarlyExitResult:
    """Attach exits to a copy of ``module``, train the heads on ``train`` (backbone frozen),
    calibrate thresholds on ``calib`` to ``max_drop``, evaluate the ORT cascade on
    ``evaluation``."""
    cfg = config or EarlyExitConfig()
    model = attach_exits(module, input_shape, num_classes)
    fits = train_exit_heads(
        model, train, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed
    )
    cal = calibrate_thresholds(model, calib, max_drop=max_drop, criterion=cfg.criterion)
    segments = export_segments(model)
    report = evaluate_early_exit(model, cal.rule, evaluation, threads=threads, segments=segments)
    return EarlyExitResult(model, fits, cal, report, segments)

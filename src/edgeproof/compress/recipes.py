"""The compression steps, and the default search as a list of chains.

Steps (settings in ``__init__``, validated there; the work in ``apply``):

* :class:`Prune` — unstructured, per layer: ``magnitude`` (|w|, Han et al. 2015) or ``ec``
  (elimination–compensation, Ballini et al.), then BatchNorm recalibration on the calibration
  records (:func:`~edgeproof.compress.prune.recalibrate_batchnorm`);
* :class:`PruneNM` — N:M sparsity (2:4 by default), then BatchNorm recalibration;
* :class:`RemoveChannels` — structured L1 channel removal (tensors really shrink);
* :class:`LowRank` — Marchenko–Pastur low-rank factorisation;
* :class:`Quantize` — post-training quantization (:func:`~edgeproof.compress.quantize.quantize`),
  terminal: the QDQ graph and its PyTorch fake-quant simulation;
* :class:`MixedPrecision` — SigmaQuant-style 4/8-bit allocation
  (:func:`~edgeproof.compress.mixed.allocate_between`), terminal;
* :class:`EarlyExit` — exit heads and a calibrated cascade (:mod:`edgeproof.compress.earlyexit`),
  terminal: a :class:`~edgeproof.compress.artefacts.CascadeArtefact`.

:func:`default_recipes` is the search order, cheapest first: int8 with each calibration method,
weight-only int8/int4, mixed precision, pruning then int8 (``calibration="auto"``, chosen on the
calibration records alone), channel removal, low rank, and their int8 versions.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeproof.compress.artefacts import CascadeArtefact, GraphArtefact
from edgeproof.compress.context import BuildContext
from edgeproof.compress.earlyexit.backbone import attach_exits
from edgeproof.compress.earlyexit.build import EarlyExitConfig
from edgeproof.compress.earlyexit.cascade import export_all_exits, export_segments
from edgeproof.compress.earlyexit.heads import train_exit_heads
from edgeproof.compress.earlyexit.thresholds import calibrate_thresholds
from edgeproof.compress.lowrank import factorize_lowrank
from edgeproof.compress.mixed.allocate import allocate_between
from edgeproof.compress.prune import (
    check_ratio,
    prune_n_m,
    prune_unstructured,
    recalibrate_batchnorm,
    remove_channels,
    sparsity,
)
from edgeproof.compress.quantize import QuantConfig, QuantizedModel, quantize
from edgeproof.compress.steps import Built, Chain, Step
from edgeproof.errors import NotApplicableError, OptionError

__all__ = [
    "EarlyExit",
    "LowRank",
    "MixedPrecision",
    "Prune",
    "PruneNM",
    "Quantize",
    "RemoveChannels",
    "default_recipes",
]

_SIM_NOTE = "trust metrics measured on the PyTorch fake-quant simulation"
_TECHNIQUE = {
    "int8": "ptq-int8",
    "w8": "weight-only-int8",
    "w4": "weight-only-int4",
    "mixed": "mixed-precision",
}


def _pct(ratio: float) -> str:
    return f"{round(ratio * 100):d}"


def _graph(q: QuantizedModel, notes: tuple[str, ...] = ()) -> GraphArtefact:
    return GraphArtefact(
        q.sim,
        q.onnx_bytes(),
        float_nodes=[f"{f.op_type}:{f.name}" for f in q.float_nodes],
        notes=notes,
    )


class Quantize(Step):
    """Post-training quantization of the module so far (terminal)."""

    terminal = True

    def __init__(self, config: QuantConfig | None = None) -> None:
        self.config = config or QuantConfig("int8")

    @property
    def label(self) -> str:
        c = self.config
        if c.scheme == "int8":
            return "int8" if c.calibration == "auto" else f"int8-{c.calibration}"
        if c.scheme == "w4":
            return f"w4g{c.group_size}"
        return c.scheme

    @property
    def technique(self) -> str:
        return _TECHNIQUE[self.config.scheme]

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        cfg = self.config
        m = built.module
        q = quantize(
            m, ctx.spec.shape, ctx.x_calib, cfg, threads=ctx.threads, prepared=ctx.prepared(m)
        )
        notes = [f"left in float: {u.name} ({u.kind}): {u.reason}" for u in q.unquantized]
        if q.calibration_choice is not None:
            kls = ", ".join(f"{k} {v:.3g}" for k, v in q.calibration_choice.kl.items())
            notes.append(
                f"calibration auto → {q.calibration_choice.chosen} (KL to fp32 on the "
                f"calibration records: {kls})"
            )
        if cfg.scheme in ("int8", "mixed"):
            notes.append(_SIM_NOTE)
        settings = {
            "scheme": cfg.scheme,
            "calibration": q.config.calibration,
            "group_size": cfg.group_size,
        }
        return built.then(q.sim, settings=settings, notes=notes, artefact=_graph(q))


class MixedPrecision(Step):
    """SigmaQuant-style 4/8-bit weight-only plan, executed as a QDQ graph (terminal).

    ``size_fraction`` places the size budget that far from the smallest plan to the all-8-bit
    size; ``max_drop`` is an accuracy budget (fp32 predictions as labels)."""

    terminal = True

    def __init__(
        self,
        *,
        size_fraction: float | None = None,
        max_drop: float | None = None,
        group_size: int = 32,
    ) -> None:
        if size_fraction is not None and not 0.0 <= size_fraction <= 1.0:
            raise OptionError("size_fraction", f"{size_fraction} is not in [0, 1]", "use 0.5")
        if max_drop is not None and not 0.0 <= max_drop <= 1.0:
            raise OptionError("max_drop", f"{max_drop} is not in [0, 1]", "use e.g. 1%")
        self.size_fraction = size_fraction
        self.max_drop = max_drop
        self.group_size = group_size

    @property
    def label(self) -> str:
        if self.size_fraction is not None:
            return f"mixed-s{_pct(self.size_fraction)}"
        if self.max_drop is not None:
            return f"mixed-d{_pct(self.max_drop)}"
        return "mixed"

    @property
    def technique(self) -> str:
        return "mixed-precision"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        a = allocate_between(
            built.module,
            ctx.spec.shape,
            ctx.x_calib,
            size_fraction=self.size_fraction,
            max_drop=self.max_drop,
            group_size=self.group_size,
            threads=ctx.threads,
        )
        q = a.quantized
        return built.then(
            q.sim, settings=a.settings(), notes=[a.message, _SIM_NOTE], artefact=_graph(q)
        )


class Prune(Step):
    """Unstructured pruning of ``ratio`` of every Conv/Linear weight tensor, then BatchNorm
    recalibration on the calibration records."""

    def __init__(self, ratio: float, method: str = "magnitude") -> None:
        if method not in ("magnitude", "ec"):
            raise OptionError("method", f"unknown method {method!r}", "use magnitude or ec")
        self.ratio = check_ratio(ratio)
        self.method = method

    @property
    def label(self) -> str:
        return f"{'prune' if self.method == 'magnitude' else 'ec'}{_pct(self.ratio)}"

    @property
    def technique(self) -> str:
        return "magnitude-pruning" if self.method == "magnitude" else "elimination-compensation"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        xc = ctx.x_calib
        p = prune_unstructured(built.module, self.ratio, method=self.method, x_calib=xc)
        p = recalibrate_batchnorm(p, xc)
        return built.then(
            p,
            settings={"sparsity": round(sparsity(p), 4), "prune": self.method},
            notes=["dense ONNX storage: zeros are not smaller on disk"],
        )


class PruneNM(Step):
    """N:M sparsity (keep the ``n`` largest of every ``m`` consecutive inputs), then BatchNorm
    recalibration."""

    def __init__(self, n: int = 2, m: int = 4) -> None:
        if not 0 < n < m:
            raise OptionError("n", f"N:M = {n}:{m} is invalid", "use 0 < N < M, e.g. 2:4")
        self.n = n
        self.m = m

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def technique(self) -> str:
        return "n:m-pruning"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        p = recalibrate_batchnorm(prune_n_m(built.module, self.n, self.m), ctx.x_calib)
        return built.then(
            p,
            settings={"pattern": f"{self.n}:{self.m}"},
            notes=[
                f"dense ONNX storage: {self.n}:{self.m} zeros need a sparse kernel to be faster"
            ],
        )


class RemoveChannels(Step):
    """Structured removal of ``ratio`` of the prunable output channels (L1 norm)."""

    def __init__(self, ratio: float) -> None:
        self.ratio = check_ratio(ratio)

    @property
    def label(self) -> str:
        return f"channels{_pct(self.ratio)}"

    @property
    def technique(self) -> str:
        return "channel-removal"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        gm, done = remove_channels(built.module, self.ratio, ctx.x_calib)
        if not done:
            raise NotApplicableError("no layer pair can lose channels in this model")
        shrunk = [f"{d.producer}->{d.consumer}" for d in done]
        return built.then(gm, settings={"channel_ratio": self.ratio, "shrunk": shrunk})


class LowRank(Step):
    """Marchenko–Pastur low-rank factorisation of every Conv/Linear where it saves parameters."""

    def __init__(self, *, min_rank: int = 1, min_dim: int = 16) -> None:
        if min_rank < 1 or min_dim < 1:
            raise OptionError("min_rank", f"min_rank {min_rank}, min_dim {min_dim}", "use >= 1")
        self.min_rank = min_rank
        self.min_dim = min_dim

    @property
    def label(self) -> str:
        return "lowrank-mp"

    @property
    def technique(self) -> str:
        return "mp-lowrank"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        gm, rep = factorize_lowrank(built.module, min_rank=self.min_rank, min_dim=self.min_dim)
        factored = [f"{r.name}:{r.rank_kept}/{r.full_rank}" for r in rep if r.factored]
        if not factored:
            raise NotApplicableError("no layer has a Marchenko-Pastur rank that saves parameters")
        return built.then(gm, settings={"factored": factored})


class EarlyExit(Step):
    """Exit heads at the backbone's split points and a cascade calibrated to ``max_drop``
    (terminal). The first ``fit_fraction`` of the calibration records train the heads, the rest
    calibrate the thresholds; ``config.max_drop`` ``None`` means 1 %."""

    terminal = True
    needs_grad = True

    def __init__(self, config: EarlyExitConfig | None = None) -> None:
        self.config = config or EarlyExitConfig()

    @property
    def label(self) -> str:
        return f"early-exit-{self.config.criterion.replace('_', '-')}"

    @property
    def technique(self) -> str:
        return "early-exit"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        cfg = self.config
        drop = cfg.max_drop if cfg.max_drop is not None else 0.01
        calib = ctx.calib
        n = len(calib)
        k = round(n * cfg.fit_fraction)
        if k < 1 or n - k < 1:
            raise NotApplicableError(
                f"{calib.name}: {n} calibration records cannot be split to train exit heads "
                f"and calibrate thresholds (fit_fraction {cfg.fit_fraction}); give at least 2"
            )
        model = attach_exits(built.module, ctx.spec.shape, ctx.num_classes)
        train_exit_heads(
            model,
            calib.subset(np.arange(k)),
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=ctx.seed,
        )
        cal = calibrate_thresholds(
            model, calib.subset(np.arange(k, n)), max_drop=drop, criterion=cfg.criterion
        )
        art = CascadeArtefact(model, cal.rule, export_segments(model), export_all_exits(model))
        settings = {
            **cal.rule.to_json(),
            "max_drop": drop,
            "head_epochs": cfg.epochs,
            "calibration_records": n - k,
            "head_training_records": k,
        }
        return built.then(art.module, settings=settings, notes=art.notes, artefact=art)


def default_recipes() -> list[Chain]:
    """The search order, cheapest first."""
    int8 = QuantConfig("int8")
    return [
        *[
            Chain(Quantize(QuantConfig("int8", c)))
            for c in ("percentile", "minmax", "mse", "entropy")
        ],
        Chain(Quantize(QuantConfig("w8"))),
        Chain(Quantize(QuantConfig("w4", group_size=32))),
        Chain(MixedPrecision(size_fraction=0.5)),
        Chain(MixedPrecision(max_drop=0.01)),
        Chain(Prune(0.5, "magnitude"), Quantize(int8)),
        Chain(Prune(0.5, "ec"), Quantize(int8)),
        Chain(PruneNM(2, 4), Quantize(int8)),
        Chain(RemoveChannels(0.25)),
        Chain(RemoveChannels(0.25), Quantize(int8)),
        Chain(RemoveChannels(0.5), Quantize(int8)),
        Chain(LowRank()),
        Chain(LowRank(), Quantize(int8)),
    ]


def with_budget_drop(config: EarlyExitConfig, max_drop: float | None) -> EarlyExitConfig:
    """``config`` with its ``max_drop`` defaulting to the search budget's (1 % without one)."""
    if config.max_drop is not None:
        return config
    return replace(config, max_drop=max_drop if max_drop is not None else 0.01)

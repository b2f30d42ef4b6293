"""One model's backdoor scan: the data-free detectors, and Neural Cleanse / STRIP with data.

:func:`scan_model` is a pure function of a loaded model and settings (no global state, results
are plain dataclasses of numpy arrays), so a process pool can map it over many models.

Data-free, always: ``final-layer`` (weights only: works on a weights-only file), ``head-probe``
and ``freeeagle`` (both need the module). Each is compared with its calibrated threshold
(:mod:`~edgeproof.methods.backdoor.thresholds`) for the model's architecture, or the pooled one.
With clean samples: ``neural-cleanse`` (flag rule of the paper: anomaly index > 2 on the small
side) and STRIP (an entropy threshold at ``strip.fpr`` set on one half of the samples, applied to
the other half: on clean data about ``fpr`` of them are flagged; many more means triggered inputs
are among them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.backdoor.final_layer import DEFAULT_INDICATORS, final_layer_scan
from edgeproof.methods.backdoor.freeeagle import FreeEagleConfig, freeeagle
from edgeproof.methods.backdoor.head import (
    FinalLayer,
    final_layer,
    has_layer_structure,
    split_model,
)
from edgeproof.methods.backdoor.head_probe import HeadProbeConfig, embedding_unit, head_probe
from edgeproof.methods.backdoor.neural_cleanse import (
    ANOMALY_FLAG,
    NeuralCleanseConfig,
    ReversedTrigger,
    neural_cleanse,
)
from edgeproof.methods.backdoor.scoring import DetectorResult
from edgeproof.methods.backdoor.strip import (
    STRIPConfig,
    StripThreshold,
    strip_entropies,
    strip_threshold,
)
from edgeproof.methods.backdoor.thresholds import Thresholds, shipped_thresholds
from edgeproof.models.loaded import LoadedModel

__all__ = [
    "DATA_FREE_DETECTORS",
    "BackdoorScan",
    "DetectorVerdict",
    "StripSummary",
    "scan_model",
]

DATA_FREE_DETECTORS: tuple[str, ...] = ("final-layer", "head-probe", "freeeagle")


@dataclass(frozen=True)
class DetectorVerdict:
    """A detector's result and the decision against its threshold.

    ``flagged`` is ``None`` when there is no threshold for it.
    """

    result: DetectorResult
    threshold: float | None
    threshold_source: str
    flagged: bool | None


@dataclass(frozen=True)
class StripSummary:
    """STRIP on the given samples: threshold from one half, flagged fraction of the other."""

    threshold: StripThreshold
    entropies: np.ndarray
    flagged_fraction: float
    n_tested: int


@dataclass(frozen=True)
class BackdoorScan:
    """Everything :func:`scan_model` found on one model."""

    model: str
    arch: str | None
    num_classes: int
    verdicts: tuple[DetectorVerdict, ...]
    triggers: tuple[ReversedTrigger, ...] = ()
    strip: StripSummary | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def verdict(self, detector: str) -> DetectorVerdict:
        for v in self.verdicts:
            if v.result.detector == detector:
                return v
        raise KeyError(f"{detector} did not run on {self.model}")

    @property
    def flagged_by(self) -> list[str]:
        return [v.result.detector for v in self.verdicts if v.flagged]

    @property
    def suspected_target(self) -> int | None:
        """The suspected target of the most confident flagging detector (score / threshold)."""
        flagged = [v for v in self.verdicts if v.flagged and v.threshold]
        if not flagged:
            return None

        def ratio(v: DetectorVerdict) -> float:
            t = v.threshold or 1.0
            return v.result.score / t if t > 0 else math.inf

        return max(flagged, key=ratio).result.suspected_target


def _verdict(
    res: DetectorResult, arch: str | None, thresholds: Thresholds | None
) -> DetectorVerdict:
    if res.detector == "neural-cleanse":
        return DetectorVerdict(
            res,
            ANOMALY_FLAG,
            f"{ANOMALY_FLAG:g} (the paper's anomaly-index rule, not calibrated)",
            bool(np.isfinite(res.score) and res.score > ANOMALY_FLAG),
        )
    th = None if thresholds is None else thresholds.lookup(res.detector, arch)
    if th is None:
        return DetectorVerdict(res, None, "no calibrated threshold", None)
    flagged = bool(res.score > th.value) if not math.isnan(res.score) else True
    return DetectorVerdict(res, th.value, th.describe(), flagged)


def scan_model(
    model: LoadedModel,
    *,
    detectors: Sequence[str] = DATA_FREE_DETECTORS,
    clean_x: np.ndarray | None = None,
    thresholds: Thresholds | None = None,
    indicators: Sequence[str] = DEFAULT_INDICATORS,
    probe: HeadProbeConfig | None = None,
    freeeagle_config: FreeEagleConfig | None = None,
    neural_cleanse_config: NeuralCleanseConfig | None = None,
    strip: STRIPConfig | None = None,
    max_clean_samples: int = 256,
    seed: int = 0,
) -> BackdoorScan:
    """Scan one model for a backdoor.

    Args:
        model: the loaded model; its last layer must be a classifier head
            (:class:`~edgeproof.methods.backdoor.head.NotAClassifierError` otherwise).
        detectors: data-free detectors to run (of :data:`DATA_FREE_DETECTORS`).
        clean_x: clean samples; when given (and the model has a module), Neural Cleanse and
            STRIP run on at most ``max_clean_samples`` of them.
        thresholds: calibrated thresholds (default: the shipped ones).
        indicators: final-layer indicators combined into the clue.
        probe, freeeagle_config, neural_cleanse_config, strip: detector settings.
        max_clean_samples: cap on the clean samples used (seeded subsample).
        seed: seeds every detector.
    """
    unknown = [d for d in detectors if d not in DATA_FREE_DETECTORS]
    if unknown:
        raise OptionError(
            "detectors",
            f"unknown detectors {unknown}",
            f"use some of {', '.join(DATA_FREE_DETECTORS)}",
        )
    if max_clean_samples < 2:
        raise OptionError("max_clean_samples", f"must be >= 2, got {max_clean_samples}")
    th = thresholds if thresholds is not None else shipped_thresholds()
    layer: FinalLayer = final_layer(model)
    k = layer.num_classes
    results: list[DetectorResult] = []
    if "final-layer" in detectors:
        results.append(final_layer_scan(layer, indicators))
    found, skipped = _module_detectors(model, k, detectors, probe, freeeagle_config, seed)
    results += found
    triggers: tuple[ReversedTrigger, ...] = ()
    strip_summary: StripSummary | None = None
    if clean_x is not None:
        if model.module is None:
            skipped["neural-cleanse"] = skipped["strip"] = "needs the model's module"
        else:
            nc, trig, strip_summary = _with_data(
                model, k, clean_x, neural_cleanse_config, strip, max_clean_samples, seed
            )
            results.append(nc)
            triggers = tuple(trig)
    verdicts = tuple(_verdict(r, model.arch, th) for r in results)
    return BackdoorScan(model.name, model.arch, k, verdicts, triggers, strip_summary, skipped)


def _module_detectors(
    model: LoadedModel,
    k: int,
    detectors: Sequence[str],
    probe: HeadProbeConfig | None,
    freeeagle_config: FreeEagleConfig | None,
    seed: int,
) -> tuple[list[DetectorResult], dict[str, str]]:
    """``head-probe`` and ``freeeagle`` where asked for and the model allows them (its module,
    input shape and layer structure); otherwise why not, per detector (the second item)."""
    module = model.module
    shape = None if model.spec is None else model.spec.shape
    domain = None if model.spec is None else model.spec.domain
    needs_module = [d for d in detectors if d != "final-layer"]
    results: list[DetectorResult] = []
    skipped: dict[str, str] = {}
    if needs_module and (module is None or shape is None or not has_layer_structure(module)):
        why = (
            "needs the model's module (pass the architecture)"
            if module is None
            else "needs the input shape (pass a spec)"
            if shape is None
            else "needs the layer structure to split features from the head, which a "
            "TorchScript or torch.export program does not expose (its tensors are read instead)"
        )
        skipped.update({d: why for d in needs_module})
    elif module is not None and shape is not None:
        if "head-probe" in detectors:
            psplit = split_model(module, shape, kind="probe", source=model.name)
            unit = embedding_unit(psplit, shape, domain, seed=seed)
            results.append(head_probe(psplit, k, unit=unit, config=probe, seed=seed))
        if "freeeagle" in detectors:
            fsplit = split_model(module, shape, kind="freeeagle", source=model.name)
            results.append(freeeagle(fsplit, k, config=freeeagle_config, seed=seed))
    return results, skipped


def _with_data(
    model: LoadedModel,
    k: int,
    clean_x: np.ndarray,
    config: NeuralCleanseConfig | None,
    strip: STRIPConfig | None,
    max_clean_samples: int,
    seed: int,
) -> tuple[DetectorResult, list[ReversedTrigger], StripSummary]:
    """Neural Cleanse and STRIP on at most ``max_clean_samples`` of the clean samples (a seeded
    subsample; the domain is the spec's, else the samples' range)."""
    module = model.module
    assert module is not None
    x = np.asarray(clean_x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_clean_samples:
        x = x[np.sort(rng.choice(x.shape[0], max_clean_samples, replace=False))]
    domain = None if model.spec is None else model.spec.domain
    lo_hi = domain or (float(x.min()), float(x.max()))
    nc, trig = neural_cleanse(module, x, lo_hi, k, config=config, seed=seed)
    return nc, trig, _strip(module, x, strip, rng)


def _strip(
    module: torch.nn.Module, x: np.ndarray, cfg: STRIPConfig | None, rng: np.random.Generator
) -> StripSummary:
    cfg = cfg or STRIPConfig()
    order = rng.permutation(x.shape[0])
    half = x.shape[0] // 2
    calib, test = x[order[:half]], x[order[half:]]

    def proba(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(module(torch.from_numpy(batch)), dim=1).numpy()

    h_cal = strip_entropies(proba, calib, calib, cfg, rng=rng)
    threshold = strip_threshold(h_cal, cfg)
    h_test = strip_entropies(proba, test, calib, cfg, rng=rng)
    flagged = threshold.flags(h_test)
    return StripSummary(threshold, h_test, float(flagged.mean()), int(test.shape[0]))

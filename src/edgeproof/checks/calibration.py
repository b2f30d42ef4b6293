"""Calibration: does the model's confidence match how often it is right?

Measures (all on the top-label confidence ``conf = max_k softmax(z)_k`` unless stated):

* **ECE** — expected calibration error, Naeini et al. 2015 / Guo et al. 2017 ("On Calibration of
  Modern Neural Networks", eq. 3): ``Σ_b (n_b/N)·|acc_b − conf_b|`` over ``M = 15`` equal-width
  bins. Bin semantics (stated because libraries differ): the edges are
  ``numpy.linspace(0, 1, M + 1)``; bins are right-closed, bin ``b`` holds ``edges[b] < conf <=
  edges[b+1]``; a confidence exactly on an edge goes to the lower bin; confidence 0 goes to the
  first bin and 1.0 to the last.
* **Adaptive ECE** — the same sum over ``M`` equal-mass bins (Nguyen & O'Connor 2015; "AdaECE" in
  Mukhoti et al. 2020): records sorted by confidence (stable sort) and split into ``M`` groups of
  sizes differing by at most one (``numpy.array_split``).
* **MCE** — maximum calibration error, ``max_b |acc_b − conf_b|`` over non-empty equal-width bins.
* **NLL** — mean negative log-likelihood of the true class, in nats.
* **Brier** — multi-class Brier score ``(1/N) Σ_i Σ_k (p_ik − [y_i = k])²`` (Brier 1950; sum over
  classes, range [0, 2]).
* **Temperature scaling** (Guo et al. 2017, §4.2): one scalar ``T > 0``, ``p = softmax(z / T)``,
  fitted by minimising NLL over ``log T`` with SciPy's bounded Brent method on
  ``[log 0.05, log 20]``. ``T > 1`` means the model was over-confident. ECE and NLL *after* scaling
  are cross-fitted (each half of a seeded split is scored with the T fitted on the other half) so
  they are not flattered by fitting and scoring on the same records; the reported ``temperature``
  itself is fitted on all records (the value to deploy). When the model ranks the true class
  first on every record (:func:`separated`), the NLL falls monotonically as ``T → 0`` and the
  fit stops at the lower bound by construction: the temperature is undetermined by the data, and
  the check says so (an info finding) instead of warning about degenerate logits.

ECE, NLL and Brier carry percentile-bootstrap intervals (seeded from the audit seed, 200 resamples
by default). A fit that returns its input (T = 1 on a miscalibrated model) would be a bug (cf.
netcal issue #48); the tests check that over- and under-confident logits move T the right way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import log_softmax

from edgeproof.checks.base import AuditContext, Check
from edgeproof.errors import OptionError
from edgeproof.methods.calibration import (
    T_BOUNDS,
    BinStats,
    _brier_per_record,
    _ece_resampled,
    adaptive_ece,
    bin_stats,
    brier_score,
    equal_width_bin,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    separated,
)
from edgeproof.methods.stats import bootstrap_interval
from edgeproof.results import CheckResult, Figure, Finding, Interval, Metric, Table

__all__ = [
    "BinStats",
    "CalibrationCheck",
    "adaptive_ece",
    "bin_stats",
    "brier_score",
    "equal_width_bin",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "separated",
]


class CalibrationCheck(Check):
    """ECE (stated bins), adaptive ECE, MCE, NLL, Brier, reliability diagram, temperature scaling.

    Settings:
        n_bins: number of bins for ECE, adaptive ECE and MCE (default 15).
        resamples: bootstrap resamples for the intervals (default 200).
        level: confidence level of the intervals (default 0.95).
        ece_warn: ECE above which a warning is raised (default 0.05).
    """

    name = "calibration"
    title = "Calibration"
    headline = ("ece", "ece_after_temperature", "nll")
    quick_settings: ClassVar[Mapping[str, Any]] = {"resamples": 20}
    description = "Whether predicted confidence matches accuracy; temperature scaling."
    needs_data = True

    def __init__(
        self,
        *,
        n_bins: int = 15,
        resamples: int = 200,
        level: float = 0.95,
        ece_warn: float = 0.05,
    ) -> None:
        if int(n_bins) < 1:
            raise OptionError("calibration.n_bins", f"{n_bins} bins", "use at least 1, e.g. 15")
        super().__init__(n_bins=n_bins, resamples=resamples, level=level, ece_warn=ece_warn)
        self.n_bins = int(n_bins)
        self.resamples = int(resamples)
        self.level = float(level)
        self.ece_warn = float(ece_warn)

    def run(self, ctx: AuditContext) -> CheckResult:
        data = ctx.require_data()
        logits = ctx.clean_logits().astype(np.float64)
        y = data.y
        n = int(y.shape[0])
        _check_labels(logits, y)
        m = self.n_bins
        rec = _Records.of(logits, y, m)
        ece = expected_calibration_error(rec.conf, rec.correct, m)
        stats = bin_stats(rec.conf, rec.correct, m)
        mce = float(np.nanmax(stats.gap))
        aece = adaptive_ece(rec.conf, rec.correct, m)
        boot = {
            "resamples": self.resamples,
            "seed": ctx.seed,
            "level": self.level,
        }
        ece_ci, nll_ci, brier_ci = self._intervals(rec, ctx.seed)

        temperature = fit_temperature(logits, y)
        ece_ts, nll_ts, fold_t = self._cross_fitted(logits, y, ctx.seed)
        separable = separated(logits, y)

        bin_desc = (
            f"{m} equal-width bins, right-closed (lo, hi], edges numpy.linspace(0, 1, {m + 1}); "
            "confidence 0 in the first bin, 1.0 in the last"
        )
        mean_conf = float(rec.conf.mean())
        acc = float(rec.correct.mean())
        res = self.new_result()
        res.metrics += _binned_metrics(ece, ece_ci, aece, mce, m, bin_desc, boot)
        res.metrics += _score_metrics(rec, nll_ci, brier_ci, mean_conf - acc, boot)
        res.metrics += _temperature_metrics(
            temperature, separable, ece_ts, nll_ts, fold_t, ctx.seed, bin_desc
        )
        res.tables.append(_reliability_table(stats, m, bin_desc))
        res.figures.append(self._diagram(stats, ece))
        res.findings += self._findings(
            ece, ece_ci.low, mean_conf, acc, temperature, ece_ts, n, separable
        )
        res.summary = (
            f"ECE {ece:.3f} [{ece_ci.low:.3f}, {ece_ci.high:.3f}], NLL {rec.nll.mean():.3f}; "
            f"temperature {temperature:.2f} brings ECE to {ece_ts:.3f} (cross-fitted)"
        )
        return res

    def _intervals(self, rec: _Records, seed: int) -> tuple[Interval, Interval, Interval]:
        """Percentile-bootstrap intervals of the ECE, the NLL and the Brier score (one seed, so
        the three statistics share their resamples)."""
        m, n = self.n_bins, int(rec.conf.shape[0])
        boot_seed = seed * 7919 + 17
        ece_ci = bootstrap_interval(
            lambda idx: _ece_resampled(rec.bins, rec.resid, idx, m),
            n,
            resamples=self.resamples,
            level=self.level,
            seed=boot_seed,
        )
        nll_ci = bootstrap_interval(
            lambda idx: rec.nll[idx].mean(axis=1),
            n,
            resamples=self.resamples,
            level=self.level,
            seed=boot_seed,
        )
        brier_ci = bootstrap_interval(
            lambda idx: rec.brier[idx].mean(axis=1),
            n,
            resamples=self.resamples,
            level=self.level,
            seed=boot_seed,
        )
        return ece_ci, nll_ci, brier_ci

    def _cross_fitted(
        self, logits: np.ndarray, y: np.ndarray, seed: int
    ) -> tuple[float, float, list[float]]:
        """ECE and NLL after temperature scaling, each half scored with the other half's T."""
        n = y.shape[0]
        if n < 4:
            t = fit_temperature(logits, y)
            probs = np.exp(log_softmax(logits / t, axis=1))
            conf = probs.max(axis=1)
            ok = (probs.argmax(axis=1) == y).astype(np.float64)
            return (
                expected_calibration_error(conf, ok, self.n_bins),
                negative_log_likelihood(logits, y, t),
                [t],
            )
        perm = np.random.default_rng(seed * 7919 + 29).permutation(n)
        folds = [perm[: n // 2], perm[n // 2 :]]
        temps: list[float] = []
        conf = np.empty(n)
        ok = np.empty(n)
        nll = np.empty(n)
        for i, score_idx in enumerate(folds):
            fit_idx = folds[1 - i]
            t = fit_temperature(logits[fit_idx], y[fit_idx])
            temps.append(t)
            lp = log_softmax(logits[score_idx] / t, axis=1)
            conf[score_idx] = np.exp(lp.max(axis=1))
            ok[score_idx] = lp.argmax(axis=1) == y[score_idx]
            nll[score_idx] = -lp[np.arange(score_idx.size), y[score_idx]]
        return expected_calibration_error(conf, ok, self.n_bins), float(nll.mean()), temps

    def _findings(
        self,
        ece: float,
        ece_low: float,
        mean_conf: float,
        acc: float,
        temperature: float,
        ece_ts: float,
        n: int,
        separable: bool = False,
    ) -> list[Finding]:
        out: list[Finding] = []
        direction = "over" if mean_conf > acc else "under"
        evidence = {
            "ece": ece,
            "mean_confidence": mean_conf,
            "accuracy": acc,
            "temperature": temperature,
            "ece_after_temperature": ece_ts,
        }
        if ece_low > self.ece_warn:
            out.append(
                Finding(
                    "warning",
                    f"the model is {direction}-confident: mean confidence {mean_conf:.1%} vs "
                    f"accuracy {acc:.1%}, ECE {ece:.3f} (interval above {self.ece_warn}). "
                    f"Divide the logits by the fitted temperature T = {temperature:.2f} before "
                    f"softmax (cross-fitted ECE then {ece_ts:.3f}), or recalibrate on held-out "
                    "data",
                    evidence,
                )
            )
        elif ece > self.ece_warn:
            out.append(
                Finding(
                    "info",
                    f"ECE {ece:.3f} is above {self.ece_warn} but its interval reaches "
                    f"{ece_low:.3f}: with {n} records the miscalibration is not established; "
                    "use more data to decide",
                    evidence,
                )
            )
        lo, hi = T_BOUNDS
        if separable:
            # every record's true class has the largest logit: each record's NLL
            # log(1 + Σ_k≠y exp((z_k − z_y)/T)) falls as T falls, so the minimiser is T → 0 and
            # the fit stops at the lower bound by construction; nothing is wrong with the model
            out.append(
                Finding(
                    "info",
                    f"the temperature is undetermined on this data: the model ranks the true "
                    f"class first on all {n} records, so the NLL keeps falling as T → 0 and the "
                    f"fit stops at the search bound {lo}; do not deploy that T (keep T = 1), "
                    "or fit it on held-out data on which the model makes mistakes",
                    evidence,
                )
            )
        elif temperature <= lo * 1.001 or temperature >= hi * 0.999:
            out.append(
                Finding(
                    "warning",
                    f"the fitted temperature {temperature:.3g} sits at the search bound "
                    f"[{lo}, {hi}]: the logits are degenerate (e.g. near-constant or extremely "
                    "large); check the model's output layer",
                    evidence,
                )
            )
        return out

    def _diagram(self, stats: BinStats, ece: float) -> Figure:
        def draw() -> str:
            from edgeproof.report.charts import Axis, Chart, Panels
            from edgeproof.report.charts.colors import BLUE, GREY, SKY, VERMILLION

            has = stats.count > 0
            lo, hi = stats.lower[has], stats.upper[has]
            acc, conf, n = stats.accuracy[has], stats.confidence[has], stats.count[has]
            width = hi - lo
            tips = [
                f"confidence {a:.2f}–{b:.2f}: {int(c)} records, accuracy {p:.3f}, "
                f"mean confidence {q:.3f}"
                for a, b, c, p, q in zip(lo, hi, n, acc, conf)
            ]
            top = Chart(
                560,
                310,
                x=Axis(limits=(0.0, 1.0)),
                y=Axis("accuracy in bin", limits=(0.0, 1.0)),
                title=f"ECE {ece:.3f}",
            )
            top.bars(lo, acc, width=width, align="edge", color=BLUE, label="accuracy",
                     tooltips=tips)  # fmt: skip
            over, under = conf > acc, acc > conf
            top.bars(
                lo[over],
                (conf - acc)[over],
                width=width[over],
                align="edge",
                bottom=acc[over],
                color=VERMILLION,
                label="gap: over-confident",
            )
            top.bars(
                lo[under],
                (acc - conf)[under],
                width=width[under],
                align="edge",
                bottom=conf[under],
                color=SKY,
                label="gap: under-confident",
            )
            top.line([0.0, 1.0], [0.0, 1.0], color=GREY, width=1.0, dash="dashed",
                     label="perfect calibration")  # fmt: skip
            bottom = Chart(
                560,
                150,
                x=Axis("top-label confidence", limits=(0.0, 1.0)),
                y=Axis("records", scale="log", limits=(0.5, None)),
            )
            bottom.bars(lo, n, width=width, align="edge", bottom=None, color=GREY, tooltips=tips)
            return Panels([top, bottom]).svg()

        return Figure(
            "reliability_diagram",
            "Reliability diagram",
            draw,
            description="per-bin accuracy against mean confidence (diagonal = perfectly "
            "calibrated); the gap is vermillion where confidence exceeds accuracy (over-confident) "
            "and light blue where accuracy exceeds confidence (under-confident); below, the "
            "records per bin (same bins, log scale)",
        )


def _check_labels(logits: np.ndarray, y: np.ndarray) -> None:
    """Every label is one of the model's outputs."""
    if logits.shape[1] <= int(y.max()):
        raise OptionError(
            "data",
            f"labels go up to {int(y.max())} but the model has {logits.shape[1]} outputs",
            "use data whose labels match the model's classes",
        )


@dataclass(frozen=True)
class _Records:
    """Per-record quantities of the calibration measures.

    Attributes:
        conf: top-label confidence.
        correct: 1.0 where the top label is the true one.
        nll: negative log-likelihood of the true class (nats).
        brier: Brier score of the record.
        bins: equal-width bin of ``conf``.
        resid: ``correct − conf``.
    """

    conf: np.ndarray
    correct: np.ndarray
    nll: np.ndarray
    brier: np.ndarray
    bins: np.ndarray
    resid: np.ndarray

    @classmethod
    def of(cls, logits: np.ndarray, y: np.ndarray, n_bins: int) -> _Records:
        n = int(y.shape[0])
        logp = log_softmax(logits, axis=1)
        probs = np.exp(logp)
        pred = probs.argmax(axis=1)
        conf = probs[np.arange(n), pred]
        correct = (pred == y).astype(np.float64)
        nll_i = -logp[np.arange(n), y]
        brier_i = _brier_per_record(probs, y)
        bins = equal_width_bin(conf, n_bins)
        return cls(conf, correct, nll_i, brier_i, bins, correct - conf)


def _binned_metrics(
    ece: float,
    ece_ci: Interval,
    aece: float,
    mce: float,
    m: int,
    bin_desc: str,
    boot: dict[str, Any],
) -> list[Metric]:
    """ECE (with its interval), adaptive ECE and MCE."""
    return [
        Metric(
            "ece",
            ece,
            unit="fraction",
            ci=ece_ci,
            description=f"expected calibration error of the top-label confidence; {bin_desc}; "
            "percentile bootstrap interval (binned ECE is biased upwards in small samples, "
            "so a near-calibrated model's interval can sit above its point value)",
            higher_is_better=False,
            settings={"n_bins": m, "binning": "equal-width, right-closed", **boot},
        ),
        Metric(
            "adaptive_ece",
            aece,
            unit="fraction",
            description=f"ECE over {m} equal-mass bins (records sorted by confidence, "
            "split into groups differing in size by at most one)",
            higher_is_better=False,
            settings={"n_bins": m, "binning": "equal-mass"},
        ),
        Metric(
            "mce",
            mce,
            unit="fraction",
            description=f"largest |accuracy − confidence| over non-empty bins; {bin_desc}",
            higher_is_better=False,
            settings={"n_bins": m},
        ),
    ]


def _score_metrics(
    rec: _Records,
    nll_ci: Interval,
    brier_ci: Interval,
    confidence_gap: float,
    boot: dict[str, Any],
) -> list[Metric]:
    """NLL and Brier score (with their intervals) and the mean confidence gap."""
    return [
        Metric(
            "nll",
            float(rec.nll.mean()),
            unit="nats",
            ci=nll_ci,
            description="mean negative log-likelihood of the true class",
            higher_is_better=False,
            settings=boot,
        ),
        Metric(
            "brier",
            float(rec.brier.mean()),
            unit="",
            ci=brier_ci,
            description="multi-class Brier score: mean over records of the sum over classes "
            "of (p − one-hot)², range [0, 2]",
            higher_is_better=False,
            settings=boot,
        ),
        Metric(
            "mean_confidence_gap",
            confidence_gap,
            unit="fraction",
            description="mean top-label confidence minus accuracy (> 0: over-confident)",
            higher_is_better=None,
        ),
    ]


def _temperature_metrics(
    temperature: float,
    separable: bool,
    ece_ts: float,
    nll_ts: float,
    fold_t: list[float],
    seed: int,
    bin_desc: str,
) -> list[Metric]:
    """The fitted temperature and the cross-fitted ECE and NLL after scaling by it."""
    return [
        Metric(
            "temperature",
            temperature,
            unit="",
            description="temperature T minimising NLL of softmax(z/T) on all records "
            "(T > 1: the model is over-confident)",
            higher_is_better=None,
            settings={
                "bounds": list(T_BOUNDS),
                "optimiser": "scipy bounded Brent on log T",
                "determined": not separable,
            },
        ),
        Metric(
            "ece_after_temperature",
            ece_ts,
            unit="fraction",
            description=f"ECE after temperature scaling, 2-fold cross-fitted; {bin_desc}",
            higher_is_better=False,
            settings={"folds": 2, "fold_temperatures": fold_t, "seed": seed},
        ),
        Metric(
            "nll_after_temperature",
            nll_ts,
            unit="nats",
            description="NLL after temperature scaling, 2-fold cross-fitted",
            higher_is_better=False,
            settings={"folds": 2, "fold_temperatures": fold_t, "seed": seed},
        ),
    ]


def _reliability_table(stats: BinStats, m: int, bin_desc: str) -> Table:
    """One row per equal-width bin: its edges, records, accuracy, confidence and gap."""
    return Table(
        "reliability",
        "Reliability bins",
        ["bin low", "bin high", "records", "accuracy", "mean confidence", "gap"],
        [
            [
                round(float(stats.lower[b]), 6),
                round(float(stats.upper[b]), 6),
                int(stats.count[b]),
                None if stats.count[b] == 0 else float(stats.accuracy[b]),
                None if stats.count[b] == 0 else float(stats.confidence[b]),
                None if stats.count[b] == 0 else float(stats.gap[b]),
            ]
            for b in range(m)
        ],
        description=bin_desc,
    )

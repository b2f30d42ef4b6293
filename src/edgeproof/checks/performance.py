"""Performance: accuracy, per-class recall and precision, confusion matrix, macro-F1.

Every proportion carries a Wilson score interval (:func:`edgeproof.methods.stats.wilson_interval`).
Per-class numbers matter: a poisoned or neglected minority class hides inside overall accuracy, so
a class whose recall is clearly below the rest (its Wilson upper bound below the lower bound of
overall accuracy) is raised as a warning that names the class.

Definitions follow scikit-learn (``confusion_matrix``, ``precision_recall_fscore_support``,
``f1_score(average="macro")``, ``balanced_accuracy_score``):

* recall of class c = TP_c / support_c (its accuracy on the records labelled c);
* precision of class c = TP_c / (records predicted c), 0 when nothing is predicted c;
* F1 = 2PR/(P+R), 0 when P + R = 0; macro-F1 averages F1 over the classes that occur in the
  labels or the predictions (scikit-learn's default label set);
* balanced accuracy averages recall over the classes present in the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgeproof.checks.base import AuditContext, Check
from edgeproof.methods.stats import wilson_bounds, wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Interval, Metric, Table
from edgeproof.spec import DomainViolation, InputSpec

__all__ = ["ClassScores", "PerformanceCheck", "class_scores", "confusion_matrix"]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of records with label ``i`` predicted as ``j`` (int64, K×K)."""
    k = int(num_classes)
    flat = np.asarray(y_true, dtype=np.int64) * k + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=k * k).reshape(k, k)


class ClassScores:
    """Per-class counts and scores derived from a confusion matrix (arrays of length K)."""

    def __init__(self, cm: np.ndarray, level: float = 0.95) -> None:
        self.cm = cm
        self.tp = np.diag(cm).astype(np.int64)
        self.support = cm.sum(axis=1).astype(np.int64)
        self.predicted = cm.sum(axis=0).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.recall = np.where(self.support > 0, self.tp / np.maximum(self.support, 1), np.nan)
            self.precision = np.where(
                self.predicted > 0, self.tp / np.maximum(self.predicted, 1), 0.0
            )
            p = self.precision
            r = np.nan_to_num(self.recall, nan=0.0)
            self.f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
        self.recall_low, self.recall_high = wilson_bounds(self.tp, self.support, level)
        self.precision_low, self.precision_high = wilson_bounds(self.tp, self.predicted, level)

    @property
    def present(self) -> np.ndarray:
        """Classes occurring in the labels."""
        result: np.ndarray = self.support > 0
        return result

    @property
    def macro_f1(self) -> float:
        used = (self.support > 0) | (self.predicted > 0)
        return float(self.f1[used].mean()) if used.any() else float("nan")

    @property
    def balanced_accuracy(self) -> float:
        return float(np.nanmean(self.recall)) if self.present.any() else float("nan")


def class_scores(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, level: float = 0.95
) -> ClassScores:
    """Per-class scores of predictions ``y_pred`` against labels ``y_true``."""
    return ClassScores(confusion_matrix(y_true, y_pred, num_classes), level)


def _fmt(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def _outside_domain(violation: DomainViolation, data_name: str, spec: InputSpec) -> Finding:
    """The warning that the data leaves the input domain the numbers assume."""
    return Finding(
        "warning",
        violation.message(data_name)
        + "; these numbers describe the model on inputs it was not built for",
        {
            "fraction_outside": violation.fraction,
            "data_range": [violation.data_min, violation.data_max],
            "domain": list(spec.domain),
            "domain_source": spec.domain_source,
        },
    )


class PerformanceCheck(Check):
    """Accuracy with Wilson intervals, per-class recall/precision, confusion matrix, macro-F1.

    Settings:
        level: confidence level of every interval (default 0.95).
        min_support: classes with fewer labelled records get an "intervals are wide" note
            (default 20).
    """

    name = "performance"
    title = "Performance"
    headline = ("accuracy", "min_class_recall", "macro_f1")
    quick_settings: ClassVar[Mapping[str, Any]] = {}
    description = (
        "Accuracy, per-class recall and precision with Wilson intervals, confusion matrix."
    )
    needs_data = True

    def __init__(self, *, level: float = 0.95, min_support: int = 20) -> None:
        super().__init__(level=level, min_support=min_support)
        self.level = float(level)
        self.min_support = int(min_support)

    def run(self, ctx: AuditContext) -> CheckResult:
        data = ctx.require_data()
        logits = ctx.clean_logits()
        y = data.y
        n = int(y.shape[0])
        k = max(int(logits.shape[1]), data.num_classes, int(y.max()) + 1 if n else 0)
        names = list(data.classes) + [str(i) for i in range(len(data.classes), k)]
        pred = logits.argmax(axis=1)
        sc = class_scores(y, pred, k, self.level)
        correct = int(sc.tp.sum())
        acc = correct / n
        acc_ci = wilson_interval(correct, n, self.level)
        pct = f"{round(self.level * 100)}%"
        res = self.new_result()

        present = np.flatnonzero(sc.present)
        worst = int(present[np.argmin(sc.recall[present])])
        res.metrics += self._metrics(sc, names, worst, acc, acc_ci, n, pct)

        res.tables.append(self._class_table(sc, names, pct))
        res.tables.append(
            Table(
                "confusion_matrix",
                "Confusion matrix",
                ["true \\ predicted", *names],
                [[names[i], *(int(v) for v in sc.cm[i])] for i in range(k)],
                description="rows: true class; columns: predicted class; cells: record counts",
            )
        )
        res.figures.append(self._heatmap(sc.cm, names))
        violation = ctx.threat.input.domain_violation(data.x)
        if violation is not None:
            res.findings.append(_outside_domain(violation, data.name, ctx.threat.input))
        res.findings.extend(self._findings(sc, names, acc, acc_ci.low, acc_ci.high, pct))

        res.summary = (
            f"accuracy {acc:.1%} [{acc_ci.low:.1%}, {acc_ci.high:.1%}] on {n} records; "
            f"macro-F1 {sc.macro_f1:.3f}; lowest recall {sc.recall[worst]:.1%} "
            f"(class {names[worst]})"
        )
        return res

    def _metrics(
        self,
        sc: ClassScores,
        names: list[str],
        worst: int,
        acc: float,
        acc_ci: Interval,
        n: int,
        pct: str,
    ) -> list[Metric]:
        """Accuracy, macro-F1, balanced accuracy and the lowest per-class recall (of class
        ``worst``)."""
        return [
            Metric(
                "accuracy",
                acc,
                unit="fraction",
                ci=acc_ci,
                description=f"top-1 accuracy on {n} records; {pct} Wilson score interval",
                higher_is_better=True,
                settings={"records": n, "level": self.level},
            ),
            Metric(
                "macro_f1",
                sc.macro_f1,
                unit="fraction",
                description="unweighted mean of per-class F1 over classes present in labels or "
                "predictions (scikit-learn f1_score average='macro')",
                higher_is_better=True,
            ),
            Metric(
                "balanced_accuracy",
                sc.balanced_accuracy,
                unit="fraction",
                description="mean per-class recall over classes present in the labels",
                higher_is_better=True,
            ),
            Metric(
                "min_class_recall",
                float(sc.recall[worst]),
                unit="fraction",
                ci=wilson_interval(int(sc.tp[worst]), int(sc.support[worst]), self.level),
                description=f"lowest per-class recall (class {names[worst]!r}, "
                f"{sc.support[worst]} records); {pct} Wilson interval",
                higher_is_better=True,
                settings={"class": names[worst], "support": int(sc.support[worst])},
            ),
        ]

    def _class_table(self, sc: ClassScores, names: list[str], pct: str) -> Table:
        rows = [
            [
                names[c],
                int(sc.support[c]),
                _fmt(sc.recall[c]),
                _fmt(sc.recall_low[c]) if sc.support[c] else None,
                _fmt(sc.recall_high[c]) if sc.support[c] else None,
                _fmt(sc.precision[c]) if sc.predicted[c] else None,
                _fmt(sc.precision_low[c]) if sc.predicted[c] else None,
                _fmt(sc.precision_high[c]) if sc.predicted[c] else None,
                _fmt(sc.f1[c]),
            ]
            for c in range(len(names))
        ]
        return Table(
            "per_class",
            "Per-class recall and precision",
            [
                "class",
                "support",
                "recall",
                "recall low",
                "recall high",
                "precision",
                "precision low",
                "precision high",
                "F1",
            ],
            rows,
            description=f"recall = accuracy on the records of that class; {pct} Wilson score "
            "intervals; precision is empty when the class is never predicted",
        )

    def _findings(
        self,
        sc: ClassScores,
        names: list[str],
        acc: float,
        acc_low: float,
        acc_high: float,
        pct: str,
    ) -> list[Finding]:
        out: list[Finding] = []
        lagging = np.flatnonzero(sc.present & (sc.recall_high < acc_low))
        for c in lagging[np.argsort(sc.recall[lagging])]:
            out.append(
                Finding(
                    "warning",
                    f"class {names[c]!r} is recognised far less often than the others: recall "
                    f"{sc.recall[c]:.1%} [{sc.recall_low[c]:.1%}, {sc.recall_high[c]:.1%}] vs "
                    f"overall accuracy {acc:.1%} [{acc_low:.1%}, {acc_high:.1%}] ({pct} Wilson). "
                    "Inspect its training labels and data (a mislabelled or poisoned minority "
                    "class hides in overall accuracy), or collect more examples of it",
                    {
                        "class": names[c],
                        "support": int(sc.support[c]),
                        "recall": float(sc.recall[c]),
                        "recall_ci": [float(sc.recall_low[c]), float(sc.recall_high[c])],
                        "accuracy_ci": [acc_low, acc_high],
                        "most_confused_with": names[int(_most_confused(sc.cm, int(c)))],
                    },
                )
            )
        small = np.flatnonzero(sc.present & (sc.support < self.min_support))
        if small.size:
            listed = ", ".join(f"{names[c]} (n={sc.support[c]})" for c in small[:10])
            more = f" and {small.size - 10} more" if small.size > 10 else ""
            out.append(
                Finding(
                    "info",
                    f"{small.size} class(es) have fewer than {self.min_support} labelled records: "
                    f"{listed}{more}. Their per-class intervals are wide (e.g. 10/10 correct "
                    f"still only bounds recall above {wilson_interval(10, 10, self.level).low:.0%}"
                    "); add records of these classes for a firmer per-class verdict",
                    {"classes": {names[c]: int(sc.support[c]) for c in small}},
                )
            )
        absent = np.flatnonzero(~sc.present)
        if absent.size:
            listed = ", ".join(names[c] for c in absent[:10])
            out.append(
                Finding(
                    "info",
                    f"{absent.size} class(es) have no labelled records, so their recall is "
                    f"unknown: {listed}. Use data that covers every class the model outputs",
                    {"classes": [names[c] for c in absent]},
                )
            )
        return out

    def _heatmap(self, cm: np.ndarray, names: list[str]) -> Figure:
        def draw() -> str:
            from edgeproof.report.charts import Axis, Chart

            k = cm.shape[0]
            frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            cell = 34.0 if k <= 12 else max(4.0, 480.0 / k)
            side = max(cell * k, 160.0)  # 2 classes with long names need room for the labels
            chart = Chart(
                min(1000.0, side + 330),
                side + 60,
                x=Axis("predicted class"),
                y=Axis("true class"),
            )
            counts = [[str(int(v)) if v else "" for v in row] for row in cm] if k <= 20 else None
            tips = (
                [
                    [
                        f"true {names[i]}, predicted {names[j]}: {int(cm[i, j])} "
                        f"({frac[i, j]:.1%} of true {names[i]})"
                        for j in range(k)
                    ]
                    for i in range(k)
                ]
                if k <= 30
                else None
            )
            chart.heatmap(
                frac,
                rows=names,
                cols=names,
                vmin=0.0,
                vmax=1.0,
                annotations=counts,
                colorbar="fraction of true class",
                tooltips=tips,
            )
            return chart.svg()

        return Figure(
            "confusion_matrix",
            "Confusion matrix",
            draw,
            description="row-normalised (colour = fraction of the true class); numbers are counts",
        )


def _most_confused(cm: np.ndarray, c: int) -> int:
    row = cm[c].copy()
    row[c] = -1
    return int(np.argmax(row))

"""The performance check against scikit-learn's metrics and hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from edgeproof.checks.base import AuditContext
from edgeproof.checks.performance import PerformanceCheck
from edgeproof.data.dataset import Dataset
from edgeproof.errors import ModelError
from edgeproof.methods.stats import wilson_interval
from edgeproof.models.loaded import LoadedModel
from edgeproof.results import CheckResult
from edgeproof.spec import InputSpec, ThreatModel


def _ctx_with_predictions(
    y: np.ndarray, pred: np.ndarray, classes: list[str], n_outputs: int | None = None
) -> AuditContext:
    """A context whose cached clean logits put the arg-max on ``pred``."""
    k = n_outputs or len(classes)
    logits = np.zeros((y.size, k), dtype=np.float32)
    logits[np.arange(y.size), pred] = 5.0
    data = Dataset(x=np.zeros((y.size, 2)), y=y, classes=classes, name="mem", format="npz")
    model = LoadedModel(path=None, format="weights-only")
    ctx = AuditContext(model, data, ThreatModel(InputSpec((2,), kind="tabular")))
    ctx.cache["clean_logits"] = logits
    return ctx


def _rows(res: CheckResult, table: str) -> list[list[object]]:
    return [list(r) for t in res.tables if t.name == table for r in t.rows]


@pytest.fixture(scope="module")
def noisy() -> tuple[np.ndarray, np.ndarray]:
    """400 labels over 4 classes; class 2 is mostly mispredicted as 0."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=400)
    pred = y.copy()
    flip = rng.random(400) < 0.08
    pred[flip] = rng.integers(0, 4, size=int(flip.sum()))
    weak = (y == 2) & (rng.random(400) < 0.6)
    pred[weak] = 0
    return y, pred


def test_metrics_agree_with_scikit_learn(noisy: tuple[np.ndarray, np.ndarray]) -> None:
    y, pred = noisy
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["a", "b", "c", "d"]))
    assert res.metric("accuracy").value == pytest.approx(np.mean(y == pred), abs=1e-12)
    assert res.metric("macro_f1").value == pytest.approx(f1_score(y, pred, average="macro"))
    assert res.metric("balanced_accuracy").value == pytest.approx(balanced_accuracy_score(y, pred))
    p, r, f, s = precision_recall_fscore_support(y, pred, zero_division=0)
    rows = _rows(res, "per_class")
    assert [row[0] for row in rows] == ["a", "b", "c", "d"]
    assert [row[1] for row in rows] == list(s)
    assert [row[2] for row in rows] == pytest.approx(r, abs=1e-6)
    assert [row[5] for row in rows] == pytest.approx(p, abs=1e-6)
    assert [row[8] for row in rows] == pytest.approx(f, abs=1e-6)
    cm = [row[1:] for row in _rows(res, "confusion_matrix")]
    assert cm == sk_confusion_matrix(y, pred).tolist()
    assert res.metric("min_class_recall").value == pytest.approx(r.min())
    assert res.metric("min_class_recall").settings["class"] == "c"


def test_accuracy_carries_the_wilson_interval_of_its_counts(
    noisy: tuple[np.ndarray, np.ndarray],
) -> None:
    y, pred = noisy
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["a", "b", "c", "d"]))
    k = int((y == pred).sum())
    assert res.metric("accuracy").ci == wilson_interval(k, y.size)
    recall_c = _rows(res, "per_class")[2]
    iv = wilson_interval(int(((y == 2) & (pred == 2)).sum()), int((y == 2).sum()))
    assert recall_c[3:5] == pytest.approx([iv.low, iv.high], abs=1e-6)


def test_lagging_class_is_named_in_a_warning(noisy: tuple[np.ndarray, np.ndarray]) -> None:
    y, pred = noisy
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["a", "b", "c", "d"]))
    warnings = [f for f in res.findings if f.severity == "warning"]
    assert len(warnings) == 1
    assert "class 'c' is recognised far less often than the others" in warnings[0].message
    assert warnings[0].evidence["most_confused_with"] == "a"


def test_uniformly_good_model_raises_no_warning() -> None:
    y = np.repeat(np.arange(3), 100)
    pred = y.copy()
    pred[::20] = (pred[::20] + 1) % 3  # 5% errors spread over every class
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["x", "y", "z"]))
    assert [f for f in res.findings if f.severity != "info"] == []
    assert res.metric("accuracy").value == pytest.approx(0.95)


def test_poisoned_minority_class_is_caught_although_accuracy_is_high() -> None:
    # 97% accuracy overall; the 30-record minority class is right only 6 times in 30.
    y = np.concatenate([np.zeros(500, int), np.ones(500, int), np.full(30, 2)])
    pred = y.copy()
    pred[1000:1024] = 0
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["cat", "dog", "stop"]))
    assert res.metric("accuracy").value > 0.97
    msgs = [f.message for f in res.findings if f.severity == "warning"]
    assert len(msgs) == 1 and "'stop'" in msgs[0] and "recall 20.0%" in msgs[0]


def test_small_support_classes_get_a_wide_interval_note() -> None:
    y = np.concatenate([np.zeros(100, int), np.ones(7, int)])
    res = PerformanceCheck(min_support=20).run(_ctx_with_predictions(y, y.copy(), ["big", "rare"]))
    info = [f for f in res.findings if "fewer than 20 labelled records" in f.message]
    assert len(info) == 1
    assert "rare (n=7)" in info[0].message and "big" not in info[0].message
    assert info[0].evidence["classes"] == {"rare": 7}


def test_classes_missing_from_labels_follow_scikit_learn_macro_f1() -> None:
    # class 2 never occurs in the labels but is predicted once: scikit-learn averages F1 over
    # labels ∪ predictions (class 3 appears in neither and is left out).
    y = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 1, 2, 0])
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["a", "b", "c", "d"]))
    assert res.metric("macro_f1").value == pytest.approx(
        f1_score(y, pred, average="macro", zero_division=0)
    )
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected_balanced = balanced_accuracy_score(y, pred)
    assert res.metric("balanced_accuracy").value == pytest.approx(expected_balanced)
    absent = [f for f in res.findings if "no labelled records" in f.message]
    assert len(absent) == 1 and "c, d" in absent[0].message


def test_model_with_more_outputs_than_named_classes_gets_numbered_columns() -> None:
    y = np.array([0, 1, 1, 0])
    pred = np.array([0, 1, 2, 0])
    res = PerformanceCheck().run(_ctx_with_predictions(y, pred, ["a", "b"], n_outputs=3))
    table = next(t for t in res.tables if t.name == "confusion_matrix")
    assert list(table.columns) == ["true \\ predicted", "a", "b", "2"]
    assert _rows(res, "confusion_matrix")[1] == ["b", 0, 1, 1]


def test_digits_model_result_is_complete_and_serialisable(digits_model, digits_test) -> None:  # type: ignore[no-untyped-def]
    assert digits_model.spec is not None
    ctx = AuditContext(digits_model, digits_test, ThreatModel(digits_model.spec))
    res = PerformanceCheck().run(ctx)
    pred = digits_model.predict_logits(digits_test.x).argmax(axis=1)
    assert res.metric("accuracy").value == pytest.approx(np.mean(pred == digits_test.y))
    assert res.metric("accuracy").value > 0.85
    assert res.figures[0].svg.startswith("<svg")
    assert "accuracy" in res.summary
    json.dumps(res.to_json(), allow_nan=False)


def test_non_finite_logits_fail_the_check_with_a_count() -> None:
    ctx = _ctx_with_predictions(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    ctx.cache["clean_logits"][2, 0] = np.inf
    with pytest.raises(ModelError, match="1 of 3 records give NaN or Inf logits"):
        PerformanceCheck().run(ctx)

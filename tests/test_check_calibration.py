"""Calibration: ECE by hand, bin-edge semantics, NLL/Brier, temperature scaling both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeproof.checks.base import AuditContext
from edgeproof.checks.calibration import (
    CalibrationCheck,
    adaptive_ece,
    equal_width_bin,
    expected_calibration_error,
    fit_temperature,
    separated,
)
from edgeproof.data.dataset import Dataset
from edgeproof.errors import ModelError, OptionError
from edgeproof.methods.calibration import T_BOUNDS
from edgeproof.models.loaded import LoadedModel
from edgeproof.spec import InputSpec, ThreatModel


def _ctx(logits: np.ndarray, y: np.ndarray, seed: int = 0) -> AuditContext:
    k = logits.shape[1]
    data = Dataset(
        x=np.zeros((y.size, 2)), y=y, classes=[str(i) for i in range(k)], name="m", format="npz"
    )
    ctx = AuditContext(
        LoadedModel(path=None, format="weights-only"),
        data,
        ThreatModel(InputSpec((2,), kind="tabular")),
        seed=seed,
    )
    ctx.cache["clean_logits"] = logits.astype(np.float32)
    return ctx


def _logits_with_confidence(conf: list[float], pred: list[int], k: int = 4) -> np.ndarray:
    """Logits whose softmax puts ``conf`` on class ``pred`` and splits the rest evenly."""
    c = np.asarray(conf, dtype=np.float64)
    z = np.tile(np.log((1 - c) / (k - 1))[:, None], (1, k))
    z[np.arange(c.size), pred] = np.log(c)
    return z


# Hand example (15 bins of width 1/15):
#   conf 0.95 ×4, correct 3 → bin 14 (0.933, 1]: |0.75 − 0.95| · 4/8 = 0.1
#   conf 0.55 ×2, correct 1 → bin 8 (0.533, 0.6]: |0.5 − 0.55| · 2/8 = 0.0125
#   conf 0.30 ×2, correct 0 → bin 4 (0.267, 0.333]: |0 − 0.3| · 2/8 = 0.075
#   ECE = 0.1875, MCE = 0.3
HAND_CONF = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 0.30, 0.30]
HAND_OK = [1, 1, 1, 0, 1, 0, 0, 0]


def test_ece_matches_hand_computed_example() -> None:
    conf, ok = np.array(HAND_CONF), np.array(HAND_OK, dtype=float)
    assert expected_calibration_error(conf, ok, 15) == pytest.approx(0.1875, abs=1e-12)


def test_bins_are_right_closed_with_zero_first_and_one_last() -> None:
    edges = np.linspace(0, 1, 16)
    conf = np.array([0.0, edges[3], np.nextafter(edges[3], 1.0), 1.0, edges[1]])
    assert equal_width_bin(conf, 15).tolist() == [0, 2, 3, 14, 0]


def test_confidence_on_a_bin_edge_is_averaged_with_the_lower_bin() -> None:
    # edge 0.2 belongs to (0.1333, 0.2] together with 0.15: one bin, accuracy 0.5,
    # mean confidence 0.175 → ECE 0.325 (a left-closed binning would give 0.475).
    edge = float(np.linspace(0, 1, 16)[3])
    ece = expected_calibration_error(np.array([edge, 0.15]), np.array([1.0, 0.0]), 15)
    assert ece == pytest.approx(0.325, abs=1e-12)


def test_adaptive_ece_uses_equal_mass_bins() -> None:
    # sorted groups {0.1, 0.2} and {0.3, 0.4}: |(0 − .1) + (1 − .2)| + |(0 − .3) + (1 − .4)| = 1.0
    conf = np.array([0.4, 0.1, 0.3, 0.2])
    ok = np.array([1.0, 0.0, 0.0, 1.0])
    assert adaptive_ece(conf, ok, 2) == pytest.approx(1.0 / 4, abs=1e-12)


def test_check_reports_hand_example_metrics_and_bin_table() -> None:
    pred = [1, 0, 3, 2, 1, 0, 3, 2]
    y = np.array([p if ok else (p + 1) % 4 for p, ok in zip(pred, HAND_OK)])
    res = CalibrationCheck(resamples=50).run(_ctx(_logits_with_confidence(HAND_CONF, pred), y))
    assert res.metric("ece").value == pytest.approx(0.1875, abs=1e-6)
    assert res.metric("mce").value == pytest.approx(0.3, abs=1e-6)
    assert "right-closed (lo, hi]" in res.metric("ece").description
    assert "confidence 0 in the first bin, 1.0 in the last" in res.metric("ece").description
    rows = next(t for t in res.tables if t.name == "reliability").rows
    counts = {i: row[2] for i, row in enumerate(rows) if row[2]}
    assert counts == {4: 2, 8: 2, 14: 4}
    assert rows[14][3] == pytest.approx(0.75)


def test_nll_and_brier_agree_with_torch_and_one_hot() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(300, 4)) * 2
    y = rng.integers(0, 4, size=300)
    res = CalibrationCheck(resamples=50).run(_ctx(logits, y))
    z = torch.tensor(logits.astype(np.float32), dtype=torch.float64)
    nll = F.cross_entropy(z, torch.tensor(y)).item()
    probs = torch.softmax(z, dim=1).numpy()
    brier = ((probs - np.eye(4)[y]) ** 2).sum(axis=1).mean()
    assert res.metric("nll").value == pytest.approx(nll, rel=1e-9)
    assert res.metric("brier").value == pytest.approx(brier, rel=1e-9)
    ci = res.metric("nll").ci
    assert ci is not None and ci.low < nll < ci.high


def _calibrated_logits(n: int = 3000, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits with labels drawn from their own softmax: calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    return z, np.minimum(y, k - 1)


def test_temperature_of_calibrated_logits_is_near_one() -> None:
    z, y = _calibrated_logits()
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.1)


def test_over_confident_model_gets_temperature_above_one_and_lower_nll() -> None:
    z, y = _calibrated_logits()
    res = CalibrationCheck(resamples=50).run(_ctx(z * 3, y))
    t = res.metric("temperature").value
    assert t == pytest.approx(3.0, rel=0.15)
    assert res.metric("nll_after_temperature").value < res.metric("nll").value - 0.1
    assert res.metric("ece_after_temperature").value < res.metric("ece").value / 2
    assert res.metric("mean_confidence_gap").value > 0.05
    warn = [f for f in res.findings if f.severity == "warning"]
    assert len(warn) == 1 and "over-confident" in warn[0].message
    assert f"T = {t:.2f}" in warn[0].message


def test_under_confident_model_gets_temperature_below_one() -> None:
    z, y = _calibrated_logits()
    res = CalibrationCheck(resamples=50).run(_ctx(z / 3, y))
    assert res.metric("temperature").value == pytest.approx(1 / 3, rel=0.15)
    assert res.metric("nll_after_temperature").value < res.metric("nll").value
    assert res.metric("mean_confidence_gap").value < 0
    assert any("under-confident" in f.message for f in res.findings)


def test_ece_interval_is_seeded_by_the_audit_seed() -> None:
    z, y = _calibrated_logits(n=500)
    a = CalibrationCheck(resamples=100).run(_ctx(z * 2, y, seed=1)).metric("ece").ci
    b = CalibrationCheck(resamples=100).run(_ctx(z * 2, y, seed=1)).metric("ece").ci
    c = CalibrationCheck(resamples=100).run(_ctx(z * 2, y, seed=2)).metric("ece").ci
    assert a is not None and a == b and a != c
    assert a.method == "bootstrap-percentile-100"


def test_invalid_bin_count_is_rejected_with_the_option_name() -> None:
    with pytest.raises(OptionError, match=r"calibration\.n_bins: 0 bins\. use at least 1"):
        CalibrationCheck(n_bins=0)


def test_digits_model_gets_diagram_and_serialisable_result(digits_model, digits_test) -> None:  # type: ignore[no-untyped-def]
    assert digits_model.spec is not None
    ctx = AuditContext(digits_model, digits_test, ThreatModel(digits_model.spec))
    res = CalibrationCheck(resamples=50).run(ctx)
    assert 0 <= res.metric("ece").value <= 1
    assert res.figures[0].name == "reliability_diagram" and "<svg" in res.figures[0].svg
    json.dumps(res.to_json(), allow_nan=False)


def test_non_finite_logits_fail_the_check_with_a_count() -> None:
    logits = np.zeros((4, 3))
    logits[1, 2] = np.nan
    with pytest.raises(ModelError, match="1 of 4 records give NaN or Inf logits"):
        CalibrationCheck(resamples=10).run(_ctx(logits, np.array([0, 1, 2, 0])))


def test_always_right_model_gets_no_temperature_at_bound_warning() -> None:
    # every record right with a wide margin: NLL falls monotonically as T → 0
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(0, 1, (200, 4))
    logits[np.arange(200), y] += 8.0
    assert separated(logits, y)
    res = CalibrationCheck(resamples=20).run(_ctx(logits, y))
    assert res.metric("temperature").value == pytest.approx(T_BOUNDS[0])
    assert not any("search bound" in f.message and f.severity == "warning" for f in res.findings)
    info = [f for f in res.findings if "undetermined" in f.message]
    assert len(info) == 1 and info[0].severity == "info"
    assert res.metric("temperature").settings["determined"] is False


def test_uninformative_logits_at_the_upper_bound_still_warn() -> None:
    # logits unrelated to the labels: the NLL is lowest for a flat softmax, T runs to the top
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(0, 5, (300, 4))
    assert not separated(logits, y)
    res = CalibrationCheck(resamples=20).run(_ctx(logits, y))
    assert res.metric("temperature").value == pytest.approx(T_BOUNDS[1], rel=1e-3)
    warned = [f for f in res.findings if "search bound" in f.message]
    assert len(warned) == 1 and warned[0].severity == "warning"
    assert not any("undetermined" in f.message for f in res.findings)


def test_separated_needs_a_strict_maximum_on_every_record() -> None:
    y = np.array([0, 1])
    assert separated(np.array([[2.0, 1.0], [0.0, 3.0]]), y)
    assert not separated(np.array([[2.0, 2.0], [0.0, 3.0]]), y)  # a tie
    assert not separated(np.array([[2.0, 1.0], [3.0, 0.0]]), y)  # one wrong
    assert not separated(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))

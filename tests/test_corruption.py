"""Corruptions (images, time series, tabular) and the corruption check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.checks.base import AuditContext
from edgeproof.checks.corruption import CorruptionCheck
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.methods.corruptions import (
    SEVERITIES,
    CorruptionContext,
    corruptions_for,
    get_corruption,
)
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.spec import InputSpec, ThreatModel

IMAGE = ("gaussian_noise", "gaussian_blur", "brightness", "contrast")
SERIES = ("jitter", "scaling", "baseline_wander", "channel_dropout")


def _num(cell: object) -> float:
    """A numeric table cell (tables hold JSON scalars)."""
    assert isinstance(cell, (int, float)), cell
    return float(cell)


def test_corruptions_are_chosen_by_input_kind_and_channel_count() -> None:
    assert tuple(c.name for c in corruptions_for("image", (1, 8, 8))) == IMAGE
    assert tuple(c.name for c in corruptions_for("timeseries", (4, 64))) == SERIES
    assert "channel_dropout" not in [c.name for c in corruptions_for("timeseries", (1, 64))]
    assert [c.name for c in corruptions_for("tabular", (30,))] == ["gaussian_noise"]


@pytest.mark.parametrize("name", IMAGE)
def test_image_corruptions_grow_with_severity_stay_in_domain_and_are_seeded(name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(16, 3, 8, 8)).astype(np.float32)
    c = get_corruption(name)
    ctx = CorruptionContext(domain=(0.0, 1.0))
    dist = []
    for s in SEVERITIES:
        out = c.apply(x, s, np.random.default_rng(s), ctx)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(out, c.apply(x, s, np.random.default_rng(s), ctx))
        dist.append(float(np.abs(out - x).mean()))
    assert dist[0] > 0
    assert all(b >= a * 0.999 for a, b in itertools.pairwise(dist)), dist


@pytest.mark.parametrize("name", SERIES)
def test_timeseries_corruptions_grow_with_severity_and_keep_shape(name: str) -> None:
    rng = np.random.default_rng(1)
    t = np.linspace(0, 4 * np.pi, 128)
    x = (np.sin(t)[None, None, :] * rng.uniform(0.5, 2, size=(32, 6, 1))).astype(np.float32)
    c = get_corruption(name)
    ctx = CorruptionContext(domain=(-5.0, 5.0))
    dist = [
        float(np.abs(c.apply(x, s, np.random.default_rng(7), ctx) - x).mean()) for s in SEVERITIES
    ]
    assert dist[0] > 0
    assert dist[-1] > dist[0]


def test_channel_dropout_flattens_the_stated_fraction_of_channels_to_their_mean() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 10, 50)).astype(np.float32)
    out = get_corruption("channel_dropout").apply(x, 3, rng, CorruptionContext((-10.0, 10.0)))
    flat = np.ptp(out, axis=2) == 0  # (records, channels) that are constant
    assert np.all(flat.sum(axis=1) == 3)  # 30% of 10 channels per record
    means = x.mean(axis=(0, 2))
    rows, chans = np.nonzero(flat)
    np.testing.assert_allclose(out[rows, chans, 0], means[chans], rtol=1e-5)


def test_corruption_check_on_digits_tabulates_every_severity_with_wilson_intervals(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    ctx = AuditContext(model=digits_model, data=digits_test, threat=ThreatModel(digits_model.spec))
    res = CorruptionCheck().run(ctx)
    table = res.tables[0]
    assert len(table.rows) == 4 * 5
    col = table.columns.index
    for row in table.rows:
        assert _num(row[col("ci low")]) <= _num(row[col("accuracy")]) <= _num(row[col("ci high")])
    blur = [_num(r[col("accuracy")]) for r in table.rows if r[0] == "gaussian_blur"]
    assert blur[-1] < res.metric("clean_accuracy").value  # σ = 1 px on 8×8 digits hurts
    for name in IMAGE:
        m = res.metric(f"accuracy@{name}")
        assert m.ci is not None and m.ci.low <= m.value <= m.ci.high
    assert res.metric("mean_corruption_accuracy").value <= 1.0
    assert res.figures[0].svg.startswith("<svg")
    again = CorruptionCheck().run(ctx)
    assert again.tables[0].rows == table.rows  # seeded


class _TinyConv1d(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(c, 8, 5)
        self.head = nn.Linear(8, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.conv(x)).mean(dim=2))
        return out


def _series_data(c: int) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, c, 32)).astype(np.float32)
    y = (x[:, 0].mean(axis=1) > 0).astype(np.int64)
    return Dataset(
        x=np.clip(x, -4, 4),
        y=y,
        classes=["a", "b"],
        name="synthetic",
        format="npz",
        kind="timeseries",
        domain=(-4.0, 4.0),
    )


def test_corruption_check_on_time_series_runs_sensor_faults_including_channel_dropout() -> None:
    data = _series_data(4)
    spec = InputSpec(shape=(4, 32), domain=(-4.0, 4.0), kind="timeseries", num_classes=2)
    ctx = AuditContext(
        model=from_module(_TinyConv1d(4, 2).eval(), spec), data=data, threat=ThreatModel(spec)
    )
    res = CorruptionCheck(severities=(1, 5)).run(ctx)
    assert sorted({str(r[0]) for r in res.tables[0].rows}) == sorted(SERIES)
    assert len(res.tables[0].rows) == 4 * 2


def test_single_channel_series_says_channel_dropout_does_not_apply() -> None:
    data = _series_data(1)
    spec = InputSpec(shape=(1, 32), domain=(-4.0, 4.0), kind="timeseries", num_classes=2)
    ctx = AuditContext(
        model=from_module(_TinyConv1d(1, 2).eval(), spec), data=data, threat=ThreatModel(spec)
    )
    res = CorruptionCheck(severities=(1,)).run(ctx)
    assert "channel_dropout" not in {r[0] for r in res.tables[0].rows}
    assert any("channel dropout needs at least 2 channels" in f.message for f in res.findings)


def test_corruption_check_rejects_unknown_names_and_severities() -> None:
    with pytest.raises(
        OptionError, match=r"corruptions: unknown corruption 'fog'\. choose from gaussian_noise"
    ):
        CorruptionCheck(corruptions=["fog"])
    with pytest.raises(OptionError, match=r"severities: \[0, 6\] is not a subset of 1..5"):
        CorruptionCheck(severities=(0, 6))

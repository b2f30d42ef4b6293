"""builtin:synth-ecg: deterministic ECGSYN-based rhythm dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgeproof.data.loading import load_data
from edgeproof.data.synth_ecg import CLASSES, DOMAIN, SynthECGConfig, generate, synth_ecg
from edgeproof.errors import OptionError


def test_generation_is_deterministic_for_a_seed() -> None:
    cfg = SynthECGConfig(n_per_class=4, seed=7)
    x1, y1 = generate(cfg)
    x2, y2 = generate(cfg)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    x3, _ = generate(SynthECGConfig(n_per_class=4, seed=8))
    assert not np.array_equal(x1, x3)


def test_builtin_registration_gives_timeseries_splits_in_the_domain() -> None:
    test = load_data("builtin:synth-ecg")
    train = load_data("builtin:synth-ecg/train")
    assert test.sample_shape == (1, 256) and train.sample_shape == (1, 256)
    assert len(test) == 500 and len(train) == 1000
    assert test.kind == "timeseries" and test.domain == DOMAIN
    assert test.classes == list(CLASSES)
    assert np.bincount(train.y).tolist() == [200] * len(CLASSES)
    assert train.x.min() >= DOMAIN[0] and train.x.max() <= DOMAIN[1]
    assert not np.array_equal(test.x[:10], train.x[:10])


def test_one_thousand_records_generate_in_under_three_cpu_seconds() -> None:
    # CPU time, not wall time: the test machine is shared.
    t0 = time.process_time()
    x, _ = generate(SynthECGConfig(n_per_class=200, seed=1))
    assert x.shape == (1000, 1, 256)
    assert time.process_time() - t0 < 3.0


def _r_peaks(x: np.ndarray) -> np.ndarray:
    """Local maxima above 0.7 mV (R peaks after the per-record scaling to [-0.4, 1.2])."""
    s = x[:, 0, :]
    peak = (s[:, 1:-1] > 0.7) & (s[:, 1:-1] >= s[:, :-2]) & (s[:, 1:-1] > s[:, 2:])
    return peak.sum(axis=1)


def test_heart_rate_classes_differ_in_beats_per_window() -> None:
    d = synth_ecg("test")
    beats = _r_peaks(d.x)
    tachy = beats[d.y == CLASSES.index("tachycardia")].mean()
    normal = beats[d.y == CLASSES.index("normal")].mean()
    brady = beats[d.y == CLASSES.index("bradycardia")].mean()
    # 2.56 s windows: ~5.5 beats at 130 bpm, ~3.2 at 75 bpm, ~2 at 47 bpm.
    assert tachy > normal + 1.0 > brady + 1.5


def test_unknown_split_names_the_option() -> None:
    with pytest.raises(OptionError, match="data: builtin:synth-ecg has no split 'val'"):
        synth_ecg("val")

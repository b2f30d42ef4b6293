"""The backdoor population generator: spec validation, deterministic plans, poisoning, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.data.loading import load_data
from edgeproof.errors import OptionError
from edgeproof.models.loading import load_model
from edgeproof.testing.backdoor import (
    LabelFlip,
    PatchTrigger,
    Poisoning,
    PopulationSpec,
    SineBurstTrigger,
    make_population,
    plan_population,
    poison_dataset,
)


@pytest.mark.parametrize("rate", [(0.0, 0.1), (0.1, 1.0), (-0.1, 0.2), (0.2, 1.5)])
def test_poison_rate_outside_open_unit_interval_is_a_one_line_option_error(
    rate: tuple[float, float],
) -> None:
    with pytest.raises(OptionError) as info:
        PopulationSpec(poison_rate=rate).validate()
    text = str(info.value)
    assert text.startswith("poison_rate: ")
    assert "outside (0, 1)" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "spec",
    [
        PopulationSpec(archs=()),
        PopulationSpec(clean_per_arch=0, backdoored_per_arch=0),
    ],
)
def test_empty_population_is_refused(spec: PopulationSpec) -> None:
    with pytest.raises(OptionError, match="population is empty"):
        spec.validate()


def test_families_that_do_not_apply_to_the_architecture_are_refused() -> None:
    with pytest.raises(OptionError, match="applies to zoo:cnn1d"):
        plan_population(PopulationSpec(archs=("zoo:cnn1d",), families=("badnets",)))


def test_plan_is_deterministic_by_seed_and_cycles_families() -> None:
    spec = PopulationSpec(archs=("zoo:mlp", "zoo:cnn1d"), clean_per_arch=1, backdoored_per_arch=3)
    a = [m.to_json() for m in plan_population(spec)]
    b = [m.to_json() for m in plan_population(spec)]
    c = [m.to_json() for m in plan_population(PopulationSpec(**{**spec.__dict__, "seed": 1}))]
    assert a == b
    assert a != c
    fams = [m["poisoning"]["family"] if m["poisoning"] else "clean" for m in a]
    image = ["clean", "badnets", "blend", "label-flip"]
    series = ["clean", "sine-burst", "step", "label-flip"]
    assert fams == [*image, *series]
    for m in a:
        if m["poisoning"]:
            assert 0.0 < m["poisoning"]["poison_rate"] < 1.0


def test_trigger_poisoning_replaces_the_stated_fraction_with_target_labels() -> None:
    data = load_data("builtin:digits/train")
    trig = PatchTrigger(row=5, col=5, pattern=((1.0, 1.0), (1.0, 1.0)), style="solid")
    pois = Poisoning(attack=trig, target=3, poison_rate=0.1)
    out, realised, idx = poison_dataset(data, pois, np.random.default_rng(0))
    assert len(idx) == round(0.1 * len(data))
    assert realised.poison_rate == pytest.approx(0.1)
    assert np.all(data.y[idx] != 3)  # drawn from non-target samples
    assert np.all(out.y[idx] == 3)
    assert np.all(out.x[idx][..., 5:7, 5:7] == 1.0)
    untouched = np.setdiff1d(np.arange(len(data)), idx)
    np.testing.assert_array_equal(out.x[untouched], data.x[untouched])
    np.testing.assert_array_equal(out.y[untouched], data.y[untouched])


def test_label_flip_relabels_only_the_source_class() -> None:
    data = load_data("builtin:digits/train")
    pois = Poisoning(attack=LabelFlip(source=4, flip_fraction=1.0), target=7, poison_rate=0.0)
    out, realised, idx = poison_dataset(data, pois, np.random.default_rng(0))
    assert np.all(data.y[idx] == 4)
    assert not np.any(out.y == 4)
    np.testing.assert_array_equal(out.x, data.x)
    assert realised.poison_rate == pytest.approx(np.mean(data.y == 4))


def test_series_trigger_stays_in_the_domain() -> None:
    trig = SineBurstTrigger(
        start=10,
        length=20,
        frequency_hz=10.0,
        amplitude=5.0,
        sample_rate_hz=100.0,
        domain=(-1.0, 2.0),
    )
    x = np.zeros((3, 1, 64), dtype=np.float32)
    y = trig.apply(x)
    assert y.min() >= -1.0 and y.max() <= 2.0
    assert np.all(y[:, :, :10] == 0) and np.all(y[:, :, 30:] == 0)
    assert np.any(y[:, :, 10:30] != 0)


def test_population_records_label_rate_and_target_in_the_sidecar(tmp_path: Path) -> None:
    spec = PopulationSpec(
        archs=("zoo:mlp",),
        clean_per_arch=1,
        backdoored_per_arch=1,
        families=("badnets",),
        poison_rate=(0.1, 0.1),
        seed=3,
    )
    pop = make_population(spec, tmp_path)
    clean, bad = pop.members
    assert clean.label == "clean" and clean.attack_success_rate is None
    assert bad.poisoning is not None and bad.attack_success_rate is not None
    assert bad.label == ("backdoored" if bad.attack_success_rate >= 0.9 else "attack-failed")
    assert bad.clean_accuracy > 0.8
    meta = load_model(bad.path).metadata["backdoor"]
    assert meta["poisoning"]["target"] == bad.target
    assert meta["poisoning"]["poison_rate"] == pytest.approx(0.1, abs=1e-3)
    assert meta["label"] == bad.label
    manifest = json.loads((tmp_path / "population.json").read_text())
    assert [m["name"] for m in manifest["members"]] == [m.spec.name for m in pop.members]
    # a second call reuses the trained files (same recorded member spec)
    mtime = bad.path.stat().st_mtime_ns
    again = make_population(spec, tmp_path)
    assert again.members[1].path.stat().st_mtime_ns == mtime
    assert again.members[1].attack_success_rate == bad.attack_success_rate

"""The trainer (deterministic, normalises from the data), save_model, and `edgeproof train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeproof.cli import main
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.models import LoadedModel, load_model
from edgeproof.models.train import (
    accuracy,
    channel_normalization,
    save_model,
    spec_from_data,
    train_model,
)
from edgeproof.models.zoo import Normalize


@pytest.fixture(scope="module")
def small(digits_train: Dataset) -> Dataset:
    return digits_train.subset(slice(0, 200))


def test_same_seed_gives_bitwise_identical_weights(small: Dataset) -> None:
    a = train_model("zoo:lenet5", small, epochs=2, seed=7).state_dict()
    b = train_model("zoo:lenet5", small, epochs=2, seed=7).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_seed_gives_different_weights(small: Dataset) -> None:
    a = train_model("zoo:lenet5", small, epochs=1, seed=1).state_dict()
    b = train_model("zoo:lenet5", small, epochs=1, seed=2).state_dict()
    assert not torch.equal(a["1.weight"], b["1.weight"])


@pytest.mark.parametrize("arch", ["zoo:cnn1d", "zoo:cnn-lstm"])
def test_time_series_archs_train_deterministically(arch: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=96)
    x = rng.normal(size=(96, 2, 32)).astype(np.float32) + y[:, None, None]
    data = Dataset(
        x=x, y=y, classes=["a", "b", "c"], name="synthetic", format="npz", kind="timeseries"
    )
    a = train_model(arch, data, epochs=2, seed=3, batch_size=32).state_dict()
    b = train_model(arch, data, epochs=2, seed=3, batch_size=32).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_leaves_global_determinism_setting_as_it_was(small: Dataset) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    train_model("zoo:mlp", small, epochs=1)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_trained_digits_model_is_accurate_on_the_test_split(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    pred = digits_model.predict_logits(digits_test.x).argmax(axis=1)
    assert float((pred == digits_test.y).mean()) > 0.90


def test_normalisation_layer_holds_the_training_data_channel_statistics(small: Dataset) -> None:
    module = train_model("zoo:mlp", small, epochs=1)
    norm = next(m for m in module.modules() if isinstance(m, Normalize))
    assert norm.mean.item() == pytest.approx(float(small.x.mean()), rel=1e-5)
    assert norm.std.item() == pytest.approx(float(small.x.std()), rel=1e-5)


def test_channel_normalization_is_per_channel_and_guards_constant_channels() -> None:
    x = np.stack([np.full((4, 3), 2.0), np.arange(12.0).reshape(4, 3)], axis=1)  # (4, 2, 3)
    mean, std = channel_normalization(x.astype(np.float32))
    assert mean == pytest.approx((2.0, 5.5))
    assert std[0] == 1.0
    assert std[1] == pytest.approx(float(np.arange(12.0).std()))


def test_batchnorm_arch_trains_when_the_last_batch_has_one_record(small: Dataset) -> None:
    module = train_model("zoo:resnet8", small.subset(slice(0, 65)), epochs=1, batch_size=64)
    assert not module.training


def test_spec_domain_comes_from_the_dataset_or_its_range(small: Dataset) -> None:
    assert spec_from_data(small).domain == (0.0, 1.0)
    raw = Dataset(
        x=small.x * 16,
        y=small.y,
        classes=small.classes,
        name="raw",
        format="npz",
        kind="image",
        domain=None,
    )
    spec = spec_from_data(raw)
    assert spec.domain == (float(raw.x.min()), float(raw.x.max()))
    assert spec.num_classes == 10 and spec.shape == (1, 8, 8)


def test_save_model_writes_safetensors_and_the_documented_sidecar(
    small: Dataset, tmp_path: Path
) -> None:
    module = train_model("zoo:mlp", small, epochs=1)
    path = save_model(
        module,
        tmp_path / "m",
        arch="zoo:mlp",
        spec=spec_from_data(small),
        metadata={"training": {"epochs": 1}},
    )
    assert path == tmp_path / "m.safetensors"
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["format"] == "edgeproof-model" and side["version"] == 1
    assert side["arch"] == "zoo:mlp"
    assert side["classes"] == small.classes
    assert side["training"] == {"epochs": 1}
    assert side["spec"]["normalization"]["mean"] == pytest.approx([float(small.x.mean())], rel=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    loaded = load_model(path)
    assert accuracy(loaded.module, small) == accuracy(module, small)  # type: ignore[arg-type]


def test_bad_training_options_name_the_option(small: Dataset) -> None:
    with pytest.raises(OptionError, match="epochs: must be >= 1, got 0"):
        train_model("zoo:mlp", small, epochs=0)
    with pytest.raises(OptionError, match="lr: must be > 0"):
        train_model("zoo:mlp", small, lr=-1.0)


def test_train_command_writes_a_loadable_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.safetensors"
    code = main(
        [
            "train",
            "--arch",
            "zoo:mlp",
            "--data",
            "builtin:digits/train",
            "--epochs",
            "1",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    loaded = load_model(out)
    assert loaded.arch == "zoo:mlp"
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["training"]["dataset"] == "builtin:digits/train"
    assert side["training"]["epochs"] == 1 and side["training"]["seed"] == 0


def test_train_command_rejects_a_non_safetensors_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--arch",
            "zoo:mlp",
            "--data",
            "builtin:digits/train",
            "--out",
            str(tmp_path / "m.pt"),
        ]
    )
    assert code == 2
    assert "--out:" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()

"""Shared session fixtures: the built-in digits data and a small LeNet-5 trained on it once.

* ``digits_train`` / ``digits_test`` — ``builtin:digits/train`` (1437 records) and
  ``builtin:digits`` (360 records), images ``(1, 8, 8)`` in ``[0, 1]``.
* ``digits_model_path`` — ``zoo:lenet5`` trained for 20 epochs (seed 0, Adam lr 3e-3; 96.7%
  test accuracy when measured, a few seconds on one thread), saved with
  :func:`edgeproof.models.train.train_and_save` as ``<tmp>/digits-lenet5.safetensors`` +
  ``digits-lenet5.json``.
* ``digits_model`` — that file loaded with :func:`edgeproof.models.load_model` (a
  :class:`LoadedModel` with module, spec and classes). Treat it as read-only: it is shared by the
  whole session; copy the module (``copy.deepcopy(digits_model.module)``) before changing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import load_model
from edgeproof.models.train import train_and_save

torch.set_num_threads(1)

DIGITS_ARCH = "zoo:lenet5"
DIGITS_EPOCHS = 20
DIGITS_LR = 3e-3
DIGITS_SEED = 0


@pytest.fixture(scope="session")
def digits_train() -> Dataset:
    return load_data("builtin:digits/train")


@pytest.fixture(scope="session")
def digits_test() -> Dataset:
    return load_data("builtin:digits")


@pytest.fixture(scope="session")
def digits_model_path(tmp_path_factory: pytest.TempPathFactory, digits_train: Dataset) -> Path:
    out = tmp_path_factory.mktemp("digits-model") / "digits-lenet5.safetensors"
    return train_and_save(
        DIGITS_ARCH, digits_train, out, epochs=DIGITS_EPOCHS, seed=DIGITS_SEED, lr=DIGITS_LR
    ).path


@pytest.fixture(scope="session")
def digits_model(digits_model_path: Path) -> LoadedModel:
    return load_model(digits_model_path)

"""A small, deterministic trainer for zoo models, and the model file format edgeproof writes.

:func:`train_model` trains a zoo architecture on an in-memory :class:`Dataset` with Adam and
cross-entropy. It is deterministic: the torch and numpy RNGs are seeded from ``seed``, the data
order comes from a seeded ``numpy.random.Generator`` permutation per epoch, and
``torch.use_deterministic_algorithms(True)`` is on while it runs (restored afterwards). On the
same machine and thread count, the same seed gives bitwise-identical weights.

The per-channel normalisation ``(mean, std)`` is computed from the training inputs (over every
axis except the channel axis, dimension 1) and becomes the model's first :class:`Normalize` layer,
so the trained model takes raw-domain inputs.

:func:`save_model` writes ``<stem>.safetensors`` plus the sidecar ``<stem>.json``::

    {"format": "edgeproof-model", "version": 1, "arch": "zoo:lenet5",
     "spec": InputSpec.to_json(), "classes": [...],
     "training": {"epochs": ..., "seed": ..., "lr": ..., "batch_size": ...,
                  "train_accuracy": ..., "dataset": ...}}

The same JSON is stored in the safetensors header metadata under ``"edgeproof"``, so a model
whose sidecar got lost still loads with its architecture and spec.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from edgeproof.atomic import atomic_write_bytes, atomic_write_text
from edgeproof.data.dataset import Dataset
from edgeproof.errors import DataError, OptionError
from edgeproof.models.zoo import Normalization, Normalize, arch_from_string
from edgeproof.serialize import JsonFields
from edgeproof.spec import DomainSource, InputKind, InputSpec, inferred_feature_bounds

__all__ = [
    "SIDECAR_FORMAT",
    "SIDECAR_VERSION",
    "EpochStats",
    "TrainedModel",
    "TrainingSettings",
    "accuracy",
    "channel_normalization",
    "save_model",
    "sidecar_path",
    "spec_from_data",
    "train_and_save",
    "train_model",
]

SIDECAR_FORMAT = "edgeproof-model"
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class TrainingSettings(JsonFields):
    """What :func:`train_model` was run with, recorded in the sidecar's ``training`` entry."""

    epochs: int
    seed: int
    lr: float
    batch_size: int
    train_accuracy: float
    dataset: str


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    state = torch.random.get_rng_state()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        torch.random.set_rng_state(state)


def channel_normalization(x: np.ndarray) -> Normalization:
    """Per-channel ``(mean, std)`` of inputs ``(N, C, ...)``; for tabular ``(N, F)`` per feature.

    Statistics are over every axis except dimension 1; a constant channel gets std 1.
    """
    if x.ndim < 2:
        raise DataError(f"inputs of shape {x.shape} have no channel axis; expected (N, C, ...)")
    axes = (0, *range(2, x.ndim))
    xd = x.astype(np.float64)
    mean = xd.mean(axis=axes)
    std = xd.std(axis=axes)
    std = np.where(std > 1e-8, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def spec_from_data(data: Dataset, normalization: Normalization | None = None) -> InputSpec:
    """The :class:`InputSpec` of a dataset: its shape, kind, classes and value domain.

    The domain is the loader's declared ``Dataset.domain``; without one, tabular and
    time-series data get per-feature bounds from their own min/max (features on different
    scales), images the data's ``[min, max]`` (both recorded as inferred).
    """
    kind: InputKind = data.kind if data.kind in ("image", "timeseries", "tabular") else "image"  # type: ignore[assignment]
    bounds = None
    source: DomainSource = "data"
    if data.domain is not None:
        domain = (float(data.domain[0]), float(data.domain[1]))
    elif kind in ("tabular", "timeseries") and data.x.ndim >= 2:
        domain, bounds, source = (0.0, 1.0), inferred_feature_bounds(data.x), "inferred"
    else:
        lo, hi = float(np.min(data.x)), float(np.max(data.x))
        domain, source = (lo, hi if hi > lo else lo + 1.0), "inferred"
    return InputSpec(
        shape=data.sample_shape,
        domain=domain,
        kind=kind,
        normalization=normalization,
        num_classes=data.num_classes,
        class_names=tuple(str(c) for c in data.classes),
        domain_source=source,
        feature_bounds=bounds,
    )


def accuracy(module: nn.Module, data: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``module`` on ``data`` (module put in eval mode)."""
    module.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(data.x[i : i + batch_size])
            pred = module(x).argmax(dim=1).numpy()
            correct += int((pred == data.y[i : i + batch_size]).sum())
    return correct / max(len(data), 1)


@dataclass(frozen=True)
class EpochStats:
    """One finished epoch: its number (from 1), the epochs in all, the mean training loss of its
    mini-batches (weighted by batch size) and the accuracy of the predictions made while
    training on them (the running training accuracy; no extra pass over the data)."""

    epoch: int
    epochs: int
    loss: float
    accuracy: float
    seconds: float


def train_model(
    arch: str,
    data: Dataset,
    *,
    epochs: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> nn.Module:
    """Train ``arch`` (``zoo:NAME`` or ``pkg.mod:callable``) on ``data``; returns it in eval mode.

    Adam (default betas, no weight decay), mean cross-entropy, mini-batches in a seeded random
    order each epoch (the last partial batch is kept). The returned module carries the
    training-set normalisation in its first layer when it has a :class:`Normalize` layer.
    The global torch RNG state and the deterministic-algorithms setting are restored afterwards.
    ``on_epoch`` is called after each epoch with its :class:`EpochStats` (progress reporting; it
    changes nothing in the training).
    """
    if epochs < 1:
        raise OptionError("epochs", f"must be >= 1, got {epochs}")
    if batch_size < 1:
        raise OptionError("batch_size", f"must be >= 1, got {batch_size}")
    if not lr > 0:
        raise OptionError("lr", f"must be > 0, got {lr}")
    data.validate()
    normalization = channel_normalization(data.x)
    x_all = torch.from_numpy(data.x)
    y_all = torch.from_numpy(data.y)
    order_rng = np.random.default_rng(seed)
    with _deterministic(seed):
        module = arch_from_string(arch, data.sample_shape, data.num_classes, normalization)
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        n = len(data)
        for epoch in range(epochs):
            t0 = time.perf_counter()
            seen, loss_sum, right = 0, 0.0, 0
            perm = torch.from_numpy(order_rng.permutation(n))
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                if idx.numel() == 1 and any(
                    isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()
                ):
                    continue  # BatchNorm cannot train on a batch of one
                opt.zero_grad(set_to_none=True)
                out = module(x_all[idx])
                loss = loss_fn(out, y_all[idx])
                loss.backward()
                opt.step()
                if on_epoch is not None:
                    k = int(idx.numel())
                    seen += k
                    loss_sum += float(loss.detach()) * k
                    right += int((out.detach().argmax(dim=1) == y_all[idx]).sum())
            if on_epoch is not None:
                on_epoch(
                    EpochStats(
                        epoch=epoch + 1,
                        epochs=epochs,
                        loss=loss_sum / max(seen, 1),
                        accuracy=right / max(seen, 1),
                        seconds=time.perf_counter() - t0,
                    )
                )
    return module.eval()


def sidecar_path(path: str | Path) -> Path:
    """``model.safetensors`` → ``model.json`` (the metadata file next to the weights)."""
    p = Path(path)
    return p.with_suffix(".json")


def _normalization_of(module: nn.Module) -> Normalization | None:
    for m in module.modules():
        if isinstance(m, Normalize):
            return m.as_tuple()
    return None


def save_model(
    module: nn.Module,
    path: str | Path,
    *,
    arch: str,
    spec: InputSpec | None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the module's state dict as safetensors and the sidecar JSON, both atomically.

    Args:
        module: the model (its ``state_dict`` is saved, tensors made contiguous).
        path: target path; ``.safetensors`` is appended if missing.
        arch: the architecture string that rebuilds it (``zoo:lenet5``, ``pkg.mod:fn``).
        spec: its input specification; the normalisation of its :class:`Normalize` layer is
            filled in if the spec has none.
        metadata: extra sidecar entries, e.g. ``{"training": TrainingSettings(...).to_json()}``;
            ``"classes"`` overrides the spec's class names.

    Returns:
        The ``.safetensors`` path written.
    """
    target = Path(path)
    if target.suffix != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    extra = dict(metadata or {})
    if spec is not None and spec.normalization is None:
        norm = _normalization_of(module)
        if norm is not None and len(norm[0]) == spec.shape[0]:
            spec = spec.with_(normalization=norm)
    classes = extra.pop("classes", None)
    if classes is None and spec is not None and spec.class_names is not None:
        classes = list(spec.class_names)
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "arch": arch,
        "spec": None if spec is None else spec.to_json(),
        "classes": None if classes is None else [str(c) for c in classes],
        **extra,
    }
    text = json.dumps(sidecar, indent=2, sort_keys=False)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    blob = safetensors_save(tensors, metadata={"edgeproof": json.dumps(sidecar)})
    atomic_write_bytes(target, blob)
    atomic_write_text(sidecar_path(target), text + "\n")
    return target


@dataclass(frozen=True)
class TrainedModel:
    """A trained module, the file it was saved to, and the settings recorded with it."""

    module: nn.Module
    path: Path
    settings: TrainingSettings


def train_and_save(
    arch: str,
    data: Dataset,
    out: str | Path,
    *,
    epochs: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainedModel:
    """Train ``arch`` on ``data`` (:func:`train_model`) and save it with its sidecar
    (:func:`save_model`), recording the settings and the training accuracy."""
    module = train_model(
        arch, data, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, on_epoch=on_epoch
    )
    settings = TrainingSettings(
        epochs=epochs,
        seed=seed,
        lr=lr,
        batch_size=batch_size,
        train_accuracy=accuracy(module, data),
        dataset=data.name,
    )
    path = save_model(
        module,
        out,
        arch=arch,
        spec=spec_from_data(data),
        metadata={"training": settings.to_json()},
    )
    return TrainedModel(module, path, settings)

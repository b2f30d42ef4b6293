"""Exit-head training with the backbone frozen (weights and BatchNorm statistics unchanged).

Stage outputs are computed once in eval mode without gradients, pooled, and each head is fitted
by Adam on cross-entropy against the true labels, seeded (initialisation and shuffling from a
``torch.Generator``), deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeproof.compress.earlyexit.backbone import EarlyExitModel, ExitHead, batched
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError

__all__ = ["HeadFit", "train_exit_heads"]


@dataclass(frozen=True)
class HeadFit:
    """How one exit head was trained: settings and its accuracy on the training data."""

    exit_index: int
    name: str
    in_features: int
    epochs: int
    lr: float
    batch_size: int
    seed: int
    final_loss: float
    train_accuracy: float


def train_exit_heads(
    model: EarlyExitModel,
    data: Dataset,
    *,
    epochs: int = 50,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 1e-4,
) -> tuple[HeadFit, ...]:
    """Fit every exit head on ``data`` with the backbone frozen; returns one :class:`HeadFit` each.

    The backbone runs in eval mode under ``torch.no_grad`` once over the data; each head is then
    trained on its pooled stage output (Adam, cross-entropy, ``weight_decay``), initialised
    (N(0, 0.01²) weights, zero bias) and shuffled from ``torch.Generator().manual_seed(seed + i)``.
    """
    if epochs < 1:
        raise OptionError("epochs", f"{epochs} is not >= 1", "use e.g. 50")
    if not lr > 0:
        raise OptionError("lr", f"{lr} is not positive", "use e.g. 0.01")
    if len(data) == 0:
        raise SpecError(f"{data.name}: no records to train the exit heads on")
    if tuple(data.sample_shape) != model.input_shape:
        raise SpecError(
            f"{data.name}: sample shape {data.sample_shape} does not fit the model input "
            f"{model.input_shape}; pass data shaped like the model input"
        )
    model.eval()
    parts = batched(lambda t: [ExitHead.pool(h) for h in model.stage_outputs(t)], data.x)
    pooled = [torch.cat([p[i] for p in parts]) for i in range(len(model.heads))]
    y = torch.from_numpy(data.y)
    fits = []
    for i, (head, feats) in enumerate(zip(model.heads, pooled)):
        assert isinstance(head, ExitHead)
        gen = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            head.fc.weight.copy_(torch.randn(head.fc.weight.shape, generator=gen) * 0.01)
            head.fc.bias.zero_()
        opt = torch.optim.Adam(head.fc.parameters(), lr=lr, weight_decay=weight_decay)
        n = feats.shape[0]
        loss = torch.tensor(float("nan"))
        head.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(head.fc(feats[idx]), y[idx])
                loss.backward()
                opt.step()
        head.eval()
        with torch.no_grad():
            logits = head.fc(feats)
            full_loss = float(nn.functional.cross_entropy(logits, y))
            acc = float((logits.argmax(1) == y).float().mean())
        fits.append(
            HeadFit(
                i,
                model.exit_names[i],
                int(feats.shape[1]),
                epochs,
                lr,
                batch_size,
                seed + i,
                full_loss,
                acc,
            )
        )
    model.eval()
    return tuple(fits)

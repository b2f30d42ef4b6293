"""Split points of the zoo backbones and the model with exit heads (BranchyNet, post hoc).

ResNet-8/20/18 after every residual stage but the last; LeNet-5 after each conv block
(conv-ReLU-pool); the 1-D CNN after each conv block but the last; the CNN-LSTM after each conv
block (the last one is just before the LSTM); the MLP after its first hidden layer. The stages
composed are exactly the backbone (checked on a dummy input when exits are attached). Other
architectures: :func:`register_splitter`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeproof.errors import InternalError, NotApplicableError
from edgeproof.models.zoo import CNN1D, CNNLSTM, MLP, LeNet5, ResNet

__all__ = [
    "EarlyExitModel",
    "ExitHead",
    "Splitter",
    "Stage",
    "attach_exits",
    "batched",
    "register_splitter",
    "split_backbone",
]

Stage = tuple[str, nn.Module]
Splitter = Callable[[nn.Module], list[Stage]]

# --------------------------------------------------------------------------------------------
# Split points


class _TimeMean(nn.Module):
    """Mean over the time axis of ``(N, C, T)`` (the 1-D CNN's global pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


class _LSTMTail(nn.Module):
    """The CNN-LSTM after its conv features: LSTM over time, linear on the last hidden state."""

    def __init__(self, lstm: nn.LSTM, fc: nn.Linear) -> None:
        super().__init__()
        self.lstm = lstm
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x.transpose(1, 2))
        result: torch.Tensor = self.fc(h[-1])
        return result


def _split_resnet(m: nn.Module) -> list[Stage]:
    assert isinstance(m, ResNet)
    n = len(m.layers)
    stages: list[Stage] = [("stem+layers.0", nn.Sequential(m.normalize, m.stem, m.layers[0]))]
    stages += [(f"layers.{i}", m.layers[i]) for i in range(1, n - 1)]
    stages.append((f"layers.{n - 1}+fc", nn.Sequential(m.layers[n - 1], m.pool, m.flatten, m.fc)))
    return stages


def _split_lenet5(m: nn.Module) -> list[Stage]:
    assert isinstance(m, LeNet5)
    layers = list(m)
    return [
        ("conv1", nn.Sequential(*layers[0:4])),
        ("conv2", nn.Sequential(*layers[4:7])),
        ("fc", nn.Sequential(*layers[7:])),
    ]


def _split_mlp(m: nn.Module) -> list[Stage]:
    assert isinstance(m, MLP)
    layers = list(m)
    return [("fc1", nn.Sequential(*layers[0:4])), ("fc2+fc3", nn.Sequential(*layers[4:]))]


def _conv_blocks(features: nn.Module) -> list[nn.Sequential]:
    """``features`` cut before every ``Conv1d`` (conv → ReLU → pool blocks)."""
    layers = list(features.children())
    starts = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv1d)]
    if not starts or starts[0] != 0:
        raise InternalError(f"{type(features).__name__}: expected conv blocks starting with Conv1d")
    ends = [*starts[1:], len(layers)]
    return [nn.Sequential(*layers[a:b]) for a, b in zip(starts, ends)]


def _split_cnn1d(m: nn.Module) -> list[Stage]:
    assert isinstance(m, CNN1D)
    blocks = _conv_blocks(m.features)
    stages: list[Stage] = [("conv1", nn.Sequential(m.normalize, blocks[0]))]
    stages += [(f"conv{i + 1}", b) for i, b in enumerate(blocks[1:-1], start=1)]
    stages.append((f"conv{len(blocks)}+fc", nn.Sequential(blocks[-1], _TimeMean(), m.fc)))
    return stages


def _split_cnn_lstm(m: nn.Module) -> list[Stage]:
    assert isinstance(m, CNNLSTM)
    blocks = _conv_blocks(m.features)
    stages: list[Stage] = [("conv1", nn.Sequential(m.normalize, blocks[0]))]
    stages += [(f"conv{i + 1}", b) for i, b in enumerate(blocks[1:], start=1)]
    stages.append(("lstm+fc", _LSTMTail(m.lstm, m.fc)))
    return stages


_SPLITTERS: dict[type[nn.Module], Splitter] = {}


def register_splitter(module_type: type[nn.Module], splitter: Splitter) -> None:
    """Teach :func:`split_backbone` a new architecture.

    ``splitter(module)`` returns ``[(name, stage), ...]`` whose composition equals
    ``module.forward``; the stages must reuse the module's own submodules (not copies), so the
    backbone weights stay one set. An exit is attached after every stage but the last.
    """
    _SPLITTERS[module_type] = splitter


for _t, _s in (
    (ResNet, _split_resnet),
    (LeNet5, _split_lenet5),
    (MLP, _split_mlp),
    (CNN1D, _split_cnn1d),
    (CNNLSTM, _split_cnn_lstm),
):
    register_splitter(_t, _s)


def split_backbone(module: nn.Module) -> list[Stage]:
    """The backbone's stages ``[(name, module), ...]``; exits go after all but the last."""
    for cls in type(module).__mro__:
        splitter = _SPLITTERS.get(cls)
        if splitter is not None:
            return splitter(module)
    raise NotApplicableError(
        f"no split points are known for {type(module).__name__}: early exits support the zoo "
        "backbones (zoo:resnet8/20/18, lenet5, mlp, cnn1d, cnn-lstm); register others with "
        "edgeproof.compress.earlyexit.register_splitter"
    )


# --------------------------------------------------------------------------------------------
# The model with exits


class ExitHead(nn.Module):
    """Global average pooling over every axis after the channels, then one linear layer."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    @staticmethod
    def pool(h: torch.Tensor) -> torch.Tensor:
        return h.flatten(2).mean(dim=2) if h.dim() > 2 else h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.pool(h))
        return result


class EarlyExitModel(nn.Module):
    """A frozen backbone with exit heads; ``forward`` returns the logits of every exit.

    ``backbone`` and ``heads`` are the registered submodules (so ``state_dict()`` is the backbone's
    plus ``heads.<i>.*``); :attr:`stages` are views onto the backbone's own submodules.
    """

    def __init__(self, backbone: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.stages: list[Stage] = split_backbone(self.backbone)
        if len(self.stages) < 2:
            raise InternalError(f"{type(backbone).__name__}: a split needs at least two stages")
        shapes: list[tuple[int, ...]] = []
        widths: list[int] = []
        with torch.no_grad():
            h = torch.zeros(1, *self.input_shape)
            for _, stage in self.stages:
                shapes.append(tuple(int(s) for s in h.shape[1:]))
                h = stage(h)
                widths.append(int(ExitHead.pool(h).shape[1]))
        self.stage_input_shapes = tuple(shapes)
        """The per-sample input shape of each stage (the first is the model's input shape)."""
        with torch.random.fork_rng(devices=[]):  # default init must not move the caller's RNG
            self.heads = nn.ModuleList(ExitHead(w, self.num_classes) for w in widths[:-1])
        self._check_split()

    @property
    def num_exits(self) -> int:
        """Exits including the final one."""
        return len(self.stages)

    @property
    def exit_names(self) -> tuple[str, ...]:
        return tuple(
            [f"after {n}" for n, _ in self.stages[:-1]] + [f"final ({self.stages[-1][0]})"]
        )

    def _check_split(self) -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(2, *self.input_shape, generator=gen)
        with torch.no_grad():
            want = self.backbone(x)
            got = self.forward(x)[-1]
        if not torch.allclose(want, got, rtol=1e-5, atol=1e-5):
            raise InternalError(
                f"{type(self.backbone).__name__}: the split stages do not compose to the backbone "
                f"(max diff {float((want - got).abs().max()):.3g}); the splitter is wrong"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        h = x
        for i, (_, stage) in enumerate(self.stages):
            h = stage(h)
            out.append(self.heads[i](h) if i < len(self.heads) else h)
        return out

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage but the last (the heads' inputs)."""
        out = []
        h = x
        for _, stage in self.stages[:-1]:
            h = stage(h)
            out.append(h)
        return out


def attach_exits(module: nn.Module, input_shape: Sequence[int], num_classes: int) -> EarlyExitModel:
    """A copy of ``module`` (eval mode) with untrained exit heads at its split points.

    The caller's module is never modified: the backbone is deep-copied.
    """
    return EarlyExitModel(copy.deepcopy(module).eval(), input_shape, num_classes)


def batched(fn: Callable[[torch.Tensor], Any], x: np.ndarray, batch_size: int = 256) -> list[Any]:
    """``fn`` over ``x`` in batches, without gradients; the list of its outputs."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(fn(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))))
    return out

"""The MTCNN refinement and output networks (Zhang et al., "Joint Face Detection and Alignment
using Multi-task Cascaded Convolutional Networks", IEEE SPL 2016), as facenet-pytorch 2.6.0
publishes them: its ``rnet.pt``/``onet.pt`` are plain state dicts of these layers (the layer
names are theirs; the code is ours). Used by ``tests/test_pretrained.py`` through
``--arch mtcnn_nets:onet``.

Both take RGB crops normalised as ``(pixel - 127.5) / 128`` outside the network (facenet-pytorch's
``detect_face``), 24×24 for RNet and 48×48 for ONet. Their outputs are a tuple: box regression
``(N, 4)``, for ONet also five landmarks ``(N, 10)``, and the face probability ``(N, 2)`` (after a
softmax; index 1 = face) last. The flattening before the first dense layer is in
``(W, H, C)`` order (the weights were converted from Caffe), hence the permute.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ONet", "RNet", "onet", "rnet"]


def _stage(cin: int, cout: int, kernel: int, pool: tuple[int, int] | None) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel), nn.PReLU(cout)]
    if pool is not None:
        layers.append(nn.MaxPool2d(pool[0], pool[1], ceil_mode=True))
    return layers


class _Cascade(nn.Module):
    """Convolution stages named ``conv{i}``/``prelu{i}``/``pool{i}`` as in the state dicts."""

    def _add_stages(self, stages: list[tuple[int, int, int, tuple[int, int] | None]]) -> None:
        self.order: list[str] = []
        for i, (cin, cout, k, pool) in enumerate(stages, start=1):
            conv, act, *rest = _stage(cin, cout, k, pool)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"prelu{i}", act)
            self.order += [f"conv{i}", f"prelu{i}"]
            if rest:
                setattr(self, f"pool{i}", rest[0])
                self.order.append(f"pool{i}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        return x.permute(0, 3, 2, 1).contiguous().flatten(1)


class RNet(_Cascade):
    """24×24 crops → (box regression (N, 4), face probability (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self._add_stages([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None)])
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.prelu4(self.dense4(self.features(x)))
        return self.dense5_2(z), torch.softmax(self.dense5_1(z), dim=1)


class ONet(_Cascade):
    """48×48 crops → (box regression (N, 4), landmarks (N, 10), face probability (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self._add_stages(
            [(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None)]
        )
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.prelu5(self.dense5(self.features(x)))
        return self.dense6_2(z), self.dense6_3(z), torch.softmax(self.dense6_1(z), dim=1)


def rnet() -> RNet:
    return RNet()


def onet() -> ONet:
    return ONet()

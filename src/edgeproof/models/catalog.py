"""The zoo's architecture names and one-line descriptions, without importing torch.

:mod:`edgeproof.models.zoo` builds its registry from this table, so the CLI can list the zoo in
``edgeproof train --help`` without loading torch.
"""

from __future__ import annotations

__all__ = ["ZOO_DESCRIPTIONS"]

ZOO_DESCRIPTIONS: dict[str, str] = {
    "mlp": "2 hidden layers (128, 64), any input shape",
    "lenet5": "LeNet-5 (ReLU, max-pool), images (C,H,W) >= 4x4",
    "resnet8": "CIFAR ResNet-8 (He et al. 2016, option B)",
    "resnet20": "CIFAR ResNet-20 (He et al. 2016, option B)",
    "resnet18": "ImageNet ResNet-18; 3x3 stem below 64x64",
    "cnn1d": "1-D CNN for time series (C,T)",
    "cnn-lstm": "Conv1d + LSTM for time series (C,T)",
}

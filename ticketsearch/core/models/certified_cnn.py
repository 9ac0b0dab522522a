"""The plain conv nets of the certified-training literature, so certified accuracies compare with it.

- `cnn_4layer`: the "CNN-A" of Wong & Kolter's line of work that CROWN-IBP (Zhang et al. 2020,
  "Towards Stable and Efficient Training of Verifiably Robust Neural Networks") trains: two 4x4
  stride-2 convs of 16 and 32 channels, a 100-unit hidden layer, one linear layer; no batch norm.
- `cnn_7layer`: the CNN-7 of Shi et al. 2021 ("Fast Certified Robust Training with Short Warmup"):
  five 3x3 convs of 64, 64, 128 (stride 2), 128, 128 channels, a 512-unit hidden layer, one linear
  layer, batch norm after every layer but the last.

`width` scales every channel count (`scale_channels`) and the hidden units (rounded, without the
multiple-of-8 rule, so width 1 has exactly the papers' 100 and 512 units). The papers flatten a
32x32 image's last feature map straight into the hidden layer (8x8 for CNN-A, 16x16 for CNN-7). A
builder here does not know the image size, so an adaptive average pool brings the feature map to that
size first: on 32x32 images it is the identity (the papers' networks, parameter for parameter), on
other sizes (8x8 digits) it resamples. Every layer is feed-forward, so CROWN bounds both nets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import reject_depth, scale_channels


def _units(count: int, width: float) -> int:
    return max(1, math.floor(count * width + 0.5))


class CertifiedCNN(nn.Module):
    """`classifier(features(x))`, where `features` is one nn.Sequential ending in a flatten and the
    hidden layer; `classifier` is the last linear layer (the registry's contract)."""

    def __init__(self, features: list[nn.Module], hidden: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("cnn_4layer")
def cnn_4layer(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
    reject_depth("cnn_4layer", depth)
    c1, c2 = scale_channels(16, width), scale_channels(32, width)
    hidden = _units(100, width)
    return CertifiedCNN(
        [
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(8), nn.Flatten(),  # 32x32 images give 8x8 here already
            nn.Linear(c2 * 8 * 8, hidden), nn.ReLU(),
        ],
        hidden,
        num_classes,
    )  # fmt: skip


@MODELS.register("cnn_7layer")
def cnn_7layer(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
    reject_depth("cnn_7layer", depth)
    c1, c2 = scale_channels(64, width), scale_channels(128, width)
    hidden = _units(512, width)
    layers: list[nn.Module] = []
    for cin, cout, stride in [(in_channels, c1, 1), (c1, c1, 1), (c1, c2, 2), (c2, c2, 1), (c2, c2, 1)]:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [
        nn.AdaptiveAvgPool2d(16), nn.Flatten(),  # 32x32 images give 16x16 here already
        nn.Linear(c2 * 16 * 16, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
    ]  # fmt: skip
    return CertifiedCNN(layers, hidden, num_classes)
